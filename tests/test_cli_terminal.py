"""The command line at a terminal, in a pipeline and under a job scheduler: signals, closed pipes, narrow
encodings, dumb terminals and debug logging behave as a shell user expects."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lgp_edge import progress
from lgp_edge.progress import LineReporter

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LGP_EDGE_STORE": str(tmp_path / "store.sqlite"), **extra}
    env.pop("COLUMNS", None)
    return env


def test_sigterm_stops_a_long_command_cleanly_and_removes_its_scratch_files(tmp_path):
    """timeout, Slurm and Kubernetes stop jobs with SIGTERM: the exported models of a profile run were left in
    $TMPDIR (hundreds of MB per descendant at DeiT-B scale)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "lgp_edge", "profile", "--target", "cpu", "--runtime", "onnxruntime",
                          "--threads", "1", "--warmup", "1", "--iters", "20000"],
                         env=_env(tmp_path, TMPDIR=str(scratch)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 120
    while not list(scratch.glob("lgp-edge-profile-*/*")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "lgp-edge: terminated" in err and "Traceback" not in err
    assert [p.name for p in scratch.iterdir() if "lgp" in p.name] == []  # nothing of lgp-edge's left behind
    assert not (tmp_path / "store.sqlite").exists()  # the store it created for this run is gone too


@pytest.mark.parametrize(("sig", "stop"), [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")])
def test_a_stop_during_an_import_waits_for_the_import_to_finish(tmp_path, sig, stop):
    """A SIGTERM that landed while onnx was being imported aborted the process (exit -6, "terminate called after
    throwing an instance of 'nanobind::python_error'", scratch files left): the exception was raised inside Python
    code that the extension's initialisation ran. Ctrl-C (SIGINT) raised its KeyboardInterrupt there the same way.
    A stop now waits for the import to end, then unwinds."""
    (tmp_path / "selfstop.py").write_text(
        "import os, signal, time\n"
        f"os.kill(os.getpid(), signal.{sig})  # the stop arrives halfway through this module's import\n"
        "for _ in range(20):\n"
        "    time.sleep(0.01)\n"
        "done = True\n")
    script = ("import signal, sys, time\n"
              # Ctrl-C as at a terminal: a background job of a non-interactive shell (CI) starts with SIGINT
              # ignored, which lgp-edge leaves as it is
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "from lgp_edge.cli import Terminated, _terminal\n"
              "with _terminal():\n"
              "    try:\n"
              "        import selfstop\n"
              "        print('imported', selfstop.done, flush=True)\n"
              "        time.sleep(10)\n"
              "        print('not stopped')\n"
              f"    except {stop}:\n"
              "        print('stopped')\n")
    r = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout.split("\n")) == (0, ["imported True", "stopped", ""]), r.stderr


def test_ctrl_c_handling_is_lgp_edges_only_where_python_s_default_was_in_place():
    """An ignored SIGINT (a background job of a non-interactive shell) stays ignored; the default one is replaced
    while the command runs and given back afterwards."""
    from lgp_edge.cli import _terminal

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _terminal():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with _terminal():
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("argv", [["targets", "show", "cpu"], ["pool", "info"], ["profiles", "list"]])
def test_a_reader_that_goes_away_is_exit_141_for_every_command(tmp_path, argv):
    """rich's own broken-pipe handling exited 1 ("validation failed") with nothing said; a passed export read
    as failed under 'set -o pipefail'."""
    p = subprocess.Popen([sys.executable, "-m", "lgp_edge", *argv], env=_env(tmp_path), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # before lgp-edge writes its first line
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert p.returncode == 141, err
    assert err == ""


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}],
                         ids=["ascii", "c-locale"])
def test_an_ascii_terminal_gets_escapes_not_a_crash(tmp_path, env):
    """'·' and '—' in success output crashed completed commands with UnicodeEncodeError (exit 1); in the C locale
    (Python's surrogateescape there, not strict) too."""
    out = subprocess.run([sys.executable, "-m", "lgp_edge", "profile", "--target", "jetson-nano", "--predict",
                          "--store", str(tmp_path / "s.sqlite")], env={**_env(tmp_path), **env},
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert b"UnicodeEncodeError" not in out.stderr


@pytest.mark.parametrize("fd", [1, 2], ids=["stdout", "stderr"])
def test_a_closed_stdout_or_stderr_is_not_a_traceback(tmp_path, fd):
    """Started with stdout (or stderr) closed (a daemon, '>&-'), a finished command ended in an AttributeError
    traceback on None.isatty() (exit 1): the output goes nowhere, the command's own exit code stays."""
    argv = [sys.executable, "-m", "lgp_edge", "select", "--target", "jetson-nano", "--store",
            str(tmp_path / "none.sqlite")]  # (not cpu: an empty store would make it calibrate this host)
    err = subprocess.run(argv, env=_env(tmp_path), stdout=subprocess.PIPE if fd == 2 else None,
                         stderr=subprocess.PIPE if fd == 1 else None, preexec_fn=lambda: os.close(fd), timeout=120)
    assert err.returncode == 0, err
    if fd == 1:
        assert b"Traceback" not in err.stderr, err.stderr.decode()
    bad = subprocess.run([*argv[:-4], "select", "--target", "no-such-target"], env=_env(tmp_path),
                         capture_output=fd == 2, preexec_fn=lambda: os.close(fd), timeout=120)
    assert bad.returncode == 2


def test_a_dumb_terminal_gets_plain_progress_lines(monkeypatch):
    """rich draws nothing live on TERM=dumb (Emacs shell, some CI runners): a long epoch showed nothing."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(progress.stderr_reporter(), LineReporter)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert isinstance(progress.stderr_reporter(), progress.RichReporter)


def test_the_last_progress_line_is_printed_once():
    out = io.StringIO()
    clock = [0.0]
    rep = LineReporter(stream=out, interval=30.0, clock=lambda: clock[0])
    with rep.task("measuring", total=18) as task:
        for _ in range(18):
            clock[0] += 6.0  # the last step crosses the 30 s mark
            task.advance(ms=0.1338)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("measuring: 18/18 (100%) 1:48 elapsed")
    assert len(lines) == len(set(lines))


def test_verbose_is_lgp_edges_debug_log_only_and_leaves_no_handler(tmp_path):
    """-v printed every library's DEBUG lines (270 of matplotlib's font search in a report) and, called from
    Python, left a DEBUG handler on the root logger for everything after it."""
    script = f"""
import logging, sys
from lgp_edge.cli import main
before = list(logging.getLogger().handlers)
rc = main(["-v", "report", "--profile", "cpu", "--out", {str(tmp_path / "rep")!r}])
assert rc == 0, rc
assert logging.getLogger().handlers == before, logging.getLogger().handlers
assert not logging.getLogger("lgp_edge").isEnabledFor(logging.DEBUG)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    debug = [ln for ln in out.stderr.splitlines() if ln.startswith("DEBUG ")]
    assert debug and all(ln.startswith("DEBUG lgp_edge") for ln in debug), [
        ln for ln in debug if not ln.startswith("DEBUG lgp_edge")][:5]


def test_interrupt_while_the_arguments_are_read_is_one_line(monkeypatch, capsys):
    from lgp_edge import cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["pool", "info"]) == 130
    assert capsys.readouterr().err == "lgp-edge: interrupted\n"


