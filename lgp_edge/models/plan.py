"""Which auxiliary models a pool has, which blocks each descendant runs and what it costs: pure arithmetic on
the specs, no torch.

What only needs a pool's architecture (reading ``pool.json``, ``pool info``, ``pool plan``, latency prediction,
``select``, ``report``) imports this module and not ``descendant.py`` (the ``nn.Module``) or ``stitch.py`` (the
layers and their inits), so choosing a descendant loads neither torch nor the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lgp_edge.errors import UsageError
from lgp_edge.specs import AncestrySpec, DescendantRecord, DescendantSpec, InstanceSpec, PoolSpec, Segment

# ------------------------------------------------------------------------------ auxiliary models (instances)
# Widths reduce the ancestry's token width D: Ti = D/4, S = D/2, B = D, with heads scaled alike
# (docs/METHOD.md §1). Depth groups are 6 or 9 blocks.
WIDTH_DIVISOR = {"ti": 4, "s": 2, "b": 1}  # width code -> D / width
SUPERVISION = {"ti": "front,end", "s": "end", "b": "end"}  # docs/METHOD.md §1
DEPTHS = (6, 9)


def plan_instances(ancestry: AncestrySpec, depth: int, widths: tuple[str, ...] = ("ti", "b")) -> tuple[
        InstanceSpec, ...]:
    """The auxiliary models of one depth group, narrowest first."""
    if depth not in DEPTHS:
        raise UsageError(f"--depth must be one of {', '.join(map(str, DEPTHS))} (the paper's depth groups), "
                         f"got {depth}")
    check_widths(widths)
    return tuple(instance_spec(ancestry, w, depth) for w in sorted(set(widths), key=lambda c: -WIDTH_DIVISOR[c]))


def check_widths(widths: tuple[str, ...]) -> None:
    """``--widths``: at least one of ti, s, b, each named once (UsageError otherwise)."""
    if not widths:
        raise UsageError("--widths names no width; use a comma list of ti, s, b, e.g. --widths ti,b")
    unknown = [w for w in widths if w not in WIDTH_DIVISOR]
    if unknown:
        named = ", ".join(f"'{w}'" for w in unknown)
        raise UsageError(f"unknown width code{'s' if len(unknown) > 1 else ''} {named}; use a comma list of ti, s, b")
    twice = next((w for i, w in enumerate(widths) if w in widths[:i]), None)
    if twice is not None:
        raise UsageError(f"--widths names '{twice}' twice; give each of ti, s, b at most once, e.g. --widths ti,b")


def check_pool_widths(widths: tuple[str, ...]) -> None:
    """A pool's ``--widths``: known ones (``check_widths``), and two or more (UsageError otherwise)."""
    check_widths(widths)
    if len(widths) < 2:
        raise UsageError(f"--widths {','.join(widths)} is one width: a pool stitches a narrower model's blocks "
                         "into a wider one's, so it needs two or more (e.g. --widths ti,b); to distil one model "
                         "alone use 'lgp-edge pool distill --models NAME'")


