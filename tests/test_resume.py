"""Crash safety: SIGKILL a real CLI fine-tune mid-epoch, --resume it, get the same weights.

Exactness: the checkpoint holds the model, AdamW moments and step counts, the counters (epoch, step,
step within the epoch) and every RNG the run draws from (torch, Python, NumPy). The data order is a pure
function of (seed, epoch), the learning rate and the per-step descendant pure functions of the step, and
the DataLoader has its own generator, so a resumed run replays exactly the float operations of an
uninterrupted one, including the training-set augmentation (random shifts and flips of the synthetic
images). The weights are therefore compared for bit equality.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import make_tiny_pool, with_options

RUN = ["--data", "synthetic", "--epochs", "2", "--max-steps-per-epoch", "8", "--batch-size", "8", "--lr", "1e-3",
       "--save-every", "3", "--quiet"]
TOTAL_STEPS = 16


def _env() -> dict[str, str]:
    # One thread per process: on a small shared machine, oversubscribed OpenMP threads make each step 50x slower.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lgp_edge.cli", *args]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _sigkill_once(argv: list[str], meta_f: Path, ready: Callable[[dict], bool]) -> tuple[bool, dict, str]:
    """Run ``argv`` and SIGKILL it as soon as the checkpoint ``meta_f`` satisfies ``ready``: (whether it was
    still running when killed, the last checkpoint state read, the tail of its stderr)."""
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    meta: dict = {}
    deadline = time.time() + 300  # generous: a loaded 2-core machine; the loop ends at the first matching checkpoint
    try:
        while time.time() < deadline and proc.poll() is None:
            if meta_f.is_file():
                meta = json.loads(meta_f.read_text())
                if ready(meta):
                    break
            time.sleep(0.01)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return still_running, meta, proc.stderr.read().decode()[-500:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted fine-tune and a copy of the same pool killed with SIGKILL mid-way through epoch 2."""
    root = tmp_path_factory.mktemp("resume")
    base = make_tiny_pool(root / "base", with_records=False)
    full, killed = root / "full", root / "killed"
    shutil.copytree(base, full)
    shutil.copytree(base, killed)
    still_running, meta, err = _sigkill_once(  # at a step checkpoint inside epoch 2
        _cli("pool", "finetune", str(killed), *RUN), killed / "finetune.ckpt" / "state.json",
        lambda m: m["epoch"] == 1 and m["step_in_epoch"] > 0)
    assert still_running, f"the run ended before it could be killed: {err}"
    assert meta.get("epoch") == 1 and meta.get("step_in_epoch", 0) > 0, f"not killed inside epoch 2: {meta}"
    assert 0 < meta["step"] < TOTAL_STEPS, meta
    # The uninterrupted reference, run after the kill so the two never compete for the CPUs.
    subprocess.run(_cli("pool", "finetune", str(full), *RUN), env=_env(), check=True, capture_output=True)
    return {"base": base, "full": full, "killed": killed}


