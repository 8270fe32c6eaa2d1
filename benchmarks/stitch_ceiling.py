"""How accurate can a Ti->B stitched descendant get with the whole fine-tuning budget to itself?

    python benchmarks/stitch_ceiling.py --jobs 2   # -> benchmarks/results/stitch_ceiling.json, STITCH_CEILING.md

The replication's front falls behind SN-Net where SN-Net's S anchor and S->B stitches sit (10.7-20.2 MFLOPs), and
there the Ti/B pools have only Ti->B stitched descendants (benchmarks/PAPER_REPLICATION.md). Pool fine-tuning
shares its steps among every descendant of a pool. This benchmark asks what the steps could buy at most: it
takes the replication's fine-tuned pools and, for each SN-Net config the front misses, the stitched candidates
within that config's FLOPs (the most accurate one and the one with the most FLOPs), and trains each candidate
*alone* from the fine-tuned pool for the replication's whole fine-tuning budget (same epochs, batch, learning
rate, warm-up, KD loss against the ancestry, all of the descendant's parameters). Each candidate is then scored
on all test images, and so are the instance models alone (which the solo training moves as a side effect).

The front recomputed with every candidate at its solo top-1 is what these descendants would reach if one
fine-tuning schedule of that budget could give each of them all of its steps, which a schedule that trains the
whole pool cannot: it bounds such schedules for these candidates (other descendants keep their pool top-1).
Nothing of the replication is retrained: run ``paper_replication.py`` first. Each candidate's result is cached
under ``--work``, with its training checkpoints until it is done, so an interrupted run continues.
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
    PROVENANCE,
    BenchmarkInputError,
    add_follow_up_args,
    follow_up_header,
    follow_up_paths,
    provenance_now,
    read_replication,
    stage_entry,
    stages_note,
    write_follow_up,
)
from parallel import run_each  # noqa: E402

from lgp_edge.baselines.claims import GOALS, front_deltas  # noqa: E402
from lgp_edge.fileio import write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("stitch_ceiling")


def load_replication(path: Path) -> dict[str, Any]:
    r = read_replication(path)
    if "snnet" not in r.get("methods", {}) or not lgp_methods(r):
        raise BenchmarkInputError(f"{path} has no SN-Net or default-init LGP results: rerun paper_replication.py "
                                  "without --stages")
    return r


def lgp_methods(r: dict[str, Any]) -> list[str]:
    init = (r.get("settings") or {}).get("default_init")
    return [f"lgp_d{d}_{init}" for d in (6, 9) if f"lgp_d{d}_{init}" in r.get("methods", {})]


def candidates(r: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the SN-Net configs the front misses, the stitched LGP descendants to train alone): for each miss, the
    most accurate stitched descendant within its FLOPs and the one with the most FLOPs (deduplicated)."""
    rows = [dict(c, method=m) for m in lgp_methods(r) for c in r["methods"][m]["configs"]]
    misses = [d for d in front_deltas(rows, r["methods"]["snnet"]["configs"]) if d["delta"] < 0]
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for miss in misses:
        stitched = [c for c in rows if "+" in c["key"] and c["flops"] <= miss["snnet_flops"]]
        if not stitched:
            continue
        for c in (max(stitched, key=lambda c: (c["top1"], -c["flops"])), max(stitched, key=lambda c: c["flops"])):
            chosen[(c["method"], c["key"])] = c
    return misses, sorted(chosen.values(), key=lambda c: (c["flops"], c["method"], c["key"]))


