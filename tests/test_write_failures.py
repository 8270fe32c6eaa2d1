"""Writes the environment refuses (a full disk, the file-size limit, a read-only pool): one line naming the path
and what to do, exit code 2, nothing half-written and the earlier output intact.

The faults are real where they can be made portably: the file-size limit (``RLIMIT_FSIZE`` with SIGXFSZ
ignored, so a write past it fails with EFBIG as a full disk fails with ENOSPC) in a child process, and a
read-only directory (permissions for a user, a read-only bind mount for root). A write that no limit can pick
out alone is made to fail with ENOSPC at that write.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import error_lines, run_cli, snapshot

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LGP_EDGE_STORE": str(tmp_path / "store.sqlite")}


def run_limited(limit: int, argv: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``lgp-edge ARGV`` in a child process whose files may not grow past ``limit`` bytes (EFBIG beyond)."""
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "lgp_edge", "-q", *argv], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limited)


def one_line(stderr: str) -> str:
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("lgp-edge: error: "), stderr
    return lines[0]


def no_leftovers(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]
    assert not left, left


@pytest.fixture
def read_only(tmp_path: Path):
    """``make(folder)``: ``folder`` becomes read-only until the test ends (permissions, or for root a read-only
    bind mount; skipped where neither works)."""
    undo = []

    def make(folder: Path) -> None:
        if os.geteuid() != 0:
            for p in (folder, *folder.rglob("*")):
                if p.is_dir():
                    p.chmod(0o555)
                    undo.append(lambda p=p: p.chmod(0o755))
            return
        bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if bind.returncode != 0:
            pytest.skip("needs a read-only directory: root without mount")
        undo.append(lambda: subprocess.run(["umount", str(folder)], check=True))
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)

    yield make
    for step in reversed(undo):
        step()


def test_an_environment_error_anywhere_is_one_line_and_exit_2_but_a_bug_is_not(capsys, monkeypatch):
    from lgp_edge.commands import pool as pool_cmd

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/x.bin")

    monkeypatch.setattr(pool_cmd, "_info", full)
    rc, err = run_cli(["pool", "info"], capsys)
    assert rc == 2
    line = one_line(err)
    assert "no space left on device" in line and "'/data/out/x.bin'" in line and "free space" in line

    def bug(args):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(pool_cmd, "_info", bug)
    with pytest.raises(OSError):
        run_cli(["pool", "info"], capsys)


def test_an_export_whose_onnx_file_meets_a_full_disk_exits_2_and_writes_nothing(tiny_pool, tmp_path, capsys,
                                                                                  monkeypatch):
    import onnx

    save = onnx.save

    def full(proto, f, *args, **kwargs):
        if str(f).endswith("model.onnx"):  # the disk fills up half way through the file
            Path(f).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(proto, f, *args, **kwargs)

    monkeypatch.setattr(onnx, "save", full)
    before = snapshot(tmp_path)
    out = tmp_path / "exp"
    rc, err = run_cli(["-q", "export", "--pool", str(tiny_pool), "--target", "cpu", "--descendant", "ti6.0-5",
                       "--format", "onnx", "--data", "synthetic", "--val-images", "8", "--out", str(out)], capsys)
    assert rc == 2, err
    line = one_line(err)
    assert "no space left on device" in line and str(out) in line and "--out" in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt, target, key, limit", [("openvino", "cpu", "ti6.0-5", 100_000),
                                                      ("coreml", "iphone", "b6.0-5", 20_000)])
