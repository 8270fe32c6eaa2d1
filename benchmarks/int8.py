"""int8 vs fp32 on this CPU: latency of DeiT-Base-scale descendants and the top-1 cost on the demo pool.

    python benchmarks/int8.py                     # the full run (~15 min of one core)
    python benchmarks/int8.py --quick             # a smoke run (one model, few images) -> results/int8_quick.json
    python benchmarks/int8.py --part accuracy     # redo the accuracy part only (a new demo pool)

Two parts, one process, every model with 1 intra-op thread:

- Speed: descendants of ``lgp-edge pool plan --ancestry deit_base_patch16_224 --depth 6`` built with random
  weights (latency does not depend on weight values), 224 px, batch 1. Each is exported as ``lgp-edge export``
  exports it (the shipped ONNX, opset 17) and quantized the same way: ONNX Runtime int8 is the static QDQ model
  of ``lgp_edge.export.quantize`` (ONNX Runtime's scheme), OpenVINO int8 is NNCF's PTQ of the IR
  (``lgp_edge.export.openvino.quantize_int8``). Calibration here uses Gaussian-noise images (the weights are
  random, so real images would mean nothing; scales do not change the kernels that run). OpenVINO is compiled
  with INFERENCE_PRECISION_HINT f32 for both, so its fp32 is fp32. All sessions are loaded at once and timed in
  interleaved rounds, so load from other processes hits every configuration alike.
- Accuracy: every descendant of the bundled demo pool (or ``--pool``), torch fp32 vs its int8 ONNX (ONNX
  Runtime) and int8 IR (OpenVINO), calibrated on ``--calib-images`` training images as ``lgp-edge export``
  does (same quantization code), on ``--images`` test images drawn at random without replacement (a fixed
  permutation, seed 0, as ``lgp_edge.export.images.load_images`` draws them; the default 10,000 is all of
  Fashion-MNIST's test set): top-1 of each, the change in points, and top-1 agreement with torch.

The parts are independent (the speed part never reads the demo pool), so ``--part`` reruns one of them and
keeps the other from the existing ``--out`` file; each part records the run that measured it (``run``: date,
code version, command, CPU, versions), the top level the last run (the one that wrote the file), and the README
names each part's run when they differ. ``--quick`` writes int8_quick.json unless ``--out`` says otherwise, so a
smoke run never replaces the committed results.

This script is never imported by lgp_edge.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import (  # noqa: E402  (the benchmarks' shared helpers)
    check_counts,
    check_results_path,
    pool_weights_sha256,
    repo_path,
    results_path,
    run_provenance,
    write_results,
)

provenance = functools.partial(run_provenance, "int8.py")  # this script's run record

RESULTS = ROOT / "benchmarks" / "results"
SPEED_KEYS = ("ti6.0-5", "ti6.0-4+b6.5-5", "ti6.0-3+b6.4-5", "b6.0-5")  # 0.6 to 8.9 GFLOPs
CONFIGS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8"))
GOALS = {"speedup": 1.8, "top1_change_points": 0.5}
PARTS = ("all", "speed", "accuracy")
# what a part records of the run that measured it ("when": the date in files written before "date")
RUN_KEYS = ("code_version", "date", "when", "command", "cpu", "cpu_facts", "machine", "versions")


def cpu_facts() -> dict:
    """Whether the CPU has the int8 dot-product instructions ONNX Runtime and oneDNN use, its family/model and the
    CPUs this process may use, from ``lgp_edge.profiling.host`` (/proc/cpuinfo, or sysctl on macOS: the same
    values lscpu shows on Linux); the model name is ``provenance``'s ``cpu``."""
    from lgp_edge.profiling.host import cpu_facts as host_facts
    from lgp_edge.profiling.host import usable_cpus

    facts = host_facts()
    flags = set(facts["features"] or ())
    return {"cpu_family_model": f"{facts['family'] or '?'}/{facts['model_number'] or '?'}",
            "affinity_cpus": usable_cpus(), "avx2": "avx2" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "avx_vnni": "avx_vnni" in flags, "amx_int8": "amx_int8" in flags}


