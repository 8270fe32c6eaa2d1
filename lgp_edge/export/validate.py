"""Validation after every export: each artifact that runs here against the torch descendant.

The artifact and torch see the same real validation images; we record the largest absolute logit
difference, the fraction of images where both pick the same class, and the top-1 of each. An artifact
passes when the difference is within its format/precision tolerance and the agreement reaches the
minimum; int8 must also lose at most ``max_top1_drop`` points of top-1, judged on at least ``min_images``
labelled images (on a handful, agreement 1.000 and a change of +0.00 points say nothing).

Tolerances scale with the logits: ``atol + rtol * max|reference logit|`` (the report stores the
resulting absolute value). fp32 artifacts (ONNX in ONNX Runtime, OpenVINO IR with the f32 inference
hint, .ort) must match torch to float rounding; fp16 weights and activations lose about three significant
digits. int8 is judged by agreement only: top-1 agreement with torch fp32 and the top-1 change on labelled
images (its largest logit difference is recorded, not limited: one outlier logit says little about int8).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lgp_edge.export.base import ValidationSet
from lgp_edge.specs import ValidationReport

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    atol: float | None  # absolute part of the logit tolerance (None: no limit on the logits, agreement only)
    rtol: float  # part relative to the largest |reference logit|
    min_agreement: float  # least fraction of images where artifact and torch agree on the class
    max_top1_drop: float | None = None  # most top-1 points the artifact may lose (labels needed)
    min_images: int = 1  # fewest real validation images the checks are judged on

    def limit(self, reference: np.ndarray) -> float | None:
        return None if self.atol is None else float(self.atol + self.rtol * np.abs(reference).max())


# below this many validation images an export says so: a verdict on a handful (agreement 1.000 on one image) misses
# errors that only some inputs show
FEW_IMAGES = 100

TOLERANCES: dict[str, Tolerance] = {  # by artifact precision
    "fp32": Tolerance(atol=1e-4, rtol=1e-5, min_agreement=0.99),
    "fp16": Tolerance(atol=1e-3, rtol=1e-2, min_agreement=0.98),
    "int8": Tolerance(atol=None, rtol=0.0, min_agreement=0.90, max_top1_drop=2.0, min_images=300),
}


def reference_logits(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The torch descendant's fp32 logits for ``images``."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            outs.append(model(torch.from_numpy(images[i:i + batch])).float().numpy())
    return np.concatenate(outs)


def run_static(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int, reporter: Any = None,
               what: str = "") -> np.ndarray:
    """Run ``fn`` over ``images`` in chunks of exactly ``batch`` (the last one padded), as a static model needs."""
    outs = []
    n = len(images)

    def _loop(task: Any) -> None:
        for i in range(0, n, batch):
            chunk = images[i:i + batch]
            real = len(chunk)
            if real < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
            outs.append(np.asarray(fn(np.ascontiguousarray(chunk)), dtype=np.float32)[:real])
            if task is not None:
                task.advance(real)

    if reporter is not None:
        with reporter.task(f"validate {what}".strip(), total=n) as task:
            _loop(task)
    else:
        _loop(None)
    return np.concatenate(outs)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return round(float((logits.argmax(1) == labels).mean() * 100.0), 4)


def compare(outputs: np.ndarray, vset: ValidationSet, tol: Tolerance, note: str = "",
            failures: Sequence[str] = ()) -> ValidationReport:
    """Score an artifact's logits against the torch reference; ``failures`` are the artifact's own checks that
    failed besides its logits (its metadata, say), reported with them."""
    ref = vset.reference
    if outputs.shape != ref.shape:
        return ValidationReport(max_abs_diff=float("inf"), atol=tol.limit(ref), top1_agreement=0.0,
                                top1_ref=None, top1_artifact=None, images=len(ref), passed=False,
                                note="; ".join([f"output shape {tuple(outputs.shape)} != torch {tuple(ref.shape)}",
                                                *failures]))
    diff = float(np.abs(outputs - ref).max())
    broken = int((~np.isfinite(outputs)).any(axis=1).sum())  # images with a NaN or inf logit
    if broken:
        diff = float("inf")
    agree = float((outputs.argmax(1) == ref.argmax(1)).mean())
    t_ref, t_art = top1(ref, vset.labels), top1(outputs, vset.labels)
    limit = tol.limit(ref)
    failures = list(failures)
    if broken:  # every precision: int8's gates are on classes only, and argmax reads a NaN row as class 0
        failures.append(f"{broken} of {len(ref)} images have non-finite logits (NaN or inf)")
    if limit is not None and not diff <= limit:
        failures.append(f"max |diff| {diff:.3g} > {limit:.3g}")
    if agree < tol.min_agreement:
        failures.append(f"top-1 agreement {agree:.3f} < {tol.min_agreement}")
    if tol.max_top1_drop is not None and not vset.synthetic and t_ref - t_art > tol.max_top1_drop:
        failures.append(f"top-1 drops {t_ref - t_art:.2f} points > {tol.max_top1_drop}")
    if not vset.synthetic and len(ref) < tol.min_images:
        failures.append(f"{len(ref)} validation images < the {tol.min_images} its checks are judged on")
    notes = [note] if note else []
    if vset.synthetic:
        notes.append("synthetic images: numerical check only, top-1 means nothing")
    if failures:
        notes.append("FAILED: " + "; ".join(failures))
    return ValidationReport(max_abs_diff=diff, atol=limit, top1_agreement=agree, top1_ref=t_ref,
                            top1_artifact=t_art, images=len(ref), passed=not failures, note=" | ".join(notes),
                            min_agreement=tol.min_agreement, top1_change=round(t_art - t_ref, 4),
                            data=vset.data)


def onnxruntime_outputs(path: str, images: np.ndarray, batch: int, dynamic: bool, reporter: Any = None,
                        what: str = "") -> np.ndarray:
    """Logits of an ONNX or .ort model in ONNX Runtime's CPU execution provider."""
    from lgp_edge.export.sessions import ort_runner

    return run_static(ort_runner(path), images, 64 if dynamic else batch, reporter, what)


def openvino_outputs(xml: str, images: np.ndarray, batch: int, dynamic: bool, reporter: Any = None,
                     what: str = "") -> np.ndarray:
    """Logits of an OpenVINO IR on the CPU with INFERENCE_PRECISION_HINT f32 (the CPU would pick bf16)."""
    from lgp_edge.export.sessions import openvino_runner

    return run_static(openvino_runner(xml), images, 64 if dynamic else batch, reporter, what)
