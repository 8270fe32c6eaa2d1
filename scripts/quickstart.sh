#!/usr/bin/env bash
# Fresh machine -> the flagship job: install, then pick the best descendant of the bundled demo pool for a
# Jetson Nano and export it as TensorRT-ready ONNX (opset 13) with build_engine.sh, validated on real images.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
lgp-edge pool info
lgp-edge export --target jetson-nano --out out/jetson-nano --force
