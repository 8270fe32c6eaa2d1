"""One small interface every runtime implements (after nn-Meter): check_available, convert, prepare, measure.

A runtime turns a torch module into whatever it executes (``convert``: an ONNX file, an OpenVINO model,
a TensorRT engine, a Core ML package), ``prepare`` loads it into a ready-to-run session with a fixed
thread count, and ``measure`` times that session with the shared harness (``measure.py``).
Heavy packages are imported inside the methods, so listing runtimes costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lgp_edge.errors import LgpEdgeError, UsageError
from lgp_edge.profiling.measure import MeasureSettings, Timing, time_callable

if TYPE_CHECKING:
    from torch import nn


@dataclass
class Prepared:
    """A loaded model, ready to run one inference per ``run()`` call."""

    run: Callable[[], object]  # one inference, blocking until its outputs exist
    info: dict[str, Any] = field(default_factory=dict)  # what the runtime actually chose (precision, provider…)
    close: Callable[[], None] = lambda: None  # release sessions / engines


# runtime -> (its Python package, the lgp-edge extra that installs it, what needs it); torch is a dependency
BACKENDS = {
    "onnxruntime": ("onnxruntime", "export", "runtime 'onnxruntime'"),
    "openvino": ("openvino", "export", "runtime 'openvino'"),
    "tensorrt": ("tensorrt", "tensorrt", "runtime 'tensorrt' (local)"),
    "coreml": ("coremltools", "coreml", "runtime 'coreml'"),
}


class Runtime(ABC):
    name: ClassVar[str]  # registry name, as in target files and --runtime
    package: ClassVar[str | None] = None  # Python package it needs (None: always there)
    extra: ClassVar[str] = "export"  # pip extra that installs it
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)  # precisions it can run

    def available(self) -> bool:
        try:
            self.check_available()
        except LgpEdgeError:
            return False
        return True

    @abstractmethod
    def check_available(self) -> None:
        """Raise BackendMissing (package not installed) or UsageError (not usable on this machine)."""

    def require_package(self) -> None:
        """The runtime's Python package imports: BackendMissing when it is missing, or installed and broken."""
        from lgp_edge.backends import require_importable

        require_importable(*BACKENDS[self.name])

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Package versions recorded with every measurement."""

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise UsageError(f"runtime '{self.name}' cannot run precision '{precision}' here; it runs "
                             f"{', '.join(self.precisions)}")

    @abstractmethod
    def prepare(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, threads: int,
                opset: int = 17, onnx_path: Path | None = None) -> Prepared:
        """Convert ``model`` (traced on ``example``) and load it, ready to run. ``onnx_path``: an ONNX file
        already exported from this model (runtimes that read ONNX reuse it instead of exporting again)."""

    def measure(self, prepared: Prepared, settings: MeasureSettings) -> Timing:
        return time_callable(prepared.run, settings)