def random_pool(ancestry: str, depth: int):
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.instances import plan_instances
    from lgp_edge.pool.pool import LearngenePool
    from lgp_edge.specs import PoolSpec

    torch.manual_seed(0)
    _, a = create_ancestry(ancestry)
    return LearngenePool(PoolSpec(a, depth, plan_instances(a, depth, ("ti", "b")))).eval()


def export_pair(model: torch.nn.Module, shape: tuple[int, ...], calib: np.ndarray, d: Path,
                dynamic: bool = False) -> dict[tuple[str, str], object]:
    """fp32 ONNX, int8 QDQ ONNX, fp32 IR and NNCF int8 IR of ``model``, written under ``d``."""
    import openvino as ov

    from lgp_edge.export.onnx_export import export_onnx
    from lgp_edge.export.openvino import quantize_int8 as nncf_int8
    from lgp_edge.export.quantize import SCHEMES, quantize_int8
    from lgp_edge.progress import NULL

    d.mkdir(parents=True, exist_ok=True)
    onnx32 = export_onnx(model, torch.zeros(shape), d / "model.onnx", opset=17, ship=True, dynamic_batch=dynamic,
                         metadata={})
    onnx8 = quantize_int8(onnx32, d / "model.int8.onnx", calib, 1, SCHEMES["onnxruntime"])
    ir32 = ov.convert_model(str(onnx32))
    ir8 = nncf_int8(ov.convert_model(str(onnx32)), calib, 1, NULL)
    ov.save_model(ir32, str(d / "fp32.xml"), compress_to_fp16=False)
    ov.save_model(ir8, str(d / "int8.xml"), compress_to_fp16=False)
    return {("onnxruntime", "fp32"): onnx32, ("onnxruntime", "int8"): onnx8,
            ("openvino", "fp32"): d / "fp32.xml", ("openvino", "int8"): d / "int8.xml"}


def runner(path: object, runtime: str):
    from lgp_edge.export.sessions import runner as make

    return make(path, runtime, threads=1)  # OpenVINO: INFERENCE_PRECISION_HINT f32 for fp32 and int8 alike


