"""The training recipe beyond the paper's defaults: lstsq-kd stitch init, stitch R^2, fine-tuning phases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_pool

from lgp_edge.cli import main
from lgp_edge.datasets import open_data
from lgp_edge.errors import UsageError
from lgp_edge.models.plan import descendant_flops
from lgp_edge.pool.kd import SAMPLINGS, FinetuneObjective, descendant_sampler, flops_bucket_sampler, flops_groups
from lgp_edge.pool.pool import load_pool, load_pool_ancestry
from lgp_edge.pool.stitch_init import init_stitches, lstsq_images, mean_r2, stitch_r2, stitched_indices, tune_stitches
from lgp_edge.train import TrainConfig, make_optimizer

QUICK = ["--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "32", "--quiet"]


def test_lstsq_fits_features_better_than_a_random_map(tmp_path: Path) -> None:
    pool_dir = make_tiny_pool(tmp_path / "p")
    pool, _ = load_pool(pool_dir)
    data = open_data("synthetic", img_size=16, in_chans=1)
    fit_images, held_out = lstsq_images(data, 64, seed=0), lstsq_images(data, 64, seed=1)
    before = stitch_r2(pool, held_out)
    init_stitches(pool, "lstsq", images=fit_images)
    after = stitch_r2(pool, held_out)
    assert len(after) == 16 and {f.config for f in after} == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1),
                                                               (2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 3),
                                                               (4, 4), (4, 5), (5, 4), (5, 5)}
    assert all(f.r2 <= 1.0 for f in after)
    assert mean_r2(after) > mean_r2(before) and mean_r2(after) > 0.0


def test_stitch_only_training_moves_stitches_and_nothing_else(tmp_path: Path) -> None:
    pool_dir = make_tiny_pool(tmp_path / "p")
    pool, manifest = load_pool(pool_dir)
    teacher = load_pool_ancestry(pool_dir, manifest)
    data = open_data("synthetic", img_size=16, in_chans=1)
    models0 = {k: v.clone() for k, v in pool.models.state_dict().items()}
    stitches0 = {k: v.clone() for k, v in pool.stitches.state_dict().items()}
    result = tune_stitches(pool, teacher, data.train, TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=4,
                                                                  lr=1e-2))
    assert result.steps == 4
    assert all(torch.equal(v, models0[k]) for k, v in pool.models.state_dict().items())
    assert any(not torch.equal(v, stitches0[k]) for k, v in pool.stitches.state_dict().items())
    assert all(p.requires_grad for p in pool.models.parameters()), "instances are trainable again afterwards"
    assert len(stitched_indices(pool)) == 16


def test_anchors_and_instance_lr_scale(tmp_path: Path) -> None:
    pool_dir = make_tiny_pool(tmp_path / "p")
    pool, manifest = load_pool(pool_dir)
    teacher = load_pool_ancestry(pool_dir, manifest)
    obj = FinetuneObjective(pool, teacher, anchors=True, instance_lr_scale=0.1)
    assert obj.anchor_indices == (0, 1)
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    obj(x, y, index=5).backward()
    # the anchors' own losses reach every block of Ti and B, not only the blocks descendant 5 runs
    assert all(p.grad is not None for p in pool.models["b6"].blocks.parameters())
    assert all(p.grad is not None for p in pool.models["ti6"].blocks.parameters())
    opt, _ = make_optimizer(obj, TrainConfig(epochs=1))
    scales = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert scales[id(pool.models["b6"].blocks[0].attn.qkv.weight)] == 0.1
    assert scales[id(pool.stitches["ti6-b6-0"].weight)] == 1.0
    pick = descendant_sampler(0, [2, 3, 4])
    assert {pick(s)["index"] for s in range(50)} == {2, 3, 4}


def test_flops_groups_follow_sn_netv2_and_the_bucket_sampler_draws_groups_alike() -> None:
    # range 0..100 in 10 steps of 10: a group takes what lies within 10 above its first member
    flops = [50, 0, 5, 10, 11, 100, 12, 95, 21]
    assert flops_groups(flops) == [[1, 2, 3], [4, 6, 8], [0], [7, 5]]
    assert flops_groups([7, 7, 7]) == [[0, 1, 2]]  # one FLOPs value: one group
    draw = flops_bucket_sampler(0, flops)
    picks = [draw(s)["index"] for s in range(4000)]
    assert set(picks) == set(range(len(flops)))
    # each group a quarter of the draws, whatever its size: the lone 50 as often as 0, 5 and 10 together
    assert abs(picks.count(0) / 4000 - 0.25) < 0.03
    assert abs(sum(picks.count(i) for i in (1, 2, 3)) / 4000 - 0.25) < 0.03
    assert picks == [draw(s)["index"] for s in range(4000)], "seeded by the step: the same on every rank"


def _weights(pool_dir: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The saved pool and its state (instances ``models.*``, stitches ``stitches.*``)."""
    pool, _ = load_pool(pool_dir)
    return pool, {k: v.clone() for k, v in pool.state_dict().items()}


