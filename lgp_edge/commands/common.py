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
