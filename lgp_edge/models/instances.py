"""Auxiliary models: narrow, shallow ViTs whose blocks become the pool's learngene instances.

Widths reduce the ancestry's token width D: Ti = D/4, S = D/2, B = D, with heads scaled alike
(docs/METHOD.md §1). Depth groups are 6 or 9 blocks. Which auxiliary models a depth group has
(``plan_instances``) is arithmetic in ``plan.py``; this module builds and runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lgp_edge.errors import UsageError
from lgp_edge.models.plan import (  # noqa: F401 (planning the instances needs no torch: it lives in plan.py)
    DEPTHS,
    SUPERVISION,
    WIDTH_DIVISOR,
    check_widths,
    instance_spec,
    plan_instances,
)
from lgp_edge.specs import AncestrySpec, InstanceSpec


def create_auxiliary(ancestry: AncestrySpec, inst: InstanceSpec, *, init: bool = True) -> nn.Module:
    """A timm VisionTransformer with the ancestry's patching and classes and the instance's width/depth; its
    weights left as allocated when not ``init`` (shapes only, e.g. on the meta device)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=ancestry.img_size, patch_size=ancestry.patch_size,
                             in_chans=ancestry.in_chans, num_classes=ancestry.num_classes,
                             embed_dim=inst.embed_dim, depth=inst.depth, num_heads=inst.num_heads,
                             mlp_ratio=ancestry.mlp_ratio, weight_init="" if init else "skip")


def supervised_blocks(depth: int, supervision: str) -> tuple[int, ...]:
    """0-based block indices whose outputs are distilled: "end" -> {d-1}; "front,end" -> {d/3-1, 2d/3-1, d-1}."""
    if supervision == "end":
        return (depth - 1,)
    if supervision == "front,end":
        return (depth // 3 - 1, 2 * depth // 3 - 1, depth - 1)
    raise UsageError(f"unknown supervision '{supervision}'")


@dataclass
class Taps:
    """A forward pass with its intermediate features."""

    logits: torch.Tensor  # (B, classes)
    hidden: list[torch.Tensor]  # block outputs, one per block, (B, N, D)
    attn: list[torch.Tensor]  # attention sub-layer outputs after the projection, one per block
    embedded: torch.Tensor | None = None  # the embedding output (input to block 0), (B, N, D)

    def block_input(self, k: int) -> torch.Tensor:
        """What block ``k`` receives: the embedding for k = 0, else block k-1's output."""
        return self.embedded if k == 0 else self.hidden[k - 1]


def embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class token + position embedding of a timm ViT."""
    x = vit.patch_embed(x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def head(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Final norm + class-token head of a timm ViT."""
    return vit.forward_head(vit.norm(x))


def forward_with_taps(vit: nn.Module, x: torch.Tensor, blocks: tuple[int, ...] | None = None) -> Taps:
    """Run a timm ViT block by block, keeping block outputs and attention outputs.

    ``blocks`` limits which blocks' features are kept (others are stored as empty tensors to keep indexing).
    Equivalent to ``vit(x)``; each block is ``x + attn(norm1 x)`` then ``x + mlp(norm2 x)``.
    """
    x = embed(vit, x)
    embedded = x
    hidden: list[torch.Tensor] = []
    attn: list[torch.Tensor] = []
    keep = set(range(len(vit.blocks))) if blocks is None else set(blocks)
    empty = x.new_empty(0)
    for i, blk in enumerate(vit.blocks):
        a = blk.ls1(blk.attn(blk.norm1(x)))
        x = x + blk.drop_path1(a)
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        hidden.append(x if i in keep else empty)
        attn.append(a if i in keep else empty)
    return Taps(logits=head(vit, x), hidden=hidden, attn=attn, embedded=embedded)
