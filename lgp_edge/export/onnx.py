"""ONNX: the descendant as a self-contained, simplified, fully checked ONNX file with its preprocessing.

The file is the shipped export of ``lgp_edge.export.onnx_export`` at ``min(target max opset, 17)`` (or
``--opset``): static input (the profile's batch) unless ``--dynamic-batch``, and ``metadata_props`` with
the descendant key, pool id, class labels, mean/std and input layout, so an app can read its
preprocessing from the model file itself. It is validated in ONNX Runtime against the torch descendant.
The profile's precision picks the file: fp32 ``model.onnx``; int8 ``model.int8.onnx`` (static QDQ,
``lgp_edge.export.quantize``), judged by top-1 agreement and top-1 change; fp16 ``model.fp16.onnx``
(LayerNorm and softmax kept fp32, float32 input and output), for GPU execution providers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lgp_edge.export.base import ONNX_PACKAGES, ExportContext, check_opset, require_all
from lgp_edge.export.metadata import preprocess_mismatches, tool_versions
from lgp_edge.export.phone import PHONE_ONNX_NOTE, ort_for_phone
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


NOTES = {"fp32": "ONNX Runtime CPU, fp32",
         "int8": "ONNX Runtime CPU, int8 QDQ (judged by top-1 agreement and top-1 change)",
         "fp16": "ONNX Runtime CPU, fp16 ONNX (LayerNorm/softmax fp32; ONNX Runtime CPU runs the ops it has no fp16 "
                 "kernel for in fp32 between fp16 tensors)"}


def validate_onnx_file(ctx: ExportContext, path: Path, what: str, precision: str = "fp32",
                       note: str = "") -> ValidationReport:
    """The ONNX file in ONNX Runtime (CPU) against the torch descendant, with ``precision``'s tolerance."""
    from lgp_edge.export.validate import TOLERANCES, compare, onnxruntime_outputs

    out = onnxruntime_outputs(str(path), ctx.validation.images, ctx.profile.batch, ctx.dynamic_batch, ctx.reporter,
                              what)
    return compare(out, ctx.validation, TOLERANCES[precision], note=note or NOTES[precision],
                   failures=preprocess_mismatches(file_metadata(path), ctx.preprocess))


def file_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props``, as an app reads them."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def precision_file(ctx: ExportContext, opset: int) -> tuple[Path, dict[str, Any], str]:
    """The ONNX file of the profile's precision at ``opset``: (path, quantization record, note)."""
    from lgp_edge.export.quantize import fp16_onnx, int8_onnx

    if ctx.profile.precision == "int8":
        path, quant = int8_onnx(ctx, opset)
        return path, quant, (f"int8 QDQ ONNX: {quant['layers']}; calibrated on {quant['calibration_images']} "
                             f"{quant['calibration_data']} images")
    if ctx.profile.precision == "fp16":
        path, kept = fp16_onnx(ctx, opset)
        return path, {}, (f"fp16 ONNX, {kept} LayerNorm/softmax nodes kept fp32, float32 input and output; for GPU "
                          "execution providers (CUDA, TensorRT, DirectML)")
    return ctx.onnx_file(opset), {}, ""


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
            ctx.onnx_file(opset)
            task.advance()
        path, quant, note = precision_file(ctx, opset)
        inputs, outputs = io_spec(path)
        report = validate_onnx_file(ctx, path, f"onnx {ctx.profile.precision}", ctx.profile.precision)
        if report.top1_change is not None and ctx.profile.precision == "int8":
            note += f"; top-1 change vs torch fp32: {report.top1_change:+.2f} points"
        if ctx.profile.precision != "fp16" and ctx.target.runtime == "onnxruntime" and ort_for_phone(ctx.target):
            note = "; ".join(n for n in (note, PHONE_ONNX_NOTE) if n)
        return [ExportArtifact(path=path.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=sha256_file(path), inputs=inputs,
                               outputs=outputs, validation=report, versions=tool_versions(*ONNX_PACKAGES),
                               precision=ctx.profile.precision, note=note, quantization=quant)]
