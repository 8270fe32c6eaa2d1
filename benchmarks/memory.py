"""Peak resident memory of an exported descendant in ONNX Runtime, against the memory lgp-edge charges it.

    python benchmarks/memory.py [--pool POOL] [--descendant b6.0-5] [--reference ti6.0-5] [--batches 1,512]
        [--threads 1] [--repeats 3]        # the demo pool: 33 s on 2 AMD EPYC cores

The ONNX files are lgp-edge's own: ``lgp-edge export --target cpu --descendant KEY --format onnx`` (a new process,
this checkout's code), ``--dynamic-batch`` for the file measured at every batch, and the default static batch-1
file (what export ships) measured at batch 1 beside it. ``--reference``, a descendant with far fewer weights, is
exported and measured the same way: two model sizes tell the runtime's own memory from what the weights cost.

Every measurement is a fresh process (this script with ``--child``) that imports numpy and onnxruntime, makes the
input batch, resets its peak (``5`` into /proc/self/clear_refs), reads VmRSS from /proc/self/status (the
baseline), creates the session (``--threads`` intra-op threads, one inter-op, sequential, ORT_ENABLE_ALL: the
options of lgp-edge's ONNX Runtime profiler), reads VmHWM and VmRSS, resets the peak again, runs one inference and
reads VmHWM: the peak over the baseline is the larger VmHWM less the baseline, the inference's own peak the last
VmHWM less VmRSS after session creation (session creation can peak higher than a small batch's inference). The
descendant at batch 1 is also measured with pre-packing off (``session.disable_prepacking``). Each figure is the
median of ``--repeats`` processes.

Derived (the JSON's ``method`` says the same): activations per image = (inference peak at the largest batch -
inference peak at batch 1) / (batch - 1); each model's batch-0 intercept = peak at batch 1 - one image's
activations; intercept = runtime + factor x weight bytes (parameters x 4), solved over the two models for the
runtime's memory and the weights' factor; pre-packing's share = peak at batch 1 - the same with pre-packing off.
Charged: lgp-edge's estimate, ``lgp_edge.select.memory_mb`` (fp32) and ``lgp_edge.models.plan.activation_bytes``
per image.

Writes benchmarks/results/memory.json (README's memory paragraph is rendered from it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIB, MIB = 1024, 1 << 20


def _status() -> dict[str, int]:
    """VmHWM and VmRSS of this process, in bytes."""
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) * KIB for k in ("VmHWM", "VmRSS")}


def child(path: str, batch: int, image: tuple[int, ...], threads: int, prepack: bool) -> dict:
    """One measurement, in this (fresh) process: memory over the baseline after session creation and after the
    first inference, on a batch of ``batch`` random images of shape ``image``. Imports nothing but numpy and
    onnxruntime before the baseline, and reads nothing of the model."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    x = np.random.default_rng(0).standard_normal((batch, *image)).astype(np.float32)
    reset = _reset_peak()
    base = _status()
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    created = _status()
    reset = reset and _reset_peak()  # from here VmHWM is the inference's own peak
    sess.run(None, {sess.get_inputs()[0].name: x})
    ran = _status()
    return {"batch": batch, "prepack": prepack, "threads": threads, "peak_reset": reset,
            "baseline_rss": base["VmRSS"], "baseline_hwm": base["VmHWM"],
            "session_hwm": created["VmHWM"], "session_rss": created["VmRSS"],
            "run_hwm": ran["VmHWM"], "run_rss": ran["VmRSS"],
            "peak_after_session": created["VmHWM"] - base["VmRSS"],
            "peak_after_first_inference": max(created["VmHWM"], ran["VmHWM"]) - base["VmRSS"],
            "inference_peak": ran["VmHWM"] - created["VmRSS"] if reset else None}


def _reset_peak() -> bool:
    """VmHWM := VmRSS (``5`` into /proc/self/clear_refs, Linux >= 4.0); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(path: Path, batch: int, image: tuple[int, ...], threads: int, repeats: int, prepack: bool = True) -> dict:
    """``repeats`` fresh processes: each one's record and the medians (bytes)."""
    runs = []
    for _ in range(repeats):
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), str(batch),
                ",".join(map(str, image)), str(threads), "1" if prepack else "0"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
        runs.append(json.loads(out.stdout))
    if not all(r["peak_reset"] for r in runs):
        raise RuntimeError("/proc/self/clear_refs could not reset the peak: the inference's own peak is unknown")
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("peak_after_session", "peak_after_first_inference", "inference_peak")}
    return {"batch": batch, "prepack": prepack, **med, "runs": runs}


