"""Core ML: ``model.mlpackage`` (ML program) for iOS/macOS apps, with the preprocessing inside the model.

The descendant is traced (``torch.jit.trace``) inside a wrapper that ends in softmax, and converted with
an ``ImageType`` input: Core ML (or Vision) hands the model 0..255 pixels, and the image type's
``scale``/``bias`` apply ``(pixel / 255 - mean) / std`` (one scale for all channels; with per-channel std
the wrapper normalises instead, exactly). A classifier config attaches the class labels, so the model
returns ``classLabel`` and ``classLabel_probs``. Compute precision follows the profile (fp16 on the
iPhone), the minimum deployment target comes from the target file (``extra.minimum_ios``).

Core ML predicts on macOS only, so here the package gets a structural check (spec loads; ML program;
input name, size and colour space; classifier outputs; metadata), and ``validate_coreml.py`` plus
``coreml_validation.npz`` (real validation images as pixels with torch's probabilities) are written
beside it for a numerical check on a Mac.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lgp_edge.errors import UsageError
from lgp_edge.export.base import ExportContext, require
from lgp_edge.export.metadata import tool_versions
from lgp_edge.specs import (
    FORMAT_PRECISIONS,
    DeviceProfile,
    ExportArtifact,
    Precision,
    PreprocessSpec,
    TargetSpec,
    ValidationReport,
)

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

INPUT = "image"
DEFAULT_MIN_TARGET = "iOS16"
PRECISIONS: tuple[Precision, ...] = FORMAT_PRECISIONS["coreml"]  # Core ML compute precisions
SPEC_VERSION = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9, "macOS12": 6, "macOS13": 7, "macOS14": 8,
                "macOS15": 9}


def image_scaling(pre: PreprocessSpec) -> tuple[float, list[float], bool]:
    """(scale, bias, normalise_in_graph): Core ML computes ``scale * pixel + bias`` per channel."""
    if len(set(pre.std)) == 1:
        s = pre.std[0]
        return 1.0 / (255.0 * s), [-m / s for m in pre.mean], False
    return 1.0 / 255.0, [0.0] * pre.in_chans, True


def to_pixels(images: np.ndarray, pre: PreprocessSpec) -> np.ndarray:
    """Normalised images (N, C, H, W) back to the uint8 pixels (N, H, W, C) an app would have."""
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(1, -1, 1, 1)
    pix = np.clip(np.rint((images * std + mean) * 255.0), 0, 255).astype(np.uint8)
    return pix.transpose(0, 2, 3, 1)


def from_pixels(pixels: np.ndarray, pre: PreprocessSpec) -> np.ndarray:
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0) - mean) / std


def min_target(target: TargetSpec) -> str:
    """Core ML deployment target from the target file: ``extra.minimum_ios = "17.0"`` -> ``iOS17``."""
    ios = target.extra.get("minimum_ios")
    if ios:
        return f"iOS{str(ios).split('.')[0]}"
    macos = target.extra.get("minimum_macos")
    if macos:
        return f"macOS{str(macos).split('.')[0]}"
    return DEFAULT_MIN_TARGET


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """coremltools' output, warnings and log records below ERROR silenced for the duration."""
    import warnings

    sink = io.StringIO()
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def convert_mlprogram(model: nn.Module, *, pre: PreprocessSpec, input_shape: tuple[int, ...], precision: str,
                      deployment: str) -> Any:
    """``model`` as an ML program with an image input and classifier outputs (call inside ``quiet()``)."""
    import coremltools as ct
    import torch

    from lgp_edge.export.coreml_wrapper import ImageClassifier

    scale, bias, normalise = image_scaling(pre)
    wrapper = ImageClassifier(model, pre.mean, pre.std, normalise).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, torch.rand(input_shape))
    color = ct.colorlayout.GRAYSCALE if pre.in_chans == 1 else ct.colorlayout.RGB
    return ct.convert(traced, convert_to="mlprogram",
                      inputs=[ct.ImageType(name=INPUT, shape=input_shape, scale=scale, bias=bias, color_layout=color)],
                      classifier_config=ct.ClassifierConfig(list(pre.labels)),
                      compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                      minimum_deployment_target=getattr(ct.target, deployment))


