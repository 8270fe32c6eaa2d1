"""Optional backends (onnxruntime, openvino, nncf, coremltools, tensorrt, ...): present, and importable.

A package can be installed and still fail to import (its native library missing, a half-removed install, a
version too old for what it imports): ``find_spec`` finds it, the import raises. ``require_importable`` imports
it before any work and turns either case into one ``BackendMissing`` line that says which.
"""

from __future__ import annotations

import importlib
import importlib.util

from lgp_edge.errors import BackendMissing


def import_failure(package: str) -> str | None:
    """None when ``package`` imports; "" when it is not installed; else the first line of why it does not."""
    try:
        if importlib.util.find_spec(package) is None:
            return ""
    except (ImportError, ValueError):  # a parent that fails, or a module set to None
        return ""
    try:
        importlib.import_module(package)
    except Exception as exc:  # noqa: BLE001 - whatever the backend raises on import
        text = (str(exc).splitlines() or [""])[0][:200]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None


def require_importable(package: str, extra: str, what: str = "") -> None:
    """Raise BackendMissing unless ``package`` imports (saying whether it is missing or broken)."""
    failure = import_failure(package)
    if failure is not None:
        raise BackendMissing(package, extra, what, cause=failure or None)
