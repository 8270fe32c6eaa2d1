"""Third-party tools' chatter out of the user's terminal, and nothing else.

A conversion library (ONNX Runtime's quantization, NNCF, the ONNX exporters) logs advice, progress and notes
an application did not ask for. These context managers silence exactly those sources for the duration and put
everything back afterwards; the application's own loggers, its root logger's level and handlers, and the
process's stdout and stderr are left as they are, so an application logging at INFO keeps its own records and
prints while lgp-edge converts a model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """The named loggers (and their children without a level of their own) at ERROR, then back."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _FromPackages(logging.Filter):
    """Drops the records below ERROR logged from source files under ``dirs`` (every other record passes)."""

    def __init__(self, dirs: tuple[str, ...]) -> None:
        super().__init__()
        self.dirs = dirs

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(self.dirs)


@contextlib.contextmanager
def quiet_root_records(*packages: str) -> Iterator[None]:
    """Records that the named (imported) packages log on the root logger itself (``logging.warning(...)``,
    as ONNX Runtime's quantization does) dropped below ERROR, for the duration.

    A filter on the root logger sees only the records logged on the root logger, never those of named loggers
    that propagate to it, so an application's ``logging.getLogger("app")`` records pass untouched, and so do
    the root records of any other source file. A root logger without handlers is given ``logging.lastResort``
    meanwhile: the module-level ``logging.warning`` would otherwise run ``basicConfig`` and leave a handler on
    the application's root logger for good; the application's warnings still reach stderr through it as they
    would have."""
    import importlib

    dirs = tuple(os.path.dirname(importlib.import_module(p).__file__ or "") + os.sep for p in packages)
    root = logging.getLogger()
    below_error = _FromPackages(dirs)
    stand_in = None
    if not root.handlers:
        stand_in = logging.lastResort or logging.NullHandler()
        root.addHandler(stand_in)
    root.addFilter(below_error)
    try:
        yield
    finally:
        root.removeFilter(below_error)
        if stand_in is not None:
            root.removeHandler(stand_in)


@contextlib.contextmanager
def quiet_rich_console() -> Iterator[None]:
    """rich's global console, the one a library's progress bars draw on when given none (NNCF's ``track``
    draws on stdout through it and has no switch to turn them off), writing into a discarded buffer for the
    duration, then the previous global console back. Only that console is redirected, never ``sys.stdout``:
    the application's prints go on as before. rich keeps the global console in ``rich._console`` (what
    ``rich.get_console`` returns and ``rich.reconfigure`` changes); it is swapped and restored as it was."""
    import rich
    from rich.console import Console

    before = rich._console
    rich._console = Console(file=io.StringIO())
    try:
        yield
    finally:
        rich._console = before
