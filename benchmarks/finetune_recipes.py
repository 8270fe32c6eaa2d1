"""Which fine-tuning recipe serves the stitched descendants best within the replication's budget?

    python benchmarks/finetune_recipes.py --variants instance-lr-1,flops-bucket --jobs 2
    # -> benchmarks/results/finetune_recipes.json, benchmarks/FINETUNE_RECIPES.md

The replication fine-tunes each distilled pool with one recipe (benchmarks/PAPER_REPLICATION.md: anchors in every
step, the instances at ``--instance-lr-scale`` times the stitches' learning rate (1 since 2026-12-03, 0.3 before;
its results record which), one descendant drawn uniformly per step). This benchmark
takes the replication's *distilled* pools (nothing of the distillation is redone), re-initialises their stitches
exactly as the replication did (its default init, stitch steps and images; the stitched top-1 before fine-tuning
is checked against the replication's), fine-tunes them with the replication's budget (same epochs, batch,
warm-up, loss) under one change of recipe per variant, and scores every descendant on the test images the
replication scored. Each variant's pools are compared with the replication's SN-Net configs and pools.

SN-Net is not retrained here: it keeps the replication's recipe. A variant that helps the pools is a candidate
for the next replication, where SN-Net gets the same recipe; the front computed here is a screen, not the
goal's equal-recipe comparison. Each (variant, depth) result is cached under ``--work`` with a fingerprint
(distilled weights, settings); an interrupted one is redone from its distilled pool.

``--pools-from`` takes the distilled pools of a ``pool_widths.py`` result (other widths than the paper's Ti/B, at
depth 6, or 6 and 9 for a ``--depth 9`` result) instead of the replication's, with the same checks, settings and
SN-Net: the replication it was measured against.

    python benchmarks/finetune_recipes.py --replication benchmarks/results/ti30/paper_replication.json \
        --pools-from benchmarks/results/ti30/pool_widths_ti-s_d9.json --variants instance-lr-0.3,instance-lr-0.1 \
        --jobs 2 --out benchmarks/results/finetune_recipes_ti30_ti_s.json \
        --md-out benchmarks/FINETUNE_RECIPES_TI30_TI_S.md
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import repo_path  # noqa: E402
from paper_replication import (  # noqa: E402
    PAPER_WIDTHS,
    PROVENANCE,
    BenchmarkInputError,
    add_follow_up_args,
    distilled_pool_name,
    follow_up_header,
    provenance_now,
    read_benchmark_json,
    read_replication,
    stage_entry,
    stages_note,
    widths_tag,
    write_follow_up,
)
from parallel import run_each  # noqa: E402

from lgp_edge.baselines.claims import GOALS, compute_goals  # noqa: E402
from lgp_edge.fileio import sha256_file, write_json_atomic  # noqa: E402

log = logging.getLogger("finetune_recipes")

# name -> (the replication settings it changes, what that means); every other setting is the replication's
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "instance-lr-1": ({"instance_lr_scale": 1.0}, "instances at the stitches' learning rate (the paper's one rate), "
                                                  "anchors kept"),
    "instance-lr-0.3": ({"instance_lr_scale": 0.3}, "instances at 0.3x the stitches' learning rate"),
    "instance-lr-0.1": ({"instance_lr_scale": 0.1}, "instances at 0.1x the stitches' learning rate"),
    "flops-bucket": ({"sampling": "flops-bucket"}, "SN-Netv2's FLOPs-bucket sampling: a FLOPs group drawn "
                                                   "uniformly, then a descendant in it"),
    "no-anchors": ({"anchors": False}, "only the drawn descendant in each step (the paper's)"),
    "lr-1e-3": ({"lr": 1e-3}, "twice the replication's learning rate"),
}
S_RANGE = ("s", "s->b")  # SN-Net families where the replication's front falls behind


def method_widths(m: dict[str, Any]) -> tuple[str, ...]:
    """The widths of a replication or pool_widths.py method entry (the paper's Ti/B where it records none)."""
    return tuple(m.get("widths") or PAPER_WIDTHS)


def distilled_dir(r: dict[str, Any], method: str, pools_root: Path) -> Path:
    """The distilled pool a replication method was stitched and fine-tuned from (``lgp-d{depth}-distilled`` beside
    its pool directory), checked against the instances' top-1 the replication recorded right after distillation."""
    m = r["methods"][method]
    widths = method_widths(m)
    tag = widths_tag(widths)
    path = pools_root / Path(m["pool_dir"]).parent / distilled_pool_name(m["depth"], widths)
    inst = path / "instances.json"
    source = "pool_widths.py" if tag else "paper_replication.py"
    if not (path / "pool.json").is_file() or not inst.is_file():
        raise BenchmarkInputError(f"distilled pool {path} of {method} not found: run benchmarks/{source} here "
                                  "first, or point --pools-root at the checkout that ran it")
    if json.loads(inst.read_text()) != m["instances_after_distill"]:
        whose = "its" if tag else "the replication's"
        raise BenchmarkInputError(f"{path}: its instances' top-1 differ from what {source} recorded for "
                                  f"{method}: not {whose} distilled pool")
    return path


def with_pools_from(r: dict[str, Any], rep_path: Path, path: Path) -> dict[str, Any]:
    """The replication ``r`` with its default init's pools replaced by those of the pool_widths.py result at
    ``path``, which must have been measured against this replication (its recorded sha256); ``pools_from`` says
    whose pools they are."""
    try:
        w = read_benchmark_json(path, "pool_widths")
    except BenchmarkInputError as e:
        raise BenchmarkInputError(f"--pools-from: {e}") from None
    if not isinstance(w, dict) or w.get("benchmark") != "pool_widths" or not isinstance(w.get("pool"), dict):
        raise BenchmarkInputError(f"--pools-from: {path} is not a pool_widths.py results file")
    if (w.get("replication") or {}).get("sha256") != sha256_file(rep_path):
        raise BenchmarkInputError(f"--pools-from: {path} was measured against another replication than {rep_path} "
                                  f"(its own: {(w.get('replication') or {}).get('path')}); pass that one as "
                                  "--replication")
    init = r["settings"]["default_init"]
    pools = {f"lgp_d{p['depth']}_{init}": p for p in (w.get("pool_depth6"), w["pool"]) if p}
    methods = {k: v for k, v in r["methods"].items() if not k.startswith("lgp_")} | pools
    return {**r, "methods": methods, "pools_from": {"path": repo_path(path), "sha256": sha256_file(path),
                                                    "widths": w["widths"], "date": w["date"],
                                                    "code_version": w["code_version"], "command": w["command"]}}


def run_variant(distilled: str, settings: dict[str, Any], out_dir: str, threads: int, quiet: bool, *,
                cached_only: bool = False) -> tuple[dict[str, Any], bool] | None:
    """Stitch and fine-tune a copy of ``distilled`` with ``settings`` (the replication's with a variant's changes),
    score it before and after fine-tuning; cached in ``out_dir/result.json`` with the code, CPU and time that
    computed it. Returns the result and whether it was reused from that cache (``cached_only``: None where it was
    not). Runs in this process or a worker process (``parallel.run_each``)."""
    import torch
    from paper_replication import finetune_request, pool_rows, train_cfg

    from lgp_edge.pool.evaluate import evaluate_pool
    from lgp_edge.pool.finetune import finetune_pool
    from lgp_edge.pool.pool import read_manifest
    from lgp_edge.pool.restitch import RestitchRequest, restitch_pool
    from lgp_edge.progress import stderr_reporter
    from lgp_edge.specs import content_hash

    s = settings
    out = Path(out_dir)
    done = out / "result.json"
    fingerprint = content_hash({"stage": "finetune-recipes", "distilled": read_manifest(distilled).files,
                                "settings": s})
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
        return json.loads(done.read_text()), True
    if cached_only:
        return None
    torch.set_num_threads(threads)
    rep = stderr_reporter(quiet)
    pool = out / "pool"
    if out.exists():
        shutil.rmtree(out)  # an interrupted or stale run of this benchmark: its own directory, redone
    out.mkdir(parents=True)
    t0 = time.time()
    shutil.copytree(distilled, pool, ignore=shutil.ignore_patterns(".done.json", "instances.json"))
    restitch_pool(RestitchRequest(pool=str(pool), data=s["data"], init=s["default_init"],
                                  lstsq_images=s["lstsq_images"], stitch_steps=s["stitch_steps"]), train_cfg(s, 1), rep)
    before = evaluate_pool(pool, s["data"], max_images=s["eval_images"], reporter=rep)
    finetune_pool(finetune_request(pool, s), train_cfg(s, s["finetune_epochs"], warmup_epochs=s["finetune_warmup"]),
                  rep)
    evaluate_pool(pool, s["data"], max_images=s["eval_images"], reporter=rep)
    res = {"fingerprint": fingerprint, **pool_rows(pool),
           "top1_before_finetune": {d.key: d.top1 for d in before.descendants}, "wall_s": round(time.time() - t0, 1),
           **provenance_now()}
    write_json_atomic(done, res)
    return res, False


def run(args: argparse.Namespace) -> dict[str, Any]:
    rep_path = Path(args.replication)
    r = read_replication(rep_path)
    s = r["settings"]
    init = s.get("default_init")
    if args.pools_from:
        r = with_pools_from(r, rep_path, Path(args.pools_from))
    methods = [f"lgp_d{d}_{init}" for d in args.depths if f"lgp_d{d}_{init}" in r.get("methods", {})]
    if "snnet" not in r.get("methods", {}) or len(methods) != len(args.depths):
        where = args.pools_from or rep_path
        raise BenchmarkInputError(f"{where} has no SN-Net or no {init} pool of depth "
                                  f"{' and '.join(map(str, args.depths))}: "
                                  + ("pass the --depths it has" if args.pools_from
                                     else "rerun paper_replication.py without --stages"))
    distilled = {m: distilled_dir(r, m, Path(args.pools_root)) for m in methods}
    sub = {m: "_".join(filter(None, (m, widths_tag(method_widths(r["methods"][m]))))) for m in methods}  # caches
    work = Path(args.work)
    t0 = time.time()
    results: dict[tuple[str, str], dict[str, Any]] = {}
    stages: dict[str, dict[str, Any]] = {}  # per (variant, pool): computed by this invocation or reused, and by what
    calls = {(v, m): (str(distilled[m]), {**s, **VARIANTS[v][0]}, str(work / v / sub[m]), 1, args.quiet)
             for v in args.variants for m in sorted(methods, reverse=True)}  # depth 9 first: the longer
    for (v, m), (res, reused) in run_each(run_variant, calls, args.jobs):
        stages[f"{v}/{m}"] = stage_entry(res, "reused" if reused else "computed")
        results[(v, m)] = res = {k: x for k, x in res.items() if k not in PROVENANCE}
        recorded = r["methods"][m]["top1_before_finetune"]
        drift = max(abs(res["top1_before_finetune"][k] - t) for k, t in recorded.items())
        if drift > 0.05:
            whose = "the pool_widths.py result's" if args.pools_from else "the replication's"
            raise BenchmarkInputError(f"{v} {m}: the re-stitched pool scores up to {drift:.2f} points off "
                                      f"{whose} top-1 before fine-tuning: not the recipe it was measured with")
        log.info("%s %s done in %.0f min", v, m, res["wall_s"] / 60)
    x = summarise(r, rep_path, methods, results, args, time.time() - t0)
    x["stages"] = {f"{v}/{m}": stages[f"{v}/{m}"] for v in args.variants for m in sorted(methods, reverse=True)}
    return x


def _summary(r: dict[str, Any], methods: list[str], pools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Goals of these pools against the replication's SN-Net (compute_goals), with the S-range misses."""
    ms = {m: {**r["methods"][m], **pools[m]} for m in methods}
    g = compute_goals({**ms, "snnet": r["methods"]["snnet"]}, r["settings"]["default_init"])
    fam = g["front_by_snnet_family"]
    stitched = [c["top1"] for m in methods for c in pools[m]["configs"] if "+" in c["key"]]
    return {"front_share": g["front_share"], "front_delta_min": g["front_delta_min"], "front_held": g["front_held"],
            "instances": g["instances"], "instances_held": g["instances_held"],
            "every_descendant_min_top1": g["every_descendant_min_top1"],
            "stitched_mean_top1": round(sum(stitched) / len(stitched), 3),
            "s_range": {f: fam[f] for f in S_RANGE if f in fam}, "by_family": fam}


def summarise(r: dict[str, Any], rep_path: Path, methods: list[str], results: dict[tuple[str, str], dict[str, Any]],
              args: argparse.Namespace, wall_s: float) -> dict[str, Any]:
    s = r["settings"]
    base = {m: {k: r["methods"][m][k] for k in ("configs", "stored_params")} for m in methods}
    committed = ("the pool_widths.py pools as committed" if r.get("pools_from")
                 else "the replication's pools as committed")
    variants = [{"name": "pool_widths" if r.get("pools_from") else "replication", "changes": {}, "what": committed,
                 **_summary(r, methods, base)}]
    for v in args.variants:
        pools = {m: results[(v, m)] for m in methods}
        top1 = {(m, c["key"]): c["top1"] for m in methods for c in r["methods"][m]["configs"]}
        diffs = [c["top1"] - top1[(m, c["key"])] for m in methods for c in pools[m]["configs"]]
        variants.append({"name": v, "changes": VARIANTS[v][0], "what": VARIANTS[v][1], **_summary(r, methods, pools),
                         "vs_replication": {"better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
                                            "descendants": len(diffs), "mean": round(sum(diffs) / len(diffs), 3),
                                            "min": round(min(diffs), 2), "max": round(max(diffs), 2)},
                         "pools": {m: {"configs": pools[m]["configs"], "wall_s": pools[m]["wall_s"]} for m in methods}})
    return {**follow_up_header("finetune_recipes", r, rep_path, args.argv),
            **({"pools_from": r["pools_from"]} if r.get("pools_from") else {}), "jobs": args.jobs, "methods": methods,
            "budget": {k: s[k] for k in ("finetune_epochs", "finetune_warmup", "batch_size", "lr", "instance_lr_scale",
                                         "anchors", "stitch_epochs", "default_init", "stitch_steps", "eval_images")}
            | {"sampling": s.get("sampling", "uniform")},
            "goals": {"share": GOALS["front_share_at_least"], "delta": GOALS["front_delta_min_at_least"]},
            "variants": variants, "wall_s": round(wall_s, 1)}


def render_markdown(x: dict[str, Any], json_path: str) -> str:
    b = x["budget"]
    wall = sum(p["wall_s"] for v in x["variants"] for p in (v.get("pools") or {}).values())
    recipe_of = "the replication's" if x.get("pools_from") else "its"
    lines = [
        f"{'QUICK RUN (smoke settings; not a result). ' if x['quick'] else ''}"
        f"`{x['command'].strip()}` ({x['cpu']}, code {x['code_version']}, {x['date']}{stages_note(x)}): "
        + (f"the distilled {'/'.join(w.capitalize() for w in x['pools_from']['widths'])} pools of "
           f"`{x['pools_from']['path']}` (depths {', '.join(m.split('_')[1][1:] for m in x['methods'])}), stitched "
           "as they were" if x.get("pools_from") else
           f"the replication's distilled pools ({', '.join(x['methods'])}), stitched as it did")
        + f" ({b['default_init']}), fine-tuned for {recipe_of} "
        f"{b['finetune_epochs']} epoch(s) with one change of its recipe (lr {b['lr']}, instances "
        f"x{b['instance_lr_scale']}, anchors {'on' if b['anchors'] else 'off'}, "
        f"{b.get('sampling', 'uniform')} sampling) per row; "
        f"{wall / 60:.0f} min of training and "
        "evaluation on one thread each. Fronts against the replication's SN-Net, which keeps its recipe"
        + (f" (`{x['replication']['path']}`)." if x.get("pools_from") else "."),
        "",
        "| recipe | front >= SN-Net | worst delta | S / S->B configs at or ahead | stitched mean top-1 | "
        "min top-1 | instances after fine-tuning (after distillation) | vs the "
        f"{'committed pools' if x.get('pools_from') else 'replication'} per descendant |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for v in x["variants"]:
        s_range = v["s_range"]
        ahead = sum(f["lgp_at_or_ahead"] for f in s_range.values())
        configs = sum(f["configs"] for f in s_range.values())
        inst = ", ".join(f"{k.split(':')[1]} {i['after_finetune']:.2f} ({i['after_distill']:.2f})"
                         for k, i in v["instances"].items())
        vs = v.get("vs_replication")
        vs_text = (f"better {vs['better']}/{vs['descendants']}, mean {vs['mean']:+.2f} "
                   f"({vs['min']:+.2f}..{vs['max']:+.2f})" if vs else "")
        lines.append(f"| `{v['name']}`: {v['what']} | {v['front_share']:.1%} | {v['front_delta_min']:+.2f} | "
                     f"{ahead}/{configs} | {v['stitched_mean_top1']:.2f} | {v['every_descendant_min_top1']:.2f} | "
                     f"{inst} | {vs_text} |")
    lines += ["", f"Goals: front share >= {x['goals']['share']:.0%}, worst delta >= {x['goals']['delta']:+.1f}; "
              "instances at or above their top-1 right after distillation. "
              f"Full numbers: [`{json_path}`]({json_path}).",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_follow_up_args(p, "finetune-recipes", "cached results and pools per variant")
    p.add_argument("--variants", type=lambda t: [v for v in t.split(",") if v], required=True, metavar="NAME,...",
                   help=f"recipes to run, of: {', '.join(VARIANTS)}")
    p.add_argument("--depths", type=lambda t: [int(d) for d in t.split(",") if d], default=[6, 9], metavar="D,...",
                   help="pools to fine-tune (default 6,9)")
    p.add_argument("--pools-from", default=None, metavar="PATH",
                   help="a pool_widths.py results JSON: fine-tune its distilled pools (other widths) instead of the "
                        "replication's; --replication must be the one it was measured against")
    p.add_argument("--jobs", type=int, default=1, help="pools fine-tuned at once, one thread each")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/finetune_recipes.json, "
                                               "or finetune_recipes_quick.json for a quick replication)")
    p.add_argument("--md-out", default=None, help="README section (default benchmarks/FINETUNE_RECIPES.md; quick "
                                                  "replications: inside --work)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    bad = (f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}" if unknown
           else "--variants: none given" if not args.variants
           else f"--jobs must be 1 or more, got {args.jobs}" if args.jobs < 1
           else f"--depths must be 6 and/or 9, got {args.depths}" if not args.depths or set(args.depths) - {6, 9}
           else None)
    if bad:
        print(f"finetune_recipes: {bad}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        x = run(args)
    except BenchmarkInputError as e:
        print(f"finetune_recipes: {e}", file=sys.stderr)
        return 2
    write_follow_up(x, args, "finetune_recipes", "FINETUNE_RECIPES.md", render_markdown)
    print(json.dumps([{k: v[k] for k in ("name", "front_share", "front_delta_min", "instances_held")}
                      for v in x["variants"]], indent=1))
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
