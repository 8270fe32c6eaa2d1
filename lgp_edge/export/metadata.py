"""What every artifact says about itself: the key/value metadata in the model file, and the tool versions.

``model_metadata`` is the one builder of the metadata an app reads from the model (ONNX ``metadata_props``,
Core ML user metadata, OpenVINO ``rt_info``): the descendant (for a single-descendant export), the pool,
profile and target, and the preprocessing. A switchable model carries the same keys without
``descendant_key`` (it holds several; its ``descendants`` table names them); a timm model exported with
``--model`` carries ``model`` (its timm name) and ``checkpoint_sha256`` instead of the descendant and pool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PREPROCESS_RULE = "x = (pixel / 255 - mean) / std per channel, resized to img_size x img_size"


def model_metadata(*, preprocess: Any, pool_id: str | None, profile: str, target: str,
                   descendant_key: str | None = None, model: Any = None,
                   rule: str = PREPROCESS_RULE) -> dict[str, str]:
    """Metadata for an exported model (``profile`` and ``target`` by name; ``model``: a ModelRecord; ``rule``: how
    an image becomes the input, ``crop_rule``'s for a timm model evaluated with a centre crop)."""
    from lgp_edge import __version__

    p = preprocess
    out = {"lgp_edge_version": __version__}
    if descendant_key is not None:
        out["descendant_key"] = descendant_key
    if pool_id is not None:
        out["pool_id"] = pool_id
    if model is not None:
        out.update({"model": model.name, "checkpoint_sha256": model.checkpoint_sha256})
    out.update({"profile": profile, "target": target, "labels": json.dumps(list(p.labels)),
                "mean": json.dumps(list(p.mean)), "std": json.dumps(list(p.std)), "img_size": str(p.img_size),
                "in_chans": str(p.in_chans), "layout": p.layout, "preprocess": rule})
    return out


def crop_rule(crop_pct: float, interpolation: str, size: int) -> str:
    """The preprocessing rule of a timm model evaluated with timm's centre crop (its pretrained_cfg)."""
    return (f"x = (pixel / 255 - mean) / std per channel, the shorter side resized to {int(size / crop_pct)} "
            f"({interpolation}), then the central {size} x {size} cropped (timm's eval transform, crop_pct "
            f"{crop_pct:g})")


def preprocess_mismatches(props: Mapping[str, str], pre: Any) -> list[str]:
    """Where the preprocessing an app reads from a written file's metadata (``props``, read back from the file:
    EMBEDDING.md tells it to) is not the model's ``pre``: mean, std, labels, image size, channels."""
    want = {"mean": [float(v) for v in pre.mean], "std": [float(v) for v in pre.std], "labels": list(pre.labels),
            "img_size": int(pre.img_size), "in_chans": int(pre.in_chans)}
    problems = []
    for key, value in want.items():
        try:
            got = json.loads(props[key]) if key in props else None
        except ValueError:
            got = props[key]
        if got != value:
            problems.append(f"metadata '{key}' of the file is {props.get(key)!r}, the model takes {value!r}")
    return problems


def tool_versions(*packages: str) -> dict[str, str]:
    """lgp-edge's and torch's versions, and those of ``packages`` that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from lgp_edge import __version__

    out = {"lgp-edge": __version__, "torch": torch.__version__}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out
