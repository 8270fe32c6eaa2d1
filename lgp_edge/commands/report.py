"""``lgp-edge report``: a Pareto PNG per profile, report.md linking them, report.html and report.csv."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lgp_edge.commands.common import Col, add_dirs_args, add_json, add_pool_arg, add_store_arg, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Pareto plots (top-1 vs latency, budget, chosen) per profile + report.md, "
                                      ".html, .csv")
    add_pool_arg(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (refused if non-empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--profile", action="append", default=None, metavar="PROFILE",
                   help="profiles to report (repeat; default: the profile named like each target)")
    add_store_arg(p)
    add_dirs_args(p)
    add_json(p)
    p.set_defaults(func=_run)


def _pairs(args: argparse.Namespace) -> list[tuple[Any, Any]]:
    """(profile, target) per profile to report: --profile, else every profile named like a target."""
    from lgp_edge.errors import UsageError
    from lgp_edge.profiles import check_against_target, known_profiles, load_profile
    from lgp_edge.targets import known_targets, load_target

    names = (list(dict.fromkeys(args.profile)) if args.profile  # each profile once, in the order given
             else [n for n in known_profiles(args.profiles_dir) if n in known_targets(args.targets_dir)])
    if not names:
        raise UsageError("no profile is named like a target; pass --profile PROFILE")
    pairs = []
    for n in names:
        prof = load_profile(n, args.profiles_dir)
        target = load_target(prof.target, args.targets_dir)
        check_against_target(prof, target)
        pairs.append((prof, target))
    return pairs


def _run(args: argparse.Namespace) -> int:
    from lgp_edge.commands.common import reporter
    from lgp_edge.pool.manifest import resolve_pool
    from lgp_edge.report import build_report
    from lgp_edge.select import open_store

    pairs = _pairs(args)
    pool_dir = resolve_pool(args.pool)
    store = open_store(args.store)
    try:
        entries = build_report(pool_dir, Path(args.out), pairs, store, force=args.force, reporter=reporter(args))
    finally:
        store.close()
    if args.json:
        print_json(report_summary(entries, pool_dir, Path(args.out)))
        return 0
    print_table(("profile", "target", "chosen", Col("top-1 %", right=True), Col("p90 ms", right=True),
                 Col("source", wrap=True), "plot"), [_row(e) for e in entries])
    print(f"wrote {args.out}/report.md, report.html, report.csv")
    return 0


def _row(e: Any) -> tuple[str, ...]:
    from lgp_edge.report import source_and_threads
    from lgp_edge.select import format_against

    if e.selection is None:
        return e.profile.name, e.target.name, "nothing fits", "", "", "", e.plot
    c = e.selection.chosen
    return (e.profile.name, e.target.name, c.key, f"{c.top1:.2f}", format_against(c.latency_ms,
                                                                                e.profile.latency_budget_ms),
            source_and_threads(c), e.plot)


def report_summary(entries: list[Any], pool_dir: Path, out: Path) -> dict[str, Any]:
    """What ``report --json`` prints: the files written and, per profile, the chosen descendant or why none."""
    from lgp_edge.pool.manifest import read_manifest

    profiles = []
    for e in entries:
        p, sel = e.profile, e.selection
        profiles.append({"profile": p.name, "target": e.target.name, "precision": p.precision,
                         "latency_budget_ms": p.latency_budget_ms, "memory_budget_mb": p.memory_budget_mb,
                         "plot": e.plot, "candidates": len(e.candidates),
                         "chosen": sel.chosen.to_dict() if sel is not None else None,
                         "reason": sel.reason if sel is not None else None, "problem": e.problem or None})
    return {"out": str(out), "pool": str(pool_dir), "pool_id": read_manifest(pool_dir).spec.pool_id,
            "files": sorted(f.name for f in out.iterdir()), "profiles": profiles}
