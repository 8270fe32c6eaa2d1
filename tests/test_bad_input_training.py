"""Bad input to the training commands (found by fuzzing): one line on stderr, exit 2, nothing written.

Each case runs a bad command line in-process and checks the project's promise: exit code 2, exactly one
error line on stderr (log warnings aside) naming the problem, no traceback, and the directory tree
(outputs, pools, data) byte-identical before and after -- no checkpoint directory left behind.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import error_lines, run_cli, snapshot

FAST = ["--data", "synthetic", "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8", "--quiet"]
RANDOM = ["--ancestry", "lgp_test_tiny", "--allow-random-ancestry"]


def assert_refused(root: Path, argv: list[str], phrase: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``argv`` exits 2 with one error line holding ``phrase``, no traceback, and ``root`` unchanged; the line."""
    before = snapshot(root)
    rc, err = run_cli(argv, capsys)
    lines = error_lines(err)
    assert rc == 2, err
    assert len(lines) == 1 and phrase in lines[0], err
    assert "Traceback" not in err
    assert snapshot(root) == before  # nothing written, nothing deleted
    return lines[0]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    r = tmp_path / "world"
    r.mkdir()
    return r


# --------------------------------------------------------------------------- 1. duplicate --widths
@pytest.mark.parametrize("action", ["build", "plan"])
def test_duplicate_widths_are_refused(action: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if action == "build":
        argv = ["pool", "build", *RANDOM, *FAST, "--out", str(root / "X"), "--widths", "ti,ti"]
    else:
        argv = ["pool", "plan", "--ancestry", "lgp_test_tiny", "--widths", "ti,ti"]
    assert_refused(root, argv, "--widths names 'ti' twice", capsys)


def test_a_pool_of_one_width_is_refused_before_any_work(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--widths ti distilled, then failed in the stitch step with a traceback (exit 1), leaving a checkpoint."""
    assert_refused(root, ["pool", "build", *RANDOM, *FAST, "--out", str(root / "X"), "--widths", "ti"],
                   "--widths ti is one width", capsys)


@pytest.mark.parametrize("command", ["ancestry train", "pool build"])
def test_resume_with_force_is_refused(command: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'ancestry train --resume --force' resumed and ignored --force."""
    argv = {"ancestry train": ["ancestry", "train", "--ancestry", "lgp_test_tiny", *FAST],
            "pool build": ["pool", "build", *RANDOM, *FAST]}[command]
    assert_refused(root, [*argv, "--out", str(root / "X"), "--resume", "--force"], "pass one", capsys)


@pytest.mark.parametrize("action", ["finetune", "stitch", "eval"])
def test_a_real_data_pool_is_not_trained_on_synthetic_images(action: str, root: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """pool finetune of the demo pool on --data synthetic replaced its weights with noise-fitted ones (top-1 10-15%)
    while pool.json still said fashion-mnist; pool stitch likewise; pool eval replaced its 10,000-image top-1
    (88.95% for Ti alone) with scores on noise (8.98%)."""
    from lgp_edge.pool.pool import demo_pool_dir

    pool = root / "demo"
    shutil.copytree(demo_pool_dir(), pool)
    flags = {"stitch": ["--data", "synthetic", "--init", "lstsq", "--quiet"], "finetune": FAST,
             "eval": ["--data", "synthetic", "--max-images", "8", "--quiet"]}[action]
    line = assert_refused(root, ["pool", action, str(pool), *flags], "trained on fashion-mnist", capsys)
    assert "--data fashion-mnist" in line


def test_an_ancestry_whose_weights_were_changed_is_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """400 bytes of an 'ancestry train' output's weights flipped: pool build loaded them and recorded the
    ancestry.json's top-1 for the changed model, exit 0."""
    anc = root / "anc"
    rc, err = run_cli(["ancestry", "train", "--ancestry", "lgp_test_tiny", *FAST, "--out", str(anc)], capsys)
    assert rc == 0, err
    meta = json.loads((anc / "ancestry.json").read_text())
    assert len(meta["weights_sha256"]) == 64
    f = anc / "ancestry.safetensors"
    data = bytearray(f.read_bytes())
    for i in range(len(data) - 600, len(data) - 200):
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))
    line = assert_refused(root, ["pool", "build", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc),
                                 *FAST, "--out", str(root / "X")], "is damaged or was modified", capsys)
    assert "ancestry.safetensors" in line


# --------------------------------------------------------------------------- 2. --workers out of bounds
def _workers_commands(root: Path, pool: Path) -> dict[str, list[str]]:
    out = str(root / "X")
    return {
        "ancestry train": ["ancestry", "train", "--ancestry", "lgp_test_tiny", *FAST, "--out", out],
        "pool distill": ["pool", "distill", *RANDOM, *FAST, "--out", out, "--models", "ti6"],
        "pool build": ["pool", "build", *RANDOM, *FAST, "--out", out],
        "pool finetune": ["pool", "finetune", str(pool), *FAST],
        "baseline scratch": ["baseline", "scratch", *RANDOM, *FAST, "--out", out],
        "baseline vanilla": ["baseline", "vanilla", *RANDOM, *FAST, "--out", out],
        "baseline snnet": ["baseline", "snnet", *RANDOM, *FAST, "--out", out],
    }