def speed(args: argparse.Namespace, tmp: Path) -> dict:
    from lgp_edge.models.plan import descendant_flops
    from lgp_edge.profiling.measure import MeasureSettings, time_interleaved

    pool = random_pool(args.ancestry, 6)
    a = pool.spec.ancestry
    shape = (1, a.in_chans, a.img_size, a.img_size)
    calib = np.random.default_rng(0).standard_normal((args.speed_calib, *shape[1:])).astype(np.float32)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    keys = [k for k in args.speed_keys.split(",") if k]
    fns, labels, rows = [], [], []
    for i, key in enumerate(keys):
        spec = pool.find(key)
        t0 = time.time()
        files = export_pair(pool.descendant(spec).eval(), shape, calib, tmp / f"speed{i}")
        print(f"  {key}: exported and quantized in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        for cfg in CONFIGS:
            fn = runner(files[cfg], cfg[0])
            fns.append(lambda fn=fn: fn(x))
            labels.append((key, cfg))
        rows.append({"key": key, "params": pool.record(spec).params, "flops_fvcore": descendant_flops(pool.spec, spec),
                     "int8_bytes": os.path.getsize(files[("onnxruntime", "int8")]),
                     "fp32_bytes": os.path.getsize(files[("onnxruntime", "fp32")])})
    settings = MeasureSettings(warmup=1, iters=args.rounds * args.per_round, threads=1, rounds=args.rounds,
                               repeat_noisy=False)
    timed = time_interleaved(fns, settings)
    for row in rows:
        t = {f"{rt}_{p}": timed[labels.index((row["key"], (rt, p)))] for rt, p in CONFIGS}
        row["ms"] = {k: {"median": v.median_ms, "p90": v.p90_ms, "min": v.min_ms, "cv": v.cv, "n": v.n}
                     for k, v in t.items()}
        row["speedup_int8"] = {rt: t[f"{rt}_fp32"].median_ms / t[f"{rt}_int8"].median_ms
                               for rt in ("onnxruntime", "openvino")}
    geo = {rt: statistics.geometric_mean(r["speedup_int8"][rt] for r in rows) for rt in ("onnxruntime", "openvino")}
    return {"ancestry": a.name, "img_size": a.img_size, "weights": "random (latency does not depend on them)",
            "calibration": f"{args.speed_calib} Gaussian-noise images", "settings": settings.__dict__,
            "descendants": rows, "speedup_int8_geomean": geo}


def eval_images(pool_dir: Path, data: str | None, n: int, n_cal: int) -> tuple:
    from lgp_edge.export.images import default_data, load_images
    from lgp_edge.pool.pool import load_pool

    pool, mf = load_pool(pool_dir)
    name = default_data(mf.data, data)
    im = load_images(name, mf.preprocess, mf.spec.ancestry.num_classes, n, n_cal, mf.data)
    return pool, mf, im


def accuracy(args: argparse.Namespace, tmp: Path) -> dict:
    from lgp_edge.export.validate import reference_logits, run_static, top1
    from lgp_edge.pool.pool import demo_pool_dir

    pool_dir = Path(args.pool) if args.pool else demo_pool_dir()
    pool, mf, im = eval_images(pool_dir, args.data, args.images, args.calib_images)
    keys = [r.key for r in mf.descendants] or [s.key for s in pool.descendants()]
    keys = keys[:args.accuracy_models] if args.accuracy_models else keys
    a = pool.spec.ancestry
    rows = []
    for i, key in enumerate(keys):
        model = pool.descendant(key).eval()
        files = export_pair(model, (1, a.in_chans, a.img_size, a.img_size), im.calibration, tmp / f"acc{i}",
                            dynamic=True)
        ref = reference_logits(model, im.images)
        row = {"key": key, "torch_fp32_top1": top1(ref, im.labels)}
        for rt in ("onnxruntime", "openvino"):
            out = run_static(runner(files[(rt, "int8")], rt), im.images, 100)
            row[f"{rt}_int8_top1"] = top1(out, im.labels)
            row[f"{rt}_int8_change"] = round(row[f"{rt}_int8_top1"] - row["torch_fp32_top1"], 4)
            row[f"{rt}_int8_agreement"] = float((out.argmax(1) == ref.argmax(1)).mean())
        rows.append(row)
        print(f"  {key}: torch {row['torch_fp32_top1']:.2f}  ORT int8 {row['onnxruntime_int8_change']:+.2f}  "
              f"OpenVINO int8 {row['openvino_int8_change']:+.2f}", file=sys.stderr, flush=True)
    summary = {rt: {"mean_change": statistics.mean(r[f"{rt}_int8_change"] for r in rows),
                    "worst_change": min(r[f"{rt}_int8_change"] for r in rows),
                    "max_abs_change": max(abs(r[f"{rt}_int8_change"]) for r in rows),
                    "min_agreement": min(r[f"{rt}_int8_agreement"] for r in rows)}
               for rt in ("onnxruntime", "openvino")}
    return {"pool": repo_path(pool_dir), "pool_id": mf.spec.pool_id, "weights_sha256": pool_weights_sha256(pool_dir),
            "data": im.data, "images": len(im.images),
            "calibration_images": len(im.calibration), "calibration": "training split, as lgp-edge export",
            "descendants": rows, "summary": summary}


def goals(res: dict) -> dict:
    sp, ac = res["speed"]["speedup_int8_geomean"], res["accuracy"]["summary"]
    return {rt: {"speedup_geomean": sp[rt], "speedup_goal": GOALS["speedup"], "speedup_met": sp[rt] >= GOALS["speedup"],
                 "max_abs_top1_change": ac[rt]["max_abs_change"], "top1_goal": GOALS["top1_change_points"],
                 "top1_met": ac[rt]["max_abs_change"] <= GOALS["top1_change_points"]}
            for rt in ("onnxruntime", "openvino")}


def kept_part(out: Path, part: str, quick: bool) -> dict | str:
    """The ``part`` of an earlier full run in ``out``, with the run that measured it; or what is wrong."""
    try:
        earlier = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        return f"--part keeps the other part from --out, but '{out}' is not a readable results file ({exc})"
    if not isinstance(earlier, dict) or not isinstance(earlier.get(part), dict):
        return f"'{out}' has no {part} part to keep: run both parts (no --part) first"
    if earlier.get("quick") and not quick:
        return f"'{out}' is a --quick smoke run: its {part} part is not worth keeping; run both parts"
    # a file from before parts recorded their run: both parts were measured by the run its top level describes
    run = earlier[part].get("run") or {k: earlier[k] for k in RUN_KEYS if k in earlier}
    return {**earlier[part], "run": run}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", default=None, help="pool for the accuracy part (default: the bundled demo pool)")
    p.add_argument("--data", default=None, help="evaluation data (default: the pool's own)")
    p.add_argument("--images", type=int, default=10_000, help="test images per descendant (default 10000)")
    p.add_argument("--calib-images", type=int, default=300, help="int8 calibration images (training split)")
    p.add_argument("--accuracy-models", type=int, default=0, help="first N descendants only (0: all)")
    p.add_argument("--ancestry", default="deit_base_patch16_224", help="ancestry of the speed part's random pool")
    p.add_argument("--speed-keys", default=",".join(SPEED_KEYS), help="descendants timed (comma list)")
    p.add_argument("--speed-calib", type=int, default=16, help="noise images calibrating the speed models")
    p.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds")
    p.add_argument("--per-round", type=int, default=3, help="timed runs per model and round")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: first speed key, 2 rounds, 2 descendants, 200 images")
    p.add_argument("--part", choices=PARTS, default="all",
                   help="run one part and keep the other from the existing --out file (default: both)")
    p.add_argument("--out", default=None,
                   help="results file (default benchmarks/results/int8.json; with --quick int8_quick.json)")
    args = p.parse_args(argv)
    check_counts(p, ("--images", args.images, 1), ("--calib-images", args.calib_images, 1),  # -1: 9,999 images
                 ("--accuracy-models", args.accuracy_models, 0), ("--speed-calib", args.speed_calib, 1),
                 ("--rounds", args.rounds, 1), ("--per-round", args.per_round, 1))
    args.out = str(results_path(__file__, args.out, args.quick))
    check_results_path(Path(args.out), __file__)  # before the run, not after it
    if args.part != "all":
        args.kept = kept_part(Path(args.out), "accuracy" if args.part == "speed" else "speed", args.quick)
        if isinstance(args.kept, str):
            p.error(args.kept)
    if args.quick:
        args.speed_keys, args.rounds, args.per_round = args.speed_keys.split(",")[0], 2, 2
        args.accuracy_models, args.images = args.accuracy_models or 2, min(args.images, 200)
    return args


def main(argv: list[str] | None = None) -> int:
    import nncf
    import onnxruntime
    import openvino

    args = parse(argv)
    torch.set_num_threads(1)
    t0, load0 = time.time(), os.getloadavg()
    res: dict = {"benchmark": "benchmarks/int8.py", **provenance(argv),
                 "quick": args.quick, "machine": {**cpu_facts(), "threads": 1, "platform": platform.platform()},
                 "versions": {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__,
                              "nncf": nncf.__version__, "torch": torch.__version__},
                 "goals": GOALS}
    run = {k: res[k] for k in RUN_KEYS if k in res}  # this run; a kept part keeps the run that measured it
    with tempfile.TemporaryDirectory(prefix="lgp-edge-int8-") as tmp:
        for part, fn, what in (("speed", speed, "random-weight DeiT-Base-scale descendants"),
                               ("accuracy", accuracy, "demo pool")):
            if args.part not in ("all", part):
                res[part] = args.kept
                kept = args.kept["run"].get("date") or args.kept["run"].get("when")
                print(f"{part}: kept from {args.out} ({kept})", file=sys.stderr, flush=True)
                continue
            print(f"{part} ({what}):", file=sys.stderr, flush=True)
            t = time.time()
            res[part] = {**fn(args, Path(tmp)), "run": run}
            res[part]["wall_s"] = time.time() - t
    res["verdict"] = goals(res)
    res["wall_s"], res["cpu_s"], res["machine"]["load_average_start"] = time.time() - t0, time.process_time(), load0
    res["machine"]["load_average_end"] = os.getloadavg()
    out = write_results(Path(args.out), res)
    print(f"wrote {out} ({res['wall_s']:.0f} s)", file=sys.stderr)
    for rt, v in res["verdict"].items():
        print(f"  {rt}: int8 speed-up {v['speedup_geomean']:.2f}x (goal {v['speedup_goal']}x), worst |top-1 change| "
              f"{v['max_abs_top1_change']:.2f} points (goal {v['top1_goal']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
