"""ONNX Runtime's ORT format: ``model.ort`` for Android/iOS apps using the onnxruntime-android / onnxruntime-c
packages (the full builds: the retired onnxruntime-mobile packages lacked operators these models use).

Converted from the validated ONNX export with onnxruntime's own converter (fixed, fully optimised graph
for the target's CPU: ``arm`` or ``amd64``), beside ``model.required_operators.config`` for a reduced-operator
ONNX Runtime built from source (of the converter's own version). The .ort file runs in the desktop ONNX Runtime
too, which is how it is validated here. With an int8 profile it is converted from the int8 QDQ ONNX
(``lgp_edge.export.quantize``), whose QDQ pairs the converter fuses into integer operators, and judged by top-1
agreement and top-1 change.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from lgp_edge.errors import LgpEdgeError, UsageError, environment_error, write_failed
from lgp_edge.export.base import ONNX_PACKAGES, ExportContext, check_opset, require_all
from lgp_edge.export.metadata import tool_versions
from lgp_edge.export.phone import ort_for_phone, ort_platform
from lgp_edge.export.quiet import quiet_loggers, quiet_root_records
from lgp_edge.specs import FORMAT_PRECISIONS, DeviceProfile, ExportArtifact, TargetSpec

log = logging.getLogger(__name__)

# The first ONNX Runtime release that reads each ORT format version (1.15 refuses v6 files, 1.16 reads them).
ORT_FORMAT_MIN = {6: "1.16"}


def ort_phone(note: str) -> bool:
    """Whether a ``.ort`` artifact's note (as ``export`` wrote it) is a phone's: its Android app section and
    sample go with it."""
    return ort_cpu(note) == "arm" and "onnxruntime-android package" in note


def ort_cpu(note: str) -> str:
    """The CPU a ``.ort`` artifact was converted for, read from its note ("optimised for arm; ...")."""
    return note.split("optimised for ", 1)[1].split(";", 1)[0] if "optimised for " in note else "arm"


def ort_format_version(path: Path) -> int:
    """The ORT format version a ``.ort`` file was written in (its flatbuffer's ``ort_version``)."""
    with quiet_root_records("onnxruntime"):  # onnxruntime.tools runs logging.basicConfig on import
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    return int(InferenceSession.InferenceSession.GetRootAs(Path(path).read_bytes(), 0).OrtVersion())


def ort_requirement(format_version: int) -> str:
    """Which ONNX Runtime reads a ``.ort`` file of ``format_version``, in words."""
    first = ORT_FORMAT_MIN.get(format_version)
    return (f"ONNX Runtime >= {first} (`.ort` format v{format_version})" if first else
            f"an ONNX Runtime that reads `.ort` format v{format_version} (see ONNX Runtime's ORT format notes)")


def integer_operators(config: Path) -> list[str]:
    """The integer operators a converted model runs, from its required-operators config (``domain;opset;A,B``)."""
    ops = []
    for line in config.read_text(encoding="utf-8").splitlines():
        parts = line.split(";")
        if len(parts) == 3 and not line.startswith("#"):
            ops += [op for op in parts[2].split(",")
                    if (op.startswith("Q") and op != "QuantizeLinear") or "Integer" in op]
    return sorted(set(ops))


def convert_to_ort(onnx_path: Path, out_dir: Path, target_platform: str = "arm") -> tuple[Path, Path]:
    """``model.ort`` and its required-operators config, written to ``out_dir``."""
    with quiet_root_records("onnxruntime"):  # onnxruntime.tools runs logging.basicConfig on import
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
            env = environment_error(exc)
            if env is not None:  # a full disk, a read-only folder...: said as every other write says it
                raise write_failed(env) from None
            raise LgpEdgeError(f"ONNX Runtime could not convert {onnx_path.name} to .ort: {exc}") from exc
        ort_file = dst / "model.ort"
        configs = sorted(dst.glob("*.config"))
        if not ort_file.is_file() or not configs:
            raise LgpEdgeError(f"the .ort conversion wrote no model: {sink.getvalue()[-300:]}")
        out_ort, out_cfg = out_dir / "model.ort", out_dir / "model.required_operators.config"
        shutil.copyfile(ort_file, out_ort)
        # the generated config names the temporary path; name the shipped file instead
        text = configs[0].read_text(encoding="locale").replace(str(ort_file), out_ort.name)  # open()'s default there
        out_cfg.write_text(text, encoding="utf-8")
    return out_ort, out_cfg


class OrtExporter:
    format = "ort"
    package = "onnxruntime"
    extra = "export"

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        require_all(ONNX_PACKAGES, self.extra, "ORT format (.ort) export")
        if profile.precision not in FORMAT_PRECISIONS["ort"]:
            raise UsageError(f".ort export is fp32 or int8 (ONNX Runtime's CPU kernels); "
                             f"profile precision is {profile.precision}")
        check_opset(opset, target)

    def export(self, ctx: ExportContext) -> list[ExportArtifact]:
        from lgp_edge.export.onnx import io_spec, precision_file
        from lgp_edge.export.validate import TOLERANCES, compare, onnxruntime_outputs
        from lgp_edge.fileio import sha256_file

        precision = ctx.profile.precision
        onnx_path, quant, note = precision_file(ctx, ctx.default_opset())
        cpu = ort_platform(ctx.target)
        with ctx.reporter.task(f"ort: convert to ORT format ({cpu})", total=1) as task:
            ort_path, cfg = convert_to_ort(onnx_path, ctx.out_dir, cpu)
            task.advance()
        inputs, outputs = io_spec(onnx_path)
        logits = onnxruntime_outputs(str(ort_path), ctx.validation.images, ctx.profile.batch, ctx.dynamic_batch,
                                     ctx.reporter, "ort")
        report = compare(logits, ctx.validation, TOLERANCES[precision],
                         note=f"ONNX Runtime CPU, ORT format, {precision}")
        needs = ort_requirement(ort_format_version(ort_path))
        if cpu == "amd64":
            runs = (f"optimised for {cpu}; needs {needs} on an x86-64 CPU (the onnxruntime package): its x86 kernels "
                    "(NCHWc) do not load in ARM builds such as onnxruntime-android")
        elif ort_for_phone(ctx.target):
            runs = (f"optimised for {cpu}; needs {needs}: the onnxruntime-android package, or a build from source "
                    "with its required-operators config")
        else:  # an ARM board or this ARM machine
            runs = (f"optimised for {cpu}; needs {needs} on an ARM CPU: the onnxruntime package (aarch64 Linux, macOS "
                    "on Apple silicon), or a build from source with its required-operators config")
        if precision == "int8":
            runs += f"; integer operators in the .ort: {', '.join(integer_operators(cfg)) or 'none'}"
        note = "; ".join(n for n in (runs, note) if n)
        if precision == "int8" and report.top1_change is not None:
            note += f"; top-1 change vs torch fp32: {report.top1_change:+.2f} points"
        return [ExportArtifact(path=ort_path.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=sha256_file(ort_path), inputs=inputs,
                               outputs=outputs, validation=report, versions=tool_versions("onnxruntime"),
                               precision=precision, files=(cfg.name,), note=note, quantization=quant)]

