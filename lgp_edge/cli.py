"""The ``lgp-edge`` command line: parses arguments, calls one stage function, maps errors to exit codes.

Exit codes: 0 ok, 1 validation failed, 2 usage or input error (one line on stderr, nothing written; also on
Windows, which lgp-edge does not support, at the start), 3 a board did not answer (worth retrying), 130
interrupted (Ctrl-C), 143 terminated (SIGTERM), 141 the reader of stdout went away.
Each subcommand lives in ``lgp_edge.commands.<name>`` with ``register(subparsers)``; heavy libraries are
imported only inside the handlers, so ``lgp-edge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from lgp_edge import __version__
from lgp_edge.commands.common import HELD, HeldWarnings, PrintableFormatter, StderrHandler, printable
from lgp_edge.errors import (
    NO_HOME_MESSAGE,
    STDOUT,
    UNSUPPORTED_OS,
    WRITE_ERRNOS,
    LgpEdgeError,
    UsageError,
    write_failed,
)
from lgp_edge.export import graph_cache

COMMAND_MODULES = (
    "ancestry",
    "pool",
    "baseline",
    "targets",
    "profile",
    "select",
    "export",
    "profiles",
    "report",
    "cache",
    "completion",
)

log = logging.getLogger("lgp_edge")


_GIVEN = "_values_given"  # the namespace's record of the value options given so far (removed after parsing)


def _as_typed(value: Any) -> str:
    """A parsed option value as the user wrote it (``('ti6',)`` from ``--models ti6``: ``ti6``)."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


class _StoreOnce(argparse._StoreAction):
    """A value option given twice is refused: argparse kept the last value and dropped the first unsaid
    (``export --descendant a --descendant b`` exported b alone)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given = namespace.__dict__.setdefault(_GIVEN, {})
        if option_string is not None and self.dest in given:
            parser.error(f"{option_string} was given twice ('{_as_typed(given[self.dest])}', then "
                         f"'{_as_typed(values)}'); give it once")
        given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line on stderr, exit code 2; an option is named in full (a
    prefix such as ``--warmup`` for ``--warmup-epochs`` could mean another option than the one meant), and a
    value option is given once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def error(self, message: str) -> NoReturn:
        _say(f"lgp-edge: error: {message} (see '{self.prog} --help')")
        raise SystemExit(2)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse's, but arguments no parser knows are reported against the subcommand that was given
        (its ``--help`` lists what it takes), not the top level."""
        parsed, extras = self.parse_known_args(args, namespace)
        vars(parsed).pop(_GIVEN, None)
        if extras:
            prog = getattr(parsed, "help_prog", self.prog)
            _say(f"lgp-edge: error: unrecognized arguments: {' '.join(extras)} (see '{prog} --help')")
            raise SystemExit(2)
        return parsed


def _say(line: str) -> None:
    """One line on stderr, whatever the terminal's encoding (paths may hold undecodable bytes), its control
    characters escaped."""
    text = printable(" ".join(line.splitlines())) + "\n"
    stream = sys.stderr
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))
        stream.flush()
    except (OSError, ValueError):  # stderr read-only, closed or its reader gone: the exit code still says it
        pass


def _add_general_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v/--verbose`` and ``-q/--quiet``, accepted before or after any subcommand.

    Below the top level their default is SUPPRESS, so a subcommand's parser never resets a flag that was
    given before the subcommand's name.
    """
    g = p.add_argument_group("general options")
    default = False if top else argparse.SUPPRESS
    g.add_argument("-v", "--verbose", action="store_true", default=default, help="lgp-edge's debug log on stderr")
    g.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``p`` by name (empty for a leaf)."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


PATH_METAVARS = frozenset({"POOL", "DIR", "FILE", "PATH"})


def _path(text: str) -> str:
    """argparse type of every path argument: an empty one would name the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a path")
    return text


def _add_general_everywhere(p: argparse.ArgumentParser) -> None:
    for child in subparsers(p).values():
        _add_general_options(child, top=False)
        child.set_defaults(help_prog=child.prog)  # the deepest subcommand given wins
        for action in child._actions:
            if action.metavar in PATH_METAVARS and action.type is None:
                action.type = _path
        _add_general_everywhere(child)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lgp-edge", description=(
        "Learngene Pool for the edge: distil one ViT into a pool of learngene instances, stitch them into "
        "variable-sized descendants, profile them on devices and export the best one."))
    parser.add_argument("--version", action="version", version=f"lgp-edge {__version__}")
    _add_general_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"lgp_edge.commands.{name}").register(sub)
    _add_general_everywhere(parser)
    return parser


class Terminated(BaseException):
    """SIGTERM (``timeout``, Slurm, Kubernetes, systemd): unwinds like Ctrl-C, so temporary files are removed."""


