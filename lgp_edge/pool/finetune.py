"""Fine-tuning the pool (METHOD.md §3): every step trains one descendant, drawn uniformly at random,
on ``0.5 * CE(y) + 0.5 * KL(ancestry || student, tau)``; all instances and stitches are shared, so each
step updates the pool. The draw is seeded by the step number, identical on every rank.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lgp_edge.data import check_data_name, open_data
from lgp_edge.errors import UsageError
from lgp_edge.models.stitch import INITS
from lgp_edge.pool.build import init_stitches, lstsq_images, matrices_from_tensors
from lgp_edge.pool.evaluate import DESCENDANTS
from lgp_edge.pool.pool import (
    LearngenePool,
    PoolManifest,
    load_pool,
    load_pool_ancestry,
    load_pool_transforms,
    save_pool,
)
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import content_hash
from lgp_edge.train import TrainConfig, fit, is_main, step_rng

log = logging.getLogger(__name__)

CKPT = "finetune.ckpt"


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """0.5 * CE + 0.5 * tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)) (DeiT/SN-Net's soft KD)."""
    kl = F.kl_div(F.log_softmax(student / tau, -1), F.log_softmax(teacher / tau, -1), reduction="batchmean",
                  log_target=True) * tau * tau
    return 0.5 * F.cross_entropy(student, y) + 0.5 * kl


class FinetuneObjective(nn.Module):
    """``forward(x, y, index)``: the KD loss of descendant ``index`` of the pool against the ancestry."""

    def __init__(self, pool: LearngenePool, teacher: nn.Module, tau: float = 1.0) -> None:
        super().__init__()
        self.pool = pool
        self.teacher = teacher.eval().requires_grad_(False)
        self.tau = tau

    def train(self, mode: bool = True) -> FinetuneObjective:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: int) -> torch.Tensor:
        with torch.no_grad():
            t = self.teacher(x)
        return kd_loss(self.pool(x, index), t, y, self.tau)


def descendant_sampler(seed: int, count: int):
    """step -> {"index": i}: one descendant uniformly at random, the same on every rank."""
    return lambda step: {"index": step_rng(seed, step).randrange(count)}


@dataclass(frozen=True)
class FinetuneRequest:
    pool: str  # pool directory (updated in place, atomically)
    data: str  # dataset name
    init: str | None = None  # re-initialise stitches before training (None = keep)
    tau: float = 1.0  # KD temperature
    resume: bool = False  # continue from POOL/finetune.ckpt
    lstsq_images: int = 100  # images for --init lstsq


def finetune_pool(req: FinetuneRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> PoolManifest:
    check_data_name(req.data)
    if req.init is not None and req.init not in INITS:
        raise UsageError(f"--init must be one of {', '.join(INITS)}")
    if not req.resume and (Path(req.pool) / CKPT / "state.json").is_file():
        raise UsageError(f"'{Path(req.pool) / CKPT}' holds an interrupted fine-tuning run: continue it with "
                         "--resume, or delete that directory to start over")
    pool, manifest = load_pool(req.pool)
    if "ancestry.safetensors" not in manifest.files:
        raise UsageError(f"pool '{req.pool}' holds no ancestry weights (ancestry.safetensors), which fine-tuning "
                         "distils from; rebuild it with 'lgp-edge pool build'")
    teacher = load_pool_ancestry(req.pool, manifest)
    a = manifest.spec.ancestry
    data = open_data(req.data, img_size=a.img_size, in_chans=a.in_chans, num_classes=a.num_classes)
    init = req.init
    if init is not None and not req.resume:
        matrices = None
        if init == "learned":
            if "transforms.safetensors" not in manifest.files:
                raise UsageError("this pool has no transformation matrices for --init learned; use --init lstsq")
            matrices = matrices_from_tensors(load_pool_transforms(req.pool, manifest),
                                             [i.name for i in manifest.spec.instances])
        images = lstsq_images(data, req.lstsq_images, cfg.seed) if init == "lstsq" else None
        init_stitches(pool, init, matrices=matrices, images=images)
    objective = FinetuneObjective(pool, teacher, req.tau)
    fingerprint = content_hash({"stage": "finetune", "pool": manifest.spec.pool_id, "cfg": cfg.identity(),
                                "init": init, "tau": req.tau, "data": req.data,
                                "files": {k: manifest.files.get(k) for k in ("weights.safetensors",
                                                                             "ancestry.safetensors")}})
    t0 = time.time()
    result = fit(objective, data.train, cfg, description="finetune", ckpt_dir=Path(req.pool) / CKPT,
                 resume=req.resume, fingerprint=fingerprint,
                 step_kwargs=descendant_sampler(cfg.seed, len(pool.descendants())), reporter=reporter)
    entry = {"stage": "finetune", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
             "wall_s": round(time.time() - t0, 1), "data": req.data, "config": cfg.to_dict(), "tau": req.tau,
             "init": init or manifest.stitch_init, "epoch_loss": list(result.epoch_loss),
             "resumed_from_step": result.resumed_from}
    manifest = manifest.replace(stage="finetuned", stitch_init=init or manifest.stitch_init,
                                history=manifest.history + (entry,), descendants=())
    if is_main():
        # the checkpoint is done with (the pool is the result) and the old evaluation is stale
        manifest = save_pool(req.pool, pool, manifest, keep_from=req.pool, drop=(CKPT, DESCENDANTS))
    return manifest