def _largest_step(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> float:
    """The largest change of a parameter under ``prefix`` that has no weight decay (biases, norms: 1-D)."""
    return max((after[k] - v).abs().max().item() for k, v in before.items() if k.startswith(prefix) and v.ndim < 2)


def test_cli_lstsq_kd_build_and_phased_finetune(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    anc, pool = tmp_path / "anc", tmp_path / "pool"
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(anc),
                 *QUICK]) == 0
    assert main(["pool", "build", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data",
                 "synthetic", "--out", str(pool), "--init", "lstsq-kd", "--stitch-steps", "2", *QUICK]) == 0
    manifest = json.loads((pool / "pool.json").read_text())
    init = manifest["history"][1]
    assert manifest["stitch_init"] == "lstsq-kd" and init["stage"] == "stitch-init"
    assert init["stitch_steps"] == 2 and init["images"] == 512  # synthetic data has 512 training images
    shutil.copytree(pool, tmp_path / "pool-b")
    built, before = _weights(pool)
    # one stitch-only step, then one joint step (an AdamW step from fresh moments moves each parameter by its
    # learning rate times g/|g|, so the instances' step shows their learning-rate scale)
    assert main(["pool", "finetune", str(pool), "--data", "synthetic", "--stitch-epochs", "1", "--anchors",
                 "--instance-lr-scale", "0.2", "--sampling", "flops-bucket", "--epochs", "1",
                 "--max-steps-per-epoch", "1", "--batch-size", "32", "--quiet"]) == 0
    entry = json.loads((pool / "pool.json").read_text())["history"][-1]
    assert entry["stage"] == "finetune" and entry["stitch_epochs"] == 1 and len(entry["stitch_epoch_loss"]) == 1
    assert entry["stitch_warmup_epochs"] == (entry["config"]["warmup_epochs"] if entry["config"]["warmup_epochs"] < 1
                                             else pytest.approx(0.1))  # the stitch phase's own, as run
    assert entry["anchors"] is True and entry["instance_lr_scale"] == 0.2 and entry["sampling"] == "flops-bucket"
    assert not (pool / "finetune.ckpt").exists() and not (pool / "finetune-stitch.ckpt").exists()
    _, after = _weights(pool)
    # --anchors: Ti and B alone train beside the drawn descendant, so one joint step moves every instance
    # tensor (one descendant alone leaves the blocks, embedding or head it does not run untouched)
    still = [k for k in before if k.startswith("models.") and torch.equal(before[k], after[k])]
    assert not still, f"instance tensors the anchors should have trained: {still[:5]}"
    # --instance-lr-scale 0.2: the instances' step is 0.2 x the learning rate (biases and norms: no decay)
    assert _largest_step(before, after, "models.") == pytest.approx(0.2 * entry["config"]["lr"], rel=0.02)

    # --instance-lr-scale 0: the instances stay bit-identical; --sampling flops-bucket: exactly the stitches
    # of the descendants drawn by the FLOPs-bucket rule move (a seed where uniform draws would move others)
    descendants = built.descendants()
    flops = [descendant_flops(built.spec, d) for d in descendants]

    def stitches_of(draw) -> set[str]:
        return {s for step in range(3) for s in descendants[draw(step)["index"]].stitches}

    seed = next(s for s in range(100)
                if stitches_of(flops_bucket_sampler(s, flops)) != stitches_of(descendant_sampler(s, len(flops))))
    assert main(["pool", "finetune", str(tmp_path / "pool-b"), "--data", "synthetic", "--instance-lr-scale", "0",
                 "--sampling", "flops-bucket", "--seed", str(seed), *QUICK]) == 0
    _, after = _weights(tmp_path / "pool-b")
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k.startswith("models."))
    moved = {k.split(".")[1] for k, v in before.items() if k.startswith("stitches.") and not torch.equal(v, after[k])}
    assert moved == stitches_of(flops_bucket_sampler(seed, flops))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["pool", "finetune", str(pool), "--data", "synthetic", "--stitch-epochs", "-1", *QUICK])
    assert exc.value.code == 2 and "--stitch-epochs" in capsys.readouterr().err
    for argv in (["pool", "finetune", str(pool)], ["baseline", "snnet"]):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--data", "synthetic", "--sampling", "flops", *QUICK])
        assert exc.value.code == 2 and "--sampling" in capsys.readouterr().err
    assert SAMPLINGS == ("uniform", "flops-bucket")  # the CLI's choices


