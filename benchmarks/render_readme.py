"""Render the README's benchmark sections from benchmarks/results/*.json (run after any benchmark).

    python benchmarks/render_readme.py            # rewrite the sections in README.md
    python benchmarks/render_readme.py --check    # exit 1 if README.md is out of date (the tests run this)

Replaces the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in README.md for
NAME = aux, demo, latency, quick, paper, convergence, bf16, paper_converged, widths, widths_converged, ceiling,
budget, recipes, switchable, int8, memory, walkthrough. Those sections are never typed by hand: each is rendered
from its results JSON, and the one commentary they carry (benchmarks/PAPER_REPLICATION_NOTES.md, after the
replication's rendered section) quotes only numbers that are in committed results files.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from lgp_edge.progress import counted
from lgp_edge.specs import MB

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHOW = ("ti6.0-5", "ti6.0-5+b6.5-5", "ti6.0-3+b6.4-5", "ti6.0-1+b6.2-5", "b6.0-5", "ti6.0-0+b6.0-5")


def _provenance(d: dict) -> str:
    """``(DATE, code version REV)`` of a results file or of an int8 part's run; files written before these were
    recorded say so (nothing is guessed). ``when``: the date's name in older files."""
    date, rev = d.get("date") or d.get("when"), d.get("code_version")
    return (f"({date[:10] if date else 'date not recorded'}, "
            f"{f'code version {rev}' if rev else 'code version not recorded'})")


def aux() -> str:
    """benchmarks/aux_init.py's result: the auxiliary models' start from the ancestry vs from random weights."""
    d = json.loads((RESULTS / "aux_init.json").read_text())
    runs, a = d["runs"], d.get("ancestry") or {}
    ancestry = f"the shipped ancestry at {a['top1']}%" if a.get("top1") is not None else "the shipped ancestry"
    return (f"`{d['command']}` {_provenance(d)}, {d['cpu']}, {counted(d['threads'], 'thread')}: {d['steps']} "
            f"distillation steps of 256 images from {ancestry}, lstsq stitches, no fine-tuning, {d['images']:,} test "
            "images "
            f"(`benchmarks/results/aux_init.json`). From the selection: Ti alone {runs['ancestry']['ti_alone']:.2f}%, "
            f"B alone {runs['ancestry']['b_alone']:.2f}%, stitched descendants {runs['ancestry']['stitched_min']:.2f}-"
            f"{runs['ancestry']['stitched_max']:.2f}%; from random weights: {runs['random']['ti_alone']:.2f}%, "
            f"{runs['random']['b_alone']:.2f}% and {runs['random']['stitched_min']:.2f}-"
            f"{runs['random']['stitched_max']:.2f}%.\n")