IMPORT_MACHINERY = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
STOP_RETRY_S = 0.05  # how soon a stop that arrived during an import is tried again


def _importing(frame: Any) -> bool:
    """Whether the interrupted code runs inside a module's import (the import machinery is on its stack above
    ``main``: a program that calls ``main`` while it is itself being imported is not in an import of the command's,
    and deferring its stop would defer it for good)."""
    while frame is not None:
        if frame.f_code.co_filename in IMPORT_MACHINERY:
            return True
        if frame.f_code is main.__code__:
            return False
        frame = frame.f_back
    return False


_STOPPING: list[int] = []  # the signal this command is stopping for (set by the first stop, cleared by _terminal)


def _on_stop(main_pid: int, stop: type[BaseException]) -> Any:
    """A handler for SIGTERM (raises ``Terminated``) or SIGINT (``KeyboardInterrupt``, as Python's own handler).
    Once one stop was raised, later ones are the same stop (a second Ctrl-C while the first unwinds): ignored, so
    that the unwinding finishes and the exit code is the first one's."""
    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:  # a forked data-loading worker: the main process stops it as it unwinds
            if signum == signal.SIGINT:
                raise stop  # as Python's own handler does there (torch's worker loop expects it)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # (dying of the signal made torch print a traceback)
            return
        if _importing(frame):
            # raised inside an import, the exception can reach a native extension's initialisation, which cannot
            # pass it on and aborts the process (onnx: "terminate called after throwing ... nanobind::python_error"),
            # leaving the scratch files behind: the stop is delivered again once the import is over
            retry = threading.Timer(STOP_RETRY_S, os.kill, (main_pid, signum))
            retry.daemon = True
            retry.start()
            return
        if _STOPPING:
            return
        _STOPPING.append(signum)
        raise stop

    return handler


class _StdoutFile(io.FileIO):
    """The process's standard output whose failed writes say so (``OSError.filename`` is ``STDOUT``), where a
    plain one names nothing: ``lgp-edge ... > file`` on a full disk says what it could not write."""

    def write(self, b: Any) -> int | None:
        try:
            return super().write(b)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = STDOUT
            raise


def _named_stdout(stream: Any) -> Any:
    """``stream`` (the process's own ``sys.stdout``) over a ``_StdoutFile``, its text settings kept; any other
    stream (an application's, a test's capture) as it is."""
    if stream is not sys.__stdout__ or not isinstance(stream, io.TextIOWrapper):
        return stream
    try:
        fd = stream.fileno()
        stream.flush()
    except (OSError, ValueError):
        return stream
    raw = _StdoutFile(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=stream.errors,
                            line_buffering=stream.line_buffering, write_through=stream.write_through)


def _flushed(rc: int, held: HeldWarnings | None) -> int:
    """``rc`` once what the command wrote to the standard output is out (a short output sits in the buffer until
    the end); the write error's code where it could not be written."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        return _failed(write_failed(exc, elsewhere=""), held)
    return rc


def _reader_gone() -> int:
    """The reader went away (lgp-edge ... | head): stop quietly, as SIGPIPE would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe, not even at exit
    return 141


@contextmanager
def _terminal(as_program: bool = False) -> Iterator[None]:
    """What the command line owns while it runs, given back afterwards (``main`` may be called from Python):
    SIGTERM unwinds (exit 143), SIGTERM and Ctrl-C wait for an import in progress (where an application has not
    set handlers of its own), and text a terminal's encoding cannot show is escaped, not a crash after the
    work is done. ``as_program`` (the ``lgp-edge`` process itself) and stopped: the stop signals stay ignored
    until the process exits, so a late second Ctrl-C cannot interrupt the interpreter's shutdown."""
    _STOPPING.clear()
    old_term = old_int = None
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            old_term = signal.signal(signal.SIGTERM, _on_stop(os.getpid(), Terminated))
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            old_int = signal.signal(signal.SIGINT, _on_stop(os.getpid(), KeyboardInterrupt))
    closed = {name: getattr(sys, name) for name in ("stdout", "stderr") if getattr(sys, name) is None}
    for name in closed:  # started with the descriptor closed (a daemon, '>&-'): the text goes nowhere
        setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 (closed below)
    errors = {}
    for stream in (sys.stdout, sys.stderr):
        # strict, or the C locale's surrogateescape into ASCII: '·' would crash a command that did its work
        if isinstance(stream, io.TextIOWrapper) and (stream.errors == "strict" or (
                stream.errors == "surrogateescape" and "utf" not in stream.encoding.lower().replace("-", ""))):
            errors[stream] = stream.errors
            stream.reconfigure(errors="backslashreplace")
    old_stdout = sys.stdout
    sys.stdout = _named_stdout(old_stdout)
    try:
        yield
    finally:
        if sys.stdout is not old_stdout:
            try:
                sys.stdout.flush()  # flushed and checked by main already, unless it did not get there
            except (OSError, ValueError):
                pass
            sys.stdout = old_stdout
        for signum, old in ((signal.SIGTERM, old_term), (signal.SIGINT, old_int)):
            if old is not None:
                signal.signal(signum, signal.SIG_IGN if as_program and _STOPPING else old)
        for stream, value in errors.items():
            try:
                stream.reconfigure(errors=value)
            except ValueError:  # closed (a reader went away)
                pass
        for name, value in closed.items():
            getattr(sys, name).close()
            setattr(sys, name, value)


