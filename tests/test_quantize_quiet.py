"""An int8 or fp16 conversion silences the quantization tools' own chatter, never the application around it:
its log records, its prints and its root logger's level go on as before, during and after."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app_logging():
    """An application's logging: basicConfig(INFO)-like, a handler on the root logger at INFO."""
    root = logging.getLogger()
    handler, level = _Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _tiny_onnx(path: Path) -> Path:
    """x (1, 8) -> MatMul -> Relu -> MatMul (the classifier) -> (1, 4)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W2")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _calibration() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)


def _app_speaks(seen: dict) -> None:
    """What an application does while the conversion runs (a callback, another part of the program)."""
    seen["root_level"] = logging.getLogger().level
    logging.getLogger("app").warning("app warning during the conversion")
    print("app print during the conversion")


def test_int8_quantization_leaves_the_applications_logging_and_prints_alone(tmp_path, app_logging, capsys,
                                                                             monkeypatch):
    import onnxruntime.quantization

    from lgp_edge.export.quantize import SCHEMES, quantize_int8

    real, seen = onnxruntime.quantization.quantize_static, {}

    def hooked(*args, **kwargs):
        _app_speaks(seen)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", hooked)
    quantize_int8(_tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.int8.onnx", _calibration(), 1,
                  SCHEMES["onnxruntime"])
    messages = [(r.name, r.getMessage()) for r in app_logging.records]
    assert ("app", "app warning during the conversion") in messages
    assert "app print during the conversion" in capsys.readouterr().out
    assert seen["root_level"] == logging.INFO and logging.getLogger().level == logging.INFO
    # the tool's own advice ("Please consider pre-processing", logged on the root logger) stays out
    assert not [r for r in app_logging.records if "onnxruntime" in r.pathname or r.name.startswith("onnxruntime")]


def test_fp16_conversion_leaves_the_applications_logging_alone(tmp_path, app_logging, capsys, monkeypatch):
    import onnxruntime.transformers.float16 as float16

    from lgp_edge.export.quantize import to_fp16

    real, seen = float16.convert_float_to_float16, {}

    def hooked(*args, **kwargs):
        _app_speaks(seen)
        return real(*args, **kwargs)

    monkeypatch.setattr(float16, "convert_float_to_float16", hooked)
    to_fp16(_tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.fp16.onnx", [])
    assert ("app", "app warning during the conversion") in [(r.name, r.getMessage()) for r in app_logging.records]
    assert "app print during the conversion" in capsys.readouterr().out
    assert seen["root_level"] == logging.INFO and logging.getLogger().level == logging.INFO


def test_a_root_logger_without_handlers_is_left_without_handlers(tmp_path, monkeypatch):
    """The tool's module-level ``logging.warning`` would run basicConfig on a bare root logger: an application
    that never configured logging must not find a handler there afterwards."""
    from lgp_edge.export.quantize import SCHEMES, quantize_int8

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    quantize_int8(_tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.int8.onnx", _calibration(), 1,
                  SCHEMES["onnxruntime"])
    assert root.handlers == []


def test_openvino_int8_leaves_the_applications_prints_and_nncf_level_alone(tmp_path, app_logging, capsys,
                                                                           monkeypatch):
    """NNCF draws its progress on rich's global console (stdout): that console is silenced, not stdout; NNCF's
    logger is put back at the level it had."""
    nncf = pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    from lgp_edge.export.openvino import quantize_int8
    from lgp_edge.progress import NULL

    nncf_logger = logging.getLogger("nncf")
    monkeypatch.setattr(nncf_logger, "level", logging.INFO)
    real, seen = nncf.quantize, {}

    def hooked(*args, **kwargs):
        _app_speaks(seen)
        return real(*args, **kwargs)

    monkeypatch.setattr(nncf, "quantize", hooked)
    model = ov.Core().read_model(str(_tiny_onnx(tmp_path / "m.onnx")))
    quantize_int8(model, _calibration(), 1, NULL)
    out = capsys.readouterr().out
    assert "app print during the conversion" in out
    assert "Statistics collection" not in out  # NNCF's progress bars
    assert ("app", "app warning during the conversion") in [(r.name, r.getMessage()) for r in app_logging.records]
    assert nncf_logger.level == logging.INFO and seen["root_level"] == logging.INFO
