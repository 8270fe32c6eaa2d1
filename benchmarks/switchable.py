"""Switchable ONNX vs one ONNX file per descendant: size on disk and latency in ONNX Runtime on this CPU.

    python benchmarks/switchable.py [--pool POOL] [--descendants KEY,KEY…] [--threads 1] [--rounds 9]
        # the demo pool: 90 s on 2 AMD EPYC cores

Pool: ``--pool``, else the bundled demo pool, else a pool with the demo pool's architecture
(lgp_vit_fmnist, depth 6, Ti + B) and random weights, every parameter drawn at random so that no two
tensors are equal by accident (content deduplication would otherwise flatter the size). Which one was
used is recorded. Descendants: ``--descendants``, else the demo pool's Pareto front on the ``cpu``
profile when the pool is evaluated, else all of them.

Size: the switchable file against (a) the sum of the single-descendant ONNX files ``lgp-edge export``
ships (dynamo exporter + onnxslim, opset 17), (b) the sum of the single TorchScript exports the
branches come from, and (c) the pool's own weights (parameters x 4 bytes; also the bytes of the
parameters the chosen descendants use, which is what the file can at best hold).

Latency: ONNX Runtime CPU, a fixed thread count, batch 1. Each round times every (descendant,
artifact) pair for ``--iters`` runs, in a shuffled order, so the artifacts share the machine's state;
the figure is the median over rounds of each block's per-run mean. The ratio switchable / single is per
descendant, against both single exports. Also: outputs switchable vs single vs torch on random inputs.

Writes benchmarks/results/switchable.json.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import check_counts, check_results_path, run_provenance, write_results  # noqa: E402  (the benchmarks' run record and writer)

provenance = functools.partial(run_provenance, "switchable.py")  # this script's run record

log = logging.getLogger("switchable-bench")


def random_demo_like_pool():
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.instances import plan_instances
    from lgp_edge.pool.pool import LearngenePool, PoolManifest
    from lgp_edge.specs import PoolSpec, PreprocessSpec

    torch.manual_seed(0)
    _, aspec = create_ancestry("lgp_vit_fmnist")
    pool = LearngenePool(PoolSpec(aspec, 6, plan_instances(aspec, 6, ("ti", "b")))).eval()
    with torch.no_grad():
        for p in pool.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    pre = PreprocessSpec(img_size=aspec.img_size, in_chans=aspec.in_chans, mean=(0.286,), std=(0.353,),
                         labels=tuple(str(i) for i in range(aspec.num_classes)))
    return pool, PoolManifest(spec=pool.spec, preprocess=pre, data="synthetic", stitch_init="learned",
                              stage="random"), "random weights, demo pool architecture (lgp_vit_fmnist, depth 6, ti+b)"


def load(pool_arg: str | None):
    from lgp_edge.pool.pool import demo_pool_dir, load_pool

    if pool_arg:
        pool, mf = load_pool(pool_arg)
        return pool, mf, f"pool {pool_arg}"
    if (demo_pool_dir() / "pool.json").is_file():
        pool, mf = load_pool(demo_pool_dir())
        return pool, mf, "bundled demo pool"
    return random_demo_like_pool()


def selections(pool, mf, arg: str | None, store_path: Path) -> tuple[list[tuple[str, list[str]]], dict]:
    """(name, keys) to measure: --descendants; else the cpu profile's Pareto front (when evaluated) and all."""
    from lgp_edge.profiles import load_profile
    from lgp_edge.profiling.store import MeasurementStore
    from lgp_edge.select import latencies, pareto_front, score_candidates
    from lgp_edge.targets import load_target

    target, profile = load_target("cpu"), load_profile("cpu")
    lat = latencies(pool.spec, target, profile.precision, MeasurementStore(store_path), profile.batch)
    if arg:
        return [("--descendants", [k.strip() for k in arg.split(",") if k.strip()])], lat
    out = []
    if mf.descendants and any(r.top1 is not None for r in mf.descendants):
        cands = score_candidates(tuple(mf.descendants), lat, profile, pool=mf.spec)
        out.append(("pareto front of profile cpu (the CLI default)", [c.key for c in pareto_front(cands)]))
    out.append(("all descendants (the whole pool)", [d.key for d in pool.descendants()]))
    return out, lat


def timed_block(fn, x, iters: int) -> float:
    t = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return (time.perf_counter() - t) / iters * 1e3