@contextmanager
def _logging(verbose: bool) -> Iterator[HeldWarnings | None]:
    """Warnings on stderr (held until the input checks are over); ``-v``: lgp-edge's own debug log too,
    never other libraries' (matplotlib's font search, the ONNX passes). Removed afterwards."""
    root = logging.getLogger()
    handler: logging.Handler | None = None
    held = None
    old_level, own_level = root.level, log.level
    if not root.handlers:  # as basicConfig would (an application that set up logging keeps its own)
        if verbose:
            handler = StderrHandler()
            handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
        else:
            handler = held = HeldWarnings()
            HELD[:] = [held]
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    if verbose:
        log.setLevel(logging.DEBUG)
    try:
        yield held
    finally:
        if handler is not None:
            root.removeHandler(handler)
            root.setLevel(old_level)
        log.setLevel(own_level)
        HELD.clear()


def program() -> NoReturn:
    """The ``lgp-edge`` executable and ``python -m lgp_edge``: ``main`` on ``sys.argv``, and once stopped, the stop
    signals stay ignored until the process has exited (a late second Ctrl-C cannot break its shutdown)."""
    raise SystemExit(main(as_program=True))


def main(argv: Sequence[str] | None = None, *, as_program: bool = False) -> int:
    if os.name == "nt":  # before anything: its writer locks and atomic swaps are POSIX-only
        _say(f"lgp-edge: error: {UNSUPPORTED_OS}")
        return 2
    with _terminal(as_program=as_program):
        try:
            args = build_parser().parse_args(argv)
        except (KeyboardInterrupt, Terminated) as exc:
            return _stopped(exc, None)
        except SystemExit as exc:  # --help, --version, a usage error: argparse has written its text
            code = _flushed(0, None)
            if code:
                return code
            raise exc
        with _logging(args.verbose) as held:
            return _run(args, argv, held)


def _stopped(exc: BaseException, held: HeldWarnings | None) -> int:
    _show(held)
    if isinstance(exc, Terminated):
        _say("lgp-edge: terminated")
        return 143
    _say("lgp-edge: interrupted")
    return 130


def _run(args: argparse.Namespace, argv: Sequence[str] | None, held: HeldWarnings | None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    log.debug("lgp-edge %s (python %s): %s", __version__, sys.version.split()[0], " ".join(words))
    try:
        graph_cache.limit_bytes()  # a bad $LGP_EDGE_CACHE_MB is refused before any work
        rc = int(args.func(args) or 0)
    except LgpEdgeError as exc:
        return _failed(exc, held)
    except (KeyboardInterrupt, Terminated) as exc:
        return _stopped(exc, held)
    except BrokenPipeError:
        return _reader_gone()
    except RuntimeError as exc:
        if str(exc) != NO_HOME_MESSAGE:
            raise
        return _failed(UsageError("a library lgp-edge uses needs a home directory, and none is known (HOME is not "
                                  "set and this user has none): set HOME to a folder"), held)
    except OSError as exc:  # a full disk, a read-only file system...: the environment's, not a bug
        if exc.errno == errno.ENOENT and "No usable temporary directory" in str(exc):
            # tempfile tried every candidate folder and could write in none (a file-size limit of 0, full disks)
            return _failed(UsageError("no temporary folder can be written ($TMPDIR, /tmp, /var/tmp and the current "
                                      "folder were tried): free space there, raise the file-size limit (ulimit -f), "
                                      "or set TMPDIR to a writable folder"), held)
        if exc.errno not in WRITE_ERRNOS:
            raise
        return _failed(write_failed(exc, elsewhere=""), held)
    finally:
        _show(held)
        outdir = sys.modules.get("lgp_edge.outdir")
        if outdir is not None:
            outdir.release()  # the writer locks of output directories this command did not get to publish
    return _flushed(rc, held)


def _failed(exc: LgpEdgeError, held: HeldWarnings | None) -> int:
    if held is not None and exc.exit_code == 2:
        held.drop()  # bad input: its one line says what matters
    _show(held)
    _say(f"lgp-edge: error: {exc}")
    return exc.exit_code


def _show(held: HeldWarnings | None) -> None:
    if held is not None:
        held.show()


if __name__ == "__main__":
    raise SystemExit(main())
