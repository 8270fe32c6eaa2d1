"""Helpers shared by several test files (imported by them and by conftest.py): the tiny pool builder,
reading an export (its manifest, torch and ONNX Runtime logits of the same inputs), and recorded outputs of
the board tools (trtexec, onnxruntime_perf_test) that the parsers and the remote profiling tests read."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.models.instances import plan_instances
from lgp_edge.pool.pool import LearngenePool, PoolManifest, load_pool, save_pool
from lgp_edge.specs import PoolSpec, PreprocessSpec

TINY = "lgp_test_tiny"
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(script: str, module: str | None = None, *, register: bool = False):
    """``benchmarks/SCRIPT.py`` as a module named ``module`` (default: the script's name); ``register``: also in
    ``sys.modules`` under that name (what a worker process unpickles a benchmark's function from)."""
    import importlib.util
    import sys

    name = module or script
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def manifest(out: Path) -> dict:
    """An export directory's manifest.json."""
    return json.loads((out / "manifest.json").read_text())


def torch_logits(pool_dir: Path, key: str, x: np.ndarray) -> np.ndarray:
    """Logits of descendant ``key`` of the pool in torch (eval mode)."""
    pool, _ = load_pool(pool_dir)
    with torch.no_grad():
        return pool.descendant(key).eval()(torch.from_numpy(x)).numpy()


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an ONNX / .ort file in ONNX Runtime, one image per run (the exports' batch is 1)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def tight_profile_dir(tmp_path: Path) -> Path:
    """A profiles directory holding ``tight``: a cpu profile whose budgets no descendant can meet."""
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "tight.toml").write_text('name = "tight"\ntarget = "cpu"\nlatency_budget_ms = 0.001\nmemory_budget_mb = 1\n'
                                  'precision = "fp32"\nformats = ["onnx"]\ndescription = "too tight"\n')
    return d


def fresh_inputs(n: int, seed: int) -> np.ndarray:
    """``n`` random images of the tiny ancestry's shape (1 x 16 x 16)."""
    return np.random.default_rng(seed).standard_normal((n, 1, 16, 16)).astype(np.float32)


def make_tiny_pool(out: Path, depth: int = 6, widths: tuple[str, ...] = ("ti", "b"), seed: int = 0,
                   with_records: bool = True) -> Path:
    """A random-weight pool of the tiny ancestry, saved to ``out`` (for tests that need any pool)."""
    torch.manual_seed(seed)
    ancestry, aspec = create_ancestry(TINY)
    spec = PoolSpec(aspec, depth, plan_instances(aspec, depth, widths))
    pool = LearngenePool(spec).eval()
    pre = PreprocessSpec(img_size=aspec.img_size, in_chans=aspec.in_chans, mean=(0.286,), std=(0.353,),
                         labels=tuple(f"c{i}" for i in range(aspec.num_classes)))
    records = tuple(pool.record(d, top1=float(10 + i)) for i, d in enumerate(pool.descendants())) \
        if with_records else ()
    manifest = PoolManifest(spec=spec, preprocess=pre, data="synthetic", stitch_init="learned", stage="distilled",
                            descendants=records)
    save_pool(out, pool, manifest, ancestry=ancestry)
    return out


# A TensorRT 8 trtexec summary (one percentile only).
TRT8_LOG = """\
[07/24/2022-22:56:49] [I] === Performance summary ===
[07/24/2022-22:56:49] [I] Throughput: 37538.6 qps
[07/24/2022-22:56:49] [I] Latency: min = 852.214 ms, max = 1882.35 ms, mean = 1671.06 ms, median = 1755.81 ms, percentile(99%) = 1882.35 ms
[07/24/2022-22:56:49] [I] Enqueue Time: min = 0.960327 ms, max = 446.976 ms, mean = 12.8272 ms, median = 1.01074 ms, percentile(99%) = 446.976 ms
[07/24/2022-22:56:49] [I] H2D Latency: min = 16.5605 ms, max = 115.081 ms, mean = 39.1974 ms, median = 17.144 ms, percentile(99%) = 115.081 ms
[07/24/2022-22:56:49] [I] GPU Compute Time: min = 835.549 ms, max = 1768.13 ms, mean = 1631.84 ms, median = 1734.03 ms, percentile(99%) = 1768.13 ms
[07/24/2022-22:56:49] [I] D2H Latency: min = 0.00561523 ms, max = 0.0610352 ms, mean = 0.0146191 ms, median = 0.0117188 ms, percentile(99%) = 0.0610352 ms
[07/24/2022-22:56:49] [I] Total Host Walltime: 17.2401 s
[07/24/2022-22:56:49] [I] Total GPU Compute Time: 128.916 s
[07/24/2022-22:56:49] [W] * GPU compute time is unstable, with coefficient of variance = 14.8214%.
"""  # noqa: E501


# Layout of onnxruntime_perf_test's statistics as printed by onnxruntime/test/perftest/
# performance_runner.cc (PerformanceRunner::Run and PerformanceResult::DumpToFile); numbers are ours.
PERF_TEST_OUT = """\
Session creation time cost: 0.0421 s
First inference time cost: 3 ms
Total inference time cost: 0.2712 s
Total inference requests: 100
Average inference time cost: 2.712 ms
Total inference run time: 0.2731 s
Number of inferences per second: 366.2
Avg CPU usage: 96 %
Peak working set size: 41652224 bytes
Min Latency: 0.002501 s
Max Latency: 0.004120 s
P50 Latency: 0.002650 s
P90 Latency: 0.002950 s
P95 Latency: 0.003100 s
P99 Latency: 0.003900 s
P999 Latency: 0.004120 s
"""


# ------------------------------------------------------------------------------- the CLI as a user runs it
def named_files_missing(out: Path) -> list[str]:
    """The model files (`model.*`, backticked) an export's EMBEDDING.md names that the export does not hold; a
    built engine (`model.plan`) and a compiled Core ML model (`model.mlmodelc`) are made on the device."""
    import re

    text = (out / "EMBEDDING.md").read_text(encoding="utf-8")
    names = set(re.findall(r"`(model\.[A-Za-z0-9_.]+)`", text)) - {"model.plan", "model.mlmodelc"}
    return sorted(n for n in names if not (out / n).exists())


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too): relative path -> kind and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = "link:" + os.readlink(p)
            else:
                out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def error_lines(stderr: str) -> list[str]:
    """stderr without log warnings (``WARNING name: …``), which are not the error."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING ")]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``lgp-edge ARGV`` in this process: (exit code, stderr)."""
    from lgp_edge.cli import main

    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


# runs lgp-edge commands in a fresh interpreter: their exit codes, last stderr lines, and the heavy modules imported
_IMPORT_PROBE = """
import contextlib, io, json, sys
from lgp_edge.cli import main
codes, errors = [], []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            codes.append(main(argv))
        except SystemExit as exc:  # argparse
            codes.append(exc.code)
    errors.append((err.getvalue().strip().splitlines() or [""])[-1])
print(json.dumps({"codes": codes, "errors": errors,
                  "imported": sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)}))
"""


def cli_imports(argvs: list[list[str]], env: dict[str, str] | None = None) -> dict:
    """``lgp-edge ARGV`` for each of ``argvs``, one after the other in one new interpreter: {"codes": exit codes,
    "errors": each command's last stderr line, "imported": which of torch, timm and torchvision got imported}."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    run_env = {**os.environ, **(env or {}), "PYTHONPATH": str(repo)}
    r = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, json.dumps(argvs)], capture_output=True, text=True,
                       env=run_env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def stop_after_first_epoch(monkeypatch: pytest.MonkeyPatch, seconds: float, only: str = "") -> None:
    """Make the first epoch of a training run (of one whose description contains ``only``) take ``seconds`` more,
    save its checkpoint, then stop the process as Ctrl-C would; once stopped, later runs (the resume) go on."""
    import time

    from lgp_edge import train

    real = train._checkpoint
    stopped = []

    def slow_then_stop(loop, epoch, step_in_epoch):
        if not stopped and epoch == 1 and only in loop.description:
            time.sleep(seconds)
            real(loop, epoch, step_in_epoch)
            stopped.append(loop.description)
            raise KeyboardInterrupt
        real(loop, epoch, step_in_epoch)

    monkeypatch.setattr(train, "_checkpoint", slow_then_stop)


def count_host_measurements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The (runtime, threads) of each host calibration measured from now on (each one really measured), with this
    process's in-memory calibrations forgotten, as a fresh process starts."""
    from lgp_edge.profiling import roofline

    calls: list[tuple[str, int]] = []
    real = roofline.measure_host

    def counted(runtime: str, threads: int, gemm_n: int = 512) -> object:
        calls.append((runtime, threads))
        return real(runtime, threads, gemm_n)

    monkeypatch.setattr(roofline, "measure_host", counted)
    monkeypatch.setattr(roofline, "_IN_PROCESS", {})
    return calls


def with_options(argv: list[str], *extra: str) -> list[str]:
    """``argv`` then ``extra``, an option of ``extra`` that takes a value replacing that option in ``argv`` (the
    command line takes a value option once)."""
    given = {extra[i] for i in range(len(extra) - 1) if extra[i].startswith("--") and not extra[i + 1].startswith("--")}
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a in given and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            skip = True
        else:
            out.append(a)
    return [*out, *extra]


def on_terminal(argv: list[str], columns: int, env: dict[str, str] | None = None) -> str:
    """stdout of ``lgp-edge ARGV`` run on a pseudo-terminal ``columns`` wide (exit 0 asserted), as the terminal got
    it (colour codes and all)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    repo = Path(__file__).resolve().parent.parent
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    run_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "lgp_edge", *argv], stdout=follower, stderr=subprocess.DEVNULL,
                            cwd=repo, env=run_env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode("utf-8", "replace")
