"""``lgp-edge cache info|clear``: the exported-graph cache (lgp_edge/export/graph_cache.py)."""

from __future__ import annotations

import argparse
from typing import Any

from lgp_edge.commands.common import add_json, console, print_json


def register(sub: Any) -> None:
    p = sub.add_parser("cache", help="show or clear the exported-graph cache ($LGP_EDGE_CACHE/onnx)")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = csub.add_parser("info", help="where the cache is, how many graphs it holds and their size")
    add_json(info)
    info.set_defaults(func=_info)
    clear = csub.add_parser("clear", help="remove every cached graph (nothing else in the folder)")
    add_json(clear)
    clear.set_defaults(func=_clear)


def _mb(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MB"


def _info(args: argparse.Namespace) -> int:
    from lgp_edge.export import graph_cache

    s = graph_cache.summary()
    if args.json:
        print_json(s)
        return 0
    limit = f"at most {_mb(s['limit_bytes'])} ($LGP_EDGE_CACHE_MB)" if s["enabled"] else "off (LGP_EDGE_CACHE_MB=0)"
    console().print(f"exported-graph cache {s['path']}: {s['graphs']} graph(s), {_mb(s['bytes'])}; {limit}",
                    highlight=False, markup=False)
    return 0


def _clear(args: argparse.Namespace) -> int:
    from lgp_edge.export import graph_cache

    graphs, freed = graph_cache.clear()
    if args.json:
        print_json({"path": str(graph_cache.graph_dir()), "graphs_removed": graphs, "bytes_freed": freed})
        return 0
    console().print(f"removed {graphs} graph(s), {_mb(freed)}, from {graph_cache.graph_dir()}", highlight=False,
                    markup=False)
    return 0
