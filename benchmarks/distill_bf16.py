"""Does bf16 make distillation cheaper on a CPU, and what does it cost in top-1? The same run in float32 and bf16.

    python benchmarks/distill_bf16.py                      # Ti6, 5 epochs, each precision (9 min, 2 AMD EPYC cores)
    python benchmarks/distill_bf16.py --run ti6@1 --steps 3 --images 200 --work /tmp/bf16 --out /tmp/bf16.json

A distillation step runs the ancestry forward and every student forward and backward; CPUs with AVX512-BF16 or
AMX have bf16 matrix-product instructions, and whether they make a step cheaper at these small widths is what this
measures. Each ``--run MODELS@EPOCHS`` is distilled twice with the replication's recipe
(benchmarks/distill_convergence.py's: the shipped ancestry, ``--aux-init ancestry``, AdamW lr 1e-3, warm-up 0.25
epoch, cosine, batch 256, seed 0), once in float32 and once under ``--bf16`` (bf16 autocast of every forward
pass, the ancestry's and the students'; weights, optimizer and losses stay float32). Each model is then loaded from
the run's saved files and evaluated alone in float32 on the test images. Recorded: each run's training seconds
(``pool distill``'s own record ``train_s``: no loading, no evaluation) and their ratio, each model's top-1 in both
and the difference, the per-epoch losses, and the CPU's instruction sets (the result holds for CPUs with the same
ones only).

Runs are kept under ``--work`` and reused or continued as in distill_convergence.py.
Results: benchmarks/results/distill_bf16.json. This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from pathlib import Path

import torch

from lgp_edge.pool.auxiliary import read_distilled

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_convergence import (  # noqa: E402  (the recipe, the runs and their evaluation: one copy)
    ANCESTRY,
    DATA,
    add_run_args,
    distil,
    evaluate_run,
    start,
    train_config,
)
from make_demo_pool import check_results_path, repo_path, run_provenance, write_results  # noqa: E402  (the benchmarks' run record and writer)

provenance = functools.partial(run_provenance, "distill_bf16.py")
RUNS = ("ti6@5",)
PRECISIONS = ("float32", "bf16")


def run_dir(work: Path, models: tuple[str, ...], epochs: int, precision: str) -> Path:
    return work / f"{'+'.join(models)}-e{epochs}-{precision}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, RUNS, "distill-bf16", each=", made in each precision")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_bf16.json"),
                   help="results file (default benchmarks/results/distill_bf16.json)")
    s = start(p, argv, RUNS)
    args, rep, checkpoint, teacher, aspec, data, images = (s.args, s.reporter, s.checkpoint, s.teacher, s.aspec,
                                                           s.data, s.images)
    check_results_path(Path(args.out), __file__)  # before the run, not after it
    header = provenance(argv)
    results = []
    for models, epochs in s.runs:
        pair = {}
        for precision in PRECISIONS:
            out = run_dir(s.work, models, epochs, precision)
            cfg = train_config(epochs, args.steps or None, bf16=precision == "bf16")
            print(f"distilling {','.join(models)} for {epochs} epochs in {precision} into {out}", file=sys.stderr)
            status = distil(models, epochs, out, checkpoint, cfg, images, rep)
            rec = read_distilled(out)
            pair[precision] = {"dir": repo_path(out), "status": status, "when": rec["when"],
                               "train_s": rec["train_s"], "distill_wall_s": rec["wall_s"], "config": rec["config"],
                               "environment": rec.get("environment"),
                               "epoch_loss": [r["epoch_loss"] for r in rec["runs"]],
                               "top1": evaluate_run(out, models, teacher, aspec, data, images)}
        f32, b16 = pair["float32"], pair["bf16"]
        row = {"models": list(models), "epochs": epochs, **pair,
               "seconds_ratio_bf16_to_float32": round(b16["train_s"] / f32["train_s"], 3),
               "top1_change": {m: round(b16["top1"][m] - f32["top1"][m], 2) for m in f32["top1"]}}
        results.append(row)
        print(f"{','.join(models)} @ {epochs}: bf16 took {row['seconds_ratio_bf16_to_float32']:.2f}x the float32 "
              f"seconds; top-1 " + ", ".join(f"{m} {f32['top1'][m]:.2f} -> {b16['top1'][m]:.2f}" for m in f32["top1"]),
              file=sys.stderr)
    write_results(Path(args.out), {
        "benchmark": "benchmarks/distill_bf16.py", **header, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "ancestry": {"name": ANCESTRY, "checkpoint": repo_path(checkpoint), "top1": s.meta.get("top1")},
        "data": DATA, "test_images": images, "steps_per_epoch": args.steps or None,
        "recipe": "the replication's distillation (benchmarks/distill_convergence.py); bf16: --bf16, autocast of "
                  "every forward pass; evaluation in float32",
        "runs": results, "wall_s": round(time.time() - s.t0, 1)})
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
