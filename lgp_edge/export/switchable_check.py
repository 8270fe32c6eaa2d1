"""Running and checking a switchable ONNX model: each descendant against torch and against its single export.

``open_switchable`` loads the model once in ONNX Runtime or OpenVINO (CPU, sessions as every check sets
them up: ``lgp_edge.export.sessions``) and returns ``fn(images, index)``; ``validate_switchable_onnx``
compares every descendant's output with the torch descendant (fp32 tolerance) and with the
single-descendant ONNX its branch came from, per runtime; ``read_table`` reads the ``descendants`` table
an app picks an index from.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lgp_edge.errors import UsageError
from lgp_edge.export.switchable import SwitchableOnnx
from lgp_edge.export.switchable_graph import INPUT, OUTPUT, SELECTOR
from lgp_edge.specs import ValidationReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwitchValidation:
    """One descendant of a switchable artifact checked against torch and against its single export."""

    key: str  # descendant key
    index: int  # selector value
    runtime: str  # "onnxruntime" or "openvino"
    vs_torch: ValidationReport  # switchable output vs the torch descendant
    vs_single_max_abs_diff: float | None  # max |switchable - single-descendant ONNX| in the same runtime
    vs_single_images: int = 0  # images that comparison ran on (the first SINGLE_CHECK_IMAGES of the validation set)

    @property
    def passed(self) -> bool:
        return self.vs_torch.passed and (self.vs_single_max_abs_diff is None
                                          or self.vs_single_max_abs_diff <= (self.vs_torch.atol or 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "index": self.index, "runtime": self.runtime, "passed": self.passed,
                "vs_single_max_abs_diff": self.vs_single_max_abs_diff, "vs_single_images": self.vs_single_images,
                "vs_torch": self.vs_torch.to_dict()}


# images each branch is compared on with its single-descendant export (in each runtime); the comparison with torch
# takes every validation image
SINGLE_CHECK_IMAGES = 128


def selector(index: int) -> np.ndarray:
    """The value of the ``descendant`` input that selects row ``index``."""
    return np.array([index], dtype=np.int64)


def open_switchable(path: str | Path, runtime: str, threads: int = 0) -> Callable[[np.ndarray, int], np.ndarray]:
    """``fn(images, index) -> logits`` for a switchable ONNX in ONNX Runtime or OpenVINO (loaded once)."""
    from lgp_edge.export.sessions import openvino_compiled, ort_session

    if runtime == "onnxruntime":
        sess = ort_session(path, threads)
        return lambda x, i: sess.run([OUTPUT], {INPUT: x, SELECTOR: selector(i)})[0]
    if runtime == "openvino":
        compiled = openvino_compiled(path, threads)
        request = compiled.create_infer_request()
        out = compiled.output(OUTPUT)
        return lambda x, i: request.infer({INPUT: x, SELECTOR: selector(i)})[out]
    raise ValueError(f"unknown runtime {runtime}")


def _check_one(sw: SwitchableOnnx, run: Callable[[np.ndarray, int], np.ndarray], rt: str, entry: Any,
               vset: Any, tol: Any, reporter: Any, failures: Sequence[str] = ()) -> SwitchValidation:
    from lgp_edge.export.sessions import runner
    from lgp_edge.export.validate import compare, run_static

    batch = sw.input_shape[0]
    got = run_static(lambda x: run(x, entry.index), vset.images, batch, reporter, f"switchable {rt} {entry.key}")
    single_diff, single_n = None, 0
    singles = dict(sw.singles)
    if entry.key in singles:  # a wiring check: every branch is already compared with torch on all the images
        single_n = min(len(vset.images), SINGLE_CHECK_IMAGES)
        single = run_static(runner(singles[entry.key], rt), vset.images[:single_n], batch)
        part = got[:single_n]
        single_diff = float(np.abs(part - single).max()) if np.isfinite(part).all() else math.inf
    note = f"switchable, {rt} CPU, fp32" + (" (f32 inference hint)" if rt == "openvino" else "")
    v = SwitchValidation(key=entry.key, index=entry.index, runtime=rt,
                         vs_torch=compare(got, vset, tol, note=note, failures=failures),
                         vs_single_max_abs_diff=single_diff, vs_single_images=single_n)
    if not v.passed:
        log.warning("switchable %s: descendant %s failed (%s; vs single %s)", rt, entry.key, v.vs_torch.note,
                    single_diff)
    return v


def validate_switchable_onnx(sw: SwitchableOnnx, pool: Any, images: np.ndarray, labels: np.ndarray, *, data: str,
                             synthetic: bool, runtimes: Sequence[str] = ("onnxruntime", "openvino"),
                             tolerance: Any = None, reporter: Any = None,
                             preprocess: Any = None) -> tuple[SwitchValidation, ...]:
    """Each descendant: switchable output vs torch (fp32 tolerance) and vs its single export, per runtime; with
    ``preprocess`` (the pool's), every check also fails when the file's metadata says other preprocessing."""
    from lgp_edge.export.base import ValidationSet
    from lgp_edge.export.metadata import preprocess_mismatches
    from lgp_edge.export.onnx import file_metadata
    from lgp_edge.export.validate import TOLERANCES, reference_logits

    tol = tolerance or TOLERANCES["fp32"]
    failures = [] if preprocess is None else preprocess_mismatches(file_metadata(sw.path), preprocess)
    vsets = {e.key: ValidationSet(images=images, labels=labels, data=data, synthetic=synthetic,
                                  reference=reference_logits(pool.descendant(e.key).eval(), images))
             for e in sw.entries}
    out = []
    for rt in runtimes:
        run = open_switchable(sw.path, rt)
        out += [_check_one(sw, run, rt, e, vsets[e.key], tol, reporter, failures) for e in sw.entries]
    return tuple(out)


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """The ``descendants`` table of a switchable ONNX file (what an app reads to pick an index)."""
    from lgp_edge.export.onnx import file_metadata

    props = file_metadata(path)
    if "descendants" not in props:
        raise UsageError(f"'{path}' is not a switchable lgp-edge model (no 'descendants' metadata)")
    return json.loads(props["descendants"])
