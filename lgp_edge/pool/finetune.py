"""Fine-tuning the pool (docs/METHOD.md §3): every step trains one descendant, drawn uniformly at random,
on ``0.5 * CE(y) + 0.5 * KL(ancestry || student, tau)``; all instances and stitches are shared, so each
step updates the pool. The draw is seeded by the step number, identical on every rank.

Beyond the paper's recipe, ``sampling="flops-bucket"`` draws a FLOPs group first, then a descendant in it
(SN-Netv2), and three options keep the shared blocks from being wrecked by the stitched
descendants (each recorded in the pool's history): ``stitch_epochs`` of stitch-only training first
(instances frozen), ``instance_lr_scale`` for the instances' learning rate in the joint phase, and
``anchors``: the instance models alone trained in every step beside the drawn descendant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lgp_edge.datasets import check_data_name, open_for_training_pool, refuse_synthetic_for_training
from lgp_edge.errors import UsageError
from lgp_edge.models.plan import descendant_flops
from lgp_edge.outdir import claim_in_place
from lgp_edge.pool.evaluate import DESCENDANTS
from lgp_edge.pool.kd import SAMPLINGS, FinetuneObjective, descendant_sampler, flops_bucket_sampler
from lgp_edge.pool.pool import (
    PoolManifest,
    carried_files,
    load_pool,
    load_pool_ancestry,
    read_manifest,
    save_pool,
)
from lgp_edge.pool.restitch import apply_init
from lgp_edge.pool.stitch_init import INITS, tune_stitches
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import content_hash
from lgp_edge.train import TrainConfig, environment, fit, is_main, recorded_progress

log = logging.getLogger(__name__)

CKPT = "finetune.ckpt"
STITCH_CKPT = "finetune-stitch.ckpt"


@dataclass(frozen=True)
class FinetuneRequest:
    pool: str  # pool directory (updated in place, atomically)
    data: str  # dataset name
    init: str | None = None  # re-initialise stitches before training (None = keep)
    tau: float = 1.0  # KD temperature
    resume: bool = False  # continue from POOL/finetune.ckpt (and POOL/finetune-stitch.ckpt)
    lstsq_images: int = 100  # images for --init lstsq
    stitch_epochs: int = 0  # stitch-only epochs (instances frozen) before the joint phase
    instance_lr_scale: float = 1.0  # instances' learning rate / stitches' in the joint phase
    anchors: bool = False  # train the instance models alone in every step too
    sampling: str = "uniform"  # uniform | flops-bucket: how each step draws its descendant


def _check(req: FinetuneRequest) -> None:
    # a path that is no pool is refused as such before it is claimed, synthetic images before its weights load
    refuse_synthetic_for_training(req.data, read_manifest(req.pool), "pool finetune")
    claim_in_place(req.pool)  # the pool is replaced in place: one writer at a time, never the current directory
    check_data_name(req.data)
    if req.init is not None and req.init not in INITS:
        raise UsageError(f"--init must be one of {', '.join(INITS)}")
    if req.sampling not in SAMPLINGS:
        raise UsageError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {req.sampling!r}")
    if req.stitch_epochs < 0:
        raise UsageError(f"--stitch-epochs must be 0 or more, got {req.stitch_epochs}")
    if not (0.0 <= req.instance_lr_scale <= 10.0):
        raise UsageError(f"--instance-lr-scale must be in [0, 10], got {req.instance_lr_scale}")
    for name in (CKPT, STITCH_CKPT):
        if not req.resume and (Path(req.pool) / name / "state.json").is_file():
            raise UsageError(f"'{Path(req.pool) / name}' holds an interrupted fine-tuning run: continue it with "
                             "--resume, or delete that directory to start over")


def finetune_pool(req: FinetuneRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> PoolManifest:
    _check(req)
    pool, manifest = load_pool(req.pool)
    if "ancestry.safetensors" not in manifest.files:
        raise UsageError(f"pool '{req.pool}' holds no ancestry weights (ancestry.safetensors), which fine-tuning "
                         "distils from; rebuild it with 'lgp-edge pool build'")
    teacher = load_pool_ancestry(req.pool, manifest)
    carried_files(req.pool, exclude=("ancestry.safetensors",))  # what the new pool keeps: now, not after training
    data = open_for_training_pool(req.data, manifest, "pool finetune")  # other classes: wrong labels, silently
    init = req.init
    stitch_epochs = max(req.stitch_epochs, 1) if init == "lstsq-kd" else req.stitch_epochs
    resuming_stitch = req.resume and (Path(req.pool) / STITCH_CKPT / "state.json").is_file()
    resuming_joint = req.resume and (Path(req.pool) / CKPT / "state.json").is_file()
    if req.resume and not (resuming_stitch or resuming_joint):
        raise UsageError(f"no interrupted fine-tuning run in '{req.pool}' to resume; run without --resume")
    if init is not None and not (resuming_stitch or resuming_joint):
        apply_init(pool, manifest, req.pool, init, data, lstsq_images_n=req.lstsq_images, seed=cfg.seed)
    base = {"pool": manifest.spec.pool_id, "init": init, "tau": req.tau, "data": req.data,
            "files": {k: manifest.files.get(k) for k in ("weights.safetensors", "ancestry.safetensors")}}
    t0 = time.time()
    stitch_loss: list[float] = []
    stitch_earlier_s, stitch_resumed = 0.0, None  # the stitch phase's seconds in earlier processes, its resume
    scfg = cfg.with_epochs(stitch_epochs) if stitch_epochs else None
    stitch_fp = content_hash({"stage": "finetune-stitch", "cfg": scfg.identity(), **base}) if scfg else ""
    if stitch_epochs and not resuming_joint:
        stitch = tune_stitches(pool, teacher, data.train, scfg, tau=req.tau, reporter=reporter,
                               ckpt_dir=Path(req.pool) / STITCH_CKPT, resume=resuming_stitch, fingerprint=stitch_fp)
        stitch_loss, stitch_earlier_s, stitch_resumed = list(stitch.epoch_loss), stitch.earlier_wall_s, \
            stitch.resumed_from
    elif stitch_epochs and (Path(req.pool) / STITCH_CKPT / "state.json").is_file():
        # resuming the joint phase: the stitch phase finished in an earlier process, its checkpoint says how
        done = recorded_progress(Path(req.pool) / STITCH_CKPT, stitch_fp)
        if done is not None:
            stitch_loss, stitch_earlier_s = list(done[0]), done[1]
    objective = FinetuneObjective(pool, teacher, req.tau, anchors=req.anchors,
                                  instance_lr_scale=req.instance_lr_scale)
    recipe = {"stitch_epochs": stitch_epochs, "instance_lr_scale": req.instance_lr_scale, "anchors": req.anchors}
    if req.sampling != "uniform":  # (uniform runs keep the fingerprint they had before sampling was an option)
        recipe["sampling"] = req.sampling
    fingerprint = content_hash({"stage": "finetune", "cfg": cfg.identity(), **recipe, **base})
    descendants = pool.descendants()
    if req.sampling == "flops-bucket":
        sampler = flops_bucket_sampler(cfg.seed, [descendant_flops(pool.spec, d) for d in descendants])
    else:
        sampler = descendant_sampler(cfg.seed, len(descendants))
    result = fit(objective, data.train, cfg, description="finetune", ckpt_dir=Path(req.pool) / CKPT,
                 resume=resuming_joint, fingerprint=fingerprint, step_kwargs=sampler, reporter=reporter)
    entry = {"stage": "finetune", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
             "wall_s": round(time.time() - t0 + result.earlier_wall_s + stitch_earlier_s, 1), "data": req.data,
             "config": cfg.to_dict(), "environment": environment(),
             "tau": req.tau,
             "init": init or manifest.stitch_init, "epoch_loss": list(result.epoch_loss),
             "stitch_epochs": stitch_epochs, "stitch_epoch_loss": stitch_loss,
             "stitch_warmup_epochs": scfg.warmup_epochs if scfg else None,  # the phase's own, as run
             "instance_lr_scale": req.instance_lr_scale, "anchors": req.anchors, "sampling": req.sampling,
             "resumed_from_step": result.resumed_from, "stitch_resumed_from_step": stitch_resumed}
    manifest = manifest.replace(stage="finetuned", stitch_init=init or manifest.stitch_init,
                                history=manifest.history + (entry,), descendants=())
    if is_main():
        # the checkpoints are done with (the pool is the result) and the old evaluation is stale
        manifest = save_pool(req.pool, pool, manifest, keep_from=req.pool, drop=(CKPT, STITCH_CKPT, DESCENDANTS))
    return manifest
