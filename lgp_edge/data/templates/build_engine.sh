#!/bin/sh
# Build the TensorRT engine for descendant @{key} on the device (@{target}: @{runtime}).
# Engines are tied to one GPU and TensorRT version, so build here, on the board, once:
#   sh build_engine.sh            -> model.plan
# @{precision}@{pinned}; input @{input_name} @{dims}@{kind}.
# TRTEXEC overrides the trtexec path; PYTHON the interpreter for the fallback.
set -eu
usage() {
    echo "usage: sh build_engine.sh                  build model.plan" >&2
    echo "       sh build_engine.sh --time [FILE]    build it, then time it into FILE (default timing.json)" >&2
    exit 2
}
case "$#:${1:-}" in 0:) ;; 1:--time|2:--time) ;; *) usage ;; esac  # nothing else is built on
out=${2:-timing.json}  # --time FILE: relative to where the script is run, not to this folder
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$(dirname "$0")"
trtexec=${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}
[ -x "$trtexec" ] || trtexec=$(command -v trtexec || true)
# TensorRT 8.2's trtexec builds in a 16 MiB workspace by default, build_engine.py (and later trtexec, which size it
# to the device's memory) in 1 GiB or more: the same 1 GiB here as in bench.sh, which times this engine
ws=""
if [ -n "$trtexec" ] && ! "$trtexec" --help 2>&1 | grep -q -- '--memPoolSize' \
        && "$trtexec" --help 2>&1 | grep -q -- '--workspace'; then
    ws="--workspace=1024"
fi
@{pin_check}if @{trt_test}; then
@{spec_line}    # shellcheck disable=SC2086  # $ws is one word or empty on purpose
    "$trtexec" --onnx=@{onnx_name} --saveEngine=model.plan@{trt_flags}@{shapes} $ws
else
    # @{fallback_why}
    "${PYTHON:-python3}" build_engine.py --onnx @{onnx_name} --engine model.plan --precision @{precision} \
        --fp32-layers fp32_layers.txt@{py_shapes}
fi
if [ "${1:-}" != "--time" ]; then
    echo "built model.plan; time it with: sh build_engine.sh --time timing.json"
else
    # Time the engine just built (the deployed one) and write the store's import format:
    #   sh build_engine.sh --time timing.json   then, on the host: lgp-edge profile --import timing.json
    if [ -z "$trtexec" ]; then echo "build_engine.sh: --time needs trtexec (set TRTEXEC)" >&2; exit 3; fi
    "$trtexec" --loadEngine=model.plan@{load_shapes} --iterations="${ITERATIONS:-200}" --warmUp=@{warmup_ms} --duration=0 \
        --avgRuns=1 --useSpinWait --exportTimes=timing-raw.json > timing.log 2>&1 || { cat timing.log >&2; exit 3; }
    "${PYTHON:-python3}" - "$out" '@{meta}' <<'PY'

import json, math, re, sys
from datetime import datetime, timezone
out, meta = sys.argv[1], json.loads(sys.argv[2])
WARMUP_MS = @{warmup_ms}
raw = json.load(open("timing-raw.json"))
# trtexec before TensorRT 8.6 exports the warm-up runs too: as its summary does, a run is timed when its compute
# starts after the --warmUp milliseconds (later versions export the timed runs only)
timed = [r for r in raw if float(r.get("startComputeMs", WARMUP_MS)) >= WARMUP_MS]
ts = sorted(float(r.get("latencyMs", r.get("computeMs"))) for r in timed)
if not ts:
    sys.exit("build_engine.sh --time: trtexec exported no timings (see timing.log)")
def pct(q):
    pos = (len(ts) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ts) - 1)
    return ts[lo] + (ts[hi] - ts[lo]) * (pos - lo)
n = len(ts)
mean = sum(ts) / n
std = math.sqrt(sum((t - mean) ** 2 for t in ts) / (n - 1)) if n > 1 else 0.0
log = open("timing.log", errors="replace").read()
m = re.search(r"TensorRT version: ([0-9.]+)", log) or re.search(r"\[TensorRT v(\d+)\]", log)
rec = dict(meta, runtime="tensorrt", median_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99), mean_ms=mean, std_ms=std,
           cv=std / mean if mean > 0 else 0.0, n=n, warmup=len(raw) - len(timed), threads=1, source="measured",
           when=datetime.now(timezone.utc).isoformat(timespec="seconds"), noisy=std / mean > 0.10 if mean > 0 else False,
           tool_versions={"tensorrt": m.group(1) if m else "unknown",
                          "note_engine": "model.plan as built by build_engine.sh (the deployed engine)",
                          "note_timing": "trtexec --loadEngine --exportTimes, per-inference latencyMs"})
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump({"format": "lgp-edge-latency", "version": 1, "records": [rec]}, f, indent=1)
    f.write("\n")
import os
import shlex
os.replace(tmp, out)
print("wrote %s: median %.4f ms, p90 %.4f ms over %d runs; load it with: lgp-edge profile --import %s"
      % (out, rec["median_ms"], rec["p90_ms"], n, shlex.quote(out)))
PY
fi
