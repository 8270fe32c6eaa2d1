"""``ancestry train``: supervised training of the ancestry ViT (no pretrained weights exist offline)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lgp_edge.datasets import check_data_name, data_channels, open_data
from lgp_edge.errors import DataError, UsageError
from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.outdir import atomic_dir, check_output_dir, check_resume_dir, replace_dir
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import content_hash
from lgp_edge.train import TrainConfig, evaluate, fit, is_main, resume_after

log = logging.getLogger(__name__)


class SupervisedObjective(nn.Module):
    """Cross-entropy with label smoothing; ``forward(x, y)`` returns the loss."""

    def __init__(self, model: nn.Module, smoothing: float = 0.1) -> None:
        super().__init__()
        self.model, self.smoothing = model, smoothing

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y, label_smoothing=self.smoothing)


@dataclass(frozen=True)
class AncestryRequest:
    name: str  # timm name
    data: str  # dataset
    out: str  # output directory: ancestry.safetensors + ancestry.json
    force: bool = False
    resume: bool = False
    smoothing: float = 0.1
    initial_checkpoint: str | None = None  # warm start: weights of an earlier run of the same variant (timm's name)


def train_ancestry(req: AncestryRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    from lgp_edge.fileio import save_safetensors

    if req.resume:
        check_resume_dir(req.out)
    else:
        check_output_dir(req.out, req.force, kind="ancestry")
    check_data_name(req.data)
    torch.manual_seed(cfg.seed)
    initial_file = _initial_file(req.initial_checkpoint) if req.initial_checkpoint else None
    model, spec = create_ancestry(req.name, checkpoint=initial_file)  # one clear line when the variant differs
    initial = _initial_record(initial_file) if initial_file else None
    chans = data_channels(req.data, spec.in_chans)
    data = open_data(req.data, img_size=spec.img_size, in_chans=chans, num_classes=spec.num_classes)
    if initial_file is None and (data.info.num_classes, chans) != (spec.num_classes, spec.in_chans):
        # a new model for the user's data: its classes and channels (the checkpoint's ancestry.json keeps them)
        log.info("ancestry %s built for --data %s: %d classes, %d channel(s)", req.name, req.data,
                 data.info.num_classes, chans)
        model, spec = create_ancestry(req.name, num_classes=data.info.num_classes, in_chans=chans)
    if data.info.num_classes != spec.num_classes:  # only a warm start can differ now
        raise UsageError(f"--data {req.data} has {data.info.num_classes} classes; the --initial-checkpoint model "
                         f"has {spec.num_classes}: warm-start from a run on data with the same classes")
    objective = SupervisedObjective(model, req.smoothing)
    fingerprint = content_hash({"stage": "ancestry", "spec": spec.identity(), "cfg": cfg.identity(), "data": req.data,
                                **({"initial": initial["sha256"]} if initial else {})})
    t0 = time.time()
    result = fit(objective, data.train, cfg, description=f"train {req.name}", ckpt_dir=Path(req.out) / "train.ckpt",
                 resume=req.resume, fingerprint=fingerprint, reporter=reporter, find_unused_parameters=False)
    # Rank 0 alone evaluates and writes; the other ranks are done once training ends.
    try:
        top1 = evaluate(model, data.val, batch_size=512, device=cfg.device) if is_main() else float("nan")
    except DataError as exc:  # a damaged validation image: the trained weights are in the checkpoint
        raise resume_after(exc, Path(req.out) / "train.ckpt", "training finished and is checkpointed") from None
    meta = {"name": req.name, "spec": spec.to_dict(), "data": data.info.name, "synthetic_data": data.info.synthetic,
            "top1": round(top1, 3), "val_images": len(data.val), "config": cfg.to_dict(),
            "epoch_loss": list(result.epoch_loss), "wall_s": round(time.time() - t0 + result.earlier_wall_s, 1),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "resumed_from_step": result.resumed_from,
            "preprocess": data.info.preprocess.to_dict()}
    if initial is not None:
        meta["initial_checkpoint"] = initial
    if is_main():
        with atomic_dir(req.out) as tmp:
            save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()},
                             os.path.join(tmp, "ancestry.safetensors"))
            with open(os.path.join(tmp, "ancestry.json"), "w") as f:
                json.dump(meta, f, indent=1)
            replace_dir(tmp, req.out)
    return meta


def _initial_file(path_text: str) -> Path:
    """The warm start's ``.safetensors`` file (an ``ancestry train`` directory or the file itself)."""
    path = Path(path_text)
    file = path / "ancestry.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"--initial-checkpoint '{path}' does not exist; pass an ancestry directory or its "
                         ".safetensors file")
    if file.suffix != ".safetensors":
        raise UsageError(f"--initial-checkpoint '{file}' is not a .safetensors file; pass the output of "
                         "'lgp-edge ancestry train'")
    return file


def _initial_record(file: Path) -> dict[str, Any]:
    """The warm start for the record: the file's digest, and the run that wrote it (its ``ancestry.json``,
    itself possibly warm-started)."""
    from lgp_edge.fileio import sha256_file
    from lgp_edge.models.ancestry import read_ancestry_dir

    before = read_ancestry_dir(file) or {}
    keep = ("top1", "val_images", "config", "data", "storage_dtype", "wall_s", "when", "initial_checkpoint")
    return {"path": str(file), "sha256": sha256_file(file), **{k: before[k] for k in keep if k in before}}