def test_reading_the_arguments_does_not_import_torch():
    """--data is an argparse type: it imported torch inside parse_args (3 s before a bad-input line, and a
    traceback on Ctrl-C)."""
    code = ("import sys; from lgp_edge.cli import build_parser; "
            "build_parser().parse_args(['pool', 'eval', 'x', '--data', 'imagefolder:~/imgs']); "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_logging_is_restored_after_a_quiet_run(capsys):
    from lgp_edge.cli import main

    before = (list(logging.getLogger().handlers), logging.getLogger().level)
    assert main(["profiles", "list"]) == 0
    assert (list(logging.getLogger().handlers), logging.getLogger().level) == before


def test_sigterm_to_the_process_group_with_data_loading_workers_is_one_line(tmp_path):
    """timeout and systemd signal the whole group: each worker died of SIGTERM and torch printed a traceback
    ("DataLoader worker (pid N) is killed by signal: Terminated") before the one line."""
    out = tmp_path / "anc"
    p = subprocess.Popen([sys.executable, "-m", "lgp_edge", "ancestry", "train", "--ancestry", "lgp_test_tiny",
                          "--data", "synthetic", "--batch-size", "8", "--epochs", "200", "--workers", "2",
                          "--save-every", "5", "--out", str(out)], env=_env(tmp_path), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "train.ckpt").is_dir() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    time.sleep(1.0)  # the workers are loading batches
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err and "killed by signal" not in err, err
    assert err.strip().endswith("lgp-edge: terminated")


WORKER_HANDSHAKE = """
import os, socket, sys, time
from multiprocessing import resource_sharer

from lgp_edge.train import data_loading_worker_init

data_loading_worker_init(0)
# a batch's shared memory is offered to the main process through multiprocessing's fd-passing listener
resource_sharer.DupFd(os.open(os.devnull, os.O_RDONLY))
# the main process, stopped by the group's SIGTERM while it unpickles that batch: connected, gone mid-handshake
s = socket.socket(socket.AF_UNIX)
s.connect(resource_sharer._resource_sharer._address)
s.close()
time.sleep(0.5)
print("worker alive", file=sys.stderr)
"""


def test_a_data_loading_worker_whose_main_process_stops_mid_handshake_prints_no_traceback(tmp_path):
    """The group's SIGTERM reached the main process while it was taking a batch's shared memory from a worker: the
    worker's fd-passing thread printed a BrokenPipeError traceback under the one line (seen in the test above on a
    loaded machine). The main process, which owns the terminal, says what happened."""
    run = subprocess.run([sys.executable, "-c", WORKER_HANDSHAKE], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0 and run.stderr == "worker alive\n", run.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["targets", "list", "--json"], ["--version"]])