def test_cli_pool_stitch_reports_r2_and_drops_stale_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """... and the next commands it names can be pasted into a shell as they are (a pool path with a space was
    printed bare)."""
    import shlex

    pool_dir = make_tiny_pool(tmp_path / "my pool")
    assert main(["pool", "stitch", str(pool_dir), "--data", "synthetic", "--init", "lstsq", "--r2-images", "64",
                 "--json", "--quiet"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["init"] == "lstsq" and entry["images"] == 100 and entry["r2_images"] == 64
    assert len(entry["r2"]) == 16 and entry["r2_mean"] <= 1.0
    manifest = json.loads((pool_dir / "pool.json").read_text())
    assert manifest["stitch_init"] == "lstsq" and manifest["descendants"] == []
    assert main(["pool", "stitch", str(pool_dir), "--data", "synthetic", "--init", "lstsq-kd", "--stitch-steps",
                 "2", "--batch-size", "32", "--r2-images", "32", "--quiet"]) == 0
    entry = json.loads((pool_dir / "pool.json").read_text())["history"][-1]
    assert entry["init"] == "lstsq-kd" and entry["stitch_steps"] == 2 and entry["images"] == 512
    assert json.loads((pool_dir / "pool.json").read_text())["stage"] == "distilled"
    # new stitches in a fine-tuned pool: its stage says the stitches are no longer the fine-tuned ones
    capsys.readouterr()
    assert main(["pool", "finetune", str(pool_dir), "--data", "synthetic", *QUICK]) == 0
    assert shlex.split(capsys.readouterr().out.split("next: ")[1]) == ["lgp-edge", "pool", "eval", str(pool_dir),
                                                                       "--data", "synthetic"]
    assert json.loads((pool_dir / "pool.json").read_text())["stage"] == "finetuned"
    assert main(["pool", "stitch", str(pool_dir), "--data", "synthetic", "--init", "lstsq", "--r2-images", "32",
                 "--quiet"]) == 0
    assert shlex.split(capsys.readouterr().out.split("stitched top-1: ")[1]) == [
        "lgp-edge", "pool", "eval", str(pool_dir), "--data", "synthetic"]
    assert json.loads((pool_dir / "pool.json").read_text())["stage"] == "restitched"
    capsys.readouterr()
    assert main(["pool", "info", str(pool_dir)]) == 0
    assert "stage restitched (instances fine-tuned, stitches re-initialised since)" in capsys.readouterr().out


def test_pool_build_uses_the_shipped_ancestry_when_no_checkpoint_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import lgp_edge.models.ancestry as ancestry

    anc, pool = tmp_path / "anc", tmp_path / "pool"
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(anc),
                 *QUICK]) == 0
    assert ancestry.shipped_ancestry_dir("lgp_test_tiny") is None  # nothing ships for the test variant
    assert main(["pool", "build", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(pool),
                 *QUICK]) == 2
    assert "no trained weights" in capsys.readouterr().err and not pool.exists()
    monkeypatch.setattr(ancestry, "shipped_ancestry_dir", lambda name: anc if name == "lgp_test_tiny" else None)
    assert main(["pool", "build", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(pool),
                 "--stitch-steps", "2", *QUICK]) == 0  # (300, the default, outlast the rest)
    history = json.loads((pool / "pool.json").read_text())["history"]
    assert history[0]["ancestry_checkpoint"] == str(anc)


