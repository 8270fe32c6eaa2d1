"""Are the auxiliary models converged at the replication's distillation budgets? The same models, distilled longer.

    python benchmarks/distill_convergence.py     # Ti6, Ti9, Ti12 30 epochs, S12 10 (about 75 min, 2 AMD EPYC cores)
    python benchmarks/distill_convergence.py --run ti6@1 --steps 3 --images 200 \\
        --work /tmp/conv --out /tmp/conv.json                                          # a smoke run

benchmarks/paper_replication.py distils the Ti models (Ti6, Ti9 and SN-Net's Ti12 anchor) for 10 epochs and the
B and S models for 3 (its ``distill_width_epochs`` / ``distill_epochs``), and every stitched descendant then is
about as accurate as the model in its front (PAPER_REPLICATION_NOTES.md). Here each ``--run MODELS@EPOCHS`` is one
``lgp-edge pool distill`` run with the replication's recipe (the shipped ancestry, ``--aux-init ancestry``, AdamW
lr 1e-3, warm-up 0.25 epoch, cosine, batch 256, seed 0) and a longer budget; each model is then loaded from the
run's saved files and evaluated alone on the test images, beside its top-1 right after distillation in the
replication's results file (``--replication``, recorded with its sha256) and the number of epochs it had there.
The per-epoch distillation loss of every run is recorded too.

A run's output is kept under ``--work``: a finished one (``distilled.json`` with the same models, epochs and
recipe) is reused and said so, an interrupted one is continued (``pool distill --resume``).
Results: benchmarks/results/distill_convergence.json, with the run's code version, date, command and CPU.
This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgp_edge.datasets import open_for_ancestry
from lgp_edge.fileio import sha256_file
from lgp_edge.models.ancestry import create_ancestry, default_checkpoint, read_ancestry_dir
from lgp_edge.models.instances import create_auxiliary
from lgp_edge.pool.auxiliary import (
    RECORD,
    DistillRequest,
    auxiliary_instance,
    distill_auxiliary,
    load_distilled,
    read_distilled,
    students_top1,
)
from lgp_edge.progress import Reporter, stderr_reporter
from lgp_edge.train import TrainConfig, state_digest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import check_results_path, repo_path, run_provenance, write_results  # noqa: E402  (the benchmarks' run record and writer)

provenance = functools.partial(run_provenance, "distill_convergence.py")

ANCESTRY = "lgp_vit_fmnist"
DATA = "fashion-mnist"
RUNS = ("ti6,ti9,ti12@30", "s12@10")
REPLICATION = ROOT / "benchmarks" / "results" / "paper_replication.json"


def parse_run(text: str) -> tuple[tuple[str, ...], int]:
    """``"ti6,ti9@30"`` -> (("ti6", "ti9"), 30)."""
    models, _, epochs = text.partition("@")
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    if not names or not epochs.isdigit() or int(epochs) < 1:
        raise argparse.ArgumentTypeError(f"--run expects MODELS@EPOCHS, e.g. ti6,ti9@30; got '{text}'")
    return names, int(epochs)


def train_config(epochs: int, steps: int | None, bf16: bool = False) -> TrainConfig:
    """The replication's distillation recipe (its distill_lr, distill_warmup, batch size and seed)."""
    return TrainConfig(epochs=epochs, batch_size=256, lr=1e-3, warmup_epochs=0.25, seed=0,
                       max_steps_per_epoch=steps, bf16=bf16)


