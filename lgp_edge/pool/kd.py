"""The fine-tuning objective (docs/METHOD.md §3): descendants of the pool distilled from the ancestry.

Every step trains descendant ``index`` on ``0.5 * CE(y) + 0.5 * tau^2 * KL(ancestry || student)``. With
``anchors`` the instance models alone (Ti alone, B alone) are trained in every step as well, on the same
batch and loss (the "sandwich" rule of slimmable networks and SN-Netv2), so the shared blocks keep serving
the models that own them while stitched descendants pull on them. ``instance_lr_scale`` scales the learning
rate of the instances' parameters against the stitch layers' (see ``train.make_optimizer``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgp_edge.train import step_rng


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """0.5 * CE + 0.5 * tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)) (DeiT/SN-Net's soft KD)."""
    kl = F.kl_div(F.log_softmax(student / tau, -1), F.log_softmax(teacher / tau, -1), reduction="batchmean",
                  log_target=True) * tau * tau
    return 0.5 * F.cross_entropy(student, y) + 0.5 * kl


class FinetuneObjective(nn.Module):
    """``forward(x, y, index)``: the KD loss of descendant ``index`` of the pool against the ancestry
    (plus the instance models' own losses when ``anchors``)."""

    def __init__(self, pool: nn.Module, teacher: nn.Module, tau: float = 1.0, *, anchors: bool = False,
                 instance_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.pool = pool
        self.teacher = teacher.eval().requires_grad_(False)
        self.tau = tau
        self.instance_lr_scale = instance_lr_scale
        descendants = pool.descendants()
        self.anchor_indices = tuple(i for i, d in enumerate(descendants) if not d.stitches) if anchors else ()

    def train(self, mode: bool = True) -> FinetuneObjective:
        super().train(mode)
        self.teacher.eval()
        return self

    def lr_scale(self, name: str) -> float:
        """Learning-rate scale of a parameter: ``instance_lr_scale`` for instances, 1 for stitch layers."""
        return self.instance_lr_scale if name.startswith("pool.models.") else 1.0

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: int) -> torch.Tensor:
        with torch.no_grad():
            t = self.teacher(x)
        loss = kd_loss(self.pool(x, index), t, y, self.tau)
        for a in self.anchor_indices:
            if a != index:
                loss = loss + kd_loss(self.pool(x, a), t, y, self.tau)
        return loss


SAMPLINGS = ("uniform", "flops-bucket")
FLOPS_GROUPS = 10  # flops-bucket: the FLOPs range in this many equal steps


def descendant_sampler(seed: int, count: int | list[int]):
    """step -> {"index": i}: one descendant uniformly at random (of ``range(count)`` or of the given
    indices), the same on every rank."""
    choices = list(range(count)) if isinstance(count, int) else list(count)
    return lambda step: {"index": choices[step_rng(seed, step).randrange(len(choices))]}


def flops_groups(flops: list[int], groups: int = FLOPS_GROUPS) -> list[list[int]]:
    """Indices of ``flops`` grouped as SN-Netv2's FLOPs-bucket sampling does: in order of FLOPs, a new group starts
    at the first descendant more than one step (the FLOPs range / ``groups``) above its group's first."""
    order = sorted(range(len(flops)), key=lambda i: (flops[i], i))
    step = (flops[order[-1]] - flops[order[0]]) / groups if order else 0.0
    out: list[list[int]] = []
    for i in order:
        if out and flops[i] - flops[out[-1][0]] <= step:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def flops_bucket_sampler(seed: int, flops: list[int], groups: int = FLOPS_GROUPS):
    """step -> {"index": i}: a FLOPs group (``flops_groups``) uniformly at random, then a descendant of it
    uniformly (SN-Netv2's resource-constrained sampling), so every FLOPs range is trained alike however many
    descendants crowd into it; the same on every rank."""
    buckets = flops_groups(flops, groups)

    def draw(step: int) -> dict[str, int]:
        rng = step_rng(seed, step)
        bucket = buckets[rng.randrange(len(buckets))]
        return {"index": bucket[rng.randrange(len(bucket))]}
    return draw
