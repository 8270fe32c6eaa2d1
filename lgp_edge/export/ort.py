"""ONNX Runtime Mobile: ``model.ort`` (ORT format) for Android/iOS apps using onnxruntime-android/-mobile.

Converted from the validated ONNX export with onnxruntime's own converter (fixed, fully optimised graph
for the ARM target), beside ``model.required_operators.config`` for a reduced-operator ONNX Runtime
build. The .ort file runs in the desktop ONNX Runtime too, which is how it is validated here. With an int8
profile it is converted from the int8 QDQ ONNX (``lgp_edge.export.quantize``; ONNX Runtime Mobile runs QDQ
models with its integer kernels) and judged by top-1 agreement and top-1 change.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from lgp_edge.errors import LgpEdgeError, UsageError
from lgp_edge.export.base import ONNX_PACKAGES, ExportContext, check_opset, require_all
from lgp_edge.export.metadata import tool_versions
from lgp_edge.export.onnx_export import quiet_loggers
from lgp_edge.specs import DeviceProfile, ExportArtifact, TargetSpec

log = logging.getLogger(__name__)


def convert_to_ort(onnx_path: Path, out_dir: Path, target_platform: str = "arm") -> tuple[Path, Path]:
    """``model.ort`` and its required-operators config, written to ``out_dir``."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="lgp-ort-") as tmp:
        src = Path(tmp) / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        dst = Path(tmp) / "out"
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                    quiet_loggers("ort_format_model", "ort_format_model.utils"):
                convert_onnx_models_to_ort(src, dst, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=target_platform)
        except Exception as exc:  # the converter raises plain exceptions and prints the details
            raise LgpEdgeError(f"ONNX Runtime could not convert {onnx_path.name} to .ort: {exc}") from exc
        ort_file = dst / "model.ort"
        configs = sorted(dst.glob("*.config"))
        if not ort_file.is_file() or not configs:
            raise LgpEdgeError(f"the .ort conversion wrote no model: {sink.getvalue()[-300:]}")
        out_ort, out_cfg = out_dir / "model.ort", out_dir / "model.required_operators.config"
        shutil.copyfile(ort_file, out_ort)
        # the generated config names the temporary path; name the shipped file instead
        text = configs[0].read_text().replace(str(ort_file), out_ort.name)
        out_cfg.write_text(text)
    return out_ort, out_cfg


class OrtExporter:
    format = "ort"
    package = "onnxruntime"
    extra = "export"

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        require_all(ONNX_PACKAGES, self.extra, "ONNX Runtime Mobile (.ort) export")
        if profile.precision not in ("fp32", "int8"):
            raise UsageError(f".ort export is fp32 or int8 (ONNX Runtime Mobile's CPU kernels); "
                             f"profile precision is {profile.precision}")
        check_opset(opset, target)

    def export(self, ctx: ExportContext) -> list[ExportArtifact]:
        from lgp_edge.export.onnx import io_spec, precision_file
        from lgp_edge.export.validate import TOLERANCES, compare, onnxruntime_outputs
        from lgp_edge.fileio import sha256_file

        precision = ctx.profile.precision
        onnx_path, quant, note = precision_file(ctx, ctx.default_opset())
        platform = str(ctx.target.extra.get("ort_platform", "arm"))
        with ctx.reporter.task(f"ort: convert to ORT format ({platform})", total=1) as task:
            ort_path, cfg = convert_to_ort(onnx_path, ctx.out_dir, platform)
            task.advance()
        inputs, outputs = io_spec(onnx_path)
        logits = onnxruntime_outputs(str(ort_path), ctx.validation.images, ctx.profile.batch, ctx.dynamic_batch,
                                     ctx.reporter, "ort")
        report = compare(logits, ctx.validation, TOLERANCES[precision],
                         note=f"ONNX Runtime CPU, ORT format, {precision}")
        note = "; ".join(n for n in (f"optimised for {platform}; runs in onnxruntime-android/-mobile", note) if n)
        if precision == "int8" and report.top1_change is not None:
            note += f"; top-1 change vs torch fp32: {report.top1_change:+.2f} points"
        return [ExportArtifact(path=ort_path.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=sha256_file(ort_path), inputs=inputs,
                               outputs=outputs, validation=report, versions=tool_versions("onnxruntime"),
                               precision=precision, files=(cfg.name,), note=note, quantization=quant)]

