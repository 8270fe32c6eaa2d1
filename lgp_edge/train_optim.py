"""The optimizer and the learning-rate schedule of ``train.fit``: AdamW in groups by weight decay and
learning-rate scale, linear warm-up then cosine decay (a pure function of the step, so it needs no state)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from lgp_edge.errors import UsageError

if TYPE_CHECKING:
    from lgp_edge.train import TrainConfig


def lr_at(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    """Linear warm-up to ``base`` then cosine decay to ``floor``."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, t)))


NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token")  # timm's no_weight_decay() set


def decays(name: str, p: nn.Parameter) -> bool:
    """Weight decay applies to weight matrices only: not to biases, norms, position embeddings or tokens."""
    return p.ndim >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES


def make_optimizer(objective: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[nn.Parameter]]:
    """AdamW over the trainable parameters, in groups by weight decay and learning-rate scale.

    An objective may scale the learning rate of some parameters with a method ``lr_scale(name) -> float``
    (e.g. a lower rate for shared instance blocks than for stitch layers); a group's rate is
    ``lr_at(step) * group["lr_scale"]``.
    """
    scale_of = getattr(objective, "lr_scale", None)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in objective.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        scale = float(scale_of(name)) if scale_of is not None else 1.0
        if not (0.0 <= scale <= 1e3):
            raise UsageError(f"learning-rate scale {scale} for '{name}' is out of range [0, 1000]")
        groups.setdefault((decays(name, p), scale), []).append(p)
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale}
                    for (decay, scale), ps in groups.items()]
    params = [p for g in param_groups for p in g["params"]]
    return torch.optim.AdamW(param_groups, lr=cfg.lr), params


def legacy_optimizer(objective: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[nn.Parameter]]:
    """The grouping of checkpoints written before per-name decay rules and learning-rate scales: weight decay on
    every parameter of 2 or more dimensions (pos_embed and cls_token included), none on the others. Used only to
    resume such a checkpoint, so the run ends with the recipe it started with."""
    seen: dict[int, nn.Parameter] = {}
    for p in objective.parameters():
        if p.requires_grad:
            seen.setdefault(id(p), p)
    params = list(seen.values())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr), decay + no_decay

