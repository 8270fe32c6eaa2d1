"""``lgp-edge report``: one Pareto plot per profile (top-1 vs p90 latency, budget line, chosen point), report.md,
report.html (the same charts, interactive, self-contained; see ``report_html``) and report.csv.

For each profile (by default the built-in profiles named like a target, so one per target) the pool's
evaluated descendants are scored exactly as ``lgp-edge select`` scores them; the plot shows every
descendant (filled: fits the budgets; hollow: does not), the Pareto front, the latency budget as a
vertical line and the chosen descendant as a star, and says how many latencies are measured and how many
predicted. Descendants without a top-1 (not evaluated) are left out and listed. The report directory is
written atomically like an export.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgp_edge.errors import NothingFits
from lgp_edge.profiling.measure import NOISY_RULE
from lgp_edge.progress import NULL
from lgp_edge.select import (
    Candidate,
    Selection,
    choose,
    format_against,
    format_budget,
    front_and_chosen,
    memory_words,
    pareto_front,
    records_of,
    score_candidates,
)
from lgp_edge.specs import DeviceProfile, TargetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportEntry:
    profile: DeviceProfile
    target: TargetSpec
    candidates: tuple[Candidate, ...]  # every evaluated descendant, fastest first
    selection: Selection | None  # None when nothing fits
    problem: str  # why there is no selection ("" when there is one)
    plot: str  # PNG file name inside the report directory


# what a report's reader can change when nothing fits (report has no budget flags)
EDIT_HINT = "edit the profile's latency_budget_ms / memory_budget_mb or pick another profile"


def plot_entry(entry: ReportEntry, path: Path) -> None:
    """The Pareto PNG of one profile."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(entry)
    fig.savefig(path)
    plt.close(fig)


def pareto_figure(entry: ReportEntry) -> Any:
    """The Pareto figure of one profile (a matplotlib Figure; the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cands = entry.candidates
    front = pareto_front(cands)
    p = entry.profile
    fig, ax = plt.subplots(figsize=(7, 5.2), dpi=120)
    # filled: fits the budgets; hollow: over a budget. A circle: measured; a triangle: predicted (also where the
    # measured runs were noisy), as the HTML chart tells them apart by colour
    for fits, measured in ((True, True), (True, False), (False, True), (False, False)):
        group = [c for c in cands if c.fits == fits and (c.latency_source == "measured" and not c.noisy) == measured]
        if not group:
            continue
        label = f"{'measured' if measured else 'predicted'}, {'fits the budgets' if fits else 'over a budget'}"
        style = {"color": "tab:blue"} if fits else {"facecolors": "none", "edgecolors": "tab:gray"}
        ax.scatter([c.latency_ms for c in group], [c.top1 for c in group], s=28, marker="o" if measured else "^",
                   label=label, **style)
    ax.step([c.latency_ms for c in front], [c.top1 for c in front], where="post", color="tab:blue", lw=1, alpha=0.6,
            label="Pareto front")
    ax.axvline(p.latency_budget_ms, color="tab:red", ls="--", lw=1.2,
               label=f"budget {format_budget(p.latency_budget_ms)} ms p90")
    if entry.selection is not None:
        ch = entry.selection.chosen
        ax.scatter([ch.latency_ms], [ch.top1], marker="*", s=260, color="tab:orange", edgecolors="black", zorder=5,
                   label=f"chosen {ch.key}")
    lats = [c.latency_ms for c in cands] + [p.latency_budget_ms]
    if max(lats) / max(min(lats), 1e-9) > 20:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        # 1, 2 and 5 of every decade labelled, below 1 ms as above it ("0.02", "0.5", "2", "50")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(f"{entry.target.name} ({p.precision}, profile {p.name}): latencies {source_counts(cands)}",
                 fontsize=10)
    ax.set_xlabel(f"p90 latency, ms ({cands[0].runtime if cands else ''})")
    ax.set_ylabel("top-1, %")
    ax.grid(True, alpha=0.3)
    # below the axes: inside them it hid the names of the points it covered
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    fig.tight_layout()
    _name_points(fig, ax, cands, front, entry.selection.chosen.key if entry.selection is not None else None)
    return fig


def _name_points(fig: Any, ax: Any, cands: Sequence[Candidate], front: Sequence[Candidate], chosen: str | None
                 ) -> None:
    """Name every point whose name finds a place: the chosen one first, then the Pareto front's (most accurate
    first), then the rest. A name is tried right above, right below, left above and left below its point, and kept
    at the first place that covers no other name, no other point (a reader would take that point for the named one)
    and stays inside the axes; with many descendants close together (81 in a depth-9 Ti/S/B pool) a name that finds
    no place is left out. Every descendant is in report.md and report.html."""
    on_front = {c.key for c in front}
    order = sorted(cands, key=lambda c: (c.key != chosen, c.key not in on_front, -c.top1, c.latency_ms))
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    where = {c.key: ax.transData.transform((c.latency_ms, c.top1)) for c in cands}
    placed: list[Any] = []
    for c in order:
        for dx, dy, ha, va in ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
                               (-4, -3, "right", "top")):
            text = ax.annotate(c.key, (c.latency_ms, c.top1), xytext=(dx, dy), textcoords="offset points",
                               fontsize=6, ha=ha, va=va, color="black" if c.fits else "dimgray")
            box = text.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            clear = not any(box.padded(3).contains(x, y) for k, (x, y) in where.items() if k != c.key)
            if inside and clear and not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            text.remove()


def source_and_threads(c: Candidate) -> str:
    """A summary row's source: ``measured`` / ``predicted`` (noisy flagged), with the thread count of a CPU
    runtime's latency (profiles side by side may be at different counts)."""
    from lgp_edge.specs import cpu_threads_words

    return source_text(c) + cpu_threads_words(c.threads, c.runtime)


