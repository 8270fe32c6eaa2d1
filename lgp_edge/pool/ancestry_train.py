"""``ancestry train``: supervised training of the ancestry ViT, from scratch (no pretrained weights exist offline)
or fine-tuning a checkpoint (``--initial-checkpoint``: an earlier run, or a user's own timm ViT)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lgp_edge.datasets import check_data_name, data_channels, model_norm, open_data
from lgp_edge.errors import CheckpointError, DataError, UsageError
from lgp_edge.models.ancestry import (
    create_ancestry,
    read_ancestry_dir,
    read_state_dict,
    recorded_shapes,
    shape_overrides,
)
from lgp_edge.outdir import atomic_dir, check_not_inside, check_output_dir, check_resume_dir, replace_dir
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import content_hash
from lgp_edge.train import TrainConfig, environment, evaluate, fit, is_main, resume_after

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
    initial_checkpoint: str | None = None  # warm start: an earlier run of the variant, or a timm checkpoint of it


def train_ancestry(req: AncestryRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    from lgp_edge.fileio import save_safetensors, sha256_file, write_json

    if req.initial_checkpoint:  # replacing OUT would delete the weights it starts from
        check_not_inside(req.out, req.initial_checkpoint, "the initial checkpoint")
    if req.resume:
        check_resume_dir(req.out)
    else:
        check_output_dir(req.out, req.force, kind="ancestry")
    check_data_name(req.data)
    torch.manual_seed(cfg.seed)
    initial_file = _initial_file(req.initial_checkpoint) if req.initial_checkpoint else None
    initial_meta = read_ancestry_dir(initial_file) if initial_file else None  # its ancestry.json or config.json
    # the variant at its own size (or the size the run that wrote the warm start built it at), random weights
    model, spec = create_ancestry(req.name, **recorded_shapes(req.name, initial_meta))
    state = read_state_dict(initial_file) if initial_file else None
    chans = data_channels(req.data, shape_overrides(model, state).get("in_chans", spec.in_chans) if state
                          else spec.in_chans)
    # a warm start's images are normalised as its weights were trained (its ancestry.json, a stock pretrained_cfg)
    norm = model_norm(model, req.name, initial_meta) if initial_file else None
    data = open_data(req.data, img_size=spec.img_size, in_chans=chans, num_classes=spec.num_classes, norm=norm)
    if (data.info.num_classes, chans) != (spec.num_classes, spec.in_chans):
        # a model for the user's data: its classes and channels (the checkpoint's ancestry.json keeps them)
        log.info("ancestry %s built for --data %s: %d classes, %d channel(s)", req.name, req.data,
                 data.info.num_classes, chans)
        model, spec = create_ancestry(req.name, num_classes=data.info.num_classes, in_chans=chans,
                                      img_size=spec.img_size)
    initial = None
    if initial_file is not None:
        was = ((initial_meta or {}).get("preprocess") or {}).get("labels")
        relabel = isinstance(was, list) and tuple(was) != tuple(data.info.preprocess.labels) \
            and not data.info.synthetic  # its head classifies other classes, or these in another order
        load_warm_start(model, state, initial_file, req.name, new_head=relabel)
        initial = _initial_record(initial_file)
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
            "top1": round(top1, 3), "val_images": len(data.val), "config": cfg.to_dict(), "environment": environment(),
            "epoch_loss": list(result.epoch_loss), "wall_s": round(time.time() - t0 + result.earlier_wall_s, 1),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "resumed_from_step": result.resumed_from,
            "preprocess": data.info.preprocess.to_dict()}
    if initial is not None:
        meta["initial_checkpoint"] = initial
    if is_main():
        with atomic_dir(req.out) as tmp:
            save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()},
                             os.path.join(tmp, "ancestry.safetensors"))
            meta["weights_sha256"] = sha256_file(os.path.join(tmp, "ancestry.safetensors"))  # checked on every load
            write_json(os.path.join(tmp, "ancestry.json"), meta)
            replace_dir(tmp, req.out)
    return meta


def load_warm_start(model: nn.Module, state: dict[str, torch.Tensor], file: Path, name: str, *,
                    new_head: bool = False) -> None:
    """Load ``state`` into ``model`` as transfer learning does: every tensor that fits; a new classifier head when
    the checkpoint's classifies other classes (an ImageNet model for a 4-class folder), the position embedding
    resampled to the model's grid when the checkpoint was trained at another image size; ``new_head``: its
    ``ancestry.json`` names other classes than the data's, or the same in another order, so its head, though of
    the right size, classifies them wrongly. Anything else that does not fit is a CheckpointError."""
    from timm.layers import resample_abs_pos_embed

    from lgp_edge.models.ancestry import load_error

    own, state = model.state_dict(), dict(state)
    head = state.get("head.weight")
    other_size = head is not None and head.ndim == 2 and "head.weight" in own \
        and head.shape != own["head.weight"].shape and head.shape[1] == own["head.weight"].shape[1]
    if new_head and head is not None:
        log.warning("--initial-checkpoint %s was trained on other classes, or these in another order (its "
                    "ancestry.json); ancestry %s starts a new %d-class head for the data", file, name,
                    model.num_classes)
    if other_size or (new_head and head is not None):
        state.pop("head.weight")
        state.pop("head.bias", None)
    pos, mine = state.get("pos_embed"), own.get("pos_embed")
    if pos is not None and mine is not None and pos.ndim == 3 and pos.shape != mine.shape \
            and pos.shape[2] == mine.shape[2]:
        prefix = 0 if model.no_embed_class else int(model.num_prefix_tokens)
        try:
            state["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(model.patch_embed.grid_size),
                                                        num_prefix_tokens=prefix)
        except RuntimeError as exc:  # not a square grid
            raise CheckpointError(f"--initial-checkpoint '{file}': its position embedding {tuple(pos.shape)} "
                                  f"cannot be resampled to ancestry '{name}' ({str(exc)[:120]})") from None
        log.info("--initial-checkpoint %s: position embedding resampled from %d to %d tokens (%s px)", file,
                 pos.shape[1], mine.shape[1], model.patch_embed.img_size[0])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a size mismatch
        raise CheckpointError(f"checkpoint '{file}' does not fit ancestry '{name}': {load_error(exc)}") from None
    if "head.weight" in missing and not new_head:
        had = f"a {head.shape[0]}-class head" if head is not None else "no classifier head"
        log.warning("--initial-checkpoint %s has %s; ancestry %s starts a new %d-class head for the data", file, had,
                    name, model.num_classes)
    missing = [k for k in missing if k not in ("head.weight", "head.bias")]
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise CheckpointError(f"checkpoint '{file}' does not fit ancestry '{name}': {what[:200]}")


def _initial_file(path_text: str) -> Path:
    """The warm start's weights file: an ``ancestry train`` directory, a Hugging Face snapshot folder, or a
    ``.safetensors`` file or torch checkpoint."""
    from lgp_edge.models.ancestry import is_torch_file, weights_file

    path = Path(path_text)
    if not path.exists():
        raise UsageError(f"--initial-checkpoint '{path}' does not exist; pass an ancestry directory or its "
                         ".safetensors file")
    file = weights_file(path)
    if file.suffix != ".safetensors" and not is_torch_file(file):
        raise UsageError(f"--initial-checkpoint '{file}' is not a .safetensors file or a torch checkpoint; pass "
                         "the output of 'lgp-edge ancestry train' or a timm checkpoint")
    return file


def _initial_record(file: Path) -> dict[str, Any]:
    """The warm start for the record: the file's digest, and the run that wrote it (its ``ancestry.json``,
    itself possibly warm-started)."""
    from lgp_edge.fileio import sha256_file
    from lgp_edge.models.ancestry import read_ancestry_dir

    before = read_ancestry_dir(file) or {}
    keep = ("top1", "val_images", "config", "data", "storage_dtype", "wall_s", "when", "initial_checkpoint")
    return {"path": os.path.abspath(file), "sha256": sha256_file(file), **{k: before[k] for k in keep if k in before}}