def replication_record(path: Path, ancestry_depth: int) -> dict:
    """The replication's top-1 of each distilled model alone right after distillation and the epochs it had (SN-Net's
    B anchor is the ancestry itself, not distilled, and left out)."""
    r = json.loads(path.read_text())
    s = r["settings"]
    top1: dict[str, float] = {}
    for method in r["methods"].values():
        for key, value in (method.get("instances_after_distill") or {}).items():
            top1[key.split(".")[0]] = value
    widths = s.get("distill_width_epochs") or {}
    epochs = {m: widths.get(m.rstrip("0123456789"), s["distill_epochs"]) for m in top1 if m != f"b{ancestry_depth}"}
    return {"file": repo_path(path), "sha256": sha256_file(path), "date": r["date"], "code_version": r["code_version"],
            "top1_after_distill": {m: v for m, v in top1.items() if m in epochs}, "epochs": epochs,
            "eval_images": s.get("eval_images")}


def run_dir(work: Path, models: tuple[str, ...], epochs: int) -> Path:
    return work / f"{'+'.join(models)}-e{epochs}"


def distil(models: tuple[str, ...], epochs: int, out: Path, checkpoint: str, cfg: TrainConfig, images: int,
           rep: Reporter) -> str:
    """One ``pool distill`` run into ``out``: reused when finished with these settings, else continued or started.
    Returns what happened: "reused", "resumed" or "computed"."""
    if (out / RECORD).is_file():
        rec = read_distilled(out)
        same = (sorted(m["name"] for m in rec["models"]) == sorted(models)
                and set(rec["epochs"].values()) == {epochs} and rec["config"] == cfg.to_dict()
                and rec["aux_init"] == "ancestry" and rec["data"] == DATA)
        if not same:
            raise SystemExit(f"distill_convergence.py: '{out}' holds another run ({rec['epochs']}, {rec['config']}); "
                             "pass another --work or remove it")
        return "reused"
    resume = out.is_dir() and any(out.iterdir())
    distill_auxiliary(DistillRequest(ancestry=ANCESTRY, checkpoint=checkpoint, data=DATA, out=str(out),
                                     models=models, resume=resume, eval_images=images), cfg, rep)
    return "resumed" if resume else "computed"


def evaluate_run(out: Path, models: tuple[str, ...], teacher, aspec, data, images: int | None) -> dict[str, float]:
    """Each model of the run at ``out`` loaded from its saved files (hashes checked) and evaluated alone."""
    instances = tuple(auxiliary_instance(aspec, m) for m in models)
    loaded = load_distilled((str(out),), instances, ancestry=aspec, teacher=teacher, data=DATA, aux_init="ancestry",
                            alpha=0.1, temperature=1.0)
    models = nn.ModuleDict()
    for inst in instances:
        models[inst.name] = create_auxiliary(aspec, inst)
        models[inst.name].load_state_dict(loaded.states[inst.name])
    top1, _ = students_top1(models, data.val, max_images=images)
    return {name: round(v, 2) for name, v in top1.items()}


