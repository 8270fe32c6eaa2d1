"""Helpers shared by subcommands: arguments with one metavar and help style, output, progress.

Metavars name the kind of value: POOL (a pool directory), DIR (any other directory), FILE, TARGET,
PROFILE, KEY (a descendant key), NAME (a model name), DATA (a dataset), N (a count). ``--json`` has the
same help everywhere. Output: tables go through ``print_table``, which never shortens a cell: rich on a
terminal (long cells wrap), plain aligned columns when stdout is a pipe or a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JSON_HELP = "print the result as JSON on stdout instead of text"
DATA_HELP = "dataset: fashion-mnist | imagefolder:DIR | synthetic"


def data_value(text: str) -> str:
    """--data as it is recorded: an image folder by its absolute path, ``~`` expanded (an argparse type; it
    imports nothing heavy, as parsing runs before any input check)."""
    from lgp_edge.errors import UsageError
    from lgp_edge.fileio import canonical_data

    try:
        return canonical_data(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def add_pool_arg(p: argparse.ArgumentParser, positional: bool = False, *, help: str | None = None,
                 optional: bool = False) -> None:
    """The pool: ``--pool POOL`` (default: the bundled demo pool), or a positional ``POOL``."""
    if positional:
        p.add_argument("pool", metavar="POOL", nargs="?" if optional else None, default=None,
                       help=help or "pool directory")
    else:
        p.add_argument("--pool", default=None, metavar="POOL",
                       help=help or "pool directory (default: the bundled demo pool)")


def add_dirs_args(p: argparse.ArgumentParser, *, profiles: bool = True, targets: bool = True) -> None:
    """``--profiles-dir DIR`` and ``--targets-dir DIR``."""
    if profiles:
        p.add_argument("--profiles-dir", default=None, metavar="DIR", help="extra directory of profile TOML files")
    if targets:
        p.add_argument("--targets-dir", default=None, metavar="DIR",
                       help="extra directory of target TOML files (wins over built-in targets of the same name)")


def add_store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, metavar="FILE",
                   help="measurement store (SQLite; default $LGP_EDGE_STORE or ~/.local/share/lgp-edge/"
                        "measurements.sqlite)")


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with its control characters (terminal escapes, carriage returns, bells; tabs and newlines kept)
    written as ``\\xNN`` escapes: error lines and warnings carry text lgp-edge did not write (a board's output,
    file names), which must not reach the terminal as commands to it."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class PrintableFormatter(logging.Formatter):
    """The CLI's log lines, control characters escaped (``printable``)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


