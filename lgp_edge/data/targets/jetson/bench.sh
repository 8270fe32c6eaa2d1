#!/bin/sh
# Device-side TensorRT benchmark for Jetson boards, copied over SSH by `lgp-edge profile`.
# Usage: bench.sh MODEL.onnx PRECISION ITERATIONS WARMUP_MS [TRTEXEC]
# Builds an engine from the ONNX file with trtexec and times it; prints trtexec's log, whose
# "=== Performance summary ===" the host parses. TRTEXEC (argument or environment) overrides the
# trtexec path (default: JetPack's /usr/src/tensorrt/bin/trtexec, else trtexec on PATH).
set -eu
model=$1
precision=$2
iters=$3
warm_ms=$4
trtexec=${5:-${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}}
if [ ! -x "$trtexec" ]; then
    trtexec=$(command -v trtexec || true)
fi
if [ -z "$trtexec" ]; then
    echo "bench.sh: trtexec not found (install JetPack's TensorRT or set TRTEXEC)" >&2
    exit 3
fi
case "$precision" in
    fp32) prec_flag="" ;;
    fp16) prec_flag="--fp16" ;;
    int8) prec_flag="--int8" ;;
    *) echo "bench.sh: unknown precision '$precision'" >&2; exit 2 ;;
esac
# TensorRT >= 8.6 reports percentiles 90,95,99 by default; older trtexec reports one percentile
# (99 by default), so ask it for 90, the one latency budgets use.
pct_flag=""
if ! "$trtexec" --help 2>&1 | grep -q 'P1,P2'; then
    pct_flag="--percentile=90"
fi
dir=$(dirname "$model")
# shellcheck disable=SC2086  # the flags are single words or empty on purpose
"$trtexec" --onnx="$model" $prec_flag $pct_flag --iterations="$iters" --warmUp="$warm_ms" --duration=0 \
    --avgRuns=1 --useSpinWait --saveEngine="$dir/model.plan" 2>&1
