"""``pool distill``: auxiliary models of several pools (and SN-Net's anchors) distilled in one run, with one
ancestry forward pass per batch, then taken by ``pool build --distilled`` and ``baseline snnet --distilled``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import with_options

from lgp_edge.baselines.snnet import SNNetRequest, build_snnet
from lgp_edge.cli import main
from lgp_edge.pool.pool import load_pool, read_manifest
from lgp_edge.train import TrainConfig

TINY = "lgp_test_tiny"
QUICK = ["--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "32", "--quiet"]
ANCESTRY = ["--ancestry", TINY, "--allow-random-ancestry", "--data", "synthetic"]


def _cli(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:  # argparse rejects a malformed value
        return int(exc.code)


def _distill(out: Path, models: str, *extra: str) -> int:
    return _cli(*with_options(["pool", "distill", *ANCESTRY, "--out", str(out), "--models", models, *QUICK], *extra))


def _build(out: Path, *extra: str) -> int:
    return _cli(*with_options(["pool", "build", *ANCESTRY, "--out", str(out), "--init", "lstsq", *QUICK], *extra))


def _models(pool_dir: Path) -> dict[str, torch.Tensor]:
    pool, _ = load_pool(pool_dir)
    return pool.models.state_dict()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both depth groups' Ti and B and SN-Net's Ti and S anchors, Ti with its own budget (a second run)."""
    out = tmp_path_factory.mktemp("distill") / "shared"
    assert _distill(out, "ti6,b6,ti9,b9,ti12,s12", "--width-epochs", "ti=2") == 0
    return out


def test_shared_runs_give_each_model_the_weights_it_gets_alone(shared: Path, tmp_path: Path) -> None:
    record = json.loads((shared / "distilled.json").read_text())
    assert sorted(p.name for p in shared.iterdir()) == ["distilled.json", "models.safetensors",
                                                        "transforms.safetensors"]  # no checkpoint left behind
    assert record["epochs"] == {"ti6": 2, "b6": 1, "ti9": 2, "b9": 1, "ti12": 2, "s12": 1}
    assert 0 < record["train_s"] <= record["wall_s"]  # the two runs' training seconds, within the command's
    assert [(r["models"], r["epochs"], len(r["epoch_loss"])) for r in record["runs"]] == [
        (["b6", "b9", "s12"], 1, 1), (["ti6", "ti9", "ti12"], 2, 2)]
    # the pool distilled on its own (its own ancestry passes) and the pool taken from the shared runs: same models
    assert _build(tmp_path / "own", "--width-epochs", "ti=2") == 0
    assert _build(tmp_path / "taken", "--distilled", str(shared)) == 0
    own, taken = _models(tmp_path / "own"), _models(tmp_path / "taken")
    assert own.keys() == taken.keys() and all(torch.allclose(own[k], taken[k], atol=1e-6) for k in own)
    entry = read_manifest(tmp_path / "taken").history[0]
    assert entry["stage"] == "distill" and entry["epochs"] == {"ti6": 2, "b6": 1}
    assert entry["distilled"] == [{"dir": str(shared), "models": ["ti6", "b6", "ti9", "b9", "ti12", "s12"],
                                   "wall_s": record["wall_s"], "files": record["files"]}]  # the weights taken
    assert [r["models"] for r in entry["runs"]] == [["b6", "b9", "s12"], ["ti6", "ti9", "ti12"]]
    assert entry["inherited_blocks"] == read_manifest(tmp_path / "own").history[0]["inherited_blocks"]
    # the learned stitch init is built from the same transformation matrices
    assert _build(tmp_path / "learned-own", "--width-epochs", "ti=2", "--init", "learned") == 0
    assert _build(tmp_path / "learned-taken", "--distilled", str(shared), "--init", "learned") == 0
    a, b = load_pool(tmp_path / "learned-own")[0], load_pool(tmp_path / "learned-taken")[0]
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.stitches.state_dict().values(),
                                                                b.stitches.state_dict().values()))
    assert _build(tmp_path / "d9", "--depth", "9", "--distilled", str(shared)) == 0