def add_run_args(p: argparse.ArgumentParser, runs: tuple[str, ...], work: str, each: str = "") -> None:
    """The options this script shares with distill_bf16.py: the runs, the smoke caps, the work directory."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--run", action="append", type=parse_run, metavar="MODELS@EPOCHS",
                   help=f"one distillation run{each} (repeatable; default {' '.join(runs)})")
    p.add_argument("--steps", type=int, default=0, help="cap steps per epoch (0: whole epochs; smoke runs)")
    p.add_argument("--images", type=int, default=0, help="test images for top-1 (0: the whole test set)")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".cache" / work),
                   help="where the runs' outputs are kept (a finished run is reused, an interrupted one continued)")


@dataclass(frozen=True)
class Setup:
    """What this script and distill_bf16.py start from: their arguments and runs, the shipped ancestry, the data."""

    args: argparse.Namespace
    runs: list[tuple[tuple[str, ...], int]]
    reporter: Reporter
    t0: float
    checkpoint: str
    teacher: nn.Module
    aspec: Any
    meta: dict
    data: Any
    images: int  # test images to evaluate on
    work: Path


def start(p: argparse.ArgumentParser, argv: list[str] | None, runs: tuple[str, ...]) -> Setup:
    """Parse ``argv`` (bad values: one line, exit 2), then load the shipped ancestry and the data."""
    args = p.parse_args(argv)
    if args.out:
        check_results_path(Path(args.out), __file__)  # before the run, not after it
    chosen = args.run or [parse_run(r) for r in runs]
    if args.steps < 0 or args.images < 0:
        p.error("--steps and --images must be >= 0")
    t0 = time.time()
    checkpoint = default_checkpoint(ANCESTRY, None)
    teacher, aspec = create_ancestry(ANCESTRY, checkpoint=checkpoint)
    meta = read_ancestry_dir(checkpoint) or {}
    data = open_for_ancestry(DATA, teacher, aspec, meta)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    return Setup(args, chosen, stderr_reporter(args.quiet), t0, checkpoint, teacher, aspec, meta, data,
                 min(args.images, len(data.val)) if args.images else len(data.val), work)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, RUNS, "distill-convergence")
    p.add_argument("--replication", default=str(REPLICATION), help="the replication results file to compare with")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_convergence.json"),
                   help="results file (default benchmarks/results/distill_convergence.json)")
    s = start(p, argv, RUNS)
    args, rep, checkpoint, teacher, aspec, data, images = (s.args, s.reporter, s.checkpoint, s.teacher, s.aspec,
                                                           s.data, s.images)
    header = provenance(argv)
    replication = replication_record(Path(args.replication), aspec.depth)
    results, models_out = [], {}
    for models, epochs in s.runs:
        out = run_dir(s.work, models, epochs)
        cfg = train_config(epochs, args.steps or None)
        r0 = time.time()
        print(f"distilling {','.join(models)} for {epochs} epochs into {out}", file=sys.stderr)
        status = distil(models, epochs, out, checkpoint, cfg, images, rep)
        rec = read_distilled(out)
        top1 = evaluate_run(out, models, teacher, aspec, data, images)
        recorded = rec.get("top1") or {}  # what pool distill measured itself (runs made before it recorded: none)
        if recorded and (rec.get("top1_images") != images
                         or any(abs(recorded[m] - v) > 0.006 for m, v in top1.items())):
            raise SystemExit(f"distill_convergence.py: '{out}' records top-1 {recorded} on {rec.get('top1_images')} "
                             f"images, the saved models measure {top1} on {images}")
        results.append({"models": list(models), "epochs": epochs, "dir": repo_path(out), "status": status,
                        "when": rec["when"], "distill_wall_s": rec["wall_s"],
                        "this_invocation_s": round(time.time() - r0, 1),
                        "config": rec["config"], "environment": rec.get("environment"),
                        "recorded_top1": recorded or None,
                        "epoch_loss": [r["epoch_loss"] for r in rec["runs"]],
                        "top1": top1})
        for m, v in top1.items():
            before = replication["top1_after_distill"].get(m)
            models_out[m] = {"epochs": epochs, "top1": v, "replication_epochs": replication["epochs"].get(m),
                             "replication_top1": before,
                             "gain": None if before is None else round(v - before, 2)}
            print(f"{m}: {v:.2f}% after {epochs} epochs" + ("" if before is None else
                  f" (replication: {before:.2f}% after {replication['epochs'][m]}; {v - before:+.2f})"),
                  file=sys.stderr)
    write_results(Path(args.out), {
        "benchmark": "benchmarks/distill_convergence.py", **header, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "ancestry": {"name": ANCESTRY, "checkpoint": repo_path(checkpoint), "top1": s.meta.get("top1"),
                     "digest": state_digest(teacher)},
        "data": DATA, "test_images": images, "steps_per_epoch": args.steps or None,
        "recipe": "the replication's distillation: pool distill --aux-init ancestry, AdamW lr 1e-3 (wd 0.05, none on "
                  "pos_embed, cls_token, norms, biases), warm-up 0.25 epoch, cosine, batch 256, seed 0",
        "replication": replication, "runs": results, "models": models_out, "wall_s": round(time.time() - s.t0, 1)})
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