def structural_check(path: Path, pre: PreprocessSpec, metadata: dict[str, str], deployment: str,
                     precision: str) -> list[str]:
    """Problems found in a saved .mlpackage (empty list: it is what we meant to write): the spec, the image
    input, the classifier outputs, the metadata, and in the ML program itself the image's scale and bias (the
    normalisation an app relies on), the class labels in order and the weights' precision."""
    with quiet():
        import coremltools as ct

        spec = ct.utils.load_spec(str(path))
    problems = []
    if spec.WhichOneof("Type") != "mlProgram":
        problems.append(f"model type is {spec.WhichOneof('Type')}, not mlProgram")
    want_version = SPEC_VERSION.get(deployment)
    if want_version is not None and spec.specificationVersion < want_version:
        problems.append(f"spec version {spec.specificationVersion} < {want_version} ({deployment})")
    d = spec.description
    if len(d.input) != 1 or d.input[0].name != INPUT:
        problems.append(f"inputs are {[i.name for i in d.input]}, expected ['{INPUT}']")
    else:
        problems += image_input_problems(d.input[0].type.imageType, pre, ct)
    problems += classifier_output_problems(d)
    problems += metadata_problems(d, metadata)
    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    if not weights.is_file() or weights.stat().st_size == 0:
        problems.append("weights file Data/com.apple.CoreML/weights/weight.bin is missing")
    if spec.WhichOneof("Type") == "mlProgram":
        problems += program_problems(spec, pre, precision, ct)
    return problems


def classifier_output_problems(desc: Any, where: str = "") -> list[str]:
    """A model's (or one function's) description without its classifier outputs: the predicted label and the
    probabilities, by the names the description gives them. ``where`` starts the message (a function's name)."""
    outputs = {o.name for o in desc.output}
    if desc.predictedFeatureName in outputs and desc.predictedProbabilitiesName in outputs:
        return []
    return [f"{where}classifier outputs missing (outputs {sorted(outputs)})"]


def metadata_problems(desc: Any, metadata: Mapping[str, str], *, values: bool = True) -> list[str]:
    """Each entry of ``metadata`` that the description's user metadata lacks or holds otherwise; ``values=False``
    leaves the values out of the message (a multifunction package's hold lists of descendants)."""
    user = dict(desc.metadata.userDefined)
    return [f"metadata '{k}' is {user.get(k)!r}, expected {v!r}" if values else
            f"metadata '{k}' differs from what was written" for k, v in metadata.items() if user.get(k) != v]


def program_problems(spec: Any, pre: PreprocessSpec, precision: str, ct: Any, function: str = "main") -> list[str]:
    """What the ML program's ``function`` computes on its input and stores, against what was meant: ``scale *
    pixel + bias`` (the ImageType's ``image__scaled__`` mul and ``image__biased__`` add), the classify op's
    labels, and every weight blob in fp16 or fp32 as the precision says."""
    fn = spec.mlProgram.functions[function]
    ops = list(fn.block_specializations[fn.opset].operations)
    consts = {op.outputs[0].name: op.attributes["val"] for op in ops if op.type == "const"}

    def arg(op: Any, name: str) -> Any:
        a = op.inputs[name].arguments[0] if name in op.inputs and op.inputs[name].arguments else None
        return None if a is None else consts.get(a.name) if a.name else a.value

    def floats(v: Any) -> list[float] | None:
        return None if v is None else list(v.immediateValue.tensor.floats.values)

    def consumer(kind: str, var: str) -> Any:
        return next((op for op in ops if op.type == kind and "x" in op.inputs
                     and op.inputs["x"].arguments[0].name == var), None)

    problems = []
    want_scale, want_bias, _ = image_scaling(pre)
    mul = consumer("mul", INPUT)
    scale = floats(arg(mul, "y")) if mul is not None else None
    add = consumer("add", mul.outputs[0].name) if mul is not None else None
    bias = floats(arg(add, "y")) if add is not None else [0.0]
    if not scale or not np.allclose(scale, want_scale, rtol=1e-5, atol=0):
        problems.append(f"input scale is {scale}, expected {want_scale:.8g} (1 / (255 * std))")
    if bias is None or not np.allclose(np.broadcast_to(bias, (pre.in_chans,)), want_bias, rtol=1e-5, atol=1e-7):
        problems.append(f"input bias is {bias}, expected {[round(b, 8) for b in want_bias]} (-mean / std)")
    classify = next((op for op in ops if op.type == "classify"), None)
    classes = arg(classify, "classes") if classify is not None else None
    listed = (classes is not None and classes.WhichOneof("value") == "immediateValue"
              and classes.immediateValue.WhichOneof("value") == "list")
    labels = [v.immediateValue.tensor.strings.values[0] for v in classes.immediateValue.list.values] if listed else None
    if labels != list(pre.labels):
        problems.append(f"class labels are {labels}, expected {list(pre.labels)}")
    want = "FLOAT16" if precision == "fp16" else "FLOAT32"
    blobs = [ct.proto.MIL_pb2.DataType.Name(v.type.tensorType.dataType) for v in consts.values()
             if v.WhichOneof("value") == "blobFileValue"]
    if not blobs or any(b != want for b in blobs):
        problems.append(f"weights are {sorted(set(blobs))}, expected {want} ({precision})")
    return problems


