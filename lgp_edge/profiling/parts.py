"""The pieces a model is priced in: ``parts_of`` splits a descendant (or a stock ViT, ``vit_parts``) into patch
embedding, each block by its dims and token count, each stitch, and final norm + head. Parts with equal
``key`` cost the same, so the predictor prices each key once.
"""

from __future__ import annotations

from dataclasses import dataclass

from lgp_edge.models.plan import block_flops
from lgp_edge.specs import AncestrySpec, DescendantSpec, PoolSpec

KERNELS = {"embed": 4, "block": 14, "stitch": 1, "head": 3}  # operator launches per part (timm ViT, ONNX graph)


@dataclass(frozen=True)
class Part:
    """One priced piece of a model; ``key`` names its type by dims (equal keys cost the same)."""

    kind: str  # "embed", "block", "stitch" or "head"
    key: str  # e.g. "block:d192:h3:n197:r4"
    macs: int  # multiply-adds at batch 1 (fvcore FLOPs)
    params: int  # weights read once per inference
    act_elems: int  # activation values written + read at batch 1 (approximate)

    @property
    def kernels(self) -> int:
        return KERNELS[self.kind]


def _r(x: float) -> str:
    return f"{x:g}"


def embed_part(a: AncestrySpec, dim: int) -> Part:
    n = a.num_tokens
    k = a.in_chans * a.patch_size ** 2
    return Part("embed", f"embed:c{a.in_chans}:p{a.patch_size}:i{a.img_size}:d{dim}", macs=k * dim * (n - 1),
                params=k * dim + dim + dim + n * dim, act_elems=a.in_chans * a.img_size ** 2 + 3 * n * dim)


def block_part(a: AncestrySpec, dim: int, heads: int) -> Part:
    n = a.num_tokens
    hidden = int(dim * a.mlp_ratio)
    macs = block_flops(dim, n, a.mlp_ratio) - 2 * 5 * n * dim  # LayerNorms are priced as traffic
    params = 4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden  # qkv, proj, fc1, fc2 (+ biases, norms)
    act = n * dim * 12 + n * hidden * 3 + heads * n * n * 3
    return Part("block", f"block:d{dim}:h{heads}:n{n}:r{_r(a.mlp_ratio)}", macs=macs, params=params, act_elems=act)


def stitch_part(a: AncestrySpec, d_in: int, d_out: int) -> Part:
    n = a.num_tokens
    return Part("stitch", f"stitch:{d_in}>{d_out}:n{n}", macs=n * d_in * d_out, params=d_in * d_out + d_out,
                act_elems=n * (d_in + d_out))


def head_part(a: AncestrySpec, dim: int) -> Part:
    n = a.num_tokens
    return Part("head", f"head:d{dim}:n{n}:c{a.num_classes}", macs=dim * a.num_classes,
                params=dim * a.num_classes + a.num_classes + 2 * dim, act_elems=2 * n * dim + dim + a.num_classes)


def parts_of(pool: PoolSpec, spec: DescendantSpec) -> list[Part]:
    """Embedding of the first instance, every block, every stitch, norm + head of the last instance."""
    a = pool.ancestry
    inst = {i.name: i for i in pool.instances}
    segs = spec.segments
    out = [embed_part(a, inst[segs[0].instance].embed_dim)]
    for i, seg in enumerate(segs):
        s = inst[seg.instance]
        out += [block_part(a, s.embed_dim, s.num_heads)] * seg.num_blocks
        if i + 1 < len(segs):
            out.append(stitch_part(a, s.embed_dim, inst[segs[i + 1].instance].embed_dim))
    out.append(head_part(a, inst[segs[-1].instance].embed_dim))
    return out


def vit_parts(a: AncestrySpec, blocks: int | None = None) -> list[Part]:
    """A stock ViT (the ancestry's dims), optionally with fewer blocks (calibration probes)."""
    depth = a.depth if blocks is None else blocks
    return [embed_part(a, a.embed_dim)] + [block_part(a, a.embed_dim, a.num_heads)] * depth + \
        [head_part(a, a.embed_dim)]
