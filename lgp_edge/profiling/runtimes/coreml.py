"""Core ML: converts and predicts only on macOS (coremltools' predict needs the Core ML framework)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from torch import nn

from lgp_edge.errors import UsageError
from lgp_edge.profiling.runtimes.base import Prepared, Runtime


class CoreMlRuntime(Runtime):
    name = "coreml"
    package = "coremltools"
    extra = "coreml"
    precisions = ("fp32", "fp16")

    def check_available(self) -> None:
        if platform.system() != "Darwin":
            raise UsageError(f"runtime 'coreml' is not available here: Core ML runs models only on macOS/iOS "
                             f"(this is {platform.system()}); use 'lgp-edge profile --target iphone --predict'")
        self.require_package()

    def versions(self) -> dict[str, str]:
        import coremltools

        return {"coremltools": coremltools.__version__, "macos": platform.mac_ver()[0]}

    def convert(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, opset: int = 17,
                onnx_path: Path | None = None) -> Any:
        import coremltools as ct
        import torch

        self.check_precision(precision)
        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), example)
        cp = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
        return ct.convert(traced, inputs=[ct.TensorType(name="input", shape=tuple(example.shape))],
                          convert_to="mlprogram", compute_precision=cp, compute_units=ct.ComputeUnit.ALL)

    def prepare(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, threads: int,
                opset: int = 17, onnx_path: Path | None = None) -> Prepared:
        self.check_available()
        mlmodel = self.convert(model, example, precision, workdir, opset=opset)
        feed = {"input": example.detach().cpu().numpy()}

        def run() -> object:
            return mlmodel.predict(feed)

        return Prepared(run=run, info={"precision": precision, "compute_units": "ALL"})