def source_counts(cands: Sequence[Candidate]) -> str:
    """How many latencies were measured and how many predicted, e.g. "1 measured, 17 predicted (16 of them because
    the measured runs were noisy)"."""
    measured = sum(c.latency_source == "measured" and not c.noisy for c in cands)
    noisy = sum(c.noisy for c in cands)
    parts = [f"{measured} measured"] if measured else []
    if len(cands) - measured:
        why = "" if not noisy else (" (all because the measured runs were noisy)" if noisy == len(cands) - measured
                                    else f" ({noisy} of them because the measured runs were noisy)")
        parts.append(f"{len(cands) - measured} predicted{why}")
    return ", ".join(parts)


def source_text(c: Candidate) -> str:
    """``measured`` / ``predicted``, with the noisy flag when the measured runs were all noisy."""
    return c.latency_source + (" (measured runs noisy)" if c.noisy else "")


def _md_row(c: Candidate, chosen: str | None, p: DeviceProfile) -> str:
    """A descendant's row; its p90 and memory beside its verdict never read on the other side of the budget."""
    mark = " **chosen**" if c.key == chosen else ""
    return (f"| `{c.key}`{mark} | {c.params:,} | {c.flops / 1e6:.1f} | {c.top1:.2f} | "
            f"{format_against(c.latency_ms, p.latency_budget_ms)} | {source_text(c)} | "
            f"{format_against(c.memory_mb, p.memory_budget_mb)} | {'yes' if c.fits else 'no'} |")


def _anchor(name: str) -> str:
    """The anchor a Markdown renderer gives the heading ``## name`` (GitHub: lower case, '.' dropped)."""
    return re.sub(r"[^a-z0-9_\-]", "", name.lower())


def _text(s: str) -> str:
    """Free text (a profile's description, a target's runtime_version) as Markdown that shows it literally."""
    from lgp_edge.export.assets import md_text

    return md_text(s)


