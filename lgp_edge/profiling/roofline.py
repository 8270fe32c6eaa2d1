"""Hardware facts and the roofline.

``parts_of`` (``parts``) splits a descendant (or a stock ViT) into the pieces the predictor prices: patch
embedding, each block by its dims and token count, each stitch, final norm + head. ``Roofline`` prices a piece
from a target's declared hardware: ``max(FLOPs / (peak x compute eff.), bytes / (bandwidth x memory eff.))``
plus a fixed cost per operator launch. FLOPs here are hardware FLOPs: 2 per multiply-add (the fvcore
numbers elsewhere in lgp-edge count a multiply-add once).

Bytes are charged DRAM bandwidth only when they do not fit in the last-level cache: a model whose
weights fit in half the cache keeps them there between inferences, and activations that fit are read back
from cache (``Roofline.weights_fit_cache``).

For targets with ``hardware.detect = true`` (this host) the facts are the *host calibration*: the
runtime's own fp32 GEMM, DRAM and cache copy bandwidth, the cache size and the run-to-run dispersion,
measured once per fingerprint (CPU model, cores, threads, cache, runtime versions), stored in the
measurement store and reused by every later process (``host_calibration``; the measurements themselves
are in ``host``); ``lgp-edge profile --target cpu --calibrate`` measures it again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from lgp_edge.errors import UsageError
from lgp_edge.profiling.host import (
    fingerprint_key,
    host_fingerprint,
    last_level_cache_bytes,
    measure_copy_bandwidth,
    measure_dispersion,
    measure_gemm_peak,
)
from lgp_edge.profiling.parts import Part, parts_of, vit_parts
from lgp_edge.progress import counted
from lgp_edge.specs import BYTES_PER_VALUE, CPU_RUNTIMES, TargetSpec

# ``parts`` and ``host`` names that callers reach through this module
__all__ = ["DEFAULT_SPREAD", "HostFacts", "Part", "Roofline", "host_calibration",
           "last_level_cache_bytes", "measure_copy_bandwidth", "measure_gemm_peak", "measure_host", "parts_of",
           "roofline_for", "vit_parts"]


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
    dispersion_busy: bool = False  # no dispersion series was calm: the ratios describe load, not the machine
    runtime: str = "torch"  # whose GEMM was timed
    fingerprint: str = ""  # key of the fingerprint it belongs to (``host_fingerprint``)
    measured_utc: str = ""


def measure_host(runtime: str, threads: int, gemm_n: int = 512) -> HostFacts:
    """Measure the host calibration (a few seconds): the runtime's GEMM at a cache-resident size (best of
    many short runs: on a shared machine the best is the one nobody preempted), DRAM and cache copy
    bandwidth, and the run-to-run dispersion."""
    from datetime import datetime, timezone

    fp = host_fingerprint(runtime, threads)
    llc = int(fp["llc_bytes"])
    cache_mb = max(1, min(8, llc // (4 << 20))) if llc else 0

    def at(n: int) -> tuple[float, float, float]:
        try:
            peak = measure_gemm_peak(n, n=gemm_n, reps=40, engine=fp["engine"])
        except Exception:  # noqa: BLE001 - the engine's runtime missing or broken: torch's GEMM instead
            peak = measure_gemm_peak(n, n=gemm_n, reps=40)
        cache = measure_copy_bandwidth(n, mb=cache_mb, reps=50) if cache_mb else 0.0
        return peak, cache, measure_copy_bandwidth(n, mb=256, reps=5)

    peak, cache, mem = at(threads)
    spread = measure_dispersion(threads)
    if threads > 1 and (spread.busy or (cache_mb and cache < mem)):
        # a busy machine (or a cache copy slower than a DRAM one: impossible undisturbed): n threads do at least
        # what one does, but every n-thread run waits for a preempted thread (a 2-thread cache copy measured
        # 1.4 GB/s beside 23 GB/s on one thread, and predictions came out 15x too slow), so one thread's figures
        # are the floor of each
        one = at(1)
        floored = [name for name, many, single in zip(("GEMM", "cache copy", "DRAM copy"), (peak, cache, mem), one)
                   if single > many]
        if floored:
            logging.getLogger(__name__).info(
                "host calibration at %d threads: %s slower than on 1 thread (a busy machine): 1 thread's figures "
                "used instead", threads, ", ".join(floored))
        peak, cache, mem = (max(a, b) for a, b in zip((peak, cache, mem), one))
    if cache_mb and cache < mem:  # a cache-resident copy slower than a DRAM one was disturbed: DRAM's bounds it
        cache = mem
    return HostFacts(peak_gflops_fp32=peak, mem_gbps=mem,
                     threads=threads, gemm_n=gemm_n, llc_bytes=llc, cache_gbps=cache, p90_ratio=spread.p90_ratio,
                     p99_ratio=spread.p99_ratio, dispersion_busy=spread.busy, runtime=runtime,
                     fingerprint=fingerprint_key(fp),
                     measured_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))


_IN_PROCESS: dict[str, HostFacts] = {}
_MEASURED: list[str] = []  # the host calibrations this process measured, in order
_UNSTORED: set[str] = set()  # calibrations this process measured and could not store (specs.UNSTORED_NOTE)


def host_measurements() -> int:
    """How many host calibrations this process has measured (a caller tells whether a step measured one)."""
    return len(_MEASURED)


# What any machine lgp-edge runs on measures (a stored value outside these was edited or damaged): GFLOP/s of
# one fp32 GEMM, GB/s of a copy, bytes of last-level cache, p90/median and p99/median of a timed series.
_FACT_RANGES = {"peak_gflops_fp32": (0.1, 1e6), "mem_gbps": (0.01, 1e5), "cache_gbps": (0.0, 1e6),
                "llc_bytes": (0, 1 << 40), "threads": (1, 4096), "gemm_n": (1, 1 << 16), "p90_ratio": (1.0, 1e3),
                "p99_ratio": (1.0, 1e4)}


def facts_problem(facts: dict[str, Any]) -> str | None:
    """Why stored host-calibration facts cannot be this machine's (None when they can)."""
    for name, (lo, hi) in _FACT_RANGES.items():
        v = facts.get(name, HostFacts.__dataclass_fields__[name].default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            return f"{name} {v!r} is not in {lo:g}..{hi:g}"
    if facts.get("p99_ratio", 1.0) < facts.get("p90_ratio", 1.0):
        return "p99_ratio is below p90_ratio"
    if 0 < facts.get("cache_gbps", 0.0) < facts.get("mem_gbps", 0.0):  # measure_host bounds it by DRAM's
        return f"cache_gbps {facts['cache_gbps']!r} is below mem_gbps {facts['mem_gbps']!r}"
    return None


def _put(store: Any, key: str, facts: HostFacts, runtime: str, threads: int) -> bool:
    """Store (replace) the calibration ``facts`` under ``key``, with the fingerprint it was measured for."""
    from dataclasses import asdict

    return store.put_host_calibration(key, {**asdict(facts), "fingerprint_of": host_fingerprint(runtime, threads)})


def host_calibration(runtime: str, threads: int, store: Any = None, *, refresh: bool = False) -> HostFacts:
    """The host calibration for this fingerprint: from the store when it holds one (every process then
    predicts the same), else measured now and stored (``refresh``: measure and replace)."""
    key = fingerprint_key(host_fingerprint(runtime, threads))
    if not refresh:
        problem = None
        if store is not None:
            facts = store.host_calibration(key)
            problem = None if facts is None else facts_problem(facts)
            if facts is not None and problem is None:
                _UNSTORED.discard(key)
                return HostFacts(**{k: v for k, v in facts.items() if k in HostFacts.__dataclass_fields__})
            if problem is not None:  # measured again below, and stored in its place
                logging.getLogger(__name__).warning("the host calibration stored in %s is impossible (%s): "
                                                    "measured again", getattr(store, "path", "the store"), problem)
        if key in _IN_PROCESS and problem is None:  # the store has none it can read: it gets this process's
            stored = store is not None and _put(store, key, _IN_PROCESS[key], runtime, threads)
            (_UNSTORED.discard if stored else _UNSTORED.add)(key)  # not in this store: another process measures
            return _IN_PROCESS[key]

    facts = measure_host(runtime, threads)
    _IN_PROCESS[key] = facts
    _MEASURED.append(key)
    log = logging.getLogger(__name__)
    if facts.dispersion_busy:  # the load of the moment, not the machine: its ratios are never used
        log.warning("this machine was busy while its run-to-run dispersion was measured (no series of short "
                    "matmuls within the profiler's 10%% CV): predicted p90s use the assumed spread (x%g) until "
                    "'lgp-edge profile --target cpu --calibrate' measures it again on a quieter machine",
                    DEFAULT_SPREAD[0])
    stored = store is not None and _put(store, key, facts, runtime, threads)
    (_UNSTORED.discard if stored else _UNSTORED.add)(key)
    if not stored:
        path = getattr(store, "path", None)
        if store is None:
            why = "no measurement store was given"
        elif getattr(store, "readonly", False) and not getattr(store, "exists", True):
            why = (f"the measurement store '{path}' does not exist or is empty (commands that only read never "
                   "create it)")
        elif getattr(store, "older_layout", False):
            why = (f"the measurement store '{path}' has the layout of an older lgp-edge, which commands that only "
                   "read do not upgrade (any 'lgp-edge profile' upgrades it)")
        else:
            why = f"the measurement store '{path}' could not be written"
        log.warning("host calibration measured now and not stored: %s; every process measures it again, and a "
                    "busy machine can skew it: 'lgp-edge profile --target cpu --calibrate' measures and stores it",
                    why)
    return facts


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
    calibrated_utc: str = ""  # when that host calibration was measured
    unstored: bool = False  # that calibration was measured by this process and not stored (UNSTORED_NOTE)
    threads_note: str = ""  # more threads asked than a CPU board's cores: how they were priced
    precision_note: str = ""  # a precision priced at another's peak (this host measures fp32 GEMM only)

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
    hw = target.hardware
    eff = hw.efficiency
    extra: dict[str, Any] = {}
    if hw.detect:
        rt = runtime or target.runtime
        facts = host_calibration(rt, threads, store, refresh=refresh)
        # bf16/int8 peaks on a CPU depend on ISA extensions; only fp32 is measured, so others use it.
        peak, bw = facts.peak_gflops_fp32, facts.mem_gbps
        source = f"host calibration {facts.fingerprint} ({rt} fp32 GEMM, {threads} threads, {facts.measured_utc})"
        extra = {"llc_bytes": facts.llc_bytes, "cache_gbps": facts.cache_gbps, "p90_ratio": facts.p90_ratio,
                 "p99_ratio": facts.p99_ratio, "calibration": facts.fingerprint,
                 "calibrated_utc": facts.measured_utc, "unstored": facts.fingerprint in _UNSTORED,
                 "spread_source": f"measured: this host's run-to-run dispersion ({facts.fingerprint})"}
        if precision != "fp32":
            extra["precision_note"] = (f"{precision} priced at this host's fp32 GEMM peak (only fp32 is measured; "
                                       f"{precision} may run faster or slower: 'lgp-edge profile --target "
                                       f"{target.name} --runtime {rt} --precision {precision}' measures it)")
        if facts.dispersion_busy:
            extra.update(p90_ratio=DEFAULT_SPREAD[0], p99_ratio=DEFAULT_SPREAD[1],
                         spread_source=f"assumed: this host was busy while its dispersion was measured "
                                       f"({facts.fingerprint})")
    else:
        declared = hw.peak(precision)
        if declared is None or hw.mem_gbps is None:
            raise UsageError(f"target '{target.name}' declares no peak for precision '{precision}'; it has "
                             f"{', '.join(hw.peak_gflops)}")
        peak, bw, source = declared, hw.mem_gbps, "declared in the target file"
        full = int(target.extra.get("threads", 0) or 0)  # the threads (cores) a CPU board's peak is declared for
        if (runtime or target.runtime) in CPU_RUNTIMES and threads > full > 0:  # no more cores to price them with
            source = (f"declared in the target file for {full} threads, its cores: {counted(threads, 'thread')} "
                      f"priced as {full}")
            extra["threads_note"] = f"{counted(threads, 'thread')} priced as its {full} cores"
        if (runtime or target.runtime) in CPU_RUNTIMES and 0 < threads < full:
            peak = declared * threads / full
            source = f"declared in the target file for {full} threads, scaled to {counted(threads, 'thread')}"
        if hw.llc_mb:
            extra["llc_bytes"] = int(hw.llc_mb * (1 << 20))
        if hw.cache_gbps:
            extra["cache_gbps"] = hw.cache_gbps
        extra.update(p90_ratio=DEFAULT_SPREAD[0], p99_ratio=DEFAULT_SPREAD[1],
                     spread_source="assumed: nothing measured on this target yet")
    return Roofline(peak_gflops=peak, mem_gbps=bw, compute_eff=eff.compute, memory_eff=eff.memory,
                    overhead_us=eff.overhead_us,
                    bytes_per_value=BYTES_PER_VALUE[precision], source=source, **extra)
