"""The exporters by format: a static table of where each one lives, imported when it is asked for.

Each format module defines one exporter class (``lgp_edge.export.base.Exporter``) and imports its
backend inside ``export`` only, so listing or checking formats costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lgp_edge.errors import UsageError
from lgp_edge.specs import Format

if TYPE_CHECKING:
    from lgp_edge.export.base import Exporter

EXPORTERS: dict[Format, str] = {  # format -> "module:class"
    "onnx": "lgp_edge.export.onnx:OnnxExporter",
    "tensorrt": "lgp_edge.export.tensorrt:TensorRTExporter",
    "openvino": "lgp_edge.export.openvino:OpenVINOExporter",
    "coreml": "lgp_edge.export.coreml:CoreMLExporter",
    "ort": "lgp_edge.export.ort:OrtExporter",
}


def get_exporter(fmt: str) -> Exporter:
    """The exporter of ``fmt``; UsageError for a format lgp-edge does not write."""
    if fmt not in EXPORTERS:
        raise UsageError(f"unknown format '{fmt}'; formats: {', '.join(sorted(EXPORTERS))}")
    module, _, name = EXPORTERS[fmt].partition(":")
    return getattr(importlib.import_module(module), name)()
