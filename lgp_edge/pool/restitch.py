"""``pool stitch``: re-initialise a pool's stitch layers in place with one of the inits, and measure them.

Used to compare inits on one distilled pool (the paper's ``learned``, SN-Net's ``lstsq``, ``lstsq-kd``): each
run records the init's settings and its stitch R^2 on held-out validation images in the pool's history and
drops the stale evaluation, so ``pool eval`` next gives the stitched top-1 before fine-tuning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from lgp_edge.datasets import check_data_name, open_for_training_pool, refuse_synthetic_for_training
from lgp_edge.errors import UsageError
from lgp_edge.outdir import claim_in_place
from lgp_edge.pool.evaluate import DESCENDANTS
from lgp_edge.pool.pool import (
    PoolManifest,
    carried_files,
    load_pool,
    load_pool_ancestry,
    load_pool_transforms,
    read_manifest,
    save_pool,
)
from lgp_edge.pool.stitch_init import (
    INITS,
    fit_image_count,
    held_out_images,
    init_stitches,
    lstsq_images,
    matrices_from_tensors,
    r2_summary,
    stitch_config,
    tune_stitches,
)
from lgp_edge.progress import NULL, Reporter
from lgp_edge.train import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestitchRequest:
    pool: str  # pool directory (updated in place, atomically)
    data: str  # dataset: training images for lstsq / lstsq-kd, validation images for R^2
    init: str  # learned | lstsq | lstsq-kd
    lstsq_images: int = 100  # images for lstsq (lstsq-kd: at least LSTSQ_KD_IMAGES)
    stitch_steps: int = 300  # lstsq-kd: stitch-only distillation steps
    stitch_lr: float = 1e-3  # lstsq-kd: their peak learning rate
    r2_images: int = 500  # validation images for the R^2 report


def apply_init(pool, manifest: PoolManifest, pool_dir: str, init: str, data, *, lstsq_images_n: int,
               seed: int) -> int | None:
    """Initialise ``pool``'s stitches with ``init`` (the least-squares step only, for lstsq-kd); returns how many
    training images the fit used (None for learned)."""
    matrices = None
    if init == "learned":
        if "transforms.safetensors" not in manifest.files:
            raise UsageError("this pool has no transformation matrices for --init learned; use --init lstsq")
        matrices = matrices_from_tensors(load_pool_transforms(pool_dir, manifest),
                                         [i.name for i in manifest.spec.instances])
    n = fit_image_count(init, lstsq_images_n)
    images = lstsq_images(data, n, seed) if n else None
    init_stitches(pool, init, matrices=matrices, images=images)
    return None if images is None else int(images.shape[0])


def restitch_pool(req: RestitchRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> PoolManifest:
    check_data_name(req.data)
    if req.init not in INITS:
        raise UsageError(f"--init must be one of {', '.join(INITS)}")
    if req.lstsq_images < 1 or req.stitch_steps < 0 or req.r2_images < 1 or not (0 < req.stitch_lr < 1):
        raise UsageError("--lstsq-images and --r2-images must be >= 1, --stitch-steps >= 0, --stitch-lr in (0, 1)")
    # a path that is no pool is refused as such before it is claimed, synthetic images before its weights load
    refuse_synthetic_for_training(req.data, read_manifest(req.pool), "pool stitch")
    claim_in_place(req.pool)  # the pool is replaced in place: one writer at a time, never the current directory
    pool, manifest = load_pool(req.pool)
    carried_files(req.pool)  # the files the new pool keeps are checked now, not after the fit
    data = open_for_training_pool(req.data, manifest, "pool stitch")  # lstsq-kd: against the logits, its classes
    t0 = time.time()
    used = apply_init(pool, manifest, req.pool, req.init, data, lstsq_images_n=req.lstsq_images, seed=cfg.seed)
    entry: dict = {"stage": "stitch-init", "init": req.init, "data": data.info.name}
    if used is not None:
        entry["images"] = used
    if req.init == "lstsq-kd" and req.stitch_steps:
        if "ancestry.safetensors" not in manifest.files:
            raise UsageError(f"pool '{req.pool}' holds no ancestry weights, which lstsq-kd distils from")
        scfg = stitch_config(cfg, req.stitch_steps, req.stitch_lr, len(data.train))
        tuned = tune_stitches(pool, load_pool_ancestry(req.pool, manifest), data.train, scfg, reporter=reporter)
        entry.update(stitch_steps=tuned.steps, config=scfg.to_dict(), epoch_loss=list(tuned.epoch_loss))
    entry.update(r2_summary(pool, held_out_images(data, req.r2_images)), wall_s=round(time.time() - t0, 1))
    log.info("stitch init %s: mean R^2 %.3f on %d validation images", req.init, entry["r2_mean"],
             entry["r2_images"])
    stage = "restitched" if manifest.stage in ("finetuned", "restitched") else manifest.stage
    manifest = manifest.replace(stitch_init=req.init, stage=stage, history=manifest.history + (entry,),
                                descendants=())
    return save_pool(req.pool, pool, manifest, keep_from=req.pool, drop=(DESCENDANTS,))
