"""README.md's benchmark sections are what benchmarks/render_readme.py renders from the committed results files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


def _render_readme():
    return load_benchmark("render_readme")


def test_readme_sections_match_the_results_files() -> None:
    render = _render_readme()
    text = (ROOT / "README.md").read_text()
    assert render.rendered(text) == text, "README.md is out of date: run python benchmarks/render_readme.py"
    for name, _ in render.SECTIONS:
        assert f"<!-- {name}:begin -->" in text


def test_check_flag_reports_an_out_of_date_readme(tmp_path: Path) -> None:
    """--check on a copy of the repository: exit 0 as committed; exit 1, README untouched, once a number in a
    generated section differs from its results file."""
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns(".cache", "*.png"))
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    readme.write_text(text)
    check = [sys.executable, str(tmp_path / "benchmarks" / "render_readme.py"), "--check"]
    run = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    stale = text.replace("<!-- aux:begin -->\n", "<!-- aux:begin -->\nTi alone 12.34%\n", 1)
    assert stale != text
    readme.write_text(stale)
    run = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1 and "README.md is out of date" in run.stderr
    assert readme.read_text() == stale
    run = subprocess.run(check[:-1], capture_output=True, text=True, cwd=tmp_path)  # without --check: rewritten
    assert run.returncode == 0 and readme.read_text() == text
