"""ONNX: the descendant as a self-contained, simplified, fully checked ONNX file with its preprocessing.

The file is the shipped export of ``lgp_edge.export.onnx_export`` at ``min(target max opset, 17)`` (or
``--opset``): static input (the profile's batch) unless ``--dynamic-batch``, and ``metadata_props`` with
the descendant key, pool id, class labels, mean/std and input layout, so an app can read its
preprocessing from the model file itself. It is validated in ONNX Runtime against the torch descendant.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lgp_edge.export.base import ONNX_PACKAGES, ExportContext, check_opset, require_all
from lgp_edge.export.metadata import tool_versions
from lgp_edge.specs import DeviceProfile, ExportArtifact, TargetSpec, ValidationReport

log = logging.getLogger(__name__)


def io_spec(path: Path) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """Names, shapes and element types of an ONNX file's inputs and outputs."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def _one(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return tuple(_one(v) for v in m.graph.input), tuple(_one(v) for v in m.graph.output)


def validate_onnx_file(ctx: ExportContext, path: Path, what: str) -> ValidationReport:
    """The ONNX file in ONNX Runtime (CPU, fp32) against the torch descendant."""
    from lgp_edge.export.validate import TOLERANCES, compare, onnxruntime_outputs

    out = onnxruntime_outputs(str(path), ctx.validation.images, ctx.profile.batch, ctx.dynamic_batch, ctx.reporter,
                              what)
    return compare(out, ctx.validation, TOLERANCES["fp32"], note="ONNX Runtime CPU, fp32")


class OnnxExporter:
    format = "onnx"
    package = "onnx"
    extra = "export"

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        require_all(ONNX_PACKAGES, self.extra, "ONNX export")
        check_opset(opset, target)

    def export(self, ctx: ExportContext) -> list[ExportArtifact]:
        from lgp_edge.fileio import sha256_file

        opset = ctx.default_opset()
        with ctx.reporter.task(f"onnx: export opset {opset}", total=1) as task:
            path = ctx.onnx_file(opset)
            task.advance()
        inputs, outputs = io_spec(path)
        report = validate_onnx_file(ctx, path, "onnx")
        note = "fp32 ONNX; runtimes may run it in lower precision" if ctx.profile.precision != "fp32" else ""
        return [ExportArtifact(path=path.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=sha256_file(path), inputs=inputs,
                               outputs=outputs, validation=report, versions=tool_versions(*ONNX_PACKAGES),
                               precision="fp32", note=note)]
