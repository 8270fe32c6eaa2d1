"""Progress reporting: library loops report through a ``Reporter``; the CLI decides how it shows.

The library never prints; long loops call ``reporter.task(...)`` and ``task.advance()``. The CLI passes a
``RichReporter`` (progress bars on an interactive stderr), a ``LineReporter`` (one plain line every
``interval`` seconds when stderr is a pipe or a log file, where a live bar would show nothing until the end)
or ``NullReporter`` (``--quiet``, tests).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> Any: ...  # a context manager yielding advance(n, **fields)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 thread``, ``4 threads``: a count with its noun in the number it takes (``plural`` where not noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def fields_text(fields: dict[str, Any]) -> str:
    """``loss 0.8266  lr 0.0005``: a task's extra fields as shown beside its progress."""
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class _NullTask:
    def advance(self, n: int = 1, **fields: Any) -> None:
        pass


class NullReporter:
    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_NullTask]:
        yield _NullTask()


class _RichTask:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: int = 1, **fields: Any) -> None:
        self._progress.update(self._id, advance=n, info=fields_text(fields))


class RichReporter:
    """Rich progress bars on the given console (stderr by default)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True, emoji=False, markup=False, highlight=False)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_RichTask]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        # descriptions name paths ('load 300 validation images (imagefolder:run[3])'): text, never markup. On a
        # narrow terminal the description gives way (cut with '…') and the bar goes, never the count and the times
        # (rich cut those to '0:…' at 40 or 60 columns)
        width = self.console.width
        columns = [TextColumn("{task.description}", markup=False,
                              table_column=Column(no_wrap=True, overflow="ellipsis", max_width=max(8, width - 40))),
                   *([BarColumn()] if width >= 80 else []), MofNCompleteColumn(table_column=Column(no_wrap=True)),
                   TimeElapsedColumn(table_column=Column(no_wrap=True)),
                   TimeRemainingColumn(table_column=Column(no_wrap=True)),
                   TextColumn("{task.fields[info]}", markup=False)]
        with Progress(*columns, console=self.console, transient=False) as progress:
            yield _RichTask(progress, progress.add_task(description, total=total, info=""))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _LineTask:
    def __init__(self, reporter: LineReporter, description: str, total: int | None) -> None:
        self._reporter, self._description, self._total = reporter, description, total
        self._done, self._info = 0, ""
        self._start = self._last = reporter.clock()
        self.shown: tuple[int, str] | None = None  # what the last line printed said
        self._lock = threading.Lock()  # advance (the task's thread) and the heartbeat both print

    def advance(self, n: int = 1, **fields: Any) -> None:
        self._done += n
        if fields:
            self._info = fields_text(fields)
        self.tick()

    def tick(self) -> None:
        """A line when the interval has passed since the last one (called by ``advance`` and the heartbeat)."""
        with self._lock:
            now = self._reporter.clock()
            if now - self._last >= self._reporter.interval:
                self._last = now
                self.emit(now)

    def emit(self, now: float, final: bool = False) -> None:
        elapsed = now - self._start
        if self._total:
            pct = 100.0 * self._done / self._total
            text = f"{self._description}: {self._done}/{self._total} ({pct:.0f}%) {_duration(elapsed)} elapsed"
            if not final and 0 < self._done < self._total:
                text += f", ~{_duration(elapsed * (self._total - self._done) / self._done)} left"
        else:
            text = f"{self._description}: {self._done} done, {_duration(elapsed)} elapsed"
        if self._info:
            text += f"  {self._info}"
        print(text, file=self._reporter.stream, flush=True)
        self.shown = (self._done, self._info)

    @property
    def current(self) -> tuple[int, str]:
        return self._done, self._info


class LineReporter:
    """Plain progress lines for a non-interactive stderr (CI logs, ``nohup``, ``2> file``).

    Each task prints a line every ``interval`` seconds while it runs, whether or not it advanced (a heartbeat
    thread), and one when it ends, so a log shows how far a long run got and how long it has left.
    """

    def __init__(self, stream: IO[str] | None = None, interval: float = 30.0, clock: Any = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_LineTask]:
        task = _LineTask(self, description, total)
        done = threading.Event()

        def heartbeat() -> None:  # a step that takes minutes (an export, an engine build) still shows it runs
            while not done.wait(self.interval):
                task.tick()

        beat = threading.Thread(target=heartbeat, name="lgp-edge-progress", daemon=True)
        beat.start()
        try:
            yield task
        finally:
            done.set()
            beat.join()
        with task._lock:
            if task.shown != task.current:  # the last interval's line may have said it all already
                task.emit(self.clock(), final=True)


NULL = NullReporter()


def stderr_reporter(quiet: bool = False) -> Any:
    """What a command shows on stderr: bars on a terminal, a plain line every 30 s on a pipe or log, none if quiet."""
    if quiet:
        return NULL
    dumb = os.environ.get("TERM", "") in ("dumb", "unknown")  # rich draws nothing live there
    return RichReporter() if sys.stderr.isatty() and not dumb else LineReporter()
