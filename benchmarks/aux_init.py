"""Auxiliary models started from the ancestry's weights vs from random weights, after the same short distillation.

    python benchmarks/aux_init.py                       # 150 steps each, all 10,000 test images (~12 min, 1 core)
    python benchmarks/aux_init.py --steps 2 --images 200 --out /tmp/aux.json     # a smoke run

Both runs are ``lgp-edge pool build`` (the shipped ancestry, depth 6, Ti and B, lstsq stitches) with the
distillation recipe of benchmarks/paper_replication.py (AdamW lr 1e-3, warm-up, cosine, batch 256), one
epoch capped at ``--steps`` steps, differing only in ``--aux-init``. Every descendant is then evaluated
without fine-tuning; Ti alone is ``ti6.0-5``, B alone ``b6.0-5``. Results: benchmarks/results/aux_init.json.
This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from lgp_edge.fileio import write_text_atomic
from lgp_edge.pool.build import BuildRequest, build_pool
from lgp_edge.pool.evaluate import evaluate_pool
from lgp_edge.pool.inherit import AUX_INITS
from lgp_edge.profiling.host import cpu_model
from lgp_edge.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def run(aux: str, args: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / aux
    cfg = TrainConfig(epochs=1, batch_size=256, lr=1e-3, warmup_epochs=0.1, seed=0,
                      max_steps_per_epoch=args.steps)
    t0 = time.time()
    manifest = build_pool(BuildRequest(ancestry=args.ancestry, checkpoint=None, data=args.data, out=str(out),
                                       init="lstsq", aux_init=aux), cfg)
    build_s = time.time() - t0
    evaluated = evaluate_pool(out, args.data, max_images=args.images or None)
    top1 = {r.key: r.top1 for r in evaluated.descendants}
    stitched = [v for k, v in top1.items() if "+" in k]
    return {"aux_init": aux, "build_s": build_s, "ti_alone": top1["ti6.0-5"], "b_alone": top1["b6.0-5"],
            "stitched_mean": statistics.mean(stitched), "stitched_min": min(stitched), "stitched_max": max(stitched),
            "stitch_r2_mean": manifest.history[-1].get("r2_mean"), "epoch_loss": manifest.history[0]["epoch_loss"],
            "inherited_blocks": manifest.history[0].get("inherited_blocks"), "top1": top1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150, help="distillation steps of 256 images per run (default 150)")
    p.add_argument("--images", type=int, default=0, help="test images per evaluation (0 = all 10,000)")
    p.add_argument("--ancestry", default="lgp_vit_fmnist")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "aux_init.json"))
    args = p.parse_args(argv)
    if args.steps < 1 or args.images < 0 or args.threads < 1:
        p.error("--steps and --threads must be >= 1, --images >= 0")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="lgp-edge-aux-") as tmp:
        runs = {aux: run(aux, args, Path(tmp)) for aux in AUX_INITS}
    given = sys.argv[1:] if argv is None else argv
    res = {"benchmark": "benchmarks/aux_init.py", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(["python", "benchmarks/aux_init.py", *given]), "cpu": cpu_model(),
           "threads": args.threads,
           "torch": torch.__version__, "python": platform.python_version(), "steps": args.steps,
           "images": args.images or 10000, "runs": runs, "wall_s": time.time() - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(res, indent=1) + "\n")
    for aux, r in runs.items():
        print(f"{aux:9s} Ti alone {r['ti_alone']:.2f}%  B alone {r['b_alone']:.2f}%  stitched {r['stitched_min']:.2f}-"
              f"{r['stitched_max']:.2f}% (lstsq, no fine-tuning)  {r['build_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
