"""``report.html`` and ``report.csv``: the report's Pareto charts and tables in one self-contained page.

The page needs no network: each chart is SVG written here (one ``<circle class="pt">`` per descendant,
the Pareto front, the latency budget line, the chosen descendant ringed), and a few lines of inline
JavaScript show a tooltip on hover (descendant key, top-1, p90 latency, and whether the latency was
measured, predicted, or predicted because the measured runs were noisy) and sort the tables by a click on
a column header. Each ``<circle>`` also carries an SVG ``<title>``, so the facts show without JavaScript.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lgp_edge.select import Candidate, format_against, format_budget, format_value, pareto_front

W, H = 720, 400  # chart size, px
ML, MR, MT, MB = 60, 20, 20, 46  # margins: left, right, top, bottom

CSV_FIELDS = ("profile", "target", "precision", "latency_budget_ms", "memory_budget_mb", "descendant", "params",
              "mflops", "top1", "p90_ms", "median_ms", "p99_ms", "latency_source", "noisy", "runtime", "threads",
              "memory_mb", "fits_latency", "fits_memory", "pareto", "chosen")


def source_label(c: Candidate) -> str:
    """``measured``, ``predicted`` or ``noisy`` (measured runs all noisy, latency predicted instead)."""
    return "noisy" if c.noisy else c.latency_source


def _exact(value: float) -> str:
    """A number as the decision used it (the shortest text that reads back as the same float), so a script
    comparing a row's p90 or memory with its budget gets the row's fits_* columns."""
    return repr(float(value))


def render_csv(entries: Sequence[Any]) -> str:
    """One row per (profile, evaluated descendant); budgets, latencies and memory exact (``_exact``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for e in entries:
        p = e.profile
        front = {c.key for c in pareto_front(e.candidates)}
        chosen = e.selection.chosen.key if e.selection is not None else None
        for c in e.candidates:
            w.writerow([p.name, e.target.name, p.precision, _exact(p.latency_budget_ms), _exact(p.memory_budget_mb),
                        c.key, c.params, f"{c.flops / 1e6:.3f}", "" if c.top1 is None else f"{c.top1:.2f}",
                        _exact(c.latency_ms), _exact(c.median_ms), "" if c.p99_ms is None else _exact(c.p99_ms),
                        c.latency_source, int(c.noisy), c.runtime, c.threads, _exact(c.memory_mb), int(c.fits_latency),
                        int(c.fits_memory), int(c.key in front), int(c.key == chosen)])
    return buf.getvalue()


def _nice_ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:  # 1, 2 and 5 of every decade; over a wide range (more than 10 ticks) 1 alone
        for mults in ((1, 2, 5), (1,)):
            out = [m * 10.0 ** d for d in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                   for m in mults if lo <= m * 10.0 ** d <= hi]
            if len(out) <= 10:
                break
        return out
    from matplotlib.ticker import MaxNLocator  # the PNG's own tick rule: 1, 2, 2.5 or 5 of a power of ten

    ticks = MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return [float(f"{t:.12g}") for t in ticks if lo - 1e-9 * abs(hi - lo) <= t <= hi + 1e-9 * abs(hi - lo)]


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """Linear ticks written with the fewest decimals that keep every label distinct and equal to its tick (10.05
    is "10.05", not "10.1" beside the tick at 10.1)."""
    for d in range(0, 10):
        labels = [f"{t:.{d}f}" for t in ticks]
        if len(set(labels)) == len(labels) and all(abs(float(x) - t) < 1e-9 * max(1.0, abs(t))
                                                   for x, t in zip(labels, ticks)):
            return labels
    return [repr(t) for t in ticks]


@dataclass(frozen=True)
class _Scale:
    """Data to pixels in one chart: p90 latency on x (log scale when it spans over 20x), top-1 on y."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    log: bool

    def sx(self, v: float) -> float:
        f = (math.log10(v) - math.log10(self.x_lo)) / (math.log10(self.x_hi) - math.log10(self.x_lo)) if self.log \
            else (v - self.x_lo) / (self.x_hi - self.x_lo)
        return ML + f * (W - ML - MR)

    def sy(self, v: float) -> float:
        return MT + (1 - (v - self.y_lo) / (self.y_hi - self.y_lo)) * (H - MT - MB)


def _scale(cands: Sequence[Candidate], budget_ms: float) -> _Scale:
    """Axis ranges that hold every candidate and the budget line, with a margin."""
    lats = [c.latency_ms for c in cands] + [budget_ms]
    tops = [c.top1 or 0.0 for c in cands]
    log = max(lats) / max(min(lats), 1e-9) > 20
    x_lo, x_hi = min(lats), max(lats)
    if log:
        x_lo, x_hi = x_lo / 1.25, x_hi * 1.25
    else:
        pad = (x_hi - x_lo) * 0.06 or x_hi * 0.1 or 1.0
        x_lo, x_hi = max(0.0, x_lo - pad), x_hi + pad
    y_pad = (max(tops) - min(tops)) * 0.08 or 1.0
    return _Scale(x_lo=x_lo, x_hi=x_hi, y_lo=min(tops) - y_pad, y_hi=max(tops) + y_pad, log=log)


def top1_basis(manifest: Any) -> str:
    """What every top-1 of a report is: the descendant's in torch fp32, whatever a profile's precision."""
    n, data = manifest.top1_images, manifest.top1_data
    on = f" on {n:,} {data + ' ' if data else ''}images" if n else ""
    return (f"each descendant's in torch fp32{on}, for every profile whatever its precision (an export measures "
            "its own artifact's top-1 beside it)")


def _chart(e: Any) -> str:
    """The SVG Pareto chart of one report entry."""
    cands, p = e.candidates, e.profile
    if not cands:
        return '<p class="empty">No evaluated descendant.</p>'
    sc = _scale(cands, p.latency_budget_ms)
    chosen = e.selection.chosen.key if e.selection is not None else None
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-label="top-1 against p90 latency, profile {html.escape(p.name)}">']
    out += _frame(sc, html.escape(cands[0].runtime))
    out.append(_front_line(sc, pareto_front(cands)))
    out.append(_budget_line(sc, p.latency_budget_ms))
    out += [_point(sc, c, chosen, p.latency_budget_ms) for c in cands]
    out.append("</svg>")
    return "".join(out)


def _frame(sc: _Scale, runtime: str) -> list[str]:
    """Grid lines with their ticks, the plot frame and the axis titles."""
    out = []
    xs = _nice_ticks(sc.x_lo, sc.x_hi, sc.log)
    for t, label in zip(xs, [format_value(t) for t in xs] if sc.log else _tick_labels(xs)):
        x = sc.sx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{MT}" y2="{H - MB}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle">{label}</text>')
    ys = _nice_ticks(sc.y_lo, sc.y_hi, False)
    for t, label in zip(ys, _tick_labels(ys)):
        y = sc.sy(t)
        out.append(f'<line class="grid" x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<rect class="frame" x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}"/>')
    out.append(f'<text class="axis" x="{(ML + W - MR) / 2}" y="{H - 8}" text-anchor="middle">p90 latency, ms '
               f'({runtime}{", log scale" if sc.log else ""})</text>')
    out.append(f'<text class="axis" transform="translate(14 {(MT + H - MB) / 2}) rotate(-90)" '
               'text-anchor="middle">top-1, %</text>')
    return out


def _front_line(sc: _Scale, front: Sequence[Candidate]) -> str:
    """The Pareto front as a step line: horizontal, then up ("" when there is no front)."""
    if not front:
        return ""
    pts = []
    for i, c in enumerate(front):
        pts.append(f"{sc.sx(c.latency_ms):.1f},{sc.sy(c.top1 or 0.0):.1f}")
        if i + 1 < len(front):
            pts.append(f"{sc.sx(front[i + 1].latency_ms):.1f},{sc.sy(c.top1 or 0.0):.1f}")
    return f'<polyline class="front" points="{" ".join(pts)}"/>'


def _budget_line(sc: _Scale, budget_ms: float) -> str:
    bx = sc.sx(budget_ms)
    return (f'<line class="budget" x1="{bx:.1f}" x2="{bx:.1f}" y1="{MT}" y2="{H - MB}"/>'
            f'<text class="budget-label" x="{bx - 4 if bx > W / 2 else bx + 4:.1f}" y="{MT + 12}" '
            f'text-anchor="{"end" if bx > W / 2 else "start"}">budget {format_budget(budget_ms)} ms p90</text>')


def _point(sc: _Scale, c: Candidate, chosen: str | None, budget_ms: float) -> str:
    """One descendant's mark, with its facts in data attributes (for the hover) and an SVG title; its p90 written on
    its side of the budget."""
    esc = html.escape
    src = source_label(c)
    top1 = "not evaluated" if c.top1 is None else f"{c.top1:.2f}%"
    p90 = format_against(c.latency_ms, budget_ms)
    tip = (f"{c.key}\ntop-1 {top1}\np90 {p90} ms ({src})\n"
           f"{'fits the budgets' if c.fits else 'over a budget'}{', chosen' if c.key == chosen else ''}")
    cls = f"pt {src}{' fits' if c.fits else ' miss'}{' chosen' if c.key == chosen else ''}"
    return (f'<circle class="{cls}" cx="{sc.sx(c.latency_ms):.1f}" cy="{sc.sy(c.top1 or 0.0):.1f}" '
            f'r="{7 if c.key == chosen else 5}" data-key="{esc(c.key)}" data-top1="{esc(top1)}" '
            f'data-latency="{p90} ms" data-source="{src}"><title>{esc(tip)}</title></circle>')


def _table(cands: Sequence[Candidate], chosen: str | None, profile: Any) -> str:
    front = {c.key for c in pareto_front(cands)}
    head = ("descendant", "params", "MFLOPs", "top-1 %", "p90 ms", "median ms", "source", "memory MB", "fits",
            "Pareto")
    num = {1, 2, 3, 4, 5, 7}
    rows = []
    for c in cands:
        cells = [f'<code>{html.escape(c.key)}</code>{" <b>chosen</b>" if c.key == chosen else ""}',
                 f"{c.params:,}", f"{c.flops / 1e6:.1f}", "" if c.top1 is None else f"{c.top1:.2f}",
                 format_against(c.latency_ms, profile.latency_budget_ms), format_value(c.median_ms), source_label(c),
                 format_against(c.memory_mb, profile.memory_budget_mb),
                 "yes" if c.fits else "no", "yes" if c.key in front else ""]
        sort = [c.key, c.params, c.flops, -1 if c.top1 is None else c.top1, c.latency_ms, c.median_ms,
                source_label(c), c.memory_mb, int(c.fits), int(c.key in front)]
        rows.append("<tr>" + "".join(f'<td data-v="{html.escape(str(v))}"{" class=num" if i in num else ""}>{t}</td>'
                                     for i, (t, v) in enumerate(zip(cells, sort))) + "</tr>")
    ths = "".join(f'<th data-num="{int(i in num or i in (8, 9))}" tabindex="0">{h}</th>' for i, h in enumerate(head))
    return f'<table class="sortable"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;margin-top:36px}code{font-size:13px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2;cursor:pointer;user-select:none}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}td.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{display:block;max-width:100%;height:auto}.chart .grid{stroke:#e6e6e6}.chart .frame{fill:none;stroke:#999}
.chart .tick{font-size:11px;fill:#444}.chart .axis{font-size:12px;fill:#222}
.chart .front{fill:none;stroke:#1f77b4;stroke-width:1.2;opacity:.6}
.chart .budget{stroke:#d62728;stroke-dasharray:6 4;stroke-width:1.5}.chart .budget-label{font-size:11px;fill:#d62728}
.pt{stroke-width:1.5;cursor:pointer}.pt.measured{fill:#1f77b4;stroke:#1f77b4}.pt.predicted{fill:#ff7f0e;stroke:#ff7f0e}
.pt.noisy{fill:#9467bd;stroke:#9467bd}.pt.miss{fill:#fff}.pt.chosen{stroke:#000;stroke-width:2.5}
.pt:hover{stroke:#000;stroke-width:3}.legend span{margin-right:14px}.sw{display:inline-block;width:10px;height:10px;
border-radius:50%;margin-right:4px;vertical-align:-1px}
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:6px 8px;border-radius:4px;font-size:12px;
white-space:pre;display:none;z-index:10}
"""

SCRIPT = """
(function(){
var tip=document.getElementById('tip');
document.querySelectorAll('circle.pt').forEach(function(c){
  c.addEventListener('mouseenter',function(){var d=c.dataset;
    tip.textContent=d.key+'\\ntop-1 '+d.top1+'\\np90 '+d.latency+'\\nlatency '+d.source;tip.style.display='block';});
  c.addEventListener('mousemove',function(ev){tip.style.left=(ev.clientX+12)+'px';tip.style.top=(ev.clientY+12)+'px';});
  c.addEventListener('mouseleave',function(){tip.style.display='none';});
});
document.querySelectorAll('table.sortable th').forEach(function(th){
  function sort(){var col=th.cellIndex,t=th.closest('table'),b=t.tBodies[0],
      asc=th.getAttribute('aria-sort')!=='ascending';
    t.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',asc?'ascending':'descending');var num=th.dataset.num==='1';
    Array.from(b.rows).sort(function(r,s){var x=r.cells[col].dataset.v,y=s.cells[col].dataset.v;
      var k=num?(parseFloat(x)-parseFloat(y)):x.localeCompare(y);return asc?k:-k;})
      .forEach(function(r){b.appendChild(r);});}
  th.addEventListener('click',sort);
  th.addEventListener('keydown',function(ev){if(ev.key==='Enter'||ev.key===' '){ev.preventDefault();sort();}});
});
})();
"""

LEGEND = ('<p class="legend"><span><i class="sw" style="background:#1f77b4"></i>measured</span>'
          '<span><i class="sw" style="background:#ff7f0e"></i>predicted</span>'
          '<span><i class="sw" style="background:#9467bd"></i>noisy (measured runs noisy, predicted instead)</span>'
          '<span><i class="sw" style="border:1.5px solid #888"></i>hollow: over a budget</span>'
          '<span><i class="sw" style="border:2.5px solid #000"></i>chosen</span>'
          '<span style="color:#d62728">- - latency budget</span></p>')


def render_html(entries: Sequence[Any], pool_dir: Any, manifest: Any) -> str:
    """The whole report as one HTML page with no external resource."""
    esc = html.escape
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
             f"<title>lgp-edge report: {esc(manifest.spec.pool_id)}</title><style>{STYLE}</style></head><body>",
             f"<h1>lgp-edge report: pool <code>{esc(manifest.spec.pool_id)}</code></h1>",
             f"<p>Pool <code>{esc(str(pool_dir))}</code> ({esc(manifest.spec.ancestry.name)}, depth "
             f"{manifest.spec.depth}, stage {esc(manifest.stage)}, trained on {esc(manifest.data)}). Hover a point for "
             "its descendant, top-1, p90 latency and where the latency comes from; click a column header to sort."
             f"</p><p>Top-1: {esc(top1_basis(manifest))}.</p>"]
    if manifest.synthetic:
        parts.append("<p><strong>Synthetic data: the top-1 values mean nothing.</strong></p>")
    summary = []
    for e in entries:
        p = e.profile
        budget = f"{format_budget(p.latency_budget_ms)} ms, {format_budget(p.memory_budget_mb)} MB"
        if e.selection is None:
            cells = ["nothing fits", "", "", ""]
        else:
            c = e.selection.chosen
            cells = [f"<code>{esc(c.key)}</code>", f"{c.top1:.2f}" if c.top1 is not None else "",
                     format_against(c.latency_ms, p.latency_budget_ms), source_label(c)]
        summary.append(f'<tr><td data-v="{esc(p.name)}"><a href="#{esc(p.name)}">{esc(p.name)}</a></td>'
                       f'<td data-v="{esc(e.target.name)}">{esc(e.target.name)}</td><td data-v="{p.precision}">'
                       f'{p.precision}</td><td data-v="{p.latency_budget_ms}" class=num>{budget}</td>'
                       + "".join(f'<td data-v="{esc(html.unescape(x))}">{x}</td>' for x in cells) + "</tr>")
    heads = ("profile", "target", "precision", "budget", "chosen", "top-1 %", "p90 ms", "source")
    parts.append('<table class="sortable"><thead><tr>'
                 + "".join(f'<th data-num="{int(h in ("budget", "top-1 %", "p90 ms"))}" tabindex="0">{h}</th>'
                           for h in heads)
                 + f'</tr></thead><tbody>{"".join(summary)}</tbody></table>')
    for e in entries:
        p = e.profile
        counts: dict[str, int] = {}
        for c in e.candidates:
            counts[source_label(c)] = counts.get(source_label(c), 0) + 1
        src = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        parts.append(f'<section class="profile" id="{esc(p.name)}"><h2>{esc(p.name)}</h2>'
                     f"<p>Target <code>{esc(e.target.name)}</code> ({esc(e.target.runtime_version)}), "
                     f"{p.precision}; {esc(p.description)} Latencies: {src}.</p>")
        parts.append(LEGEND + _chart(e))
        why = f"Why: {esc(e.selection.reason)}." if e.selection is not None else f"Nothing fits: {esc(e.problem)}."
        parts.append(f"<p>{why}</p>")
        parts.append(_table(e.candidates, e.selection.chosen.key if e.selection is not None else None, e.profile))
        parts.append("</section>")
    parts.append(f'<div id="tip"></div><script>{SCRIPT}</script></body></html>')
    return "\n".join(parts) + "\n"
