"""Latency prediction for descendants that were not measured on a target.

A descendant's latency is modelled as a sum over its parts (``roofline.parts_of``): one cost per part
type (patch embedding, block of given dims and tokens, stitch, norm + head) plus a constant per inference.

- **Calibrated** (a reachable device): a handful of *probe* models, built from the pool's own modules but
  not themselves descendants (one block of each instance, a few blocks of each, one stitch per instance
  pair), are measured; a least-squares fit of their latencies over part counts prices every part type.
  Every descendant's part counts are a combination of the probes' (checked), so the probes alone
  predict all descendants. Probe rows live in the store with keys ``probe:<part counts>``.
- **Roofline** (a target with no device): each part priced from the target file's hardware facts and
  efficiency factors (``roofline.py``); where some of the pool's descendants were measured on the target
  (imported timings), scaled by their measured / predicted ratio at the measured ones nearest in cost
  (``scaled_to_measured``).

A prediction's p90 and p99 come from a measured dispersion model, never the median relabelled: the
p90/median and p99/median of the calibration probes nearest in size; for a roofline, the spread of the calm
runs measured on the target (on this host at the compared thread count), else this host's run-to-run
dispersion (host calibration, from its calm series), else (nothing measured there yet, or a host busy
throughout its calibration) an assumed spread that says so in ``tool_versions["spread"]``.

``latencies_for`` returns, for every descendant of a pool, the robust aggregate of its recent measured runs
(noisy runs left out) when the store has calm ones, else a predicted record whose ``source`` is
``"predicted"``, whose ``tool_versions["predictor"]`` says how it was predicted and whose ``calibration``
names the calibration it came from; a descendant with only noisy runs is predicted and flagged ``noisy``.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from lgp_edge import __version__
from lgp_edge.models.plan import enumerate_descendants, stitch_specs
from lgp_edge.profiling.host import default_threads, host_versions
from lgp_edge.profiling.roofline import Part, Roofline, parts_of, roofline_for
from lgp_edge.progress import counted
from lgp_edge.specs import CPU_RUNTIMES, UNSTORED_NOTE, DescendantSpec, LatencyRecord, PoolSpec, Segment, TargetSpec

log = logging.getLogger(__name__)

PROBE_PREFIX = "probe:"
CONST = "const"  # per-inference constant (framework call, input copy…)


# ------------------------------------------------------------------------------------------- probes
def calibration_probes(pool: PoolSpec) -> list[DescendantSpec]:
    """Models that price every part type of ``pool``: per instance 1, ``depth // 2`` and ``depth - 1``
    blocks (embedding + blocks + norm/head); per stitched pair three short stitched models: front block 0
    -> stitch -> back block d-1, the same with back blocks d-2..d-1, and front blocks 0..1 -> back d-1.

    None is a descendant: descendants run all ``depth`` blocks of one instance, or join front blocks
    0..j to back blocks k.. at a paired-stitching config, where |j - k| <= 1 (so k <= j + 1),
    while the probes start the back segment at block >= d - 2 >= j + 3 for the depths 6 and 9. Three
    probes per part type over-determine the fit, so noise in one probe is averaged rather than copied
    into every descendant that shares its parts.
    """
    d = pool.depth
    pid = pool.pool_id
    out = []
    for inst in pool.instances:
        for k in sorted({1, max(2, d // 2), d - 1}):
            out.append(DescendantSpec(pid, (Segment(inst.name, 0, k - 1),), ()))
    seen = set()
    for st in stitch_specs(pool):
        if (st.front, st.back) in seen:
            continue
        seen.add((st.front, st.back))
        for j, first_back in ((0, d - 1), (0, d - 2), (1, d - 1)):
            out.append(DescendantSpec(pid, (Segment(st.front, 0, j), Segment(st.back, first_back, d - 1)),
                                      (st.name,)))
    return out


def part_counts(parts: Sequence[Part]) -> dict[str, int]:
    return dict(Counter(p.key for p in parts))


def probe_key(parts: Sequence[Part]) -> str:
    """A self-describing store key: ``probe:`` + sorted ``partkey*count`` joined by ``|``."""
    return PROBE_PREFIX + "|".join(f"{k}*{c}" for k, c in sorted(part_counts(parts).items()))


def parse_probe_key(key: str) -> dict[str, int]:
    if not key.startswith(PROBE_PREFIX):
        raise ValueError(f"not a probe key: {key}")
    out = {}
    for item in key[len(PROBE_PREFIX):].split("|"):
        name, _, count = item.rpartition("*")
        out[name] = int(count)
    return out


# -------------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """Per-part costs (ms) fitted on probe measurements; only combinations of probes are predictable."""

    columns: tuple[str, ...]  # CONST + part keys
    coef: tuple[float, ...]  # least-squares (minimum-norm) cost per column, ms
    basis: tuple[tuple[float, ...], ...]  # orthonormal basis of the probes' row space (coverage check)
    p90_ratio: float  # median over probes of p90 / median
    p99_ratio: float
    probes: int  # probe measurements used
    fit_rms_ms: float  # residual of the fit on the probes
    spread: tuple[tuple[float, float, float], ...] = ()  # (median ms, p90/median, p99/median) per probe
    ident: str = ""  # "probes:<hash>" of the probe rows it was fitted on

    def ratios_at(self, median_ms: float) -> tuple[float, float]:
        """Dispersion model: p90/median and p99/median of the (up to) 3 probes nearest in size (log median)."""
        import math

        if not self.spread:
            return max(1.0, self.p90_ratio), max(1.0, self.p90_ratio, self.p99_ratio)
        m = max(median_ms, 1e-9)
        near = sorted(self.spread, key=lambda s: abs(math.log(max(s[0], 1e-9)) - math.log(m)))[:3]
        r90 = max(1.0, statistics.median(s[1] for s in near))
        return r90, max(r90, statistics.median(s[2] for s in near))

    def _vector(self, counts: dict[str, int]) -> list[float] | None:
        if any(k not in self.columns for k in counts):
            return None
        return [1.0 if c == CONST else float(counts.get(c, 0)) for c in self.columns]

    def covers(self, parts: Sequence[Part]) -> bool:
        v = self._vector(part_counts(parts))
        if v is None:
            return False
        proj = [0.0] * len(v)
        for b in self.basis:
            dot = sum(x * y for x, y in zip(v, b))
            proj = [p + dot * y for p, y in zip(proj, b)]
        resid = sum((x - p) ** 2 for x, p in zip(v, proj)) ** 0.5
        return resid <= 1e-6 * max(1.0, sum(x * x for x in v) ** 0.5)

    def predict_ms(self, parts: Sequence[Part]) -> float:
        v = self._vector(part_counts(parts))
        if v is None:
            raise ValueError("part types outside the calibration")
        return sum(x * c for x, c in zip(v, self.coef))

    def table(self) -> dict[str, float]:
        """Fitted cost per column (only combinations spanned by the probes are meaningful)."""
        return dict(zip(self.columns, self.coef))


def fit_calibration(records: Sequence[LatencyRecord]) -> Calibration:
    """Least-squares fit of probe medians over their part counts (+ a constant), per image: a probe timed at batch
    b counts its median / b, as ``Predictor.record`` multiplies a prediction by its batch (so probes timed at the
    batch predicted give back their own batch's times)."""
    import numpy as np

    rows = [parse_probe_key(r.descendant_key) for r in records]
    if not rows:
        raise ValueError("no probe records")
    columns = (CONST, *sorted({k for row in rows for k in row}))
    a = np.array([[1.0 if c == CONST else float(row.get(c, 0)) for c in columns] for row in rows])
    y = np.array([r.median_ms / r.batch for r in records])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    rank = int((s > s.max() * 1e-10).sum())
    resid = a @ coef - y
    import hashlib

    ident = hashlib.sha256("|".join(f"{r.descendant_key}={r.median_ms:.6g}/{r.p90_ms:.6g}/{r.p99_ms:.6g}"
                                    + (f"@b{r.batch}" if r.batch != 1 else "")
                                    for r in sorted(records, key=lambda r: r.descendant_key)).encode()).hexdigest()
    return Calibration(columns=columns, coef=tuple(float(c) for c in coef),
                       basis=tuple(tuple(float(x) for x in row) for row in vt[:rank]),
                       p90_ratio=statistics.median(r.p90_ms / r.median_ms for r in records),
                       p99_ratio=statistics.median(r.p99_ms / r.median_ms for r in records),
                       probes=len(records), fit_rms_ms=float(np.sqrt((resid ** 2).mean())),
                       spread=tuple(sorted((r.median_ms / r.batch, r.p90_ms / r.median_ms, r.p99_ms / r.median_ms)
                                           for r in records)),
                       ident=f"probes:{ident[:16]}")


# ---------------------------------------------------------------------------------------- predictor
@dataclass(frozen=True)
class Predictor:
    """Either a calibration from probe measurements or a roofline from the target file."""

    kind: str  # "calibrated" or "roofline"
    target: str
    runtime: str
    precision: str
    calibration: Calibration | None = None
    roofline: Roofline | None = None
    # roofline only: (roofline ms per image, measured / roofline) of the descendants measured on the target, in
    # order of cost; a prediction takes the ratio at its own cost (``scale_at``); () leaves the roofline as it is
    scale_points: tuple[tuple[float, float], ...] = ()
    scale_source: str = ""  # what the scale was fitted on ("" when unscaled)

    def covers(self, parts: Sequence[Part]) -> bool:
        return self.kind == "roofline" or (self.calibration is not None and self.calibration.covers(parts))

    def predict(self, parts: Sequence[Part]) -> tuple[float, float, float]:
        """(median, p90, p99) in ms; p90 and p99 from the dispersion model, never the median relabelled."""
        if self.calibration is not None:
            m = self.calibration.predict_ms(parts)
            r90, r99 = self.calibration.ratios_at(m)
            return m, m * r90, m * r99
        assert self.roofline is not None
        m = self.roofline.predict_ms(list(parts))
        m *= scale_at(self.scale_points, m)
        r90 = max(1.0, self.roofline.p90_ratio)
        return m, m * r90, m * max(r90, self.roofline.p99_ratio)

    @property
    def calibration_id(self) -> str:
        if self.calibration is not None:
            return self.calibration.ident
        assert self.roofline is not None
        r = self.roofline
        if r.calibration:  # the host and the time of its calibration: another calibration, other numbers
            return f"{r.calibration}@{r.calibrated_utc}" if r.calibrated_utc else r.calibration
        return f"declared:{self.target}"

    @property
    def spread_source(self) -> str:
        if self.calibration is not None:
            return f"measured: p90/median of the {self.calibration.probes} calibration probes nearest in size"
        assert self.roofline is not None
        return self.roofline.spread_source or "assumed"

    def describe(self) -> str:
        if self.calibration is not None:
            c = self.calibration
            return (f"calibrated on {c.probes} probe measurements on {self.target} ({self.runtime}, "
                    f"{self.precision}); fit rms {c.fit_rms_ms:.4f} ms; calibration {c.ident}")
        assert self.roofline is not None
        r = self.roofline
        cache = f", weights within {r.llc_bytes / 2**21:g} MB stay in cache" if r.llc_bytes else ""
        scaled = f"; {self.scale_source}" if self.scale_source else ""
        return (f"roofline from {self.target}'s hardware facts ({r.source}: {r.peak_gflops:.4g} GFLOP/s x "
                f"{r.compute_eff:g}, {r.mem_gbps:.4g} GB/s x {r.memory_eff:g}, {r.overhead_us:g} us/op{cache}); "
                f"spread {r.spread_source}{scaled}")

    def record(self, key: str, parts: Sequence[Part], *, batch: int = 1, threads: int = 1,
               pool_id: str = "") -> LatencyRecord:
        median, p90, p99 = self.predict(parts)
        versions = {"lgp-edge": __version__, "predictor": self.kind, "spread": self.spread_source}
        if self.scale_source:
            versions["scale"] = self.scale_source
        if self.roofline is not None and self.roofline.unstored:
            versions["calibration_note"] = UNSTORED_NOTE
        if self.roofline is not None and self.roofline.threads_note:
            versions["threads_note"] = self.roofline.threads_note
        if self.roofline is not None and self.roofline.precision_note and not self.scale_source:
            versions["precision_note"] = self.roofline.precision_note  # scaled: to runs at this precision
        return LatencyRecord(descendant_key=key, target=self.target, runtime=self.runtime,
                             precision=self.precision, batch=batch, median_ms=median * batch, p90_ms=p90 * batch,
                             p99_ms=p99 * batch, mean_ms=median * batch, std_ms=0.0, cv=0.0, n=0, warmup=0,
                             threads=threads, source="predicted", when=now_utc(), tool_versions=versions,
                             pool_id=pool_id, calibration=self.calibration_id)


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


RECENT_RUNS = 5  # the robust aggregate reads this many most recent runs of a model


def robust_measured(records: Sequence[LatencyRecord], recent: int = RECENT_RUNS) -> dict[tuple[Any, ...],
                                                                                      LatencyRecord]:
    """One record per (pool, model, target, runtime, precision, batch): the median over the ``recent``
    newest runs at the newest run's thread count, leaving out runs flagged noisy and runs under other tool
    versions than the newest run's (another runtime version, or for this host's target another machine: their
    times are not this setup's). When every recent run is noisy the aggregate is flagged noisy (callers must
    not let it decide anything silently)."""
    groups: dict[tuple[Any, ...], list[LatencyRecord]] = {}
    for r in records:  # oldest first
        groups.setdefault((r.pool_id, r.descendant_key, r.target, r.runtime, r.precision, r.batch), []).append(r)
    out = {}
    for k, rows in groups.items():
        threads, versions = rows[-1].threads, rows[-1].tool_versions
        recent_rows = [r for r in rows if r.threads == threads][-recent:]
        last = [r for r in recent_rows if r.tool_versions == versions]
        other = len(recent_rows) - len(last)
        calm = [r for r in last if not r.noisy]
        use = calm or last
        if len(recent_rows) == 1:  # one run: itself (with runs left out, the aggregate's note says which)
            out[k] = use[0]
            continue
        med = statistics.median(r.median_ms for r in use)
        p90 = max(med, statistics.median(r.p90_ms for r in use))
        p99 = max(p90, statistics.median(r.p99_ms for r in use))
        newest = use[-1]
        out[k] = replace(newest, median_ms=med, p90_ms=p90, p99_ms=p99,
                         mean_ms=statistics.median(r.mean_ms for r in use),
                         std_ms=statistics.median(r.std_ms for r in use), cv=statistics.median(r.cv for r in use),
                         n=sum(r.n for r in use), noisy=not calm,
                         tool_versions={**newest.tool_versions,
                                        "aggregate": f"median of {counted(len(use), 'recent run')}"
                                                     + ("" if calm else ", all noisy")
                                                     + (f" ({len(last) - len(calm)} noisy left out)"
                                                        if calm and len(calm) < len(last) else "")
                                                     + (f" ({counted(other, 'run')} under other tool versions left out)"
                                                        if other else "")})
    return out


def this_host(rows: Sequence[LatencyRecord]) -> list[LatencyRecord]:
    """Runs of target 'cpu' (whatever machine runs lgp-edge) that were measured on this machine, or on one that
    did not record itself (stores written before runs named their host): a store shared between machines holds
    the others' runs too, and their times are not this machine's."""
    me = host_versions()
    return [r for r in rows if all(r.tool_versions.get(k, v) == v for k, v in me.items())]


def probe_records(store: Any, target: str, runtime: str, precision: str, batch: int = 1,
                  threads: int | None = None, *, here: bool = False) -> list[LatencyRecord]:
    """Each probe type's robust aggregate for a target/runtime/precision (any pool: a probe key names its parts),
    at ``threads`` when given; ``here``: only runs of this machine (``this_host``, for target 'cpu'). Only runs
    under the tool versions of the newest probe run: an old calibration (another pool's, an older runtime) must
    not outvote a new one in the fit with the probe types only it measured. One noisy in every recent run is
    flagged noisy: ``fit_probes`` decides whether it is used."""
    recs = store.records(target=target, runtime=runtime, precision=precision, source="measured", batch=batch,
                         recent=RECENT_RUNS, threads=threads, key_prefix=PROBE_PREFIX)
    if here:
        recs = this_host(recs)
    if recs:
        versions = max(recs, key=lambda r: r.when).tool_versions
        recs = [r for r in recs if r.tool_versions == versions]
    newest: dict[str, LatencyRecord] = {}
    for r in robust_measured(recs).values():
        if r.descendant_key not in newest or r.when >= newest[r.descendant_key].when:
            newest[r.descendant_key] = r
    return sorted(newest.values(), key=lambda r: r.descendant_key)


def _probes_were(n: int) -> str:
    """``1 calibration probe was``, ``3 calibration probes were``."""
    return f"{counted(n, 'calibration probe')} {'was' if n == 1 else 'were'}"


def fit_probes(probes: Sequence[LatencyRecord], need: Sequence[Sequence[Part]] = (), *,
               target: str = "") -> Calibration | None:
    """The calibration of probe runs (just measured, or the store's aggregates) for the models ``need``: the fit
    of the calm probes when it covers them all (a probe timed under load would set the p90 of every model
    predicted near its size), else the fit of every probe, noisy ones kept, when that covers them, else None.
    The process that measured the probes and every later one reading them from the store apply this one rule,
    so they predict the same."""
    calm = [r for r in probes if not r.noisy]
    again = f": 'lgp-edge profile --target {target} --calibrate' on a quieter machine measures them again"
    if calm:
        cal = fit_calibration(calm)
        if all(cal.covers(p) for p in need):
            if len(calm) < len(probes):
                log.warning("%s noisy and left out of the fit%s", _probes_were(len(probes) - len(calm)), again)
            return cal if possible_fit(cal, need, again) else None
    if len(calm) == len(probes):
        return None
    cal = fit_calibration(probes)
    if not all(cal.covers(p) for p in need):
        return None
    log.warning("%s noisy and kept: the calm ones alone do not cover these models%s",
                _probes_were(len(probes) - len(calm)), again)
    return cal if possible_fit(cal, need, again) else None


def possible_fit(cal: Calibration, need: Sequence[Sequence[Part]], again: str = "") -> bool:
    """False (said in a warning) when the fit predicts a model of ``need`` at 0 ms or less: one probe timed while
    another process held the core (its series calm, all of it slow) tips a least-squares fit that far, and such a
    fit is no calibration."""
    worst = min((cal.predict_ms(p) for p in need), default=1.0)
    if worst > 0:
        return True
    log.warning("the calibration probes' fit predicts %.3g ms for a model (impossible: a probe was timed while the "
                "machine was busy); it is not used%s", worst, again)
    return False


def measured_spread(store: Any, target: str, runtime: str, precision: str,
                    threads: int | None = None, *, here: bool = False) -> tuple[float, float, int] | None:
    """(p90/median, p99/median, runs) over the calm measured runs of a target (at ``threads`` when given; ``here``:
    of this machine), or None when there are none."""
    rows = [r for r in store.records(target=target, runtime=runtime, precision=precision, source="measured",
                                     recent=RECENT_RUNS, threads=threads)
            if not r.noisy and r.median_ms > 0]
    if here:
        rows = this_host(rows)
    if not rows:
        return None
    r90 = max(1.0, statistics.median(r.p90_ms / r.median_ms for r in rows))
    return r90, max(r90, statistics.median(r.p99_ms / r.median_ms for r in rows)), len(rows)


def stored_calibration(target: TargetSpec, precision: str, runtime: str, *, store: Any, threads: int,
                       need: Sequence[Sequence[Part]], batch: int = 1) -> Calibration | None:
    """The calibration the store's probes give (timed at ``batch``, else at batch 1) when it covers every model in
    ``need``; None otherwise. Reads the store only: nothing is measured."""
    found = False
    for b in dict.fromkeys((batch, 1)):
        probes = probe_records(store, target.name, runtime, precision, b, threads=threads,
                               here=target.connection.kind == "local")
        cal = fit_probes(probes, need, target=target.name) if probes else None
        if cal is not None:
            return cal
        found = found or bool(probes)
    if found:
        log.info("stored probes for %s do not cover these models; using the roofline", target.name)
    return None


def make_predictor(target: TargetSpec, precision: str, runtime: str | None = None, *,
                   store: Any = None, threads: int = 1, need: Sequence[Sequence[Part]] = (),
                   refresh_host: bool = False, batch: int = 1) -> Predictor:
    """Calibrated from the store's probes (at ``threads``, on a board as on this host) when they cover every model
    in ``need``: those timed at ``batch``, else those timed at batch 1 (one image's cost, times the batch); else a
    roofline (this host: its stored host calibration). A roofline's p90/median is the one of the calm runs measured
    on the target at ``threads`` (on this host: this machine's) when there are any: real models in the real runtime
    are better evidence of the spread than the host calibration's matmuls or an assumption."""
    runtime = runtime or target.runtime
    local = target.connection.kind == "local"
    if store is not None:
        cal = stored_calibration(target, precision, runtime, store=store, threads=threads, need=need, batch=batch)
        if cal is not None:
            return Predictor("calibrated", target.name, runtime, precision, calibration=cal)
    roof = roofline_for(target, precision, threads, runtime=runtime, store=store, refresh=refresh_host)
    if store is not None:
        spread = measured_spread(store, target.name, runtime, precision, threads=threads, here=local)
        if spread is not None:
            roof = replace(roof, p90_ratio=spread[0], p99_ratio=spread[1],
                           spread_source=f"measured: median p90/median of {spread[2]} runs on {target.name} at "
                                         f"{counted(threads, 'thread')}")
        elif not local and runtime in CPU_RUNTIMES:  # runs at another count are not this count's evidence
            other = sorted({r.threads for r in store.records(target=target.name, runtime=runtime, precision=precision,
                                                             source="measured", recent=1)} - {threads})
            if other:
                roof = replace(roof, spread_source=f"assumed: nothing measured on {target.name} at "
                                                   f"{counted(threads, 'thread')} (its runs at "
                                                   f"{', '.join(map(str, other))} threads are another count's)")
    return Predictor("roofline", target.name, runtime, precision, roofline=roof)


def comparison_threads(rows: Sequence[LatencyRecord], default: int) -> int:
    """The one thread count a pool's descendants are compared at: the one most of them have calm runs at
    (none calm: runs of any kind; ties: ``default``, the target's, when it is among them, else the one
    measured last), else ``default``. A latency at 2 threads is not comparable with one at 1, and a
    re-profile of one model at another thread count must not replace its calm runs at the count the others
    were measured at."""
    keys: dict[int, set[str]] = {}
    newest: dict[int, str] = {}
    for r in [r for r in rows if not r.noisy] or rows:
        keys.setdefault(r.threads, set()).add(r.descendant_key)
        newest[r.threads] = max(newest.get(r.threads, ""), r.when)
    if not keys:
        return default
    most = max(len(k) for k in keys.values())
    best = [t for t, k in keys.items() if len(k) == most]
    return default if default in best else max(best, key=lambda t: newest[t])


def scale_at(points: Sequence[tuple[float, float]], ms: float) -> float:
    """The measured / roofline ratio at roofline cost ``ms``: interpolated between the two measured descendants
    nearest in cost (linear in log cost and log ratio, so the scaled prediction lies between their
    measurements), the nearest one's ratio beyond them, 1 without any."""
    if not points:
        return 1.0
    if ms <= points[0][0]:
        return points[0][1]
    if ms >= points[-1][0]:
        return points[-1][1]
    for (c0, r0), (c1, r1) in zip(points, points[1:]):
        if c0 <= ms <= c1:
            if c1 == c0:
                return r1
            t = math.log(ms / c0) / math.log(c1 / c0)
            return math.exp((1 - t) * math.log(r0) + t * math.log(r1))
    return points[-1][1]


def scaled_to_measured(predictor: Predictor, pool: PoolSpec, specs: Sequence[DescendantSpec],
                       measured: dict[str, LatencyRecord], batch: int) -> Predictor:
    """The roofline scaled to the pool's descendants measured on the target: a roofline over declared hardware
    facts can be off by a factor (efficiencies, clocks, runtime version), and mixing its numbers with a few
    measured ones chose a descendant predicted at 2.7 ms next to its sibling measured at 5 ms. The factor is
    the measured / predicted ratio at the measured descendants nearest in predicted cost (``scale_at``), not
    one median for all: with a small model measured at 2x and a large one at 5x, a median of 3.5x predicted
    the large model's costlier siblings faster than its measurement, and ``select`` chose one of them over
    budget. Measured descendants of equal roofline cost share their median ratio."""
    by_cost: dict[float, list[float]] = {}
    for s in specs:
        if s.key not in measured:
            continue
        cost = predictor.predict(parts_of(pool, s))[0]
        ratio = measured[s.key].median_ms / (cost * batch)
        if math.isfinite(ratio) and ratio > 0 and cost > 0:
            by_cost.setdefault(cost, []).append(ratio)
    if not by_cost:
        return predictor
    points = tuple((c, statistics.median(r)) for c, r in sorted(by_cost.items()))
    ratios = [r for _, r in points]
    lo, hi = min(ratios), max(ratios)
    span = f"x{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"x{lo:.3g}-x{hi:.3g}"
    n = sum(len(r) for r in by_cost.values())
    return replace(predictor, scale_points=points,
                   scale_source=f"scaled {span} (measured / predicted of {counted(n, 'descendant')} measured on "
                                f"{predictor.target}, taken at the nearest in predicted cost)")


def _measured_rows(store: Any, target: TargetSpec, runtime: str, precision: str, pool: PoolSpec,
                   batch: int) -> list[LatencyRecord]:
    """The recent measured runs of the pool's descendants at ``batch`` (on this host for a local target); probes
    calibrate, they are not descendants."""
    rows = store.records(target=target.name, runtime=runtime, precision=precision, pool_id=pool.pool_id,
                         source="measured", batch=batch, recent=RECENT_RUNS, key_prefix=PROBE_PREFIX,
                         exclude_prefix=True)
    return this_host(rows) if target.connection.kind == "local" else rows


def _at_threads(rows: Sequence[LatencyRecord], runtime: str, threads: int) -> list[LatencyRecord]:
    """``rows`` as compared at ``threads``: a CPU runtime's keep the count they ran at (the caller leaves the others
    out); a GPU or NPU runtime's thread count says nothing, so every run counts, labelled ``threads``."""
    if runtime in CPU_RUNTIMES:
        return list(rows)
    return [replace(r, threads=threads) for r in rows]


def _calm_measured(store: Any, target: TargetSpec, runtime: str, precision: str, pool: PoolSpec, batch: int,
                   threads: int) -> dict[str, LatencyRecord]:
    """Descendant key -> the robust aggregate of its recent calm runs at ``batch`` and ``threads``."""
    rows = _at_threads(_measured_rows(store, target, runtime, precision, pool, batch), runtime, threads)
    return {r.descendant_key: r for r in robust_measured([r for r in rows if r.threads == threads]).values()
            if not r.noisy}


def scaled_roofline(predictor: Predictor, pool: PoolSpec, store: Any, target: TargetSpec, *, threads: int,
                    batch: int, measured: dict[str, LatencyRecord] | None = None) -> Predictor:
    """A roofline ``predictor`` of the pool's descendants scaled to those measured on its target
    (``scaled_to_measured``): at ``batch`` (``measured``, else read from ``store``); with nothing measured at a batch
    above 1, to the batch-1 runs, one image's cost times the batch (an upper bound: a batch costs at most that, where
    the bare roofline predicted 15x a batch-1 run times 4). Any other predictor is returned as it is. ``select``,
    ``profile --predict`` and the API predict through this one path."""
    if predictor.kind != "roofline" or store is None:
        return predictor
    runtime, precision = predictor.runtime, predictor.precision
    specs = enumerate_descendants(pool)
    if measured is None:
        measured = _calm_measured(store, target, runtime, precision, pool, batch, threads)
    if measured:
        return scaled_to_measured(predictor, pool, specs, measured, batch)
    if batch > 1:
        ones = _calm_measured(store, target, runtime, precision, pool, 1, threads)
        scaled = scaled_to_measured(predictor, pool, specs, ones, 1) if ones else predictor
        if scaled.scale_source:
            return replace(scaled, scale_source=f"{scaled.scale_source} at batch 1, times the batch")
    return predictor


def compared_runs(rows: Sequence[LatencyRecord], target: TargetSpec, runtime: str, threads: int | None
                  ) -> tuple[int, dict[tuple[Any, ...], LatencyRecord]]:
    """The thread count measured runs are compared at (``threads`` for a CPU runtime, else ``comparison_threads``
    of the runs) and the robust aggregate of each model's runs at it (``robust_measured``)."""
    own = default_threads(target)  # the count the target's app runs
    chosen_here = runtime not in CPU_RUNTIMES or threads is None
    if chosen_here:
        threads = comparison_threads(rows, own)
    rows = _at_threads(rows, runtime, threads)
    other = {r.threads for r in rows if r.threads != threads}
    if other and chosen_here and runtime in CPU_RUNTIMES and own in other:
        log.warning("compared at %s, the count most descendants were measured at; the runs at %s (target %s's "
                    "own count) are left out: give --threads %d to compare at that count", counted(threads, "thread"),
                    counted(own, "thread"), target.name, own)
    elif other:
        log.info("comparing at %s; runs at other thread counts (%s) left out", counted(threads, "thread"),
                 ", ".join(str(t) for t in sorted(other)))
    return threads, robust_measured([r for r in rows if r.threads == threads])


def latencies_for(pool: PoolSpec, target: TargetSpec, precision: str, store: Any = None,
                  runtime: str | None = None, *, batch: int = 1, threads: int | None = None
                  ) -> dict[str, LatencyRecord]:
    """Every descendant key of the pool ``pool`` describes -> its measured latency (robust aggregate of the
    recent runs) when the store has calm ones, else a prediction. Only the spec is needed, not weights.

    All at one thread count: ``threads``, else ``comparison_threads`` of the stored runs. Each record says
    which it is (``source``); predicted ones name their predictor in ``tool_versions`` and their
    calibration. A descendant whose recent runs were all noisy is predicted instead, with ``noisy=True``
    and ``tool_versions["noisy_measurement"]`` saying so.
    """
    runtime = runtime or target.runtime
    specs = enumerate_descendants(pool)
    out: dict[str, LatencyRecord] = {}
    noisy: dict[str, LatencyRecord] = {}
    rows: list[LatencyRecord] = []
    if store is not None:
        rows = _measured_rows(store, target, runtime, precision, pool, batch)
    threads, found = compared_runs(rows, target, runtime, threads)
    for r in found.values():
        (noisy if r.noisy else out)[r.descendant_key] = r
    missing = [s for s in specs if s.key not in out]
    if missing:
        parts = {s.key: parts_of(pool, s) for s in missing}
        predictor = make_predictor(target, precision, runtime, store=store, threads=threads,
                                   need=list(parts.values()), batch=batch)
        predictor = scaled_roofline(predictor, pool, store, target, threads=threads, batch=batch, measured=out)
        log.info("%d descendants measured, %d predicted (%s)", len(specs) - len(missing), len(missing),
                 predictor.describe())
        for s in missing:
            rec = predictor.record(s.key, parts[s.key], batch=batch, threads=threads, pool_id=pool.pool_id)
            if s.key in noisy:
                n = noisy[s.key]
                rec = replace(rec, noisy=True, tool_versions={
                    **rec.tool_versions, "noisy_measurement": f"every recent measured run was noisy (p90 "
                                                              f"{n.p90_ms:.3g} ms, cv {n.cv:.2f}): predicted instead"})
            out[s.key] = rec
    return {s.key: out[s.key] for s in specs}