def render_markdown(entries: list[ReportEntry], pool_dir: Path, manifest: Any) -> str:
    from lgp_edge.export.assets import code_span
    from lgp_edge.report_html import top1_basis

    records = records_of(manifest)
    unevaluated = [r.key for r in records if r.top1 is None]  # left out of every profile's scoring
    count = (f"{len(records)} descendants, {len(records) - len(unevaluated)} evaluated" if unevaluated
             else f"{len(records)} descendants")
    lines = [f"# lgp-edge report: pool `{manifest.spec.pool_id}`", "",
             (f"Pool {code_span(str(pool_dir))} ({_text(manifest.spec.ancestry.name)}, depth {manifest.spec.depth}, "
              f"stage {manifest.stage}, trained on {code_span(manifest.data)}); {count}."), ""]
    lines += [f"Top-1: {top1_basis(manifest)}.", ""]
    if manifest.synthetic:
        lines += ["**Synthetic data: the top-1 values mean nothing.**", ""]
    lines += ["| profile | target | precision | budget | chosen | top-1 % | p90 ms | source |",
              "|---|---|---|---|---|---|---|---|"]
    anchors: list[str] = []  # as GitHub numbers a repeated one: cpu, cpu-1, cpu-2 (CPU and c.p.u are "cpu" too)
    for e in entries:
        a, n = _anchor(e.profile.name), 0
        while (f"{a}-{n}" if n else a) in anchors:
            n += 1
        anchors.append(f"{a}-{n}" if n else a)
    for e, anchor in zip(entries, anchors):
        p = e.profile
        budget = f"{format_budget(p.latency_budget_ms)} ms, {format_budget(p.memory_budget_mb)} MB"
        if e.selection is None:
            lines.append(f"| [{p.name}](#{anchor}) | {e.target.name} | {p.precision} | {budget} | nothing "
                         "fits | | | |")
        else:
            c = e.selection.chosen
            lines.append(f"| [{p.name}](#{anchor}) | {e.target.name} | {p.precision} | {budget} | `{c.key}` | "
                         f"{c.top1:.2f} | {format_against(c.latency_ms, p.latency_budget_ms)} | "
                         f"{source_and_threads(c)} |")
    for e in entries:
        p = e.profile
        lines += ["", f"## {p.name}", "",
                  f"Target `{e.target.name}` ({_text(e.target.runtime_version)}); {_text(p.description)}", ""]
        if e.candidates:
            c0 = e.candidates[0]
            threads = f"{c0.threads} thread" + ("s" if c0.threads != 1 else "")
            lines += [f"Latencies: {c0.runtime}, {p.precision}, batch {p.batch}, {threads}.", ""]
        lines += [f"![Pareto front for {p.name}]({e.plot})", ""]
        lines.append(f"Why: {e.selection.reason}." if e.selection is not None else f"Nothing fits: {e.problem}.")
        if unevaluated:
            lines += ["", f"Not evaluated (no top-1, left out): {', '.join(f'`{k}`' for k in unevaluated)}; run "
                          "'lgp-edge pool eval POOL --data …'."]
        noisy = [c.key for c in e.candidates if c.noisy]
        if noisy:
            lines += ["", f"Noisy: every recent measured run of {', '.join(f'`{k}`' for k in noisy)} was noisy "
                          f"({NOISY_RULE}), so their latencies are predicted instead."]
        chosen = e.selection.chosen.key if e.selection is not None else None
        front = pareto_front(e.candidates)
        shown = front_and_chosen(front, e.selection.chosen if e.selection is not None else None)
        off = "" if len(shown) == len(front) else (
            f", and `{chosen}`, chosen: a faster, more accurate descendant over the memory budget keeps it off the "
            "front")
        lines += ["", f"Pareto front (top-1 up, latency down){off}:", "",
                  "| descendant | params | MFLOPs | top-1 % | p90 ms | source | memory MB | fits |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [_md_row(c, chosen, p) for c in shown]
        lines += ["", memory_words(p) + "."]
    return "\n".join(lines) + "\n"


def _plot_name(profile: str, taken: list[str]) -> str:
    """``pareto-PROFILE.png``, numbered where an earlier plot's name is the same but for case (one file on a
    case-insensitive file system: macOS, Windows)."""
    name, n = f"pareto-{profile}.png", 2
    while name.casefold() in {t.casefold() for t in taken}:
        name, n = f"pareto-{profile}-{n}.png", n + 1
    return name


def build_report(pool_dir: Path, out: Path, profiles: list[tuple[DeviceProfile, TargetSpec]], store: Any, *,
                 force: bool = False, reporter: Any = NULL) -> list[ReportEntry]:
    """Score, plot and write report.md, report.html and report.csv for each (profile, target); returns the entries."""
    from lgp_edge.outdir import atomic_dir, check_output_dir, replace_dir
    from lgp_edge.pool.manifest import read_manifest
    from lgp_edge.select import profile_latencies

    check_output_dir(out, force, kind="report")
    manifest = read_manifest(pool_dir)  # the choice needs no weights
    entries = []
    with atomic_dir(out) as tmp_name:
        tmp = Path(tmp_name)
        with reporter.task("report: score and plot", total=len(profiles)) as task:
            for profile, target in profiles:
                lat = profile_latencies(manifest.spec, target, profile, store)
                cands = score_candidates(records_of(manifest), lat, profile, pool=manifest.spec)
                try:  # scored once, chosen as select chooses
                    sel, problem = choose(cands, profile, pool=manifest.spec, hint=EDIT_HINT), ""
                except NothingFits as exc:
                    sel, problem = None, str(exc)
                entry = ReportEntry(profile=profile, target=target, candidates=tuple(cands), selection=sel,
                                    problem=problem, plot=_plot_name(profile.name, [e.plot for e in entries]))
                plot_entry(entry, tmp / entry.plot)
                entries.append(entry)
                task.advance()
        from lgp_edge.report_html import render_csv, render_html

        (tmp / "report.md").write_text(render_markdown(entries, pool_dir, manifest), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(entries, pool_dir, manifest), encoding="utf-8")
        (tmp / "report.csv").write_text(render_csv(entries), encoding="utf-8")
        replace_dir(tmp, out)
    return entries
