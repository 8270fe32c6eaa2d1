"""The README's CLI walkthrough, run as a user runs it, on a fresh store: what each command chose and measured.

    python benchmarks/cli_walkthrough.py [--pool POOL] [--tight-budget-ms 1.6] [--val-images N] [--iters N]
        [--profile-descendant KEY]          # the demo pool: 74 s on 2 AMD EPYC cores

Each step is a new process (``python -m lgp_edge``, this checkout's code) in a new temporary directory with a new
measurement store (``$LGP_EDGE_STORE``, so the commands are the README's, without ``--store``) and an empty
exported-graph cache (``$LGP_EDGE_CACHE``: export reads back the graph profile exported, as on a new machine):

1. ``lgp-edge profile --target cpu --runtime onnxruntime --json``: every descendant measured on this CPU;
2. ``lgp-edge profiles list --json``, then ``lgp-edge select --profile NAME --json`` for every built-in profile
   (cpu measured, the other targets predicted);
3. ``lgp-edge export --target cpu --out out/cpu --json``: ONNX + OpenVINO IR, validated against torch;
4. ``lgp-edge export --target jetson-nano --out out/jetson-nano --json``: the opset-13 ONNX for TensorRT 8.2,
   checked in fp32 and, as fp16 with LayerNorm/softmax kept fp32, in fp16;
5. ``lgp-edge select --target jetson-nano --budget-ms 1.6 --json``: a tighter budget.

Recorded per step: the command, its wall seconds and exit code; from the JSON the CLI prints (and the exports'
manifest.json): each profile's choice, its p90 and where it came from, thread counts, noisy flags, every
artifact's validation. ``--pool``, ``--val-images``, ``--iters`` and ``--profile-descendant`` are for quick runs
(the tests); they are added to the commands, which are recorded as run. The bundled demo pool without them is
the README's run.

Writes benchmarks/results/cli_walkthrough.json (README's walkthrough paragraph is rendered from it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_pool import (  # noqa: E402  (the benchmarks' run record)
    check_counts,
    check_results_path,
    pool_weights_sha256,
    repo_path,
    run_provenance,
    write_results,
)

provenance = functools.partial(run_provenance, "cli_walkthrough.py")  # this script's run record

# the fp32 check of the Jetson's ONNX file, which TensorRT's exporter reports only in the fp16 check's note
FP32_IN_NOTE = re.compile(r"the fp32 ONNX file itself: max\|diff\| ([0-9.eE+-]+), (passed|FAILED)")


def cli_env(store: Path) -> dict[str, str]:
    """The environment of every step: this checkout's lgp_edge first on the path, the fresh store, and an empty
    exported-graph cache beside it (a new machine's: export reads back what profile exported, as there)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *([path] if path else [])]),
            "LGP_EDGE_STORE": str(store), "LGP_EDGE_CACHE": str(store.parent / "cache")}


