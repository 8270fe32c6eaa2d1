"""Warnings on stderr never come before a bad-input error: a command that stops on bad input prints one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BUILD = [sys.executable, "-m", "lgp_edge.cli", "pool", "build", "--ancestry", "lgp_test_tiny",
         "--allow-random-ancestry", "--data", "synthetic", "--epochs", "1", "--max-steps-per-epoch", "1",
         "--batch-size", "8", "--stitch-steps", "2"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_bad_input_after_a_warning_is_one_line(tmp_path: Path) -> None:
    """The synthetic-data warning of the data loader, then a --distilled that is not there: one line."""
    done = _run([*BUILD, "--out", str(tmp_path / "pool"), "--distilled", str(tmp_path / "nowhere"), "--quiet"])
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("lgp-edge: error:"), done.stderr
    assert not (tmp_path / "pool").exists()


def test_select_on_a_missing_pool_is_one_line(tmp_path: Path) -> None:
    """The warning that the store is missing, then the pool that is missing: one line."""
    done = subprocess.run([sys.executable, "-m", "lgp_edge.cli", "select", "--profile", "cpu", "--pool",
                           str(tmp_path / "nowhere"), "--store", str(tmp_path / "none.sqlite")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert "is not a pool directory" in done.stderr


def test_warnings_of_a_run_that_goes_on_are_printed(tmp_path: Path) -> None:
    done = _run([*BUILD, "--out", str(tmp_path / "pool"), "--quiet"])
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr and "synthetic" in done.stderr.lower(), done.stderr


def test_control_characters_in_errors_and_warnings_reach_the_terminal_escaped(tmp_path: Path) -> None:
    """Text lgp-edge did not write (a board's stderr, a file name) went to the terminal with its escape sequences: a
    window title set, the screen cleared. Printed escaped instead, in the error line and in the warnings."""
    odd = "x\x1b]0;title\x07\x1b[2J\x9bred\r"
    done = subprocess.run([sys.executable, "-m", "lgp_edge.cli", "select", "--profile", "cpu", "--pool",
                           str(tmp_path / odd), "--store", str(tmp_path / f"{odd}.sqlite")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "is not a pool directory" in done.stderr, done.stderr
    assert not any(c in done.stderr for c in "\x1b\x07\x9b\r"), repr(done.stderr)
    assert "x\\x1b]0;title\\x07\\x1b[2J\\x9bred" in done.stderr, repr(done.stderr)  # the \\r: a line break
    done = subprocess.run([sys.executable, "-m", "lgp_edge.cli", "select", "--profile", "jetson-nano", "--store",
                           str(tmp_path / f"{odd}.sqlite")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "WARNING" in done.stderr, done.stderr
    assert not any(c in done.stderr for c in "\x1b\x07\x9b\r"), repr(done.stderr)


def test_warnings_and_debug_lines_follow_stderr_as_it_is_when_they_are_written(monkeypatch, tmp_path: Path) -> None:
    """The CLI's log handlers wrote to the stderr of the moment they were made, past the one rich's live progress
    display puts in place to print lines above its bars: a warning during a task was glued onto the bar. Each
    line goes to sys.stderr as it is when the line is written."""
    import io
    import logging

    from lgp_edge import cli

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a process of its own (not pytest's capture)
    for verbose in (False, True):
        with cli._logging(verbose) as held:
            if held is not None:
                held.show()
            live = io.StringIO()
            monkeypatch.setattr(sys, "stderr", live)  # as rich's Live does while its bars are drawn
            logging.getLogger("lgp_edge.test").warning("a warning mid-task")
            monkeypatch.setattr(sys, "stderr", sys.__stderr__)
        assert "a warning mid-task" in live.getvalue(), verbose
