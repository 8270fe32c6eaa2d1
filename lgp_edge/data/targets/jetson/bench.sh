#!/bin/sh
# Device-side TensorRT benchmark for Jetson boards, copied over SSH by `lgp-edge profile` and written into
# TensorRT exports beside build_engine.sh.
# Usage: bench.sh MODEL.onnx PRECISION ITERATIONS WARMUP_MS [TRTEXEC]
# Builds the engine the way build_engine.sh deploys it and times it with trtexec; prints trtexec's log,
# whose "=== Performance summary ===" the host parses. For fp16 and int8 (--int8 --fp16: int8 from the Q/DQ
# scales of an explicitly quantized ONNX file, no calibration cache), the LayerNorm and softmax nodes listed in
# MODEL.fp32_layers.txt (else fp32_layers.txt beside the model) are kept in fp32, exactly as in
# build_engine.sh: with trtexec's --layerPrecisions where it has them (TensorRT >= 8.4), else built by
# build_engine.py (TensorRT Python API) beside the model and then timed with trtexec --loadEngine.
# TRTEXEC (argument or environment) overrides the trtexec path (default: JetPack's
# /usr/src/tensorrt/bin/trtexec, else trtexec on PATH); PYTHON the interpreter for build_engine.py.
# SHAPES=NAME:MIN:OPT:MAX (a dynamic-batch model, e.g. input:1x1x28x28:1x1x28x28:8x1x28x28, as its
# EMBEDDING.md writes it) builds the engine with that optimization profile, as build_engine.sh does, and
# times it at OPT; without it a dynamic-batch model cannot be built by build_engine.py.
set -eu
if [ $# -lt 4 ]; then
    echo "usage: bench.sh MODEL.onnx PRECISION ITERATIONS WARMUP_MS [TRTEXEC]" >&2
    exit 2
fi
model=$1
precision=$2
iters=$3
warm_ms=$4
trtexec=${5:-${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}}
build_shapes=""
run_shapes=""
py_shapes=""
if [ -n "${SHAPES:-}" ]; then
    case "$SHAPES" in
        *[!A-Za-z0-9_.:x-]*|*::*|:*|*:) echo "bench.sh: SHAPES must be NAME:MIN:OPT:MAX, got '$SHAPES'" >&2; exit 2 ;;
    esac
    old_ifs=$IFS
    IFS=:
    # shellcheck disable=SC2086  # split on ':' on purpose (checked above: no glob characters)
    set -- $SHAPES
    IFS=$old_ifs
    if [ $# -ne 4 ]; then
        echo "bench.sh: SHAPES must be NAME:MIN:OPT:MAX, got '$SHAPES'" >&2
        exit 2
    fi
    build_shapes="--minShapes=$1:$2 --optShapes=$1:$3 --maxShapes=$1:$4"
    run_shapes="--shapes=$1:$3"
    py_shapes="--shapes $SHAPES"
fi
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
    int8) prec_flag="--int8 --fp16" ;;
    *) echo "bench.sh: unknown precision '$precision'" >&2; exit 2 ;;
esac
# TensorRT >= 8.6 reports percentiles 90,95,99 by default; older trtexec reports one percentile
# (99 by default), so ask it for 90, the one latency budgets use.
pct_flag=""
if ! "$trtexec" --help 2>&1 | grep -q 'P1,P2'; then
    pct_flag="--percentile=90"
fi
dir=$(dirname "$model")
base=${model%.onnx}
plan="$base.bench.plan"
layers=""
for f in "$base.fp32_layers.txt" "$dir/fp32_layers.txt"; do
    if [ -f "$f" ]; then layers=$f; break; fi
done
timing="--iterations=$iters --warmUp=$warm_ms --duration=0 --avgRuns=1 --useSpinWait"
if [ "$precision" != fp32 ] && [ -n "$layers" ]; then
    spec=$(sed -e '/^#/d' -e '/^$/d' -e 's/$/:fp32/' "$layers" | paste -sd, -)
    if "$trtexec" --help 2>&1 | grep -q -- '--layerPrecisions'; then
        echo "bench.sh: $precision with the layers of $layers pinned to fp32 (as build_engine.sh)"
        # shellcheck disable=SC2086  # the flags are single words or empty on purpose
        "$trtexec" --onnx="$model" $prec_flag --precisionConstraints=obey --layerPrecisions="$spec" \
            --layerOutputTypes="$spec" $build_shapes $pct_flag $timing --saveEngine="$plan" 2>&1
        exit 0
    fi
    if [ ! -f "$dir/build_engine.py" ]; then
        echo "bench.sh: this trtexec cannot pin layer precisions and $dir/build_engine.py is missing" >&2
        exit 3
    fi
    echo "bench.sh: $precision with the layers of $layers pinned to fp32, built by build_engine.py (as build_engine.sh)"
    # shellcheck disable=SC2086
    "${PYTHON:-python3}" "$dir/build_engine.py" --onnx "$model" --engine "$plan" --precision "$precision" \
        --fp32-layers "$layers" $py_shapes 2>&1
    # shellcheck disable=SC2086
    "$trtexec" --loadEngine="$plan" $run_shapes $pct_flag $timing 2>&1
    exit 0
fi
# TensorRT 8.2's trtexec builds with a 16 MiB workspace by default; build_engine.sh (its trtexec and
# build_engine.py) gives 1 GiB, and so does this; later trtexec versions (--memPoolSize) size it to the device.
ws_flag=""
if ! "$trtexec" --help 2>&1 | grep -q -- '--memPoolSize' && "$trtexec" --help 2>&1 | grep -q -- '--workspace'; then
    ws_flag="--workspace=1024"
fi
# shellcheck disable=SC2086
"$trtexec" --onnx="$model" $prec_flag $build_shapes $ws_flag $pct_flag $timing --saveEngine="$plan" 2>&1
