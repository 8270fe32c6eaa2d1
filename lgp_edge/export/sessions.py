"""Sessions on this machine's CPU, set up one way for every check that runs an exported file.

ONNX Runtime: the CPU execution provider, warnings and below not logged, as many intra-op threads as this
process may run on (ONNX Runtime's own default would try to pin threads to cores outside a restricted
affinity mask and log an error for each). OpenVINO: compiled on the CPU with ``INFERENCE_PRECISION_HINT``
f32 (a CPU with bf16 would otherwise run bf16, so what is measured is the artifact's own error).
``threads`` 0 leaves OpenVINO's default.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lgp_edge.profiling.host import usable_cpus

Runner = Callable[[np.ndarray], np.ndarray]  # images -> logits


def ort_session(path: str | Path, threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` for an ONNX or .ort file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or usable_cpus()
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def openvino_compiled(path: str | Path, threads: int = 0) -> Any:
    """An OpenVINO compiled model (IR or ONNX) on the CPU in f32."""
    import openvino as ov

    core = ov.Core()
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(core.read_model(str(path)), "CPU", cfg)


def ort_runner(path: str | Path, threads: int = 0) -> Runner:
    """``fn(images) -> logits`` for a single-input ONNX or .ort file in ONNX Runtime."""
    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def openvino_runner(path: str | Path, threads: int = 0) -> Runner:
    """``fn(images) -> logits`` for a single-input model in OpenVINO."""
    compiled = openvino_compiled(path, threads)
    request = compiled.create_infer_request()
    out = compiled.outputs[0]
    return lambda x: request.infer({0: x})[out]


def runner(path: str | Path, runtime: str, threads: int = 0) -> Runner:
    """``ort_runner`` or ``openvino_runner`` by runtime name."""
    if runtime == "onnxruntime":
        return ort_runner(path, threads)
    if runtime == "openvino":
        return openvino_runner(path, threads)
    raise ValueError(f"unknown runtime {runtime}")