def train_alone(pool_dir: str, key: str, data_name: str, eval_images: int | None, cfg: dict[str, Any], tau: float,
                out_dir: str, threads: int, quiet: bool, *,
                cached_only: bool = False) -> tuple[dict[str, Any], bool] | None:
    """Train descendant ``key`` of the pool at ``pool_dir`` alone (KD from the pool's ancestry) and score it and
    the instance models on the test images the replication scored (``eval_images``, None = all); cached in
    ``out_dir/result.json`` with the code, CPU and time that computed it. Returns the result and whether it was
    reused from that cache (``cached_only``: None where it was not). Runs in this process or a worker process
    (``parallel.run_each``)."""
    import torch

    from lgp_edge.datasets import open_data
    from lgp_edge.pool.kd import FinetuneObjective, descendant_sampler
    from lgp_edge.pool.pool import load_pool, load_pool_ancestry, read_manifest
    from lgp_edge.progress import stderr_reporter
    from lgp_edge.specs import content_hash
    from lgp_edge.train import TrainConfig, evaluate, fit

    out = Path(out_dir)
    done = out / "result.json"
    tcfg = TrainConfig(**cfg)
    weights = read_manifest(pool_dir).files.get("weights.safetensors")
    fingerprint = content_hash({"stage": "stitch-ceiling", "pool": weights, "key": key, "cfg": tcfg.identity(),
                                "tau": tau, "eval_images": eval_images})
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
        return json.loads(done.read_text()), True  # the same pool weights, budget and evaluation
    if cached_only:
        return None
    torch.set_num_threads(threads)
    pool, manifest = load_pool(pool_dir)
    teacher = load_pool_ancestry(pool_dir, manifest)
    a = manifest.spec.ancestry
    data = open_data(data_name, img_size=a.img_size, in_chans=a.in_chans, num_classes=a.num_classes)
    specs = pool.descendants()
    index = next(i for i, d in enumerate(specs) if d.key == key)
    anchors = [d for d in specs if not d.stitches]

    def score() -> dict[str, float]:
        return {d.key: evaluate(pool.descendant(d), data.val, max_images=eval_images) for d in [specs[index], *anchors]}

    before = score()
    objective = FinetuneObjective(pool, teacher, tau)
    ckpt = out / "train.ckpt"
    t0 = time.time()
    result = fit(objective, data.train, tcfg, description=f"alone {key}", ckpt_dir=ckpt,
                 resume=(ckpt / "state.json").is_file(), fingerprint=fingerprint,
                 step_kwargs=descendant_sampler(tcfg.seed, [index]), reporter=stderr_reporter(quiet))
    after = score()
    res = {"key": key, "fingerprint": fingerprint, "pool_top1_measured": round(before[key], 3),
           "alone_top1": round(after[key], 3),
           "instances_before": {d.key: round(before[d.key], 3) for d in anchors},
           "instances_after": {d.key: round(after[d.key], 3) for d in anchors},
           "steps": result.steps, "epoch_loss": [round(x, 4) for x in result.epoch_loss],
           "wall_s": round(time.time() - t0, 1),
           "images": len(data.val) if eval_images is None else min(eval_images, len(data.val)), **provenance_now()}
    write_json_atomic(done, res)
    shutil.rmtree(ckpt, ignore_errors=True)  # this benchmark's own checkpoint; the result above replaces it
    return res, False


def run(args: argparse.Namespace) -> dict[str, Any]:
    rep_path = Path(args.replication)
    r = load_replication(rep_path)
    s = r["settings"]
    misses, cands = candidates(r)
    front = {(c["method"], c["key"]) for c in cands}
    if args.keys:
        rows = {c["key"]: dict(c, method=m) for m in lgp_methods(r) for c in r["methods"][m]["configs"]}
        unknown = [k for k in args.keys if k not in rows or "+" not in k]
        if unknown:
            raise BenchmarkInputError(f"--keys: {', '.join(unknown)} not a stitched descendant of "
                                      f"{' or '.join(lgp_methods(r))}; see the replication's configs")
        cands = sorted((rows[k] for k in args.keys), key=lambda c: (c["flops"], c["method"], c["key"]))
    if args.limit is not None:
        cands = cands[:args.limit]
    pools: dict[str, Path] = {}
    for m in lgp_methods(r):
        p = Path(args.pools_root) / r["methods"][m]["pool_dir"]
        if not (p / "pool.json").is_file():
            raise BenchmarkInputError(f"pool {p} of {m} not found: run benchmarks/paper_replication.py here first, "
                                      "or point --pools-root at the checkout that ran it")
        pools[m] = p
    epochs = args.epochs if args.epochs is not None else s["finetune_epochs"]
    cfg = {"epochs": epochs, "batch_size": s["batch_size"], "lr": s["lr"], "warmup_epochs": s["finetune_warmup"],
           "seed": s["seed"], "max_steps_per_epoch": s["steps_per_epoch"]}
    work = Path(args.work)
    t0 = time.time()
    log.info("%d SN-Net configs ahead of the front; training %d stitched candidates alone for %d epoch(s), "
             "%d at a time", len(misses), len(cands), epochs, args.jobs)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    stages: dict[str, dict[str, Any]] = {}  # per candidate: computed by this invocation or reused, and by what
    ordered = sorted(cands, key=lambda c: -c["flops"])  # longest first: the lanes end together
    calls = {i: (str(pools[c["method"]]), c["key"], s["data"], s["eval_images"], cfg, 1.0,
                 str(work / f"e{epochs}" / c["method"] / c["key"]), 1, args.quiet) for i, c in enumerate(ordered)}
    for i, (res, reused) in run_each(train_alone, calls, args.jobs):
        c = ordered[i]
        stages[f"{c['method']}/{c['key']}"] = stage_entry(res, "reused" if reused else "computed")
        results[(c["method"], c["key"])] = res = {k: v for k, v in res.items() if k not in PROVENANCE}
        if abs(res["pool_top1_measured"] - c["top1"]) > 0.05:
            raise BenchmarkInputError(f"{c['method']} {c['key']}: the pool at {pools[c['method']]} scores "
                                      f"{res['pool_top1_measured']}%, the replication {c['top1']}%: not the "
                                      "replication's pool")
        log.info("%s %s: %.2f%% in the pool, %.2f%% trained alone", c["method"], c["key"], c["top1"],
                 res["alone_top1"])
    rows = [{**c, **results[(c["method"], c["key"])]} for c in cands]
    x = summarise(r, rep_path, misses, rows, epochs, args, time.time() - t0)
    x["stages"] = {f"{c['method']}/{c['key']}": stages[f"{c['method']}/{c['key']}"] for c in cands}
    # --keys or --limit other than the front's candidates: no result of this benchmark (the bound covers the
    # descendants trained only); kept apart from the results
    x["partial"] = {(c["method"], c["key"]) for c in cands} != front
    return x


