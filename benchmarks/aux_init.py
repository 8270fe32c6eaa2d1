"""Auxiliary models started from the ancestry's weights vs from random weights, after the same short distillation.

    python benchmarks/aux_init.py            # 150 steps each, all 10,000 test images (7 min on 1 AMD EPYC core)
    python benchmarks/aux_init.py --steps 2 --images 200 --out /tmp/aux.json     # a smoke run

Both runs are ``lgp-edge pool build`` (the shipped ancestry, depth 6, Ti and B, lstsq stitches) with the
distillation recipe of benchmarks/paper_replication.py (AdamW lr 1e-3, warm-up, cosine, batch 256), one
epoch capped at ``--steps`` steps, differing only in ``--aux-init``. Every descendant is then evaluated
without fine-tuning; Ti alone is ``ti6.0-5``, B alone ``b6.0-5``. Results: benchmarks/results/aux_init.json,
with the run's code version, date, command and CPU, the ancestry checkpoint used (its path, sha256 and top-1),
the training settings and the number of test images actually evaluated.
This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lgp_edge.fileio import sha256_file
from lgp_edge.models.ancestry import default_checkpoint, read_ancestry_dir
from lgp_edge.pool.build import BuildRequest, build_pool
from lgp_edge.pool.evaluate import evaluate_pool
from lgp_edge.pool.inherit import AUX_INITS
from lgp_edge.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import check_results_path, repo_path, results_path, run_provenance, write_results  # noqa: E402  (the benchmarks' run record and writer)

provenance = functools.partial(run_provenance, "aux_init.py")  # this script's run record

STITCH_INIT = "lstsq"


def train_config(steps: int) -> TrainConfig:
    """The distillation recipe of both runs: paper_replication.py's (AdamW lr 1e-3, warm-up, cosine, batch 256),
    one epoch of at most ``steps`` steps."""
    return TrainConfig(epochs=1, batch_size=256, lr=1e-3, warmup_epochs=0.1, seed=0, max_steps_per_epoch=steps)


def ancestry_record(name: str) -> tuple[str, dict]:
    """The checkpoint ``lgp-edge pool build`` uses for ``name`` (the shipped one) and what identifies it: its path,
    the sha256 of its weights and the top-1 its ``ancestry.json`` records (None when it has none)."""
    ckpt = default_checkpoint(name, None)
    if ckpt is None:
        raise SystemExit(f"aux_init.py: ancestry '{name}' has no shipped weights to start from")
    weights = Path(ckpt) / "ancestry.safetensors" if Path(ckpt).is_dir() else Path(ckpt)
    meta = read_ancestry_dir(ckpt) or {}
    return ckpt, {"name": name, "checkpoint": repo_path(ckpt), "sha256": sha256_file(weights),
                  "top1": meta.get("top1"), "top1_images": meta.get("val_images"), "data": meta.get("data")}


def run(aux: str, args: argparse.Namespace, tmp: Path, checkpoint: str | None = None) -> dict:
    out = tmp / aux
    cfg = train_config(args.steps)
    t0 = time.time()
    manifest = build_pool(BuildRequest(ancestry=args.ancestry, checkpoint=checkpoint, data=args.data, out=str(out),
                                       init=STITCH_INIT, aux_init=aux, eval_images=args.images or None), cfg)
    build_s = time.time() - t0
    evaluated = evaluate_pool(out, args.data, max_images=args.images or None)
    top1 = {r.key: r.top1 for r in evaluated.descendants}
    stitched = [v for k, v in top1.items() if "+" in k]
    return {"aux_init": aux, "build_s": build_s, "images": evaluated.history[-1]["images"],  # evaluated, not asked
            "ti_alone": top1["ti6.0-5"], "b_alone": top1["b6.0-5"],
            "stitched_mean": statistics.mean(stitched), "stitched_min": min(stitched), "stitched_max": max(stitched),
            "stitch_r2_mean": manifest.history[-1].get("r2_mean"), "epoch_loss": manifest.history[0]["epoch_loss"],
            "inherited_blocks": manifest.history[0].get("inherited_blocks"), "top1": top1}


def results(runs: dict[str, dict], args: argparse.Namespace, ancestry: dict, header: dict, wall_s: float) -> dict:
    """The results file's content: the run's provenance, the ancestry and recipe used, the images evaluated (as
    many as the test set has when ``--images`` asks for more or for all), and the runs."""
    images = {r["images"] for r in runs.values()}
    if len(images) != 1:
        raise ValueError(f"the runs evaluated different numbers of images: {sorted(images)}")
    return {"benchmark": "benchmarks/aux_init.py", "quick": args.quick, **header, "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(), "ancestry": ancestry,
            "settings": {**train_config(args.steps).to_dict(), "steps": args.steps, "data": args.data,
                         "stitch_init": STITCH_INIT},
            "steps": args.steps, "images": images.pop(), "runs": runs, "wall_s": wall_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150, help="distillation steps of 256 images per run (default 150)")
    p.add_argument("--images", type=int, default=0,
                   help="test images per evaluation (0: the whole test set, 10,000 for Fashion-MNIST)")
    p.add_argument("--ancestry", default="lgp_vit_fmnist")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None,
                   help="results file (default benchmarks/results/aux_init.json, or aux_init_quick.json for a run with "
                        "other --steps, --images, --ancestry or --data: a smoke run never replaces the committed "
                        "results)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.images < 0 or args.threads < 1:
        p.error("--steps and --threads must be >= 1, --images >= 0")
    args.quick = (args.steps, args.images, args.ancestry, args.data) != (150, 0, "lgp_vit_fmnist", "fashion-mnist")
    args.out = str(results_path(__file__, args.out, args.quick))
    check_results_path(Path(args.out), __file__)  # before the run, not after it
    torch.set_num_threads(args.threads)
    header, (ckpt, ancestry) = provenance(argv), ancestry_record(args.ancestry)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="lgp-edge-aux-") as tmp:
        runs = {aux: run(aux, args, Path(tmp), ckpt) for aux in AUX_INITS}
    write_results(Path(args.out), results(runs, args, ancestry, header, time.time() - t0))
    for aux, r in runs.items():
        print(f"{aux:9s} Ti alone {r['ti_alone']:.2f}%  B alone {r['b_alone']:.2f}%  stitched {r['stitched_min']:.2f}-"
              f"{r['stitched_max']:.2f}% (lstsq, no fine-tuning)  {r['build_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
