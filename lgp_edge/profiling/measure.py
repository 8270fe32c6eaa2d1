"""The timing harness: warm-up, timed runs (by count or by seconds), robust statistics, noise check.

Every runtime hands the harness a zero-argument callable that runs one inference to completion; remote
runtimes hand it raw per-run times measured on the device. Either way the statistics are computed here,
in one place, the same way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)


# Bounds of the settings a user passes (``lgp-edge profile`` flags): anything beyond them is a typo, a run that
# would never end, or a request the runtime cannot serve (e.g. 100000 threads, 10^8 images per inference).
MAX_THREADS = 256
MAX_BATCH = 4096
MAX_ITERS = 1_000_000  # timed runs, and untimed warm-up runs
MAX_SECONDS = 3600.0


def settings_problem(name: str, value: object, low: float, high: float, *, integer: bool = True) -> str | None:
    """Why ``value`` is not a valid ``name`` in [low, high] (None when it is): integers are not bools, and a
    number must be finite."""
    from lgp_edge.specs import is_integer, is_number

    if integer:
        ok = is_integer(value) and low <= value <= high
        what = f"an integer in {int(low)}..{int(high)}"
    else:
        ok = is_number(value) and low < value <= high
        what = f"a finite number > {low:g} and <= {high:g}"
    return None if ok else f"{name} must be {what}, got {value!r}"


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = 10  # untimed runs before timing
    iters: int = 50  # timed runs (minimum when ``seconds`` is set)
    seconds: float | None = None  # time by duration instead: run until this many seconds have passed
    max_iters: int = 100_000  # cap for duration mode
    threads: int = 1  # intra-op threads, fixed and recorded
    batch: int = 1  # images per inference
    cv_threshold: float = 0.10  # measured again while std/mean or the dispersion is above this; noisy: dispersion
    repeat_noisy: bool = True  # re-measure a noisy run (up to max_series in all); keep the calmest, flagged if noisy
    max_series: int = 3  # bound on the series run for one model (1 = never repeat)
    rounds: int = 1  # >1: models measured in interleaved rounds of iters/rounds runs (drift hits all alike)

    def __post_init__(self) -> None:
        checks = (settings_problem("warmup", self.warmup, 0, MAX_ITERS),
                  settings_problem("iters", self.iters, 1, MAX_ITERS),
                  settings_problem("threads", self.threads, 1, MAX_THREADS),
                  settings_problem("batch", self.batch, 1, MAX_BATCH),
                  settings_problem("rounds", self.rounds, 1, MAX_ITERS),
                  settings_problem("max_iters", self.max_iters, 1, 10 * MAX_ITERS),
                  settings_problem("max_series", self.max_series, 1, 100),
                  None if self.seconds is None else settings_problem("seconds", self.seconds, 0, MAX_SECONDS,
                                                                     integer=False))
        problem = next((c for c in checks if c), None)
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True)
class Timing:
    """Statistics of one series of timed runs, in milliseconds."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    cv: float  # std / mean
    n: int  # timed runs
    warmup: int  # untimed runs before them
    noisy: bool = False  # the dispersion (see below) stayed above the threshold after the bounded repeats
    repeats: int = 1  # series run (more than 1 when the first one was noisy)
    robust_cv: float | None = None  # 1.4826 x MAD / median of the series (None: only summary statistics known)

    @property
    def dispersion(self) -> float:
        """What says whether the series was noisy: its robust CV, which a few preempted runs do not move (4 runs
        of 10 ms among 46 of 0.2 ms made std/mean 3.0 and every series of a sub-millisecond model 'noisy', so its
        measured latency was replaced by a prediction), else std / mean where only summary statistics are known
        (a board's trtexec or harness summary). Where the runs are known, the spread the p90 implies counts too
        ((p90 / median - 1) / 1.2816, a normal's): the p90 is what select budgets, and 1 preempted run in 5 set it
        at 12x the median of a series whose robust CV was 0."""
        if self.robust_cv is None:
            return self.cv
        tail = (self.p90_ms / self.median_ms - 1.0) / 1.2816 if self.median_ms > 0 else 0.0
        return max(self.robust_cv, tail)


# what flags a run noisy (Timing.dispersion over MeasureSettings.cv_threshold), as select and report say it
NOISY_RULE = ("dispersion over 10%: the larger of the robust CV (1.4826 x MAD / median) and the spread its p90 implies "
              "((p90 / median - 1) / 1.2816) where its runs are known, else std / mean")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of already sorted values; q in [0, 100]."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(times_ms: Sequence[float], warmup: int = 0) -> Timing:
    """Median, p90, p99, mean, sample std, CV and robust CV of a series of run times."""
    if not times_ms:
        raise ValueError("no timed runs")
    s = sorted(float(t) for t in times_ms)
    n = len(s)
    mean = sum(s) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in s) / (n - 1)) if n > 1 else 0.0
    median = percentile(s, 50)
    mad = percentile(sorted(abs(t - median) for t in s), 50)
    return Timing(median_ms=median, p90_ms=percentile(s, 90), p99_ms=percentile(s, 99), mean_ms=mean,
                  std_ms=std, min_ms=s[0], cv=std / mean if mean > 0 else 0.0, n=n, warmup=warmup,
                  robust_cv=1.4826 * mad / median if median > 0 else 0.0)