def instance_spec(ancestry: AncestrySpec, width: str, depth: int) -> InstanceSpec:
    """The auxiliary model ``<width><depth>``: width and heads 1/4, 1/2 or 1 of the ancestry's, supervision by
    width. UsageError where the ancestry's heads cannot be split that way."""
    div = WIDTH_DIVISOR[width]
    if ancestry.embed_dim % div or ancestry.num_heads % div:
        raise UsageError(f"ancestry '{ancestry.name}' (dim {ancestry.embed_dim}, {ancestry.num_heads} heads) "
                         f"cannot be split into width '{width}' (1/{div}) with whole heads")
    return InstanceSpec(name=f"{width}{depth}", width=width, embed_dim=ancestry.embed_dim // div, depth=depth,
                        num_heads=ancestry.num_heads // div, supervision=SUPERVISION[width])


def paired_stitching(depth: int, kernel_size: int = 2, stride: int = 1) -> tuple[list[tuple[int, int]], list[int]]:
    """SN-Net's paired stitching: configs (j, k) and the stitch layer each uses.

    (j, k): run the front model's blocks 0..j, stitch, then the back model's blocks k..depth-1.
    Windows of ``kernel_size`` consecutive block ids slide by ``stride``; each window that adds new
    configs gets one new stitch layer, so depth d yields d-1 layers and 4 + 3(d-2) configs.
    """
    cfgs: list[tuple[int, int]] = []
    layer_of: list[int] = []
    layer = -1
    for i in range(0, depth, stride):
        ids = list(range(depth))[i:i + kernel_size]
        new = [(j, k) for j in ids for k in ids if (j, k) not in cfgs]
        if new:
            layer += 1
            cfgs.extend(new)
            layer_of.extend([layer] * len(new))
    return cfgs, layer_of


@dataclass(frozen=True)
class StitchSpec:
    name: str  # module name in the pool, e.g. "ti6-b6-3"
    front: str  # instance feeding the stitch
    back: str  # instance the stitch feeds
    index: int  # layer index along the pair (0..depth-2)
    d_in: int  # width of the front instance
    d_out: int  # width of the back instance
    configs: tuple[tuple[int, int], ...]  # SN-Net (j, k) configs that use this layer


def stitch_name(front: str, back: str, index: int) -> str:
    return f"{front}-{back}-{index}"


def _pairs(spec: PoolSpec) -> list[tuple[str, str]]:
    """Neighbouring widths are stitched ("nearest stitching"): ti->s, s->b, or ti->b without s."""
    names = [i.name for i in spec.instances]
    return list(zip(names[:-1], names[1:]))


def stitch_specs(spec: PoolSpec) -> list[StitchSpec]:
    """Every stitch layer of the pool, in a fixed order."""
    cfgs, layer_of = paired_stitching(spec.depth)
    out = []
    for front, back in _pairs(spec):
        d_in, d_out = spec.instance(front).embed_dim, spec.instance(back).embed_dim
        for layer in range(max(layer_of) + 1):
            used = tuple(c for c, lyr in zip(cfgs, layer_of) if lyr == layer)
            out.append(StitchSpec(stitch_name(front, back, layer), front, back, layer, d_in, d_out, used))
    return out


def enumerate_descendants(spec: PoolSpec) -> list[DescendantSpec]:
    """All descendants of a pool, in the authors' order: each instance model alone, then stitched configs.

    Pairs: for each neighbouring pair (front, back) and SN-Net config (j, k): front blocks 0..j,
    stitch, back blocks k..d-1, block k included, as in the authors' code and SN-Net's (k <= j overlaps,
    so a descendant can be deeper than d: config (1, 0) runs 2 + d blocks).
    With ``chains == "tsb"`` (pool with ti, s and b): also ti 0..j -> s j+1..m -> b m+1..d-1 for
    0 <= j < m <= d-2, non-overlapping, each stitch the layer of config (j, j+1) / (m, m+1).
    Depth 6 with Ti, B gives 18 descendants (the authors' ids 0, 2, 19..34); depth 9 gives 27.
    """
    d = spec.depth
    pid = spec.pool_id
    out = [DescendantSpec(pid, (Segment(i.name, 0, d - 1),), ()) for i in spec.instances]
    cfgs, layer_of = paired_stitching(d)
    for front, back in _pairs(spec):
        for (j, k), layer in zip(cfgs, layer_of):
            out.append(DescendantSpec(pid, (Segment(front, 0, j), Segment(back, k, d - 1)),
                                      (stitch_name(front, back, layer),)))
    if spec.chains == "tsb":
        names = [i.name for i in spec.instances]
        if len(names) != 3:
            raise UsageError("chains 'tsb' (--chains tsb) needs a pool with ti, s and b instances: add --widths "
                             "ti,s,b")
        ti, s, b = names
        layer_at = {c: lyr for c, lyr in zip(cfgs, layer_of)}
        for j in range(d - 2):
            for m in range(j + 1, d - 1):
                stitches = (stitch_name(ti, s, layer_at[(j, j + 1)]), stitch_name(s, b, layer_at[(m, m + 1)]))
                out.append(DescendantSpec(pid, (Segment(ti, 0, j), Segment(s, j + 1, m), Segment(b, m + 1, d - 1)),
                                          stitches))
    return out


# ------------------------------------------------------------------------------ FLOPs (fvcore convention)
def block_flops(dim: int, tokens: int, mlp_ratio: float) -> int:
    """One pre-norm ViT block: qkv, q@k^T, attn@v, proj, MLP (multiply-adds) + two LayerNorms (5/element)."""
    hidden = int(dim * mlp_ratio)
    n = tokens
    return (n * dim * 3 * dim + 2 * n * n * dim + n * dim * dim + 2 * n * dim * hidden + 2 * 5 * n * dim)


def descendant_flops(pool: PoolSpec, spec: DescendantSpec) -> int:
    """FLOPs at batch 1 and the pool's input size; matches fvcore on timm ViTs (DeiT-S: 4,608,338,304)."""
    a = pool.ancestry
    n = a.num_tokens
    widths = {i.name: i.embed_dim for i in pool.instances}
    d0, d_last = widths[spec.segments[0].instance], widths[spec.segments[-1].instance]
    flops = a.in_chans * a.patch_size ** 2 * d0 * (n - 1)  # patch embedding conv
    for i, seg in enumerate(spec.segments):
        dim = widths[seg.instance]
        flops += seg.num_blocks * block_flops(dim, n, a.mlp_ratio)
        if i + 1 < len(spec.segments):
            flops += n * dim * widths[spec.segments[i + 1].instance]  # stitch Linear on every token
    flops += 5 * n * d_last + d_last * a.num_classes  # final LayerNorm + head on the class token
    return flops


# ------------------------------------------------------------------------------ parameters (timm's ViT)
def block_params(dim: int, mlp_ratio: float) -> int:
    """One timm ViT block: norm1, qkv, proj, norm2, fc1, fc2 (weights and biases)."""
    hidden = int(dim * mlp_ratio)
    return 4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden


def descendant_params(pool: PoolSpec, spec: DescendantSpec) -> int:
    """Parameters of a descendant, each counted once (``count_params`` of the built module), from the spec alone:
    the first instance's patch embedding, class token and position embedding, the segments' blocks, the stitch
    Linears, the last instance's norm and head."""
    a = pool.ancestry
    widths = {i.name: i.embed_dim for i in pool.instances}
    d0, d_last = widths[spec.segments[0].instance], widths[spec.segments[-1].instance]
    count = (a.in_chans * a.patch_size ** 2 + 1) * d0 + d0 + a.num_tokens * d0  # patch conv, cls token, pos embed
    blocks = {(seg.instance, k) for seg in spec.segments for k in range(seg.first, seg.last + 1)}
    count += sum(block_params(widths[name], a.mlp_ratio) for name, _ in blocks)
    stitches = {name: (widths[front.instance], widths[back.instance])
                for name, front, back in zip(spec.stitches, spec.segments, spec.segments[1:])}
    count += sum(d_in * d_out + d_out for d_in, d_out in stitches.values())
    return count + 2 * d_last + (d_last + 1) * a.num_classes  # final LayerNorm + head


def descendant_record(pool: PoolSpec, spec: DescendantSpec, top1: float | None = None) -> DescendantRecord:
    """The record of a descendant with its sizes from the spec alone (``LearngenePool.record`` counts them on the
    built modules: the same numbers)."""
    return DescendantRecord(key=spec.key, blocks=spec.num_blocks, params=descendant_params(pool, spec),
                            flops=descendant_flops(pool, spec), top1=top1, spec=spec)


def stitch_params(pool: PoolSpec) -> int:
    """Parameters of all the pool's stitch Linears (``count_params(pool.stitches)``)."""
    return sum(s.d_in * s.d_out + s.d_out for s in stitch_specs(pool))


def instance_params(pool: PoolSpec, inst: InstanceSpec) -> int:
    """Parameters of one instance's blocks, its learngene instances (``count_params(pool.models[name].blocks)``)."""
    return inst.depth * block_params(inst.embed_dim, pool.ancestry.mlp_ratio)


def auxiliary_shapes(ancestry: AncestrySpec, inst: InstanceSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the auxiliary model ``inst`` (timm's ``VisionTransformer`` with class
    token and token pooling, as ``create_auxiliary`` builds it), in its ``state_dict`` order."""
    a, dim = ancestry, inst.embed_dim
    hidden = int(dim * a.mlp_ratio)
    out: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, dim), "pos_embed": (1, a.num_tokens, dim),
                                       "patch_embed.proj.weight": (dim, a.in_chans, a.patch_size, a.patch_size),
                                       "patch_embed.proj.bias": (dim,)}
    for k in range(inst.depth):
        for name, shape in (("norm1.weight", (dim,)), ("norm1.bias", (dim,)), ("attn.qkv.weight", (3 * dim, dim)),
                            ("attn.qkv.bias", (3 * dim,)), ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                            ("norm2.weight", (dim,)), ("norm2.bias", (dim,)), ("mlp.fc1.weight", (hidden, dim)),
                            ("mlp.fc1.bias", (hidden,)), ("mlp.fc2.weight", (dim, hidden)), ("mlp.fc2.bias", (dim,))):
            out[f"blocks.{k}.{name}"] = shape
    out.update({"norm.weight": (dim,), "norm.bias": (dim,), "head.weight": (a.num_classes, dim),
                "head.bias": (a.num_classes,)})
    return out


def pool_shapes(pool: PoolSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the pool's ``weights.safetensors`` (``LearngenePool.state_dict()``, in its
    order): each instance's whole auxiliary model, then the stitches. Pure arithmetic, nothing is allocated."""
    out = {f"models.{inst.name}.{k}": v for inst in pool.instances
           for k, v in auxiliary_shapes(pool.ancestry, inst).items()}
    for s in stitch_specs(pool):
        out[f"stitches.{s.name}.weight"] = (s.d_out, s.d_in)
        out[f"stitches.{s.name}.bias"] = (s.d_out,)
    return out


def stored_params(pool: PoolSpec) -> int:
    """Parameters the pool stores (``LearngenePool.stored_params()``): every tensor of ``pool_shapes``."""
    return sum(math.prod(shape) for shape in pool_shapes(pool).values())


def vit_flops(*, img_size: int, patch_size: int, in_chans: int, embed_dim: int, depth: int, num_classes: int,
              mlp_ratio: float = 4.0) -> int:
    """FLOPs of a plain DeiT/ViT (class token, token pooling) in the same convention."""
    n = (img_size // patch_size) ** 2 + 1
    return (in_chans * patch_size ** 2 * embed_dim * (n - 1) + depth * block_flops(embed_dim, n, mlp_ratio)
            + 5 * n * embed_dim + embed_dim * num_classes)


def quantized_weight_count(pool: PoolSpec, spec: DescendantSpec) -> int:
    """Weights an int8 export stores as int8: those of every block's linear layers (qkv, proj, fc1, fc2) and of
    the stitches (lgp_edge/export/quantize.py); the patch embedding, classifier, norms and biases stay float."""
    a = pool.ancestry
    widths = {i.name: i.embed_dim for i in pool.instances}
    count = 0
    for i, seg in enumerate(spec.segments):
        dim = widths[seg.instance]
        count += seg.num_blocks * (4 * dim * dim + 2 * dim * int(dim * a.mlp_ratio))
        if i + 1 < len(spec.segments):
            count += dim * widths[spec.segments[i + 1].instance]
    return count


def activation_bytes(pool: PoolSpec, spec: DescendantSpec, batch: int = 1, bytes_per_value: int = 4) -> int:
    """Peak activation memory estimate at inference: the widest block's live tensors (x, qkv, attn, MLP)."""
    a = pool.ancestry
    n = a.num_tokens
    inst = {i.name: i for i in pool.instances}
    used = (inst[s.instance] for s in spec.segments)
    peak = max(block_live_values(n, i.embed_dim, i.num_heads, int(i.embed_dim * a.mlp_ratio)) for i in used)
    return peak * batch * bytes_per_value


def block_live_values(tokens: int, dim: int, heads: int, hidden: int) -> int:
    """Values live at once in one transformer block at batch 1: x twice, qkv, one attention matrix, the MLP's
    hidden layer (the activation estimate ``memory_mb`` charges)."""
    return tokens * dim * 2 + tokens * 3 * dim + heads * tokens * tokens + tokens * hidden
