"""torch eager on the CPU (the reference every other runtime is compared with)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from torch import nn

from lgp_edge.profiling.measure import MeasureSettings, Timing, time_callable
from lgp_edge.profiling.runtimes.base import Prepared, Runtime


class TorchRuntime(Runtime):
    name = "torch"
    package = "torch"
    extra = ""
    precisions = ("fp32", "bf16")

    def check_available(self) -> None:
        pass  # torch is a core dependency

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__.split("+")[0]}

    def prepare(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, threads: int,
                opset: int = 17, onnx_path: Path | None = None) -> Prepared:
        import torch

        self.check_precision(precision)
        model = model.eval()
        x = example.contiguous()
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                    else contextlib.nullcontext())

        def run() -> object:
            with torch.inference_mode(), autocast:
                return model(x)

        return Prepared(run=run, info={"precision": precision, "threads": threads})

    def measure(self, prepared: Prepared, settings: MeasureSettings) -> Timing:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(settings.threads)
        try:
            return time_callable(prepared.run, settings)
        finally:
            torch.set_num_threads(old)