def test_sigkill_then_resume_gives_the_same_weights(runs: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pool = tmp_path / "pool"
    shutil.copytree(runs["killed"], pool)
    killed_at = json.loads((pool / "finetune.ckpt" / "state.json").read_text())["step"]
    progress = json.loads((pool / "finetune.ckpt" / "state.json").read_text())["extra"]["progress"]
    done = subprocess.run(_cli("pool", "finetune", str(pool), *RUN, "--resume"), env=_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert not (pool / "finetune.ckpt").exists(), "the checkpoint is removed once the pool is saved"
    history = json.loads((pool / "pool.json").read_text())["history"][-1]
    assert history["resumed_from_step"] == killed_at
    # The record is the whole run's: every epoch's mean loss (the one cut in two included) as the uninterrupted
    # run's, and the seconds the killed process had spent counted in.
    full_history = json.loads((runs["full"] / "pool.json").read_text())["history"][-1]
    assert len(history["epoch_loss"]) == 2 and history["epoch_loss"] == full_history["epoch_loss"]
    assert history["wall_s"] >= progress["wall_s"] > 0
    resumed = load_file(str(pool / "weights.safetensors"))
    full = load_file(str(runs["full"] / "weights.safetensors"))
    base = load_file(str(runs["base"] / "weights.safetensors"))
    assert resumed.keys() == full.keys()
    assert any(not full[k].equal(base[k]) for k in full), "fine-tuning changed nothing"
    worst = max(float((resumed[k] - full[k]).abs().max()) for k in full)
    print(f"killed at step {killed_at}/{TOTAL_STEPS}; max |w_resumed - w_uninterrupted| = {worst}")
    assert worst == 0.0


def _refused(argv: list[str], needle: str, capsys: pytest.CaptureFixture | None = None) -> None:
    """One ``lgp-edge: error:`` line and exit 2: in-process, or under ``torchrun`` when no capsys is given."""
    if capsys is not None:
        from lgp_edge.cli import main

        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lgp-edge: error:") and needle in err[0], err
        return
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    r = subprocess.run([*torchrun, "-m", "lgp_edge.cli", *argv], env=_env(), capture_output=True, text=True,
                       timeout=60)
    ours = [line for line in r.stderr.splitlines() if line.startswith("lgp-edge: error:")]
    # Each rank prints the same line and exits 2 (torchrun may stop the other rank once one has failed before it
    # prints); torchrun itself then exits 1 with its own summary.
    assert r.returncode != 0 and len(set(ours)) == 1 and needle in ours[0], r.stderr[-800:]


def test_bad_resumes_exit_2_and_write_nothing(runs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    pool = tmp_path / "pool"
    shutil.copytree(runs["killed"], pool)
    before = _snapshot(pool)

    # Other training settings than the interrupted run.
    _refused(with_options(["pool", "finetune", str(pool), *RUN, "--resume"], "--lr", "5e-4"), "belongs to another run",
             capsys)
    # A fresh start would overwrite the interrupted run's checkpoint.
    _refused(["pool", "finetune", str(pool), *RUN], "--resume", capsys)
    # Another world size: two processes cannot continue a one-process data order.
    _refused(["pool", "finetune", str(pool), *RUN, "--resume"], "written by 1 process(es), this run has 2")
    assert _snapshot(pool) == before

    # A checkpoint whose tensors were damaged after it was written (bits flipped in the weights): resuming went on
    # from other weights and exited 0.
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["killed"], damaged)
    meta = json.loads((damaged / "finetune.ckpt" / "state.json").read_text())
    state_f = damaged / "finetune.ckpt" / meta["state_file"]
    data = bytearray(state_f.read_bytes())
    for i in range(len(data) - 4000, len(data) - 3000):
        data[i] ^= 1
    state_f.write_bytes(bytes(data))
    snap = _snapshot(damaged)
    _refused(["pool", "finetune", str(damaged), *RUN, "--resume"], "is damaged", capsys)
    assert _snapshot(damaged) == snap

    # The checkpoint moved into another pool: another spec (depth 9) and another ancestry (other weights).
    for name, kw in (("deeper", {"depth": 9}), ("other-ancestry", {"seed": 1})):
        other = make_tiny_pool(tmp_path / name, with_records=False, **kw)
        shutil.copytree(pool / "finetune.ckpt", other / "finetune.ckpt")
        snap = _snapshot(other)
        _refused(["pool", "finetune", str(other), *RUN, "--resume"], "belongs to another run", capsys)
        assert _snapshot(other) == snap

    # A global batch larger than the data (the 2-process wording is checked in test_distributed.py).
    fresh = tmp_path / "fresh"
    shutil.copytree(runs["base"], fresh)
    snap = _snapshot(fresh)
    _refused(["pool", "finetune", str(fresh), "--data", "synthetic", "--batch-size", "1024", "--quiet"],
             "fewer than one global batch of 1024", capsys)
    assert _snapshot(fresh) == snap


def test_resume_in_the_joint_phase_keeps_the_stitch_phase_record(tmp_path: Path) -> None:
    """With --stitch-epochs, a run killed in the joint phase and resumed recorded no stitch-phase losses and
    left the stitch phase's seconds out of wall_s (the stitch phase had finished in the killed process)."""
    pool = make_tiny_pool(tmp_path / "pool", with_records=False)
    run = [*RUN, "--stitch-epochs", "1"]
    joint = pool / "finetune.ckpt" / "state.json"
    still_running, meta, err = _sigkill_once(_cli("pool", "finetune", str(pool), *run), joint, lambda m: m["step"] > 0)
    assert still_running and meta.get("step", 0) > 0, f"not killed in the joint phase: {meta} {err}"
    stitch = json.loads((pool / "finetune-stitch.ckpt" / "state.json").read_text())["extra"]["progress"]
    joint_meta = json.loads(joint.read_text())  # the checkpoint the resume starts from
    done = subprocess.run(_cli("pool", "finetune", str(pool), *run, "--resume"), env=_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    history = json.loads((pool / "pool.json").read_text())["history"][-1]
    assert history["stitch_epoch_loss"] == stitch["epoch_loss"] and len(history["stitch_epoch_loss"]) == 1
    assert history["resumed_from_step"] == joint_meta["step"]
    assert history["wall_s"] >= stitch["wall_s"] + joint_meta["extra"]["progress"]["wall_s"] > 0
