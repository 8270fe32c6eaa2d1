"""TensorRT: an ONNX file the target's TensorRT parses, checked operator by operator, plus the build script.

TensorRT engines are specific to one GPU and one TensorRT version, so the engine is built on the device:
the output holds ``model.onnx`` at the target's opset (Jetson Nano / TensorRT 8.2: <= 13, LayerNorm
decomposed), ``fp32_layers.txt`` (the LayerNorm and softmax nodes, kept in fp32 inside an fp16 or int8
engine: their reductions and exponentials overflow or lose the variance in fp16), ``build_engine.sh``
(trtexec with ``--fp16 --precisionConstraints=obey --layerPrecisions=…`` where trtexec has those flags
(>= 8.4), else ``build_engine.py`` through the TensorRT Python API with OBEY_PRECISION_CONSTRAINTS, or
STRICT_TYPES before 8.4), and the target's device-side bench script.

int8 ships ``model.int8.onnx``: explicitly quantized (QuantizeLinear/DequantizeLinear with int8 symmetric
scales calibrated here on real training images, ``lgp_edge.export.quantize``), which TensorRT builds as int8
from the scales in the file (``--int8 --fp16``), with no calibration cache.

Checks here, before anything is written to OUT, in ONNX Runtime on the CPU: fp32, the ONNX file itself;
fp16, the file itself and its fp16 conversion with the same LayerNorm/softmax nodes kept fp32 (fp16
weights and activations; ONNX Runtime runs the ops it has no fp16 CPU kernel for in fp32, so this is close
to, not the same as, the engine's arithmetic); int8, the QDQ file (the engine's int8 scales, ONNX Runtime's
integer kernels), judged by top-1 agreement and top-1 change. When ``tensorrt`` imports and a CUDA GPU is
present, ``model.plan`` is built here too and, with TensorRT >= 8.5, validated on the GPU against torch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from lgp_edge.errors import UnsupportedOperator, UsageError
from lgp_edge.export.base import ONNX_PACKAGES, ExportContext, check_opset, require_all
from lgp_edge.export.metadata import tool_versions
from lgp_edge.export.onnx import io_spec, validate_onnx_file
from lgp_edge.export.quantize import fp16_onnx, int8_onnx
from lgp_edge.export.trt_ops import fp32_nodes, max_opset, parse_trt_version, unsupported_ops
from lgp_edge.specs import PRECISIONS, DeviceProfile, ExportArtifact, Precision, TargetSpec, ValidationReport

log = logging.getLogger(__name__)

ENGINE_PRECISIONS: tuple[Precision, ...] = ("fp16", "fp32", "int8")  # int8: from the QDQ ONNX, no calibration cache
PINNED_PRECISIONS = ("fp16", "int8")  # engines with fp16 layers, whose LayerNorm/softmax are pinned to fp32
FP32_LAYERS_HEADER = "# ONNX nodes kept in fp32 inside the fp16 / int8 engine (LayerNorm and softmax)\n"
TRT_FLAGS = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}  # int8: QDQ layers int8, the others fp16
PIN_FLAGS = " --precisionConstraints=obey --layerPrecisions=\"$spec\" --layerOutputTypes=\"$spec\""
# a pinned build needs its list: without it trtexec would get an empty --layerPrecisions and pin nothing
PIN_CHECK = ('[ -s fp32_layers.txt ] || { echo "build_engine.sh: fp32_layers.txt (the layers kept in fp32) is '
             'missing; copy it from the export" >&2; exit 3; }\n')
SPEC_LINE = "    spec=$(sed -e '/^#/d' -e '/^$/d' -e 's/$/:fp32/' fp32_layers.txt | paste -sd, -)\n"


def trt_version(target: TargetSpec) -> tuple[int, int]:
    text = str(target.extra.get("tensorrt_version", "")) or target.runtime_version
    v = parse_trt_version(text if "tensorrt" in text.lower() else f"TensorRT {text}")
    if v is None:
        raise UsageError(f"target '{target.name}' names no TensorRT version in runtime_version "
                         f"('{target.runtime_version}'); write e.g. 'TensorRT 8.2 (JetPack 4.6)'")
    return v


def check_operators(onnx_path: Path, target: TargetSpec) -> None:
    """Fail early, naming the operator, when the target's TensorRT cannot parse the graph."""
    import onnx

    version = trt_version(target)
    model = onnx.load(str(onnx_path), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset > max_opset(version):
        raise UnsupportedOperator(f"the ONNX model has opset {opset}; TensorRT {version[0]}.{version[1]} on "
                                  f"'{target.name}' parses opsets <= {max_opset(version)}; pass --opset")
    ops = [n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")]
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    bad = unsupported_ops(ops, version) + custom
    if bad:
        nodes = [n.name for n in model.graph.node if n.op_type == bad[0].split("::")[-1]][:3]
        raise UnsupportedOperator(f"TensorRT {version[0]}.{version[1]} on '{target.name}' cannot parse ONNX "
                                  f"operator {bad[0]} (node {', '.join(nodes)})"
                                  + (f" nor {', '.join(bad[1:])}" if len(bad) > 1 else ""))


def _comment(value: object) -> str:
    """``value`` as text safe inside a ``#`` comment line: printable characters only, one line."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


MIN_MAX_BATCH = 8  # a dynamic-batch engine's optimization profile reaches at least this batch


def max_batch(input_shape: tuple[int, ...]) -> int:
    """The largest batch a dynamic-batch engine built by build_engine.sh accepts (its --maxShapes)."""
    return max(MIN_MAX_BATCH, int(input_shape[0]))


def engine_shapes(input_name: str, input_shape: tuple[int, ...]) -> str:
    """``NAME:MIN:OPT:MAX`` of a dynamic-batch engine's optimization profile (batch 1 .. ``max_batch``), the
    form build_engine.py's --shapes and bench.sh's SHAPES take."""
    dims = "x".join(str(int(d)) for d in input_shape)
    lo = "x".join(str(d) for d in (1, *input_shape[1:]))
    hi = "x".join(str(d) for d in (max_batch(input_shape), *input_shape[1:]))
    return f"{input_name}:{lo}:{dims}:{hi}"


def _shape_flags(input_name: str, input_shape: tuple[int, ...], dynamic_batch: bool) -> tuple[str, str, str]:
    """(trtexec's --min/opt/maxShapes, build_engine.py's --shapes, trtexec --loadEngine's --shapes) for a
    dynamic batch; empty when static."""
    if not dynamic_batch:
        return "", "", ""
    name, lo, dims, hi = engine_shapes(input_name, input_shape).split(":")
    return (f" --minShapes={name}:{lo} --optShapes={name}:{dims} --maxShapes={name}:{hi}",
            f" --shapes {name}:{lo}:{dims}:{hi}", f" --shapes={name}:{dims}")


TIME_WARMUP_MS = 500  # build_engine.sh --time: trtexec --warmUp (the runs it starts, and the runs it leaves out)


def build_script(*, onnx_name: str, precision: str, input_name: str, input_shape: tuple[int, ...],
                 dynamic_batch: bool, key: str, target: TargetSpec, pool_id: str = "", batch: int = 1) -> str:
    """``build_engine.sh`` (``lgp_edge/data/templates/build_engine.sh``): trtexec (for an engine with layers pinned
    to fp32, one that has ``--layerPrecisions``, TensorRT >= 8.4), else build_engine.py. An fp32 engine pins
    nothing, so any trtexec builds it (JetPack 4.6's too, without the Python bindings).

    Every value from outside (target file, pool) is either a checked name, quoted for the shell, or
    flattened to one printable line inside a comment, so nothing in a target file becomes a command.
    """
    from lgp_edge.export.assets import ShellTemplate, template

    for what, value in (("input name", input_name), ("ONNX file name", onnx_name)):
        if not value or any(not (c.isalnum() or c in "._-") for c in value):
            raise UsageError(f"{what} '{value}' cannot be written into build_engine.sh (letters, digits, '._-')")
    if precision not in PRECISIONS:
        raise UsageError(f"precision '{precision}' cannot be written into build_engine.sh")
    meta = json.dumps({"descendant_key": key, "pool_id": pool_id, "target": target.name, "precision": precision,
                       "batch": int(input_shape[0]) if input_shape else int(batch)}, sort_keys=True)
    if "'" in meta or not meta.isprintable():
        raise UsageError(f"descendant '{key}' or target '{target.name}' cannot be written into build_engine.sh")
    pinned = precision in PINNED_PRECISIONS
    shapes, py_shapes, load_shapes = _shape_flags(input_name, input_shape, dynamic_batch)
    return ShellTemplate(template("build_engine.sh")).substitute(
        key=_comment(key), target=_comment(target.name), runtime=_comment(target.runtime_version),
        precision=precision, input_name=input_name, dims="x".join(str(int(d)) for d in input_shape),
        pinned=(" (int8 from the QuantizeLinear/DequantizeLinear scales in the ONNX file: no calibration cache)"
                if precision == "int8" else "")
        + (" with the LayerNorm and softmax layers of fp32_layers.txt kept in fp32" if pinned else ""),
        kind=" (dynamic batch)" if dynamic_batch else " (static)", onnx_name=onnx_name, meta=meta,
        warmup_ms=str(TIME_WARMUP_MS),
        trt_flags=TRT_FLAGS[precision] + (PIN_FLAGS if pinned else ""), shapes=shapes, py_shapes=py_shapes,
        load_shapes=load_shapes, pin_check=PIN_CHECK if pinned else "", spec_line=SPEC_LINE if pinned else "",
        trt_test=('[ -n "$trtexec" ] && "$trtexec" --help 2>&1 | grep -q -- \'--layerPrecisions\''
                  if pinned else '[ -n "$trtexec" ]'),
        fallback_why=("trtexec before TensorRT 8.4 cannot pin layer precisions: build_engine.py pins them with the "
                      "Python API." if pinned else "no trtexec: build_engine.py builds it with the Python API."))


def _plan_buildable() -> bool:
    """tensorrt (>= 8.5, whose tensor API the local validation uses) imports and a CUDA GPU is present."""
    from lgp_edge.backends import import_failure

    failure = import_failure("tensorrt")
    if failure:  # installed and broken (a pip tensorrt without CUDA's libraries): the plan is optional
        log.warning("tensorrt is installed but cannot be imported (%s); model.plan is left to build_engine.sh",
                    failure)
    if failure is not None:
        return False
    import tensorrt as trt
    import torch

    v = parse_trt_version(f"TensorRT {trt.__version__}")
    if v is None or v < (8, 5):
        log.warning("tensorrt %s here is older than 8.5; model.plan is left to build_engine.sh", trt.__version__)
        return False
    return torch.cuda.is_available()


def _plan_outputs(plan: Path, images: Any, batch: int) -> Any:
    """Logits of a built engine on the GPU (TensorRT >= 8.5 tensor API)."""
    import tensorrt as trt
    import torch

    from lgp_edge.export.validate import run_static

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    in_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    stream = torch.cuda.Stream()

    def run(x: Any) -> Any:
        inp = torch.from_numpy(x).cuda()
        context.set_input_shape(in_name, tuple(inp.shape))
        out = torch.empty(tuple(context.get_tensor_shape(out_name)), device="cuda", dtype=torch.float32)
        context.set_tensor_address(in_name, inp.data_ptr())
        context.set_tensor_address(out_name, out.data_ptr())
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()

    return run_static(run, images, batch)


class TensorRTExporter:
    format = "tensorrt"
    package = "onnx"
    extra = "export"

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        require_all(ONNX_PACKAGES, self.extra, "TensorRT export (ONNX + build script)")
        if profile.precision not in ENGINE_PRECISIONS:
            raise UsageError(f"TensorRT export builds fp32, fp16 or int8 engines, not {profile.precision}")
        check_opset(opset, target)
        version = trt_version(target)
        if opset is not None and opset > max_opset(version):
            raise UsageError(f"--opset {opset} is above what TensorRT {version[0]}.{version[1]} parses "
                             f"({max_opset(version)})")

    def export(self, ctx: ExportContext) -> list[ExportArtifact]:
        from lgp_edge.fileio import sha256_file

        version = trt_version(ctx.target)
        opset = min(ctx.default_opset(), max_opset(version))
        with ctx.reporter.task(f"tensorrt: ONNX opset {opset} for TensorRT {version[0]}.{version[1]}", total=1) as t:
            onnx_path = ctx.onnx_file(opset)
            t.advance()
        quant: dict[str, Any] = {}
        if ctx.profile.precision == "int8":
            onnx_path, quant = int8_onnx(ctx, opset)
        check_operators(onnx_path, ctx.target)
        inputs, outputs = io_spec(onnx_path)
        pinned = ctx.profile.precision in PINNED_PRECISIONS
        layers = fp32_nodes(onnx_path, ctx.model) if pinned else []
        files = self._write_build_files(ctx, onnx_path.name, inputs[0]["name"], layers)
        report = self._validate(ctx, onnx_path, opset)
        note = (f"{'int8 QDQ' if quant else 'fp32'} ONNX, from which build_engine.sh builds the "
                f"{ctx.profile.precision} engine; engine not built here: run build_engine.sh on the "
                f"{ctx.target.name} ({ctx.target.runtime_version})")
        if pinned:
            note += f"; {len(layers)} LayerNorm/softmax nodes pinned to fp32"
        if quant:
            note += (f"; int8 from the QDQ scales in {onnx_path.name} ({quant['int8_layers']} layers), "
                     "no calibration cache")
        if ctx.dynamic_batch:  # the engine's optimization profile bounds the batch, not the ONNX file
            top = max_batch(ctx.input_shape)
            inputs = [{**inputs[0], "batch_range": [1, top],
                        "engine_shapes": engine_shapes(inputs[0]["name"], ctx.input_shape)}, *inputs[1:]]
            note += (f"; dynamic batch 1..{top} (the engine's optimization profile, --maxShapes in "
                     "build_engine.sh)")
        arts = [ExportArtifact(path=onnx_path.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=sha256_file(onnx_path), inputs=inputs,
                               outputs=outputs, validation=report,
                               versions={**tool_versions("onnx", "onnxslim", "onnxruntime"),
                                         "tensorrt_target": f"{version[0]}.{version[1]}"},
                               precision=ctx.profile.precision, files=tuple(files), note=note, quantization=quant)]
        if ctx.build_plan and _plan_buildable():
            arts.append(self._build_plan(ctx, onnx_path, layers, inputs, outputs))
        return arts

    def _validate(self, ctx: ExportContext, onnx_path: Path, opset: int) -> ValidationReport:
        """The shipped ONNX in ONNX Runtime; for fp16 also its fp16 conversion (see the module docstring)."""
        precision = ctx.profile.precision
        if precision == "int8":
            return validate_onnx_file(ctx, onnx_path, "tensorrt int8 qdq onnx", "int8",
                                      note="int8 QDQ ONNX (the engine's int8 scales) in ONNX Runtime CPU; the engine "
                                           "itself is checked on the device")
        file_report = validate_onnx_file(ctx, onnx_path, "tensorrt onnx")
        if precision != "fp16":
            return file_report
        fp16_path, kept = fp16_onnx(ctx, opset)
        note = (f"fp16 ONNX with the {kept} nodes of fp32_layers.txt kept fp32, in ONNX Runtime CPU (which runs the "
                "ops it has no fp16 kernel for in fp32): an approximation of the engine's fp16, whose own kernels are "
                f"checked on the device; the fp32 ONNX file itself: max|diff| {file_report.max_abs_diff:.2e}, "
                f"{'passed' if file_report.passed else 'FAILED'}")
        report = validate_onnx_file(ctx, fp16_path, "tensorrt fp16", "fp16", note=note)
        return dataclasses.replace(report, passed=report.passed and file_report.passed)

    def _write_build_files(self, ctx: ExportContext, onnx_name: str, input_name: str, layers: list[str]) -> list[str]:
        """fp32_layers.txt, build_engine.sh, build_engine.py and the target's bench script (when it has one)."""
        from lgp_edge.export.assets import copy_device_script, make_executable

        out = ctx.out_dir
        bad = [n for n in layers if "," in n or ":" in n]
        if bad:
            raise UsageError(f"ONNX node name '{bad[0]}' has a ',' or ':' that trtexec's --layerPrecisions cannot take")
        (out / "fp32_layers.txt").write_text(FP32_LAYERS_HEADER + "\n".join(layers) + "\n", encoding="utf-8")
        copy_device_script("build_engine.py", out / "build_engine.py", executable=True)
        script = build_script(
            pool_id=ctx.pool_id, onnx_name=onnx_name, precision=ctx.profile.precision, input_name=input_name,
            input_shape=ctx.input_shape, dynamic_batch=ctx.dynamic_batch, key=ctx.record.key, target=ctx.target)
        (out / "build_engine.sh").write_text(script, encoding="utf-8")
        make_executable(out / "build_engine.sh")
        files = ["build_engine.sh", "build_engine.py", "fp32_layers.txt"]
        bench = self._bench_script(ctx)
        if bench is not None:
            (out / "bench.sh").write_bytes(bench.read_bytes())
            make_executable(out / "bench.sh")
            files.append("bench.sh")
        return files

    def _bench_script(self, ctx: ExportContext) -> Path | None:
        from lgp_edge.targets import bench_script

        try:
            return bench_script(ctx.target, ctx.targets_dir)
        except UsageError as exc:
            log.warning("no device bench script for target %s: %s", ctx.target.name, exc)
            return None

    def _build_plan(self, ctx: ExportContext, onnx_path: Path, layers: list[str], inputs: Any,
                    outputs: Any) -> ExportArtifact:
        """model.plan for the GPU of this machine (useful when this machine is the device)."""
        import tensorrt as trt

        from lgp_edge.export.assets import load_device_module
        from lgp_edge.export.validate import TOLERANCES, compare
        from lgp_edge.fileio import sha256_file

        plan = ctx.out_dir / "model.plan"
        shapes = None
        if ctx.dynamic_batch:
            b, *rest = ctx.input_shape
            shapes = (inputs[0]["name"], (1, *rest), (b, *rest), (max(8, b), *rest))
        with ctx.reporter.task("tensorrt: build model.plan on this GPU", total=1) as t:
            load_device_module("build_engine.py").build_engine(str(onnx_path), str(plan), ctx.profile.precision,
                                                               layers, shapes=shapes, log=log.info)
            t.advance()
        logits = _plan_outputs(plan, ctx.validation.images, ctx.profile.batch)
        report = compare(logits, ctx.validation, TOLERANCES[ctx.profile.precision], note="TensorRT engine on this GPU")
        return ExportArtifact(path=plan.name, format=self.format, profile=ctx.profile.name,
                              descendant_key=ctx.record.key, sha256=sha256_file(plan), inputs=inputs, outputs=outputs,
                              validation=report, versions={"tensorrt": trt.__version__},
                              precision=ctx.profile.precision,
                              note="engine for THIS machine's GPU and TensorRT; rebuild it on the device")