def test_snnet_takes_its_anchors_from_a_shared_run(shared: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, max_steps_per_epoch=3, batch_size=32)
    common = {"ancestry": TINY, "checkpoint": None, "data": "synthetic", "allow_random_ancestry": True}
    build_snnet(SNNetRequest(**common, out=str(tmp_path / "own"), width_epochs=(("ti", 2),)), cfg)
    build_snnet(SNNetRequest(**common, out=str(tmp_path / "taken"), distilled=(str(shared),)), cfg)
    own, taken = _models(tmp_path / "own"), _models(tmp_path / "taken")
    assert all(torch.allclose(own[k], taken[k], atol=1e-6) for k in own)
    entry = read_manifest(tmp_path / "taken").history[0]
    assert entry["stage"] == "snnet-anchors" and entry["epochs"] == {"ti12": 2, "s12": 1}
    assert entry["anchors"]["b12"] == "ancestry"
    record = json.loads((shared / "distilled.json").read_text())  # the anchors' top-1 right after distillation
    assert entry["top1"] == {m: record["top1"][m] for m in ("ti12", "s12")}
    assert read_manifest(tmp_path / "own").history[0]["top1"] == entry["top1"]  # same models, measured again


def test_bad_distilled_input_is_one_line_and_exit_2(shared: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shared, copy)
    cases = [
        (lambda o: _distill(o, "ti7"), "depth must be one of 6, 9"),
        (lambda o: _distill(o, "b12"), "is the ancestry itself"),
        (lambda o: _distill(o, "x6"), "is not <width><depth>"),
        (lambda o: _distill(o, "ti6,ti6"), "is named twice"),
        (lambda o: _distill(o, "b6", "--width-epochs", "ti=2"), "not distilled here"),
        (lambda o: _build(o, "--distilled", str(tmp_path / "nowhere")), "is not a 'pool distill' output"),
        (lambda o: _build(o, "--distilled", str(shared), "--widths", "ti,s,b"), "holds no auxiliary model 's6'"),
        (lambda o: _build(o, "--distilled", str(shared), "--width-epochs", "ti=2"), "drop --width-epochs"),
        (lambda o: _build(o, "--distilled", str(shared), "--aux-init", "random"), "other --aux-init"),
        (lambda o: _build(o, "--distilled", str(shared), "--seed", "1"), "other ancestry weights"),
        (lambda o: _build(o, "--distilled", f"{shared},{copy}"), "is in both"),
        (lambda o: _cli("baseline", "snnet", *ANCESTRY, "--out", str(o), "--distilled", str(shared),
                        "--anchor-epochs", "2", *QUICK), "drop --anchor-epochs"),
    ]
    for i, (run, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        capsys.readouterr()
        assert run(out) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert any(message in line for line in err), (message, err)
        assert not out.exists(), message
    # --force replaces an earlier 'pool distill' output, never a pool or someone else's files
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "notes.txt").write_text("mine")
    assert _distill(tmp_path / "pool", "ti6", "--force") == 2 and (tmp_path / "pool" / "notes.txt").is_file()
    # a damaged weights file: one line, exit 2, nothing written
    damaged = tmp_path / "damaged"
    shutil.copytree(shared, damaged)
    with open(damaged / "models.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00" * 16)
    assert _build(tmp_path / "from-damaged", "--distilled", str(damaged)) == 2
    assert "does not match its hash" in capsys.readouterr().err and not (tmp_path / "from-damaged").exists()


