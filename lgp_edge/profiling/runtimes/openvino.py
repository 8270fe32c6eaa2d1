"""OpenVINO on the CPU: latency hint, one stream, fixed threads, explicit inference precision.

Without ``INFERENCE_PRECISION_HINT`` a CPU with AVX-512 BF16 / AMX silently runs bf16, so fp32 asks for
f32. int8 models are quantized with NNCF (post-training, on random inputs: timing does not depend on
calibration quality).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lgp_edge.errors import UsageError
from lgp_edge.export.onnx_export import export_onnx
from lgp_edge.profiling.runtimes.base import Prepared, Runtime

_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # int8: weights/activations from NNCF


class OpenVinoRuntime(Runtime):
    name = "openvino"
    package = "openvino"
    precisions = ("fp32", "bf16", "fp16", "int8")

    def __init__(self, device: str = "CPU") -> None:
        self.device = device

    def check_available(self) -> None:
        self.require_package()

    def check_precision(self, precision: str) -> None:
        """int8 also needs NNCF (which quantizes it), checked before any model is converted."""
        super().check_precision(precision)
        if precision == "int8":
            from lgp_edge.backends import require_importable

            require_importable("nncf", "export", "OpenVINO int8")

    def versions(self) -> dict[str, str]:
        import openvino

        return {"openvino": openvino.__version__.split("-")[0]}

    def convert(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, opset: int = 17,
                onnx_path: Path | None = None) -> Any:
        """An ``openvino.Model`` read from the exported ONNX file (NNCF-quantized for int8)."""
        import openvino as ov

        self.check_precision(precision)
        onnx_path = onnx_path or export_onnx(model, example, Path(workdir) / "model.onnx", opset=opset, ship=True)
        ov_model = ov.Core().read_model(str(onnx_path))
        if precision == "int8":
            import numpy as np
            import torch

            from lgp_edge.export.openvino import quantize_int8
            from lgp_edge.progress import NULL

            # quantized as export quantizes (the classifier in float, NNCF's output kept out of the terminal);
            # random calibration images: only the timing of this model is used
            batch = int(example.shape[0])
            ov_model = quantize_int8(ov_model, np.concatenate([torch.randn_like(example).numpy() for _ in range(8)]),
                                     batch, NULL)
        return ov_model

    def prepare(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, threads: int,
                opset: int = 17, onnx_path: Path | None = None) -> Prepared:
        import numpy as np
        import openvino as ov
        import openvino.properties.hint as hints

        self.check_available()
        ov_model = self.convert(model, example, precision, workdir, opset=opset, onnx_path=onnx_path)
        core = ov.Core()
        config = {hints.performance_mode: hints.PerformanceMode.LATENCY, "INFERENCE_NUM_THREADS": threads,
                  "NUM_STREAMS": 1, hints.inference_precision: _HINT[precision]}
        try:
            compiled = core.compile_model(ov_model, self.device, config)
        except RuntimeError as exc:
            raise UsageError(f"OpenVINO cannot compile for {self.device} at {precision}: "
                             f"{str(exc).splitlines()[0][:200]}") from None
        got = compiled.get_property(hints.inference_precision)
        actual = got.get_type_name() if hasattr(got, "get_type_name") else str(got)
        wanted = _HINT[precision]
        if actual != wanted:
            raise UsageError(f"OpenVINO on this {self.device} runs {actual} when asked for {wanted}; "
                             f"precision '{precision}' is not supported here")
        request = compiled.create_infer_request()
        x = np.ascontiguousarray(example.detach().cpu().numpy())
        # the input set once, shared, and the outputs shared: a run times the inference, not Python's copies of
        # the input and output arrays (with {0: x} per call a 0.2 ms descendant measured 25-45% slower)
        request.set_input_tensor(ov.Tensor(x, shared_memory=True))

        def run() -> object:
            return request.infer(share_outputs=True)

        return Prepared(run=run, info={"precision": precision, "inference_precision": actual,
                                       "device": self.device, "threads": threads})