def _series(fn: Callable[[], object], settings: MeasureSettings, iters: int | None = None) -> list[float]:
    for _ in range(settings.warmup):
        fn()
    times: list[float] = []
    clock = time.perf_counter
    if settings.seconds is None:
        for _ in range(iters or settings.iters):
            t0 = clock()
            fn()
            times.append((clock() - t0) * 1e3)
    else:
        deadline = clock() + settings.seconds
        while (len(times) < settings.iters or clock() < deadline) and len(times) < settings.max_iters:
            t0 = clock()
            fn()
            times.append((clock() - t0) * 1e3)
    return times


def run_series(fn: Callable[[], object], warmup: int, iters: int) -> list[float]:
    """``warmup`` untimed calls, then the wall time (ms) of each of ``iters`` calls."""
    return _series(fn, MeasureSettings(warmup=warmup, iters=max(1, iters)), iters)


def time_callable(fn: Callable[[], object], settings: MeasureSettings) -> Timing:
    """Warm up, time ``fn``; re-measure while unsettled (bounded), keep the calmest series; flag it noisy by its
    dispersion."""
    return repeat_if_noisy(lambda: summarize(_series(fn, settings), settings.warmup), settings)


def repeat_if_noisy(run: Callable[[], Timing], settings: MeasureSettings) -> Timing:
    """Run a measurement; while it is unsettled (``_unsettled``) run it again, at most ``max_series`` series in
    all, and keep the calmest (``_calm``); flagged noisy when that one's dispersion (``Timing.dispersion``, robust
    to a few preempted runs) is over the threshold."""
    best = run()
    series = 1
    while settings.repeat_noisy and series < settings.max_series and _unsettled(best, settings):
        _log_again(best, settings, series + 1)
        again = run()
        series += 1
        best = min(best, again, key=_calm)
    return replace(best, noisy=best.dispersion > settings.cv_threshold, repeats=series)


def _unsettled(t: Timing, settings: MeasureSettings) -> bool:
    """Worth measuring again: its std / mean (which a burst of slow runs raises) or its dispersion (which decides
    the noisy flag; an even spread raises it with std / mean under the threshold) is over the threshold."""
    return max(t.cv, t.dispersion) > settings.cv_threshold


def _calm(t: Timing) -> tuple[float, float]:
    """Order of calm among repeated series: the dispersion that decides the flag first, then std / mean."""
    return (t.dispersion, t.cv)


def _log_again(t: Timing, settings: MeasureSettings, series: int) -> None:
    log.info("cv %.1f%%, dispersion %.1f%% (threshold %.0f%%): measuring again (%d of %d)", 100 * t.cv,
             100 * t.dispersion, 100 * settings.cv_threshold, series, settings.max_series)


def time_interleaved(fns: Sequence[Callable[[], object]], settings: MeasureSettings,
                     on_round: Callable[[int], None] | None = None) -> list[Timing]:
    """Time several models in ``settings.rounds`` interleaved rounds that share ``iters`` runs (the first
    ``iters % rounds`` rounds one run more).

    A shared machine's load drifts; measured one after another, models early and late in a list see
    different loads. Interleaved, every model samples the same stretch of time. Each round warms up again. A
    model whose interleaved runs stay noisy is timed again alone (``repeat_noisy``); where that series is
    calmer it is kept, and its record says so by its warm-up (``warmup``, not ``rounds x warmup``).
    """
    base, extra_runs = divmod(settings.iters, settings.rounds)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(settings.rounds):
        for i, fn in enumerate(fns):
            times[i] += _series(fn, replace(settings, seconds=None), max(1, base + (r < extra_runs)))
        if on_round is not None:
            on_round(r)
    out = []
    for fn, t in zip(fns, times):
        s = replace(summarize(t, settings.warmup * settings.rounds), repeats=settings.rounds)  # warm-up per round
        extra = 0
        while settings.repeat_noisy and _unsettled(s, settings) and extra + 1 < settings.max_series:
            # noisy: re-measure this model alone (bounded) and keep the calmest series
            extra += 1
            _log_again(s, settings, extra + 1)
            again = summarize(_series(fn, replace(settings, seconds=None), settings.iters), settings.warmup)
            if _calm(again) < _calm(s):
                s = replace(again, repeats=settings.rounds + extra)
            else:
                s = replace(s, repeats=settings.rounds + extra)
        out.append(replace(s, noisy=s.dispersion > settings.cv_threshold))
    return out
