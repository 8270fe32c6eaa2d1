"""ONNX Runtime: CPU execution provider here, others (CUDA, CoreML, NNAPI…) when the build has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lgp_edge.errors import UsageError
from lgp_edge.export.onnx_export import INPUT as INPUT_NAME
from lgp_edge.export.onnx_export import export_onnx
from lgp_edge.export.quantize import timing_int8
from lgp_edge.profiling.runtimes.base import Prepared, Runtime


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    package = "onnxruntime"
    precisions = ("fp32", "int8")

    def __init__(self, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        self.providers = providers

    def check_available(self) -> None:
        self.require_package()

    def versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}

    def convert(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, opset: int = 17,
                onnx_path: Path | None = None) -> Path:
        """fp32: the ONNX file ``lgp-edge export`` ships (the same graph); int8: the shipped static QDQ
        quantization of it (``export/quantize.py``), calibrated on 8 random inputs: the graph and kernels are
        the shipped int8 model's; its scales, which do not change the speed, come from real images there."""
        self.check_precision(precision)
        onnx_path = onnx_path or export_onnx(model, example, Path(workdir) / "model.onnx", opset=opset, ship=True)
        if precision == "fp32":
            return Path(onnx_path)
        return timing_int8(Path(onnx_path), example, Path(workdir) / "model.int8.onnx", self.name)

    def session(self, path: Path, threads: int) -> Any:
        import onnxruntime as ort

        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise UsageError(f"this onnxruntime build lacks {', '.join(missing)}; it has "
                             f"{', '.join(ort.get_available_providers())}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=list(self.providers))

    def prepare(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, threads: int,
                opset: int = 17, onnx_path: Path | None = None) -> Prepared:
        self.check_available()
        path = self.convert(model, example, precision, workdir, opset=opset, onnx_path=onnx_path)
        sess = self.session(path, threads)
        feed = {INPUT_NAME: example.detach().cpu().numpy()}

        def run() -> object:
            return sess.run(None, feed)

        return Prepared(run=run, info={"precision": precision, "providers": sess.get_providers(),
                                       "artifact": str(path), "threads": threads})
