"""``lgp-edge report``: a Pareto PNG per target, report.md linking them, report.html and report.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from lgp_edge.commands.common import add_pool_arg, add_quiet


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Pareto plots (top-1 vs latency, budget, chosen) per target + report.md, .html, .csv")
    add_pool_arg(p)
    p.add_argument("--out", required=True, help="output directory (refused if non-empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--profile", action="append", default=None, metavar="NAME",
                   help="profiles to report (repeat; default: the profile named like each target)")
    p.add_argument("--store", default=None, help="measurement store to read latencies from")
    p.add_argument("--profiles-dir", default=None, help="directory of extra profile TOML files")
    p.add_argument("--targets-dir", default=None, help="directory of extra target TOML files")
    add_quiet(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lgp_edge.commands.common import reporter
    from lgp_edge.errors import UsageError
    from lgp_edge.pool.pool import resolve_pool
    from lgp_edge.profiles import known_profiles, load_profile
    from lgp_edge.report import build_report
    from lgp_edge.select import open_store
    from lgp_edge.targets import known_targets, load_target

    names = args.profile or [n for n in known_profiles(args.profiles_dir) if n in known_targets(args.targets_dir)]
    if not names:
        raise UsageError("no profile is named like a target; pass --profile NAME")
    pairs = []
    for n in names:
        prof = load_profile(n, args.profiles_dir)
        pairs.append((prof, load_target(prof.target, args.targets_dir)))
    pool_dir = resolve_pool(args.pool)
    store = open_store(args.store)
    try:
        entries = build_report(pool_dir, Path(args.out), pairs, store, force=args.force, reporter=reporter(args))
    finally:
        store.close()
    for e in entries:
        if e.selection is not None:
            c = e.selection.chosen
            print(f"{e.profile.name:18s} {c.key:22s} top-1 {c.top1:6.2f}%  p90 {c.latency_ms:8.3g} ms "
                  f"({c.latency_source}{', measured runs noisy' if c.noisy else ''})  {e.plot}")
        else:
            print(f"{e.profile.name:18s} nothing fits  {e.plot}")
    print(f"wrote {args.out}/report.md, report.html, report.csv")
    return 0
