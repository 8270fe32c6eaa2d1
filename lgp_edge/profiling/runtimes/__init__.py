"""Runtimes behind one interface (``base.Runtime``); each module imports its backend lazily."""

from __future__ import annotations

import importlib

from lgp_edge.errors import UsageError
from lgp_edge.profiling.runtimes.base import BACKENDS, Prepared, Runtime

_REGISTRY = {
    "torch": ("lgp_edge.profiling.runtimes.torch", "TorchRuntime"),
    "onnxruntime": ("lgp_edge.profiling.runtimes.onnxruntime", "OnnxRuntime"),
    "openvino": ("lgp_edge.profiling.runtimes.openvino", "OpenVinoRuntime"),
    "tensorrt": ("lgp_edge.profiling.runtimes.tensorrt", "TensorRtRuntime"),
    "coreml": ("lgp_edge.profiling.runtimes.coreml", "CoreMlRuntime"),
}
RUNTIME_NAMES = tuple(_REGISTRY)


def check_installed(name: str) -> None:
    """BackendMissing when the Python package of runtime ``name`` is not installed, found without importing it or
    the runtime's module (which imports torch and the exporter): a refusal in a moment. ``check_available`` of the
    runtime checks the rest (a Core ML that cannot predict on this OS, a TensorRT without a GPU)."""
    from lgp_edge.backends import require

    backend = BACKENDS.get(name)
    if backend is not None:
        require(*backend)


def get_runtime(name: str) -> Runtime:
    if name not in _REGISTRY:
        raise UsageError(f"unknown runtime '{name}'; choose one of {', '.join(RUNTIME_NAMES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)()


__all__ = ["BACKENDS", "RUNTIME_NAMES", "Prepared", "Runtime", "check_installed", "get_runtime"]
