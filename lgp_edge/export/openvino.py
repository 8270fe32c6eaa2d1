"""OpenVINO: IR (model.xml + model.bin) in fp32, fp16 (compressed weights) or int8 (NNCF post-training).

The IR is converted from the validated fp32 ONNX export. int8 runs NNCF's post-training quantization
(transformer model type: SmoothQuant + fast bias correction) on at least 300 real calibration images
from the training split (never validation images), the classifier (the last MatMul) kept float as in the
ONNX int8 export (``lgp_edge.export.quantize``), and reports the top-1 change against the torch fp32
descendant. The IR's rt_info holds lgp-edge's metadata under ``model_info/lgp_edge`` and the OpenVINO
Model API keys (``model_type``, ``labels``, ``mean_values``, ``scale_values``, ...) under ``model_info``,
so Model API users load it with no glue. Validation compiles the IR on the CPU with INFERENCE_PRECISION_HINT
f32 (this CPU would otherwise run bf16), so what is measured is the IR's own error. Nodes the conversion and NNCF
leave unnamed are named by their place in the graph before saving (``stable_names``), so the same export writes
the same model.xml.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from lgp_edge.errors import UsageError
from lgp_edge.export.base import ExportContext, check_opset, require, require_all
from lgp_edge.export.metadata import tool_versions
from lgp_edge.export.quantize import whole_batches
from lgp_edge.export.quiet import quiet_loggers, quiet_rich_console
from lgp_edge.fileio import tool_write
from lgp_edge.specs import DeviceProfile, ExportArtifact, Precision, TargetSpec

log = logging.getLogger(__name__)

MIN_CALIBRATION = 300
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")  # IR precisions this exporter writes


def _io(model: Any) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    def _one(port: Any) -> dict[str, Any]:
        shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
        return {"name": port.get_any_name(), "shape": shape, "dtype": port.get_element_type().to_dtype().name}

    return tuple(_one(p) for p in model.inputs), tuple(_one(p) for p in model.outputs)


def classifier_scope(model: Any) -> Any:
    """NNCF's ignored scope holding the classifier: the last MatMul of the model (None when it has none)."""
    import nncf

    mms = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    return nncf.IgnoredScope(names=mms[-1:]) if mms else None


def quantize_int8(model: Any, calibration: Any, batch: int, reporter: Any) -> Any:
    """NNCF post-training quantization of an OpenVINO model on ``calibration`` images (N, C, H, W), in whole
    batches of ``batch`` (``quantize.whole_batches``)."""
    import nncf

    items = [calibration[i:i + batch] for i in range(0, whole_batches(len(calibration), batch), batch)]
    scope = classifier_scope(model)
    # NNCF's notes on its own logger, its progress bars on rich's global console; torch's note on a machine
    # without CUDA, when NNCF first imports torch's extension loader
    with reporter.task(f"openvino: int8 calibration on {len(items) * batch} images", total=1) as task, \
            quiet_loggers("nncf", "torch.utils.cpp_extension"), quiet_rich_console():
        quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(items), **({"ignored_scope": scope} if scope else {}))
        task.advance()
    return quantized


def stable_names(model: Any) -> Any:
    """Name every node named after OpenVINO's node counter by its type and place in the graph's order.

    A node OpenVINO creates without a name is called ``Type_<counter>`` (``Constant_186669``), and the
    conversion and NNCF copy such names onto the nodes they fold or add (a ``Const`` named ``Reshape_82634``):
    the counter is process-wide, so the names moved with whatever the process built before and model.xml
    differed between two runs of the same export. The names the ONNX file (``node_*``, ``val_*``, the
    weights') and NNCF (``*/fq_output_0``) give are kept; only friendly names change, not tensor names.
    """
    ops = list(model.get_ordered_ops())
    taken = {op.get_friendly_name() for op in ops}
    for i, op in enumerate(ops):
        if re.fullmatch(r"[A-Z][A-Za-z0-9]*_\d+", op.get_friendly_name()):
            name = f"{op.get_type_name()}_n{i}"
            while name in taken:
                name += "_"
            op.set_friendly_name(name)
            taken.add(name)
    return model


