"""What gets profiled: a *subject* is the descendants of a pool (or one stock timm ViT), each with its parts
(for prediction) and a way to build it as a module (for measurement), plus the calibration probes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lgp_edge.profiling.parts import Part, parts_of, vit_parts
from lgp_edge.profiling.predict import calibration_probes, probe_key
from lgp_edge.specs import DescendantSpec, PoolSpec, Segment

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Item:
    """One model to profile."""

    key: str  # descendant key, "timm:<name>" or a probe key
    parts: tuple[Part, ...]  # for prediction
    build: Callable[[], nn.Module]  # the module, built on demand
    params: int | None = None
    flops: int | None = None  # fvcore convention (multiply-add = 1)
    top1: float | None = None


@dataclass(frozen=True)
class Subject:
    pool_id: str  # "" for a stock model
    input_shape: tuple[int, int, int]  # (C, H, W)
    items: tuple[Item, ...]
    probes: tuple[Item, ...]
    pool: PoolSpec | None = None  # the pool the items are descendants of (None for a stock model)


def pool_subject(pool: PoolSpec, build: Callable[[DescendantSpec], nn.Module], manifest: Any = None,
                 keys: Sequence[str] | None = None) -> Subject:
    """Every descendant of the pool ``pool`` describes (or those named in ``keys``), with top-1 from the manifest
    when known; ``build`` makes a descendant's module when it is measured (sizes come from the spec)."""
    from lgp_edge.models.plan import descendant_flops, descendant_params, enumerate_descendants
    from lgp_edge.pool.manifest import find_descendant

    specs = enumerate_descendants(pool)
    if keys:
        wanted = {find_descendant(pool, k).key for k in keys}
        specs = [s for s in specs if s.key in wanted]
    top1 = {r.key: r.top1 for r in (manifest.descendants if manifest is not None else ())}
    a = pool.ancestry

    def item(spec: DescendantSpec, key: str, with_size: bool) -> Item:
        return Item(key=key, parts=tuple(parts_of(pool, spec)), build=lambda: build(spec),
                    params=descendant_params(pool, spec) if with_size else None,
                    flops=descendant_flops(pool, spec) if with_size else None,
                    top1=top1.get(spec.key) if with_size else None)

    items = tuple(item(s, s.key, True) for s in specs)
    probes = tuple(item(s, probe_key(parts_of(pool, s)), False) for s in calibration_probes(pool))
    return Subject(pool_id=pool.pool_id, input_shape=(a.in_chans, a.img_size, a.img_size), items=items,
                   probes=probes, pool=pool)


def timm_subject(name: str) -> Subject:
    """A stock timm ViT with random weights (latency does not depend on their values)."""
    from lgp_edge.export.timm_model import check_model_name
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.descendant import build_descendant, count_params
    from lgp_edge.models.plan import vit_flops

    check_model_name(name)  # named as the --model it is (create_ancestry would call it an ancestry)
    model, a = create_ancestry(name, role="--model")
    model.eval()

    def truncated(blocks: int) -> nn.Module:  # embedding, the first `blocks` blocks, norm + head
        spec = DescendantSpec("", (Segment("m", 0, blocks - 1),), ())
        return build_descendant(spec, {"m": model}, {}).eval()

    item = Item(key=f"timm:{name}", parts=tuple(vit_parts(a)), build=lambda: model, params=count_params(model),
                flops=vit_flops(img_size=a.img_size, patch_size=a.patch_size, in_chans=a.in_chans,
                                embed_dim=a.embed_dim, depth=a.depth, num_classes=a.num_classes,
                                mlp_ratio=a.mlp_ratio))
    probes = []
    for k in (1, max(2, a.depth // 2)):
        parts = tuple(vit_parts(a, k))
        probes.append(Item(key=probe_key(parts), parts=parts, build=lambda k=k: truncated(k)))
    return Subject(pool_id="", input_shape=(a.in_chans, a.img_size, a.img_size), items=(item,), probes=tuple(probes))
