"""The report's Pareto PNG: every descendant named where names do not cover each other, tick labels on a log axis
below 1 ms."""

from __future__ import annotations

import dataclasses

import pytest

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


def test_names_never_cover_each_other_and_the_front_is_named_first() -> None:
    """Every point was named at 6 pt: 81 descendants within a few tenths of a millisecond and a few points of
    top-1 (a depth-9 Ti/S/B pool) made a black smear where no name could be read (18 already overlapped). A name
    that would cover another is left out, the Pareto front's first; report.md and report.html list them all."""
    import random

    import matplotlib.pyplot as plt

    rng = random.Random(0)
    profile = dataclasses.replace(load_profile("cpu"), latency_budget_ms=10.0)
    cands = tuple(_cand(f"ti9.0-{i % 9}+s9.{i % 7}-5+b9.6-8x{i}", 1.0 + rng.random() * 0.3, 85 + rng.random() * 5,
                        10.0) for i in range(81))
    entry = ReportEntry(profile=profile, target=load_target("cpu"), candidates=cands, selection=None, problem="x",
                        plot="pareto-cpu.png")
    fig = pareto_figure(entry)
    try:
        texts = fig.axes[0].texts
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in texts]
        assert 0 < len(texts) < 81
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        from lgp_edge.select import pareto_front

        best = max(pareto_front(cands), key=lambda c: c.top1)
        assert best.key in {t.get_text() for t in texts}  # the most accurate point of the front is named
    finally:
        plt.close(fig)


def test_html_log_ticks_are_few_and_plain() -> None:
    """Over eight decades the chart's x axis had 24 crowded ticks, labelled in exponent notation ('1e-06')."""
    from lgp_edge.report_html import _nice_ticks
    from lgp_edge.select import format_value

    ticks = _nice_ticks(1e-6, 50, True)
    assert 3 <= len(ticks) <= 10 and all("e" not in format_value(t) for t in ticks)
    assert _nice_ticks(0.02, 5, True) == [0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]


@pytest.mark.parametrize("lo,hi", [(0.9, 17.0), (0.0, 19.9), (1.8, 12.0), (88.1, 90.6), (0.5, 0.9), (3.0, 3.4)])
def test_html_linear_ticks_are_four_to_eight(lo: float, hi: float) -> None:
    """A range under twice a power of ten (iphone's 1.0-16 ms) had one tick ("10"): no latency could be read off."""
    from lgp_edge.report_html import _nice_ticks

    ticks = _nice_ticks(lo, hi, False)
    assert 4 <= len(ticks) <= 9, ticks
    assert all(lo - 1e-9 <= t <= hi + 1e-9 for t in ticks)
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1 and all(len(f"{t:g}") <= 5 for t in ticks)  # evenly spaced, no 0.30000000000000004


def test_predicted_points_are_drawn_apart_and_called_predicted() -> None:
    """Every point was drawn alike whatever its latency's source, and a profile whose measured runs were noisy was
    titled "latencies 1 measured, 17 noisy": the predictions that replaced them were never called predicted."""
    import matplotlib.pyplot as plt

    entry = _entry([1.0, 2.0, 3.0, 4.0])
    c = entry.candidates
    cands = (dataclasses.replace(c[0], latency_source="measured"), c[1], dataclasses.replace(c[2], noisy=True),
             dataclasses.replace(c[3], noisy=True))
    fig = pareto_figure(dataclasses.replace(entry, candidates=cands))
    try:
        ax = fig.axes[0]
        title = ax.get_title()
        assert "1 measured" in title and "3 predicted" in title and "2 of them" in title and "noisy" in title
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("measured" in s for s in labels) and any("predicted" in s for s in labels)
        # each point's marker tells its source: the measured one apart from the three predicted ones
        paths = {}
        for coll in ax.collections:
            for (x, _y) in coll.get_offsets():
                paths.setdefault(float(x), set()).add(tuple(map(tuple, coll.get_paths()[0].vertices.round(3))))
        assert paths[1.0] != paths[2.0] and paths[2.0] == paths[3.0] == paths[4.0]
    finally:
        plt.close(fig)