def test_stitch_steps_are_exact_across_epochs() -> None:
    from lgp_edge.pool.stitch_init import stitch_config

    cfg = stitch_config(TrainConfig(epochs=9, batch_size=256), 300, 1e-3, 60_000)  # 234 steps per epoch
    assert cfg.epochs * cfg.max_steps_per_epoch == 300 and cfg.lr == 1e-3
    cfg = stitch_config(TrainConfig(epochs=9, batch_size=32), 2, 1e-3, 512)
    assert (cfg.epochs, cfg.max_steps_per_epoch) == (1, 2)


def test_random_ancestry_is_seeded_so_a_resumed_build_matches_its_checkpoint(tmp_path: Path) -> None:
    """The checkpoint fingerprint hashes the teacher: a random teacher must be the same in the resumed process."""
    hashes = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
                     "--out", str(out), "--init", "lstsq", *QUICK]) == 0
        hashes.append(json.loads((out / "pool.json").read_text())["files"]["ancestry.safetensors"])
    assert hashes[0] == hashes[1]


def test_ancestry_resume_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    """ancestry.json said nothing of a resume: a resumed run read like an uninterrupted one."""
    from lgp_edge import train

    real = train._checkpoint

    def stop_after_first_epoch(loop, epoch, step_in_epoch):
        real(loop, epoch, step_in_epoch)
        if epoch == 1 and step_in_epoch == 0:
            raise KeyboardInterrupt

    anc = tmp_path / "anc"
    argv = ["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(anc),
            "--epochs", "2", "--max-steps-per-epoch", "2", "--batch-size", "16", "--quiet"]
    monkeypatch.setattr(train, "_checkpoint", stop_after_first_epoch)
    assert main(argv) == 130
    monkeypatch.setattr(train, "_checkpoint", real)
    assert main([*argv, "--resume"]) == 0
    meta = json.loads((anc / "ancestry.json").read_text())
    assert meta["resumed_from_step"] == 2 and len(meta["epoch_loss"]) == 2


