"""Train the bundled demo pool from the shipped ancestry in one resumable command, then ship it.

    python benchmarks/build_demo_pool.py [--finetune-epochs 14] [--work DIR] [--out DIR]

The recipe is the paper replication's depth-6 Learngene Pool with its default stitch init, fine-tuned for
longer (two fine-tuning epochs shared by 18 descendants are the replication's common budget, too few to
ship):

1. ``pool build``: Ti6/B6 start as a weight selection of the ancestry and are distilled from it (B 3 epochs,
   Ti 10), then ``lstsq-kd`` stitches; the instances' top-1 alone is measured right after;
2. ``pool finetune`` with ``--anchors`` for ``--finetune-epochs`` in one cosine cycle, the instances at the full
   learning rate (``--instance-lr-scale 1``: with the anchor steps they keep their distilled accuracy anyway);
3. ``pool eval`` on every test image;
4. ``benchmarks/make_demo_pool.py``: fp16 copy into the package, re-evaluated, provenance in pool.json.

Each step leaves its result in ``--work`` (default ``benchmarks/.cache/demo-pool``); run the same command
again after an interruption and it continues (the distillation and fine-tuning resume from their
checkpoints). On Fashion-MNIST its stages took 63 min on the 2 cores of an Intel Xeon (fine-tuning 45 min of it)
and 67 min on an AMD EPYC (fine-tuning 52 min): the shipped pool.json's ``timing_s`` and the previous one's; the
tests run it on a tiny ancestry.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
log = logging.getLogger("build_demo_pool")

INSTANCES = "instances_after_distill.json"  # written beside the pool by step 1


def build(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from make_demo_pool import git_rev, make_demo_pool, repo_path, repo_paths_in

    from lgp_edge.commands.train_args import train_flags
    from lgp_edge.errors import UsageError
    from lgp_edge.fileio import sha256_file, write_text_atomic
    from lgp_edge.models.ancestry import default_checkpoint, read_ancestry_dir
    from lgp_edge.outdir import check_output_dir
    from lgp_edge.pool.build import BuildRequest, build_pool
    from lgp_edge.pool.distill import interrupted
    from lgp_edge.pool.evaluate import evaluate_pool, instance_top1
    from lgp_edge.pool.finetune import CKPT, STITCH_CKPT, FinetuneRequest, finetune_pool
    from lgp_edge.pool.pool import read_manifest
    from lgp_edge.profiling.host import cpu_facts, cpu_model
    from lgp_edge.progress import stderr_reporter
    from lgp_edge.train import TrainConfig

    rep = stderr_reporter(args.quiet)
    check_output_dir(args.out, True, kind="pool")  # the demo pool it replaces, never anything else
    if args.ancestry_checkpoint is not None and not Path(args.ancestry_checkpoint).exists():
        raise UsageError(f"--ancestry-checkpoint {args.ancestry_checkpoint}: no such file or folder")
    anc = default_checkpoint(args.ancestry, args.ancestry_checkpoint)
    if anc is None:
        raise UsageError(f"no trained weights ship for '{args.ancestry}': pass --ancestry-checkpoint DIR")
    anc_file = Path(anc) / "ancestry.safetensors" if Path(anc).is_dir() else Path(anc)
    anc_meta = read_ancestry_dir(anc) or {}
    work = Path(args.work)
    pool_dir = work / "pool"
    steps = args.steps_per_epoch or None
    dcfg = TrainConfig(epochs=args.distill_epochs, batch_size=256, lr=1e-3, warmup_epochs=0.25, seed=0,
                       max_steps_per_epoch=steps)
    fcfg = TrainConfig(epochs=args.finetune_epochs, batch_size=256, lr=5e-4, warmup_epochs=0.1, seed=0,
                       max_steps_per_epoch=steps)
    widths = (("ti", args.ti_epochs),)
    key = {"ancestry": args.ancestry, "ancestry_sha256": sha256_file(anc_file), "data": args.data,
           "distill": dcfg.identity(), "ti_epochs": args.ti_epochs, "stitch_steps": args.stitch_steps,
           "finetune": fcfg.identity(),
           "instance_lr_scale": args.instance_lr_scale, "eval_images": args.eval_images}
    from lgp_edge.datasets import check_data_name

    check_data_name(args.data)  # before settings.json: a typo must not claim the work directory
    settings = work / "settings.json"
    if settings.is_file() and json.loads(settings.read_text()) != json.loads(json.dumps(key)):
        raise UsageError(f"'{work}' holds a demo-pool build with other settings or another ancestry; pass another "
                         "--work, or delete that directory to start over")
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings, json.dumps(key, indent=1) + "\n")
    t0 = time.time()
    timing: dict[str, float] = json.loads((work / "timing.json").read_text()) if (work / "timing.json").is_file() \
        else {}

    def stage() -> str | None:
        return read_manifest(pool_dir).stage if (pool_dir / "pool.json").is_file() else None

    # 1. distillation + lstsq-kd stitches
    if stage() is None or not (work / INSTANCES).is_file():
        if stage() is None:
            log.info("step 1/4: distil Ti6/B6 from %s", anc)
            build_pool(BuildRequest(ancestry=args.ancestry, checkpoint=str(anc), data=args.data, out=str(pool_dir),
                                    depth=6, init="lstsq-kd", aux_init="ancestry", force=True,
                                    resume=interrupted(pool_dir), width_epochs=widths,
                                    stitch_steps=args.stitch_steps), dcfg, rep)
        t = time.time()
        write_text_atomic(work / INSTANCES,
                          json.dumps(instance_top1(pool_dir, args.data, max_images=args.eval_images)))
        # the build's recorded seconds count the training seconds of processes an interruption ended, too
        timing["build"] = round(recorded_s(pool_dir, "distill") + time.time() - t, 1)
        write_text_atomic(work / "timing.json", json.dumps(timing))
    # 2. fine-tuning (continues from its checkpoint after an interruption)
    if stage() != "finetuned":
        log.info("step 2/4: fine-tune for %d epochs", fcfg.epochs)
        resume = any((pool_dir / c / "state.json").is_file() for c in (CKPT, STITCH_CKPT))
        finetune_pool(FinetuneRequest(pool=str(pool_dir), data=args.data, resume=resume,
                                      instance_lr_scale=args.instance_lr_scale, anchors=True), fcfg, rep)
        timing["finetune"] = recorded_s(pool_dir, "finetune")
    write_text_atomic(work / "timing.json", json.dumps(timing))
    # 3. evaluation of the fp32 pool (step 4 re-evaluates the shipped fp16 weights)
    log.info("step 3/4: evaluate")
    evaluate_pool(pool_dir, args.data, max_images=args.eval_images, reporter=rep)
    # 4. ship
    anc_shown, pool_shown = repo_path(anc), repo_path(pool_dir)  # the record names no machine's directories
    anc_flag = f"--ancestry-checkpoint {anc_shown}"
    eval_flag = f" --max-images {args.eval_images}" if args.eval_images else ""
    commands = [
        f"lgp-edge pool build --ancestry {args.ancestry} {anc_flag} --data {args.data} --out {pool_shown} --depth 6 "
        f"--init lstsq-kd --stitch-steps {args.stitch_steps} --aux-init ancestry --width-epochs ti={args.ti_epochs} "
        + train_flags(dcfg),
        f"lgp-edge pool finetune {pool_shown} --data {args.data} --anchors --instance-lr-scale "
        f"{args.instance_lr_scale} " + train_flags(fcfg),
        f"lgp-edge pool eval {pool_shown} --data {args.data}{eval_flag}",
        "python benchmarks/build_demo_pool.py " + repo_paths_in(shlex.join(args.argv))]
    prov = {"made_by": "python benchmarks/build_demo_pool.py", "commands": commands, "code_version": git_rev(),
            "ancestry": {"name": args.ancestry, "path": anc_shown, "sha256": key["ancestry_sha256"],
                         **{k: anc_meta.get(k) for k in ("top1", "val_images", "config", "initial_checkpoint")
                            if k in anc_meta}},
            "instances_after_distill": json.loads((work / INSTANCES).read_text()),
            "settings": {k: v for k, v in key.items() if k != "ancestry_sha256"}, "timing_s": timing,
            "cpu": cpu_model(), "cpu_facts": cpu_facts(), "torch_threads": torch.get_num_threads()}
    log.info("step 4/4: ship to %s", args.out)
    shipped = make_demo_pool(pool_dir, Path(args.out), args.data, prov, eval_images=args.eval_images)
    log.info("done in %.0f s", time.time() - t0)
    return shipped


def recorded_s(pool: Path, stage: str) -> float:
    """The seconds that ``pool``'s history records for its last ``stage`` (``distill``: the whole build step,
    ``finetune``), training seconds of interrupted processes included."""
    from lgp_edge.pool.pool import read_manifest

    entry = read_manifest(pool).last(stage)
    if entry is None:
        raise ValueError(f"{pool}: its history records no '{stage}' stage")
    return float(entry["wall_s"])


def summary(out: Path) -> dict[str, Any]:
    """The shipped pool's numbers against the demo-pool goals."""
    from lgp_edge.pool.pool import read_manifest

    m = read_manifest(out)
    rows = {r.key: r.top1 for r in m.descendants}
    after = m.provenance.get("instances_after_distill", {})
    return {"descendants": len(rows), "min_top1": min(rows.values()), "max_top1": max(rows.values()),
            "instances_after_distill": after, "instances_now": {k: rows[k] for k in after if k in rows},
            "instances_held": all(rows.get(k, -1.0) >= v for k, v in after.items())}


