"""Lower-precision ONNX files derived from the shipped fp32 export: int8 (static QDQ) and fp16.

int8: ``onnxruntime.quantization.quantize_static`` in QDQ format: QuantizeLinear/DequantizeLinear pairs
around the int8 tensors, which ONNX Runtime fuses into integer kernels and TensorRT builds as int8 from the
scales in the file, without a calibration cache. Only MatMul/Gemm nodes with a weight input are quantized
(every block's linear layers and the stitch layers: nearly all of a ViT's FLOPs), their outputs stay float;
the classifier (the last such node: on the demo pool's ``ti6.0-3+b6.4-5``, quantizing it too lowered top-1
agreement with torch fp32 from 0.99 to 0.90, for a negligible share of the FLOPs), the patch embedding, the
products of two activations in attention, LayerNorm, softmax and GELU stay float.
Weights: int8, symmetric, one scale per output channel (a 7-bit range for ONNX Runtime on an x86 CPU without VNNI,
whose uint8 x int8 kernels saturate 16-bit sums: ``u8s8_saturates``).
Activations: one scale per tensor, from the min/max over the calibration images (real training images of
the dataset, never the validation images); uint8 with a zero point for ONNX Runtime targets (U8S8: ONNX
Runtime's x86 kernels compute uint8 x int8 products fastest on SSE4.1/AVX2/AVX-512 CPUs, onnxruntime#12088; its
quantization guide names S8S8 its default, and both run on ARM; biases int32, as its integer Gemm takes them),
int8 symmetric for TensorRT targets (TensorRT requires zero points of 0 and int8 Q/DQ only, so biases stay float).

fp16: ``onnxruntime.transformers.float16`` converts weights and activations to fp16 except LayerNorm and
softmax (the nodes ``build_engine.sh`` pins to fp32, listed by ``trt_ops.fp32_nodes``); the model's input
and output stay float32.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lgp_edge.errors import LgpEdgeError, environment_error, write_failed
from lgp_edge.export.quiet import quiet_loggers, quiet_root_records

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("MatMul", "Gemm")  # with a weight input (MatMulConstBOnly)
FP32_OPS = ("LayerNormalization", "Softmax")  # kept in fp32 by the fp16 conversion (and by build_engine.sh)


@dataclass(frozen=True)
class Int8Scheme:
    """How activations are quantized for a runtime (weights are always int8 symmetric per channel)."""

    runtime: str  # "onnxruntime" or "tensorrt"
    symmetric_activations: bool  # int8 with zero point 0 (TensorRT) or uint8 with a zero point (ONNX Runtime)
    quantize_bias: bool  # int32 biases (ONNX Runtime's QGemm) or float ones (TensorRT: int8 Q/DQ only)
    reduce_range: bool = False  # 7-bit weights: ONNX Runtime's U8S8 on an x86 CPU without VNNI (see u8s8_saturates)

    @property
    def activations(self) -> str:
        return "int8 symmetric, per tensor" if self.symmetric_activations else "uint8 asymmetric, per tensor"

    @property
    def weights(self) -> str:
        return "int8 symmetric, per output channel" + (
            ", 7-bit range (reduce_range: ONNX Runtime's uint8 x int8 kernels saturate 16-bit sums on an x86 CPU "
            "without VNNI)" if self.reduce_range else "")


SCHEMES = {"onnxruntime": Int8Scheme("onnxruntime", False, True), "tensorrt": Int8Scheme("tensorrt", True, False)}
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86 int8 dot products without 16-bit intermediate sums


def u8s8_saturates(instructions: list[str] | None, machine: str) -> bool:
    """Whether ONNX Runtime's U8S8 kernels saturate on this CPU: on x86 without VNNI they multiply with
    VPMADDUBSW, whose pairwise 16-bit sums clamp (its quantization guide: "reduce_range ... may improve the
    accuracy ... on non-VNNI machines, especially for per-channel mode"); on an AVX2-only EPYC the demo pool's
    Ti alone agreed with torch on 0.994 of the 10,000 test images with 7-bit weights, 0.979 without. False where
    the CPU's instructions cannot be read."""
    x86 = machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    return x86 and instructions is not None and not any(v in instructions for v in VNNI)


def scheme_for(runtime: str, *, saturating_cpu: bool = False) -> Int8Scheme:
    """TensorRT's scheme for a TensorRT target, ONNX Runtime's for every other (7-bit weights where the CPU
    that runs it saturates, ``u8s8_saturates``)."""
    if runtime == "tensorrt":
        return SCHEMES["tensorrt"]
    return replace(SCHEMES["onnxruntime"], reduce_range=saturating_cpu)


def scheme_for_target(target: Any) -> Int8Scheme:
    """The scheme of an export for ``target``: a target detected as this host (``cpu``) runs on this CPU, so its
    instructions decide; a board's or a phone's CPU is not this one (their targets are ARM)."""
    import platform

    from lgp_edge.profiling import host

    saturating = bool(target.hardware.detect) and u8s8_saturates(host.int8_instructions(), platform.machine())
    return scheme_for(target.runtime, saturating_cpu=saturating)


_ORT_SEVERITY = [2]  # the ONNX Runtime default log severity lgp-edge last set; 2 (warnings and up) is ORT's own


@contextlib.contextmanager
def _ort_severity(level: int) -> Iterator[None]:
    """ONNX Runtime's process-wide default log severity at ``level`` for the duration. ONNX Runtime has no
    getter for it (``set_default_logger_severity`` only), so what is put back is the value lgp-edge set before
    (an enclosing block's), else ONNX Runtime's default: an application that set a severity of its own sets it
    again after an int8 or fp16 conversion."""
    import onnxruntime

    before = _ORT_SEVERITY[-1]
    _ORT_SEVERITY.append(level)
    onnxruntime.set_default_logger_severity(level)
    try:
        yield
    finally:
        _ORT_SEVERITY.pop()
        onnxruntime.set_default_logger_severity(before)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantization tools' advice and notes out of the user's terminal, the application's logging and
    output untouched (``lgp_edge.export.quiet``): the ``onnxruntime`` loggers at ERROR, the records ONNX
    Runtime's quantization logs on the root logger itself (its pre-processing advice, its bias copies) dropped
    below ERROR, warnings raised from onnx/onnxruntime code ignored. stdout and stderr are not redirected: the
    tool prints only from its histogram calibrators, and MinMax is used. ONNX Runtime's own log at fatal only
    (its calibration session cannot be given thread settings, and under a restricted affinity mask it logs an
    error per thread it cannot pin), then back (``_ort_severity``)."""
    with warnings.catch_warnings(), quiet_loggers("onnxruntime"), quiet_root_records("onnxruntime"), \
            _ort_severity(4):
        warnings.filterwarnings("ignore", module=r"(onnxruntime|onnx)(\.|$)")
        yield


def whole_batches(n: int, batch: int) -> int:
    """How many of ``n`` calibration images a static model of batch ``batch`` is calibrated on: whole batches
    only (ONNX Runtime's and NNCF's loops both leave the rest out)."""
    return n // batch * batch


def batches_reaching(n: int, batch: int) -> int:
    """The fewest images in whole batches of ``batch`` that reach ``n``."""
    return -(-n // batch) * batch


def calibration_batch(profile: Any, dynamic_batch: bool) -> int:
    """The batch both int8 calibration loops feed: the model's static batch (1 with a dynamic batch)."""
    return 1 if dynamic_batch else profile.batch


class _Reader:
    """``CalibrationDataReader`` over images (N, C, H, W) in chunks of ``batch`` (whole ones, ``whole_batches``)."""

    def __init__(self, name: str, images: np.ndarray, batch: int) -> None:
        self._it = iter([{name: np.ascontiguousarray(images[i:i + batch])}
                         for i in range(0, whole_batches(len(images), batch), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.get_next, None)


def _copy_metadata(src: Any, dst: Any) -> None:
    del dst.metadata_props[:]
    for p in src.metadata_props:
        e = dst.metadata_props.add()
        e.key, e.value = p.key, p.value
    dst.producer_name, dst.producer_version, dst.doc_string = src.producer_name, src.producer_version, src.doc_string


def float_matmuls(model: Any) -> list[str]:
    """The MatMul/Gemm nodes left in float: those whose second input is not a weight (attention's q @ k^T and
    attn @ v), and the classifier (the last node with a weight, in the graph's topological order)."""
    weights = {t.name for t in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    mm = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    act = [n.name for n in mm if n.input[1] not in weights]
    weighted = [n.name for n in mm if n.input[1] in weights]
    return act + weighted[-1:]


def quantize_int8(src: Path, dst: Path, calibration: np.ndarray, batch: int, scheme: Int8Scheme) -> Path:
    """Static QDQ int8 of the ONNX file ``src`` calibrated on ``calibration`` (see the module docstring)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(calibration) < batch:
        raise LgpEdgeError(f"int8 calibration needs at least {batch} images, got {len(calibration)}")
    source = onnx.load(str(src))
    name = source.graph.input[0].name
    # MinMax calibration adds ReduceMin/ReduceMax outputs: per image it keeps two numbers per tensor, so every
    # calibration image is kept at once (ORT 1.32's CalibMaxIntermediateOutputs would drop all but the last chunk)
    try:
        with _quiet():
            quantize_static(str(src), str(dst), _Reader(name, calibration, batch), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=float_matmuls(source),
                            per_channel=True, reduce_range=scheme.reduce_range,
                            activation_type=QuantType.QInt8 if scheme.symmetric_activations else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True,
                                           "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
                                           "ActivationSymmetric": scheme.symmetric_activations,
                                           "QuantizeBias": scheme.quantize_bias})
    except Exception as exc:  # the tool raises plain exceptions of many kinds
        env = environment_error(exc)
        if env is not None:  # a full disk, a read-only folder...: said as every other write says it
            raise write_failed(env) from None
        raise LgpEdgeError(f"int8 quantization of {src.name} failed: {type(exc).__name__}: "
                           f"{(str(exc).splitlines() or [''])[0][:300]}") from exc
    model = onnx.load(str(dst))
    _copy_metadata(source, model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def timing_int8(onnx_path: Path, example: Any, out: Path, runtime: str) -> Path:
    """The int8 model an export ships for ``runtime``'s targets (``quantize_int8``'s static QDQ) made from
    ``onnx_path`` for timing: calibrated on 8 random inputs, so the graph and kernels are the shipped ones and
    only the scales, which do not change the speed, differ from an export's (real images there)."""
    batch = int(example.shape[0])
    calib = np.random.default_rng(0).standard_normal((max(8, batch), *example.shape[1:])).astype(np.float32)
    return quantize_int8(onnx_path, out, calib, batch, scheme_for(runtime))


def qdq_counts(path: Path) -> dict[str, int]:
    """QuantizeLinear / DequantizeLinear nodes and the MatMul/Gemm nodes fed by a DequantizeLinear weight."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {"QuantizeLinear": sum(n.op_type == "QuantizeLinear" for n in graph.node),
            "DequantizeLinear": sum(n.op_type == "DequantizeLinear" for n in graph.node),
            "int8_layers": sum(n.op_type in QUANTIZED_OPS and all(i in dq_out for i in n.input[:2])
                               for n in graph.node)}


def quantization_info(path: Path, scheme: Int8Scheme, images: int, data: str) -> dict[str, Any]:
    """What the manifest records about an int8 ONNX file."""
    counts = qdq_counts(path)
    return {"method": "static post-training quantization, QDQ format (onnxruntime.quantization.quantize_static)",
            "weights": scheme.weights, "reduce_range": scheme.reduce_range, "activations": scheme.activations,
            "calibration": "min/max", "layers": f"{counts['int8_layers']} MatMul/Gemm with weights in int8; "
                                                "classifier, patch embedding, attention products, LayerNorm, "
                                                "softmax and GELU in float",
            "calibration_images": images, "calibration_data": f"{data} (training split)" if data else "",
            "for_runtime": scheme.runtime, **counts}


def _sort_nodes(graph: Any) -> None:
    """Order ``graph``'s nodes topologically (the fp16 converter appends its input casts at the end)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise LgpEdgeError(f"the fp16 graph has a cycle or a missing input at node {rest[0].name}")
        pending = rest
    graph.ClearField("node")
    graph.node.extend(ordered)


def to_fp16(src: Path, dst: Path, keep_fp32: list[str]) -> Path:
    """``src`` with fp16 weights and activations; ``keep_fp32`` nodes and LayerNorm/softmax stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = onnx.load(str(src))
    with _quiet():
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=list(FP32_OPS),
                                         node_block_list=list(keep_fp32))
    _sort_nodes(model.graph)
    _copy_metadata(source, model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def variant_path(ctx: Any, kind: str, opset: int) -> Path:
    """``model.int8.onnx`` / ``model.fp16.onnx``; another opset of the same kind gets its opset in the name."""
    taken = any(k == kind for k, _ in ctx.variants)
    return ctx.out_dir / (f"model.{kind}.opset{opset}.onnx" if taken else f"model.{kind}.onnx")


def int8_onnx(ctx: Any, opset: int) -> tuple[Path, dict[str, Any]]:
    """The int8 QDQ ONNX of the export at ``opset`` (made once per export) and its quantization record."""
    scheme = scheme_for_target(ctx.target)
    key = ("int8", opset)
    batch, used = ctx.calibration_batch, ctx.calibration_used
    if key not in ctx.variants:
        src = ctx.onnx_file(opset)
        with ctx.reporter.task(f"int8: calibrate on {used} images, QDQ ({scheme.runtime})", total=1) as task:
            ctx.variants[key] = quantize_int8(src, variant_path(ctx, "int8", opset), ctx.calibration, batch, scheme)
            task.advance()
    path = ctx.variants[key]
    return path, quantization_info(path, scheme, used, ctx.calibration_data)


def fp16_onnx(ctx: Any, opset: int) -> tuple[Path, int]:
    """The fp16 ONNX of the export at ``opset`` (made once per export) and how many nodes stayed fp32."""
    from lgp_edge.export.trt_ops import fp32_nodes

    key = ("fp16", opset)
    src = ctx.onnx_file(opset)
    keep = fp32_nodes(src, ctx.model)
    if key not in ctx.variants:
        with ctx.reporter.task("fp16: convert (LayerNorm and softmax kept fp32)", total=1) as task:
            ctx.variants[key] = to_fp16(src, variant_path(ctx, "fp16", opset), keep)
            task.advance()
    return ctx.variants[key], len(keep)
