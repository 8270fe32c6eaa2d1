"""Runtimes behind one interface (``base.Runtime``); each module imports its backend lazily."""

from __future__ import annotations

import importlib

from lgp_edge.errors import UsageError
from lgp_edge.profiling.runtimes.base import Prepared, Runtime

_REGISTRY = {
    "torch": ("lgp_edge.profiling.runtimes.torch", "TorchRuntime"),
    "onnxruntime": ("lgp_edge.profiling.runtimes.onnxruntime", "OnnxRuntime"),
    "openvino": ("lgp_edge.profiling.runtimes.openvino", "OpenVinoRuntime"),
    "tensorrt": ("lgp_edge.profiling.runtimes.tensorrt", "TensorRtRuntime"),
    "coreml": ("lgp_edge.profiling.runtimes.coreml", "CoreMlRuntime"),
}
RUNTIME_NAMES = tuple(_REGISTRY)


def get_runtime(name: str) -> Runtime:
    if name not in _REGISTRY:
        raise UsageError(f"unknown runtime '{name}'; choose one of {', '.join(RUNTIME_NAMES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)()


__all__ = ["RUNTIME_NAMES", "Prepared", "Runtime", "get_runtime"]
