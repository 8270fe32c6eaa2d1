"""``lgp-edge select``: the best descendant for a deployment profile, with the Pareto front and the reason."""

from __future__ import annotations

import argparse
from typing import Any

from lgp_edge.commands.common import add_dirs_args, add_json, add_pool_arg, add_store_arg
from lgp_edge.progress import counted
from lgp_edge.specs import CPU_RUNTIMES, PROFILE_PRECISIONS


def add_profile_args(p: argparse.ArgumentParser) -> None:
    """--target/--profile and the budget overrides, shared by select, export and report."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--target", default=None, metavar="TARGET",
                   help="use the profile named like this target (e.g. jetson-nano)")
    g.add_argument("--profile", default=None, metavar="PROFILE",
                   help="use this deployment profile (lgp-edge profiles list)")
    p.add_argument("--budget-ms", type=float, default=None, metavar="MS",
                   help="override the profile's p90 latency budget")
    p.add_argument("--memory-mb", type=float, default=None, metavar="MB",
                   help="override the profile's memory budget, in MB of the model's estimate (weights plus "
                        "activations; the runtime's own memory is not counted)")
    p.add_argument("--precision", default=None, choices=PROFILE_PRECISIONS,
                   help="override the profile's precision")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads the app runs inference with: latencies measured or calibrated at N (default: "
                        "the profile's 'threads', else the target's)")
    add_store_arg(p)
    add_dirs_args(p)


def resolve_profile(args: argparse.Namespace, formats: tuple[str, ...] | None = None) -> tuple[Any, Any]:
    """(DeviceProfile with overrides, its TargetSpec) from the command line."""
    from lgp_edge.profiles import check_against_target, load_profile, with_overrides
    from lgp_edge.targets import load_target

    name = args.profile if args.profile is not None else args.target  # "" is an unknown profile, not "none given"
    if args.target is not None:
        load_target(args.target, args.targets_dir)  # an unknown target is named as such
    profile = load_profile(name, args.profiles_dir)
    profile = with_overrides(profile, budget_ms=args.budget_ms, memory_mb=args.memory_mb, precision=args.precision,
                             formats=formats, threads=args.threads)
    target = load_target(profile.target, args.targets_dir)
    check_against_target(profile, target)  # a precision or format the target does not run: exit 2
    return profile, target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="choose the best descendant for a deployment profile",
                       description="Choose the most accurate descendant of the pool within the profile's p90 "
                                   "latency and memory budgets on its target (ties: the faster), from the pool's "
                                   "top-1 and the measurement store (latencies not measured are predicted, and "
                                   "said so); no weights are loaded. Exit 2 when nothing fits.")
    add_profile_args(p)
    add_pool_arg(p)
    add_json(p)
    p.set_defaults(func=_run)


def print_front(selection: Any, title: str) -> None:
    from lgp_edge.commands.common import Col, console, print_table
    from lgp_edge.report import source_text
    from lgp_edge.select import format_against, front_and_chosen, memory_words

    p = selection.profile  # beside its verdict, a number never reads on the other side of its budget
    cols = ("descendant", *(Col(n, right=True) for n in ("params", "MFLOPs", "top-1 %", "p90 ms")),
            Col("source", wrap=True), Col("memory MB", right=True), "fits")
    shown = front_and_chosen(selection.front, selection.chosen)
    rows = [(c.key, f"{c.params:,}", f"{c.flops / 1e6:.1f}", f"{c.top1:.2f}",
             format_against(c.latency_ms, p.latency_budget_ms),
             source_text(c),
             format_against(c.memory_mb, p.memory_budget_mb),
             "chosen" if c.key == selection.chosen.key else ("yes" if c.fits else "no")) for c in shown]
    chosen = [i for i, c in enumerate(shown) if c.key == selection.chosen.key]
    print_table(cols, rows, title=title, emphasize=chosen)
    if len(shown) > len(selection.front):
        console().print(f"{selection.chosen.key} is not on the front: a faster, more accurate descendant is over the "
                        "memory budget")
    console().print(memory_words(p))


def _run(args: argparse.Namespace) -> int:
    from lgp_edge.commands.common import console, print_json, styled
    from lgp_edge.errors import NothingFits
    from lgp_edge.pool.manifest import read_manifest, resolve_pool
    from lgp_edge.select import format_against, open_store, per_batch, plan_selection, selection_context

    profile, target = resolve_profile(args)
    pool_dir = resolve_pool(args.pool)
    store = open_store(args.store)
    manifest = read_manifest(pool_dir)  # choosing needs no weights (nor torch)
    note = manifest.check_top1(pool_dir)  # refuses top-1 measured on synthetic data for a real-data pool
    try:
        sel = plan_selection(manifest, profile, target, store, pool_dir)
    except NothingFits as exc:
        if args.json:  # a script still reads JSON (the same keys); the CLI prints the reason as one line, exit 2
            print_json(exc.selection)
        raise
    finally:
        store.close()
    if args.json:
        print_json({**sel.to_dict(), **selection_context(pool_dir, target, manifest)})
        return 0
    c = console()
    if note:
        c.print(styled(note, style="bold yellow"))
    sources = ", ".join(f"{n} {s}" for s, n in sel.sources.items())
    threads = f", {counted(sel.chosen.threads, 'thread')}" if sel.chosen.runtime in CPU_RUNTIMES else ""
    images = f"; top-1: torch fp32 on {manifest.top1_images:,} images" if manifest.top1_images else ""
    print_front(sel, f"Pareto front: pool {sel.pool_id} on {target.name} ({profile.precision}{threads}; "
                     f"latencies: {sources}{images})")
    ch = sel.chosen
    c.print(styled("chosen", f": {ch.key}  top-1 {ch.top1:.2f}%  p90 "
                             f"{format_against(ch.latency_ms, profile.latency_budget_ms)} ms{per_batch(profile.batch)} "
                             f"({ch.latency_source}, {ch.runtime})  "
                             f"{format_against(ch.memory_mb, profile.memory_budget_mb)} MB  "
                             f"{ch.params:,} params"))
    c.print(f"why: {sel.reason}")
    noisy = [x.key for x in sel.candidates if x.noisy]
    if noisy:
        from lgp_edge.profiling.measure import NOISY_RULE

        c.print(f"noisy: every recent measured run of {', '.join(noisy)} was noisy ({NOISY_RULE}); their latencies "
                "are predicted instead")
    if "predicted" in sel.sources:
        n = sel.sources["predicted"]
        said = f"note: {n} {'latencies are' if n != 1 else 'latency is'} predicted" + (
            f" ({len(noisy)} because their measured runs on {target.name} were noisy)" if noisy
            else f", not measured on {target.name}")
        if target.connection.kind == "none":  # 'profile' refuses it: timings taken on the device are imported
            c.print(f"{said}; {target.name} has no connection lgp-edge measures through: timings taken on the "
                    "device go into the store with 'lgp-edge profile --import FILE'")
        else:
            cmd = measure_command(target, profile, ch.runtime, ch.threads, args)
            c.print(f"{said}; measure {'them' if n != 1 else 'it'} with: {cmd}")
    return 0


def measure_command(target: Any, profile: Any, runtime: str, threads: int, args: argparse.Namespace) -> str:
    """The ``profile`` command that measures the latencies a selection reads: the target with the runtime,
    precision, batch and thread count of the selection where they are not that command's defaults, and the
    pool, store and targets folder the selection was given (shell-quoted: paste it as it is)."""
    import shlex

    from lgp_edge.profiling.host import default_measure_threads

    cmd = ["lgp-edge", "profile", "--target", target.name]
    for flag, value in (("--pool", args.pool), ("--store", args.store), ("--targets-dir", args.targets_dir)):
        if value is not None:
            cmd += [flag, value]
    if runtime != target.runtime:
        cmd += ["--runtime", runtime]
    if profile.precision != target.precisions[0]:
        cmd += ["--precision", profile.precision]
    if profile.batch != 1:
        cmd += ["--batch", str(profile.batch)]
    if runtime in CPU_RUNTIMES and threads != default_measure_threads(target):
        cmd += ["--threads", str(threads)]
    return shlex.join(cmd)
