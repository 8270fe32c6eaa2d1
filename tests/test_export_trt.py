"""TensorRT readiness: the operator-support check, version parsing, fp32 layer pinning on both exporters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from lgp_edge.errors import UnsupportedOperator, UsageError
from lgp_edge.export.onnx_export import export_onnx, onnx_opset
from lgp_edge.export.tensorrt import check_operators, fp32_nodes, trt_version
from lgp_edge.export.trt_ops import max_opset, parse_trt_version, table_for, unsupported_ops
from lgp_edge.pool.pool import load_pool
from lgp_edge.targets import load_target


def _model(path: Path, op: str, opset: int, domain: str = "") -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
             helper.make_node(op, ["r"], ["y"], name="the_node", domain=domain)]
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=imports), str(path))
    return path


def test_parse_versions() -> None:
    assert parse_trt_version("TensorRT 8.2.1 (JetPack 4.6.x, CUDA 10.2)") == (8, 2)
    assert parse_trt_version("TensorRT 10.3 (JetPack 6.1, CUDA 12.6)") == (10, 3)
    assert parse_trt_version("TensorRT 8.6.1") == (8, 6) and parse_trt_version("TensorRT 8") == (8, 0)
    assert parse_trt_version("Core ML") is None
    assert trt_version(load_target("jetson-nano")) == (8, 2)
    assert trt_version(load_target("jetson-orin-nano")) == (10, 3)
    assert max_opset((8, 2)) == 13 and max_opset((10, 3)) == 20 and max_opset((8, 6)) == 17
    assert table_for((9, 1))[0] == (8, 6)  # between tables: the nearest older one
    with pytest.raises(ValueError):
        table_for((7, 2))


def test_the_tensorrt_8_tables_follow_the_parsers_changelog() -> None:
    """One table served TensorRT 8.0 to 8.4: Xor (added in 8.4) passed the check for a Jetson Nano's 8.2, and the
    operators 8.2 added (Einsum, GatherND, ...) passed it for 8.0 (onnx-tensorrt docs/Changelog.md)."""
    added_82 = ["Einsum", "GatherND", "IsNaN", "Round", "Scatter", "ScatterElements", "ScatterND", "Sign"]
    assert unsupported_ops([*added_82, "Xor", "MatMul"], (8, 0)) == sorted([*added_82, "Xor"])
    assert unsupported_ops([*added_82, "Xor", "MatMul"], (8, 2)) == ["Xor"]
    assert unsupported_ops([*added_82, "Xor", "MatMul"], (8, 4)) == []
    assert unsupported_ops([*added_82, "Xor"], (10, 3)) == []
    assert max_opset((8, 2)) == max_opset((8, 4)) == 13
    added_85 = ["GridSample", "MeanVarianceNormalization", "Mod", "NonZero", "RandomNormal", "RoiAlign", "Trilu"]
    assert unsupported_ops(added_85, (8, 4)) == sorted(added_85) and unsupported_ops(added_85, (8, 5)) == []
    assert unsupported_ops(["GroupNormalization", "LayerNormalization", "IsInf"], (8, 5)) == [
        "GroupNormalization", "IsInf", "LayerNormalization"]
    assert unsupported_ops(["GroupNormalization", "LayerNormalization", "IsInf"], (8, 6)) == []


def test_unsupported_ops_by_version() -> None:
    assert unsupported_ops(["LayerNormalization", "MatMul"], (8, 2)) == ["LayerNormalization"]
    assert unsupported_ops(["LayerNormalization", "MatMul"], (10, 3)) == []
    assert unsupported_ops(["NonZero", "Reciprocal"], (8, 2)) == ["NonZero", "Reciprocal"]


def test_check_operators_names_the_offending_op(tmp_path: Path) -> None:
    nano = load_target("jetson-nano")
    orin = load_target("jetson-orin-nano")
    p = _model(tmp_path / "nz.onnx", "NonZero", 13)
    with pytest.raises(UnsupportedOperator, match=r"TensorRT 8.2 on 'jetson-nano' cannot parse ONNX operator NonZero "
                                                  r"\(node the_node\)"):
        check_operators(p, nano)
    check_operators(p, orin)  # TensorRT 10 parses NonZero
    with pytest.raises(UnsupportedOperator, match="opset 17; TensorRT 8.2 .* parses opsets <= 13"):
        check_operators(_model(tmp_path / "o17.onnx", "Relu", 17), nano)
    with pytest.raises(UnsupportedOperator, match="com.example::Magic"):
        check_operators(_model(tmp_path / "c.onnx", "Magic", 13, domain="com.example"), orin)
    # a target whose runtime version names no TensorRT is refused clearly: a usage error, one line from the CLI
    bad = dataclasses.replace(nano, runtime_version="mystery runtime", extra={})
    with pytest.raises(UsageError, match="names no TensorRT version"):
        check_operators(p, bad)


@pytest.mark.parametrize("opset", [13, 17])
def test_fp32_nodes_cover_every_layernorm_and_softmax(tiny_pool: Path, tmp_path: Path, opset: int) -> None:
    pool, _ = load_pool(tiny_pool)
    spec = pool.descendants()[2]  # a stitched descendant: ti blocks, stitch, b blocks
    model = pool.descendant(spec).eval()
    fused_before = [b.attn.fused_attn for s in model.stages for b in s]
    path = export_onnx(model, torch.zeros(1, 1, 16, 16), tmp_path / "m.onnx", opset=opset, ship=True,
                       metadata={"k": "v"})
    graph = onnx.load(str(path))
    assert onnx_opset(graph) == opset
    names = set(fp32_nodes(path, model))
    blocks = sum(len(s) for s in model.stages)
    softmax = [n.name for n in graph.graph.node if n.op_type == "Softmax"]
    assert len(softmax) == blocks and set(softmax) <= names
    if opset == 13:  # decomposed: every reduction / power / root of each of the 2 * blocks + 1 norms
        assert not any(n.op_type == "LayerNormalization" for n in graph.graph.node)
        for op in ("ReduceMean", "Pow", "Sqrt"):
            nodes = [n.name for n in graph.graph.node if n.op_type == op]
            assert set(nodes) <= names, op
        assert sum(1 for n in graph.graph.node if n.op_type == "Sqrt") == 2 * blocks + 1
        # and nothing outside the norms and softmax (no matmul of attention or the MLP)
        assert not any(n.op_type in ("MatMul", "Gemm") for n in graph.graph.node if n.name in names)
        check_operators(path, load_target("jetson-nano"))
    else:
        ln = [n.name for n in graph.graph.node if n.op_type == "LayerNormalization"]
        assert len(ln) == 2 * blocks + 1 and set(ln) <= names
        check_operators(path, load_target("jetson-orin-nano"))
        with pytest.raises(UnsupportedOperator):
            check_operators(path, load_target("jetson-nano"))
    assert {p.key: p.value for p in graph.metadata_props} == {"k": "v"}
    # fused attention is restored after the opset-13 TorchScript export
    assert [b.attn.fused_attn for s in model.stages for b in s] == fused_before


@pytest.mark.parametrize("opset", [13, 17])
def test_an_onnx_export_leaves_the_processs_stdout_and_stderr_alone(opset, tmp_path, capfd):
    """Each ONNX export swapped sys.stdout and sys.stderr for a buffer while it ran: another thread of the
    application printed into the buffer meanwhile (350 of 1025 lines lost, then copied into lgp-edge's debug log).
    The exporters are quieted through their own switches and loggers; nothing reaches the terminal either."""
    import io
    import sys
    import threading
    import time

    import torch

    from lgp_edge.export.onnx_export import export_onnx
    from lgp_edge.models.ancestry import create_ancestry

    model = create_ancestry("lgp_test_tiny")[0].eval()
    app_out = io.StringIO()
    real, sys.stdout = sys.stdout, app_out
    stop, seen = threading.Event(), []

    def heartbeat() -> None:
        while not stop.is_set():
            seen.append(sys.stdout is app_out)
            time.sleep(0.002)

    t = threading.Thread(target=heartbeat)
    t.start()
    try:
        export_onnx(model, torch.zeros(1, 1, 16, 16), tmp_path / "m.onnx", opset=opset, ship=True, cache=False)
    finally:
        stop.set()
        t.join()
        sys.stdout = real
    assert seen and all(seen)  # the application's stdout stayed its own throughout
    assert app_out.getvalue() == ""
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def test_the_layer_tip_reads_the_tensorrt_version_the_export_was_checked_against() -> None:
    """A custom target naming its TensorRT only in `tensorrt_version` (runtime_version "JetPack 4.6 custom") got
    the trtexec >= 8.4 tip, though its export was checked against 8.2."""
    from lgp_edge.export.embedding import _layer_tip

    manifest = {"target": {"runtime_version": "JetPack 4.6 custom"}}
    art = {"precision": "fp16", "versions": {"tensorrt_target": "8.2"}}
    assert "--layer-info layers.json" in _layer_tip(manifest, art)
    assert "--exportLayerInfo" in _layer_tip(manifest, {**art, "versions": {"tensorrt_target": "10.3"}})
    assert _layer_tip(manifest, {**art, "precision": "fp32"}) == ""