def export_shipped(pool, keys: list[str], shape: tuple[int, ...], tmp: Path, shipped: dict[str, Path]) -> float:
    """What 'lgp-edge export' ships for each descendant of ``keys`` not in ``shipped`` yet (dynamo exporter +
    onnxslim, opset 17), added to ``shipped``; the seconds it took. The exported-graph cache is off here: its
    wall time is the export's, not a read of a graph an earlier run left in the user's cache."""
    from lgp_edge.export.onnx_export import export_onnx

    t = time.time()
    for key in keys:
        if key not in shipped:
            shipped[key] = export_onnx(pool.descendant(key).eval(), torch.zeros(shape),
                                       tmp / f"shipped{len(shipped)}.onnx", opset=17, ship=True,
                                       metadata={"descendant_key": key}, cache=False)
    return time.time() - t


def measure(pool, mf, name: str, keys: list[str], lat: dict, args, tmp: Path, shipped: dict[str, Path]) -> dict:
    """Size, correctness and interleaved latency of one switchable file against its single exports."""
    from lgp_edge.export.sessions import ort_session
    from lgp_edge.export.switchable import build_switchable_onnx
    from lgp_edge.export.switchable_check import open_switchable, validate_switchable_onnx
    from lgp_edge.export.switchable_table import switch_entries

    entries = switch_entries(mf, keys, lat)
    a = pool.spec.ancestry
    shape = (1, a.in_chans, a.img_size, a.img_size)
    d = tmp / f"sel{len(keys)}"
    t = time.time()
    sw = build_switchable_onnx(pool, entries, d / "switchable.onnx", input_shape=shape, singles_dir=d / "ts")
    build_s = time.time() - t
    shipped_s = export_shipped(pool, [e.key for e in entries], shape, tmp, shipped)
    x = np.random.default_rng(0).standard_normal((16, *shape[1:])).astype(np.float32)
    checks = validate_switchable_onnx(sw, pool, x, np.zeros(16, np.int64), data="random", synthetic=True)
    sw_run = open_switchable(sw.path, "onnxruntime", args.threads)
    ship_diff = {}
    for e in entries:
        s = ort_session(shipped[e.key], args.threads)
        ship_diff[e.key] = max(float(np.abs(sw_run(x[i:i + 1], e.index) - s.run(None, {"input": x[i:i + 1]})[0]).max())
                               for i in range(len(x)))
    pool_bytes = sum(p.numel() * 4 for p in pool.parameters())
    used = {id(p): p for e in entries for p in pool.descendant(e.key).parameters()}
    size = {"switchable_bytes": sw.path.stat().st_size, "switchable_initializer_bytes": sw.initializer_bytes,
            "single_onnx_sum_bytes": sum(shipped[e.key].stat().st_size for e in entries),
            "single_torchscript_onnx_sum_bytes": sum(Path(p).stat().st_size for _, p in sw.singles),
            "pool_fp32_weight_bytes": pool_bytes,
            "selection_fp32_weight_bytes": sum(p.numel() * 4 for p in used.values())}
    size["graph_bytes"] = size["switchable_bytes"] - sw.initializer_bytes
    size["ratio_to_pool_weights"] = size["switchable_bytes"] / pool_bytes
    size["ratio_to_selection_weights"] = size["switchable_bytes"] / size["selection_fp32_weight_bytes"]
    size["ratio_to_single_onnx_sum"] = size["switchable_bytes"] / size["single_onnx_sum_bytes"]
    fns = {}
    for e in entries:
        ps, ts = ort_session(shipped[e.key], args.threads), ort_session(dict(sw.singles)[e.key], args.threads)
        fns[(e.key, "switchable")] = lambda v, i=e.index: sw_run(v, i)
        fns[(e.key, "single_shipped")] = lambda v, s=ps: s.run(None, {"input": v})
        fns[(e.key, "single_torchscript")] = lambda v, s=ts: s.run(None, {"input": v})
    xin = x[:1]
    for f in fns.values():  # warm-up
        timed_block(f, xin, 20)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in fns}
    rng = random.Random(0)
    t = time.time()
    for _ in range(args.rounds):
        order = list(fns)
        rng.shuffle(order)
        for k in order:
            times[k].append(timed_block(fns[k], xin, args.iters))
    bench_s = time.time() - t
    rows = []
    for e in entries:
        med = {kind: statistics.median(times[(e.key, kind)])
               for kind in ("switchable", "single_shipped", "single_torchscript")}
        v = {c.runtime: c for c in checks if c.key == e.key}
        rows.append({"index": e.index, "key": e.key, "params": e.params, "flops": e.flops, "top1": e.top1,
                     "median_ms": med,
                     "overhead_ms_vs_single_shipped": med["switchable"] - med["single_shipped"],
                     "ratio_vs_single_shipped": med["switchable"] / med["single_shipped"],
                     "ratio_vs_single_torchscript": med["switchable"] / med["single_torchscript"],
                     "rounds_ms": {k: [round(t_, 5) for t_ in times[(e.key, k)]] for k in med},
                     "max_abs_diff": {"switchable_vs_torch_ort": v["onnxruntime"].vs_torch.max_abs_diff,
                                      "switchable_vs_torch_openvino": v["openvino"].vs_torch.max_abs_diff,
                                      "switchable_vs_single_torchscript_ort": v["onnxruntime"].vs_single_max_abs_diff,
                                      "switchable_vs_single_shipped_ort": ship_diff[e.key]},
                     "validation_passed": all(c.passed for c in v.values())})
    rs = [r["ratio_vs_single_shipped"] for r in rows]
    rt = [r["ratio_vs_single_torchscript"] for r in rows]
    log.info("%s: %d descendants, switchable %.2f MB = %.3f x pool fp32 weights (%.3f x the selection's), %.3f x "
             "sum of shipped singles; latency ratio vs shipped single median %.3f (%.3f..%.3f)", name, len(rows),
             size["switchable_bytes"] / (1 << 20), size["ratio_to_pool_weights"], size["ratio_to_selection_weights"],
             size["ratio_to_single_onnx_sum"], statistics.median(rs), min(rs), max(rs))
    return {"selection": name, "descendants": len(rows), "if_nodes": len(rows) if len(rows) > 1 else 0,
            "size": size, "size_goal_met_vs_pool": size["ratio_to_pool_weights"] <= 1.10,
            "latency_per_descendant": rows,
            "ratio_vs_single_shipped": {"min": min(rs), "median": statistics.median(rs), "max": max(rs)},
            "ratio_vs_single_torchscript": {"min": min(rt), "median": statistics.median(rt), "max": max(rt)},
            "latency_goal_met_vs_single_shipped": all(r <= 1.05 for r in rs),
            "validation_all_passed": all(r["validation_passed"] for r in rows),
            "wall_s": {"build_switchable": round(build_s, 1), "export_single_shipped": round(shipped_s, 1),
                       "latency": round(bench_s, 1)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=None)
    ap.add_argument("--descendants", default=None)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--iters", type=int, default=100, help="runs per timed block")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "switchable.json"),
                    help="results file (default benchmarks/results/switchable.json)")
    args = ap.parse_args(argv)
    check_counts(ap, ("--threads", args.threads, 1), ("--rounds", args.rounds, 1), ("--iters", args.iters, 1))
    if args.out:
        check_results_path(Path(args.out), __file__)  # before the run, not after it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import onnxruntime as ort

    from lgp_edge.pool.pool import WEIGHTS

    header = provenance(argv)
    t_start, load_start = time.time(), os.getloadavg()
    pool, mf, pool_desc = load(args.pool)
    with tempfile.TemporaryDirectory(prefix="lgp-switch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sels, lat = selections(pool, mf, args.descendants, tmp / "store.sqlite")
        shipped: dict[str, Path] = {}
        results = [measure(pool, mf, name, keys, lat, args, tmp, shipped) for name, keys in sels]
    result = {
        "benchmark": "benchmarks/switchable.py", **header,
        "what": "switchable ONNX (one file, one If per descendant side by side, shared outer-scope initializers) "
                "vs one ONNX file per descendant, ONNX Runtime CPU",
        "pool": pool_desc, "pool_id": pool.pool_id, "weights_sha256": mf.files.get(WEIGHTS),  # None: random weights
        "pool_storage": f"{mf.storage_dtype} weights.safetensors; ONNX holds fp32, so sizes compare with the "
                        "parameters x 4 bytes",
        "goals": {"size": "switchable file <= 1.10 x the pool's fp32 weights",
                  "latency": "each descendant through the switchable file <= 1.05 x its single export"},
        "latency_method": {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", "threads": args.threads,
                           "batch": 1, "rounds": args.rounds, "iters_per_block": args.iters,
                           "statistic": "median over rounds of each block's per-run mean; every round runs all "
                                        "(descendant, artifact) blocks in a new random order",
                           "single_shipped": "lgp_edge.export.onnx_export.export_onnx(ship=True) (dynamo + onnxslim), "
                                             "what 'lgp-edge export' writes",
                           "single_torchscript": "the TorchScript export each switchable branch is made from"},
        "selections": results,
        "machine": {"cores": os.cpu_count(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                    "note": "a shared VM: other processes may have been running; see load averages. Interleaved "
                            "blocks and medians give every artifact the same load"},
        "wall_s_total": round(time.time() - t_start, 1),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
    }
    write_results(Path(args.out), result)
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
