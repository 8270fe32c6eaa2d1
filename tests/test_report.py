"""lgp-edge report: one Pareto PNG per target-named profile, report.md linking them, atomic output."""

from __future__ import annotations

import csv
import json
import re
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


def _profile(d: Path, name: str, *, description: str = "mine", target: str = "cpu", budget: float = 1e3) -> None:
    d.mkdir(exist_ok=True)
    (d / f"{name}.toml").write_text(f'name = "{name}"\ntarget = "{target}"\nlatency_budget_ms = {budget}\n'
                                    f'memory_budget_mb = 1000\nprecision = "fp32"\nformats = ["onnx"]\n'
                                    f'description = {json.dumps(description)}\n')


@pytest.mark.parametrize("name", ["p" * 245, "a|b", "has space", "-dash", "<b>"],
                         ids=["long", "pipe", "space", "dash", "tag"])
def test_profile_and_target_names_must_be_file_safe(tiny_pool: Path, tmp_path: Path, name: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A name becomes a file name (pareto-NAME.png) and a Markdown/CSV cell: a 245-character name crashed the
    report with OSError (exit 1), and '|' broke report.md's table."""
    d = tmp_path / "profiles"
    _profile(d, name)
    out = tmp_path / "rep"
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--profiles-dir", str(d),
                 f"--profile={name}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "letters, digits" in err and not out.exists()
    t = tmp_path / "targets"
    t.mkdir()
    import lgp_edge

    text = (Path(lgp_edge.__file__).parent / "data" / "targets" / "cpu.toml").read_text()
    (t / f"{name}.toml").write_text(text.replace('name = "cpu"', f'name = "{name}"'))
    assert main(["targets", "show", "--targets-dir", str(t), "--", name]) == 2
    assert "letters, digits" in capsys.readouterr().err


def test_store_with_an_impossible_record_is_refused(tiny_pool: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A p90 of inf (1e999 written into the store) crashed the report with OverflowError; a p90 of 0 was
    silently raised to the median by select."""
    import sqlite3

    from lgp_edge.pool.pool import read_manifest
    from lgp_edge.profiling.store import MeasurementStore
    from lgp_edge.specs import LatencyRecord

    pool_id = read_manifest(tiny_pool).spec.pool_id
    for bad in ("9e999", "0", "'nan'", "-1"):
        path = tmp_path / f"s{len(bad)}{bad[0]}.sqlite"
        with MeasurementStore(path) as s:
            s.put(LatencyRecord(descendant_key="ti6.0-5", target="cpu", runtime="onnxruntime", precision="fp32",
                                batch=1, median_ms=1.0, p90_ms=1.1, p99_ms=1.2, mean_ms=1.0, std_ms=0.01, cv=0.01,
                                n=50, warmup=10, threads=2, source="measured", when="2026-01-01T00:00:00+00:00",
                                tool_versions={"onnxruntime": "1.0"}, pool_id=pool_id))
        db = sqlite3.connect(path)
        db.execute(f"UPDATE runs SET p90_ms = {bad}")
        db.commit()
        db.close()
        for cmd in (["report", "--out", str(tmp_path / "rep")], ["select", "--profile", "cpu"]):
            assert main([*cmd, "--pool", str(tiny_pool), "--store", str(path), "--quiet"]) == 2, (bad, cmd)
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "impossible record" in err and "p90" in err, err
        assert not (tmp_path / "rep").exists()


def test_report_markdown_escapes_text_and_links_headings(tiny_pool: Path, tmp_path: Path) -> None:
    """The description went into report.md raw (live <script>), and a name with capitals or a dot linked to an
    anchor the heading does not have (GitHub's slugs are lower case, without dots)."""
    d = tmp_path / "profiles"
    _profile(d, "Fast.Cpu_1", description="<script>alert(1)</script> & a|b")
    out = tmp_path / "rep"
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--profiles-dir", str(d),
                 "--profile", "Fast.Cpu_1"]) == 0
    md = (out / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; a\\|b" in md
    assert "[Fast.Cpu_1](#fastcpu_1)" in md and "\n## Fast.Cpu_1\n" in md


def test_report_counts_and_lists_unevaluated_descendants(tiny_pool: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A descendant without top-1 vanished from the report while report.md still counted it, and its warning
    was logged twice per profile."""
    import logging
    import shutil

    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    desc = json.loads((pool / "pool.json").read_text())
    gone = desc["descendants"][0]["key"]
    desc["descendants"][0]["top1"] = None
    (pool / "pool.json").write_text(json.dumps(desc))
    n = len(desc["descendants"])
    out = tmp_path / "rep"
    with caplog.at_level(logging.WARNING):
        assert main(["report", "--pool", str(pool), "--out", str(out), "--quiet", "--profile", "cpu"]) == 0
    assert sum(gone in r.getMessage() for r in caplog.records) == 1
    md = (out / "report.md").read_text()
    assert f"{n} descendants, {n - 1} evaluated" in md
    assert f"Not evaluated (no top-1, left out): `{gone}`" in md
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == n - 1 and gone not in {r["descendant"] for r in rows}


def test_report_each_profile_once_with_threads(tiny_pool: Path, tmp_path: Path) -> None:
    """--profile cpu twice wrote every CSV row twice and the same PNG twice; the thread count the latencies
    belong to was only in --json."""
    out = tmp_path / "rep"
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--profile", "cpu", "--profile",
                 "cpu"]) == 0
    rows = list(csv.DictReader((out / "report.csv").open()))
    keys = [r["descendant"] for r in rows]
    assert len(keys) == len(set(keys)) and all(int(r["threads"]) >= 1 for r in rows)
    md = (out / "report.md").read_text()
    assert md.count("\n## cpu\n") == 1 and "threads" in md


def test_nothing_fits_in_a_report_names_what_to_change(tiny_pool: Path, tmp_path: Path) -> None:
    """report has no --budget-ms / --memory-mb, yet its 'Nothing fits' line told the user to raise them."""
    d = tight_profile_dir(tmp_path)
    out = tmp_path / "rep"
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--profiles-dir", str(d),
                 "--profile", "tight"]) == 0
    md = (out / "report.md").read_text()
    assert "--budget-ms" not in md and "latency_budget_ms" in md


def test_profiles_whose_names_differ_only_in_case_get_plots_that_are_two_files_everywhere(tiny_pool: Path,
                                                                                          tmp_path: Path) -> None:
    """Profiles 'cpu' and 'CPU' in one report wrote pareto-cpu.png and pareto-CPU.png: one file on macOS's and
    Windows' case-insensitive file systems, where the second plot replaced the first under the first's heading."""
    from lgp_edge.profiles import profile_path

    d = tmp_path / "profiles"
    d.mkdir()
    src = profile_path("cpu").read_text()
    (d / "CPU.toml").write_text(src.replace('name = "cpu"', 'name = "CPU"'))
    out = tmp_path / "rep"
    assert main(["report", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--profiles-dir", str(d),
                 "--profile", "cpu", "--profile", "CPU", "--json"]) == 0
    plots = sorted(p.name for p in out.glob("*.png"))
    assert len(plots) == 2 and len({p.casefold() for p in plots}) == 2, plots
    md = (out / "report.md").read_text()
    assert all(f"({p})" in md for p in plots)


def test_each_summary_row_links_to_its_own_section(tiny_pool: Path, tmp_path: Path) -> None:
    """Profiles `cpu`, `CPU` and `c.p.u` (one anchor, "cpu", for a Markdown renderer) were all linked to the first
    section: GitHub numbers the later ones "cpu-1", "cpu-2"."""
    d = tmp_path / "profiles"
    d.mkdir()
    src = (Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "profiles" / "cpu.toml").read_text()
    for name in ("CPU", "c.p.u"):
        (d / f"{name}.toml").write_text(src.replace('name = "cpu"', f'name = "{name}"'))
    assert main(["report", "--pool", str(tiny_pool), "--profiles-dir", str(d), "--profile", "cpu", "--profile", "CPU",
                 "--profile", "c.p.u", "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "[cpu](#cpu)" in md and "[CPU](#cpu-1)" in md and "[c.p.u](#cpu-2)" in md


def test_free_text_from_targets_and_paths_reads_literally_in_report_md(tiny_pool: Path, tmp_path: Path) -> None:
    """A target's runtime_version "<script>…" and a pool path with backticks went into report.md raw: a Markdown
    renderer ran the HTML and broke the path's code span (the profile's description beside them was escaped)."""
    import shutil

    from markdown_it import MarkdownIt

    from lgp_edge.targets import targets_root

    pool = Path(shutil.copytree(tiny_pool, tmp_path / "p `x` <b>|"))
    tdir, pdir = tmp_path / "targets", tmp_path / "profiles"
    tdir.mkdir()
    pdir.mkdir()
    src = (targets_root() / "cpu.toml").read_text()
    (tdir / "cpu2.toml").write_text(re.sub(r'runtime_version = "[^"]*"', 'runtime_version = "ORT <script>x</script>"',
                                           src.replace('name = "cpu"', 'name = "cpu2"')))
    prof = (Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "profiles" / "cpu.toml").read_text()
    (pdir / "cpu2.toml").write_text(prof.replace('name = "cpu"', 'name = "cpu2"').replace('target = "cpu"',
                                                                                         'target = "cpu2"'))
    assert main(["report", "--pool", str(pool), "--targets-dir", str(tdir), "--profiles-dir", str(pdir), "--profile",
                 "cpu2", "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    rendered = MarkdownIt().render(md)
    assert "<script>" not in rendered and "<b>" not in rendered and f"<code>{pool}</code>" in rendered.replace(
        "&lt;", "<").replace("&gt;", ">")


def test_the_summaries_name_the_thread_count_of_each_latency(tiny_pool: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`report --profile cpu --profile cpu-t1` showed 1.95 and 6.24 ms side by side with no thread count in the
    terminal's summary or report.md's (only each profile's section said it): read as the same setting."""
    d = tmp_path / "profiles"
    d.mkdir()
    src = (Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "profiles" / "cpu.toml").read_text()
    (d / "cpu-t1.toml").write_text(src.replace('name = "cpu"', 'name = "cpu-t1"') + "threads = 1\n")
    assert main(["report", "--pool", str(tiny_pool), "--profiles-dir", str(d), "--profile", "cpu-t1", "--out",
                 str(tmp_path / "rep")]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cpu-t1"))
    assert "1 thread" in row, row
    md = (tmp_path / "rep" / "report.md").read_text()
    assert next(ln for ln in md.splitlines() if ln.startswith("| [cpu-t1]")).rstrip(" |").endswith("1 thread")


def test_markdown_in_a_targets_runtime_version_reads_literally(tiny_pool: Path, tmp_path: Path) -> None:
    """html.escape left Markdown's own syntax: "1.17 *dev* [a](http://e.com)" rendered emphasis and a live link."""
    from markdown_it import MarkdownIt

    from lgp_edge.targets import targets_root

    tdir, pdir = tmp_path / "targets", tmp_path / "profiles"
    tdir.mkdir()
    pdir.mkdir()
    src = (targets_root() / "cpu.toml").read_text()
    (tdir / "cpu2.toml").write_text(re.sub(r'runtime_version = "[^"]*"',
                                           'runtime_version = "1.17 *dev* `x` [a](http://e.com) <b>"',
                                           src.replace('name = "cpu"', 'name = "cpu2"')))
    prof = (Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "profiles" / "cpu.toml").read_text()
    (pdir / "cpu2.toml").write_text(prof.replace('name = "cpu"', 'name = "cpu2"').replace('target = "cpu"',
                                                                                         'target = "cpu2"'))
    assert main(["report", "--pool", str(tiny_pool), "--targets-dir", str(tdir), "--profiles-dir", str(pdir),
                 "--profile", "cpu2", "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    line = next(ln for ln in (tmp_path / "rep" / "report.md").read_text().splitlines() if ln.startswith("Target "))
    html_out = MarkdownIt().renderInline(line)
    assert "<em>" not in html_out and "<a " not in html_out and "<b>" not in html_out and "*dev*" in html_out
