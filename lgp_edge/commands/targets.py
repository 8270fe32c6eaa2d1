"""``lgp-edge targets list|show``: the device targets (built-in and --targets-dir)."""

from __future__ import annotations

import argparse
from typing import Any

from lgp_edge.commands.common import Col, add_dirs_args, add_json, console, print_json, print_table, styled


def _add_dir(p: argparse.ArgumentParser) -> None:
    add_dirs_args(p, profiles=False)


def register(sub: Any) -> None:
    p = sub.add_parser("targets", help="list or show device targets")
    tsub = p.add_subparsers(dest="targets_command", metavar="ACTION", required=True)
    ls = tsub.add_parser("list", help="every known target")
    add_json(ls)
    _add_dir(ls)
    ls.set_defaults(func=_list)
    show = tsub.add_parser("show", help="one target's full description")
    show.add_argument("name", metavar="TARGET", help="target name (see 'lgp-edge targets list')")
    add_json(show)
    _add_dir(show)
    show.set_defaults(func=_show)


def _summary(t: Any) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "runtime": t.runtime,
            "runtime_version": t.runtime_version, "connection": t.connection.kind,
            "precisions": list(t.precisions), "formats": list(t.formats), "max_opset": t.max_opset}


def _list(args: argparse.Namespace) -> int:
    from lgp_edge.targets import list_targets

    targets = list_targets(args.targets_dir)
    if args.json:
        print_json({"targets": [_summary(t) for t in targets]})
        return 0
    print_table(("name", "runtime", "connection", "precisions", Col("description", wrap=True)),
                [(t.name, t.runtime, t.connection.kind, ",".join(t.precisions), t.description) for t in targets],
                title="lgp-edge targets")
    return 0


def _show(args: argparse.Namespace) -> int:
    from lgp_edge.targets import load_target

    t = load_target(args.name, args.targets_dir)
    if args.json:
        print_json(t.to_dict())
        return 0
    c = console()
    c.print(styled(t.name, f": {t.description}"))
    c.print(f"  runtime     {t.runtime} ({t.runtime_version}), ONNX opset <= {t.max_opset}")
    c.print(f"  precisions  {', '.join(t.precisions)}; formats {', '.join(t.formats)}")
    hw = t.hardware
    if hw.detect:
        c.print("  hardware    measured on this machine when needed (GEMM peak, copy bandwidth)")
    else:
        peaks = ", ".join(f"{p} {v:g}" for p, v in hw.peak_gflops.items())
        c.print(f"  hardware    peak GFLOP/s {peaks}; {hw.mem_gbps:g} GB/s; {hw.memory_mb:g} MB")
    eff = hw.efficiency
    c.print(f"  roofline    compute x{eff.compute:g}, memory x{eff.memory:g}, {eff.overhead_us:g} us/op")
    conn = t.connection
    where = {"ssh": f"ssh {conn.user + '@' if conn.user else ''}{conn.host}:{conn.port or 22}",
             "adb": f"adb {conn.serial or '(only attached device)'}", "local": "this machine",
             "none": "none (predict only)"}[conn.kind]
    c.print(f"  connection  {where}")
    return 0
