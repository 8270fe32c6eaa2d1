"""The report's Pareto PNG: every descendant named, tick labels on a log axis below 1 ms."""

from __future__ import annotations

import dataclasses

from lgp_edge.profiles import load_profile
from lgp_edge.report import ReportEntry, pareto_figure
from lgp_edge.select import Candidate
from lgp_edge.targets import load_target


def _cand(key: str, ms: float, top1: float, budget: float) -> Candidate:
    return Candidate(key=key, blocks=6, params=1000, flops=10_000, top1=top1, latency_ms=ms, median_ms=ms * 0.9,
                     latency_source="predicted", runtime="onnxruntime", memory_mb=1.0, fits_latency=ms <= budget,
                     fits_memory=True)


def _entry(lats: list[float], budget: float = 10.0) -> ReportEntry:
    profile = dataclasses.replace(load_profile("cpu"), latency_budget_ms=budget)
    cands = tuple(_cand(f"d{i}.0-{i}", ms, 50 + i, profile.latency_budget_ms) for i, ms in enumerate(lats))
    return ReportEntry(profile=profile, target=load_target("cpu"), candidates=cands, selection=None, problem="x",
                       plot="pareto-cpu.png")


def _visible_xtick_labels(fig) -> list[str]:  # type: ignore[no-untyped-def]
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.xaxis.get_majorticklabels() + ax.xaxis.get_minorticklabels()
             if lo <= t.get_position()[0] <= hi]
    return [t.get_text() for t in ticks if t.get_text()]


def test_log_axis_below_1_ms_has_tick_labels() -> None:
    import matplotlib.pyplot as plt

    fig = pareto_figure(_entry([0.02, 0.03, 0.05, 0.08, 0.12], budget=0.5))
    try:
        assert fig.axes[0].get_xscale() == "log"
        labels = _visible_xtick_labels(fig)
        assert len(labels) >= 3, labels  # e.g. 0.02, 0.05, 0.1, 0.2, 0.5
        assert all(0.01 <= float(t) <= 1 for t in labels), labels
    finally:
        plt.close(fig)


def test_every_point_is_named() -> None:
    import matplotlib.pyplot as plt

    entry = _entry([0.05, 0.07, 0.1, 0.3, 2.0, 9.0])
    fig = pareto_figure(entry)
    try:
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert {c.key for c in entry.candidates} <= texts
    finally:
        plt.close(fig)


def test_html_log_ticks_are_few_and_plain() -> None:
    """Over eight decades the chart's x axis had 24 crowded ticks, labelled in exponent notation ('1e-06')."""
    from lgp_edge.report_html import _nice_ticks
    from lgp_edge.select import format_value

    ticks = _nice_ticks(1e-6, 50, True)
    assert 3 <= len(ticks) <= 10 and all("e" not in format_value(t) for t in ticks)
    assert _nice_ticks(0.02, 5, True) == [0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]
