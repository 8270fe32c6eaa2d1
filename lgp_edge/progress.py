"""Progress reporting: library loops report through a ``Reporter``; the CLI decides how it shows.

The library never prints; long loops call ``reporter.task(...)`` and ``task.advance()``. The CLI passes a
``RichReporter`` (progress bars on stderr) or ``NullReporter`` (``--quiet``, tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Task(Protocol):
    def advance(self, n: int = 1, **fields: Any) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> Any: ...  # context manager yielding a Task


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
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self._progress.update(self._id, advance=n, info=info)


class RichReporter:
    """Rich progress bars on the given console (stderr by default)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)

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

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console,
                      transient=False) as progress:
            yield _RichTask(progress, progress.add_task(description, total=total, info=""))


NULL = NullReporter()