def main(argv: list[str] | None = None) -> int:
    from lgp_edge.pool.pool import demo_pool_dir

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ancestry", default="lgp_vit_fmnist", help="registered ancestry variant")
    p.add_argument("--ancestry-checkpoint", default=None, help="ancestry weights (default: the shipped ones)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".cache" / "demo-pool"),
                   help="the build's own directory; rerun with the same one to continue")
    p.add_argument("--out", default=str(demo_pool_dir()), help="where the demo pool goes (default: the package's)")
    p.add_argument("--distill-epochs", type=int, default=3, help="B's distillation epochs")
    p.add_argument("--ti-epochs", type=int, default=10, help="Ti's distillation epochs")
    p.add_argument("--stitch-steps", type=int, default=300,
                   help="steps of lstsq-kd's stitch-only distillation (the replication's default)")
    p.add_argument("--finetune-epochs", type=int, default=14)
    p.add_argument("--instance-lr-scale", type=float, default=1.0,
                   help="learning-rate factor of the instances' own weights while fine-tuning")
    p.add_argument("--steps-per-epoch", type=int, default=0, help="cap steps per epoch (0 = no cap; smoke runs)")
    p.add_argument("--eval-images", type=int, default=None, help="test images per evaluation (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.argv = argv
    for name in ("distill_epochs", "ti_epochs", "finetune_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.stitch_steps < 0:
        p.error("--stitch-steps must be >= 0")
    if not 0.0 <= args.instance_lr_scale <= 10.0:
        p.error("--instance-lr-scale must be in [0, 10]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from lgp_edge.errors import LgpEdgeError

    try:
        build(args)
    except LgpEdgeError as exc:  # bad input: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary(Path(args.out)), indent=1))
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
