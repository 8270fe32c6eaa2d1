"""The exporter interface: one small class per format (``lgp_edge.export.registry`` lists them).

An exporter declares the Python package it needs (and the pip extra that installs it), checks a request
before any work (``check``: precision, opset), and ``export`` writes its files into the output directory
and returns ``ExportArtifact`` records, each already validated against the torch descendant. Heavy
backends are imported inside ``export`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lgp_edge.errors import UsageError
from lgp_edge.export.quantize import calibration_batch, whole_batches
from lgp_edge.specs import DescendantRecord, DeviceProfile, Format, ModelRecord, PreprocessSpec, TargetSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_ONNX_OPSET = 17  # default ceiling: the newest opset both exporters and every runtime here handle well
MAX_REQUESTED_OPSET = 21  # the newest --opset accepted
ONNX_PACKAGES = ("onnx", "onnxslim", "onnxscript", "onnxruntime")  # what the shipped ONNX export needs


@dataclass(frozen=True)
class ValidationSet:
    """Real images, their labels and the torch descendant's logits: what every artifact is compared with."""

    images: Any  # numpy float32 (N, C, H, W), normalised as the model expects
    labels: Any  # numpy int64 (N,)
    reference: Any  # numpy float32 (N, classes): torch descendant logits, fp32
    data: str  # dataset name ("fashion-mnist", "synthetic", ...)
    synthetic: bool  # random images: agreement is a numerical check only, top-1 means nothing


@dataclass(frozen=True)
class ExportContext:
    """Everything an exporter needs; built once per ``lgp-edge export`` run."""

    out_dir: Path  # the temporary output directory (renamed to OUT when everything passed)
    model: torch.nn.Module  # the descendant (or the timm model of --model), eval mode, fp32
    record: DescendantRecord | ModelRecord  # key, params, flops, top1
    pool_id: str  # pool the descendant came from ("" for --model)
    preprocess: PreprocessSpec  # input size, channels, mean/std, labels
    profile: DeviceProfile  # precision, batch, formats
    target: TargetSpec  # runtime version, max opset, extra settings
    opset: int | None  # --opset (None = min(target max opset, 17))
    dynamic_batch: bool  # symbolic batch dimension instead of the profile's static batch
    validation: ValidationSet  # images to compare artifacts with torch on
    calibration: Any  # numpy float32 (M, C, H, W): int8 calibration images (training split, not validation)
    reporter: Any  # lgp_edge.progress.Reporter
    targets_dir: Path | None = None  # --targets-dir (device-side scripts)
    build_plan: bool = True  # build model.plan when tensorrt and a GPU are here
    onnx_cache: dict[tuple[int, bool], Path] = field(default_factory=dict)  # (opset, dynamic) -> ONNX file
    variants: dict[tuple[str, int], Path] = field(default_factory=dict)  # (int8/fp16, opset) -> derived ONNX file
    calibration_data: str = ""  # dataset the calibration images came from
    crop: tuple[float, str] | None = None  # a timm model evaluated with a centre crop: (crop_pct, interpolation)

    @property
    def calibration_batch(self) -> int:
        return calibration_batch(self.profile, self.dynamic_batch)

    @property
    def calibration_used(self) -> int:
        """The calibration images the int8 loops use (``whole_batches``)."""
        return whole_batches(len(self.calibration), self.calibration_batch)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        p = self.preprocess
        return (self.profile.batch, p.in_chans, p.img_size, p.img_size)

    def default_opset(self) -> int:
        return self.opset if self.opset is not None else min(self.target.max_opset, MAX_ONNX_OPSET)

    def onnx_file(self, opset: int) -> Path:
        """The shipped ONNX export at ``opset``, written once and shared by the formats built on it."""
        import torch

        from lgp_edge.export.onnx_export import export_onnx

        key = (opset, self.dynamic_batch)
        if key not in self.onnx_cache:
            name = "model.onnx" if not self.onnx_cache else f"model.opset{opset}.onnx"
            self.onnx_cache[key] = export_onnx(self.model, torch.zeros(self.input_shape), self.out_dir / name,
                                               opset=opset, dynamic_batch=self.dynamic_batch, ship=True,
                                               metadata=self.metadata())
        return self.onnx_cache[key]

    def metadata(self) -> dict[str, str]:
        """Key/value metadata every artifact carries (ONNX metadata_props, Core ML user metadata)."""
        from lgp_edge.export.metadata import PREPROCESS_RULE, crop_rule, model_metadata

        if isinstance(self.record, ModelRecord):
            rule = PREPROCESS_RULE if self.crop is None else crop_rule(*self.crop, self.preprocess.img_size)
            return model_metadata(preprocess=self.preprocess, pool_id=None, profile=self.profile.name,
                                  target=self.target.name, model=self.record, rule=rule)
        return model_metadata(preprocess=self.preprocess, pool_id=self.pool_id, profile=self.profile.name,
                              target=self.target.name, descendant_key=self.record.key)


class Exporter(Protocol):
    format: Format  # name used by --format and in manifest.json
    package: str  # Python package it imports ("onnxruntime", "openvino", "coremltools", ...)
    extra: str  # pip extra that installs it

    def check(self, profile: DeviceProfile, target: TargetSpec, opset: int | None) -> None:
        """Refuse a request this format cannot serve (UsageError), before anything is written."""

    def export(self, ctx: ExportContext) -> list[Any]:
        """Write the artifact(s) into ``ctx.out_dir``; return validated ExportArtifact records."""


def require(package: str, extra: str, what: str) -> None:
    """Raise BackendMissing unless ``package`` is installed, and imports where ``backends.importing()`` asks."""
    from lgp_edge import backends

    backends.require(package, extra, what)


def require_all(packages: tuple[str, ...], extra: str, what: str) -> None:
    """``require`` for each of ``packages``."""
    for package in packages:
        require(package, extra, what)


def check_opset(opset: int | None, target: TargetSpec) -> None:
    if opset is None:
        return
    if not 13 <= opset <= MAX_REQUESTED_OPSET:
        raise UsageError(f"--opset must be between 13 and {MAX_REQUESTED_OPSET}, got {opset}")
    if opset > target.max_opset:
        raise UsageError(f"--opset {opset} is above what target '{target.name}' parses (max opset "
                         f"{target.max_opset}, {target.runtime_version})")


def check_opset_used(opset: int | None, formats: Sequence[str]) -> None:
    """``--opset`` where only Core ML is written (converted from torch, no ONNX file): refused, not ignored."""
    if opset is not None and formats and all(f == "coreml" for f in formats):
        raise UsageError(f"--opset {opset} sets the ONNX opset, and this export writes Core ML only (converted "
                         "from torch): leave --opset out, or add --format onnx")
