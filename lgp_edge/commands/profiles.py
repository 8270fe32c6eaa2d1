"""``lgp-edge profiles list|show``: the deployment profiles (target, budgets, precision, formats)."""

from __future__ import annotations

import argparse

from lgp_edge.commands.common import add_dirs_args, add_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profiles", help="list or show deployment profiles")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="every profile, built-in and from --profiles-dir")
    add_dirs_args(ls, targets=False)
    add_json(ls)
    ls.set_defaults(func=_list)
    sh = s.add_parser("show", help="one profile in full")
    sh.add_argument("name", metavar="PROFILE", help="profile name (see 'lgp-edge profiles list')")
    add_dirs_args(sh, targets=False)
    add_json(sh)
    sh.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    from lgp_edge.commands.common import Col, print_json, print_table
    from lgp_edge.profiles import list_profiles
    from lgp_edge.select import format_budget

    profiles = list_profiles(args.profiles_dir)
    if args.json:
        print_json({"profiles": [p.to_dict() for p in profiles]})
        return 0
    print_table(("profile", "target", Col("p90 budget", right=True), Col("memory", right=True), "precision",
                 Col("formats", wrap=True)),
                [(p.name, p.target, f"{format_budget(p.latency_budget_ms)} ms",
                  f"{format_budget(p.memory_budget_mb)} MB", p.precision, ", ".join(p.formats)) for p in profiles])
    return 0


def _show(args: argparse.Namespace) -> int:
    from lgp_edge.commands.common import print_json
    from lgp_edge.profiles import load_profile, profile_path

    p = load_profile(args.name, args.profiles_dir)
    if args.json:
        print_json({**p.to_dict(), "file": str(profile_path(args.name, args.profiles_dir))})
        return 0
    print(f"# {profile_path(args.name, args.profiles_dir)}")
    for k, v in p.to_dict().items():
        shown = ", ".join(v) if isinstance(v, list) else "(the target's default)" if v is None else v
        print(f"{k:18s} {shown}")
    return 0
