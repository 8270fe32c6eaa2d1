"""The small ancestry variants lgp-edge registers with timm, as plain numbers.

Their specs need neither torch nor timm, so ``pool plan`` for them imports neither; ``ancestry.py`` registers
them with timm's registry and builds them.
"""

from __future__ import annotations

from typing import Any

from lgp_edge.specs import AncestrySpec

# Small variants sized for a 2-core CPU and 28 px grayscale data. Each keeps DeiT's ratios:
# 12 blocks, mlp ratio 4, head count divisible by 4 so Ti/S/B = 1/4, 1/2, 1 of the width keep whole heads.
SMALL_VARIANTS: dict[str, dict[str, Any]] = {
    # ~2.4 M params, trains at ~600 img/s on 2 cores; the demo pool's ancestry.
    "lgp_vit_fmnist": dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=128, depth=12,
                           num_heads=4),
    # DeiT's head width ratio (Ti 3 heads, S 6, B 12), ~5.3 M params, ~290 img/s.
    "lgp_vit_fmnist_192": dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=192, depth=12,
                               num_heads=12),
    # For tests and smoke runs only: width 32, 16 px.
    "lgp_test_tiny": dict(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=12,
                          num_heads=4),
}

MLP_RATIO = 4.0  # timm's VisionTransformer default, which the small variants keep


def variant_spec(name: str) -> AncestrySpec | None:
    """The spec ``create_ancestry(name)`` reads off the built small variant ``name`` (no checkpoint: random
    weights); None when ``name`` is no small variant."""
    cfg = SMALL_VARIANTS.get(name)
    if cfg is None:
        return None
    dim = cfg["embed_dim"]
    return AncestrySpec(name=name, checkpoint=None, img_size=cfg["img_size"], in_chans=cfg["in_chans"],
                        num_classes=cfg["num_classes"], embed_dim=dim, depth=cfg["depth"], num_heads=cfg["num_heads"],
                        patch_size=cfg["patch_size"], mlp_ratio=int(dim * MLP_RATIO) / dim)


def close_names(name: str, names: list[str], otherwise: str) -> str:
    """The end of an unknown-name message: the close matches among ``names``, else ``otherwise``."""
    import difflib

    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else otherwise


def check_variant_name(name: str) -> None:
    """UsageError for an ``lgp_*`` name that is no small variant (timm has none of that prefix), with the close
    matches ``ancestry.check_name`` gives: a misspelt variant refused without importing timm."""
    if name.startswith("lgp_") and name not in SMALL_VARIANTS:
        from lgp_edge.errors import UsageError

        raise UsageError(f"unknown ancestry '{name}'"
                         + close_names(name, sorted(SMALL_VARIANTS), "; see 'lgp-edge ancestry list'"))