def summarise(r: dict[str, Any], rep_path: Path, misses: list[dict[str, Any]], rows: list[dict[str, Any]],
              epochs: int, args: argparse.Namespace, wall_s: float) -> dict[str, Any]:
    lgp = [dict(c, method=m) for m in lgp_methods(r) for c in r["methods"][m]["configs"]]
    alone = {(x["method"], x["key"]): x["alone_top1"] for x in rows}
    bound = [dict(c, top1=max(c["top1"], alone.get((c["method"], c["key"]), c["top1"]))) for c in lgp]
    snnet = r["methods"]["snnet"]["configs"]
    deltas = front_deltas(bound, snnet)
    per_miss = []
    for m in misses:
        after = next(d for d in deltas if d["snnet_key"] == m["snnet_key"])
        per_miss.append({**{k: m[k] for k in ("snnet_key", "snnet_flops", "snnet_top1")},
                         "pool_key": m["lgp_key"], "pool_top1": m["lgp_top1"], "pool_delta": m["delta"],
                         "bound_key": after["lgp_key"], "bound_top1": after["lgp_top1"], "bound_delta": after["delta"]})
    n = len(deltas)
    return {
        **follow_up_header("stitch_ceiling", r, rep_path, args.argv),
        "jobs": args.jobs,
        "budget": {"epochs": epochs, "replication_finetune_epochs": r["settings"]["finetune_epochs"],
                   "lr": r["settings"]["lr"], "batch_size": r["settings"]["batch_size"],
                   "warmup_epochs": r["settings"]["finetune_warmup"], "loss": "0.5 CE + 0.5 KL(ancestry), tau 1",
                   "trained": "every parameter the descendant runs (its instances' blocks and its stitch)"},
        "candidates": rows,
        "misses": per_miss,
        "front": {"configs": n,
                  "pool_share": round(sum(d["delta"] >= 0 for d in front_deltas(lgp, snnet)) / n, 4),
                  "bound_share": round(sum(d["delta"] >= 0 for d in deltas) / n, 4),
                  "bound_delta_min": min(d["delta"] for d in deltas),
                  "share_goal": GOALS["front_share_at_least"], "delta_goal": GOALS["front_delta_min_at_least"]},
        "wall_s": round(wall_s, 1),
    }


def is_partial(x: dict[str, Any]) -> bool:
    """A run of some candidates only (``--keys``, ``--limit``); results written before they said so are read from
    their command."""
    if "partial" in x:
        return bool(x["partial"])
    words = x["command"].split()
    return any(w in ("--keys", "--limit") or w.startswith(("--keys=", "--limit=")) for w in words)