def test_force_replaces_an_earlier_distilled_output(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert _distill(out, "ti6") == 0
    assert _distill(out, "b6") == 2  # not empty, no --force
    assert _distill(out, "b6", "--force") == 0
    assert [m["name"] for m in json.loads((out / "distilled.json").read_text())["models"]] == ["b6"]


def test_position_loss_sum_is_the_authors_and_recorded(tmp_path: Path) -> None:
    """Ti's three "front,end" positions: their hidden and attention losses averaged (lgp-edge's default) or
    summed (the authors' criterion2.py: att_loss += ...; rep_loss += ...); the choice is recorded and a build
    that takes the models checks it."""
    import torch.nn.functional as F
    from torch import nn

    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.pool.auxiliary import auxiliary_instance, create_auxiliary
    from lgp_edge.pool.distill import DistillObjective

    torch.manual_seed(0)
    teacher, aspec = create_ancestry(TINY)
    inst = auxiliary_instance(aspec, "ti6")
    assert inst.supervision == "front,end"
    students = nn.ModuleDict({"ti6": create_auxiliary(aspec, inst)})
    x, y = torch.randn(4, aspec.in_chans, aspec.img_size, aspec.img_size), torch.tensor([0, 1, 2, 3])
    losses = {}
    for reduction in ("mean", "sum"):
        torch.manual_seed(1)
        obj = DistillObjective(teacher, students, (inst,), teacher_dim=aspec.embed_dim, teacher_depth=aspec.depth,
                               position_loss=reduction)
        losses[reduction] = float(obj(x, y))
        with torch.no_grad():
            s_logits = students["ti6"](x)
            t_logits = teacher(x)
        head = 0.1 * float(F.cross_entropy(s_logits, y)) + 0.9 * float(
            -(F.softmax(t_logits, -1) * F.log_softmax(s_logits, -1)).sum(-1).mean())
        features = (losses[reduction] - head) / 0.9
        losses[reduction + "_features"] = features
    assert losses["sum_features"] == pytest.approx(3 * losses["mean_features"], rel=1e-4)
    assert _distill(tmp_path / "d", "ti6,b6", "--position-loss", "sum") == 0
    assert json.loads((tmp_path / "d" / "distilled.json").read_text())["position_loss"] == "sum"
    assert _build(tmp_path / "p", "--distilled", str(tmp_path / "d")) == 2  # built with the default, mean
    assert _build(tmp_path / "p", "--distilled", str(tmp_path / "d"), "--position-loss", "sum") == 0
    history = read_manifest(tmp_path / "p").history
    assert next(h for h in history if h["stage"] == "distill")["position_loss"] == "sum"


def test_each_model_is_evaluated_alone_after_distillation(shared: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """``pool distill`` records (and prints) each model's top-1 alone on the validation images right after
    distillation: the number a pool built from the directory measures for its instance models."""
    from lgp_edge.pool.evaluate import instance_top1

    record = json.loads((shared / "distilled.json").read_text())
    assert record["top1_images"] > 0 and sorted(record["top1"]) == sorted(record["epochs"])
    assert all(0.0 <= v <= 100.0 for v in record["top1"].values())
    assert _build(tmp_path / "p", "--distilled", str(shared)) == 0
    alone = instance_top1(tmp_path / "p", "synthetic")
    assert alone == {"ti6.0-5": record["top1"]["ti6"], "b6.0-5": record["top1"]["b6"]}
    capsys.readouterr()
    assert _distill(tmp_path / "d", "ti6,b6", "--eval-images", "7") == 0
    capped = json.loads((tmp_path / "d" / "distilled.json").read_text())
    assert capped["top1_images"] == 7 and all(round(v * 7 / 100) * 100 / 7 == pytest.approx(v, abs=1e-3)
                                              for v in capped["top1"].values())
    out = capsys.readouterr().out
    assert f"ti6 {capped['top1']['ti6']:.2f}%" in out and "7 validation images" in out
    assert _distill(tmp_path / "e", "ti6", "--eval-images", "0") == 2


def test_a_pool_records_its_instances_top1_right_after_distillation(shared: Path, tmp_path: Path) -> None:
    """pool.json's distill entry holds each instance model's top-1 alone right after distillation: measured by
    ``pool build`` when it distils, carried from ``distilled.json`` when the models are taken from there."""
    from lgp_edge.pool.evaluate import instance_top1

    record = json.loads((shared / "distilled.json").read_text())
    assert _build(tmp_path / "taken", "--distilled", str(shared)) == 0
    entry = read_manifest(tmp_path / "taken").history[0]
    assert entry["top1"] == {"ti6": record["top1"]["ti6"], "b6": record["top1"]["b6"]}
    assert entry["top1_images"] == record["top1_images"]
    assert _build(tmp_path / "own") == 0
    entry = read_manifest(tmp_path / "own").history[0]
    alone = instance_top1(tmp_path / "own", "synthetic")
    assert entry["top1"] == {"ti6": alone["ti6.0-5"], "b6": alone["b6.0-5"]} and entry["top1_images"] > 0
