"""Auxiliary models that start as sub-networks of the ancestry (weight selection) instead of random weights.

The paper distils randomly initialised auxiliary models for 100 epochs. With a few epochs on a CPU that
leaves them far below the ancestry, so by default (``--aux-init ancestry``) every auxiliary model starts
from the ancestry's own weights, selected as in "Initializing Models with Larger Ones" (Xu et al., ICLR
2024), with the same indices in every layer so the residual stream stays consistent:

- blocks: ``depth`` blocks evenly spaced over the ancestry's, first included (6 of 12: 0, 2, 4, 6, 8, 10);
- residual channels: the first ``d`` of the ancestry's ``D`` (patch embedding, class token, position
  embedding, every LayerNorm, the head's inputs);
- attention: the first ``h`` heads (their query, key and value rows; the projection's matching inputs);
- MLP: every ``D/d``-th hidden unit.

The distillation's transformation matrices (ancestry width -> auxiliary width) start as the same channel
selection, so the feature losses begin from the features the selection already reproduces. ``random``
is the paper's initialisation. The selection is exact for B (``d = D``) of a plain ViT: only the block subset
differs (LayerScale, as DINOv2 has, is folded into the attention projection and fc2 it scales). The auxiliary
models are plain ViTs (GELU, no pre-norm), so what an ancestry has beyond one (CLIP's ``norm_pre`` and QuickGELU,
a bias it lacks) makes the selection a warm start only, which distillation trains on.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from lgp_edge.errors import UsageError
from lgp_edge.specs import InstanceSpec

log = logging.getLogger(__name__)

AUX_INITS = ("ancestry", "random")  # default first


def inherited_blocks(depth: int, ancestry_depth: int) -> tuple[int, ...]:
    """``depth`` ancestry block indices evenly spaced over ``ancestry_depth``, the first included."""
    if not 0 < depth <= ancestry_depth:
        raise UsageError(f"an auxiliary model of depth {depth} cannot inherit from an ancestry of depth "
                         f"{ancestry_depth}; use --aux-init random")
    return tuple(round(i * ancestry_depth / depth) for i in range(depth))


def _selected(name: str, t: torch.Tensor, ch: torch.Tensor, heads: torch.Tensor, qkv: torch.Tensor,
              hidden: torch.Tensor) -> torch.Tensor:
    """The slice of ancestry tensor ``t`` (parameter ``name`` inside a block, or a top-level one)."""
    rules = {
        "norm1.weight": lambda: t[ch], "norm1.bias": lambda: t[ch],
        "norm2.weight": lambda: t[ch], "norm2.bias": lambda: t[ch],
        "attn.qkv.weight": lambda: t[qkv][:, ch], "attn.qkv.bias": lambda: t[qkv],
        "attn.proj.weight": lambda: t[ch][:, heads], "attn.proj.bias": lambda: t[ch],
        "mlp.fc1.weight": lambda: t[hidden][:, ch], "mlp.fc1.bias": lambda: t[hidden],
        "mlp.fc2.weight": lambda: t[ch][:, hidden], "mlp.fc2.bias": lambda: t[ch],
        "cls_token": lambda: t[..., ch], "pos_embed": lambda: t[..., ch],
        "patch_embed.proj.weight": lambda: t[ch], "patch_embed.proj.bias": lambda: t[ch],
        "norm.weight": lambda: t[ch], "norm.bias": lambda: t[ch],
        "head.weight": lambda: t[:, ch], "head.bias": lambda: t,
    }
    if name not in rules:
        raise UsageError(f"cannot inherit parameter '{name}' from the ancestry (a timm VisionTransformer with a "
                         "class token, qkv attention and an MLP is needed); use --aux-init random")
    return rules[name]()


# LayerScale (``ls1``/``ls2``: a per-channel gain on the attention's and the MLP's output, e.g. DINOv2) has no
# module in the auxiliary models: the gain is folded into the linear layer whose output it scales
_LAYER_SCALE = {"attn.proj.": "ls1.gamma", "mlp.fc2.": "ls2.gamma"}


def _fold_layer_scale(key: str, rest: str, t: torch.Tensor, big: dict[str, torch.Tensor], block: str,
                      ch: torch.Tensor) -> torch.Tensor:
    """``t`` (the selected ``attn.proj``/``mlp.fc2`` weight or bias of ancestry block ``block``, e.g. "blocks.3.")
    times that block's LayerScale gain on the selected channels, where it has one: the inherited block then computes
    exactly what the ancestry's does. Any other tensor as it is."""
    gain = next((big.get(block + g) for prefix, g in _LAYER_SCALE.items() if rest.startswith(prefix)), None)
    if gain is None or not block:
        return t
    g = gain[ch]
    log.debug("%s: the ancestry's LayerScale gain folded in", key)
    return t * (g.unsqueeze(-1) if t.ndim == 2 else g)


