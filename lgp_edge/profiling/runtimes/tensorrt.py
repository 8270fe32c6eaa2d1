"""TensorRT: on a board through ``trtexec`` (see ``remote.py`` and ``targets/jetson/bench.sh``), or here
through the Python API when ``tensorrt`` imports and a CUDA device is present.

``parse_trtexec`` reads trtexec's performance summary, e.g. (TensorRT 10)::

    [I] Latency: min = 3.12671 ms, max = 3.15479 ms, mean = 3.14068 ms, median = 3.14062 ms,
        percentile(90%) = 3.14587 ms, percentile(95%) = 3.14771 ms, percentile(99%) = 3.15039 ms

TensorRT 8.x prints a single ``percentile(99%)`` by default; ``bench.sh`` asks for ``--percentile=90``
and ``--percentile=99`` where the installed trtexec accepts a list.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lgp_edge.errors import UsageError
from lgp_edge.export.onnx_export import export_onnx
from lgp_edge.profiling.measure import MeasureSettings, Timing
from lgp_edge.profiling.runtimes.base import Prepared, Runtime

_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([0-9.eE+-]+)\s*ms")
_VERSION = re.compile(r"TensorRT(?:\.trtexec)?\s*\[TensorRT v(\d+)\]|TensorRT version:\s*([0-9.]+)")


@dataclass(frozen=True)
class TrtexecSummary:
    """The ``Latency:`` line of trtexec's performance summary (host latency: H2D + compute + D2H)."""

    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    percentiles: dict[float, float]  # percent -> ms, as printed
    gpu_compute_median_ms: float | None  # the "GPU Compute Time" median, when printed
    throughput_qps: float | None
    version: str | None  # "10.3.0" or "100300"-style build id, when printed

    def percentile_at_least(self, q: float) -> tuple[float, float]:
        """(percent, ms) of the smallest printed percentile >= q; the max when none is."""
        above = sorted(p for p in self.percentiles if p >= q)
        return (above[0], self.percentiles[above[0]]) if above else (100.0, self.max_ms)


def _number(text: str, what: str, where: str) -> float:
    """A value trtexec printed; the patterns take any run of digits, dots, signs and e's ("-", "1.2.3")."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(f"{where} returned an invalid timing: trtexec printed {what} = {text[:40]!r} (a number "
                         "expected); check trtexec on the board")
    return value


def _stats(line: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"percentiles": {}}
    for name, pct, value in _STAT.findall(line):
        if pct:
            out["percentiles"][_number(pct, name, where)] = _number(value, name, where)
        else:
            out[name] = _number(value, name, where)
    return out


def parse_trtexec(text: str, where: str = "the board") -> TrtexecSummary:
    """Parse trtexec's output; raises UsageError when it holds no performance summary or a value in it is no
    number (``where`` names the board)."""
    latency = gpu = None
    qps = None
    for line in text.splitlines():
        body = line.split("] ", 2)[-1] if line.startswith("[") else line
        body = body.strip()
        if body.startswith("Latency:"):
            latency = _stats(body, where)
        elif body.startswith("GPU Compute Time:"):
            gpu = _stats(body, where)
        elif body.startswith("Throughput:"):
            m = re.search(r"Throughput:\s*([0-9.eE+-]+)\s*qps", body)
            qps = _number(m.group(1), "Throughput", where) if m else None
    if latency is None or not {"min", "max", "mean", "median"} <= set(latency):
        tail = " | ".join(text.strip().splitlines()[-3:])[:300]
        raise UsageError(f"trtexec printed no performance summary (did the engine build fail?): {tail}")
    version = None
    m = _VERSION.search(text)
    if m:
        version = m.group(2) or m.group(1)
    return TrtexecSummary(min_ms=latency["min"], max_ms=latency["max"], mean_ms=latency["mean"],
                          median_ms=latency["median"], percentiles=latency["percentiles"],
                          gpu_compute_median_ms=gpu.get("median") if gpu else None, throughput_qps=qps,
                          version=version)


def summary_timing(s: TrtexecSummary, n: int, warmup: int) -> tuple[Timing, dict[str, str]]:
    """A Timing from a trtexec summary; notes say which percentiles were bounded by a higher one."""
    notes: dict[str, str] = {}
    p90q, p90 = s.percentile_at_least(90)
    p99q, p99 = s.percentile_at_least(99)
    if p90q != 90:
        notes["p90"] = f"upper bound: trtexec printed percentile({p90q:g}%) only"
    if p99q != 99:
        notes["p99"] = f"upper bound: trtexec printed percentile({p99q:g}%) only"
    # trtexec prints no standard deviation; (max - min) / 4 is the range rule, flagged as an estimate.
    std = (s.max_ms - s.min_ms) / 4
    notes["std"] = "estimated as (max - min) / 4 (trtexec prints no std)"
    return Timing(median_ms=s.median_ms, p90_ms=p90, p99_ms=p99, mean_ms=s.mean_ms, std_ms=std, min_ms=s.min_ms,
                  cv=std / s.mean_ms if s.mean_ms > 0 else 0.0, n=n, warmup=warmup), notes


class TensorRtRuntime(Runtime):
    """The Python API path (a machine with an NVIDIA GPU and the ``tensorrt`` wheel)."""

    name = "tensorrt"
    package = "tensorrt"
    extra = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    def check_available(self) -> None:
        self.require_package()
        import torch

        if not torch.cuda.is_available():
            raise UsageError("runtime 'tensorrt' needs an NVIDIA GPU here (torch sees no CUDA device); "
                             "profile a board with --target jetson-nano instead")

    def versions(self) -> dict[str, str]:
        import tensorrt

        return {"tensorrt": tensorrt.__version__}

    def convert(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, opset: int = 17,
                onnx_path: Path | None = None) -> bytes:
        """A serialized engine built from the exported ONNX file."""
        import tensorrt as trt

        self.check_precision(precision)
        onnx_path = onnx_path or export_onnx(model, example, Path(workdir) / "model.onnx", opset=opset, ship=True)
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
            1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UsageError(f"TensorRT cannot parse the ONNX model: {errs[:300]}")
        config = builder.create_builder_config()
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # no calibrator: timing only, values are not meaningful
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise UsageError("TensorRT failed to build an engine for this model")
        return bytes(engine)

    def prepare(self, model: nn.Module, example: Any, precision: str, workdir: Path, *, threads: int,
                opset: int = 17, onnx_path: Path | None = None) -> Prepared:
        import tensorrt as trt
        import torch

        self.check_available()
        plan = self.convert(model, example, precision, workdir, opset=opset, onnx_path=onnx_path)
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        engine = runtime.deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        first = engine.get_tensor_name(0)
        buffers[first].copy_(example.to(buffers[first].dtype))
        stream = torch.cuda.Stream()

        def run() -> object:
            context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            return None

        return Prepared(run=run, info={"precision": precision, "device": torch.cuda.get_device_name()})

    def measure(self, prepared: Prepared, settings: MeasureSettings) -> Timing:
        from lgp_edge.profiling.measure import time_callable

        return time_callable(prepared.run, settings)
