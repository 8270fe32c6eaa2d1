"""Helpers shared by subcommands: output, progress, pool argument."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_pool_arg(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("pool", help="pool directory")
    else:
        p.add_argument("--pool", default=None, help="pool directory (default: the bundled demo pool)")


def reporter(args: argparse.Namespace) -> Any:
    from lgp_edge.progress import NULL, RichReporter

    return NULL if getattr(args, "quiet", False) else RichReporter()


def console() -> Any:
    from rich.console import Console

    return Console()


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write("\n")


def int_at_least(low: int):  # noqa: ANN201  (an argparse type)
    """argparse type: an integer >= ``low`` (a bad value is one line on stderr, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


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
