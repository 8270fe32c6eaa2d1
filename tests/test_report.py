"""lgp-edge report: one Pareto PNG per target-named profile, report.md linking them, atomic output."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tight_profile_dir

from lgp_edge.cli import main
from lgp_edge.profiles import known_profiles
from lgp_edge.targets import known_targets


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "store.sqlite"))


def test_report_per_target(tiny_pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet"]) == 0
    expected = [n for n in known_profiles() if n in known_targets()]
    assert len(expected) >= 6
    md = (out / "report.md").read_text()
    for name in expected:
        png = out / f"pareto-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"](pareto-{name}.png)" in md and f"## {name}" in md
    assert "cpu-int8" not in md  # not named like a target
    assert "Synthetic data" in md and "Why:" in md and "predicted" in md
    printed = capsys.readouterr().out
    assert "report.md" in printed and all(n in printed for n in expected)
    # refuses a non-empty output, replaces it with --force
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet"]) == 2
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--force", "--profile",
                 "cpu-int8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pareto-cpu-int8.png", "report.csv", "report.html", "report.md"]


def test_report_marks_nothing_fits(tiny_pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tight_profile_dir(tmp_path)
    out = tmp_path / "rep"
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--profiles-dir", str(d),
                 "--profile", "tight"]) == 0
    md = (out / "report.md").read_text()
    assert "nothing fits" in md and "Nothing fits: no descendant" in md
    assert (out / "pareto-tight.png").is_file()
    assert "nothing fits" in capsys.readouterr().out
