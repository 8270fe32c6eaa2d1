"""OpenVINO IR: the OpenVINO Model API keys in rt_info (model_info), read back with openvino: written for RGB
models only (Model API feeds 3-channel BGR images; on a 1-channel IR its create_model fails with "Resulting shape
'[1,3,28,28]' after preprocessing is not aligned with original parameter's shape: [1,1,28,28]")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lgp_edge.pool.pool import load_pool


def _export_ir(tmp_path: Path, model: Any, rec: Any, pool_id: str, pre: Any) -> Any:
    import dataclasses

    import openvino as ov

    from lgp_edge.export.base import ExportContext, ValidationSet
    from lgp_edge.export.openvino import OpenVINOExporter
    from lgp_edge.export.validate import reference_logits
    from lgp_edge.profiles import load_profile
    from lgp_edge.progress import NULL
    from lgp_edge.targets import load_target

    x = np.random.default_rng(0).standard_normal((8, pre.in_chans, pre.img_size, pre.img_size)).astype(np.float32)
    vset = ValidationSet(images=x, labels=np.zeros(8, np.int64), reference=reference_logits(model, x),
                         data="synthetic", synthetic=True)
    profile = dataclasses.replace(load_profile("cpu"), formats=("openvino",))
    ctx = ExportContext(out_dir=tmp_path, model=model, record=rec, pool_id=pool_id, preprocess=pre,
                        profile=profile, target=load_target("cpu"), opset=None, dynamic_batch=False, validation=vset,
                        calibration=x[:0], reporter=NULL, onnx_cache={})
    (art,) = OpenVINOExporter().export(ctx)
    return ov.Core().read_model(str(tmp_path / art.path))


def test_rgb_ir_carries_model_api_keys(tiny_pool: Path, tmp_path: Path) -> None:
    import dataclasses

    from timm.models.vision_transformer import VisionTransformer

    _, mf = load_pool(tiny_pool)
    pre = dataclasses.replace(mf.preprocess, in_chans=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    model = VisionTransformer(img_size=pre.img_size, patch_size=8, in_chans=3, num_classes=len(pre.labels),
                              embed_dim=32, depth=1, num_heads=2).eval()
    rec = mf.descendants[0]
    ir = _export_ir(tmp_path, model, rec, mf.spec.pool_id, pre)

    def info(key: str) -> str:
        assert ir.has_rt_info(["model_info", key]), key
        return ir.get_rt_info(["model_info", key]).astype(str)

    assert info("model_type") == "Classification"
    assert info("labels").split() == [lab.replace(" ", "_") for lab in pre.labels]
    # Model API normalises pixels in 0..255: (pixel - mean_values) / scale_values
    np.testing.assert_allclose([float(v) for v in info("mean_values").split()], [m * 255 for m in pre.mean],
                               rtol=1e-6)
    np.testing.assert_allclose([float(v) for v in info("scale_values").split()], [s * 255 for s in pre.std],
                               rtol=1e-6)
    assert info("resize_type") == "standard" and info("reverse_input_channels") == "True"
    assert ir.get_rt_info(["model_info", "lgp_edge", "descendant_key"]).astype(str) == rec.key  # kept


def test_grayscale_ir_has_no_model_api_keys(tiny_pool: Path, tmp_path: Path) -> None:
    pool, mf = load_pool(tiny_pool)
    rec = mf.descendants[0]
    assert mf.preprocess.in_chans == 1
    ir = _export_ir(tmp_path, pool.descendant(rec.key).eval(), rec, mf.spec.pool_id, mf.preprocess)
    assert not ir.has_rt_info(["model_info", "model_type"])
    assert ir.get_rt_info(["model_info", "lgp_edge", "descendant_key"]).astype(str) == rec.key