def export(pool: str | None, key: str, out: Path, dynamic: bool, val_images: int) -> tuple[str, dict]:
    """``lgp-edge export`` of one descendant's ONNX (a new process, this checkout's lgp_edge, a private empty
    store): the command and the manifest."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *([path] if path else [])]),
           "LGP_EDGE_STORE": str(out.parent / "store.sqlite")}
    args = ["export", "--target", "cpu", "--descendant", key, "--format", "onnx",
            *(["--dynamic-batch"] if dynamic else []), *(["--pool", pool] if pool else []),
            "--val-images", str(val_images), "--out", str(out), "--json"]
    run = subprocess.run([sys.executable, "-m", "lgp_edge", "-q", *args], env=env, capture_output=True, text=True,
                         check=False, timeout=1800)
    if run.returncode:
        raise RuntimeError(f"lgp-edge export {key} exited {run.returncode}: {run.stderr.strip()[-2000:]}")
    shown = " ".join(a if a != str(out) else f"OUT/{out.name}" for a in args)
    return f"lgp-edge {shown}", json.loads((out / "manifest.json").read_text())


def derive(main: dict, ref: dict, top: int) -> dict:
    """The derived numbers (bytes, and the weights' factor) from the measured peaks of two models; ``main`` and
    ``ref``: per model ``peak`` and ``inference_peak`` {batch: bytes} (dynamic-batch file, pre-packing on),
    ``weight_bytes``, and for ``main`` ``peak_1_no_prepack``."""
    models = (("main", main), ("ref", ref))
    slope = {n: (m["inference_peak"][top] - m["inference_peak"][1]) / (top - 1) for n, m in models}
    icpt = {n: m["peak"][1] - slope[n] for n, m in models}
    factor = (icpt["main"] - icpt["ref"]) / (main["weight_bytes"] - ref["weight_bytes"])
    return {"activation_bytes_per_image": slope["main"], "reference_activation_bytes_per_image": slope["ref"],
            "intercept_bytes": icpt["main"], "reference_intercept_bytes": icpt["ref"],
            "weights_factor": factor, "runtime_bytes": icpt["main"] - factor * main["weight_bytes"],
            "prepack_bytes": main["peak"][1] - main["peak_1_no_prepack"]}


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["--child"]:  # a measurement process: nothing else imported
        path, batch, image, threads, prepack = raw[1:6]
        print(json.dumps(child(path, int(batch), tuple(map(int, image.split(","))), int(threads), prepack == "1")))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=None, help="pool directory (default: the bundled demo pool)")
    ap.add_argument("--descendant", default="b6.0-5", help="the descendant measured (default b6.0-5)")
    ap.add_argument("--reference", default="ti6.0-5",
                    help="a descendant with far fewer weights, for the runtime / weights split (default ti6.0-5)")
    ap.add_argument("--batches", default="1,512", help="batch sizes, 1 and at least one more (default 1,512)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="processes per figure; the median is kept (default 3)")
    ap.add_argument("--val-images", type=int, default=300, help="export's validation images (default 300)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"),
                    help="results file (default benchmarks/results/memory.json)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_demo_pool import check_counts, check_results_path

    if args.out:

        check_results_path(Path(args.out), __file__)  # before the run, not after it
    try:
        batches = sorted({int(b) for b in args.batches.split(",")})
    except ValueError:
        ap.error(f"--batches needs a comma list of batch sizes, 1 and a larger one; got {args.batches!r}")
    if batches[0] != 1 or len(batches) < 2:
        ap.error("--batches needs 1 and a larger batch")
    check_counts(ap, ("--threads", args.threads, 1), ("--repeats", args.repeats, 1),
                 ("--val-images", args.val_images, 1))
    top = batches[-1]
    import onnxruntime as ort
    from make_demo_pool import pool_weights_sha256, repo_path, run_provenance, write_results

    from lgp_edge.models.plan import activation_bytes
    from lgp_edge.pool.manifest import demo_pool_dir, read_manifest
    from lgp_edge.select import memory_mb

    header = functools.partial(run_provenance, "memory.py")(argv)
    pool_dir = Path(args.pool) if args.pool else demo_pool_dir()
    pm = read_manifest(pool_dir)
    records = {r.key: r for r in pm.descendants}
    for key in (args.descendant, args.reference):
        if key not in records:
            ap.error(f"{key} is not a descendant of {pool_dir}")
    pre = pm.preprocess
    image = (pre.in_chans, pre.img_size, pre.img_size)
    t_start, load_start = time.time(), os.getloadavg()
    models, exports = {}, []
    with tempfile.TemporaryDirectory(prefix="lgp-memory-") as tmp_name:
        tmp = Path(tmp_name)
        for role, key in (("descendant", args.descendant), ("reference", args.reference)):
            rec = records[key]
            cmd, mf = export(args.pool, key, tmp / f"{role}-dynamic", True, args.val_images)
            exports.append({"role": role, "key": key, "command": cmd, "dynamic_batch": True,
                            "validation_passed": mf["validation"]["passed"]})
            path = tmp / f"{role}-dynamic" / "model.onnx"
            m = {"key": key, "params": rec.params, "weight_bytes": rec.params * 4,
                 "onnx_bytes": path.stat().st_size,
                 "measured": [measure(path, b, image, args.threads, args.repeats) for b in batches],
                 "charged_memory_mb": {str(b): memory_mb(pm.spec, rec, "fp32", b) for b in batches},
                 "charged_activation_bytes_per_image": activation_bytes(pm.spec, rec.spec, 1, 4)}
            m["peak"] = {r["batch"]: r["peak_after_first_inference"] for r in m["measured"]}
            m["inference_peak"] = {r["batch"]: r["inference_peak"] for r in m["measured"]}
            if role == "descendant":
                no_pp = measure(path, 1, image, args.threads, args.repeats, prepack=False)
                m["measured"].append(no_pp)
                m["peak_1_no_prepack"] = no_pp["peak_after_first_inference"]
                cmd, mf = export(args.pool, key, tmp / "descendant-static", False, args.val_images)
                exports.append({"role": role, "key": key, "command": cmd, "dynamic_batch": False,
                                "validation_passed": mf["validation"]["passed"]})
                static = measure(tmp / "descendant-static" / "model.onnx", 1, image, args.threads,
                                 args.repeats)
                m["static_batch1"] = {**static, "file": "the static batch-1 ONNX export writes by default"}
            models[role] = m
    derived = derive(models["descendant"], models["reference"], top)
    for m in models.values():
        for k in ("peak", "inference_peak"):
            m[k] = {str(b): v for b, v in m[k].items()}  # JSON keys
    d = models["descendant"]
    result = {
        "benchmark": "benchmarks/memory.py", **header,
        "what": "peak resident memory of a fresh process over its baseline after an ONNX Runtime session's first "
                "inference, for lgp-edge's exported ONNX of a descendant, against the memory_mb lgp-edge charges",
        "pool": {"path": repo_path(pool_dir), "bundled_demo_pool": args.pool is None, "pool_id": pm.spec.pool_id,
                 "weights_sha256": pool_weights_sha256(pool_dir)},
        "descendant": args.descendant, "reference": args.reference, "batches": batches, "threads": args.threads,
        "repeats": args.repeats, "exports": exports,
        "summary": {
            "peak_mib": {str(b): d["peak"][str(b)] / MIB for b in batches},
            "inference_peak_mib": {str(b): d["inference_peak"][str(b)] / MIB for b in batches},
            "static_batch1_peak_mib": d["static_batch1"]["peak_after_first_inference"] / MIB,
            "charged_mb": d["charged_memory_mb"],
            "runtime_mib": derived["runtime_bytes"] / MIB,
            "weights_mib": d["weight_bytes"] / MIB,
            "weights_factor": derived["weights_factor"],
            "prepack_mib": derived["prepack_bytes"] / MIB,
            "activation_kib_per_image": derived["activation_bytes_per_image"] / KIB,
            "charged_activation_kib_per_image": d["charged_activation_bytes_per_image"] / KIB},
        "derived_bytes": derived,
        "models": models,
        "method": {
            "process": "one fresh process per figure (median of 'repeats'): import numpy and onnxruntime, make the "
                       "input batch, reset the peak (5 into /proc/self/clear_refs), read VmRSS (baseline), create the "
                       "session, read VmHWM and VmRSS, reset the peak, run one inference, read VmHWM; peak = the "
                       "larger VmHWM - baseline VmRSS",
            "session": f"onnxruntime {ort.__version__} CPUExecutionProvider, intra_op_num_threads={args.threads}, "
                       "inter_op_num_threads=1, ORT_SEQUENTIAL, ORT_ENABLE_ALL (lgp-edge's profiler's options)",
            "files": "lgp-edge export --target cpu --descendant KEY --format onnx --dynamic-batch: one file "
                     "measured at every batch; the default static batch-1 file measured at batch 1 as well",
            "inference_peak": "the peak is reset again once the session is created: VmHWM after the inference - "
                              "VmRSS after session creation is the inference's own peak over the loaded session",
            "activation_per_image": f"(inference peak at batch {top} - inference peak at batch 1) / {top - 1}",
            "intercept": "peak at batch 1 - one image's activations (the model at batch 0)",
            "runtime_and_weights_factor": "intercept = runtime + factor x weight bytes (parameters x 4), solved over "
                                          "the descendant and the reference (two equations, two unknowns)",
            "prepack": "peak at batch 1 - the same with session.disable_prepacking = 1",
            "charged": "lgp_edge.select.memory_mb(pool, record, 'fp32', batch) and "
                       "lgp_edge.models.plan.activation_bytes(pool, spec, 1, 4); lgp-edge's MB is 2^20 bytes",
            "units": "bytes in models / derived_bytes; MiB (2^20) and KiB (2^10) in summary"},
        "machine": {"logical_cpus": os.cpu_count(), "load_average_start": load_start,
                    "load_average_end": os.getloadavg()},
        "wall_s_total": round(time.time() - t_start, 1),
        "versions": {"onnxruntime": ort.__version__, "python": platform.python_version()},
    }
    write_results(Path(args.out), result)
    s = result["summary"]
    print(f"peak {', '.join(f'{v:.1f} MiB at batch {b}' for b, v in s['peak_mib'].items())}; runtime "
          f"{s['runtime_mib']:.1f} MiB, weights x{s['weights_factor']:.2f}, {s['activation_kib_per_image']:.0f} KiB "
          f"per image (charged {s['charged_activation_kib_per_image']:.0f}); wrote {args.out} in "
          f"{result['wall_s_total']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
