"""Descendants: learngene instances run small-first, joined by stitch layers (docs/METHOD.md §2).

``Descendant`` is a plain static ``nn.Module``: no "active config" state, so ``torch.onnx.export``,
``torch.jit.trace`` and ``torch.export`` take it as it is. It shares its parameters with the pool
it was built from, so training a descendant trains the pool.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from lgp_edge.specs import DescendantSpec


class Embedding(nn.Module):
    """Patch embedding, class token and position embedding of one instance model (shared parameters)."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.patch_embed = vit.patch_embed
        self.cls_token = vit.cls_token
        self.pos_embed = vit.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N-1, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed


class Descendant(nn.Module):
    """embed -> blocks of segment 0 -> stitch 0 -> blocks of segment 1 -> ... -> norm -> head(class token)."""

    def __init__(self, spec: DescendantSpec, models: Mapping[str, nn.Module],
                 stitches: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.key = spec.key
        first, last = models[spec.segments[0].instance], models[spec.segments[-1].instance]
        self.embed = Embedding(first)
        self.stages = nn.ModuleList(
            nn.Sequential(*[models[s.instance].blocks[i] for i in range(s.first, s.last + 1)])
            for s in spec.segments)
        self.stitches = nn.ModuleList(stitches[name] for name in spec.stitches)
        self.norm = last.norm
        self.head = last.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages[0](self.embed(x))
        for stitch, stage in zip(self.stitches, self.stages[1:]):
            x = stage(stitch(x))
        return self.head(self.norm(x)[:, 0])


def build_descendant(spec: DescendantSpec, models: Mapping[str, nn.Module],
                     stitches: Mapping[str, nn.Module]) -> Descendant:
    return Descendant(spec, models, stitches)


def count_params(module: nn.Module) -> int:
    """Parameters counted once each (shared tensors are not double counted)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