def image_input_problems(it: Any, pre: PreprocessSpec, ct: Any) -> list[str]:
    problems = []
    if (it.width, it.height) != (pre.img_size, pre.img_size):
        problems.append(f"input image is {it.width}x{it.height}, expected {pre.img_size}x{pre.img_size}")
    space = {1: "GRAYSCALE", 3: "RGB"}[pre.in_chans]
    got = ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(it.colorSpace)
    if got != space:
        problems.append(f"input colour space {got}, expected {space}")
    return problems


def write_mac_check(out_dir: Path, *, script: str, data: str, pixels: np.ndarray, probs: np.ndarray,
                    labels: np.ndarray, pre: PreprocessSpec, precision: str, **extra: Any) -> list[str]:
    """The device script ``script`` and its data file ``data`` (pixels, torch probabilities), for a Mac."""
    from lgp_edge.export.assets import copy_device_script

    np.savez_compressed(out_dir / data, pixels=pixels, probs=probs.astype(np.float32), labels=labels.astype(np.int64),
                        **extra, class_labels=np.asarray(json.dumps(list(pre.labels))), precision=np.asarray(precision))
    copy_device_script(script, out_dir / script)
    return [script, data]


# the package's "preprocess" metadata: its image input is normalised inside the model (an app that read the
# ONNX rule from it would normalise twice)
IN_MODEL_RULE = ("none: pass the image, resized to img_size x img_size; the model computes (pixel / 255 - mean) / "
                 "std per channel itself")


def io_entries(pre: PreprocessSpec, input_shape: tuple[int, ...]
               ) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """The manifest's inputs and outputs of a package (each function of a multifunction one): the 8-bit image,
    normalised in the model, and the classifier's label and probabilities."""
    inputs = ({"name": INPUT, "shape": list(input_shape), "dtype": "image",
               "color": "grayscale" if pre.in_chans == 1 else "RGB", "normalized_in_model": True},)
    outputs = ({"name": "classLabel", "shape": [], "dtype": "string"},
               {"name": "classLabel_probs", "shape": [len(pre.labels)], "dtype": "dict[string, double]"})
    return inputs, outputs


def package_rule(crop: tuple[float, str] | None, size: int) -> str:
    """The package's preprocessing rule: ``IN_MODEL_RULE``, or for a timm model evaluated with a centre crop
    (crop_pct, interpolation), the crop the app makes before passing the image."""
    if crop is None:
        return IN_MODEL_RULE
    return (f"none: pass the image with the shorter side resized to {int(size / crop[0])} ({crop[1]}) and the "
            f"central {size} x {size} cropped (timm's eval transform, crop_pct {crop[0]:g}); the model computes "
            "(pixel / 255 - mean) / std per channel itself")


def package_metadata(ctx: ExportContext) -> dict[str, str]:
    """The user metadata of ``model.mlpackage``: the export's, with the preprocessing rule of an image input."""
    return {**ctx.metadata(), "preprocess": package_rule(ctx.crop, ctx.preprocess.img_size)}


def _structural_report(ctx: ExportContext, problems: list[str]) -> ValidationReport:
    """The report of a package checked for structure here: the torch top-1 on the validation images the Mac check
    (``validate_coreml.py``) runs, and how many there are."""
    from lgp_edge.export.validate import top1

    pre = ctx.preprocess
    ref_top1 = None
    if not ctx.validation.synthetic:
        ref_top1 = top1(ctx.validation.reference, ctx.validation.labels)
    return ValidationReport(
        max_abs_diff=None, atol=None, top1_agreement=None, top1_ref=ref_top1, top1_artifact=None,
        images=len(ctx.validation.labels),
        passed=not problems, kind="structural", data=ctx.validation.data,
        note=("structural check only (Core ML predicts on macOS): spec loads, ML program, input "
              f"'{INPUT}' {pre.img_size}x{pre.img_size} and its scale and bias, classifier outputs and labels, "
              "weight precision, metadata; run "
              "'python validate_coreml.py' on a Mac for the numerical check")
        + ("" if not problems else " | FAILED: " + "; ".join(problems)))