def test_own_image_folder_from_ancestry_to_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A user's own RGB image folder with 3 classes: every small variant is a 1-channel, 10-class model, so
    `ancestry train` refused the folder (RGB vs 1 channel, 3 classes vs 10) and no checkpoint of another class
    count could be loaded by `pool build`. The ancestry now takes the data's classes and channels, and its
    checkpoint carries them to the pool."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "images"
    for split, n in (("train", 40), ("val", 6)):
        for k, cls in enumerate(("boot", "coat", "shirt")):
            d = data / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng(100 * k + i)
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    anc, pool = tmp_path / "anc", tmp_path / "pool"
    folder = f"imagefolder:{data}"
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", folder, "--out", str(anc),
                 "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "16", "--quiet"]) == 0
    spec = json.loads((anc / "ancestry.json").read_text())["spec"]
    assert spec["num_classes"] == 3 and spec["in_chans"] == 3
    assert main(["pool", "build", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data", folder,
                 "--out", str(pool), "--init", "lstsq", "--epochs", "1", "--max-steps-per-epoch", "2",
                 "--batch-size", "16", "--quiet"]) == 0
    manifest = json.loads((pool / "pool.json").read_text())
    assert manifest["preprocess"]["labels"] == ["boot", "coat", "shirt"] and manifest["preprocess"]["in_chans"] == 3
    capsys.readouterr()
    assert main(["pool", "eval", str(pool), "--data", folder, "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 18


def _image_folder(root: Path, classes: tuple[str, ...], n_train: int = 40, n_val: int = 6) -> Path:
    import numpy as np
    from PIL import Image

    for split, n in (("train", n_train), ("val", n_val)):
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng(100 * k + i)
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_image_folder_is_recorded_by_absolute_path_and_its_classes_are_checked_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A relative folder was recorded as typed and resolved against each later command's directory (another
    folder of the same classes validated an export); a folder of other classes, or of the same classes in another
    order, trained a pool or distilled from its ancestry against the wrong labels without a word."""
    _image_folder(tmp_path / "images", ("boot", "coat", "shirt"))
    _image_folder(tmp_path / "other", ("Coat", "boot", "shirt"))  # 'coat' renamed: the classes reorder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    train = ["--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "16", "--quiet"]
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "imagefolder:images", "--out", "anc",
                 *train]) == 0
    absolute = f"imagefolder:{(tmp_path / 'images').resolve()}"
    assert json.loads((tmp_path / "anc" / "ancestry.json").read_text())["data"] == absolute
    assert main(["pool", "build", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", "anc", "--data",
                 "imagefolder:images", "--out", "pool", "--init", "lstsq", *train]) == 0
    pool_json = tmp_path / "pool" / "pool.json"
    assert json.loads(pool_json.read_text())["data"] == absolute
    assert main(["pool", "eval", "pool", "--data", "imagefolder:~/images", "--quiet"]) == 0  # ~ is the home
    before = pool_json.read_bytes()
    capsys.readouterr()
    for argv in (["pool", "finetune", "pool", "--data", "imagefolder:other", *train],
                 ["pool", "stitch", "pool", "--data", "imagefolder:other", "--init", "lstsq", "--quiet"],
                 ["pool", "build", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", "anc", "--data",
                  "imagefolder:other", "--out", "pool2", "--init", "lstsq", *train],
                 ["pool", "distill", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", "anc", "--data",
                  "imagefolder:other", "--models", "ti6", "--out", "distilled", *train]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'Coat'" in err[0] and "'coat'" in err[0], (argv, err)
    assert pool_json.read_bytes() == before
    assert not (tmp_path / "pool2").exists() and not (tmp_path / "distilled").exists()


def test_image_folder_is_normalised_as_the_model_was_trained(tmp_path: Path) -> None:
    """Image folders were normalised with ImageNet's mean and std whatever the ancestry: an augreg ViT (0.5 /
    0.5) or a CLIP ViT was distilled, and its pool's apps told to feed, inputs it was never trained on."""
    import timm
    from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from lgp_edge.datasets import IMAGENET_MEAN, IMAGENET_STD, model_norm

    clip = timm.create_model("vit_base_patch32_clip_224", pretrained=False, img_size=32, embed_dim=32, depth=1,
                             num_heads=4)
    augreg = timm.create_model("vit_base_patch32_224", pretrained=False, img_size=32, embed_dim=32, depth=1,
                               num_heads=4)
    deit = timm.create_model("deit_base_patch16_224", pretrained=False, img_size=32, embed_dim=32, depth=1,
                             num_heads=4)
    assert model_norm(clip, "vit_base_patch32_clip_224", None) == (tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD))
    assert model_norm(augreg, "vit_base_patch32_224", None) == ((0.5,) * 3, (0.5,) * 3)
    assert model_norm(deit, "deit_base_patch16_224", None) == (IMAGENET_MEAN, IMAGENET_STD)
    trained = {"preprocess": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}  # ancestry.json wins
    assert model_norm(augreg, "vit_base_patch32_224", trained) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert model_norm(None, "lgp_test_tiny", None) is None  # a small variant: the dataset's own
    from PIL import Image

    for split in ("train", "val"):
        d = tmp_path / split / "red"
        d.mkdir(parents=True)
        Image.new("RGB", (20, 20), (255, 0, 0)).save(d / "0.png")
    data = open_data(f"imagefolder:{tmp_path}", img_size=16, in_chans=3, norm=((0.5,) * 3, (0.5,) * 3))
    x, _ = data.val[0]
    assert data.info.preprocess.mean == (0.5,) * 3 and data.info.preprocess.std == (0.5,) * 3
    assert torch.allclose(x[0], torch.ones(16, 16)) and torch.allclose(x[1], -torch.ones(16, 16))
    with pytest.raises(UsageError, match="3 means"):
        open_data(f"imagefolder:{tmp_path}", img_size=16, in_chans=3, norm=((0.5,), (0.5,)))


