"""Distilling the ancestry into the auxiliary models (docs/METHOD.md §1).

For each auxiliary model (student) and its supervised positions P:

    loss = a * CE(student, y) + (1 - a) * ( softCE(student / T, teacher / T)
                                            + mean_p MSE(h_s[p], W_p h_t[p'])
                                            + mean_p MSE(attn_s[p], V_p attn_t[p']) )

``h`` are block outputs, ``attn`` the attention sub-layer outputs after the projection. ``W_p`` and ``V_p``
are learnable ``Linear(D -> d_student)`` maps (the transformation matrices of position p, one for the hidden
states and one for the attention outputs, as in the authors' code), trained with the student; the stitch
layers' learned init is built from the hidden-state ones, ``W_p``.
Positions: "end" = last student block vs last teacher block; "front,end" = student blocks
{d/3-1, 2d/3-1, d-1} vs teacher blocks {D/3-1, 2D/3-1, D-1}. All students of a pool share one teacher
forward pass per batch; their parameters are disjoint, so the summed loss trains each as if alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgp_edge.models.instances import forward_with_taps, supervised_blocks
from lgp_edge.specs import InstanceSpec


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softCE(s/T, t/T) = -sum softmax(t/T) log softmax(s/T), batch mean."""
    target = F.softmax(teacher_logits / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def transform_name(instance: str, block: int) -> str:
    """Name of a hidden-state transformation matrix (``W_p``): ``ti6_b1``."""
    return f"{instance}_b{block}"


def attn_transform_name(instance: str, block: int) -> str:
    """Name of an attention-output transformation matrix (``V_p``): ``attn_ti6_b1``."""
    return f"attn_{instance}_b{block}"


def position_pairs(inst: InstanceSpec, teacher_depth: int) -> list[tuple[int, int]]:
    """(student block, teacher block) pairs for an instance's supervision mode."""
    return list(zip(supervised_blocks(inst.depth, inst.supervision),
                    supervised_blocks(teacher_depth, inst.supervision)))


class DistillObjective(nn.Module):
    """All students of one pool against one frozen teacher; ``forward(x, y)`` returns the summed loss."""

    def __init__(self, teacher: nn.Module, students: nn.ModuleDict, instances: tuple[InstanceSpec, ...], *,
                 teacher_dim: int, teacher_depth: int, alpha: float = 0.1, temperature: float = 1.0) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.students = students
        self.alpha, self.temperature = alpha, temperature
        self.pairs = {i.name: position_pairs(i, teacher_depth) for i in instances}
        self.transforms = nn.ModuleDict({
            transform_name(i.name, s): nn.Linear(teacher_dim, i.embed_dim)
            for i in instances for s, _ in self.pairs[i.name]})
        self.attn_transforms = nn.ModuleDict({
            attn_transform_name(i.name, s): nn.Linear(teacher_dim, i.embed_dim)
            for i in instances for s, _ in self.pairs[i.name]})
        self._teacher_blocks = tuple(sorted({t for pairs in self.pairs.values() for _, t in pairs}))

    def train(self, mode: bool = True) -> DistillObjective:
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = forward_with_taps(self.teacher, x, self._teacher_blocks)
        total = x.new_zeros(())
        for name, student in self.students.items():
            pairs = self.pairs[name]
            s = forward_with_taps(student, x, tuple(p for p, _ in pairs))
            hidden = attn = x.new_zeros(())
            for sb, tb in pairs:
                w = self.transforms[transform_name(name, sb)]
                v = self.attn_transforms[attn_transform_name(name, sb)]
                hidden = hidden + F.mse_loss(s.hidden[sb], w(t.hidden[tb]))
                attn = attn + F.mse_loss(s.attn[sb], v(t.attn[tb]))
            soft = soft_cross_entropy(s.logits, t.logits, self.temperature)
            ce = F.cross_entropy(s.logits, y)
            total = total + self.alpha * ce + (1 - self.alpha) * (soft + (hidden + attn) / len(pairs))
        return total

    def matrices(self, instance: str) -> list[torch.Tensor]:
        """The hidden-state transformation matrices (``(d, D)`` weights) of one student."""
        return [self.transforms[transform_name(instance, s)].weight.detach() for s, _ in self.pairs[instance]]

    def transform_tensors(self) -> dict[str, torch.Tensor]:
        """Every transformation matrix and bias: ``ti6_b1.weight`` (hidden), ``attn_ti6_b1.weight`` (attention)."""
        out = {k: v.detach().cpu() for k, v in self.transforms.state_dict().items()}
        out.update({k: v.detach().cpu() for k, v in self.attn_transforms.state_dict().items()})
        return out