class CoreMLExporter:
    format = "coreml"
    package = "coremltools"
    extra = "coreml"

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        require("coremltools", self.extra, "Core ML export")
        if profile.precision not in PRECISIONS:
            raise UsageError(f"Core ML export computes in fp16 or fp32, not {profile.precision}")
        if profile.batch != 1:  # the classifier outputs one label: conversion failed deep in coremltools
            from lgp_edge.profiles import COREML_ONE_IMAGE

            raise UsageError(f"profile '{profile.name}' has batch {profile.batch}: {COREML_ONE_IMAGE}; use a batch-1 "
                             "profile, or pass --format for the other formats only")
        if min_target(target) not in SPEC_VERSION:
            raise UsageError(f"target '{target.name}': Core ML deployment target '{min_target(target)}' is not one "
                             f"of {', '.join(SPEC_VERSION)}")

    def export(self, ctx: ExportContext) -> list[ExportArtifact]:
        from lgp_edge.fileio import tree_sha256

        pre = ctx.preprocess
        if pre.in_chans not in (1, 3):
            raise UsageError(f"Core ML image input needs 1 (grayscale) or 3 (RGB) channels, not {pre.in_chans}")
        deployment = min_target(ctx.target)
        path = ctx.out_dir / "model.mlpackage"
        self._save(ctx, path, deployment)
        problems = structural_check(path, pre, package_metadata(ctx), deployment, ctx.profile.precision)
        files = self._write_mac_check(ctx)
        inputs, outputs = io_entries(pre, ctx.input_shape)
        return [ExportArtifact(path=path.name, format=self.format, profile=ctx.profile.name,
                               descendant_key=ctx.record.key, sha256=tree_sha256(path), inputs=inputs,
                               outputs=outputs, validation=_structural_report(ctx, problems),
                               versions=tool_versions("coremltools"), precision=ctx.profile.precision,
                               files=tuple(files),
                               note=f"ML program, minimum deployment target {deployment}; sha256 over every file "
                                    "of the package in sorted relative-path order, each as its relative path, a "
                                    "NUL byte and its bytes")]

    def _save(self, ctx: ExportContext, path: Path, deployment: str) -> None:
        """Convert the descendant, describe it, write ``path``."""
        from lgp_edge import __version__
        from lgp_edge.fileio import plain_modes, tool_write

        pre, precision = ctx.preprocess, ctx.profile.precision
        need = 4 * ctx.record.params + (1 << 20)  # the weights, written while converting and again by the save
        with ctx.reporter.task(f"coreml: convert ({precision}, {deployment})", total=1) as task, quiet():
            with tool_write(path, need=need):  # MIL FileWriter: "Unknown error occurred while writing data"
                mlmodel = convert_mlprogram(ctx.model, pre=pre, input_shape=ctx.input_shape, precision=precision,
                                            deployment=deployment)
            mlmodel.author = "lgp-edge"
            mlmodel.version = __version__
            mlmodel.license = "see the pool's provenance"
            mlmodel.short_description = (f"Learngene Pool descendant {ctx.record.key} (pool {ctx.pool_id}), "
                                         f"{len(pre.labels)} classes")
            kind = "grayscale" if pre.in_chans == 1 else "RGB"
            mlmodel.input_description[INPUT] = (f"{pre.img_size}x{pre.img_size} {kind} image; normalisation happens "
                                                "inside the model")
            for k, v in package_metadata(ctx).items():
                mlmodel.user_defined_metadata[k] = v
            with tool_write(path, need=need):
                mlmodel.save(str(path))
            plain_modes(path)
            task.advance()

    def _write_mac_check(self, ctx: ExportContext) -> list[str]:
        """coreml_validation.npz (pixels, torch probabilities) and validate_coreml.py, for a Mac."""
        import torch

        pre = ctx.preprocess
        pixels = to_pixels(ctx.validation.images, pre)
        with torch.no_grad():
            probs = torch.softmax(ctx.model(torch.from_numpy(from_pixels(pixels, pre))), -1).numpy()
        return write_mac_check(ctx.out_dir, script="validate_coreml.py", data="coreml_validation.npz",
                               pixels=pixels, probs=probs, labels=ctx.validation.labels, pre=pre,
                               precision=ctx.profile.precision)