def test_a_damaged_image_found_late_says_the_run_can_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A zero-byte validation image stopped `ancestry train` after all its training, with a line that said
    only to replace the file, though the trained weights were checkpointed and `--resume` finishes the run."""
    from PIL import Image

    data = _image_folder(tmp_path / "images", ("a", "b"), n_train=16, n_val=2)
    damaged = data / "val" / "b" / "1.png"
    damaged.write_bytes(b"")  # read only when the trained model is scored
    anc = tmp_path / "anc"
    argv = ["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", f"imagefolder:{data}", "--out", str(anc),
            "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "16", "--quiet"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    # the line opens with the image (not a data-loading wrapper's text around the message) ...
    assert err[0].startswith(f"lgp-edge: error: image '{damaged}' cannot be read"), err
    # ... and says the trained weights are kept and how to finish
    assert f"training finished and is checkpointed in '{anc / 'train.ckpt'}'" in err[0], err
    assert err[0].endswith("rerun the same command with --resume once the data is fixed"), err
    assert (anc / "train.ckpt").is_dir() and not (anc / "ancestry.json").exists()
    Image.new("RGB", (20, 20), (0, 0, 255)).save(damaged)
    assert main([*argv, "--resume"]) == 0 and (anc / "ancestry.json").is_file()


def test_a_damaged_validation_image_after_pool_distillation_says_the_run_can_resume(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`pool build` read its first validation image only after distillation and stitch tuning: a damaged one
    stopped it there with a line that said only to replace the file, though the distillation was checkpointed."""
    from PIL import Image

    data = _image_folder(tmp_path / "images", ("a", "b"), n_train=16, n_val=2)
    quick = ["--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "16", "--quiet"]
    anc = tmp_path / "anc"  # an RGB ancestry of the image folder's two classes
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", f"imagefolder:{data}", "--out",
                 str(anc), *quick]) == 0
    damaged = data / "val" / "b" / "1.png"
    damaged.write_bytes(b"")
    pool = tmp_path / "pool"
    argv = ["pool", "build", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data",
            f"imagefolder:{data}", "--out", str(pool), "--init", "lstsq", *quick]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lgp-edge: error: image '{damaged}' cannot be read"), err
    assert f"the distillation is checkpointed in '{pool}'" in err[0], err
    assert err[0].endswith("rerun the same command with --resume once the data is fixed"), err
    Image.new("RGB", (20, 20), (0, 0, 255)).save(damaged)
    assert main([*argv, "--resume"]) == 0 and (pool / "pool.json").is_file()
    # pool distill and baseline snnet say the same
    damaged.write_bytes(b"")
    runs = ((["pool", "distill", "--models", "ti12"], tmp_path / "d"), (["baseline", "snnet"], tmp_path / "s"))
    for cmd, out in runs:
        capsys.readouterr()
        assert main([*cmd, "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data",
                     f"imagefolder:{data}", "--out", str(out), *quick]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "distillation is checkpointed" in err[0] and "--resume" in err[0], err
    # a training image damaged where only the lstsq stitch init reads it (after the anchors' distillation): the
    # same (baseline snnet said only to replace the file, pool build said the run can resume)
    Image.new("RGB", (20, 20), (0, 0, 255)).save(damaged)
    import lgp_edge.baselines.snnet as snnet

    real, bad = snnet.lstsq_images, data / "train" / "a" / "3.png"

    def read_after_damage(*a: object, **k: object) -> object:
        bad.write_bytes(b"")
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(snnet, "lstsq_images", read_after_damage)
        capsys.readouterr()
        assert main(["baseline", "snnet", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data",
                     f"imagefolder:{data}", "--out", str(tmp_path / "s2"), *quick]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"image '{bad}' cannot be read" in err[0], err
    assert "the anchors' distillation is checkpointed" in err[0] and "--resume" in err[0], err
    Image.new("RGB", (20, 20), (0, 0, 255)).save(bad)
    assert main(["baseline", "snnet", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", str(anc), "--data",
                 f"imagefolder:{data}", "--out", str(tmp_path / "s2"), *quick, "--resume"]) == 0


def test_a_build_evaluates_its_instances_on_the_images_it_is_asked_to(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """``pool build --eval-images N`` (``BuildRequest.eval_images``, as ``pool distill``'s): each instance's top-1
    right after distillation on N validation images, not on all of them (aux_init.py --images 200 evaluated both
    instances on all 10,000 Fashion-MNIST test images, a third of its smoke run); N past the split is the split;
    N < 1 refused before any work, and with --distilled, which evaluates nothing."""
    from lgp_edge.pool.build import BuildRequest, build_pool

    fast = ["--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic", "--init", "learned",
            "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8", "--quiet"]
    assert main(["pool", "build", *fast, "--out", str(tmp_path / "p"), "--eval-images", "16"]) == 0
    distill = json.loads((tmp_path / "p" / "pool.json").read_text())["history"][0]
    assert distill["top1_images"] == 16 and set(distill["top1"]) == {"ti6", "b6"}
    with pytest.raises(SystemExit) as e:
        main(["pool", "build", *fast, "--out", str(tmp_path / "q"), "--eval-images", "0"])
    assert e.value.code == 2
    assert "--eval-images" in capsys.readouterr().err and not (tmp_path / "q").exists()
    cfg = TrainConfig(epochs=1, max_steps_per_epoch=1, batch_size=8)
    req = BuildRequest(ancestry="lgp_test_tiny", checkpoint=None, data="synthetic", out=str(tmp_path / "r"),
                       init="learned", allow_random_ancestry=True, eval_images=10**6)
    assert build_pool(req, cfg).history[0]["top1_images"] == 256  # the synthetic split
    with pytest.raises(UsageError, match="--eval-images must be >= 1, got 0"):
        build_pool(BuildRequest(**{**req.__dict__, "out": str(tmp_path / "s"), "eval_images": 0}), cfg)
    assert not (tmp_path / "s").exists()
    # models taken from 'pool distill' runs come with the top-1 those runs measured: the flag would do nothing
    with pytest.raises(UsageError, match="drop --eval-images"):
        build_pool(BuildRequest(**{**req.__dict__, "out": str(tmp_path / "t"), "eval_images": 16,
                                   "distilled": (str(tmp_path / "d"),)}), cfg)