@pytest.mark.parametrize("command", ["ancestry train", "pool distill", "pool build", "pool finetune",
                                     "baseline scratch", "baseline vanilla", "baseline snnet"])
def test_workers_beyond_the_bound_are_refused(command: str, root: Path, tiny_pool: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loader(*a: object, **k: object) -> None:  # today's code would start the workers and hang
        raise RuntimeError("a DataLoader was created: --workers was not validated")

    monkeypatch.setattr("lgp_edge.train.DataLoader", no_loader)
    pool = root / "pool"
    shutil.copytree(tiny_pool, pool)
    limit = max(64, 4 * (os.cpu_count() or 1))
    argv = [*_workers_commands(root, pool)[command], "--workers", str(limit + 1)]
    assert_refused(root, argv, f"--workers must be in 0..{limit}", capsys)


# --------------------------------------------------------------------------- 3. --eval-images 0
@pytest.mark.parametrize("method", ["scratch", "vanilla", "snnet"])
def test_eval_images_zero_is_refused(method: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["baseline", method, *RANDOM, *FAST, "--out", str(root / "X"), "--eval-images", "0"]
    assert_refused(root, argv, "--eval-images: must be >= 1", capsys)


# --------------------------------------------------------------------------- 4. damaged Fashion-MNIST files
@pytest.mark.parametrize("content", [b"garbage\n", gzip.compress(b"ab")], ids=["not-gzip", "two-byte-gzip"])
def test_unreadable_fashion_mnist_files_are_refused(content: bytes, root: Path, tiny_pool: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = root / "fakefm"
    data.mkdir()
    for prefix in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (data / f"{prefix}-{kind}-ubyte.gz").write_bytes(content)
    monkeypatch.setenv("LGP_EDGE_DATA", str(data))
    pool = root / "pool"
    shutil.copytree(tiny_pool, pool)
    line = assert_refused(root, ["pool", "eval", str(pool), "--data", "fashion-mnist", "--quiet"],
                          "is not a readable Fashion-MNIST IDX file", capsys)
    assert "train-images-idx3-ubyte.gz" in line and "reinstall dataset-fashion-mnist" in line, line


def _idx(array: list[int] | bytes, dims: tuple[int, ...]) -> bytes:
    import struct
    body = bytes(array)
    return gzip.compress(struct.pack(">HBB", 0, 8, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + body)


@pytest.mark.parametrize("images, labels, message", [
    ((4, 28, 28), [0, 1, 2], "4 images and 3 labels"),  # a labels file of another split, or cut short
    ((3, 28, 28), [0, 1, 200], "label 200"),  # not one of the 10 classes: never counted right, silently
    ((3, 784), [0, 1, 2], "images of shape (3, 784)"),
], ids=["counts-differ", "label-out-of-range", "images-not-3d"])
def test_fashion_mnist_files_that_do_not_belong_together_are_refused(
        images: tuple[int, ...], labels: list[int], message: str, root: Path, tiny_pool: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    data = root / "fakefm"
    data.mkdir()
    for prefix in ("train", "t10k"):
        (data / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(bytes(math.prod(images)), images))
        (data / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(labels, (len(labels),)))
    monkeypatch.setenv("LGP_EDGE_DATA", str(data))
    pool = root / "pool"
    shutil.copytree(tiny_pool, pool)
    line = assert_refused(root, ["pool", "eval", str(pool), "--data", "fashion-mnist", "--quiet"], message, capsys)
    assert "t10k" in line or "train" in line, line


# --------------------------------------------------------------------------- 5. empty lists
def test_empty_keys_are_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["baseline", "scratch", *RANDOM, *FAST, "--out", str(root / "X"), "--keys", ""]
    assert_refused(root, argv, "--keys: give at least one descendant key", capsys)


def test_empty_distilled_is_refused_by_snnet(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["baseline", "snnet", *RANDOM, *FAST, "--out", str(root / "X"), "--distilled", ""]
    assert_refused(root, argv, "--distilled: give at least one", capsys)


def test_empty_distilled_is_refused_by_pool_build(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pool", "build", *RANDOM, *FAST, "--init", "learned", "--out", str(root / "X"), "--distilled", ""]
    assert_refused(root, argv, "--distilled: give at least one", capsys)


@pytest.mark.parametrize("argv, message", [
    (["pool", "distill", *RANDOM, *FAST, "--models", "ti6,ti6"], "'ti6' is named twice"),
    (["baseline", "scratch", *RANDOM, *FAST, "--keys", "ti6.0-5,ti6.0-5"], "'ti6.0-5' is named twice"),
    (["baseline", "vanilla", *RANDOM, *FAST, "--narrow", ""], "give at least one integer"),
    (["baseline", "vanilla", *RANDOM, *FAST, "--narrow", "3,3"], "3 is named twice"),  # trained twice, listed twice
    (["pool", "build", *RANDOM, *FAST, "--width-epochs", "ti=2,ti=3"], "'ti' is named twice"),  # the last one won
    (["pool", "build", *RANDOM, *FAST, "--width-epochs", ""], "give at least one WIDTH=EPOCHS"),
])
def test_lists_named_twice_or_empty_are_refused(argv: list[str], message: str, root: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(root, [*argv, "--out", str(root / "X")], message, capsys)


@pytest.mark.parametrize("command", ["ancestry train", "pool build"])
def test_a_warm_up_as_long_as_the_run_is_refused(command: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--warmup-epochs 2 with --epochs 1 trained the whole run on the warm-up ramp (the learning rate never reached
    --lr, and no cosine decay followed) and said nothing."""
    argv = {"ancestry train": ["ancestry", "train", "--ancestry", "lgp_test_tiny", *FAST],
            "pool build": ["pool", "build", *RANDOM, *FAST]}[command]
    argv += ["--out", str(root / "X"), "--warmup-epochs", "1"]
    line = assert_refused(root, argv, "--warmup-epochs 1 is not shorter than --epochs 1", capsys)
    assert "--lr" in line


def test_a_training_config_with_its_warm_up_past_its_end_is_refused() -> None:
    from lgp_edge.train import TrainConfig

    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=1, warmup_epochs=2.0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    assert TrainConfig(epochs=2, warmup_epochs=1.5).warmup_epochs == 1.5
    # a phase of its own (the stitch-only epochs, a width's budget) keeps the run's warm-up where it fits
    run = TrainConfig(epochs=3, warmup_epochs=1.0)
    assert run.with_epochs(10).warmup_epochs == 1.0 and run.with_epochs(1).warmup_epochs == pytest.approx(0.1)


@pytest.mark.parametrize("argv, message", [
    # alpha weighs CE and 1 - alpha the distillation terms: 1e9 trained away from the ancestry (loss -5.8e7)
    (["pool", "build", *RANDOM, *FAST, "--alpha", "1.5"], "--alpha: must be between 0 and 1"),
    (["pool", "distill", *RANDOM, *FAST, "--alpha", "5"], "--alpha: must be between 0 and 1"),
    # a seed past int64 ended in a traceback inside torch (exit 1)
    (["ancestry", "train", "--ancestry", "lgp_test_tiny", *FAST, "--seed", "99999999999999999999999"], "--seed"),
    (["pool", "build", *RANDOM, *FAST, "--seed", "-1"], "--seed"),
    # flags that were dropped without a word
    (["pool", "build", *RANDOM, *FAST, "--pretrained", "--ancestry-checkpoint", "x.safetensors"], "pass one"),
    (["baseline", "snnet", *RANDOM, *FAST, "--anchors", "deit_tiny_patch16_224,deit_small_patch16_224"], "--plan"),
    (["baseline", "snnet", "--ancestry", "lgp_test_tiny", "--plan", "--resume"], "drop --resume"),
])
def test_out_of_range_or_dropped_training_flags_are_refused(argv: list[str], message: str, root: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(root, [*argv, "--out", str(root / "X")], message, capsys)


def test_an_ancestry_run_into_its_own_initial_checkpoint_is_refused(root: Path, capsys: pytest.CaptureFixture[str]
                                                                   ) -> None:
    """ancestry train --force --initial-checkpoint A --out A replaced the weights it started from, and its record
    pointed at a file that no longer held them."""
    argv = ["ancestry", "train", "--ancestry", "lgp_test_tiny", *FAST]
    from helpers import run_cli

    assert run_cli([*argv, "--out", str(root / "A")], capsys)[0] == 0
    assert_refused(root, [*argv, "--out", str(root / "A"), "--force", "--initial-checkpoint", str(root / "A")],
                   "the initial checkpoint", capsys)


def test_profile_model_empty_is_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """profile --model '' profiled the bundled demo pool instead."""
    assert_refused(root, ["profile", "--target", "cpu", "--model", "", "--store", str(root / "m.sqlite")],
                   "--model needs a timm model name", capsys)


@pytest.mark.parametrize("method", ["scratch", "vanilla"])
def test_a_checkpoint_interval_is_refused_where_no_checkpoint_is_kept(method: str, root: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """baseline scratch|vanilla took --save-every and wrote checkpoints no --resume could read (they have none)."""
    assert_refused(root, ["baseline", method, *RANDOM, *FAST, "--out", str(root / "X"), "--save-every", "5"],
                   "unrecognized arguments: --save-every", capsys)
