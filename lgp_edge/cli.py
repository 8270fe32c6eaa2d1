"""The ``lgp-edge`` command line: parses arguments, calls one stage function, maps errors to exit codes.

Exit codes: 0 ok, 1 validation failed, 2 usage or input error (one line on stderr, nothing written).
Each subcommand lives in ``lgp_edge.commands.<name>`` with ``register(subparsers)``; heavy libraries are
imported only inside the handlers, so ``lgp-edge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from lgp_edge import __version__
from lgp_edge.errors import LgpEdgeError

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
)

log = logging.getLogger("lgp_edge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lgp-edge", description=(
        "Learngene Pool for the edge: distil one ViT into a pool of learngene instances, stitch them into "
        "variable-sized descendants, profile them on devices and export the best one."))
    parser.add_argument("--version", action="version", version=f"lgp-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"lgp_edge.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except LgpEdgeError as exc:
        print(f"lgp-edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lgp-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
