"""Measuring this machine for the host calibration: GEMM peak in a runtime's own GEMM, copy bandwidth,
last-level cache, run-to-run dispersion, and the fingerprint (CPU model, cores, threads, cache, runtime
versions) a calibration belongs to. ``roofline.host_calibration`` puts them together and stores them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lgp_edge.specs import TargetSpec

GEMM_ENGINES = ("torch", "onnxruntime", "openvino")


def usable_cpu_ids() -> list[int]:
    """The CPUs this process may run on, sorted (its affinity mask, e.g. a cgroup cpuset); where the system has no
    affinity calls (macOS) or they fail, every CPU of the machine."""
    try:
        ids = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ids = []
    return ids or list(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a cgroup cpuset), else the machine's count."""
    return len(usable_cpu_ids())


@dataclass(frozen=True)
class CpuShare:
    """What other processes took of the CPUs this process may use, over a window (``CpuWatch``)."""

    others: float  # CPUs' worth of busy time (steal included) not this process's: 1.0 = one CPU all the window
    cpus: int  # the CPUs this process may use
    seconds: float  # the window

    def crowded(self, threads: int) -> bool:
        """Whether the others left less than a measurement at ``threads`` threads needs (a quarter of a CPU of
        slack): its threads waited for theirs, and its times are the load's as much as the model's. (Two busy
        processes beside a one-thread measurement on 2 CPUs take 1.33 of them: each of the three gets two thirds.)"""
        return self.cpus - self.others < threads - 0.25


