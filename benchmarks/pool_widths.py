"""A pool with an S-width instance (Ti/S/B) against the paper's Ti/B pool and SN-Net, at the same recipe.

    python benchmarks/pool_widths.py     # -> benchmarks/results/pool_widths.json, benchmarks/POOL_WIDTHS.md
                                         #    (a quick replication: pool_widths_quick.json, POOL_WIDTHS.md in --work)

The paper's descendants use Ti and B instances only. At this scale SN-Net's S anchor (12 blocks at half width)
and its S->B stitches sit between Ti and B where the Ti/B pool has only Ti->B stitches, and that is where the
Ti/B front falls behind (benchmarks/PAPER_REPLICATION.md). This benchmark measures the other side of the trade:
a depth-6 pool of Ti, S and B auxiliary models (``pool build --widths ti,s,b``, neighbour-pair stitching),
distilled, stitched and fine-tuned with exactly the settings recorded in the replication's results JSON, then
scored with the same goal code (lgp_edge.baselines.claims.compute_goals) against the SN-Net configs measured
there. Run ``paper_replication.py`` first. The auxiliary models the replication distilled in its shared runs (Ti
and B; ``distilled-e<N>`` in its work directory under ``--pools-root``) are copied and reused, their stage keys
checked as in the replication, and only the others (S) are distilled here with the replication's epoch budget for
their width; on a machine without the replication's work directory every model is distilled here. Stages are
reused from ``--work`` like the replication's, so an interrupted run continues where it stopped.

``--depth 9`` builds the pool at the paper's other depth group instead, after the depth-6 pool of the same widths
(reused from ``--work`` where an earlier run built it), and scores both together as the replication's goal does:
its front draws on both depth groups and its storage ratio counts the depth-6 pool.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lgp_edge.baselines.claims import GOALS, compute_goals, family, family_ranges, front_deltas
from lgp_edge.fileio import sha256_file
from lgp_edge.progress import stderr_reporter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import pool_weights_sha256, repo_path, repo_paths_in  # noqa: E402
from paper_replication import (  # noqa: E402
    PAPER_WIDTHS,
    BenchmarkInputError,
    Stages,
    ancestry_stage,
    follow_up_header,
    lgp_stage,
    pool_rows,
    read_replication,
    replication_work,
    seed_distillations,
    stages_note,
    write_follow_up,
)

log = logging.getLogger("pool_widths")
WIDTHS = ("ti", "s", "b")
DEPTHS = (6, 9)  # the paper's depth groups


def load_replication(path: Path, depth: int = 6) -> dict[str, Any]:
    r = read_replication(path, " (this benchmark compares against its SN-Net and Ti/B results)")
    s = r.get("settings") or {}
    need = [m for m in ("snnet", *(f"lgp_d{d}_{s.get('default_init')}" for d in sorted({6, depth})))
            if m not in r.get("methods", {})]
    if need:
        raise BenchmarkInputError(f"{path} has no results for {', '.join(need)}: rerun paper_replication.py "
                                  "without --stages")
    return r


def demo_pool(ancestry_sha256: str, dataset: dict[str, Any], path: Path | None = None) -> dict[str, Any] | None:
    """The shipped demo pool's rows when it was distilled from the same ancestry and last evaluated on the same
    data and number of test images as the replication (``dataset``: its results' ``dataset``), else None."""
    from lgp_edge.pool.pool import read_manifest

    path = path or ROOT / "lgp_edge" / "data" / "demo_pool"
    manifest = read_manifest(path)
    if (manifest.provenance.get("ancestry") or {}).get("sha256") != ancestry_sha256:
        log.info("the demo pool was distilled from another ancestry; left out of the comparison")
        return None
    evals = [h for h in manifest.history if h.get("stage") == "eval"]
    scored = (evals[-1].get("data"), evals[-1].get("images")) if evals else None
    if scored != (dataset["name"], dataset["eval_images"]):
        log.info("the demo pool's top-1 is on %s, the replication's on %s %s test images; left out of the "
                 "comparison", scored and f"{scored[1]} {scored[0]} test images", dataset["eval_images"],
                 dataset["name"])
        return None
    ft = [h for h in manifest.history if h.get("stage") == "finetune"]
    return {**pool_rows(path), "finetune_epochs": ft[-1]["config"]["epochs"] if ft else 0,
            "shipped": (manifest.provenance.get("date") or "date not recorded")[:10],
            "weights_sha256": pool_weights_sha256(path)}  # the demo pool is retrained now and then: which one


def widths_arg(text: str) -> tuple[str, ...]:
    ws = tuple(w.strip() for w in text.split(",") if w.strip())
    if len(ws) < 2 or len(set(ws)) != len(ws) or not set(ws) <= set(WIDTHS):
        raise argparse.ArgumentTypeError(f"--widths takes two or three of {','.join(WIDTHS)}, got {text!r}")
    if ws == PAPER_WIDTHS:
        raise argparse.ArgumentTypeError("--widths ti,b is the replication's own pool; choose another set")
    return tuple(sorted(ws, key=WIDTHS.index))


def findings(pool: dict[str, Any], tib: dict[str, Any], snnet: list[dict[str, Any]],
             widths: tuple[str, ...]) -> dict[str, Any]:
    """Where the two pools differ, from the measured rows: the Ti/B pool's worst SN-Net config and what each pool
    has within its FLOPs; each instance alone against SN-Net's anchor of its width; each stitched family's range."""
    worst = min(front_deltas(tib["configs"], snnet), key=lambda d: d["delta"])
    reach = [c for c in pool["configs"] if c["flops"] <= worst["snnet_flops"]]
    best = max(reach, key=lambda c: c["top1"], default={"key": None, "flops": None, "top1": None})
    anchors = {family(c["key"]): c for c in snnet if "+" not in c["key"]}  # "s12.0-11": s
    delta = None if best["top1"] is None else round(best["top1"] - worst["snnet_top1"], 3)
    fam: dict[str, list[dict[str, Any]]] = {}  # descendants by the instances they run, in the pool's order
    for c in pool["configs"]:
        fam.setdefault(family(c["key"]), []).append(c)
    ranges = family_ranges(pool["configs"])
    return {
        "ti_b_worst": {**worst, "this_pool_key": best["key"], "this_pool_flops": best["flops"],
                       "this_pool_top1": best["top1"], "this_pool_delta": delta},
        "instances_vs_snnet_anchors": {
            w: {"key": fam[w][0]["key"], "flops": fam[w][0]["flops"], "top1": fam[w][0]["top1"],
                "snnet_key": anchors[w]["key"], "snnet_flops": anchors[w]["flops"], "snnet_top1": anchors[w]["top1"]}
            for w in widths if w in fam and w in anchors},
        "stitched": {f: ranges[f] for f in fam if "->" in f},
    }


def goal_summary(g: dict[str, Any]) -> dict[str, Any]:
    keys = ("methods", "front_share", "front_delta_min", "front_held", "storage_ratio", "storage_held",
            "front_storage_ratio", "min_flops_ratio", "min_flops_held", "every_descendant_min_top1")
    return {k: g[k] for k in keys} | {"instances_held": g["instances_held"] if g["instances"] else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rep_path = Path(args.replication)
    depth = args.depth
    rep_json = load_replication(rep_path, depth)
    s = dict(rep_json["settings"])
    init = s["default_init"]
    s.update(inits=[init], inits_d9=[init], only_inits=None, cache_dir=args.cache_dir)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    work = Path(args.work or Path(s["cache_dir"]) / ("pool-widths-quick" if rep_json["quick"] else "pool-widths"))
    work.mkdir(parents=True, exist_ok=True)
    if s.get("shared_distill"):
        copied = seed_distillations(rep_json, Path(args.pools_root), work, ("distilled-e*",))
        if copied:
            log.info("copied the replication's distillations %s into %s", ", ".join(copied), work)
        src = replication_work(rep_json, Path(args.pools_root))
        if not src.is_dir():
            log.warning("the replication's work directory %s is not here (--pools-root): every auxiliary model is "
                        "distilled again, with the replication's epochs", src)
    rep = stderr_reporter(args.quiet)
    st = Stages(work)
    t0 = time.time()
    anc, _ = ancestry_stage(s, bool(rep_json["quick"]), rep, st)
    if sha256_file(Path(anc) / "ancestry.safetensors") != s["ancestry_sha256"]:
        raise BenchmarkInputError(f"the ancestry found at {anc} is not the one {rep_path} was measured with: "
                                  "rerun benchmarks/paper_replication.py with this ancestry first")
    tag = "-".join(args.widths)
    # depth 9 builds the depth-6 pool of the same widths first (reused from --work where an earlier run built it):
    # the replication's goal draws on both depth groups, and the storage goal counts the depth-6 pool
    pools = {d: lgp_stage(d, anc, s, rep, st, widths=args.widths)[f"lgp_d{d}_{tag}_{init}"]
             for d in sorted({6, depth})}
    pool = pools[depth]
    rm = rep_json["methods"]
    ref, d6, d9 = f"lgp_d{depth}_{init}", f"lgp_d6_{init}", f"lgp_d9_{init}"
    sn = {"snnet": rm["snnet"]}  # compute_goals reads the pools under the replication's method names
    if depth == 6:
        variants = {
            f"{tag} depth 6": {d6: pool, **sn},
            f"{tag} depth 6 + ti-b depth 9": {d6: pool, **sn, **({d9: rm[d9]} if d9 in rm else {})},
            "ti-b depth 6 (replication)": {d6: rm[d6], **sn},
        }
        demo = demo_pool(s["ancestry_sha256"], rep_json["dataset"])
        if demo is not None:  # the shipped pool: the same Ti/B recipe with a longer fine-tuning
            variants[f"ti-b depth 6, demo pool shipped {demo['shipped']} ({demo['finetune_epochs']} fine-tuning "
                     "epochs)"] = {d6: demo, **sn}
    else:
        variants = {
            f"{tag} depth 9": {d9: pool, **sn},
            f"{tag} depths 6 + 9": {d6: pools[6], d9: pool, **sn},
            "ti-b depth 9 (replication)": {d9: rm[d9], **sn},
        }
    goals = {name: goal_summary(compute_goals(m, init)) for name, m in variants.items()}
    goals["ti-b depths 6 + 9 (replication goal)"] = goal_summary(compute_goals(rm, init))
    copies = {k for k, v in st.stages.items() if v["source"] == "copied from the replication"}
    results = {
        **follow_up_header("pool_widths", rep_json, rep_path, args.argv),
        "torch_threads": torch.get_num_threads(),
        "widths": list(args.widths),
        "depth": depth,
        "settings": {**{k: v for k, v in s.items() if k != "only_inits"}, "cache_dir": repo_path(s["cache_dir"])},
        "pool": pool,
        **({"pool_depth6": pools[6]} if depth != 6 else {}),  # the same widths at depth 6, for the rows over both
        "reference": {"ti-b": {k: v for k, v in rm[ref].items() if k != "pool_dir"},  # rows only: its directory
                      "snnet_stored_params": rm["snnet"]["stored_params"]},        # is the replication's machine's
        "goals": goals,
        "goal_criteria": GOALS,  # what the goals above were judged by
        "findings": findings(pool, rm[ref], rm["snnet"]["configs"], args.widths),
        "commands": {k: repo_paths_in(v) for k, v in st.commands.items()},
        "stages": st.stages,  # per stage: computed here, reused from --work, or copied from the replication
        "timing_s": {**{k: round(v, 1) for k, v in st.timing.items() if k != "ancestry" and k not in copies},
                     "total_this_invocation": round(time.time() - t0, 1)},
        # the replication's own wall times of the distillations copied from it (stages.*.copied_from), not this run's
        "timing_s_copied_from_replication": {k: round(st.timing[k], 1) for k in sorted(copies)},
    }
    out, md = write_follow_up(results, args, "pool_widths", "POOL_WIDTHS.md", render_markdown, quick_dir=work)
    log.info("wrote %s and %s", out, md)
    return results


def render_markdown(r: dict[str, Any], json_path: str) -> str:
    yes = {True: "met", False: "**not met**"}
    crit = r.get("goal_criteria") or GOALS  # results written before they recorded their criteria: these
    share, delta = crit["front_share_at_least"], crit["front_delta_min_at_least"]
    p, tib = r["pool"], r["reference"]["ti-b"]
    lines = [
        f"{'QUICK RUN (smoke settings; not a result). ' if r['quick'] else ''}"
        f"`{r['command'].strip()}` ({r['cpu']}, {r['torch_threads']} thread(s), code {r['code_version']}, "
        f"{r['date']}{stages_note(r)}): a depth-{r['depth']} pool of "
        f"{'/'.join(w.capitalize() for w in r['widths'])} instances, "
        f"distilled, stitched (`{r['settings']['default_init']}`) and fine-tuned with the replication's settings "
        f"({r['settings']['finetune_epochs']} fine-tuning epoch(s)), scored against its SN-Net configs. "
        f"{len(p['configs'])} descendants ({len(tib['configs'])} in the Ti/B pool), "
        f"{p['stored_params']:,} stored params (Ti/B {tib['stored_params']:,}, SN-Net "
        f"{r['reference']['snnet_stored_params']:,}); {instances_text(p)}."
        + (depth6_note(r["pool_depth6"]) if "pool_depth6" in r else ""),
        "",
        "| pools | front >= SN-Net (share of its configs) | worst delta (points) | storage ratio (depth 6"
        + ("" if r["depth"] == 6 else "; a row without it: its pool") + ") | "
        "storage of every pool in the row | smallest FLOPs ratio | min top-1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, g in r["goals"].items():
        lines.append(f"| {name} | {g['front_share']:.1%} ({yes[g['front_share'] >= share]}) | "
                     f"{g['front_delta_min']:+.2f} ({yes[g['front_delta_min'] >= delta]}) | "
                     f"{g['storage_ratio']:.3f} ({yes[g['storage_held']]}) | {g['front_storage_ratio']:.3f} | "
                     f"{g['min_flops_ratio']:.3f} "
                     f"({yes[g['min_flops_held']]}) | {g['every_descendant_min_top1']:.2f} |")
    f = r["findings"]
    w = f["ti_b_worst"]
    ts = r["timing_s"]
    distill_s = sum(v for k, v in ts.items() if "distill" in k)  # the runs made here and the pool's assembly
    copied = r.get("timing_s_copied_from_replication") or {}
    tune_s = next(v for k, v in ts.items() if k.startswith(f"lgp_d{r['depth']}_")
                  and k.endswith(r["settings"]["default_init"]))
    lines += ["", f"Goals: front share >= {share:.0%} and worst delta >= {delta:.1f}, storage ratio <= "
              f"{crit['storage_ratio_at_most']}, smallest FLOPs ratio <= {crit['min_flops_ratio_at_most']}. "
              "Stages: distillation" + ("" if r["depth"] == 6 else " of both depths' models")
              + f" {distill_s / 60:.0f} min"
              + (f" (the models of the replication's {', '.join(k.replace('_', ' ') for k in copied)} copied from "
                 f"it, not retrained: {sum(copied.values()) / 60:.0f} min there)" if copied else "")
              + f", stitch init + fine-tuning + evaluations {tune_s / 60:.0f} min"
              + ("" if r["depth"] == 6 else " (the depth-9 pool)") + ". "
              f"Full numbers and commands: [`{json_path}`]({json_path}).", "",
              "Where the pools differ (from the rows above):", "",
              f"- At the Ti/B pool's worst SN-Net config, `{w['snnet_key']}` ({w['snnet_flops'] / 1e6:.2f} MFLOPs, "
              f"{w['snnet_top1']:.2f}%), the Ti/B pool's best within its FLOPs is `{w['lgp_key']}` "
              f"({w['lgp_top1']:.2f}%, {w['delta']:+.2f}), "
              + ("this pool has none." if w["this_pool_key"] is None else
                 f"this pool's `{w['this_pool_key']}` ({w['this_pool_top1']:.2f}%, {w['this_pool_delta']:+.2f}).")]
    for a in f["instances_vs_snnet_anchors"].values():
        lines.append(f"- `{a['key']}` alone {a['top1']:.2f}% at {a['flops'] / 1e6:.2f} MFLOPs; SN-Net's anchor of the "
                     f"same width `{a['snnet_key']}` {a['snnet_top1']:.2f}% at {a['snnet_flops'] / 1e6:.2f} MFLOPs.")
    for fam, s in f["stitched"].items():
        lines.append(f"- {fam} stitched ({s['count']}): {s['top1_min']:.2f}..{s['top1_max']:.2f}%.")
    lines.append("")
    return "\n".join(lines)


def instances_text(p: dict[str, Any]) -> str:
    """A pool's instances alone, right after distillation and after fine-tuning."""
    after = {c["key"]: c["top1"] for c in p["configs"]}
    return ("instances right after distillation "
            + ", ".join(f"{k} {v:.2f}%" for k, v in p["instances_after_distill"].items()) + ", after fine-tuning "
            + ", ".join(f"{k} {after[k]:.2f}%" for k in p["instances_after_distill"]))


def depth6_note(p: dict[str, Any]) -> str:
    """The depth-6 pool of the same widths that a depth-9 run's rows over both depths draw on."""
    return (f" The rows over both depths add the depth-6 pool of the same widths ({len(p['configs'])} descendants, "
            f"{p['stored_params']:,} stored params; {instances_text(p)}).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--widths", type=widths_arg, default=WIDTHS, metavar="W,W,...",
                   help="instance widths of the pool (default ti,s,b)")
    p.add_argument("--depth", type=int, choices=DEPTHS, default=6,
                   help="depth of the pool (default 6); 9 also builds the depth-6 pool of the same widths, or reuses "
                        "it from --work, for the rows over both depth groups")
    p.add_argument("--replication", default=str(ROOT / "benchmarks" / "results" / "paper_replication.json"),
                   help="paper_replication.py results to compare with and take the settings from")
    p.add_argument("--work", default=None, help="stage outputs (default <cache dir>/pool-widths)")
    p.add_argument("--pools-root", default=str(ROOT),
                   help="the checkout whose benchmarks/.cache holds the replication's work directory, to copy its "
                        "distilled models from (default this one)")
    p.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"),
                   help="cached ancestries and default --work parent (default benchmarks/.cache)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/pool_widths.json, or "
                                               "pool_widths_quick.json for a quick replication)")
    p.add_argument("--md-out", default=None, help="README section (default benchmarks/POOL_WIDTHS.md; quick "
                                                  "replications: inside --work)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        r = run(args)
    except BenchmarkInputError as e:
        print(f"pool_widths: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r["goals"], indent=1))
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