# a jetson-nano report: three measured, fifteen predicted, eight of them within 25-28 ms and 88.4-89.3%
NANO = [("ti6.0-5", 5.652, 88.95), ("ti6.0-4+b6.5-5", 8.598, 88.15), ("ti6.0-3+b6.4-5", 11.411, 87.69),
        ("ti6.0-2+b6.3-5", 15.035, 87.92), ("ti6.0-1+b6.2-5", 19.677, 88.2), ("ti6.0-2+b6.2-5", 24.563, 88.56),
        ("ti6.0-1+b6.1-5", 25.089, 88.82), ("ti6.0-0+b6.1-5", 25.586, 88.88), ("ti6.0-0+b6.0-5", 25.616, 89.0),
        ("ti6.0-3+b6.3-5", 25.777, 88.44), ("ti6.0-5+b6.4-5", 26.476, 88.73), ("ti6.0-4+b6.3-5", 27.002, 88.46),
        ("ti6.0-4+b6.4-5", 27.081, 88.08), ("ti6.0-3+b6.2-5", 27.529, 88.74), ("ti6.0-2+b6.1-5", 28.055, 89.06),
        ("ti6.0-5+b6.5-5", 28.482, 88.74), ("ti6.0-1+b6.0-5", 28.581, 89.26), ("b6.0-5", 30.012, 90.49)]


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_a_name_never_sits_on_another_point_nor_past_the_axes(seed: int | None) -> None:
    """A dominated descendant's name was drawn right under a front point (whose own name was left out), so a reader
    took that point for the wrong descendant; the rightmost point's name ran past the figure ("ti6.0-0+b…")."""
    import random

    import matplotlib.pyplot as plt

    from lgp_edge.select import pareto_front

    points = NANO if seed is None else [(k, 2.0 + random.Random(seed + i).random() * 24, 88 + random.Random(
        -seed - i).random() * 1.5) for i, (k, _, _) in enumerate(NANO)]
    profile = dataclasses.replace(load_profile("cpu"), latency_budget_ms=33.0)
    cands = tuple(sorted((_cand(k, ms, top1, 33.0) for k, ms, top1 in points), key=lambda c: c.latency_ms))
    entry = ReportEntry(profile=profile, target=load_target("cpu"), candidates=cands, selection=None, problem="x",
                        plot="pareto-cpu.png")
    fig = pareto_figure(entry)
    try:
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        frame = ax.get_window_extent(renderer)
        where = {c.key: ax.transData.transform((c.latency_ms, c.top1)) for c in cands}
        named = set()
        for t in ax.texts:
            box = t.get_window_extent(renderer)
            named.add(t.get_text())
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, t
            for key, (x, y) in where.items():  # no other point's marker (radius ~3 px) under the name
                if key != t.get_text():
                    assert not box.padded(3).contains(x, y), (t.get_text(), key)
        assert {c.key for c in pareto_front(cands)} <= named
    finally:
        plt.close(fig)


@pytest.mark.parametrize("lo,hi", [(9.93, 10.16), (99.2, 100.6), (0.5, 0.9)])
def test_html_tick_labels_are_distinct_and_name_their_gridline(lo: float, hi: float) -> None:
    """Ticks 9.95, 10, 10.05, 10.1, 10.15 were labelled 9.95, 10, 10.1, 10.1, 10.2 (three significant digits): two
    gridlines carried one label, and one label named another gridline's value."""
    import re

    from lgp_edge.report_html import _frame, _nice_ticks, _Scale

    ticks = _nice_ticks(lo, hi, False)
    labels = re.findall(r'text-anchor="middle">([^<]*)<', "".join(_frame(_Scale(lo, hi, 87, 91, False), "ort")))[:-2]
    assert len(labels) == len(ticks) == len(set(labels))
    assert all(abs(float(s) - t) < 1e-9 for s, t in zip(labels, ticks)), (labels, ticks)