def _cpu_busy_seconds(ids: list[int]) -> float | None:
    """Busy seconds (user, nice, system, irq, softirq, steal) of the CPUs ``ids`` since boot, from /proc/stat;
    None where there is no such file (macOS, Windows)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    wanted = {f"cpu{i}" for i in ids}
    ticks = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted and len(parts) >= 9:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in parts[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / hz


class CpuWatch:
    """Watches the CPUs this process may use from its creation on: ``share()`` says how much of them other
    processes (and a hypervisor's steal) took meanwhile."""

    def __init__(self) -> None:
        self._ids = usable_cpu_ids()
        self._busy = _cpu_busy_seconds(self._ids)
        self._own = self._own_seconds()
        self._t0 = time.monotonic()

    @staticmethod
    def _own_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def share(self) -> CpuShare | None:
        """The others' share since creation; None where the system does not say (no /proc/stat) or the window was
        too short to tell (under 0.1 s: /proc/stat counts in 10 ms ticks)."""
        busy, elapsed = _cpu_busy_seconds(self._ids), time.monotonic() - self._t0
        if busy is None or self._busy is None or elapsed < 0.1:
            return None
        others = max(0.0, (busy - self._busy) - (self._own_seconds() - self._own)) / elapsed
        return CpuShare(others=min(others, float(len(self._ids))), cpus=len(self._ids), seconds=elapsed)


def default_threads(target: TargetSpec) -> int:
    """The target file's ``threads``; else, for this host, every CPU this process may use (never more: a runtime
    asked for more threads than the affinity mask allows oversubscribes the cores it has and fails to pin
    threads), and for a device 1 (its thread count is the device's, never the one of whichever machine runs
    lgp-edge: a board measured from two workstations must not be split by their core counts)."""
    t = int(target.extra.get("threads", 0) or 0)
    if t > 0:
        return t
    return usable_cpus() if target.connection.kind == "local" else 1


def check_target_threads(target: TargetSpec) -> None:
    """A local target file's ``extra.threads`` above the CPUs this process may use: refused, as ``--threads`` is
    (its runs and predictions would be for a thread count this host cannot give)."""
    t = int(target.extra.get("threads", 0) or 0)
    if target.connection.kind == "local" and t > (n := usable_cpus()):
        from lgp_edge.errors import UsageError

        raise UsageError(f"target '{target.name}' asks for {t} threads (its extra.threads) on this host, which lets "
                         f"lgp-edge use {n} CPUs; set extra.threads to {n} or fewer (0: all of them), or give "
                         f"--threads {n} or fewer")


def default_measure_threads(target: TargetSpec) -> int:
    """The thread count ``profile`` measures at without ``--threads``: the target's, at most ``MAX_THREADS``."""
    from lgp_edge.profiling.measure import MAX_THREADS

    return min(default_threads(target), MAX_THREADS)


def measure_gemm_peak(threads: int, n: int = 2048, reps: int = 5, engine: str = "torch") -> float:
    """fp32 GFLOP/s (2 per multiply-add) of one n x n matmul with ``threads`` threads, best run.

    ``engine``: "torch" (``torch.matmul``, i.e. the BLAS torch was built with), "onnxruntime" (MLAS) or
    "openvino" (oneDNN) -- BLAS libraries differ per CPU vendor, so the machine's limit is the best of them.
    """
    import torch

    rng = torch.Generator().manual_seed(0)  # its own: the application's random numbers stay as they were
    a, b = torch.randn(n, n, generator=rng), torch.randn(n, n, generator=rng)
    if engine == "torch":
        old = torch.get_num_threads()
        torch.set_num_threads(threads)

        def run() -> object:
            return torch.matmul(a, b)
    else:
        run = _onnx_gemm(engine, a, b, threads)
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


def _onnx_gemm(engine: str, a: Any, b: Any, threads: int) -> Callable[[], object]:
    """``a @ b`` as a one-node ONNX graph compiled by ONNX Runtime or OpenVINO (``b`` a constant)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = a.shape[0]
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
        return lambda: sess.run(None, {"a": x})
    if engine == "openvino":
        import openvino as ov
        import openvino.properties.hint as hints

        onnx.checker.check_model(model)
        compiled = ov.Core().compile_model(ov.Core().read_model(model.SerializeToString(), b""), "CPU", {
            hints.performance_mode: hints.PerformanceMode.LATENCY, "INFERENCE_NUM_THREADS": threads,
            hints.inference_precision: "f32"})
        req = compiled.create_infer_request()
        return lambda: req.infer({0: x})
    raise ValueError(f"unknown GEMM engine {engine}")


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


SYSCTL_TIMEOUT_S = 5.0  # one ``sysctl -n NAME`` on macOS (it answers in milliseconds)


def _darwin() -> bool:
    import platform

    return platform.system() == "Darwin"


def _sysctl(name: str) -> str | None:
    """``sysctl -n NAME`` on macOS, where /proc and /sys do not exist; None when it fails, is missing, hangs or
    does not know the name (an "unknown oid", e.g. an Intel Mac's key on Apple Silicon)."""
    import subprocess

    try:
        run = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, encoding="utf-8",
                             errors="replace", timeout=SYSCTL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    value = run.stdout.strip()
    return value if run.returncode == 0 and value else None


def _sysctl_int(name: str) -> int | None:
    value = _sysctl(name)
    return int(value) if value is not None and value.isdecimal() else None


# macOS's names (``sysctl hw.optional``) of the instruction sets in ``CPU_FEATURES``, whose names are
# /proc/cpuinfo's: Apple Silicon's Advanced SIMD, dot product and int8 matrix multiply; an Intel Mac's AVX2, FMA,
# AVX-512 foundation and VNNI (Cascade Lake: int8 kernels that do not saturate).
DARWIN_FEATURES = (("asimd", "hw.optional.neon"), ("asimddot", "hw.optional.arm.FEAT_DotProd"),
                   ("i8mm", "hw.optional.arm.FEAT_I8MM"), ("avx2", "hw.optional.avx2_0"), ("fma", "hw.optional.fma"),
                   ("avx512f", "hw.optional.avx512f"), ("avx512_vnni", "hw.optional.avx512vnni"))


def _darwin_flags(wanted: tuple[str, ...]) -> set[str] | None:
    """Which of ``wanted`` (/proc/cpuinfo's names) this Mac has, from ``sysctl``; None when sysctl answered none of
    the names asked (it is missing or failing: nothing is known)."""
    flags, answered = set(), False
    for flag, name in DARWIN_FEATURES:
        if flag in wanted:
            value = _sysctl_int(name)
            answered = answered or value is not None
            if value:
                flags.add(flag)
    return flags if answered else None


def last_level_cache_bytes() -> int:
    """Size of the highest-level data/unified cache of CPU 0 (sysfs; on macOS sysctl's L3, else the performance
    cores' L2, else the L2), else 0."""
    import re
    from pathlib import Path

    if _darwin():
        for name in ("hw.l3cachesize", "hw.perflevel0.l2cachesize", "hw.l2cachesize"):
            size = _sysctl_int(name)
            if size:
                return size
        return 0
    best = (0, 0)
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (d / "type").read_text(encoding="utf-8").strip() == "Instruction":
                continue
            level = int((d / "level").read_text(encoding="utf-8"))
            m = re.fullmatch(r"(\d+)([KMG]?)", (d / "size").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            continue
        if m:
            size = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
            best = max(best, (level, size))
    return best[1]


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo's ``model name``, on macOS sysctl's ``machdep.cpu.brand_string`` ("Apple M2
    Pro"), else what the platform module says (on Apple Silicon only "arm")."""
    import platform
    from pathlib import Path

    if _darwin():
        brand = _sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The int8 instruction sets ONNX Runtime's and oneDNN's int8 kernels choose between (/proc/cpuinfo's names): x86
# AVX2, AVX-512 VNNI, AVX-VNNI and AMX; Arm's dot product (SDOT/UDOT) and int8 matrix multiply.
INT8_INSTRUCTIONS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "asimddot", "i8mm")


def int8_instructions(cpuinfo: str | None = None) -> list[str] | None:
    """Which of ``INT8_INSTRUCTIONS`` this CPU has, from ``cpuinfo`` (default: /proc/cpuinfo's first
    ``flags`` or ``Features`` line; on macOS sysctl's ``hw.optional`` names); None when neither can be read. An
    int8 model's results depend on the kernels these select, so an int8 check holds for the CPU it ran on."""
    if cpuinfo is None and _darwin():
        have = _darwin_flags(INT8_INSTRUCTIONS)
        return None if have is None else [f for f in INT8_INSTRUCTIONS if f in have]
    first = _first_processor(cpuinfo)
    if first is None:
        return None
    flags = set((first.get("flags") or first.get("Features") or "").split())
    return [f for f in INT8_INSTRUCTIONS if f in flags]


def _first_processor(cpuinfo: str | None = None) -> dict[str, str] | None:
    """The first processor's ``key: value`` lines of ``cpuinfo`` (default: /proc/cpuinfo); None when /proc/cpuinfo
    cannot be read."""
    from pathlib import Path

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return None
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    return first


# Instruction sets that change what a timing or an int8 result means on x86 and Arm (/proc/cpuinfo's names).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8",
                "asimd", "asimddot", "i8mm", "sve")


def cpu_facts(cpuinfo: str | None = None) -> dict[str, Any]:
    """What a benchmark records of the CPU it ran on: the model name, /proc/cpuinfo's family/model/stepping (a
    VM may show only "AMD EPYC", which these tell apart), which of ``CPU_FEATURES`` it has, the logical CPUs
    and those this process may use. Fields /proc/cpuinfo does not give are None (on macOS the features come from
    sysctl, and the family/model/stepping are None: the brand string names the chip)."""
    darwin = cpuinfo is None and _darwin()
    first = {} if darwin else (_first_processor(cpuinfo) or {})
    flags: set[str] | None = set((first.get("flags") or first.get("Features") or "").split()) or None
    if darwin:
        flags = _darwin_flags(CPU_FEATURES)
    return {"model": cpu_model(),
            "family": first.get("cpu family"), "model_number": first.get("model"), "stepping": first.get("stepping"),
            "features": None if flags is None else [f for f in CPU_FEATURES if f in flags],
            "logical_cpus": os.cpu_count(), "affinity_cpus": usable_cpus()}


def runtime_version(runtime: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(runtime)
    except PackageNotFoundError:
        return "not installed"


def host_fingerprint(runtime: str, threads: int) -> dict[str, Any]:
    """What the host calibration depends on: CPU model, cores, threads, cache, runtime (+ torch) versions, and
    how it is measured (``schema`` 2: the dispersion from calm series only; a schema-1 calibration may hold
    the dispersion of a machine that was busy at the time, so it is measured again, not reused; 3: each
    multi-thread figure floored by one thread's and the cache copy by the DRAM copy, which a schema-2 calibration
    on a loaded machine may lack)."""
    import os

    engine = runtime if runtime in GEMM_ENGINES else "torch"
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count() or 1, "threads": int(threads),
            "llc_bytes": last_level_cache_bytes(), "runtime": runtime, "engine": engine,
            "versions": {n: runtime_version(n) for n in sorted({engine, "torch"})}, "schema": 3}


def host_versions() -> dict[str, str]:
    """What a run on this host records beside its runtime versions: the machine it ran on (target 'cpu' is
    whichever machine runs lgp-edge, and a store may be shared between machines)."""
    import os

    facts = cpu_facts()
    out = {"host_cpu": facts["model"], "host_logical_cpus": str(os.cpu_count() or 1)}
    if facts["family"] is not None or facts["features"]:
        # a VM's generic name ("Intel(R) Xeon(R) Processor") covers CPUs with and without AMX or VNNI, whose
        # latencies differ 2-4x: which one it is
        known = [f"family {facts['family']} model {facts['model_number']} stepping {facts['stepping']}"
                 if facts["family"] is not None else "", ",".join(facts["features"] or [])]
        out["host_cpu_id"] = "; ".join(k for k in known if k)  # macOS, aarch64 Linux: the features alone
    return out


def fingerprint_key(fp: dict[str, Any]) -> str:
    import hashlib
    import json

    return "host:" + hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Dispersion:
    """How much this machine spreads run times: p90 / median and p99 / median of short matmul series."""

    p90_ratio: float
    p99_ratio: float
    calm_series: int  # series whose CV was within the profiler's noise threshold (the ratios come from these)
    series: int  # series run

    @property
    def busy(self) -> bool:
        """No series was calm: the ratios describe someone else's load at that moment, not the machine."""
        return self.calm_series == 0


def measure_dispersion(threads: int, n: int = 256, runs: int = 100, series: int = 5) -> Dispersion:
    """p90 / median and p99 / median of short fp32 matmuls, from the series the profiler would call calm.

    ``series`` series of ``runs`` matmuls each; every ratio is the median over the calm series (std / mean within
    ``MeasureSettings.cv_threshold``; ``profile`` measures a model again above it, or above it in dispersion). A
    predicted p90 must be comparable with a measured one, and measured runs are calm ones: a series that
    overlapped someone else's load (a build, another benchmark) would otherwise become the machine's
    dispersion and scale every predicted p90 until the next calibration. With no calm series the ratios are
    the median over all of them, and ``busy`` says they describe the load, not the machine."""
    import statistics

    import torch

    from lgp_edge.profiling.measure import MeasureSettings, summarize

    threshold = MeasureSettings().cv_threshold
    rng = torch.Generator().manual_seed(0)  # its own: the application's random numbers stay as they were
    a, b = torch.randn(n, n, generator=rng), torch.randn(n, n, generator=rng)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    timings = []
    try:
        for _ in range(10):
            torch.matmul(a, b)
        for _ in range(series):
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                torch.matmul(a, b)
                times.append((time.perf_counter() - t0) * 1e3)
            timings.append(summarize(times))
    finally:
        torch.set_num_threads(old)
    calm = [t for t in timings if t.cv <= threshold]  # std/mean: a burst of slow runs makes a series not calm
    use = calm or timings
    p90 = max(1.0, statistics.median(t.p90_ms / t.median_ms for t in use))
    return Dispersion(p90_ratio=p90, p99_ratio=max(p90, statistics.median(t.p99_ms / t.median_ms for t in use)),
                      calm_series=len(calm), series=len(timings))
