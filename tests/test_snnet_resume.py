"""`baseline snnet --resume` continues a run stopped at any of its stages (anchor distillation, fine-tuning) to
the weights of an uninterrupted run; anchors built with other settings are not taken as this run's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import snapshot, stop_after_first_epoch, with_options

from lgp_edge.cli import main
from lgp_edge.pool.pool import load_pool

ARGS = ["baseline", "snnet", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
        "--epochs", "2", "--anchor-epochs", "1", "--save-every", "1", "--max-steps-per-epoch", "3", "--batch-size",
        "32", "--eval-images", "64", "--quiet"]


def _resume_refused(argv: list[str], out: Path, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``argv --out OUT --resume`` exits 2 with one line holding ``needle`` and leaves OUT as it was."""
    before = snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert snapshot(out) == before


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return dict(load_pool(out)[0].state_dict())


def test_a_run_stopped_while_fine_tuning_resumes_to_the_uninterrupted_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Stopped in fine-tuning, the run could not go on: --resume looked for the anchors' distillation checkpoint
    (gone once the anchors were saved) and a plain run found OUT not empty; only --force, losing both stages."""
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert main([*ARGS, "--out", str(full)]) == 0
    with monkeypatch.context() as mp:
        stop_after_first_epoch(mp, 0.0, only="finetune")
        assert main([*ARGS, "--out", str(stopped)]) == 130
    assert (stopped / "finetune.ckpt" / "state.json").is_file()
    # anchors built with another anchor budget are another run's: refused, nothing touched
    other = tmp_path / "other"
    shutil.copytree(stopped, other)
    _resume_refused(with_options(ARGS, "--anchor-epochs", "2"), other, "another run", capsys)
    assert main([*ARGS, "--out", str(stopped), "--resume"]) == 0, capsys.readouterr().err
    a, b = _weights(full), _weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_stopped_while_distilling_the_anchors_resumes_with_another_save_every(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--save-every, --workers and --device may change on resume (docs/DISTRIBUTED.md): the anchors' checkpoint
    fingerprint held them (the whole config), and the resume was refused as another run's."""
    out = tmp_path / "sn"
    run = with_options(ARGS, "--anchor-epochs", "2")
    with monkeypatch.context() as mp:
        stop_after_first_epoch(mp, 0.0, only="distill anchors")
        assert main([*run, "--out", str(out)]) == 130
    assert (out / "distill.ckpt" / "state.json").is_file()
    capsys.readouterr()
    assert main([*with_options(run, "--save-every", "2"), "--out", str(out), "--resume"]) == 0, \
        capsys.readouterr().err


def test_a_run_on_distilled_anchors_stopped_while_fine_tuning_resumes_to_the_uninterrupted_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`baseline snnet --distilled D` stopped while fine-tuning could not go on: --resume was refused ('drop
    --resume') before the saved anchors were looked at, and a plain run found OUT not empty: only --force, which
    threw the fine-tuning away. Anchors assembled from other distilled models are another run's."""
    distill = ["pool", "distill", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
               "--models", "ti12,s12", "--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "32",
               "--quiet"]
    d, d2 = tmp_path / "d", tmp_path / "d2"
    assert main([*distill, "--out", str(d)]) == 0
    assert main([*with_options(distill, "--max-steps-per-epoch", "2"), "--out", str(d2)]) == 0
    i = ARGS.index("--anchor-epochs")
    run = [*ARGS[:i], *ARGS[i + 2:], "--distilled", str(d)]  # the anchors' epochs are the distillation's
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert main([*run, "--out", str(full)]) == 0
    with monkeypatch.context() as mp:
        stop_after_first_epoch(mp, 0.0, only="finetune")
        assert main([*run, "--out", str(stopped)]) == 130
    assert (stopped / "finetune.ckpt" / "state.json").is_file()
    for other in ([*run[:-1], str(d2)],  # other distilled models
                  [*ARGS]):  # anchors distilled by the run itself
        _resume_refused(other, stopped, "another run", capsys)
    assert main([*run, "--out", str(stopped), "--resume"]) == 0, capsys.readouterr().err
    a, b = _weights(full), _weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_resumed_with_another_fine_tuning_recipe_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--resume` on a finished run with other fine-tuning settings exited 0 and printed the old pool's table as if
    the new recipe had run (pool.json still held the first recipe)."""
    out = tmp_path / "sn"
    assert main([*ARGS, "--out", str(out)]) == 0
    for other in (with_options(ARGS, "--epochs", "3"), [*ARGS, "--sampling", "flops-bucket"],
                  [*ARGS, "--stitch-epochs", "1"]):
        _resume_refused(other, out, "fine-tuned with other settings", capsys)
    assert main([*with_options(ARGS, "--save-every", "2"), "--out", str(out), "--resume"]) == 0  # nothing to redo


def test_the_same_ancestry_checkpoint_named_another_way_is_the_same_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A run given '--ancestry-checkpoint anc' resumed with the same file's absolute path was refused as another
    run's ('its ancestry_checkpoint differ'): the paths were compared as strings."""
    monkeypatch.chdir(tmp_path)
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", "anc",
                 "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "32", "--quiet"]) == 0
    i = ARGS.index("--allow-random-ancestry")
    run = [*ARGS[:i], *ARGS[i + 1:]]
    with monkeypatch.context() as mp:
        stop_after_first_epoch(mp, 0.0, only="finetune")
        assert main([*run, "--ancestry-checkpoint", "anc", "--out", "sn"]) == 130
    capsys.readouterr()
    assert main([*run, "--ancestry-checkpoint", str(tmp_path / "anc"), "--out", "sn", "--resume"]) == 0, \
        capsys.readouterr().err