def _weight_dtype(port: Any) -> str | None:
    """Element type of the constant a weight input comes from, through its dequantization (None: not a
    constant)."""
    node = port.get_source_output().get_node()
    while node.get_type_name() in ("Convert", "Multiply", "Subtract", "Reshape", "Transpose") and node.get_input_size():
        node = node.input(0).get_source_output().get_node()
    return str(node.get_element_type().get_type_name()) if node.get_type_name() == "Constant" else None


def int8_ir_info(model: Any, images: int, data: str) -> dict[str, Any]:
    """What the manifest records about an NNCF int8 IR, counted in ``model``: the FakeQuantize nodes (their
    levels) and the MatMul/Convolution layers whose weights are stored in int8."""
    ops = list(model.get_ordered_ops())
    fq = [op for op in ops if op.get_type_name() == "FakeQuantize"]
    levels = sorted({int(op.get_attributes()["levels"]) for op in fq})
    dtypes = [_weight_dtype(op.input(1)) for op in ops if op.get_type_name() in ("MatMul", "Convolution")]
    weighted = [d for d in dtypes if d is not None]  # layers with a constant weight (not activation x activation)
    int8 = [d for d in weighted if d in ("i8", "u8")]
    return {"method": "NNCF post-training quantization (nncf.quantize, model_type TRANSFORMER: SmoothQuant, fast "
                      "bias correction)",
            "weights": "int8, per output channel",
            "activations": f"FakeQuantize per tensor, {'/'.join(map(str, levels))} levels",
            "calibration": "NNCF's statistics over the calibration images",
            "layers": (f"{len(int8)} of {len(weighted)} MatMul/Convolution with weights in int8 (the patch embedding "
                       "included; attention inputs quantized); classifier, LayerNorm, softmax and GELU in float"),
            "calibration_images": images, "calibration_data": f"{data} (training split)" if data else "",
            "for_runtime": "openvino", "FakeQuantize": len(fq), "int8_layers": len(int8)}


def model_api_info(pre: Any, crop: tuple[float, str] | None = None) -> dict[str, str]:
    """The OpenVINO Model API keys (``model_info``) that let ``ClassificationModel.create_model`` load the IR.

    Model API normalises 0..255 pixels as ``(pixel - mean_values) / scale_values`` after resizing the whole
    image to the input size (``resize_type`` standard, no crop, as in training); it reads images as
    OpenCV's BGR, so an RGB model asks it to reverse the channels. Lists are space-separated, so a space
    inside a label becomes '_' there (the exact labels stay in ``model_info/lgp_edge/labels``, JSON).
    Model API always feeds 3-channel images: for a model of another channel count (a grayscale one) no keys
    are written, since ``create_model`` would fail on it ("Resulting shape '[1,3,H,W]' after preprocessing is
    not aligned with original parameter's shape").
    """
    if pre.in_chans != 3 or crop is not None:  # Model API's resize cannot be timm's crop_pct either
        return {}
    return {"model_type": "Classification",
            "labels": " ".join(lab.replace(" ", "_") for lab in pre.labels),
            "mean_values": " ".join(f"{m * 255:.6g}" for m in pre.mean),
            "scale_values": " ".join(f"{s * 255:.6g}" for s in pre.std),
            "resize_type": "standard",
            "reverse_input_channels": "True" if pre.in_chans == 3 else "False",
            "output_raw_scores": "True"}


