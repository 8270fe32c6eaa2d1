"""Per-width distillation budgets (``--width-epochs``): each auxiliary model or SN-Net anchor trains until it
converges, independently of the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import with_options

from lgp_edge.cli import main
from lgp_edge.datasets import open_data
from lgp_edge.errors import CheckpointError, UsageError
from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.models.instances import plan_instances
from lgp_edge.pool.distill import DistillObjective, run_distillation
from lgp_edge.pool.pool import LearngenePool, load_pool, read_manifest
from lgp_edge.specs import PoolSpec
from lgp_edge.train import TrainConfig

TINY = "lgp_test_tiny"
QUICK = ["--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "32", "--quiet"]


def _build(out: Path, *extra: str) -> int:
    try:
        return main(with_options(["pool", "build", "--ancestry", TINY, "--allow-random-ancestry", "--data", "synthetic",
                                  "--out", str(out), "--init", "lstsq", *QUICK], *extra))
    except SystemExit as exc:  # argparse rejects a malformed value
        return int(exc.code)


def _weights(pool_dir: Path, prefix: str) -> dict[str, torch.Tensor]:
    pool, _ = load_pool(pool_dir)
    return {k: v for k, v in pool.models.state_dict().items() if k.startswith(prefix)}


def test_a_width_with_its_own_budget_trains_longer_and_leaves_the_others_unchanged(tmp_path: Path) -> None:
    assert _build(tmp_path / "same") == 0
    assert _build(tmp_path / "own", "--width-epochs", "ti=3") == 0
    entry = read_manifest(tmp_path / "own").history[0]
    assert entry["stage"] == "distill" and entry["epochs"] == {"ti6": 3, "b6": 1}
    assert [len(entry["epoch_loss_by_model"][n]) for n in ("ti6", "b6")] == [3, 1]
    plain = read_manifest(tmp_path / "same").history[0]
    assert plain["epochs"] == {"ti6": 1, "b6": 1} and len(plain["epoch_loss"]) == 1
    # B trained alone for its epoch sees the same batches and augmentation as B trained beside Ti: same weights
    b_same, b_own = _weights(tmp_path / "same", "b6."), _weights(tmp_path / "own", "b6.")
    assert b_same and all(torch.allclose(b_same[k], b_own[k], atol=1e-6) for k in b_same)
    ti_same, ti_own = _weights(tmp_path / "same", "ti6."), _weights(tmp_path / "own", "ti6.")
    assert any(not torch.allclose(ti_same[k], ti_own[k]) for k in ti_same)


def test_every_width_with_the_same_own_budget_trains_that_budget_and_records_each_warm_up(tmp_path: Path) -> None:
    """--width-epochs ti=2,b=2 with --epochs 1 trained one epoch (one group: the run's --epochs) while pool.json
    said 2; and a width's run with a warm-up clamped to its shorter budget recorded the run's warm-up."""
    assert _build(tmp_path / "both", "--width-epochs", "ti=2,b=2") == 0
    entry = read_manifest(tmp_path / "both").history[0]
    assert entry["epochs"] == {"ti6": 2, "b6": 2} and len(entry["epoch_loss"]) == 2
    assert _build(tmp_path / "warm", "--epochs", "3", "--warmup-epochs", "2", "--width-epochs", "ti=1") == 0
    entry = read_manifest(tmp_path / "warm").history[0]
    assert entry["epochs"] == {"ti6": 1, "b6": 3} and entry["config"]["warmup_epochs"] == 2.0
    assert entry["warmup_epochs"] == {"ti6": pytest.approx(0.1), "b6": 2.0}  # ti6's run: a tenth of its 1 epoch


def _objective() -> DistillObjective:
    torch.manual_seed(0)
    teacher, aspec = create_ancestry(TINY)
    spec = PoolSpec(aspec, 6, plan_instances(aspec, 6, ("ti", "b")))
    pool = LearngenePool(spec)
    return DistillObjective(teacher, pool.models, spec.instances, teacher_dim=aspec.embed_dim,
                            teacher_depth=aspec.depth)


def test_resume_continues_each_budget_from_its_own_checkpoint(tmp_path: Path) -> None:
    data = open_data("synthetic", img_size=16, in_chans=1)
    cfg = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=3)
    run = dict(out=tmp_path, width_epochs={"ti": 2}, fingerprint="f", description="distill")
    done = _objective()
    losses = run_distillation(done, data.train, cfg, resume=False, **run).losses
    assert {k: len(v) for k, v in losses.items()} == {"ti6": 2, "b6": 1}
    assert {p.name for p in tmp_path.glob("distill*.ckpt")} == {"distill-b6.ckpt", "distill-ti6.ckpt"}
    expected = done.students.state_dict()

    resumed = _objective()  # both runs finished: resuming loads them, trains nothing and reports their losses
    assert run_distillation(resumed, data.train, cfg, resume=True, **run).losses == losses
    assert all(torch.equal(v, expected[k]) for k, v in resumed.students.state_dict().items())

    shutil.rmtree(tmp_path / "distill-ti6.ckpt")  # Ti's run never started: it starts, B's continues
    partly = _objective()
    assert {k: len(v) for k, v in run_distillation(partly, data.train, cfg, resume=True, **run).losses.items()} == \
        {"ti6": 2, "b6": 1}
    assert all(torch.allclose(v, expected[k], atol=1e-6) for k, v in partly.students.state_dict().items())

    for ckpt in tmp_path.glob("distill*.ckpt"):
        shutil.rmtree(ckpt)
    with pytest.raises(UsageError, match="no distillation checkpoint"):
        run_distillation(_objective(), data.train, cfg, resume=True, **run)


def test_a_resume_with_another_shared_budget_belongs_to_another_run(tmp_path: Path) -> None:
    """Every width with the same own budget is one run, checkpointed under the run's fingerprint, which holds
    --epochs and not the budget: a run of 2 epochs resumed with ti=5,b=5 went on under the 5-epoch schedule
    (its learning rate jumped back up mid-run) and recorded 5 epochs."""
    data = open_data("synthetic", img_size=16, in_chans=1)
    cfg = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=3)
    run = dict(out=tmp_path, fingerprint="f", description="distill")
    run_distillation(_objective(), data.train, cfg, resume=False, width_epochs={"ti": 2, "b": 2}, **run)
    assert {p.name for p in tmp_path.glob("distill*.ckpt")} == {"distill.ckpt"}
    with pytest.raises(CheckpointError, match="belongs to another run"):
        run_distillation(_objective(), data.train, cfg, resume=True, width_epochs={"ti": 5, "b": 5}, **run)
    # the same budget resumes (the run is done: nothing is trained again)
    run_distillation(_objective(), data.train, cfg, resume=True, width_epochs={"ti": 2, "b": 2}, **run)


@pytest.mark.parametrize("value,needle", [("s=2", "not distilled here"), ("ti=0", "positive epoch count"),
                                          ("ti", "WIDTH=EPOCHS")])
def test_bad_width_epochs_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         value: str, needle: str) -> None:
    assert _build(tmp_path / "p", "--width-epochs", value) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_snnet_takes_anchor_budgets_and_the_finetune_recipe_from_the_cli(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import lgp_edge.pool.finetune as finetune

    out = tmp_path / "sn"
    states = []  # the anchors' weights before and after the fine-tuning the command runs

    def finetune_pool(req, *args, **kwargs):
        states.append({k: v.clone() for k, v in load_pool(req.pool)[0].models.state_dict().items()})
        manifest = real_finetune_pool(req, *args, **kwargs)
        states.append(dict(load_pool(req.pool)[0].models.state_dict()))
        return manifest

    real_finetune_pool = finetune.finetune_pool
    monkeypatch.setattr(finetune, "finetune_pool", finetune_pool)
    # one step per epoch: one stitch-only step (anchors frozen), then one joint step, whose AdamW update (fresh
    # moments) moves each parameter by its learning rate times g/|g|
    assert main(["baseline", "snnet", "--ancestry", TINY, "--allow-random-ancestry", "--data", "synthetic",
                 "--out", str(out), "--anchor-epochs", "1", "--width-epochs", "ti=2", "--stitch-epochs", "1",
                 "--instance-lr-scale", "0.5", "--finetune-anchors", "--epochs", "1", "--batch-size", "64",
                 "--max-steps-per-epoch", "1", "--eval-images", "64", "--quiet"]) == 0
    history = read_manifest(out).history
    anchors = next(h for h in history if h["stage"] == "snnet-anchors")
    assert anchors["epochs"] == {"ti12": 2, "s12": 1}
    finetune_entry = next(h for h in history if h["stage"] == "finetune")
    assert finetune_entry["stitch_epochs"] == 1 and finetune_entry["anchors"] is True
    assert finetune_entry["instance_lr_scale"] == 0.5
    assert not list(out.glob("distill*.ckpt"))
    before, after = states
    assert {k.split(".")[0] for k in before} == {"ti12", "s12", "b12"}
    # --finetune-anchors: Ti, S and B alone train in the joint step beside the drawn config, so every tensor of
    # all three moves (one config alone runs the embedding of one anchor only, the head of one only)
    still = [k for k, v in before.items() if torch.equal(v, after[k])]
    assert not still, f"anchor tensors the joint step left untouched: {still[:5]}"
    # --instance-lr-scale 0.5: the anchors' step is half the learning rate (biases and norms: no weight decay)
    step = max((after[k] - v).abs().max().item() for k, v in before.items() if v.ndim < 2)
    assert step == pytest.approx(0.5 * finetune_entry["config"]["lr"], rel=0.02)
