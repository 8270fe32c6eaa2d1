"""Latency of every descendant on this CPU in torch eager, ONNX Runtime and OpenVINO, against the machine's
measured fp32 GEMM peak, plus the predictor's error on held-out descendants.

    python benchmarks/latency.py [--pool POOL] [--threads N | --threads 1,2] [--out benchmarks/results/latency.json]
        # --threads 2, both pools: 4.3 min on 2 AMD EPYC cores

Two pools:
- the demo pool (``--pool``, default the bundled demo pool; when none exists yet, a random-weight pool
  of the demo pool's architecture ``lgp_vit_fmnist`` depth 6 -- latency does not depend on weight values);
- the DeiT-Base-scale pool of ``lgp-edge pool plan --ancestry deit_base_patch16_224 --depth 6`` with random
  weights: the only descendants big enough to be compute-bound on a CPU.

All models (descendants and calibration probes) in all three runtimes are loaded at once, warmed up, then
timed in interleaved rounds (DeiT-Base scale: one run of each per round), so load from other processes on
a shared machine hits runtimes and models alike (it does not cancel out; the JSON records the load
average). Without the memory for that, several passes over the models are made instead.

Achieved GFLOP/s count 2 FLOPs per multiply-add (hardware convention), i.e. twice the fvcore FLOPs shown
elsewhere. The GEMM peak is the best square fp32 matmul at the same thread count over n = 512/1024/2048
and over torch.matmul (MKL here), an ONNX Runtime MatMul (MLAS) and an OpenVINO MatMul (oneDNN); the
torch.matmul 2048 figure is recorded too (on some CPUs MKL stays well below the other libraries' peak).

Predictor: per pool and runtime, the calibration probes (not descendants) are measured the same way, the
per-part table is fitted on them and every descendant is predicted by ``lgp_edge``'s Predictor (median,
and p90/p99 from the dispersion of the probes nearest in size); MAPE is over all descendants, none of
which was used for calibration, for the median and for the p90. The uncalibrated roofline of the ``cpu``
target is reported beside it.

Select stability (``--select-runs``, default 10): ``lgp-edge select --target cpu`` in that many fresh
processes with an empty store, then with one injected noisy run of the chosen descendant, at a budget on a
front point (where any drift between processes flips the choice).
This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from lgp_edge.export.onnx_export import export_onnx
from lgp_edge.models.plan import descendant_flops
from lgp_edge.profiling.measure import MeasureSettings, run_series, summarize, time_interleaved
from lgp_edge.profiling.predict import Predictor, calibration_probes, fit_calibration, probe_key
from lgp_edge.profiling.roofline import measure_copy_bandwidth, measure_gemm_peak, parts_of, roofline_for
from lgp_edge.profiling.runtimes import get_runtime
from lgp_edge.specs import LatencyRecord
from lgp_edge.targets import load_target, targets_root

RUNTIMES = ("torch", "onnxruntime", "openvino")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import (  # noqa: E402  (the benchmarks' run record and writer)
    check_counts,
    check_results_path,
    pool_weights_sha256,
    results_path,
    run_provenance,
    write_results,
)

provenance = functools.partial(run_provenance, "latency.py")  # this script's run record


def small_pool(path: str | None):
    from lgp_edge.pool.pool import demo_pool_dir, load_pool

    if path or (demo_pool_dir() / "pool.json").is_file():
        pool, manifest = load_pool(path or demo_pool_dir())
        return pool, {"source": str(path or "bundled demo pool"), "data": manifest.data,
                      "top1": {r.key: r.top1 for r in manifest.descendants},
                      "weights_sha256": pool_weights_sha256(path or demo_pool_dir())}
    return random_pool("lgp_vit_fmnist", 6), {
        "source": "random-weight pool of the demo pool's architecture (lgp_vit_fmnist, depth 6): no demo pool "
                  "is bundled yet; latency does not depend on weight values", "data": None, "top1": {}}


def random_pool(ancestry: str, depth: int):
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.instances import plan_instances
    from lgp_edge.pool.pool import LearngenePool
    from lgp_edge.specs import PoolSpec

    torch.manual_seed(0)
    _, a = create_ancestry(ancestry)
    return LearngenePool(PoolSpec(a, depth, plan_instances(a, depth, ("ti", "b")))).eval()


def measure_together(models: list[tuple[str, torch.nn.Module]], example: torch.Tensor, settings: MeasureSettings,
                     tmp: Path) -> dict[str, dict[str, object]]:
    """Every model in every runtime loaded at once, warmed up once, then timed in interleaved rounds (each
    round runs every model in every runtime ``iters / rounds`` times), so load drift on a shared machine
    hits all models and runtimes alike."""
    rts = {name: get_runtime(name) for name in RUNTIMES}
    batch = []
    t0 = time.time()
    for i, (key, model) in enumerate(models):
        onnx = export_onnx(model, example, tmp / f"m{i}" / "model.onnx", opset=17, ship=True)  # what export ships
        for name, rt in rts.items():
            prepared = rt.prepare(model, example, "fp32", tmp / f"m{i}" / name, threads=settings.threads,
                                  onnx_path=onnx)
            for _ in range(settings.warmup):
                prepared.run()
            batch.append((key, name, prepared))
    print(f"  {len(batch)} sessions prepared and warmed up in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    out: dict[str, dict[str, object]] = {}
    timed = time_interleaved([p.run for _, _, p in batch], dataclasses.replace(settings, warmup=0, repeat_noisy=False))
    for (key, name, p), t in zip(batch, timed):
        out.setdefault(key, {})[name] = dataclasses.replace(t, warmup=settings.warmup)
        p.close()
    return out


def fits_in_memory(models: list[tuple[str, torch.nn.Module]]) -> bool:
    """ONNX Runtime and OpenVINO each hold a copy of every model's weights (ORT may also keep prepacked
    GEMM weights): require 3 x fp32 weights < half the available memory."""
    need = 3 * 4 * sum(sum(p.numel() for p in m.parameters()) for _, m in models)
    try:
        avail = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return False
    print(f"  all models at once need ~{need / 2**30:.1f} GiB of {avail / 2**30:.1f} GiB available", file=sys.stderr)
    return need < avail / 2


def measure_in_passes(models: list[tuple[str, torch.nn.Module]], example: torch.Tensor, settings: MeasureSettings,
                      tmp: Path, passes: int) -> dict[str, dict[str, object]]:
    """Big models (too many to hold loaded at once): ``passes`` sweeps over all models, alternating direction;
    each visit loads the model in the three runtimes, warms up and times ``iters / passes`` runs of each,
    runtime after runtime. Every model is thus sampled at several points of the run, so slow load drift on a
    shared machine spreads over all models instead of biasing the ones measured early or late."""
    rts = {name: get_runtime(name) for name in RUNTIMES}
    onnx = {}
    for i, (key, model) in enumerate(models):
        onnx[key] = export_onnx(model, example, tmp / f"m{i}" / "model.onnx", opset=17, ship=True)
    times: dict[str, dict[str, list[float]]] = {key: {r: [] for r in RUNTIMES} for key, _ in models}
    per_pass = max(1, settings.iters // passes)
    for p in range(passes):
        order = list(enumerate(models)) if p % 2 == 0 else list(reversed(list(enumerate(models))))
        t0 = time.time()
        for i, (key, model) in order:
            prepared = {name: rt.prepare(model, example, "fp32", tmp / f"m{i}" / name, threads=settings.threads,
                                         onnx_path=onnx[key]) for name, rt in rts.items()}
            for name in RUNTIMES:
                times[key][name] += run_series(prepared[name].run, settings.warmup, per_pass)
            for pr in prepared.values():
                pr.close()
            del prepared
        print(f"  pass {p + 1}/{passes} over {len(models)} models: {time.time() - t0:.0f} s", file=sys.stderr,
              flush=True)
    return {key: {name: summarize(ts, settings.warmup) for name, ts in per.items()} for key, per in times.items()}


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def bench_pool(name: str, pool, info: dict, settings: MeasureSettings, peak: float, torch_peak: float, tmp: Path,
               passes: int = 0) -> dict:
    a = pool.spec.ancestry
    example = torch.randn(settings.batch, a.in_chans, a.img_size, a.img_size,
                          generator=torch.Generator().manual_seed(0))
    specs = pool.descendants()
    probes = calibration_probes(pool.spec)
    print(f"{name}: {len(specs)} descendants + {len(probes)} probes, {a.name} ({a.img_size} px, dim {a.embed_dim})",
          file=sys.stderr, flush=True)
    t0 = time.time()
    # probes spread evenly among the descendants, so calibration and held-out models see the same load
    desc = [(s.key, pool.descendant(s)) for s in specs]
    prob = [(probe_key(parts_of(pool.spec, p)), pool.descendant(p)) for p in probes]
    models = sorted(desc + prob, key=lambda m: (desc.index(m) + 0.5) / len(desc) if m in desc
                    else (prob.index(m) + 0.5) / len(prob))
    if passes and not fits_in_memory(models):
        timings = measure_in_passes(models, example, settings, tmp / name, passes)
        method = f"{passes} passes over the models (not enough memory to load all at once)"
    else:
        timings = measure_together(models, example, settings, tmp / name)
        method = f"all models loaded at once, {settings.rounds} interleaved rounds"
    wall = time.time() - t0

    rows = []
    for s in specs:
        fl = descendant_flops(pool.spec, s)
        rec = pool.record(s)
        row = {"key": s.key, "blocks": s.num_blocks, "params": rec.params, "flops_fvcore": fl,
               "top1": info["top1"].get(s.key)}
        t_torch = timings[s.key]["torch"].median_ms
        for rt in RUNTIMES:
            t = timings[s.key][rt]
            gflops = 2 * fl / (t.median_ms / 1e3) / 1e9
            row[rt] = {"median_ms": t.median_ms, "p90_ms": t.p90_ms, "p99_ms": t.p99_ms, "min_ms": t.min_ms,
                       "cv": t.cv, "n": t.n,
                       "noisy": t.noisy, "achieved_gflops": gflops, "fraction_of_gemm_peak": gflops / peak,
                       "fraction_of_torch_matmul_peak": gflops / torch_peak,
                       "speedup_over_torch": t_torch / t.median_ms}
        rows.append(row)

    summary: dict[str, dict] = {}
    cpu = load_target("cpu")
    roof = roofline_for(cpu, "fp32", settings.threads)  # this host's calibration, measured in this process
    for rt in RUNTIMES:
        probe_recs = [_as_record(probe_key(parts_of(pool.spec, p)), timings[probe_key(parts_of(pool.spec, p))][rt], rt,
                                 settings) for p in probes]
        cal = fit_calibration(probe_recs)
        predictor = Predictor("calibrated", "cpu", rt, "fp32", calibration=cal)
        p90_errs = []
        # diagnostic: the same fit and check on each model's fastest run (the least disturbed one on a shared
        # machine); a small error here and a larger one on medians means the medians are noise-limited
        cal_min = fit_calibration([dataclasses.replace(r, median_ms=timings[r.descendant_key][rt].min_ms)
                                   for r in probe_recs])
        errs, roof_errs, min_errs = [], [], []
        for r, s in zip(rows, specs):
            parts = parts_of(pool.spec, s)
            measured = r[rt]["median_ms"]
            pred, pred_p90, pred_p99 = predictor.predict(parts)
            r[rt]["predicted_ms"] = pred
            r[rt]["predicted_p90_ms"], r[rt]["predicted_p99_ms"] = pred_p90, pred_p99
            p90_errs.append(abs(pred_p90 - r[rt]["p90_ms"]) / r[rt]["p90_ms"] * 100)
            r[rt]["roofline_ms"] = roof.predict_ms(parts)
            errs.append(abs(pred - measured) / measured * 100)
            min_errs.append(abs(cal_min.predict_ms(parts) - r[rt]["min_ms"]) / r[rt]["min_ms"] * 100)
            roof_errs.append(abs(r[rt]["roofline_ms"] - measured) / measured * 100)
        fr = [r[rt]["fraction_of_gemm_peak"] for r in rows]
        summary[rt] = {
            "speedup_over_torch_geomean": _geomean([r[rt]["speedup_over_torch"] for r in rows]),
            "speedup_over_torch_min": min(r[rt]["speedup_over_torch"] for r in rows),
            "speedup_over_torch_max": max(r[rt]["speedup_over_torch"] for r in rows),
            "achieved_gflops_max": max(r[rt]["achieved_gflops"] for r in rows),
            "fraction_of_gemm_peak_median": statistics.median(fr), "fraction_of_gemm_peak_max": max(fr),
            "predictor_mape_percent": statistics.mean(errs), "predictor_max_ape_percent": max(errs),
            "predictor_p90_mape_percent": statistics.mean(p90_errs),
            "predictor": predictor.describe() + "; p90/p99 " + predictor.spread_source,
            "predictor_calibration_probes": len(probes), "predictor_held_out_descendants": len(rows),
            "predictor_mape_on_fastest_run_percent": statistics.mean(min_errs),
            "median_cv_of_runs": statistics.median(r[rt]["cv"] for r in rows),
            "roofline_mape_percent": statistics.mean(roof_errs), "noisy_runs": sum(r[rt]["noisy"] for r in rows)}
    probe_rows = [{"key": probe_key(parts_of(pool.spec, p)), "spec": p.key,
                   **{rt: {"median_ms": timings[probe_key(parts_of(pool.spec, p))][rt].median_ms,
                           "cv": timings[probe_key(parts_of(pool.spec, p))][rt].cv} for rt in RUNTIMES}}
                  for p in probes]
    return {"pool": info["source"], "ancestry": a.to_dict(), "depth": pool.spec.depth, "pool_id": pool.pool_id,
            "weights_sha256": info.get("weights_sha256"),
            "descendants": rows, "calibration_probes": probe_rows, "summary": summary, "wall_s": wall,
            "method": method,
            "onnx": "the graph lgp-edge export ships (export_onnx ship=True: dynamo exporter + onnxslim, opset 17)",
            "cpu_roofline": {"peak_gflops": roof.peak_gflops, "mem_gbps": roof.mem_gbps,
                             "compute_eff": roof.compute_eff, "memory_eff": roof.memory_eff,
                             "overhead_us": roof.overhead_us, "llc_bytes": roof.llc_bytes,
                             "cache_gbps": roof.cache_gbps,
                             "p90_ratio": roof.p90_ratio, "p99_ratio": roof.p99_ratio, "source": roof.source}}


def _as_record(key: str, t, runtime: str, settings: MeasureSettings) -> LatencyRecord:
    return LatencyRecord(descendant_key=key, target="cpu", runtime=runtime, precision="fp32", batch=settings.batch,
                         median_ms=t.median_ms, p90_ms=t.p90_ms, p99_ms=t.p99_ms, mean_ms=t.mean_ms, std_ms=t.std_ms,
                         cv=t.cv, n=t.n, warmup=t.warmup, threads=settings.threads, source="measured", when="",
                         tool_versions={})


def markdown(res: dict) -> str:
    lines = []
    peak = res["machine"]["gemm_peak_gflops_fp32"]
    for block in res["pools"]:
        lines.append(f"\n**{block['name']}** ({block['ancestry']['name']}, depth {block['depth']}; {block['pool']})\n")
        lines.append("| descendant | GFLOPs (fvcore) | torch ms | ORT ms | OpenVINO ms | ORT × | OV × "
                     "| best GFLOP/s | % of GEMM peak |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in block["descendants"]:
            best = max(RUNTIMES, key=lambda rt: r[rt]["achieved_gflops"])
            lines.append(f"| {r['key']} | {r['flops_fvcore'] / 1e9:.3f} | {r['torch']['median_ms']:.3f} | "
                         f"{r['onnxruntime']['median_ms']:.3f} | {r['openvino']['median_ms']:.3f} | "
                         f"{r['onnxruntime']['speedup_over_torch']:.2f} | {r['openvino']['speedup_over_torch']:.2f} | "
                         f"{r[best]['achieved_gflops']:.1f} | {100 * r[best]['achieved_gflops'] / peak:.0f}% |")
        lines.append("\n| runtime | speed-up over torch (geomean, min-max) | max GFLOP/s | max % of peak "
                     "| predictor MAPE (medians) | MAPE (fastest runs) | run CV | roofline MAPE |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for rt, s in block["summary"].items():
            lines.append(f"| {rt} | {s['speedup_over_torch_geomean']:.2f} ({s['speedup_over_torch_min']:.2f}-"
                         f"{s['speedup_over_torch_max']:.2f}) | {s['achieved_gflops_max']:.1f} | "
                         f"{100 * s['fraction_of_gemm_peak_max']:.0f}% | {s['predictor_mape_percent']:.1f}% | "
                         f"{s['predictor_mape_on_fastest_run_percent']:.1f}% | {s['median_cv_of_runs']:.2f} | "
                         f"{s['roofline_mape_percent']:.0f}% |")
    st = res.get("select_stability")
    if st:
        lines.append(f"\nselect in {st['runs']} fresh processes: distinct choices "
                     f"{st['empty_store']['distinct_choices']} "
                     f"(empty store), {st['noisy_row']['distinct_choices']} (one noisy row, flagged in every run: "
                     f"{st['noisy_row']['flagged_in_every_run']})")
    return "\n".join(lines)


def _select(pool_dir: Path, store: Path, targets: Path, budget: float, n: int) -> list[dict]:
    """``lgp-edge select --json`` in ``n`` new processes started together (sharing the store, as apps would)."""
    import subprocess

    argv = [sys.executable, "-m", "lgp_edge", "select", "--target", "cpu", "--targets-dir", str(targets),
            "--pool", str(pool_dir), "--store", str(store), "--budget-ms", repr(budget), "--json", "-q"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"lgp-edge select failed: {stderr.strip()[-500:]}")
        out.append(json.loads(stdout))
    return out


def select_stability(pool_dir: Path, threads: int, tmp: Path, runs: int = 10) -> dict:
    """Same descendant from ``select`` in ``runs`` fresh processes: an empty store (the first process stores
    the host calibration, the others reuse it), then with one injected noisy run of the chosen descendant.
    The budget sits at a front point's predicted p90 (+1e-6 relative), where any drift flips the choice."""
    from lgp_edge.pool.pool import read_manifest
    from lgp_edge.profiling.store import MeasurementStore

    targets = tmp / "targets"
    targets.mkdir()
    cpu = (targets_root() / "cpu.toml").read_text()
    (targets / "cpu.toml").write_text(cpu.replace("threads = 0", f"threads = {threads}", 1))
    store = tmp / "select.sqlite"
    MeasurementStore(store).close()
    t0 = time.time()
    (first,) = _select(pool_dir, store, targets, 1e3, 1)
    front = first["front"]
    mid = front[len(front) // 2]
    budget = mid["latency_ms"] * 1.000001
    empty = _select(pool_dir, store, targets, budget, runs)
    pool_id = read_manifest(pool_dir).spec.pool_id
    with MeasurementStore(store) as s:  # one noisy measured run of the chosen descendant, 15x over the budget
        s.put(LatencyRecord(descendant_key=mid["key"], target="cpu", runtime=mid["runtime"], precision="fp32",
                            batch=1, median_ms=mid["median_ms"], p90_ms=15 * budget, p99_ms=16 * budget,
                            mean_ms=2 * mid["median_ms"], std_ms=3 * mid["median_ms"], cv=1.52, n=50, warmup=5,
                            threads=threads, source="measured", when=datetime.now(timezone.utc).isoformat(),
                            tool_versions={}, pool_id=pool_id, noisy=True))
    noisy = _select(pool_dir, store, targets, budget, runs)

    def chosen(rs: list[dict]) -> list[list]:
        return sorted({(r["chosen"]["key"], r["chosen"]["latency_ms"]) for r in rs})

    return {"runs": runs, "budget_ms": budget, "front_point": mid["key"], "threads": threads,
            "calibration": first["chosen"].get("calibration"),
            "empty_store": {"distinct_choices": chosen(empty), "same": len(chosen(empty)) == 1},
            "noisy_row": {"distinct_choices": chosen(noisy), "same_as_empty": chosen(noisy) == chosen(empty),
                          "flagged_in_every_run": all(r["noisy"] == [mid["key"]] and r["chosen"]["noisy"]
                                                      for r in noisy),
                          "reason": noisy[0]["reason"]},
            "predicted_p90_over_median": mid["latency_ms"] / mid["median_ms"],
            "wall_s": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--pool", default=None, help="small pool (default: the bundled demo pool)")
    p.add_argument("--threads", default=str(os.cpu_count() or 1),
                   help="thread count, or a comma list (e.g. 1,2): one run and one results file per count "
                        "(OUT_<n>thread.json when several)")
    p.add_argument("--small-iters", type=int, default=60, help="timed runs per small descendant and runtime")
    p.add_argument("--small-rounds", type=int, default=5)
    p.add_argument("--big-iters", type=int, default=9, help="timed runs per DeiT-Base-scale descendant and runtime")
    p.add_argument("--big-passes", type=int, default=3, help="sweeps over the DeiT-Base-scale models")
    p.add_argument("--skip-big", action="store_true", help="skip the DeiT-Base-scale pool (quick runs)")
    p.add_argument("--select-runs", type=int, default=10,
                   help="fresh 'lgp-edge select' processes per stability check (0 skips it)")
    p.add_argument("--out", default=None,
                   help="results file (default benchmarks/results/latency.json, or latency_quick.json with --skip-big "
                        "or fewer runs: a smoke run never replaces the committed results)")
    args = p.parse_args(argv)
    try:
        counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        p.error(f"--threads needs counts >= 1, got {args.threads!r}")
    check_counts(p, ("--small-iters", args.small_iters, 1), ("--small-rounds", args.small_rounds, 1),
                 ("--big-iters", args.big_iters, 1), ("--big-passes", args.big_passes, 1),
                 ("--select-runs", args.select_runs, 0))
    quick = args.skip_big or any(v < full for v, full in zip(
        (args.small_iters, args.small_rounds, args.big_iters, args.big_passes, args.select_runs), (60, 5, 9, 3, 10)))
    args.out = str(results_path(__file__, args.out, quick))
    check_results_path(Path(args.out), __file__)  # before the run, not after it
    results = []
    for n in counts:
        out = Path(args.out)
        if len(counts) > 1:
            out = out.with_name(f"{out.stem}_{n}thread{out.suffix}")
        results.append((n, run_one(args, n, out, argv)))
    print("\npredictor MAPE on held-out descendants (median; p90 in brackets):", file=sys.stderr)
    for n, res in results:
        for block in res["pools"]:
            cells = [f"{rt} {block['summary'][rt]['predictor_mape_percent']:.1f}% "
                     f"({block['summary'][rt]['predictor_p90_mape_percent']:.1f}%)"
                     for rt in ("onnxruntime", "openvino")]
            print(f"  {n} thread(s), {block['name']}: " + ", ".join(cells), file=sys.stderr)
    return 0


def run_one(args: argparse.Namespace, threads: int, out: Path, argv: list[str] | None = None) -> dict:
    import onnxruntime
    import openvino

    args = argparse.Namespace(**{**vars(args), "threads": threads})
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    t_start = time.time()
    gemm = {e: {n: measure_gemm_peak(args.threads, n=n, reps=r, engine=e) for n, r in ((512, 40), (1024, 15),
                                                                                     (2048, 5))}
            for e in RUNTIMES}
    torch_peak = gemm["torch"][2048]
    peak = max(v for per in gemm.values() for v in per.values())
    bw = measure_copy_bandwidth(args.threads, mb=256, reps=5)
    print(f"GEMM peak {peak:.1f} GFLOP/s (torch.matmul 2048: {torch_peak:.1f}), copy {bw:.1f} GB/s at "
          f"{args.threads} threads", file=sys.stderr)
    res: dict = {
        "benchmark": "benchmarks/latency.py", **provenance(argv),
        "machine": {"logical_cpus": os.cpu_count(), "threads": args.threads,
                    "platform": platform.platform(), "gemm_peak_gflops_fp32": peak,
                    "gemm_peak_definition": "best fp32 square matmul over n = 512, 1024, 2048 and over torch.matmul, "
                                            "an ONNX Runtime MatMul and an OpenVINO MatMul; best of repeated runs",
                    "torch_matmul_2048_gflops_fp32": torch_peak,
                    "gemm_gflops_by_engine_and_n": {e: {str(n): v for n, v in per.items()} for e, per in gemm.items()},
                    "copy_bandwidth_gbps": bw,
                    "load_average_start": load_start,
                    "note": "a shared VM: other processes may have been running; see load averages. Interleaved "
                            "rounds give every runtime the same load, not a quiet machine."},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "openvino": openvino.__version__, "python": platform.python_version()},
        "conventions": {"latency": "median of the timed runs, batch 1, fp32", "achieved_gflops":
                        "2 x fvcore FLOPs / median latency (2 FLOPs per multiply-add, as the GEMM peak)",
                        "speedup_over_torch": "torch eager median / runtime median, same descendant"},
        "pools": []}
    with tempfile.TemporaryDirectory(prefix="lgp-edge-bench-") as tmp:
        pool, info = small_pool(args.pool)
        s_small = MeasureSettings(warmup=5, iters=args.small_iters, threads=args.threads, rounds=args.small_rounds)
        block = bench_pool("demo pool", pool, info, s_small, peak, torch_peak, Path(tmp))
        block["name"], block["settings"] = "demo pool", s_small.__dict__
        res["pools"].append(block)
        if not args.skip_big:
            big = random_pool("deit_base_patch16_224", 6)
            s_big = MeasureSettings(warmup=1, iters=args.big_iters, threads=args.threads, rounds=args.big_iters)
            block = bench_pool("DeiT-Base scale", big, {"source": "lgp-edge pool plan --ancestry deit_base_patch16_224 "
                                                                  "--depth 6 (random weights)", "top1": {}},
                               s_big, peak, torch_peak, Path(tmp), passes=args.big_passes)
            block["name"], block["settings"] = "DeiT-Base scale", {**s_big.__dict__, "passes": args.big_passes}
            res["pools"].append(block)
        if args.select_runs:
            from lgp_edge.pool.pool import demo_pool_dir

            res["select_stability"] = select_stability(Path(args.pool or demo_pool_dir()), args.threads, Path(tmp),
                                                       args.select_runs)
    res["machine"]["load_average_end"] = os.getloadavg()
    res["wall_s"] = time.time() - t_start
    write_results(out, res)
    print(markdown(res))
    print(f"\nwrote {out} in {res['wall_s']:.0f} s", file=sys.stderr)
    return res


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
