"""Render the README's benchmark tables from benchmarks/results/*.json (run after any benchmark).

    python benchmarks/render_readme.py

Replaces the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in README.md for
NAME = latency, paper, switchable. Numbers are never typed into the README by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHOW = ("ti6.0-5", "ti6.0-5+b6.5-5", "ti6.0-4+b6.5-5", "ti6.0-2+b6.4-5", "b6.0-5")


def latency() -> str:
    out = []
    for name in ("latency_1thread.json", "latency.json"):
        d = json.loads((RESULTS / name).read_text())
        m = d["machine"]
        out.append(f"`{d['command']}`: {m['cpu']}, {m['threads']} thread(s), fp32 GEMM peak "
                   f"{m['gemm_peak_gflops_fp32']:.0f} GFLOP/s (best of torch / ONNX Runtime / OpenVINO matmul; "
                   f"torch.matmul alone {m['torch_matmul_2048_gflops_fp32']:.0f}), batch 1, {d['wall_s']:.0f} s.\n")
        out.append("| pool | runtime | speed-up over torch (geomean) | best GFLOP/s | max % of GEMM peak | "
                   "predictor MAPE (held-out descendants) |")
        out.append("|---|---|---:|---:|---:|---:|")
        for p in d["pools"]:
            for rt, s in p["summary"].items():
                out.append(f"| {p['name']} | {rt} | {s['speedup_over_torch_geomean']:.2f}x | "
                           f"{s['achieved_gflops_max']:.1f} | {100 * s['fraction_of_gemm_peak_max']:.0f}% | "
                           f"{s['predictor_mape_percent']:.1f}% |")
        out.append("")
        out.append("| pool | descendant | GFLOPs | top-1 % | torch ms | ONNX Runtime ms | OpenVINO ms |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for p in d["pools"]:
            for r in p["descendants"]:
                if r["key"] in SHOW:
                    top1 = "-" if r.get("top1") is None else f"{r['top1']:.2f}"
                    out.append(f"| {p['name']} | `{r['key']}` | {r['flops_fvcore'] / 1e9:.3f} | {top1} | "
                               f"{r['torch']['median_ms']:.3f} | {r['onnxruntime']['median_ms']:.3f} | "
                               f"{r['openvino']['median_ms']:.3f} |")
        out.append("")
    return "\n".join(out)


def switchable() -> str:
    d = json.loads((RESULTS / "switchable.json").read_text())
    m = d["machine"]
    out = [f"`python benchmarks/switchable.py`: {m['cpu']}, {m['cores']} cores, ONNX Runtime, 1 thread, batch 1, "
           "medians of interleaved rounds.\n",
           "| selection | descendants | switchable file | sum of single ONNX files | x pool fp32 weights | "
           "latency vs single export (median, min..max) | validation |",
           "|---|---:|---:|---:|---:|---|---|"]
    for s in d["selections"]:
        z = s["size"]
        r = sorted(x["ratio_vs_single_shipped"] for x in s["latency_per_descendant"])
        med = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
        out.append(f"| {s['selection']} | {s['descendants']} | {z['switchable_bytes'] / 1e6:.2f} MB | "
                   f"{z['single_onnx_sum_bytes'] / 1e6:.2f} MB | {z['ratio_to_pool_weights']:.3f} | "
                   f"{med:.3f} ({r[0]:.3f}..{r[-1]:.3f}) | "
                   f"{'passed' if s['validation_all_passed'] else 'FAILED'} |")
    s = d["selections"][0]
    out += ["", f"Per descendant, {s['selection']}:", "",
            "| descendant | top-1 % | single ONNX ms | switchable ms | ratio |", "|---|---:|---:|---:|---:|"]
    for x in s["latency_per_descendant"]:
        t = x["median_ms"]
        out.append(f"| `{x['key']}` | {x['top1']:.2f} | {t['single_shipped']:.3f} | {t['switchable']:.3f} | "
                   f"{x['ratio_vs_single_shipped']:.3f} |")
    out.append("")
    return "\n".join(out)


def paper() -> str:
    md = (ROOT / "benchmarks" / "PAPER_REPLICATION.md").read_text()
    md = md.replace("## Paper replication: Learngene Pool vs SN-Net at small scale\n", "")
    return md.replace("### What this run says", "#### What this run says").strip() + "\n"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name, render in (("latency", latency), ("paper", paper), ("switchable", switchable)):
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}:begin/end --> block")
        parts = pattern.search(text)
        text = text[:parts.end(1)] + render() + text[parts.start(2):]
    readme.write_text(text)


if __name__ == "__main__":
    main()