def latency() -> str:
    out = []
    for name in ("latency_1thread.json", "latency.json"):
        d = json.loads((RESULTS / name).read_text())
        m = d["machine"]
        cpu = d.get("cpu") or m.get("cpu") or "CPU not recorded"  # machine.cpu: files before the top-level cpu
        out.append(f"`{d['command']}` {_provenance(d)}: {cpu}, {counted(m['threads'], 'thread')}, fp32 GEMM peak "
                   f"{m['gemm_peak_gflops_fp32']:.0f} GFLOP/s (best of torch / ONNX Runtime / OpenVINO matmul; "
                   f"torch.matmul alone {m['torch_matmul_2048_gflops_fp32']:.0f}), batch 1, {d['wall_s']:.0f} s.\n")
        out.append("| pool | runtime | speed-up over torch (geomean) | best GFLOP/s (2 per multiply-add) | "
                   "max % of GEMM peak | "
                   "predictor MAPE, median (held-out descendants) | predictor MAPE, p90 |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for p in d["pools"]:
            for rt, s in p["summary"].items():
                p90 = s.get("predictor_p90_mape_percent")
                out.append(f"| {p['name']} | {rt} | {s['speedup_over_torch_geomean']:.2f}x | "
                           f"{s['achieved_gflops_max']:.1f} | {100 * s['fraction_of_gemm_peak_max']:.0f}% | "
                           f"{s['predictor_mape_percent']:.1f}% | {'-' if p90 is None else f'{p90:.1f}%'} |")
        out.append("")
        st = d.get("select_stability")
        if st:
            e, n = st["empty_store"], st["noisy_row"]
            out.append(f"`lgp-edge select --target cpu` in {st['runs']} fresh processes at a budget on a front point "
                       f"({st['budget_ms']:.3f} ms, `{st['front_point']}`): "
                       f"{counted(len(e['distinct_choices']), 'distinct choice')} with an empty store; after one "
                       "injected noisy run of that descendant "
                       f"{counted(len(n['distinct_choices']), 'distinct choice')}, "
                       f"{'the same' if n['same_as_empty'] else 'a different'} descendant, noisy flag shown in "
                       f"{'every run' if n['flagged_in_every_run'] else 'not every run'}.\n")
        out.append("| pool | descendant | MFLOPs (multiply-adds) | torch ms | ONNX Runtime ms (predicted) | "
                   "OpenVINO ms (predicted) |")
        out.append("|---|---|---:|---:|---:|---:|")
        for p in d["pools"]:
            for r in p["descendants"]:
                if r["key"] in SHOW:
                    o, v = r["onnxruntime"], r["openvino"]
                    out.append(f"| {p['name']} | `{r['key']}` | {r['flops_fvcore'] / 1e6:,.2f} | "
                               f"{r['torch']['median_ms']:.3f} | {o['median_ms']:.3f} ({o['predicted_ms']:.3f}) | "
                               f"{v['median_ms']:.3f} ({v['predicted_ms']:.3f}) |")
        out.append("")
    return "\n".join(out)


def switchable() -> str:
    d = json.loads((RESULTS / "switchable.json").read_text())
    m, threads = d["machine"], d["latency_method"]["threads"]
    cmd = f"`{d['command']}`" if "command" in d else "`python benchmarks/switchable.py` (arguments not recorded)"
    cpu = d.get("cpu") or m.get("cpu") or "CPU not recorded"  # machine.cpu: files before the top-level cpu
    out = [f"{cmd} {_provenance(d)}: {cpu}, {m['cores']} cores, ONNX Runtime, {threads} "
           f"thread{'' if threads == 1 else 's'}, batch 1, medians of interleaved rounds.\n",
           "| selection | descendants | switchable file | sum of single ONNX files | x pool fp32 weights | "
           "latency vs single export (median, min..max) | validation |",
           "|---|---:|---:|---:|---:|---|---|"]
    for s in d["selections"]:
        z = s["size"]
        r = sorted(x["ratio_vs_single_shipped"] for x in s["latency_per_descendant"])
        med = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
        out.append(f"| {s['selection']} | {s['descendants']} | {z['switchable_bytes'] / MB:.2f} MB | "
                   f"{z['single_onnx_sum_bytes'] / MB:.2f} MB | {z['ratio_to_pool_weights']:.3f} | "
                   f"{med:.3f} ({r[0]:.3f}..{r[-1]:.3f}) | "
                   f"{'passed' if s['validation_all_passed'] else 'FAILED'} |")
    s = d["selections"][0]
    out += ["", f"Per descendant, {s['selection']}:", "",
            "| descendant | top-1 % | single ONNX ms | switchable ms | ratio |", "|---|---:|---:|---:|---:|"]
    for x in s["latency_per_descendant"]:
        t = x["median_ms"]
        out.append(f"| `{x['key']}` | {x['top1']:.2f} | {t['single_shipped']:.3f} | {t['switchable']:.3f} | "
                   f"{x['ratio_vs_single_shipped']:.3f} |")
    size_ok = all(x["size_goal_met_vs_pool"] for x in d["selections"])  # the benchmark's verdicts on its goals
    lat_ok = all(x["latency_goal_met_vs_single_shipped"] for x in d["selections"])
    ratios = {x["selection"]: sorted(r["ratio_vs_single_shipped"] for r in x["latency_per_descendant"])
              for x in d["selections"]}
    medians = "; ".join(f"{name}: median {statistics.median(rs):.2f}x, {rs[0]:.2f}x..{rs[-1]:.2f}x over "
                        f"{counted(len(rs), 'descendant')}" for name, rs in ratios.items())
    out += ["", f"Size goal (within 10% of the pool's own weights): {'met' if size_ok else 'not met'}. Latency goal "
                f"(each descendant within 5% of its single export): {'met' if lat_ok else 'not met'} ({medians}).", ""]
    return "\n".join(out)


def _int8_run(run: dict) -> str:
    m, v = run["machine"], run["versions"]
    vnni = "with" if (m["avx512_vnni"] or m["avx_vnni"]) else "without"
    cpu = run.get("cpu") or m.get("model_name") or "CPU not recorded"  # "model_name": files before "cpu"
    return (f"{cpu} (family/model {m['cpu_family_model']}, AVX2 {'yes' if m['avx2'] else 'no'}, {vnni} "
            f"VNNI, AMX {'yes' if m['amx_int8'] else 'no'}), 1 thread, batch 1, ONNX Runtime {v['onnxruntime']}, "
            f"OpenVINO {v['openvino'].split('-')[0]}")


def int8() -> str:
    d = json.loads((RESULTS / "int8.json").read_text())
    sp, ac = d["speed"], d["accuracy"]
    # the top level describes the last run (the one that wrote the file); each part records the run that measured
    # it, except in files from before parts did, where one run measured both and the top level is that run
    top = {k: d[k] for k in ("code_version", "date", "when", "command", "cpu", "machine", "versions") if k in d}
    runs = {part: d[part].get("run", top) for part in ("speed", "accuracy")}
    ident = ("code_version", "date", "when", "command", "cpu")
    if len({tuple(r.get(k) for k in ident) for r in runs.values()}) == 1:  # one run measured both parts
        out = [f"`{d['command']}` {_provenance(top)}: {_int8_run(top)}, {d['wall_s'] / 60:.0f} min, load average "
               f"{top['machine']['load_average_start'][0]:.1f} at the start.\n"]
    else:  # one part rerun with --part, the other kept from an earlier run
        out = [f"{part.capitalize()} part: `{r['command']}` {_provenance(r)}: {_int8_run(r)}, "
               f"{d[part]['wall_s'] / 60:.0f} min.\n" for part, r in runs.items()]
    out += [f"Speed: {sp['ancestry']}-scale descendants, {sp['img_size']} px, {sp['weights']}; int8 calibrated on "
           f"{sp['calibration']}. Medians of {sp['settings']['rounds']} interleaved rounds.\n",
           "| descendant | GFLOPs | ORT fp32 ms | ORT int8 ms | ORT speed-up | OpenVINO fp32 ms | OpenVINO int8 ms | "
           "OpenVINO speed-up |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sp["descendants"]:
        t = r["ms"]
        out.append(f"| `{r['key']}` | {r['flops_fvcore'] / 1e9:.2f} | {t['onnxruntime_fp32']['median']:.1f} | "
                   f"{t['onnxruntime_int8']['median']:.1f} | {r['speedup_int8']['onnxruntime']:.2f}x | "
                   f"{t['openvino_fp32']['median']:.1f} | {t['openvino_int8']['median']:.1f} | "
                   f"{r['speedup_int8']['openvino']:.2f}x |")
    g = sp["speedup_int8_geomean"]
    out.append(f"| geometric mean | | | | **{g['onnxruntime']:.2f}x** | | | **{g['openvino']:.2f}x** |")
    out += ["", f"Accuracy: the {len(ac['descendants'])} descendants of the demo pool on {ac['images']:,} {ac['data']} "
            f"test images, int8 calibrated on {ac['calibration_images']} training images (as `lgp-edge export`); "
            "top-1 change in points vs torch fp32 (agreement with torch in brackets).\n",
            "| descendant | torch fp32 top-1 % | ORT int8 change | OpenVINO int8 change |", "|---|---:|---:|---:|"]
    for r in ac["descendants"]:
        out.append(f"| `{r['key']}` | {r['torch_fp32_top1']:.2f} | {r['onnxruntime_int8_change']:+.2f} "
                   f"({r['onnxruntime_int8_agreement']:.3f}) | {r['openvino_int8_change']:+.2f} "
                   f"({r['openvino_int8_agreement']:.3f}) |")
    out += ["", "| runtime | speed-up (geomean) | goal | worst \\|top-1 change\\| | mean change | goal |",
            "|---|---:|---|---:|---:|---|"]
    for rt, v in d["verdict"].items():
        s = ac["summary"][rt]
        out.append(f"| {rt} | {v['speedup_geomean']:.2f}x | >= {v['speedup_goal']}x: "
                   f"**{'met' if v['speedup_met'] else 'not met'}** | {v['max_abs_top1_change']:.2f} | "
                   f"{s['mean_change']:+.2f} | <= {v['top1_goal']}: **{'met' if v['top1_met'] else 'not met'}** |")
    out.append("")
    return "\n".join(out)


def quick() -> str:
    """benchmarks/paper_replication.py --quick's run: where, how long (inside the script and, where recorded,
    from the process's start), and how many stages it computed rather than reused."""
    d = json.loads((RESULTS / "paper_replication_quick.json").read_text())
    env, stages = d["environment"], d.get("stages") or {}
    facts = env.get("cpu_facts") or {}
    cpu = env.get("cpu") or "CPU not recorded"
    if facts.get("family"):
        cpu += f" (family/model {facts['family']}/{facts['model_number']}, {facts['affinity_cpus']} usable CPUs)"
    if env.get("gpu"):
        cpu += f", {env['gpu']}"
    wall = (f"{d['process_wall_s']:.0f} s from the process's start (imports included), " if "process_wall_s" in d
            else "the process's own wall time not recorded, ")
    computed = sorted(k for k, v in stages.items() if v.get("source") == "computed")
    return (f"`{d['command']}` {_provenance(d)}: {cpu}; {wall}{d['timing_s']['total_this_invocation']:.0f} s inside "
            f"the script; {len(computed)} of its {len(stages)} stages computed by this run "
            f"({', '.join(k for k in stages if k not in computed) or 'none'} reused or shipped) "
            f"(`benchmarks/results/paper_replication_quick.json`).\n")


def _sci(x: float) -> str:
    """``3.8e-6``: one decimal, the exponent without padding."""
    m, e = f"{x:.1e}".split("e")
    return f"{m}e{int(e)}"


def _load(d: dict) -> str:
    m = d["machine"]
    return f"load average {m['load_average_start'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at the end"


def memory() -> str:
    """benchmarks/memory.py's result: what ONNX Runtime holds for the exported descendant against ``memory_mb``."""
    d = json.loads((RESULTS / "memory.json").read_text())
    s, t = d["summary"], d["threads"]
    lo, hi = str(d["batches"][0]), str(d["batches"][-1])
    factor = s["weights_factor"]
    return (f"Measured on this host by `{d['command']}` ({_provenance(d)[1:-1]}; {d['cpu']}, ONNX Runtime "
            f"{d['versions']['onnxruntime']}, {t} thread{'' if t == 1 else 's'}, the "
            f"{'demo pool' if d['pool']['bundled_demo_pool'] else 'pool'}'s `{d['descendant']}` as `lgp-edge export` "
            "writes it, peak resident memory of a fresh process over its baseline after the session's first "
            f"inference; `benchmarks/results/memory.json`): {s['peak_mib'][lo]:.1f} MiB at batch {lo} and "
            f"{s['peak_mib'][hi]:.1f} MiB at batch {hi}, where {s['charged_mb'][lo]:.2f} and "
            f"{s['charged_mb'][hi]:.1f} MB are charged. Set against `{d['reference']}`, which has "
            f"{d['models']['descendant']['params'] / d['models']['reference']['params']:.0f} times fewer weights, "
            f"that is about {s['runtime_mib']:.0f} MiB of session and runtime, the {s['weights_mib']:.2f} MiB of "
            f"weights held {factor:.1f} times (pre-packing them for ONNX Runtime's GEMM accounts for "
            f"{s['prepack_mib']:.1f} MiB: with it off, batch {lo} peaks "
            f"{s['peak_mib'][lo] - s['prepack_mib']:.1f} MiB over the baseline), and "
            f"{s['activation_kib_per_image']:.0f} KiB of activations per image against "
            f"{s['charged_activation_kib_per_image']:.0f} charged. Leave that room when writing a budget.\n")


def _choices(sels: list[dict], pool: dict) -> str:
    chosen = [s["chosen"] for s in sels]
    keys = {c["key"] if c else None for c in chosen}
    if len(keys) == 1 and None not in keys:
        c = chosen[0]
        if all(s["fitting"] == s["candidates"] == pool["descendants"] for s in sels):
            return (f"every built-in profile's budget admits all {pool['descendants']} descendants of this small pool, "
                    f"so each chose `{c['key']}` ({c['top1']:.2f}% top-1)")
        return f"every built-in profile chose `{c['key']}` ({c['top1']:.2f}% top-1)"
    return "the built-in profiles chose " + ", ".join(
        f"`{s['profile']}` `{s['chosen']['key']}` ({s['chosen']['top1']:.2f}%)" if s["chosen"] else
        f"`{s['profile']}` nothing" for s in sels)


def _p90(c: dict, threads: int) -> str:
    if c["latency_source"] == "measured":
        return f"its measured p90 was {c['latency_ms']:.2f} ms ({threads} threads)"
    why = "; its measured runs were noisy" if c.get("noisy") else ""
    return f"its p90 was {c['latency_ms']:.2f} ms {c['latency_source']} ({threads} threads{why})"


def walkthrough() -> str:
    """benchmarks/cli_walkthrough.py's result: the README's commands run on a fresh store, what they chose and
    what the exports' validation measured."""
    d = json.loads((RESULTS / "cli_walkthrough.json").read_text())
    prof, sels, ex, tight = d["profile"], d["selections"], d["exports"], d["tight_budget"]
    by = {s["profile"]: s for s in sels}
    cpu, nano = by["cpu"], by["jetson-nano"]
    same = len({s["chosen"]["key"] if s["chosen"] else None for s in sels}) == 1
    name = (lambda c: "") if same else (lambda c: f" (`{c['key']}`)")
    choices = _choices(sels, d["pool"])
    pool = "the current demo pool" if d["pool"]["bundled_demo_pool"] else f"the pool `{d['pool']['path']}`"
    # runs since the exported-graph cache record that each started with an empty one, as on a new machine
    fresh = "fresh store and exported-graph cache" if "$LGP_EDGE_CACHE" in d.get("what", "") else "fresh store"
    out = [f"Measured from the CLI on {pool} by `{d['command']}` ({_provenance(d)[1:-1]}; {d['cpu']}, "
           f"{d['machine']['logical_cpus']} logical CPUs, {_load(d)}; "
           f"{fresh}; `benchmarks/results/cli_walkthrough.json`): `{prof['command']}` first, "
           f"{prof['wall_s']:.0f} s, predicted latency for the other targets. {choices[0].upper()}{choices[1:]}; "
           f"on cpu{name(cpu['chosen'])} {_p90(cpu['chosen'], cpu['threads'])}, on the Jetson Nano"
           f"{name(nano['chosen'])} {nano['chosen']['latency_ms']:.2f} ms {nano['chosen']['latency_source']}."]
    c, n = ex["cpu"], ex["jetson-nano"]
    arts = {a["format"]: a for a in c["artifacts"]}
    agree = sorted({a["top1_agreement"] for a in c["artifacts"]})
    (trt,) = [a for a in n["artifacts"] if a["format"] == "tensorrt"]
    v = c["validation"]
    out.append(f"`{c['command']}` ({c['wall_s']:.0f} s) validated on {v['images']:,} {v['data']} validation images: "
               f"max |diff| {_sci(arts['onnx']['max_abs_diff'])} (ONNX) and {_sci(arts['openvino']['max_abs_diff'])} "
               f"(OpenVINO), top-1 agreement {' and '.join(f'{a:.3f}' for a in agree)}; "
               f"`{n['command']}` ({n['wall_s']:.0f} s): the opset-{trt['opset']} ONNX, "
               f"{_sci(trt['fp32_file']['max_abs_diff'])} in fp32 and, checked in {trt['precision']}, "
               f"{_sci(trt['max_abs_diff'])} with agreement {trt['top1_agreement']:.3f}.")
    noisy = cpu["noisy"] or []
    which = ("every descendant's" if len(noisy) == cpu["candidates"] else
             f"{len(noisy)} of {cpu['candidates']} descendants'")
    out.append("These figures move with the CPU and its load" + (
        f": in this run {which} cpu runs were all noisy, so `select` replaced their latency by the prediction and "
        "said so." if noisy else
        " (a descendant whose runs are all noisy is flagged, and `select` replaces its latency by the prediction "
        "and says so)."))
    t = tight["chosen"]
    if t is None:
        out.append(f"A tighter budget, `{tight['command']}`, leaves nothing that fits: "
                   f"{tight['problem'].rstrip('.')}.")
    else:
        verb = "changes the choice" if t["key"] != nano["chosen"]["key"] else "keeps the choice"
        text = (f"A tighter budget {verb}: `{tight['command']}` picks `{t['key']}` ({t['top1']:.2f}%, p90 "
                f"{t['latency_ms']:.2f} ms {t['latency_source']})")
        b = tight["most_accurate"]
        if b and b["key"] != t["key"]:
            text += f" and says that `{b['key']}` needs {b['latency_ms']:.2f} ms"
        out.append(text + ".")
    return " ".join(out) + "\n"


def _section(name: str) -> str:
    """A benchmark's generated markdown as a README subsection: its own ``##`` title dropped (the README has one),
    its ``###`` headings one level down."""
    md = re.sub(r"\A## .*\n", "", (ROOT / "benchmarks" / name).read_text())
    return md.replace("### What this run says", "#### What this run says").strip() + "\n"


def paper() -> str:
    """The replication's rendered section, then the commentary written on it (kept apart: every run and
    ``--render`` regenerate PAPER_REPLICATION.md)."""
    notes = re.sub(r"\A<!--.*?-->\n", "", (ROOT / "benchmarks" / "PAPER_REPLICATION_NOTES.md").read_text(), flags=re.S)
    return _section("PAPER_REPLICATION.md") + "\n" + notes.replace("### What this run says", "#### What this run says")


def paper_converged() -> str:
    """The replication rerun with converged Ti and S models, a longer budget kept apart from the budgeted run
    (benchmarks/PAPER_REPLICATION_TI30.md, rendered from benchmarks/results/ti30/ by the run or its --render)."""
    return _section("PAPER_REPLICATION_TI30.md")


def widths() -> str:
    return _section("POOL_WIDTHS.md")


def widths_converged() -> str:
    """The pools of other widths against the replication with converged Ti and S models: Ti/S/B
    (benchmarks/POOL_WIDTHS_TI30.md, from benchmarks/results/ti30/pool_widths.json), then Ti/S at depth 6
    (POOL_WIDTHS_TI30_TI_S.md, from pool_widths_ti-s.json) and at depth 9 beside it (POOL_WIDTHS_TI30_TI_S_D9.md,
    from pool_widths_ti-s_d9.json)."""
    return "\n".join(_section(n) for n in ("POOL_WIDTHS_TI30.md", "POOL_WIDTHS_TI30_TI_S.md",
                                           "POOL_WIDTHS_TI30_TI_S_D9.md"))


def ceiling() -> str:
    """benchmarks/STITCH_CEILING.md, then any longer-budget runs of it (STITCH_CEILING_E<epochs>.md)."""
    longer = sorted(ROOT.joinpath("benchmarks").glob("STITCH_CEILING_E*.md"), key=lambda p: int(p.stem.split("_E")[1]))
    return "\n".join(_section(p.name) for p in [ROOT / "benchmarks" / "STITCH_CEILING.md", *longer])


def budget() -> str:
    """benchmarks/EQUAL_BUDGET_E<epochs>.md, shortest budget first."""
    runs = sorted(ROOT.joinpath("benchmarks").glob("EQUAL_BUDGET_E*.md"), key=lambda p: int(p.stem.split("_E")[1]))
    return "\n".join(_section(p.name) for p in runs)


def recipes() -> str:
    """benchmarks/FINETUNE_RECIPES.md, then screens against later replications (FINETUNE_RECIPES_<NAME>.md), in the
    order they ran (the date in results/finetune_recipes_<name>.json)."""
    def ran(md: Path) -> str:
        return json.loads((RESULTS / f"finetune_recipes_{md.stem.split('_', 2)[2].lower()}.json").read_text())["date"]

    later = sorted(ROOT.joinpath("benchmarks").glob("FINETUNE_RECIPES_*.md"), key=ran)
    return "\n".join(_section(p.name) for p in [ROOT / "benchmarks" / "FINETUNE_RECIPES.md", *later])


def convergence() -> str:
    """benchmarks/distill_convergence.py's result: the replication's auxiliary models distilled longer."""
    d = json.loads((RESULTS / "distill_convergence.json").read_text())
    rep = d["replication"]
    runs = "; ".join(f"{', '.join(r['models'])} for {r['epochs']} epochs ({r['status']}, "
                     f"{r['distill_wall_s'] / 60:.0f} min, {counted(r['environment']['threads'], 'thread')})"
                     for r in d["runs"])
    out = [f"`{d['command']}` {_provenance(d)}, {d['cpu']}: {runs}, each model then evaluated alone on "
           f"{d['test_images']:,} test images from its saved files (`benchmarks/results/distill_convergence.json`), "
           f"beside its top-1 right after distillation in the replication of {rep['date'][:10]} (code "
           f"{rep['code_version']}, `{rep['file']}` sha256 {rep['sha256'][:12]}).", "",
           "| model | epochs | top-1 % | replication: epochs | replication: top-1 % | gain |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, m in d["models"].items():
        rep_top1 = "-" if m["replication_top1"] is None else f"{m['replication_top1']:.2f}"
        gain = "-" if m["gain"] is None else f"{m['gain']:+.2f}"
        out.append(f"| {name} | {m['epochs']} | {m['top1']:.2f} | {m['replication_epochs'] or '-'} | {rep_top1} | "
                   f"{gain} |")
    return "\n".join(out) + "\n"


def bf16() -> str:
    """benchmarks/distill_bf16.py's result: the same distillation in float32 and under --bf16."""
    d = json.loads((RESULTS / "distill_bf16.json").read_text())
    feats = set(d["cpu_facts"].get("features") or ())
    has = sorted(feats & {"avx512_bf16", "amx_bf16"})
    out = [f"`{d['command']}` {_provenance(d)}, {d['cpu']} ({', '.join(has) if has else 'no bf16 instructions'}), "
           f"{counted(d['threads'], 'thread')}, each model then evaluated alone in float32 on {d['test_images']:,} "
           "test images (`benchmarks/results/distill_bf16.json`):", "",
           "| models | epochs | float32: training min | bf16: training min | bf16 / float32 | "
           "top-1 % float32 -> bf16 |",
           "|---|---:|---:|---:|---:|---|"]
    for r in d["runs"]:
        f32, b16 = r["float32"], r["bf16"]
        top1 = ", ".join(f"{m} {f32['top1'][m]:.2f} -> {b16['top1'][m]:.2f} ({r['top1_change'][m]:+.2f})"
                         for m in f32["top1"])
        out.append(f"| {', '.join(r['models'])} | {r['epochs']} | {f32['train_s'] / 60:.1f} | "
                   f"{b16['train_s'] / 60:.1f} | {r['seconds_ratio_bf16_to_float32']:.2f} | {top1} |")
    return "\n".join(out) + "\n"


def _front(rows: list[dict]) -> dict[str, str]:
    """For each descendant that another one beats (no more FLOPs, at least as accurate, one of them strictly):
    the cheapest of those that do."""
    beaten = {}
    for r in rows:
        better = [o for o in rows if o is not r and o["flops"] <= r["flops"] and o["top1"] >= r["top1"]
                  and (o["flops"] < r["flops"] or o["top1"] > r["top1"])]
        if better:
            beaten[r["key"]] = min(better, key=lambda o: (o["flops"], -o["top1"]))["key"]
    return beaten


def demo() -> str:
    """The bundled demo pool's pool.json: how it was built (its provenance) and every descendant's top-1."""
    from lgp_edge.pool.manifest import demo_pool_dir, read_manifest

    m = read_manifest(demo_pool_dir())
    prov, s = m.provenance, m.provenance["settings"]
    rows = sorted(({"key": r.key, "flops": r.flops, "params": r.params, "top1": r.top1} for r in m.descendants),
                  key=lambda r: (r["flops"], r["key"]))
    images = m.top1_images
    distill = next(h for h in m.history if h.get("stage") == "distill")
    after, top1 = prov["instances_after_distill"], {r["key"]: r["top1"] for r in rows}
    lo, hi = min(rows, key=lambda r: (r["top1"], r["flops"])), max(rows, key=lambda r: (r["top1"], -r["flops"]))
    threads = f", {counted(prov['torch_threads'], 'thread')}" if prov.get("torch_threads") else ""
    held = all(top1[k] >= v for k, v in after.items())
    t = prov["timing_s"]
    beaten = _front(rows)
    out = [f"Built by `{prov['commands'][-1]}` ({prov['date'][:10]}, code version {prov['code_version']}, "
           f"{prov['cpu']}{threads}) from the shipped ancestry ({prov['ancestry']['top1']}% top-1): the depth-6 pool, "
           f"Ti and B started from the ancestry's weights (`--aux-init {distill.get('aux_init')}`) and distilled, B "
           f"for {s['distill']['epochs']} epochs and Ti for {s['ti_epochs']} (right after distillation Ti alone "
           f"{after['ti6.0-5']:.2f}%, B alone {after['b6.0-5']:.2f}%), `{m.stitch_init}` stitches "
           f"({s['stitch_steps']} steps), then fine-tuned for {s['finetune']['epochs']} epochs in one cosine cycle "
           f"with `--anchors`, the instances at {s['instance_lr_scale']:g}x the learning rate. On all {images:,} "
           f"test images its {len(rows)} descendants reach **{lo['top1']:.2f}% (`{lo['key']}`, "
           f"{lo['flops'] / 1e6:.1f} MFLOPs) to {hi['top1']:.2f}% (`{hi['key']}`, {hi['flops'] / 1e6:.1f} MFLOPs)**; "
           f"Ti alone {top1['ti6.0-5']:.2f}%, B alone {top1['b6.0-5']:.2f}%: "
           + ("both at or above their top-1 right after distillation." if held else
              "**not both** at or above their top-1 right after distillation.")
           + f" The fp16 weights that ship were evaluated again after conversion (largest top-1 change "
           f"{prov['max_abs_top1_change_after_fp16']} points). The build's stages took "
           f"{t['build'] / 60:.1f} min (distillation and stitches) and {t['finetune'] / 60:.1f} min (fine-tuning). "
           f"{len(rows) - len(beaten)} of the {len(rows)} descendants are on the accuracy/FLOPs front; each of the "
           "others has a descendant with no more FLOPs that is at least as accurate (last column).", "",
           "| descendant | MFLOPs | params (K) | top-1 % | beaten by |", "|---|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| `{r['key']}` | {r['flops'] / 1e6:.2f} | {r['params'] / 1e3:.1f} | {r['top1']:.2f} | "
                   + (f"`{beaten[r['key']]}`" if r["key"] in beaten else "") + " |")
    return "\n".join(out) + "\n"


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "torch": "torch"}


def latency_findings() -> str:
    """What the latency results say, per thread count: the predictor's errors against the 5% goal, the spread of the
    runs, and what a second thread buys (``b6.0-5``), all from latency_1thread.json and latency.json."""
    goal, rts = 5.0, ("onnxruntime", "openvino")
    out, ms = [], {}
    for name in ("latency_1thread.json", "latency.json"):
        d = json.loads((RESULTS / name).read_text())
        pools = {p["name"]: p for p in d["pools"]}
        demo, base = pools["demo pool"], pools["DeiT-Base scale"]
        n = d["machine"]["threads"]

        def mape(p: dict, key: str = "predictor_mape_percent") -> str:
            return " and ".join(f"{p['summary'][rt][key]:.1f}%" for rt in rts)

        def span(p: dict) -> str:
            v = [r[rt]["median_ms"] for r in p["descendants"] for rt in rts]
            return "-".join(f"{x:.2g}" if x < 10 else f"{x:.0f}" for x in (min(v), max(v))) + " ms"

        errs = [100 * (r[rt]["predicted_ms"] - r[rt]["median_ms"]) / r[rt]["median_ms"]
                for r in demo["descendants"] for rt in rts]
        cvs = [demo["summary"][rt]["median_cv_of_runs"] for rt in rts]
        runs = [r[rt] for r in demo["descendants"] for rt in rts]
        over = [f"{RUNTIME_NAMES[rt]} on {p['name'].replace('demo pool', 'the demo pool')}" for p in (demo, base)
                for rt in rts if p["summary"][rt]["predictor_mape_percent"] > goal]
        verdict = f"within the {goal:g}% goal" if not over else f"over the {goal:g}% goal for {', '.join(over)}"
        names = " and ".join(RUNTIME_NAMES[r] for r in rts)
        out.append(f"- {counted(n, 'thread')}: median errors {mape(demo)} ({names}) on the demo pool ({span(demo)} "
                   f"models), {mape(base)} at DeiT-Base scale ({span(base)}): "
                   f"{verdict}. Every demo-pool prediction is within {min(errs):+.1f}..{max(errs):+.1f}% of its "
                   f"measured median. The p90 errors: {mape(demo, 'predictor_p90_mape_percent')} on the demo pool "
                   f"({sum(r['noisy'] for r in runs)} of {len(runs)} runs flagged noisy, median run-to-run CV "
                   f"{min(cvs):.2f}-{max(cvs):.2f}), {mape(base, 'predictor_p90_mape_percent')} at DeiT-Base scale.")
        ms[n] = {p["name"]: next(r for r in p["descendants"] if r["key"] == "b6.0-5")["onnxruntime"]["median_ms"]
                 for p in (demo, base)}
    if set(ms) == {1, 2}:
        d1, d2 = ms[1]["demo pool"], ms[2]["demo pool"]
        b1, b2 = ms[1]["DeiT-Base scale"], ms[2]["DeiT-Base scale"]
        out.append(f"- A second thread: `b6.0-5` in ONNX Runtime {d1:.2f} ms with 1 thread and {d2:.2f} ms with 2 on "
                   f"the demo pool ({'no gain' if d2 >= 0.95 * d1 else f'{d1 / d2:.2f}x faster'}), {b1:.0f} ms and "
                   f"{b2:.0f} ms at DeiT-Base scale ({b1 / b2:.2f}x faster).")
    return "\n".join(out) + "\n"


def int8_findings() -> str:
    """The int8 results in words: the speed-up per runtime (geomean; the smallest and the largest descendant) and
    the top-1 change (mean, worst, lowest agreement with torch), from int8.json."""
    d = json.loads((RESULTS / "int8.json").read_text())
    sp, ac = d["speed"], d["accuracy"]["summary"]
    g, rows = sp["speedup_int8_geomean"], sorted(sp["descendants"], key=lambda r: r["flops_fvcore"])
    small, large = rows[0], rows[-1]

    def pair(x: dict) -> str:
        return f"{x['onnxruntime']:.2f}x and {x['openvino']:.2f}x"

    verdict = d["verdict"]  # the benchmark's own verdict against its recorded goals
    met = all(verdict[rt]["speedup_met"] for rt in ("onnxruntime", "openvino"))
    ok = all(verdict[rt]["top1_met"] for rt in ("onnxruntime", "openvino"))
    speed = (f"The speed goal is {'met' if met else 'not met in both runtimes'}: int8 is {g['onnxruntime']:.2f}x "
             f"faster than fp32 in ONNX Runtime and {g['openvino']:.2f}x in OpenVINO (geometric mean over the "
             f"{len(rows)} DeiT-Base-scale descendants; the smallest, `{small['key']}` at "
             f"{small['flops_fvcore'] / 1e9:.2f} GFLOPs: {pair(small['speedup_int8'])}; the largest, "
             f"`{large['key']}`: {pair(large['speedup_int8'])}).")
    ort, ov = ac["onnxruntime"], ac["openvino"]
    accuracy = (f"The accuracy part, on the current demo pool, {'meets' if ok else 'does not meet'} the top-1 goal "
                f"in both runtimes: int8 changes top-1 by {ort['mean_change']:+.2f} points on average in ONNX "
                f"Runtime and {ov['mean_change']:+.2f} in OpenVINO, worst {ort['max_abs_change']:.2f} and "
                f"{ov['max_abs_change']:.2f} (agreement with torch at least {ort['min_agreement']:.3f} and "
                f"{ov['min_agreement']:.3f}).")
    return f"{speed} {accuracy}\n"


SECTIONS = (
    ("aux", aux), ("demo", demo), ("latency_findings", latency_findings), ("latency", latency), ("quick", quick),
    ("paper", paper), ("convergence", convergence), ("bf16", bf16), ("paper_converged", paper_converged),
    ("widths", widths), ("widths_converged", widths_converged), ("ceiling", ceiling), ("budget", budget),
    ("recipes", recipes), ("switchable", switchable), ("int8", int8), ("int8_findings", int8_findings),
    ("memory", memory), ("walkthrough", walkthrough))


def rendered(text: str) -> str:
    """``text`` (the README) with every generated section rendered anew from the results files."""
    for name, render in SECTIONS:
        parts = re.search(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", text, re.S)
        if not parts:
            raise SystemExit(f"README.md has no <!-- {name}:begin/end --> block")
        text = text[:parts.end(1)] + render() + text[parts.start(2):]
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse

    from lgp_edge.fileio import write_text_atomic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when README.md differs from what the results files render")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = rendered(text)
    if args.check:
        if new != text:
            print("README.md is out of date with benchmarks/results: run python benchmarks/render_readme.py",
                  file=sys.stderr)
            return 1
        return 0
    write_text_atomic(readme, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
