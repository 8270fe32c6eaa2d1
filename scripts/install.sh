#!/usr/bin/env bash
# Installs everything lgp-edge needs on a fresh Debian/Ubuntu machine: the Fashion-MNIST package, an SSH
# server (for the loopback remote-profiling test), Chromium (headless, for the report.html test),
# zsh and fish (their completion scripts are tested in them), PyTorch + torchvision, and lgp-edge with its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  need=""
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need="$need dataset-fashion-mnist"
  [ -x /usr/sbin/sshd ] || need="$need openssh-server openssh-client"
  command -v chromium >/dev/null 2>&1 || need="$need chromium"   # report.html is tested in headless Chromium
  command -v zsh >/dev/null 2>&1 || need="$need zsh"             # the zsh and fish completion scripts are
  command -v fish >/dev/null 2>&1 || need="$need fish"           # tested in the shells themselves
  if [ -n "$need" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
  fi
fi

PY=${PYTHON:-python3}
# torch and torchvision as a matching pair (timm needs torchvision); numpy < 2.4 for coremltools.
$PY -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
$PY -m pip install -q -e ".[export,coreml,dev]"