def run_step(args: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> dict:
    """``lgp-edge ARGS`` in a new process: its command (as a user types it), wall seconds, exit code and the
    JSON it printed."""
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "lgp_edge", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, check=False, timeout=1800)
    wall = time.perf_counter() - t0
    command = "lgp-edge " + shlex.join(args)
    if run.returncode == 2 and 2 not in ok:  # lgp-edge refused its input (e.g. a --profile-descendant it lacks)
        from lgp_edge.errors import UsageError

        last = (run.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UsageError(f"{command} refused its input: {last}")
    if run.returncode not in ok:
        raise RuntimeError(f"{command} exited {run.returncode}: {run.stderr.strip()[-2000:]}")
    return {"command": command, "wall_s": round(wall, 2), "exit_code": run.returncode,
            "json": json.loads(run.stdout) if run.stdout.strip() else None}


def chosen_row(c: dict) -> dict:
    """The fields of a ``select --json`` descendant the README quotes."""
    return {k: c.get(k) for k in ("key", "top1", "latency_ms", "median_ms", "latency_source", "runtime", "threads",
                                  "noisy", "memory_mb", "latency_note")}


def artifact_row(a: dict) -> dict:
    v = a.get("validation") or {}
    row = {"path": a["path"], "format": a["format"], "precision": a.get("precision"),
           "max_abs_diff": v.get("max_abs_diff"), "atol": v.get("atol"), "top1_agreement": v.get("top1_agreement"),
           "top1_torch": v.get("top1_ref"), "top1_artifact": v.get("top1_artifact"), "images": v.get("images"),
           "data": v.get("data"), "passed": v.get("passed"), "kind": v.get("kind"), "note": v.get("note")}
    m = FP32_IN_NOTE.search(v.get("note") or "")
    if m:
        row["fp32_file"] = {"max_abs_diff": float(m.group(1)), "passed": m.group(2) == "passed",
                            "from": "the validation note (the fp16 check's record names the fp32 file's max|diff|)"}
    return row


def onnx_opset(path: Path) -> int | None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


def export_summary(step: dict, out: Path) -> dict:
    mf = json.loads((out / "manifest.json").read_text())
    d, val = mf["descendant"], mf["validation"]
    arts = [artifact_row(a) for a in mf["artifacts"]]
    for row in arts:
        if row["path"].endswith(".onnx") and (out / row["path"]).is_file():
            row["opset"] = onnx_opset(out / row["path"])
    return {"command": step["command"], "wall_s": step["wall_s"], "status": mf["status"],
            "profile": mf["profile"]["name"], "precision": mf["profile"]["precision"],
            "formats": mf["profile"]["formats"], "descendant": d["key"], "top1": d["top1"],
            "expected_latency_ms": d.get("expected_latency_ms"), "latency_source": d.get("latency_source"),
            "validation": {"data": val["data"], "synthetic": val["synthetic"], "images": val["images"],
                           "torch_top1": val.get("torch_top1"), "numeric": val.get("numeric"),
                           "structural": val.get("structural"), "passed": val["passed"]},
            "artifacts": arts, "stdout_is_manifest": step["json"] == mf}


def walkthrough(args: argparse.Namespace, tmp: Path) -> dict:
    env = cli_env(tmp / "store" / "measurements.sqlite")
    (tmp / "store").mkdir()
    pool = ["--pool", str(args.pool)] if args.pool else []
    val = ["--val-images", str(args.val_images)] if args.val_images else []
    iters = ["--iters", str(args.iters)] if args.iters else []
    iters += [a for k in args.profile_descendant for a in ("--descendant", k)]

    prof = run_step(["profile", "--target", "cpu", "--runtime", "onnxruntime", *pool, *iters, "--json"], tmp, env)
    recs = prof["json"]["records"]
    profile = {"command": prof["command"], "wall_s": prof["wall_s"], "mode": prof["json"]["mode"],
               "rows_written": prof["json"]["rows_written"],
               "threads": sorted({r["threads"] for r in recs}), "noisy": [r["descendant_key"] for r in recs
                                                                          if r.get("noisy")],
               "records": [{"key": r["descendant_key"], "median_ms": r["median_ms"], "p90_ms": r["p90_ms"],
                            "cv": r.get("cv"), "n": r["n"], "threads": r["threads"], "noisy": r.get("noisy")}
                           for r in recs]}

    listing = run_step(["profiles", "list", "--json"], tmp, env)
    selections = []
    for p in listing["json"]["profiles"]:
        s = run_step(["select", "--profile", p["name"], *pool, "--json"], tmp, env, ok=(0, 2))
        j = s["json"] or {}
        selections.append({"profile": p["name"], "target": p["target"], "precision": p["precision"],
                           "latency_budget_ms": p["latency_budget_ms"], "memory_budget_mb": p["memory_budget_mb"],
                           "command": s["command"], "wall_s": s["wall_s"], "exit_code": s["exit_code"],
                           "candidates": j.get("candidates"), "fitting": j.get("fitting"),
                           "threads": j.get("threads"), "latency_sources": j.get("latency_sources"),
                           "noisy": j.get("noisy"), "reason": j.get("reason"),
                           "chosen": chosen_row(j["chosen"]) if j.get("chosen") else None})

    exports = {}
    for target in ("cpu", "jetson-nano"):
        out = f"out/{target}"
        e = run_step(["export", "--target", target, *pool, "--out", out, *val, "--json"], tmp, env)
        exports[target] = export_summary(e, tmp / out)

    budget = args.tight_budget_ms
    t = run_step(["select", "--target", "jetson-nano", "--budget-ms", f"{budget:g}", *pool, "--json"], tmp, env,
                 ok=(0, 2))
    j = t["json"] or {}
    front = j.get("front") or []
    best = max(front, key=lambda c: (c["top1"], -c["latency_ms"])) if front else None
    tight = {"command": t["command"], "wall_s": t["wall_s"], "exit_code": t["exit_code"], "budget_ms": budget,
             "candidates": j.get("candidates"), "fitting": j.get("fitting"), "reason": j.get("reason"),
             "problem": j.get("problem"), "chosen": chosen_row(j["chosen"]) if j.get("chosen") else None,
             "most_accurate": chosen_row(best) if best else None}
    return {"profile": profile, "selections": selections, "exports": exports, "tight_budget": tight,
            "steps_wall_s": round(prof["wall_s"] + listing["wall_s"] + sum(s["wall_s"] for s in selections)
                                  + sum(e["wall_s"] for e in exports.values()) + t["wall_s"], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=None, help="pool directory (default: the bundled demo pool)")
    ap.add_argument("--tight-budget-ms", type=float, default=1.6,
                    help="the last step's jetson-nano p90 budget (default 1.6, the README's)")
    ap.add_argument("--val-images", type=int, default=None, help="passed to export (default: export's own, 1000)")
    ap.add_argument("--iters", type=int, default=None, help="passed to profile (default: profile's own, 50)")
    ap.add_argument("--profile-descendant", action="append", default=[], metavar="KEY",
                    help="passed to profile as --descendant (repeatable; default: every descendant, the README's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cli_walkthrough.json"),
                    help="results file (default benchmarks/results/cli_walkthrough.json)")
    args = ap.parse_args(argv)
    check_counts(ap, ("--iters", args.iters, 1), ("--val-images", args.val_images, 1))  # 0: recorded, not run
    if not args.tight_budget_ms > 0:
        ap.error(f"--tight-budget-ms must be > 0, got {args.tight_budget_ms}")
    if args.out:
        check_results_path(Path(args.out), __file__)  # before the run, not after it
    import onnxruntime
    import openvino
    import torch

    from lgp_edge.pool.manifest import demo_pool_dir, read_manifest
    from lgp_edge.profiling.host import usable_cpus

    header = provenance(argv)
    pool_dir = Path(args.pool) if args.pool else demo_pool_dir()
    pm = read_manifest(pool_dir)
    t_start, load_start = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lgp-cli-walk-") as tmp_name:
        res = walkthrough(args, Path(tmp_name))
    result = {
        "benchmark": "benchmarks/cli_walkthrough.py", **header,
        "what": "the README's walkthrough commands, each a new 'python -m lgp_edge' process, in a new directory "
                "with a new measurement store ($LGP_EDGE_STORE) and an empty exported-graph cache ($LGP_EDGE_CACHE): "
                "profile on cpu, select for every built-in profile, "
                "export for cpu and jetson-nano, select for jetson-nano at a tighter budget",
        "pool": {"path": repo_path(pool_dir), "bundled_demo_pool": args.pool is None, "pool_id": pm.spec.pool_id,
                 "weights_sha256": pool_weights_sha256(pool_dir), "descendants": len(pm.descendants)},
        **res,
        "machine": {"logical_cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
                    "load_average_start": load_start, "load_average_end": os.getloadavg(),
                    "note": "a shared VM: other processes may have been running; see load averages"},
        "wall_s_total": round(time.time() - t_start, 1),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "openvino": openvino.__version__, "python": platform.python_version()},
    }
    write_results(Path(args.out), result)
    print(f"wrote {args.out} in {result['wall_s_total']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from make_demo_pool import run_main

    run_main(main, __file__)