def inherit_from_ancestry(student: nn.Module, ancestry: nn.Module, inst: InstanceSpec) -> tuple[int, ...]:
    """Load ``student`` (a timm ViT of ``inst``'s width and depth) with a selection of ``ancestry``'s weights.

    A warm start: a tensor the ancestry lacks (a bias it was built without) keeps the student's own
    initialisation. Returns the ancestry blocks used, in order."""
    big = {k: v.detach() for k, v in ancestry.state_dict().items()}
    width, depth = int(ancestry.embed_dim), len(ancestry.blocks)
    head_dim = width // int(ancestry.blocks[0].attn.num_heads)
    if inst.embed_dim > width or inst.embed_dim != inst.num_heads * head_dim:
        raise UsageError(f"instance '{inst.name}' (dim {inst.embed_dim}, {inst.num_heads} heads) is not a head "
                         f"subset of the ancestry (dim {width}, head dim {head_dim}); use --aux-init random")
    ch = torch.arange(inst.embed_dim)
    heads = torch.arange(inst.num_heads * head_dim)
    qkv = torch.cat([heads + j * width for j in range(3)])
    hidden_big = int(ancestry.blocks[0].mlp.fc1.out_features)
    hidden_small = int(student.blocks[0].mlp.fc1.out_features)
    hidden = torch.arange(hidden_small) * (hidden_big // hidden_small)
    blocks = inherited_blocks(inst.depth, depth)
    new, own = {}, []
    for key, like in student.state_dict().items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            source = f"blocks.{blocks[int(i)]}.{rest}"
        else:
            source = rest = key
        if source not in big:  # e.g. no qkv bias (ViT-B/16 MIIL), no patch embedding bias (CLIP)
            own.append(key)
            new[key] = like
            continue
        t = _fold_layer_scale(key, rest, _selected(rest, big[source], ch, heads, qkv, hidden), big,
                              source[:-len(rest)], ch)
        if t.shape != like.shape:
            raise UsageError(f"cannot inherit '{key}': selected {tuple(t.shape)}, instance needs "
                             f"{tuple(like.shape)}; use --aux-init random")
        new[key] = t.clone().to(like.dtype)
    student.load_state_dict(new, strict=True)
    if own:
        log.debug("%s keeps its own initialisation of %s (the ancestry has no such tensors)", inst.name,
                  ", ".join(own))
    log.info("%s inherits ancestry blocks %s, channels 0..%d", inst.name, list(blocks), inst.embed_dim - 1)
    return blocks


def selection_transform_(linear: nn.Linear) -> None:
    """Set a ``D -> d`` transformation to the channel selection (keep the first ``d`` channels), bias 0."""
    with torch.no_grad():
        linear.weight.zero_()
        d = linear.weight.shape[0]
        linear.weight[torch.arange(d), torch.arange(d)] = 1.0
        if linear.bias is not None:
            linear.bias.zero_()