def metadata_mismatches(model: Any, pre: Any, crop: tuple[float, str] | None = None) -> list[str]:
    """Where a written IR's rt_info (read back: lgp-edge's keys under ``model_info/lgp_edge``, the Model API keys
    under ``model_info``) says other preprocessing than the model's ``pre``."""
    from lgp_edge.export.metadata import preprocess_mismatches

    def read(*path: str) -> str | None:
        return model.get_rt_info(list(path)).astype(str) if model.has_rt_info(list(path)) else None

    ours = {k: v for k in ("mean", "std", "labels", "img_size", "in_chans")
            if (v := read("model_info", "lgp_edge", k)) is not None}
    problems = preprocess_mismatches(ours, pre)
    for key, want in model_api_info(pre, crop).items():
        got = read("model_info", key)
        if got != want:
            problems.append(f"Model API metadata '{key}' of the IR is {got!r}, the model takes {want!r}")
    return problems


class OpenVINOExporter:
    format = "openvino"
    package = "openvino"
    extra = "export"

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        require_all(("onnx", "onnxslim", "onnxscript", "openvino"), self.extra, "OpenVINO export")
        if profile.precision == "int8":
            require("nncf", self.extra, "OpenVINO int8 quantization")
        if profile.precision not in PRECISIONS:
            raise UsageError(f"OpenVINO export makes fp32, fp16 or int8 IR, not {profile.precision}")
        check_opset(opset, target)

    def export(self, ctx: ExportContext) -> list[ExportArtifact]:
        import openvino as ov

        from lgp_edge.export.validate import TOLERANCES, compare, openvino_outputs
        from lgp_edge.fileio import sha256_file

        precision = ctx.profile.precision
        batch, used = ctx.calibration_batch, ctx.calibration_used
        if precision == "int8" and used < MIN_CALIBRATION:
            raise UsageError(f"int8 calibration needs >= {MIN_CALIBRATION} images in whole batches of {batch}, got "
                             f"{used} of {len(ctx.calibration)}")
        onnx_path = ctx.onnx_file(ctx.default_opset())
        with ctx.reporter.task(f"openvino: convert to IR ({precision})", total=1) as task:
            model = stable_names(ov.convert_model(str(onnx_path)))  # before NNCF, which derives names from them
            task.advance()
        note = "validated with INFERENCE_PRECISION_HINT f32 (CPUs with bf16 pick bf16 by default)"
        if precision == "int8":
            model = quantize_int8(model, ctx.calibration, batch, ctx.reporter)
            note += f"; NNCF PTQ on {used} calibration images ({ctx.calibration_data} training split)"
        for k, v in ctx.metadata().items():
            model.set_rt_info(v, ["model_info", "lgp_edge", k])
        for k, v in model_api_info(ctx.preprocess, ctx.crop).items():
            model.set_rt_info(v, ["model_info", k])
        xml = ctx.out_dir / "model.xml"
        with tool_write(xml, need=2 * onnx_path.stat().st_size + (1 << 20)):  # "iostream error", nothing more
            ov.save_model(stable_names(model), str(xml), compress_to_fp16=precision == "fp16")
        inputs, outputs = _io(model)
        written = ov.Core().read_model(str(xml))
        logits = openvino_outputs(str(xml), ctx.validation.images, ctx.profile.batch, ctx.dynamic_batch, ctx.reporter,
                                  f"openvino {precision}")
        report = compare(logits, ctx.validation, TOLERANCES[precision], note=f"OpenVINO CPU, {precision} IR",
                         failures=metadata_mismatches(written, ctx.preprocess, ctx.crop))
        if precision == "int8" and report.top1_change is not None:
            note += f"; top-1 change vs torch fp32: {report.top1_change:+.2f} points"
        bin_path = xml.with_suffix(".bin")
        return [ExportArtifact(path=xml.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=sha256_file(xml), inputs=inputs, outputs=outputs,
                               validation=report, versions=tool_versions("openvino", "nncf", "onnx"),
                               precision=precision, files=(bin_path.name,), note=note,
                               quantization=(int8_ir_info(written, used,
                                                          ctx.calibration_data) if precision == "int8" else {}))]