def test_a_tools_write_past_the_file_size_limit_exits_2_saying_so(fmt, target, key, limit, tiny_pool, tmp_path):
    """OpenVINO says only 'basic_ios::clear: iostream error' (the ONNX file, 48 KB, fits; the IR's XML,
    135 KB, does not); Core ML's MIL FileWriter 'Unknown error occurred while writing data to the file', which was a
    traceback, exit 1."""
    out = tmp_path / "exp"
    done = run_limited(limit, ["export", "--pool", str(tiny_pool), "--target", target, "--descendant", key,
                               "--format", fmt, "--data", "synthetic", "--val-images", "8", "--out", str(out)],
                       tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "file too large" in line and "ulimit -f" in line and str(out) in line, line
    assert not out.exists()
    no_leftovers(tmp_path)


def test_a_file_size_limit_of_zero_is_one_line_not_tempfiles_traceback(tiny_pool, tmp_path, monkeypatch):
    """`ulimit -f 0`: torch's import asks tempfile for a folder, none can be written, and its FileNotFoundError
    ('No usable temporary directory found') was a traceback, exit 1. (The exporter's own scratch folder, so the
    exported-graph cache is off: a cached graph needs none.)"""
    monkeypatch.setenv("LGP_EDGE_CACHE_MB", "0")
    out = tmp_path / "exp"
    done = run_limited(0, ["export", "--pool", str(tiny_pool), "--target", "cpu", "--descendant", "ti6.0-5",
                           "--format", "onnx", "--data", "synthetic", "--val-images", "8", "--out", str(out)], tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "no temporary folder can be written" in line and "ulimit -f" in line, line
    assert not out.exists()


def test_a_report_whose_plot_cannot_be_written_exits_2_and_keeps_the_earlier_report(tiny_pool, tmp_path):
    out = tmp_path / "rep"
    argv = ["report", "--pool", str(tiny_pool), "--profile", "cpu", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "lgp_edge", "-q", *argv], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before = snapshot(out)
    done = run_limited(4_000, [*argv, "--force"], tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "file too large" in line and str(out) in line, line
    assert snapshot(out) == before
    no_leftovers(tmp_path)


def test_fine_tuning_whose_checkpoint_cannot_be_written_exits_2_and_keeps_the_pool(tiny_pool, tmp_path):
    """safetensors reports the failed write as its own error ('... File too large (os error 27)')."""
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    before = {n: (pool / n).read_bytes() for n in ("pool.json", "weights.safetensors")}
    done = run_limited(700_000, ["pool", "finetune", str(pool), "--data", "synthetic", "--epochs", "1",
                                 "--max-steps-per-epoch", "1", "--batch-size", "8"], tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "file too large" in line and str(pool / "finetune.ckpt") in line, line
    assert {n: (pool / n).read_bytes() for n in before} == before
    no_leftovers(tmp_path)


def test_pool_stitch_that_cannot_publish_the_pool_exits_2_and_keeps_it(tiny_pool, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    before = snapshot(tmp_path)
    done = run_limited(200_000, ["pool", "stitch", str(pool), "--data", "synthetic", "--init", "lstsq",
                                 "--lstsq-images", "16", "--r2-images", "8"], tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "file too large" in line and str(pool / "weights.safetensors") in line, line
    assert snapshot(tmp_path) == before


def test_pool_eval_that_cannot_write_its_results_exits_2_and_keeps_the_pool(tiny_pool, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    before = snapshot(tmp_path)
    done = run_limited(2_000, ["pool", "eval", str(pool), "--data", "synthetic", "--max-images", "8"], tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "file too large" in line and str(pool / "descendants.json") in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [
    ["pool", "eval", "--data", "synthetic", "--max-images", "8"],
    ["pool", "finetune", "--data", "synthetic", "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8"],
    ["pool", "stitch", "--data", "synthetic", "--init", "lstsq", "--lstsq-images", "16", "--r2-images", "8"],
], ids=["eval", "finetune", "stitch"])
def test_a_pool_updated_in_place_on_a_read_only_file_system_is_refused_before_any_work(
        tiny_pool, tmp_path, capsys, monkeypatch, read_only, command):
    from lgp_edge.pool import evaluate, finetune, restitch

    def too_late(*args, **kwargs):
        raise AssertionError("the work started before the pool's writability was checked")

    for module, name in ((evaluate, "evaluate_descendants"), (finetune, "fit"), (restitch, "apply_init")):
        monkeypatch.setattr(module, name, too_late)
    pool = tmp_path / "ro" / "pool"
    shutil.copytree(tiny_pool, pool)
    read_only(pool.parent)
    before = snapshot(pool.parent)
    rc, err = run_cli([*command[:2], str(pool), *command[2:]], capsys)
    assert rc == 2, err
    line = one_line(err)
    assert str(pool) in line and "does not accept new files" in line, line
    assert snapshot(pool.parent) == before


TRAIN = ["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--batch-size", "8", "--epochs",
         "1", "--max-steps-per-epoch", "1"]


def test_a_training_run_whose_first_checkpoint_cannot_be_written_leaves_nothing_to_resume(tmp_path):
    """It left an empty OUT/train.ckpt: the next run said to continue it with --resume, which said there was no
    checkpoint to resume."""
    out = tmp_path / "anc"
    done = run_limited(300_000, [*TRAIN, "--out", str(out)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "file too large" in one_line(done.stderr)
    assert not out.exists()  # nor the OUT it created for the checkpoint
    no_leftovers(tmp_path)
    again = subprocess.run([sys.executable, "-m", "lgp_edge", "-q", *TRAIN, "--out", str(out)], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def test_fine_tuning_whose_first_checkpoint_cannot_be_written_leaves_no_checkpoint_folder(tiny_pool, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    before = snapshot(tmp_path)
    done = run_limited(700_000, ["pool", "finetune", str(pool), "--data", "synthetic", "--epochs", "1",
                                 "--max-steps-per-epoch", "1", "--batch-size", "8"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert snapshot(tmp_path) == before


def test_an_empty_checkpoint_folder_is_no_interrupted_run(tmp_path, tiny_pool):
    """A run killed before its first checkpoint was complete (or one of an earlier version that failed to write
    it) leaves an empty NAME.ckpt: OUT holding only that is as good as empty, not a run to --resume."""
    from lgp_edge.outdir import check_output_dir, release
    from lgp_edge.pool.finetune import FinetuneRequest, _check

    out = tmp_path / "anc"
    (out / "train.ckpt").mkdir(parents=True)
    try:
        check_output_dir(out, False, "ancestry")  # no --force needed, no "continue it with --resume"
    finally:
        release()
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    (pool / "finetune.ckpt").mkdir()
    try:
        _check(FinetuneRequest(pool=str(pool), data="synthetic"))
    finally:
        release()


def test_an_export_whose_temporary_onnx_graph_does_not_fit_in_tmpdir_names_tmpdir(tiny_pool, tmp_path, monkeypatch):
    """It said 'torch.onnx.export failed at opset 17: OSError: [Errno 28] No space left on device', as if the
    exporter had failed, and named neither the folder nor the fix. (The file-size limit stops the exporter's
    raw graph, written to $TMPDIR first, as a nearly full $TMPDIR does; the exported-graph cache is off, since a
    cached graph is not exported again.)"""
    monkeypatch.setenv("LGP_EDGE_CACHE_MB", "0")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    out = tmp_path / "exp"
    done = run_limited(30_000, ["export", "--pool", str(tiny_pool), "--target", "cpu", "--descendant", "ti6.0-5",
                                "--format", "onnx", "--data", "synthetic", "--val-images", "8", "--out", str(out)],
                       tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "file too large" in line and str(scratch) in line and "TMPDIR" in line, line
    assert "torch.onnx.export failed" not in line
    assert not out.exists() and not list(scratch.glob("lgp-onnx-*"))


def test_an_export_whose_manifest_meets_a_full_disk_names_it_in_out_and_says_out(tiny_pool, tmp_path, capsys,
                                                                                   monkeypatch):
    """It named the manifest's temporary file in the temporary folder (already deleted) and said 'write
    elsewhere', not 'choose another --out'."""
    from lgp_edge import fileio

    write_atomic = fileio.write_atomic

    def full(path, write):
        if Path(path).name != "manifest.json":
            return write_atomic(path, write)

        def no_space(tmp):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

        return write_atomic(path, no_space)

    monkeypatch.setattr(fileio, "write_atomic", full)
    out = tmp_path / "exp"
    rc, err = run_cli(["-q", "export", "--pool", str(tiny_pool), "--target", "cpu", "--descendant", "ti6.0-5",
                       "--format", "onnx", "--data", "synthetic", "--val-images", "8", "--out", str(out)], capsys)
    assert rc == 2, err
    line = one_line(err)
    assert "no space left on device" in line and f"'{out / 'manifest.json'}'" in line, line
    assert ".tmp-" not in line and "--out" in line, line
    assert not out.exists()


def _open_store_limited(store: Path, limit: int) -> subprocess.CompletedProcess:
    """Open the measurement store ``store`` in a child process under a file-size limit of ``limit`` bytes; its
    stdout is the error's message (or 'opened')."""
    code = ("import sys\nfrom lgp_edge.errors import LgpEdgeError\nfrom lgp_edge.profiling.store import "
            "MeasurementStore\ntry:\n    MeasurementStore(sys.argv[1], timeout_s=0.3)\nexcept LgpEdgeError as exc:\n"
            "    print(exc)\nelse:\n    print('opened')\n")

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-c", code, str(store)], env=_env(store.parent), capture_output=True,
                          text=True, timeout=120, preexec_fn=limited)


def test_a_locked_store_is_not_blamed_on_a_file_size_limit(tmp_path):
    """Any failed open under any 'ulimit -f' was reported as 'file too large ... raise the file-size limit'."""
    import sqlite3

    store = tmp_path / "store.sqlite"
    holder = sqlite3.connect(str(store), isolation_level=None)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO t VALUES (1)")
        done = _open_store_limited(store, 1 << 30)
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "locked" in done.stdout and "file too large" not in done.stdout and "ulimit" not in done.stdout, \
        done.stdout


def test_a_file_size_limit_of_zero_is_reported_without_a_traceback(tmp_path):
    """The probe wrote ``bytes(soft - 1)``: -1 bytes, a ValueError, under 'ulimit -f 0'."""
    code = "import sys\nfrom lgp_edge.fileio import write_problem\nprint(write_problem(sys.argv[1]))\n"

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=120, preexec_fn=limited)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(errno.EFBIG), done.stdout
    assert not list(tmp_path.glob(".lgp-edge-probe-*"))


def test_a_probe_write_cut_short_is_a_full_disk(tmp_path, monkeypatch):
    """On a nearly full disk the kernel writes what fits and returns the count, without an error: the probe took
    that for a healthy folder, and a store write that failed there read 'disk I/O error' with no cause."""
    from lgp_edge import fileio

    real = os.write

    def what_fits(fd, data):
        return real(fd, bytes(data)[:100])

    monkeypatch.setattr(fileio.os, "write", what_fits)
    found = fileio.write_problem(tmp_path)
    monkeypatch.undo()
    assert found == errno.ENOSPC
    assert not list(tmp_path.glob(".lgp-edge-probe-*"))


def test_pool_eval_whose_pool_json_cannot_be_written_leaves_descendants_json_as_it_was(tiny_pool, tmp_path, capsys,
                                                                                        monkeypatch):
    """descendants.json was replaced first, on its own: the pool then held the new results beside the old
    pool.json."""
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    before = snapshot(pool)
    write_text = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".pool.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    rc, err = run_cli(["-q", "pool", "eval", str(pool), "--data", "synthetic", "--max-images", "8"], capsys)
    assert rc == 2, err
    line = one_line(err)
    assert "no space left on device" in line and str(pool / "pool.json") in line, line
    assert snapshot(pool) == before


def test_a_first_checkpoint_whose_state_json_cannot_be_written_leaves_no_folder(tmp_path, monkeypatch):
    """The tensor file was already written: removing the new folders failed (not empty) and left it behind."""
    import torch

    from lgp_edge import train_checkpoint
    from lgp_edge.errors import WriteFailed
    from lgp_edge.fileio import write_failed

    def full(path, text):
        raise write_failed(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)

    monkeypatch.setattr(train_checkpoint, "write_text_atomic", full)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "out" / "train.ckpt"
    with pytest.raises(WriteFailed):
        train_checkpoint.save_checkpoint(path, model, opt, epoch=0, step=1, step_in_epoch=1, fingerprint="f",
                                         world=1, extra={})
    assert list(tmp_path.iterdir()) == []


def test_a_refused_access_outside_the_onnx_scratch_folder_is_not_blamed_on_tmpdir(tmp_path, monkeypatch):
    """Any EACCES or EIO raised while the exporter ran (a cache folder, say) was reported as a TMPDIR
    problem."""
    from lgp_edge.errors import LgpEdgeError
    from lgp_edge.export import onnx_export

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(onnx_export.tempfile, "tempdir", None)
    cache = tmp_path.parent / "cache" / "kernels.bin"
    with pytest.raises((OSError, LgpEdgeError)) as info:
        with onnx_export._scratch():
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(cache))
    assert "TMPDIR" not in str(info.value) and str(cache) in str(info.value), info.value
    with pytest.raises(LgpEdgeError) as info:
        with onnx_export._scratch() as scratch:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(scratch) / "raw.onnx"))
    assert "TMPDIR" in str(info.value) and str(tmp_path) in str(info.value), info.value


@pytest.mark.parametrize("tool", ["int8", "ort"])
def test_a_full_disk_inside_the_int8_or_ort_converter_says_so(tool: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The converters' own writes (ONNX Runtime's quantizer, its .ort converter) meeting a full disk were
    "int8 quantization of model.onnx failed: OSError ..." with no advice: now the write failure, its path and
    what to do, as every other write says it."""
    import numpy as np
    import onnxruntime.quantization
    import onnxruntime.tools.convert_onnx_models_to_ort as to_ort
    import torch

    from lgp_edge.errors import WriteFailed
    from lgp_edge.export import ort, quantize

    src = tmp_path / "model.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2).eval(), (torch.zeros(1, 4),), str(src), dynamo=False,
                      input_names=["input"])
    dst = tmp_path / "model.int8.onnx"

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    if tool == "int8":
        monkeypatch.setattr(onnxruntime.quantization, "quantize_static", full_disk)
        with pytest.raises(WriteFailed) as info:
            scheme = quantize.Int8Scheme("onnxruntime", False, True)
            quantize.quantize_int8(src, dst, np.zeros((8, 4), np.float32), 1, scheme)
    else:
        monkeypatch.setattr(to_ort, "convert_onnx_models_to_ort", full_disk)
        with pytest.raises(WriteFailed) as info:
            ort.convert_to_ort(src, tmp_path)
    assert "no space left on device" in str(info.value) and str(dst) in str(info.value), str(info.value)
    assert "free space" in str(info.value)


def test_a_switchable_core_ml_package_past_the_file_size_limit_exits_2_saying_so(tmp_path):
    """The multifunction package's writes were checked against a fixed 1 MiB: a limit between that and the
    package's size (here 2 MB against the demo pool's 2.4 MB) was not recognised, a traceback, exit 1."""
    out = tmp_path / "sw"
    done = run_limited(2_000 * 1024, ["export", "--target", "iphone", "--switchable", "--descendants",
                                      "ti6.0-5,b6.0-5", "--val-images", "8", "--out", str(out)], tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "file too large" in line and "ulimit -f" in line, line
    assert not out.exists()
    no_leftovers(tmp_path)
