#!/usr/bin/env python3
"""Device-side ONNX Runtime benchmark for Linux boards, copied over SSH by ``lgp-edge profile``.

Usage: ort_bench.py MODEL.onnx [--warmup N] [--iters N] [--threads N] [--provider NAME]
Prints one JSON line: {"times_ms": [...], "onnxruntime": version, "providers": [...], "threads": N}.
Needs only Python 3, numpy and onnxruntime on the board (pip install onnxruntime).
"""

import argparse
import json
import platform
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--provider", default="CPUExecutionProvider")
    a = p.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        print(f"ort_bench: {exc}; install numpy and onnxruntime for the board's python (on Raspberry Pi OS: "
              "python3 -m venv ~/lgp && ~/lgp/bin/pip install numpy onnxruntime, then set the target file's "
              "extra.remote_python to that python's absolute path, e.g. /home/pi/lgp/bin/python3)", file=sys.stderr)
        return 3
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.model, so, providers=[a.provider])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(a.warmup):
        sess.run(None, feed)
    times = []
    clock = time.perf_counter
    for _ in range(a.iters):
        t0 = clock()
        sess.run(None, feed)
        times.append((clock() - t0) * 1e3)
    print(json.dumps({"times_ms": times, "onnxruntime": ort.__version__, "providers": sess.get_providers(),
                      "threads": a.threads, "machine": platform.machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
