"""The artifacts of a switchable export, typed: the switchable ONNX file and the Core ML multifunction package.

Each builder writes its files into the temporary output directory and returns a record with ``passed``,
``failures()`` (one line per failed check) and ``to_dict()`` (its entry in manifest.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lgp_edge.export.coreml_multifunction import MultifunctionPackage
from lgp_edge.export.images import ImageSets
from lgp_edge.export.switchable import SwitchableOnnx, SwitchEntry
from lgp_edge.export.switchable_check import SwitchValidation
from lgp_edge.specs import DeviceProfile, TargetSpec

ONNX_FILE, COREML_FILE = "model.switchable.onnx", "model.switchable.mlpackage"


@dataclass(frozen=True)
class SwitchJob:
    """What a switchable export writes from, loaded before OUT is touched."""

    pool: Any  # LearngenePool
    pool_manifest: Any  # its PoolManifest
    pool_dir: Path  # where it was loaded from
    entries: tuple[SwitchEntry, ...]  # the descendants, in table order
    formats: tuple[str, ...]  # switchable formats to write ("onnx", "coreml")
    profile: DeviceProfile
    target: TargetSpec
    opset: int  # ONNX opset of the switchable ONNX
    images: ImageSets  # validation images
    metadata: dict[str, str]  # model metadata (lgp_edge.export.metadata)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        p = self.pool_manifest.preprocess
        return (self.profile.batch, p.in_chans, p.img_size, p.img_size)

    @property
    def pool_bytes(self) -> int:
        """fp32 bytes of every pool parameter."""
        return sum(p.numel() * 4 for p in self.pool.parameters())

    @property
    def selection_bytes(self) -> int:
        """fp32 bytes of the parameters the chosen descendants use (each counted once)."""
        used = {id(p): p for e in self.entries for p in self.pool.descendant(e.key).parameters()}
        return sum(p.numel() * 4 for p in used.values())


@dataclass(frozen=True)
class SwitchableOnnxArtifact:
    """``model.switchable.onnx``, checked per descendant in ONNX Runtime (and OpenVINO where installed)."""

    model: SwitchableOnnx
    checks: tuple[SwitchValidation, ...]
    sha256: str
    size: dict[str, float]  # its bytes against the pool's, the selection's and the single exports'
    classes: int  # logits per image
    versions: dict[str, str]
    note: str
    kind = "numeric"  # run on the validation images here

    @property
    def path(self) -> str:
        return self.model.path.name

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.runtime} {c.key}: {c.vs_torch.note} (vs single {c.vs_single_max_abs_diff} on "
                f"{c.vs_single_images} images)"
                for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {"path": m.path.name, "format": "onnx", "precision": "fp32", "opset": m.opset,
                "bytes": self.size["bytes"], "sha256": self.sha256,
                "inputs": [{"name": "input", "shape": list(m.input_shape), "dtype": "float32"},
                           {"name": "descendant", "shape": [1], "dtype": "int64"}],
                "outputs": [{"name": "logits", "shape": [m.input_shape[0], self.classes], "dtype": "float32"}],
                "size": self.size, "validation": [c.to_dict() for c in self.checks], "passed": self.passed,
                "versions": self.versions, "note": self.note}


@dataclass(frozen=True)
class MultifunctionArtifact:
    """``model.switchable.mlpackage``, checked structurally (Core ML predicts on macOS only)."""

    package: MultifunctionPackage
    sha256: str
    bytes: int
    size: dict[str, float]  # weight bytes against the pool's at this precision and the single packages'
    versions: dict[str, str]
    files: tuple[dict[str, Any], ...]  # the Mac check script and its data: {path, bytes, sha256}
    inputs: tuple[dict[str, Any], ...]  # as a single package's: the image, normalised in the model
    outputs: tuple[dict[str, Any], ...]
    kind = "structural"  # Core ML predicts on macOS only

    @property
    def path(self) -> str:
        return self.package.path.name

    @property
    def passed(self) -> bool:
        return self.package.passed

    def failures(self) -> list[str]:
        return [] if self.passed else [f"coreml: {'; '.join(self.package.problems)}"]

    def to_dict(self) -> dict[str, Any]:
        pkg = self.package
        return {**pkg.to_dict(), "format": "coreml", "bytes": self.bytes, "sha256": self.sha256,
                "inputs": list(self.inputs), "outputs": list(self.outputs), "size": self.size,
                "validation": {"kind": "structural", "passed": pkg.passed, "problems": list(pkg.problems),
                               "note": "spec loads; one function per descendant with its input/outputs; default "
                                       "function; shared weights. Core ML predicts on macOS only: run "
                                       "'python validate_coreml_switchable.py' on a Mac for the numerical check."},
                "versions": self.versions, "files": list(self.files)}


def onnx_artifact(job: SwitchJob, out: Path, singles: Path, reporter: Any) -> SwitchableOnnxArtifact:
    """Build ``model.switchable.onnx`` in ``out`` (single exports in ``singles``) and validate it."""
    from lgp_edge.backends import import_failure
    from lgp_edge.export.metadata import tool_versions
    from lgp_edge.export.switchable import build_switchable_onnx
    from lgp_edge.export.switchable_check import validate_switchable_onnx
    from lgp_edge.fileio import sha256_file

    sw = build_switchable_onnx(job.pool, job.entries, out / ONNX_FILE, input_shape=job.input_shape, opset=job.opset,
                               metadata=job.metadata, singles_dir=singles, reporter=reporter)
    runtimes = ("onnxruntime",) + (("openvino",) if import_failure("openvino") is None else ())  # a cross-check
    im = job.images
    checks = validate_switchable_onnx(sw, job.pool, im.images, im.labels, data=im.data, synthetic=im.synthetic,
                                      runtimes=runtimes, reporter=reporter,
                                      preprocess=job.pool_manifest.preprocess)
    size, singles_bytes = (out / ONNX_FILE).stat().st_size, sum(Path(p).stat().st_size for _, p in sw.singles)
    pool_bytes, used_bytes = job.pool_bytes, job.selection_bytes
    precision = job.profile.precision
    return SwitchableOnnxArtifact(
        model=sw, checks=checks, sha256=sha256_file(out / ONNX_FILE),
        size={"bytes": size, "single_onnx_sum_bytes": singles_bytes, "pool_fp32_bytes": pool_bytes,
              "selection_fp32_bytes": used_bytes, "ratio_to_pool": size / pool_bytes,
              "ratio_to_selection": size / used_bytes, "ratio_to_singles": size / singles_bytes,
              "singles": "the selected descendants exported alone by the TorchScript exporter (the branches' "
                         "source), before simplification: about 1% larger than the shipped single exports"},
        classes=len(job.pool_manifest.preprocess.labels), versions=tool_versions("onnx", "onnxruntime", "openvino"),
        note="fp32; feed int64 'descendant' [1] = index in the 'descendants' table"
             + ("" if precision == "fp32" else f" (profile precision {precision}: the runtime may lower it)"))


def multifunction_artifact(job: SwitchJob, out: Path, reporter: Any) -> MultifunctionArtifact:
    """Build ``model.switchable.mlpackage`` in ``out``, check it, and write the Mac check beside it."""
    import torch

    from lgp_edge.export.coreml import IN_MODEL_RULE, io_entries, min_target
    from lgp_edge.export.coreml_multifunction import build_multifunction_mlpackage
    from lgp_edge.export.manifest import file_entries, tree_bytes
    from lgp_edge.export.metadata import tool_versions
    from lgp_edge.fileio import tree_sha256

    precision = job.profile.precision
    with torch.no_grad():
        pkg = build_multifunction_mlpackage(
            job.pool, job.entries, out / COREML_FILE, preprocess=job.pool_manifest.preprocess,
            input_shape=job.input_shape, precision=precision, deployment=min_target(job.target),
            metadata={**job.metadata, "preprocess": IN_MODEL_RULE}, reporter=reporter)
    inputs, outputs = io_entries(job.pool_manifest.preprocess, job.input_shape)
    pool_at_precision = job.pool_bytes // 4 * (2 if precision == "fp16" else 4)
    return MultifunctionArtifact(
        package=pkg, sha256=tree_sha256(out / COREML_FILE), bytes=tree_bytes(out / COREML_FILE),
        size={"weight_bytes": pkg.weight_bytes, "single_packages_weight_bytes": pkg.singles_weight_bytes,
              "pool_bytes_at_precision": pool_at_precision, "ratio_to_pool": pkg.weight_bytes / pool_at_precision},
        versions=tool_versions("coremltools"), files=tuple(file_entries(out, _write_mac_check(job, out, pkg))),
        inputs=inputs, outputs=outputs)


def _write_mac_check(job: SwitchJob, out: Path, pkg: MultifunctionPackage) -> list[str]:
    """validate_coreml_switchable.py + its data (pixels, torch probabilities per function), for a Mac."""
    import torch

    from lgp_edge.export.coreml import from_pixels, to_pixels, write_mac_check

    pre = job.pool_manifest.preprocess
    pixels = to_pixels(job.images.images, pre)
    x = torch.from_numpy(from_pixels(pixels, pre))
    with torch.no_grad():
        probs = np.stack([torch.softmax(job.pool.descendant(e.key).eval()(x), -1).numpy() for e in pkg.entries])
    return write_mac_check(out, script="validate_coreml_switchable.py", data="coreml_switchable_validation.npz",
                           pixels=pixels, probs=probs, labels=job.images.labels, pre=pre,
                           precision=job.profile.precision,
                           functions=np.asarray(json.dumps([list(f) for f in pkg.functions])))
