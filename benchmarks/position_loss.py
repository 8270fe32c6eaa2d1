"""Ti's three supervised positions: their feature losses averaged (lgp-edge's default) or summed (the authors').

    python benchmarks/position_loss.py                 # Ti6, 10 epochs each (about 20 min on 2 AMD EPYC cores)
    python benchmarks/position_loss.py --epochs 1 --steps 2 --images 200 --out /tmp/pl.json   # a smoke run

Both runs are ``lgp-edge pool distill --models ti6`` from the shipped ancestry with the recipe of
benchmarks/paper_replication.py's Ti budget (10 epochs, AdamW lr 1e-3, warm-up 0.25 epochs, cosine, batch 256,
seed 0, students started from the ancestry), differing only in ``--position-loss``. Ti6 alone is then
evaluated on the test images. Results: benchmarks/results/position_loss.json, with the run's code version,
date, command and CPU, the ancestry checkpoint (path, sha256, top-1) and the per-epoch losses.
This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from lgp_edge.datasets import open_data
from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.models.instances import plan_instances
from lgp_edge.pool.auxiliary import DistillRequest, distill_auxiliary
from lgp_edge.pool.distill import POSITION_LOSSES
from lgp_edge.pool.pool import LearngenePool, safe_load_file
from lgp_edge.specs import PoolSpec
from lgp_edge.train import TrainConfig, evaluate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from aux_init import ancestry_record  # noqa: E402  (the shipped ancestry and what identifies it)
from make_demo_pool import check_results_path, results_path, run_provenance, write_results  # noqa: E402  (the benchmarks' run record and writer)

provenance = functools.partial(run_provenance, "position_loss.py")
MODEL = "ti6"


def train_config(epochs: int, steps: int | None) -> TrainConfig:
    """paper_replication.py's distillation recipe for Ti (its ``--width-epochs ti=10`` run)."""
    return TrainConfig(epochs=epochs, batch_size=256, lr=1e-3, warmup_epochs=0.25, seed=0,
                       max_steps_per_epoch=steps)


def ti_alone_top1(out: Path, ancestry: str, data: str, images: int | None) -> tuple[float, int]:
    """Top-1 of the distilled Ti alone (its blocks, embedding, norm and head) and the images it was measured on."""
    _, aspec = create_ancestry(ancestry)
    pool = LearngenePool(PoolSpec(aspec, 6, plan_instances(aspec, 6, ("ti", "b")))).eval()
    state = safe_load_file(out / "models.safetensors")
    pool.models[MODEL].load_state_dict({k[len(MODEL) + 1:]: v for k, v in state.items() if k.startswith(f"{MODEL}.")})
    spec = next(d for d in pool.descendants() if not d.stitches and d.segments[0].instance == MODEL)
    ds = open_data(data, img_size=aspec.img_size, in_chans=aspec.in_chans, num_classes=aspec.num_classes)
    n = min(images, len(ds.val)) if images else len(ds.val)
    return evaluate(pool.descendant(spec), ds.val, max_images=n), n


def run(mode: str, args: argparse.Namespace, tmp: Path, checkpoint: str) -> dict:
    out = tmp / mode
    t0 = time.time()
    record = distill_auxiliary(DistillRequest(ancestry=args.ancestry, checkpoint=checkpoint, data=args.data,
                                              out=str(out), models=(MODEL,), position_loss=mode),
                               train_config(args.epochs, args.steps))
    top1, n = ti_alone_top1(out, args.ancestry, args.data, args.images or None)
    return {"position_loss": mode, "distill_s": round(time.time() - t0, 1), "ti_alone": round(top1, 2),
            "images": n, "epoch_loss": record["runs"][0]["epoch_loss"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="distillation epochs per run (default 10)")
    p.add_argument("--steps", type=int, default=0, help="at most this many steps per epoch (0: whole epochs)")
    p.add_argument("--images", type=int, default=0, help="test images (0: the whole test set)")
    p.add_argument("--ancestry", default="lgp_vit_fmnist")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", default=None,
                   help="results file (default benchmarks/results/position_loss.json, or position_loss_quick.json for "
                        "a run with other --epochs, --steps, --images, --ancestry or --data: a smoke run never "
                        "replaces the committed results)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.steps < 0 or args.images < 0:
        p.error("--epochs must be >= 1, --steps and --images >= 0")
    args.quick = (args.epochs, args.steps, args.images, args.ancestry, args.data) != (
        10, 0, 0, "lgp_vit_fmnist", "fashion-mnist")
    args.out = str(results_path(__file__, args.out, args.quick))
    check_results_path(Path(args.out), __file__)  # before the run, not after it
    args.steps = args.steps or None
    header, (ckpt, ancestry) = provenance(argv), ancestry_record(args.ancestry)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="lgp-edge-position-loss-") as tmp:
        runs = {mode: run(mode, args, Path(tmp), ckpt) for mode in POSITION_LOSSES}
    write_results(Path(args.out), {
        "benchmark": "benchmarks/position_loss.py", "quick": args.quick, **header, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(), "ancestry": ancestry,
        "model": MODEL, "settings": {**train_config(args.epochs, args.steps).to_dict(), "data": args.data,
                                     "aux_init": "ancestry"},
        "runs": runs, "wall_s": round(time.time() - t0, 1)})
    for mode, r in runs.items():
        print(f"{mode:5s} Ti6 alone {r['ti_alone']:.2f}% on {r['images']:,} images  {r['distill_s']:.0f} s",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
