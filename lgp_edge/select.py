"""Selection: the best descendant for a deployment profile.

Keep the descendants whose p90 latency on the profile's target and precision fits the latency budget and
whose weights plus peak activations fit the memory budget; among them choose the highest top-1, ties to
the lower p90 latency. The Pareto front (top-1 up, latency down) over all evaluated descendants is kept
for printing and plotting. Latencies come from the measurement store, measured where a row exists and
predicted otherwise; every candidate carries its source.

``select_descendant`` is pure (records + latencies in, ``Selection`` out); ``plan_selection`` fetches the
latencies from the profiler's store for a saved pool.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgp_edge.errors import NothingFits, UsageError
from lgp_edge.models.plan import activation_bytes, quantized_weight_count
from lgp_edge.specs import (
    BYTES_PER_VALUE,
    FORMAT_RUNTIME,
    MB,
    DescendantRecord,
    DeviceProfile,
    LatencyRecord,
    PoolSpec,
    TargetSpec,
    latency_note,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One descendant scored against a profile."""

    key: str  # DescendantSpec.key
    blocks: int  # transformer blocks it runs
    params: int  # parameters
    flops: int  # FLOPs at batch 1 (fvcore convention)
    top1: float | None  # validation top-1 in percent, None if the pool was not evaluated
    latency_ms: float  # p90 latency at the profile's batch, target and precision
    median_ms: float  # median latency
    latency_source: str  # "measured" or "predicted"
    runtime: str  # runtime the latency belongs to
    memory_mb: float  # weights + peak activations at the profile's precision and batch
    fits_latency: bool  # latency_ms <= budget
    fits_memory: bool  # memory_mb <= budget
    noisy: bool = False  # its measured runs were noisy: the latency is predicted instead (see latency_note)
    latency_note: str = ""  # how the latency was obtained (aggregate of runs, predictor, noisy fallback)
    p99_ms: float | None = None  # p99 latency (same source)
    calibration: str = ""  # predicted: the calibration it came from
    threads: int = 1  # intra-op threads the latency belongs to (one count for every candidate of a selection)

    @property
    def fits(self) -> bool:
        return self.fits_latency and self.fits_memory

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "blocks": self.blocks, "params": self.params, "flops": self.flops,
                "top1": self.top1, "latency_ms": self.latency_ms, "median_ms": self.median_ms,
                "latency_source": self.latency_source, "runtime": self.runtime, "memory_mb": self.memory_mb,
                "fits_latency": self.fits_latency, "fits_memory": self.fits_memory, "fits": self.fits,
                "p99_ms": self.p99_ms, "noisy": self.noisy, "latency_note": self.latency_note,
                "calibration": self.calibration, "threads": self.threads}


