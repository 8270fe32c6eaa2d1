"""Progress on a non-interactive stderr: plain lines a log file can show, bars only on a terminal."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

from lgp_edge.progress import LineReporter

ROOT = Path(__file__).resolve().parent.parent


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_reporter_prints_every_interval_and_at_the_end() -> None:
    out, clock = io.StringIO(), _Clock()
    rep = LineReporter(stream=out, interval=30.0, clock=clock)
    with rep.task("finetune", total=100) as task:
        for _ in range(100):
            clock.now += 1.0  # one step a second: a line at 30 s, 60 s, 90 s, and the final one
            task.advance(loss=0.123456)
    lines = out.getvalue().splitlines()
    assert lines == [
        "finetune: 30/100 (30%) 0:30 elapsed, ~1:10 left  loss 0.1235",
        "finetune: 60/100 (60%) 1:00 elapsed, ~0:40 left  loss 0.1235",
        "finetune: 90/100 (90%) 1:30 elapsed, ~0:10 left  loss 0.1235",
        "finetune: 100/100 (100%) 1:40 elapsed  loss 0.1235",
    ]


def test_line_reporter_without_total_counts_and_times() -> None:
    out, clock = io.StringIO(), _Clock()
    with LineReporter(stream=out, interval=10.0, clock=clock).task("calibration", total=None) as task:
        clock.now = 3725.0
        task.advance(5)
    line = "calibration: 5 done, 1:02:05 elapsed"
    assert out.getvalue().splitlines() == [line]  # as the interval passed; the end has nothing new to say


def test_a_task_that_does_not_advance_still_logs_every_interval() -> None:
    """One long step (a DeiT-B export, a --seconds measurement, an engine build) printed nothing on a pipe until it
    ended: a log showed no sign of life for minutes. The line comes every interval whether the task advanced."""
    import time

    out = io.StringIO()
    with LineReporter(stream=out, interval=0.2).task("onnx: export", total=1) as task:
        time.sleep(0.7)
        task.advance()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(ln.startswith("onnx: export: 0/1 (0%) 0:0") for ln in lines[:-1]), lines
    assert lines[-1].startswith("onnx: export: 1/1 (100%)"), lines


def test_cli_on_a_pipe_logs_plain_progress(tiny_pool: Path, tmp_path: Path) -> None:
    """`lgp-edge pool eval ... 2> log`: the log says what finished (a live bar would leave nothing readable)."""
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    argv = [sys.executable, "-m", "lgp_edge", "pool", "eval", str(pool), "--data", "synthetic", "--max-images", "64"]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stderr and "━" not in r.stderr
    assert any("(100%)" in ln for ln in r.stderr.splitlines()), r.stderr
    q = subprocess.run([*argv, "-q"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert q.returncode == 0 and "(100%)" not in q.stderr


def test_a_count_takes_its_noun_in_the_number_it_needs() -> None:
    """Messages said '1 thread(s)', '2 model(s) measured', 'median of 1 recent run(s)'."""
    from lgp_edge.profiling.predict import _probes_were
    from lgp_edge.progress import counted

    assert [counted(n, "thread") for n in (0, 1, 2)] == ["0 threads", "1 thread", "2 threads"]
    assert counted(2, "entry", "entries") == "2 entries" and counted(1, "entry", "entries") == "1 entry"
    assert _probes_were(1) == "1 calibration probe was" and _probes_were(3) == "3 calibration probes were"


def test_progress_bars_print_descriptions_as_text_not_markup() -> None:
    """A task named after an image folder such as `b[/]x` ended the export in a MarkupError traceback on a
    terminal (and `run[3]` lost its bracket): descriptions and fields are text."""
    from rich.console import Console

    from lgp_edge.progress import RichReporter

    out = io.StringIO()
    rep = RichReporter(Console(file=out, force_terminal=True, width=200))
    with rep.task("load 8 validation images (imagefolder:/d/b[/]x run[3])", total=1) as task:
        task.advance(note="[bold]x[/]")
    assert "imagefolder:/d/b[/]x run[3]" in out.getvalue()