def render_markdown(x: dict[str, Any], json_path: str) -> str:
    f, b = x["front"], x["budget"]
    wall = sum(c["wall_s"] for c in x["candidates"])
    images = x["candidates"][0]["images"] if x["candidates"] else 0
    partial = "PARTIAL RUN (--keys or --limit: not every candidate; the bound covers those trained). "
    lines = [
        f"{'QUICK RUN (smoke settings; not a result). ' if x['quick'] else ''}{partial if is_partial(x) else ''}"
        f"`{x['command'].strip()}` ({x['cpu']}, code {x['code_version']}, {x['date']}{stages_note(x)}): "
        f"{len(x['candidates'])} stitched descendants of the fine-tuned pools of the replication of "
        f"{x['replication']['date']} (code {x['replication']['code_version']}), each trained alone for "
        f"{b['epochs']} epoch(s) (the replication fine-tunes a whole pool in {b['replication_finetune_epochs']}), "
        f"lr {b['lr']}, batch {b['batch_size']}, {b['loss']}; top-1 on {images:,} test images. "
        f"{wall / 60:.0f} min of training on one thread each.",
        "",
        "| descendant | MFLOPs | top-1 in the pool | trained alone | Ti alone after | B alone after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in x["candidates"]:
        inst = c["instances_after"]
        ti = next(v for k, v in inst.items() if k.startswith("ti"))
        bb = next(v for k, v in inst.items() if k.startswith("b"))
        tib = {k: v for k, v in c["instances_before"].items()}
        lines.append(f"| `{c['key']}` | {c['flops'] / 1e6:.2f} | {c['top1']:.2f} | **{c['alone_top1']:.2f}** | "
                     f"{ti:.2f} ({ti - next(v for k, v in tib.items() if k.startswith('ti')):+.2f}) | "
                     f"{bb:.2f} ({bb - next(v for k, v in tib.items() if k.startswith('b')):+.2f}) |")
    lines += ["", "The SN-Net configs ahead of the replication's front, with the front recomputed as if every "
              "candidate above had its solo top-1:", "",
              "| SN-Net config | MFLOPs | SN-Net top-1 | front (pools) | delta | front (solo bound) | delta |",
              "|---|---:|---:|---|---:|---|---:|"]
    for m in x["misses"]:
        lines.append(f"| `{m['snnet_key']}` | {m['snnet_flops'] / 1e6:.2f} | {m['snnet_top1']:.2f} | "
                     f"`{m['pool_key']}` {m['pool_top1']:.2f} | {m['pool_delta']:+.2f} | "
                     f"`{m['bound_key']}` {m['bound_top1']:.2f} | {m['bound_delta']:+.2f} |")
    lines += ["", f"Front >= SN-Net: {f['pool_share']:.1%} of its {f['configs']} configs with the pools as fine-tuned; "
              f"{f['bound_share']:.1%} (worst {f['bound_delta_min']:+.2f}) with every candidate at its solo top-1 and "
              "every other descendant at its pool top-1. The goal is "
              f"{f['share_goal']:.0%} and never below {f['delta_goal']:+.1f}. Each solo top-1 costs the instance "
              "models alone the points in the last two columns, so no one pool holds them all at once. "
              f"Full numbers: [`{json_path}`]({json_path}).", ""]
    return "\n".join(lines)


def output_names(x: dict[str, Any]) -> tuple[str, str]:
    """The results' stem and section file; a longer budget than the replication's is another result, beside the
    main one; a partial run (``--keys``, ``--limit``) is no result of either and takes a name of its own."""
    b = x["budget"]
    longer = "" if b["epochs"] == b["replication_finetune_epochs"] else f"_e{b['epochs']}"
    longer += "_partial" if is_partial(x) else ""
    return f"stitch_ceiling{longer}", f"STITCH_CEILING{longer.upper()}.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_follow_up_args(p, "stitch-ceiling", "cached results and checkpoints per candidate")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs each candidate trains alone (default: the replication's fine-tuning epochs)")
    p.add_argument("--jobs", type=int, default=1, help="candidates trained at once, one thread each")
    p.add_argument("--keys", type=lambda t: [k for k in t.split(",") if k], default=None, metavar="KEY,...",
                   help="train these stitched descendants instead of the front's candidates")
    p.add_argument("--limit", type=int, default=None, help="train only the first N candidates (smoke runs)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/stitch_ceiling.json, "
                                               "stitch_ceiling_quick.json for a quick replication, *_partial "
                                               "with --keys or --limit)")
    p.add_argument("--md-out", default=None, help="README section (default benchmarks/STITCH_CEILING.md; quick "
                                                  "replications: inside --work)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON",
                   help="train nothing: rewrite the README section of these results (after a change to its text)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.render:
        try:
            x = json.loads(Path(args.render).read_text())
            md = follow_up_paths(x, args, *output_names(x))[1]
            write_text_atomic(md, render_markdown(x, repo_path(Path(args.render))))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"stitch_ceiling: --render {args.render}: not a stitch_ceiling results file ({e})", file=sys.stderr)
            return 2
        return 0
    for name in ("jobs", "epochs", "limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"stitch_ceiling: --{name} must be 1 or more, got {v}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        x = run(args)
    except BenchmarkInputError as e:
        print(f"stitch_ceiling: {e}", file=sys.stderr)
        return 2
    write_follow_up(x, args, *output_names(x), render_markdown)
    print(json.dumps(x["front"], indent=1))
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