@dataclass(frozen=True)
class Selection:
    """The outcome of selecting for one profile."""

    profile: DeviceProfile  # budgets used (after command-line overrides)
    pool_id: str  # pool the descendants come from
    candidates: tuple[Candidate, ...]  # every evaluated descendant, fastest first
    front: tuple[Candidate, ...]  # Pareto front over all candidates, fastest first
    chosen: Candidate  # the winner
    reason: str  # one sentence: why the winner won

    @property
    def fitting(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.fits)

    @property
    def sources(self) -> dict[str, int]:
        return latency_sources(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return selection_dict(self.profile, self.pool_id, self.candidates, self.chosen, self.reason)


def latency_sources(cands: Sequence[Candidate]) -> dict[str, int]:
    """How many latencies are measured, predicted, ...: {source: count}."""
    out: dict[str, int] = {}
    for c in cands:
        out[c.latency_source] = out.get(c.latency_source, 0) + 1
    return out


def selection_dict(profile: DeviceProfile, pool_id: str, cands: Sequence[Candidate], chosen: Candidate | None,
                   reason: str | None, problem: str | None = None) -> dict[str, Any]:
    """A selection as JSON, one shape whether a descendant was chosen (``reason``) or none fits (``problem``)."""
    return {"profile": profile.to_dict(), "pool_id": pool_id, "chosen": chosen.to_dict() if chosen else None,
            "reason": reason, "problem": problem, "front": [c.to_dict() for c in pareto_front(cands)],
            "candidates": len(cands), "fitting": sum(c.fits for c in cands), "latency_sources": latency_sources(cands),
            "threads": chosen.threads if chosen else (cands[0].threads if cands else None),
            "noisy": [c.key for c in cands if c.noisy]}


def format_value(value: float) -> str:
    """A measured or predicted latency or size for people to read: three significant digits (``:.3g``), not in
    exponent notation (5000, 47.4, 10, 0.191) unless written out it is longer than 16 characters."""
    return _no_exponent(f"{value:.3g}")


def format_against(value: float, budget: float) -> str:
    """``value`` in a message that compares it with ``budget`` ("takes 1.0621 ms > 1.062 ms"): three significant
    digits, more where three would write it on the other side of the budget as written ("1.06 ms > 1.062 ms")."""
    written = float(format_budget(budget))
    for digits in range(3, 18):
        text = f"{value:.{digits}g}"
        if (float(text) > written) == (value > budget):
            return _no_exponent(text)
    return _no_exponent(repr(float(value)))


def format_budget(value: float) -> str:
    """A budget for people to read, exactly the one applied: the shortest text that reads back as it (33, 2.5,
    15.62495; ``:g`` wrote 15.625), not in exponent notation (1000000, not 1e+06) unless written out it is longer
    than 16 characters."""
    text = repr(float(value))
    return _no_exponent(text[:-2] if text.endswith(".0") else text)


def _no_exponent(text: str) -> str:
    """``text`` written out without an exponent, unless that takes more than 16 characters (1e-300 would be
    written with 300 zeros): then as it is."""
    from decimal import Decimal

    if "e" not in text:
        return text
    plain = format(Decimal(text), "f")
    return plain if len(plain) <= 16 else text


def memory_mb(pool: PoolSpec, record: DescendantRecord, precision: str, batch: int) -> float:
    """Weights plus the peak live activations, at ``precision``'s bytes per value. int8: only the blocks' and
    stitches' linear weights are int8; the rest of the weights and every activation stay fp32."""
    if precision == "int8":
        q = quantized_weight_count(pool, record.spec)
        return (q + (record.params - q) * 4 + activation_bytes(pool, record.spec, batch, 4)) / MB
    b = BYTES_PER_VALUE[precision]
    return (record.params * b + activation_bytes(pool, record.spec, batch, b)) / MB


def named_fits(key: str, latency: Any, memory: float | None, profile: Any, flag: str) -> dict[str, Any]:
    """Whether a model named with ``flag`` (--descendant, --descendants, --model) keeps the profile's budgets (None
    where its latency or memory is unknown: a stock model never profiled, a block layout the estimate does not
    know); a warning for each budget it is known to miss (it is exported as asked)."""
    fits_latency = None if latency is None else bool(latency.p90_ms <= profile.latency_budget_ms)
    fits_memory = None if memory is None else bool(memory <= profile.memory_budget_mb)
    why = []
    if fits_latency is False:
        why.append(f"p90 {format_against(latency.p90_ms, profile.latency_budget_ms)} ms > "
                   f"{format_budget(profile.latency_budget_ms)} ms")
    if fits_memory is False:
        why.append(f"needs {format_against(memory, profile.memory_budget_mb)} MB > "
                   f"{format_budget(profile.memory_budget_mb)} MB")
    if why:
        log.warning("%s does not fit profile %s (%s); exported as asked (%s)", key, profile.name, "; ".join(why),
                    flag)
    return {"memory_mb": memory, "fits_latency": fits_latency, "fits_memory": fits_memory}


def pareto_front(cands: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """Candidates no other candidate matches on top-1 at a lower latency or beats on top-1 at the same or lower
    latency (a slower one of the same top-1 is dominated); fastest first, top-1 strictly rising."""
    scored = sorted((c for c in cands if c.top1 is not None), key=lambda c: (c.latency_ms, -c.top1))
    front: list[Candidate] = []
    for c in scored:
        if not front or c.top1 > front[-1].top1:
            front.append(c)
    return tuple(front)


def per_batch(batch: int) -> str:
    """What a latency at ``batch`` is: "" at batch 1, else " per batch of N images" (one call on N images)."""
    return "" if batch == 1 else f" per batch of {batch} images"


def front_and_chosen(front: Sequence[Candidate], chosen: Candidate | None) -> tuple[Candidate, ...]:
    """The rows of a "Pareto front" table: the front, and the chosen descendant where it is not on it (the front is
    top-1 against latency, so a faster, more accurate one over the memory budget hides it); fastest first."""
    if chosen is None or any(c.key == chosen.key for c in front):
        return tuple(front)
    return tuple(sorted((*front, chosen), key=lambda c: (c.latency_ms, -(c.top1 or 0.0))))


def memory_words(p: DeviceProfile) -> str:
    """What a descendant's ``memory MB`` counts, at the profile's batch and precision (tables of select and report)."""
    return (f"memory MB is the model's estimate at batch {p.batch} ({p.precision}): its weights plus the widest "
            "block's activations; the runtime's own memory and its working copies come on top (measured in the "
            "README, \"Select and export\")")


def describe_budget(p: DeviceProfile) -> str:
    return f"p90 <= {format_budget(p.latency_budget_ms)} ms and <= {format_budget(p.memory_budget_mb)} MB"


def _top1_digits(a: float, b: float) -> int:
    """Decimals that write two different top-1 differently (2, more on more than 20,000 validation images)."""
    return next((d for d in range(2, 7) if f"{a:.{d}f}" != f"{b:.{d}f}"), 6)


def _why_not(c: Candidate, p: DeviceProfile) -> str:
    parts = []
    if not c.fits_latency:
        parts.append(f"takes {format_against(c.latency_ms, p.latency_budget_ms)} ms p90 ({c.latency_source}) > "
                     f"{format_budget(p.latency_budget_ms)} ms")
    if not c.fits_memory:
        parts.append(f"needs {format_against(c.memory_mb, p.memory_budget_mb)} MB > "
                     f"{format_budget(p.memory_budget_mb)} MB")
    return " and ".join(parts)


def score_candidates(records: Sequence[DescendantRecord], latencies: Mapping[str, LatencyRecord],
                     profile: DeviceProfile, *, pool: PoolSpec) -> list[Candidate]:
    """Every evaluated descendant with its latency, memory and whether it fits; fastest first."""
    if not records:
        raise UsageError(f"pool {pool.pool_id} lists no descendants; run 'lgp-edge pool eval POOL --data …' first")
    if all(r.top1 is None for r in records):
        raise UsageError(f"pool {pool.pool_id} has no top-1 for its descendants (never evaluated); run "
                         "'lgp-edge pool eval POOL --data …' first")
    cands = []
    for r in records:
        if r.top1 is None:
            log.warning("descendant %s has no top-1; left out of selection", r.key)
            continue
        lat = latencies.get(r.key)
        if lat is None:
            raise UsageError(f"no latency for descendant {r.key} on target '{profile.target}' "
                             f"({profile.precision}); run 'lgp-edge profile --target {profile.target}'")
        if lat.batch != profile.batch:
            log.warning("latency of %s is at batch %d, profile '%s' runs batch %d", r.key, lat.batch, profile.name,
                        profile.batch)
        mem = memory_mb(pool, r, profile.precision, profile.batch)
        cands.append(Candidate(key=r.key, blocks=r.blocks, params=r.params, flops=r.flops, top1=r.top1,
                               latency_ms=lat.p90_ms, median_ms=lat.median_ms, latency_source=lat.source,
                               runtime=lat.runtime, memory_mb=mem,
                               fits_latency=lat.p90_ms <= profile.latency_budget_ms,
                               fits_memory=mem <= profile.memory_budget_mb, noisy=lat.noisy,
                               latency_note=_latency_note(lat), p99_ms=lat.p99_ms, calibration=lat.calibration,
                               threads=lat.threads))
    cands.sort(key=lambda c: (c.latency_ms, -(c.top1 or 0.0)))
    return cands


def _latency_note(lat: LatencyRecord) -> str:
    return latency_note(lat.source, lat.tool_versions, lat.n, lat.noisy)


FLAGS_HINT = "raise --budget-ms / --memory-mb or pick another profile"  # what select and export can change


def select_descendant(records: Sequence[DescendantRecord], latencies: Mapping[str, LatencyRecord],
                      profile: DeviceProfile, *, pool: PoolSpec) -> Selection:
    """Choose the best descendant of ``records`` for ``profile`` (raises NothingFits when none fits)."""
    return choose(score_candidates(records, latencies, profile, pool=pool), profile, pool=pool)


def selection_context(pool_dir: Any, target: TargetSpec, manifest: Any) -> dict[str, Any]:
    """What ``select --json`` says beside the selection: the pool's folder (None where only the loaded pool is
    known: the API), the target and where the top-1 comes from."""
    return {"pool": None if pool_dir is None else str(pool_dir), "target": target.name,
            "top1_data": manifest.top1_data, "top1_images": manifest.top1_images,
            "top1_synthetic": manifest.top1_data == "synthetic"}


@contextlib.contextmanager
def nothing_fits_context(pool_dir: Any, target: TargetSpec, manifest: Any) -> Iterator[None]:
    """A NothingFits raised inside gets ``selection_context`` added to its ``selection``: every caller (select,
    export, the API) reads ``select --json``'s shape, key for key."""
    try:
        yield
    except NothingFits as exc:
        exc.selection = {**(exc.selection or {}), **selection_context(pool_dir, target, manifest)}
        raise


def choose(cands: Sequence[Candidate], profile: DeviceProfile, *, pool: PoolSpec, hint: str = FLAGS_HINT
           ) -> Selection:
    """The most accurate of the scored ``cands`` that fits ``profile`` (the fastest of equals); NothingFits,
    ending with ``hint`` (what the user can change), when none fits."""
    fitting = [c for c in cands if c.fits]
    if not fitting:
        fastest = cands[0]
        smallest = min(cands, key=lambda c: c.memory_mb)
        msg = (f"no descendant of pool {pool.pool_id} fits profile '{profile.name}' ({describe_budget(profile)}): "
               f"the fastest, {fastest.key}, {_why_not(fastest, profile)}")  # the budget each one named fails
        if smallest.key != fastest.key:
            msg += f"; the smallest, {smallest.key}, {_why_not(smallest, profile)}"
        exc = NothingFits(f"{msg}; {hint}")
        exc.selection = selection_dict(profile, pool.pool_id, cands, None, None, problem=str(exc))  # for --json
        raise exc
    chosen = min(fitting, key=lambda c: (-c.top1, c.latency_ms))
    better = sorted((c for c in cands if c.top1 > chosen.top1), key=lambda c: (-c.top1, c.latency_ms))
    digits = _top1_digits(chosen.top1, better[0].top1) if better else 2
    reason = (f"{chosen.key} has the highest top-1 ({chosen.top1:.{digits}f}%) of the {len(fitting)} of {len(cands)} "
              f"descendants within {describe_budget(profile)}")
    ties = [c for c in fitting if c.top1 == chosen.top1 and c.key != chosen.key]
    if ties:
        reason += f", and is the fastest of the {len(ties) + 1} with that top-1"
    if better:
        b = better[0]
        reason += f"; the most accurate, {b.key} ({b.top1:.{digits}f}%), {_why_not(b, profile)}"
    noisy = [c.key for c in cands if c.noisy]
    if noisy:
        reason += (f"; the measured runs of {', '.join(noisy)} were all noisy, so their latency is predicted "
                   "(profile them again on a quieter machine)")
    return Selection(profile=profile, pool_id=pool.pool_id, candidates=tuple(cands), front=pareto_front(cands),
                     chosen=chosen, reason=reason)


def records_of(manifest: Any) -> tuple[DescendantRecord, ...]:
    """The evaluated descendants of a pool manifest (``pool eval`` fills them)."""
    return tuple(manifest.descendants)


def open_store(path: str | Path | None, missing: str = "every latency is predicted") -> Any:
    """The measurement store, read-only: ``--store PATH`` or the default one. A missing file reads as an empty
    store and is not created (warned, with ``missing``: what that means for the caller); nothing but a host
    calibration is ever written."""
    from lgp_edge.profiling.store import MeasurementStore, default_store_path

    store = MeasurementStore(path if path is not None else default_store_path(), readonly=True)
    if not store.exists:
        log.warning("measurement store %s does not exist (or is empty): %s", store.path, missing)
    return store


def profile_runtime(profile: DeviceProfile, target: TargetSpec) -> str:
    """The runtime that will run the profile's first format (cpu-int8: OpenVINO), else the target's default. The
    ONNX file of a TensorRT target is the engine's input: TensorRT runs it."""
    if not profile.formats or (profile.formats[0] == "onnx" and target.runtime == "tensorrt"):
        return target.runtime
    return FORMAT_RUNTIME.get(profile.formats[0], target.runtime)


def latencies(pool: PoolSpec, target: TargetSpec, precision: str, store: Any, batch: int = 1,
              runtime: str | None = None, threads: int | None = None) -> dict[str, LatencyRecord]:
    """Measured-or-predicted latency of every descendant of the pool ``pool`` describes on ``target`` (the
    profiler's API), at ``threads`` (None: the thread count most of them were measured at, else the target's)."""
    from lgp_edge.profiling.predict import latencies_for

    return latencies_for(pool, target, precision, store, runtime=runtime, batch=batch, threads=threads)


def profile_latencies(pool: PoolSpec, target: TargetSpec, profile: DeviceProfile, store: Any
                      ) -> dict[str, LatencyRecord]:
    """Latencies for ``profile``: its precision, batch and threads, on the runtime that runs its first format."""
    return latencies(pool, target, profile.precision, store, profile.batch, profile_runtime(profile, target),
                     profile.threads)


def plan_selection(manifest: Any, profile: DeviceProfile, target: TargetSpec, store: Any,
                   pool_dir: Any = None) -> Selection:
    """Select for a pool from its manifest alone (no weights): latencies from the store (or predicted), top-1
    from the manifest. NothingFits carries ``select --json``'s whole shape (``selection_context``)."""
    lat = profile_latencies(manifest.spec, target, profile, store)
    with nothing_fits_context(pool_dir, target, manifest):
        return select_descendant(records_of(manifest), lat, profile, pool=manifest.spec)
