"""OpenVINO IR: the OpenVINO Model API keys in rt_info (model_info), read back with openvino."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lgp_edge.pool.pool import load_pool


def test_ir_carries_model_api_keys(tiny_pool: Path, tmp_path: Path) -> None:
    import dataclasses

    import openvino as ov

    from lgp_edge.export.base import ExportContext, ValidationSet
    from lgp_edge.export.openvino import OpenVINOExporter
    from lgp_edge.export.validate import reference_logits
    from lgp_edge.profiles import load_profile
    from lgp_edge.progress import NULL
    from lgp_edge.targets import load_target

    pool, mf = load_pool(tiny_pool)
    rec = mf.descendants[0]
    model = pool.descendant(rec.key).eval()
    x = np.random.default_rng(0).standard_normal((8, 1, 16, 16)).astype(np.float32)
    vset = ValidationSet(images=x, labels=np.zeros(8, np.int64), reference=reference_logits(model, x),
                         data="synthetic", synthetic=True)
    profile = dataclasses.replace(load_profile("cpu"), formats=("openvino",))
    ctx = ExportContext(out_dir=tmp_path, model=model, record=rec, pool_id=mf.spec.pool_id, preprocess=mf.preprocess,
                        profile=profile, target=load_target("cpu"), opset=None, dynamic_batch=False, validation=vset,
                        calibration=x[:0], reporter=NULL, onnx_cache={})
    (art,) = OpenVINOExporter().export(ctx)
    ir = ov.Core().read_model(str(tmp_path / art.path))

    def info(key: str) -> str:
        assert ir.has_rt_info(["model_info", key]), key
        return ir.get_rt_info(["model_info", key]).astype(str)

    pre = mf.preprocess
    assert info("model_type") == "Classification"
    assert info("labels").split() == [lab.replace(" ", "_") for lab in pre.labels]
    # Model API normalises pixels in 0..255: (pixel - mean_values) / scale_values
    np.testing.assert_allclose([float(v) for v in info("mean_values").split()], [m * 255 for m in pre.mean],
                               rtol=1e-6)
    np.testing.assert_allclose([float(v) for v in info("scale_values").split()], [s * 255 for s in pre.std],
                               rtol=1e-6)
    assert info("resize_type") == "standard" and info("reverse_input_channels") in ("True", "False")
    assert ir.get_rt_info(["model_info", "lgp_edge", "descendant_key"]).astype(str) == rec.key  # kept