def test_output_that_cannot_be_written_names_the_standard_output_and_fails(tmp_path, argv):
    """`lgp-edge ... > file` on a full disk: the error says it was the standard output that could not be written
    (not a bare "free space there"), and a short output flushed only at exit (--version) does not exit 0."""
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "lgp_edge", *argv], env=_env(tmp_path), stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    assert "no space left on device writing the standard output" in lines[0], lines



def test_paths_with_square_brackets_are_printed_as_given(tiny_pool: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Square brackets in a path were read as rich markup: `pool[run3]` printed as `pool` (and select's suggested
    command named the wrong folder), and `a[/b]` ended in a MarkupError traceback (exit 1)."""
    import shutil

    from lgp_edge.cli import main

    (tmp_path / "a[").mkdir()
    for name in ("pool[run3]", "a[/b]"):
        p = Path(shutil.copytree(tiny_pool, tmp_path / name))
        capsys.readouterr()
        assert main(["pool", "info", str(p)]) == 0
        out = capsys.readouterr().out
        assert f"  {p}\n" in out, out
        assert main(["select", "--target", "cpu", "--pool", str(p), "--store", str(tmp_path / "none.sqlite")]) == 0
        out = capsys.readouterr().out
        assert f"--pool '{p}'" in out, out


# a program whose `lgp-edge cache info` is stopped by Ctrl-C while it runs (the program then calls main)
STOPPED_CACHE_INFO = ("import os, signal, time\n"
                      "from lgp_edge.cli import main\n"
                      "from lgp_edge.export import graph_cache\n"
                      "def stopped():\n"
                      "    os.kill(os.getpid(), signal.SIGINT)\n"
                      "    time.sleep(2)\n"
                      "    return {}\n"
                      "graph_cache.summary = stopped\n")


def test_main_called_from_python_gives_ctrl_c_back_after_a_stop(tmp_path):
    """main() from a Python program, stopped by Ctrl-C: the stop signals were left ignored for the rest of the
    caller's life (only the lgp-edge executable itself keeps ignoring them, until it exits). In a program of its
    own: a test worker's signal handling is not a program's."""
    script = (STOPPED_CACHE_INFO + "import sys\n"
              "sys.argv = ['lgp-edge', 'cache', 'info']\n"
              "rc = main()\n"
              "print(rc, signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    done = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["130", "True"], (done.stdout, done.stderr)


def test_a_program_that_calls_main_while_it_is_imported_is_stopped_by_ctrl_c(tmp_path):
    """A stop is deferred while an import inside the command runs; a program calling main() from its own import
    (its whole run is an import: `python -c 'import job'`) had every stop deferred for good, and the deferred
    signal, sent again after main returned, ended the program with a KeyboardInterrupt traceback."""
    (tmp_path / "job.py").write_text(STOPPED_CACHE_INFO + "rc = main(['cache', 'info'])\n")
    done = subprocess.run([sys.executable, "-c", "import job; import time; time.sleep(0.5); print(job.rc)"],
                          cwd=tmp_path, env={**_env(tmp_path), "PYTHONPATH": f"{ROOT}:{tmp_path}"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["130"], (done.stdout, done.stderr)


def test_paths_are_printed_as_given_at_a_terminal_and_in_a_pipe(tmp_path):
    """rich read ':warning:' and ':x:' in a user's path as emoji names (a pool 'p:warning:x' was printed 'p⚠x' in the
    pasteable 'measure them with' command, an export to 'e:x:1' said 'wrote e❌1/'), and at a terminal it broke a
    long line into several (the pasteable command split at 40 columns) and styled the numbers of descendant keys."""
    import shutil

    from helpers import on_terminal

    from lgp_edge.pool.manifest import demo_pool_dir

    pool = tmp_path / "p:warning:x"
    shutil.copytree(demo_pool_dir(), pool)
    argv = [sys.executable, "-m", "lgp_edge", "select", "--target", "jetson-nano", "--pool", str(pool), "--quiet"]
    env = {**_env(tmp_path), "COLUMNS": "40"}
    piped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert f"--pool '{pool}'" in piped.stdout or f"--pool {pool}" in piped.stdout, piped.stdout
    text = on_terminal(argv[3:], 40, env=_env(tmp_path))
    lines = [ln for ln in text.replace("\r", "").split("\n") if "measure them with" in ln]
    assert len(lines) == 1 and (f"--pool '{pool}'" in lines[0] or f"--pool {pool}" in lines[0]), text
    assert "\x1b[" not in lines[0].split("measure them with")[1]  # the command is not styled either


@pytest.mark.parametrize("env", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_a_pipe_gets_no_styled_line_under_force_color(tmp_path, env, monkeypatch, capsys):
    """With FORCE_COLOR=1 (set by many CI setups) the 'chosen:' line reached a pipe as '\\e[1mchosen\\e[0m:', so
    `grep '^chosen:'` found nothing, where README says no line is styled on a pipe or a file."""
    from lgp_edge.cli import main

    monkeypatch.setenv(env, "1")
    capsys.readouterr()
    assert main(["select", "--target", "jetson-nano", "--store", str(tmp_path / "s.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and any(line.startswith("chosen:") for line in out.splitlines()), out


@pytest.mark.parametrize("argv", [["select", "--target", "no-such-target"], ["--bogus"]])
def test_an_error_line_that_cannot_be_written_keeps_exit_2(tmp_path, argv):
    """stderr opened read-only (a shell's '2>&-' through a pyenv shim) or a closed pipe: writing the one error line
    failed, and the OSError it raised made bad input exit 1 ('a validation failed')."""
    ro = tmp_path / "ro"
    ro.write_text("", encoding="utf-8")
    with open(ro, "rb") as stderr:
        done = subprocess.run([sys.executable, "-m", "lgp_edge", *argv], env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=stderr, timeout=120)
    assert done.returncode == 2
    p = subprocess.Popen([sys.executable, "-m", "lgp_edge", *argv], env=_env(tmp_path), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stderr.close()  # nobody reads the error line
    p.communicate(timeout=120)
    assert p.returncode == 2


@pytest.mark.parametrize("width", [40, 60, 100])
def test_a_narrow_terminals_progress_line_keeps_its_counts_and_times(width):
    """At 40 or 60 columns rich cut the elapsed and remaining times to '0:…' (and the count), and the finished bar
    stayed on screen so; the description (text) gives way now, never the numbers."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None, emoji=False, markup=False)
    reporter = progress.RichReporter(console)
    with reporter.task("load 1000 validation images (imagefolder:/data/some/long/path)", total=6) as task:
        for _ in range(6):
            task.advance()
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())  # cursor moves and line clears
    last = [line for line in text.replace("\r", "\n").split("\n") if "6/6" in line][-1]
    assert "6/6 0:00:00 0:00:00" in last and "…" not in last.split("6/6")[1], last
    assert len(last.rstrip()) <= width
