"""Hardware facts and the roofline.

``parts_of`` splits a descendant (or a stock ViT) into the pieces the predictor prices: patch embedding,
each block by its dims and token count, each stitch, final norm + head. ``roofline_ms`` prices a piece
from a target's declared hardware: ``max(FLOPs / (peak x compute eff.), bytes / (bandwidth x memory eff.))``
plus a fixed cost per operator launch. FLOPs here are hardware FLOPs: 2 per multiply-add (the fvcore
numbers elsewhere in lgp-edge count a multiply-add once).

Bytes are charged DRAM bandwidth only when they do not fit in the last-level cache: a model whose
weights fit in half the cache keeps them there between inferences, and activations that fit are read back
from cache (``Roofline.weights_fit_cache``).

For targets with ``hardware.detect = true`` (this host) the facts are the *host calibration*: the
runtime's own fp32 GEMM, DRAM and cache copy bandwidth, the cache size and the run-to-run dispersion,
measured once per fingerprint (CPU model, cores, threads, cache, runtime versions), stored in the
measurement store and reused by every later process (``host_calibration``); ``lgp-edge profile --target
cpu --calibrate`` measures it again.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from lgp_edge.models.descendant import block_flops
from lgp_edge.specs import AncestrySpec, DescendantSpec, PoolSpec, TargetSpec

BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
KERNELS = {"embed": 4, "block": 14, "stitch": 1, "head": 3}  # operator launches per part (timm ViT, ONNX graph)


@dataclass(frozen=True)
class Part:
    """One priced piece of a model; ``key`` names its type by dims (equal keys cost the same)."""

    kind: str  # "embed", "block", "stitch" or "head"
    key: str  # e.g. "block:d192:h3:n197:r4"
    macs: int  # multiply-adds at batch 1 (fvcore FLOPs)
    params: int  # weights read once per inference
    act_elems: int  # activation values written + read at batch 1 (approximate)

    @property
    def kernels(self) -> int:
        return KERNELS[self.kind]


def _r(x: float) -> str:
    return f"{x:g}"


def embed_part(a: AncestrySpec, dim: int) -> Part:
    n = a.num_tokens
    k = a.in_chans * a.patch_size ** 2
    return Part("embed", f"embed:c{a.in_chans}:p{a.patch_size}:i{a.img_size}:d{dim}", macs=k * dim * (n - 1),
                params=k * dim + dim + dim + n * dim, act_elems=a.in_chans * a.img_size ** 2 + 3 * n * dim)


def block_part(a: AncestrySpec, dim: int, heads: int) -> Part:
    n = a.num_tokens
    hidden = int(dim * a.mlp_ratio)
    macs = block_flops(dim, n, a.mlp_ratio) - 2 * 5 * n * dim  # LayerNorms are priced as traffic
    params = 4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden  # qkv, proj, fc1, fc2 (+ biases, norms)
    act = n * dim * 12 + n * hidden * 3 + heads * n * n * 3
    return Part("block", f"block:d{dim}:h{heads}:n{n}:r{_r(a.mlp_ratio)}", macs=macs, params=params, act_elems=act)


def stitch_part(a: AncestrySpec, d_in: int, d_out: int) -> Part:
    n = a.num_tokens
    return Part("stitch", f"stitch:{d_in}>{d_out}:n{n}", macs=n * d_in * d_out, params=d_in * d_out + d_out,
                act_elems=n * (d_in + d_out))


def head_part(a: AncestrySpec, dim: int) -> Part:
    n = a.num_tokens
    return Part("head", f"head:d{dim}:n{n}:c{a.num_classes}", macs=dim * a.num_classes,
                params=dim * a.num_classes + a.num_classes + 2 * dim, act_elems=2 * n * dim + dim + a.num_classes)


def parts_of(pool: PoolSpec, spec: DescendantSpec) -> list[Part]:
    """Embedding of the first instance, every block, every stitch, norm + head of the last instance."""
    a = pool.ancestry
    inst = {i.name: i for i in pool.instances}
    segs = spec.segments
    out = [embed_part(a, inst[segs[0].instance].embed_dim)]
    for i, seg in enumerate(segs):
        s = inst[seg.instance]
        out += [block_part(a, s.embed_dim, s.num_heads)] * seg.num_blocks
        if i + 1 < len(segs):
            out.append(stitch_part(a, s.embed_dim, inst[segs[i + 1].instance].embed_dim))
    out.append(head_part(a, inst[segs[-1].instance].embed_dim))
    return out


def vit_parts(a: AncestrySpec, blocks: int | None = None) -> list[Part]:
    """A stock ViT (the ancestry's dims), optionally with fewer blocks (calibration probes)."""
    depth = a.depth if blocks is None else blocks
    return [embed_part(a, a.embed_dim)] + [block_part(a, a.embed_dim, a.num_heads)] * depth + \
        [head_part(a, a.embed_dim)]


# ------------------------------------------------------------------------------------------ host facts
@dataclass(frozen=True)
class HostFacts:
    """This machine, measured for one runtime and thread count (the host calibration)."""

    peak_gflops_fp32: float  # best of many square fp32 matmuls in the runtime's own GEMM, 2 FLOP per multiply-add
    mem_gbps: float  # best of a few large copies (DRAM), bytes read + written per second
    threads: int
    gemm_n: int  # matrix side used
    llc_bytes: int = 0  # last-level cache (0: unknown)
    cache_gbps: float = 0.0  # best copy of a buffer that fits in the last-level cache (0: not measured)
    p90_ratio: float = 1.0  # p90 / median of a series of short timed runs (this machine's dispersion)
    p99_ratio: float = 1.0
    runtime: str = "torch"  # whose GEMM was timed
    fingerprint: str = ""  # key of the fingerprint it belongs to (``host_fingerprint``)
    measured_utc: str = ""


def measure_gemm_peak(threads: int, n: int = 2048, reps: int = 5, engine: str = "torch") -> float:
    """fp32 GFLOP/s (2 per multiply-add) of one n x n matmul with ``threads`` threads, best run.

    ``engine``: "torch" (``torch.matmul``, i.e. the BLAS torch was built with), "onnxruntime" (MLAS) or
    "openvino" (oneDNN) -- BLAS libraries differ per CPU vendor, so the machine's limit is the best of them.
    """
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    if engine == "torch":
        old = torch.get_num_threads()
        torch.set_num_threads(threads)

        def run() -> object:
            return torch.matmul(a, b)
    else:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
                                  [numpy_helper.from_array(b.numpy(), "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        x = a.numpy()
        if engine == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

            def run() -> object:
                return sess.run(None, {"a": x})
        elif engine == "openvino":
            import openvino as ov
            import openvino.properties.hint as hints

            onnx.checker.check_model(model)
            compiled = ov.Core().compile_model(ov.Core().read_model(model.SerializeToString(), b""), "CPU", {
                hints.performance_mode: hints.PerformanceMode.LATENCY, "INFERENCE_NUM_THREADS": threads,
                hints.inference_precision: "f32"})
            req = compiled.create_infer_request()

            def run() -> object:
                return req.infer({0: x})
        else:
            raise ValueError(f"unknown GEMM engine {engine}")
    try:
        run()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
    finally:
        if engine == "torch":
            torch.set_num_threads(old)
    return 2 * n ** 3 / best / 1e9


def measure_copy_bandwidth(threads: int, mb: int = 256, reps: int = 5) -> float:
    """GB/s of a large tensor copy (bytes read + bytes written), best run."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(mb * (1 << 20) // 4)
        dst = torch.empty_like(src)
        dst.copy_(src)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2 * src.numel() * 4 / best / 1e9


def last_level_cache_bytes() -> int:
    """Size of the highest-level data/unified cache of CPU 0 (sysfs), else 0."""
    import re
    from pathlib import Path

    best = (0, 0)
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (d / "type").read_text().strip() == "Instruction":
                continue
            level = int((d / "level").read_text())
            m = re.fullmatch(r"(\d+)([KMG]?)", (d / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if m:
            size = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
            best = max(best, (level, size))
    return best[1]


def cpu_model() -> str:
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


GEMM_ENGINES = ("torch", "onnxruntime", "openvino")


def runtime_version(runtime: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(runtime)
    except PackageNotFoundError:
        return "not installed"


def host_fingerprint(runtime: str, threads: int) -> dict[str, Any]:
    """What the host calibration depends on: CPU model, cores, threads, cache, runtime (+ torch) versions."""
    import os

    engine = runtime if runtime in GEMM_ENGINES else "torch"
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count() or 1, "threads": int(threads),
            "llc_bytes": last_level_cache_bytes(), "runtime": runtime, "engine": engine,
            "versions": {n: runtime_version(n) for n in sorted({engine, "torch"})}, "schema": 1}


def fingerprint_key(fp: dict[str, Any]) -> str:
    import hashlib
    import json

    return "host:" + hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def measure_dispersion(threads: int, n: int = 256, runs: int = 200) -> tuple[float, float]:
    """(p90 / median, p99 / median) of ``runs`` short fp32 matmuls: how much this machine spreads run times."""
    import torch

    from lgp_edge.profiling.measure import summarize

    a, b = torch.randn(n, n), torch.randn(n, n)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(10):
            torch.matmul(a, b)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
    t = summarize(times)
    return max(1.0, t.p90_ms / t.median_ms), max(1.0, t.p99_ms / t.median_ms, t.p90_ms / t.median_ms)


def measure_host(runtime: str, threads: int, gemm_n: int = 512) -> HostFacts:
    """Measure the host calibration (a few seconds): the runtime's GEMM at a cache-resident size (best of
    many short runs: on a shared machine the best is the one nobody preempted), DRAM and cache copy
    bandwidth, and the run-to-run dispersion."""
    from datetime import datetime, timezone

    fp = host_fingerprint(runtime, threads)
    try:
        peak = measure_gemm_peak(threads, n=gemm_n, reps=40, engine=fp["engine"])
    except ImportError:
        peak = measure_gemm_peak(threads, n=gemm_n, reps=40)
    llc = int(fp["llc_bytes"])
    cache_mb = max(1, min(8, llc // (4 << 20))) if llc else 0
    cache = measure_copy_bandwidth(threads, mb=cache_mb, reps=50) if cache_mb else 0.0
    p90, p99 = measure_dispersion(threads)
    return HostFacts(peak_gflops_fp32=peak, mem_gbps=measure_copy_bandwidth(threads, mb=256, reps=5),
                     threads=threads, gemm_n=gemm_n, llc_bytes=llc, cache_gbps=cache, p90_ratio=p90, p99_ratio=p99,
                     runtime=runtime, fingerprint=fingerprint_key(fp),
                     measured_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))


_IN_PROCESS: dict[str, HostFacts] = {}


def host_calibration(runtime: str, threads: int, store: Any = None, *, refresh: bool = False) -> HostFacts:
    """The host calibration for this fingerprint: from the store when it holds one (every process then
    predicts the same), else measured now and stored (``refresh``: measure and replace)."""
    key = fingerprint_key(host_fingerprint(runtime, threads))
    if not refresh:
        if store is not None:
            facts = store.host_calibration(key)
            if facts is not None:
                return HostFacts(**{k: v for k, v in facts.items() if k in HostFacts.__dataclass_fields__})
        if key in _IN_PROCESS:
            return _IN_PROCESS[key]
    import logging
    from dataclasses import asdict

    facts = measure_host(runtime, threads)
    _IN_PROCESS[key] = facts
    stored = store is not None and store.put_host_calibration(key, {**asdict(facts),
                                                                   "fingerprint_of": host_fingerprint(runtime,
                                                                                                      threads)})
    if not stored:
        logging.getLogger(__name__).warning(
            "host calibration measured now and not stored (no writable store): another process will measure "
            "again; 'lgp-edge profile --target cpu --calibrate' stores it")
    return facts


@functools.lru_cache(maxsize=8)
def host_facts(threads: int, gemm_n: int = 512) -> HostFacts:
    """Measured once per process and thread count, not stored (benchmarks; the predictor uses
    ``host_calibration``)."""
    return measure_host("onnxruntime", threads, gemm_n)


# -------------------------------------------------------------------------------------------- roofline
@dataclass(frozen=True)
class Roofline:
    peak_gflops: float  # at the precision priced
    mem_gbps: float  # DRAM
    compute_eff: float  # fraction of peak reached by ViT layers
    memory_eff: float  # fraction of bandwidth reached
    overhead_us: float  # per operator launch
    bytes_per_value: int
    source: str  # where the peak came from ("declared" or "measured")
    llc_bytes: int = 0  # last-level cache; 0: unknown, every byte is charged DRAM bandwidth
    cache_gbps: float = 0.0  # bandwidth of data that stays in the last-level cache (0: unknown)
    p90_ratio: float = 1.0  # dispersion model: p90 = median x p90_ratio
    p99_ratio: float = 1.0
    spread_source: str = ""  # where the dispersion model came from
    calibration: str = ""  # id of the host calibration it came from ("" for declared facts)

    def _mem_s(self, nbytes: float, in_cache: bool) -> float:
        if in_cache and self.cache_gbps > 0:
            return nbytes / (self.cache_gbps * 1e9 * self.memory_eff)
        if in_cache:
            return 0.0
        return nbytes / (self.mem_gbps * 1e9 * self.memory_eff)

    def part_ms(self, p: Part, weights_in_cache: bool = False) -> float:
        compute_s = 2 * p.macs / (self.peak_gflops * 1e9 * self.compute_eff)
        act = p.act_elems * self.bytes_per_value
        act_in_cache = bool(self.llc_bytes) and act <= self.llc_bytes
        memory_s = self._mem_s(p.params * self.bytes_per_value, weights_in_cache) + self._mem_s(act, act_in_cache)
        return 1e3 * max(compute_s, memory_s) + p.kernels * self.overhead_us * 1e-3

    def weights_fit_cache(self, parts: list[Part]) -> bool:
        """All of a model's weights fit in the last-level cache: after the first inference they stay there,
        so they are not charged DRAM bandwidth (half the cache is left for activations)."""
        return bool(self.llc_bytes) and sum(p.params for p in parts) * self.bytes_per_value <= self.llc_bytes / 2

    def predict_ms(self, parts: list[Part]) -> float:
        cached = self.weights_fit_cache(parts)
        return sum(self.part_ms(p, cached) for p in parts)


DEFAULT_SPREAD = (1.10, 1.25)  # p90/median, p99/median when nothing was ever measured on a target


def roofline_for(target: TargetSpec, precision: str, threads: int, *, runtime: str | None = None,
                 store: Any = None, refresh: bool = False) -> Roofline:
    """The roofline of a target: this host's stored (or now measured) calibration for ``detect`` targets,
    else the target file's declared facts."""
    hw: dict[str, Any] = target.hardware
    eff = hw["efficiency"]
    extra: dict[str, Any] = {}
    if hw.get("detect"):
        rt = runtime or target.runtime
        facts = host_calibration(rt, threads, store, refresh=refresh)
        # bf16/int8 peaks on a CPU depend on ISA extensions; only fp32 is measured, so others use it.
        peak, bw = facts.peak_gflops_fp32, facts.mem_gbps
        source = f"host calibration {facts.fingerprint} ({rt} fp32 GEMM, {threads} threads, {facts.measured_utc})"
        extra = {"llc_bytes": facts.llc_bytes, "cache_gbps": facts.cache_gbps, "p90_ratio": facts.p90_ratio,
                 "p99_ratio": facts.p99_ratio, "calibration": facts.fingerprint,
                 "spread_source": f"measured: this host's run-to-run dispersion ({facts.fingerprint})"}
    else:
        peaks = hw["peak_gflops"]
        if precision not in peaks:
            from lgp_edge.errors import UsageError

            raise UsageError(f"target '{target.name}' declares no peak for precision '{precision}'; it has "
                             f"{', '.join(peaks)}")
        peak, bw, source = float(peaks[precision]), float(hw["mem_gbps"]), "declared in the target file"
        if hw.get("llc_mb"):
            extra["llc_bytes"] = int(float(hw["llc_mb"]) * (1 << 20))
        if hw.get("cache_gbps"):
            extra["cache_gbps"] = float(hw["cache_gbps"])
        extra.update(p90_ratio=DEFAULT_SPREAD[0], p99_ratio=DEFAULT_SPREAD[1],
                     spread_source="assumed: nothing measured on this target yet")
    return Roofline(peak_gflops=peak, mem_gbps=bw, compute_eff=float(eff["compute"]),
                    memory_eff=float(eff["memory"]), overhead_us=float(eff["overhead_us"]),
                    bytes_per_value=BYTES_PER_VALUE[precision], source=source, **extra)