class StderrHandler(logging.StreamHandler):
    """``logging.StreamHandler`` on ``sys.stderr`` as it is when each line is written (see ``HeldWarnings``)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler's __init__ sets it: always the current stderr
        pass


class HeldWarnings(logging.Handler):
    """The CLI's stderr for warnings: they wait until the command has passed its input checks, so a command
    that stops on bad input prints its one error line alone. They are printed when the first long task
    starts (``reporter``), when the command ends, or before an error that is not bad input."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(logging.WARNING)
        self._stream, self.held, self.open = stream, [], False
        self.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self) -> Any:
        """The given stream, else ``sys.stderr`` as it is now (rich's live display replaces it while it draws
        bars, so that lines written meanwhile go above them)."""
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        if self.open:
            self._write(record)
        else:
            self.held.append(record)

    def show(self) -> None:
        """Print what is held and every later warning as it comes (not ``release``: that is the lock's)."""
        self.open = True
        held, self.held = self.held, []
        for record in held:
            self._write(record)

    def drop(self) -> None:
        """Forget what is held (the command stopped on bad input: its error line says what matters)."""
        self.held = []

    def _write(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 (logging's own contract: a handler never raises)
            self.handleError(record)


HELD: list[HeldWarnings] = []  # the handler the CLI installed for this command, if any


def reporter(args: argparse.Namespace) -> Any:
    """Progress for long work: bars on a terminal, a plain line every 30 s on a pipe or log file, none with -q.
    Its first task prints the warnings held until then (the input checks are over once work starts)."""
    from lgp_edge.progress import stderr_reporter

    return _Releasing(stderr_reporter(getattr(args, "quiet", False)))


class _Releasing:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def task(self, description: str, total: int | None) -> Any:
        for handler in HELD:
            handler.show()
        return self.inner.task(description, total)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def console() -> Any:
    """Rich console on stdout; on a pipe or a file it never styles lines (plain text). Text is printed as it is,
    never read as rich markup or emoji names (paths and names are the user's: ``out[fp16]``, ``run:x:2``), and never
    wrapped by rich (tables fit themselves to the terminal); ``styled`` makes the few
    bold parts. A reader that goes away ends the command as any other write would (exit 141), not with rich's
    own exit 1, which reads as a failed validation."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    # never emoji (':x:' in a path is the path), never a line broken by rich (a terminal wraps it, and a command
    # copied from it stays one line), no numbers styled inside names (b6.0-5)
    plain = {"markup": False, "emoji": False, "soft_wrap": True, "highlight": False}
    if sys.stdout.isatty():
        return _Console(**plain)
    # not a terminal whatever FORCE_COLOR or TTY_COMPATIBLE say (set by many CI setups): a styled 'chosen:' line
    # is one that `grep '^chosen:'` misses
    return _Console(**plain, no_color=True, force_terminal=False)


def styled(head: str, rest: str = "", style: str = "bold") -> Any:
    """``head`` in ``style``, then ``rest``: a line for ``console().print``, neither part read as markup."""
    from rich.text import Text

    return Text.assemble((head, style), rest)


@dataclass(frozen=True)
class Col:
    """A table column: ``right`` for numbers; ``wrap`` for free text that may wrap on a narrow terminal."""

    name: str
    right: bool = False
    wrap: bool = False


def print_table(columns: Sequence[Col | str], rows: Sequence[Sequence[Any]], *, title: str = "",
                emphasize: Sequence[int] = ()) -> None:
    """Print a table on stdout, never shortening a cell (keys and numbers stay whole)."""
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    con = console()
    if sys.stdout.isatty() and _fits(cols, cells, con.width):
        con.print(_rich_table(cols, cells, title, set(emphasize)))
    else:  # a pipe, a file, or a terminal too narrow for whole keys: plain lines, which the terminal may wrap
        sys.stdout.write(plain_table(cols, cells, title))


def _fits(cols: Sequence[Col], cells: Sequence[Sequence[str]], width: int) -> bool:
    """Whether a rich table fits ``width`` with every non-wrapping cell whole (wrapping cells keep whole words)."""
    from rich.cells import cell_len

    need = 0
    for i, c in enumerate(cols):
        texts = [c.name, *(r[i] for r in cells)]
        need += max(cell_len(w) for t in texts for w in (t.split() if c.wrap else [t]) or [""])
    return need + 3 * len(cols) + 1 <= width  # one space of padding each side, one border per column + 1


def _rich_table(cols: Sequence[Col], cells: Sequence[Sequence[str]], title: str, emphasize: set[int]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None)
    for c in cols:
        table.add_column(c.name, justify="right" if c.right else "left", no_wrap=not c.wrap, overflow="fold")
    for n, row in enumerate(cells):
        table.add_row(*(Text(v) for v in row), style="bold green" if n in emphasize else None)
    return table


def plain_table(cols: Sequence[Col], cells: Sequence[Sequence[str]], title: str = "") -> str:
    """Aligned columns, two spaces apart, a dashed rule under the header; every cell in full."""
    widths = [max([len(c.name), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if c.right else v.ljust(w) for c, v, w in zip(cols, values, widths)).rstrip()

    out = [title] if title else []
    out += [line([c.name for c in cols]), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    return "\n".join(out) + "\n"


def print_json(obj: Any) -> None:
    """``obj`` as JSON on stdout, numbers that are not finite as ``null`` (strict parsers refuse ``NaN``)."""
    from lgp_edge.fileio import finite_json

    json.dump(finite_json(obj), sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


def name_list(flag: str, what: str):  # noqa: ANN201  (an argparse type)
    """argparse type: a comma list of at least one ``what`` (``--keys ''`` is refused, not the default)."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(w.strip() for w in text.split(",") if w.strip())
        if not names:
            raise argparse.ArgumentTypeError(f"give at least one {what} (a comma list), or leave {flag} out")
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise argparse.ArgumentTypeError(f"'{twice}' is named twice; give each {what} once")
        return names

    parse.__name__ = f"comma list of {what}s"
    return parse


def int_at_least(low: int, high: int | None = None):  # noqa: ANN201  (an argparse type)
    """argparse type: an integer >= ``low`` (and <= ``high``; a bad value is one line on stderr, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}" if high is None else
                                             f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}" if high is None else f"integer in {low}..{high}"
    return parse


MAX_SEED = 2**31 - 1  # every seed lgp-edge derives (per rank, per step) stays within what torch and numpy take
seed_value = int_at_least(0, MAX_SEED)  # argparse type of --seed


def _finite(text: str, low: float, inclusive: bool) -> float:
    """argparse type body: a finite number > ``low`` (>= with ``inclusive``)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if inclusive else '>'} {low:g}, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _finite(text, 0.0, inclusive=False)


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _finite(text, 0.0, inclusive=True)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1] (a weight whose complement weighs the rest)."""
    value = _finite(text, 0.0, inclusive=True)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
