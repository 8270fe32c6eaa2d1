"""A user's own timm ViT checkpoint as the ancestry: fine-tuned with its own classes, channels and image size, an
ImageNet head as a transfer-learning start, ViTs without some biases, DDP/compiled/EMA/timm-training checkpoints,
Hugging Face snapshot folders; and the ViT layouts lgp-edge refuses in one line. Tiny real timm models."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
from helpers import error_lines, run_cli

from lgp_edge.errors import CheckpointError, UsageError

TINY = "lgp_test_tiny"  # a timm VisionTransformer lgp-edge registers: dim 32, 12 blocks, patch 4, 16 px, 1 ch, 10 cls
QUICK = ["--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8", "--quiet"]


def _tiny(**kwargs) -> torch.nn.Module:
    """``lgp_test_tiny`` as a user fine-tuned it (``num_classes``, ``in_chans``, ``img_size``), random weights."""
    import timm

    from lgp_edge.models.ancestry import _register_small_variants

    _register_small_variants()
    torch.manual_seed(0)
    return timm.create_model(TINY, **kwargs).eval()


def _save(model: torch.nn.Module, path: Path, prefix: str = "") -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _folder(root: Path, classes: int = 4, n_train: int = 8, n_val: int = 2) -> str:
    import numpy as np
    from PIL import Image

    for split, n in (("train", n_train), ("val", n_val)):
        for k in range(classes):
            d = root / split / f"c{k}"
            d.mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng(100 * k + i)
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return f"imagefolder:{root}"


def _same(model: torch.nn.Module, other: torch.nn.Module) -> bool:
    a, b = model.state_dict(), other.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ 1. the checkpoint's classes, channels, size
def test_create_ancestry_takes_the_checkpoints_classes_channels_and_image_size(tmp_path: Path) -> None:
    from lgp_edge.models.ancestry import create_ancestry

    mine = _tiny(num_classes=4, in_chans=3, img_size=20)
    ckpt = _save(mine, tmp_path / "mine.safetensors")
    model, spec = create_ancestry(TINY, checkpoint=ckpt)
    assert (spec.num_classes, spec.in_chans, spec.img_size) == (4, 3, 20) and spec.checkpoint == str(ckpt)
    assert _same(model, mine)
    with pytest.raises(CheckpointError, match=r"has a 4-class head but the data has 10 classes; fine-tune it on the "
                       r"data first \('lgp-edge ancestry train --ancestry lgp_test_tiny --initial-checkpoint "):
        create_ancestry(TINY, checkpoint=ckpt, num_classes=10)


def test_pool_build_from_a_users_checkpoint_of_the_folders_classes(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _save(_tiny(num_classes=4, in_chans=3), tmp_path / "mine.safetensors")
    data, pool = _folder(tmp_path / "images"), tmp_path / "pool"
    rc, err = run_cli(["pool", "build", "--ancestry", TINY, "--ancestry-checkpoint", str(ckpt), "--data", data,
                       "--out", str(pool), "--init", "lstsq", *QUICK], capsys)
    assert rc == 0, err
    spec = json.loads((pool / "pool.json").read_text())["spec"]["ancestry"]
    assert (spec["num_classes"], spec["in_chans"]) == (4, 3)


# ---------------------------------------------------------------------- 2. ancestry train from a foreign head
def test_ancestry_train_starts_a_new_head_and_resamples_pos_embed(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """An ImageNet-style 1000-class checkpoint trained at 24 px warm-starts a 4-class, 16 px ancestry."""
    from safetensors.torch import load_file

    from lgp_edge.cli import main

    imagenet = _tiny(num_classes=1000, in_chans=3, img_size=24)
    ckpt = _save(imagenet, tmp_path / "imagenet.safetensors")
    pre = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # how it was trained: its images are normalised so
    (tmp_path / "ancestry.json").write_text(json.dumps({"name": "someone_elses", "preprocess": pre}))
    out = tmp_path / "anc"
    with caplog.at_level(logging.INFO, logger="lgp_edge"):
        assert main(["ancestry", "train", "--ancestry", TINY, "--initial-checkpoint", str(ckpt), "--data",
                     _folder(tmp_path / "images"), "--out", str(out), *QUICK, "--lr", "1e-9"]) == 0
    got = load_file(str(out / "ancestry.safetensors"))
    assert got["head.weight"].shape == (4, 32) and got["pos_embed"].shape == (1, 17, 32)
    before = imagenet.state_dict()
    k = "blocks.3.mlp.fc1.weight"
    assert (got[k] - before[k]).abs().max() < 1e-5  # every tensor that fits came from the checkpoint
    assert (got["pos_embed"][:, 0] - before["pos_embed"][:, 0]).abs().max() < 1e-5  # the class token's position
    text = caplog.text
    assert "1000-class head" in text and "new 4-class head" in text and "resampled from 37 to 17 tokens" in text
    meta = json.loads((out / "ancestry.json").read_text())
    assert meta["spec"]["num_classes"] == 4 and meta["initial_checkpoint"]["path"] == str(ckpt)
    assert {k: meta["preprocess"][k] for k in pre} == pre


def test_ancestry_train_still_refuses_what_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _tiny(num_classes=1000, in_chans=3).state_dict()
    del state["blocks.5.norm1.weight"]
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "cut.safetensors"))
    out = tmp_path / "anc"
    rc, err = run_cli(["ancestry", "train", "--ancestry", TINY, "--initial-checkpoint",
                       str(tmp_path / "cut.safetensors"), "--data", _folder(tmp_path / "images"), "--out", str(out),
                       *QUICK], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "does not fit ancestry 'lgp_test_tiny'" in lines[0]
    assert "blocks.5.norm1.weight" in lines[0] and not out.exists()


# ---------------------------------------------------------------------------- 3. ViT layouts: inherit, refuse
def _plain_vit(**kwargs) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=6, num_heads=4, num_classes=4,
                             **kwargs).eval()


@pytest.mark.parametrize("kwargs", [{"qkv_bias": False}, {"pre_norm": True}],
                         ids=["no-qkv-bias (vit_base_patch16_224_miil)", "clip (no patch bias, norm_pre)"])
def test_inheritance_keeps_the_students_own_init_for_what_the_ancestry_lacks(kwargs: dict) -> None:
    from torch import nn

    from lgp_edge.models.ancestry import spec_of
    from lgp_edge.models.instances import create_auxiliary, plan_instances
    from lgp_edge.pool.distill import DistillObjective
    from lgp_edge.pool.inherit import inherit_from_ancestry

    anc = _plain_vit(**kwargs)
    spec = spec_of(anc, "mine", None)
    insts = plan_instances(spec, 6, ("ti", "b"))
    students = nn.ModuleDict({i.name: create_auxiliary(spec, i) for i in insts})
    own = {k: v.clone() for k, v in students["b6"].state_dict().items()}
    for inst in insts:
        inherit_from_ancestry(students[inst.name], anc, inst)
    got, big = students["b6"].state_dict(), anc.state_dict()
    lacking = [k for k in got if k not in big]
    assert lacking and all(torch.equal(got[k], own[k]) for k in lacking)
    assert all(torch.equal(got[k], big[k]) for k in ("patch_embed.proj.weight", "blocks.1.attn.qkv.weight"))
    x = torch.randn(2, 3, 32, 32)
    loss = DistillObjective(anc, students, insts, teacher_dim=64, teacher_depth=6)(x, torch.tensor([0, 1]))
    assert torch.isfinite(loss)


def test_distilled_deit_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lgp_edge.models.ancestry import create_ancestry

    with pytest.raises(UsageError, match="has a distillation token.*use the non-distilled deit_tiny_patch16_224"):
        create_ancestry("deit_tiny_distilled_patch16_224", img_size=32)
    out = tmp_path / "pool"
    rc, err = run_cli(["pool", "build", "--ancestry", "deit_tiny_distilled_patch16_224", "--allow-random-ancestry",
                       "--data", "synthetic", "--out", str(out), *QUICK], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "non-distilled" in err and not out.exists()


def _swiglu_vit() -> torch.nn.Module:
    from timm.layers import SwiGLUPacked

    return _plain_vit(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, mlp_ratio=2.5)


@pytest.mark.parametrize(("name", "build", "message"), [
    ("vit_tiny_r_s16_p8_224", lambda: __import__("timm").create_model("vit_tiny_r_s16_p8_224", depth=2, img_size=64),
     "HybridEmbed"),
    ("vit_small_patch16_18x2_224",
     lambda: __import__("timm").create_model("vit_small_patch16_18x2_224", depth=2, img_size=32),
     "ParallelThingsBlock blocks"),
    ("vit_giant_patch14_dinov2", _swiglu_vit, "GluMlp MLP blocks"),
])
def test_layouts_the_distillation_cannot_take_are_refused(name: str, build, message: str) -> None:
    """A CNN stem (the auxiliary models would take its feature channels as image channels), parallel blocks (no
    per-block attention to distil), a packed SwiGLU MLP (its hidden selection indexes past fc2)."""
    from lgp_edge.models.ancestry import _check_supported

    with pytest.raises(UsageError, match=message):
        _check_supported(build(), name)


# --------------------------------------------------------------------------------------- 4. read_state_dict
@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_wrapper_prefixes_are_stripped(tmp_path: Path, prefix: str, kind: str) -> None:
    from lgp_edge.models.ancestry import read_state_dict

    model = _tiny()
    if kind == "safetensors":
        path = _save(model, tmp_path / "w.safetensors", prefix)
    else:
        path = tmp_path / "w.pth"
        torch.save({"state_dict": {prefix + k: v for k, v in model.state_dict().items()}}, path)
    got = read_state_dict(path)
    assert got.keys() == model.state_dict().keys()


def test_timm_training_checkpoint_with_args_loads_its_ema_weights(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """model_best.pth.tar as timm's CheckpointSaver writes it (epoch, arch, state_dict, optimizer, args, EMA)."""
    from timm.utils import CheckpointSaver, ModelEmaV3

    from lgp_edge.models.ancestry import create_ancestry, read_state_dict

    model = _tiny(num_classes=4)
    ema = ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the raw weights move on; the EMA keeps the earlier ones
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 1, 16, 16)).sum().backward()
    opt.step()
    args = argparse.Namespace(model=TINY, lr=0.1, epochs=3, data_dir="/data", aa=None, mean=(0.5,), pretrained=False)
    saver = CheckpointSaver(model, opt, args=args, model_ema=ema, checkpoint_dir=str(tmp_path),
                            recovery_dir=str(tmp_path))
    saver.save_checkpoint(epoch=0, metric=0.5)
    best = tmp_path / "model_best.pth.tar"
    with torch.serialization.safe_globals([argparse.Namespace]):
        assert "args" in torch.load(best, weights_only=True)  # as timm wrote it
    with caplog.at_level(logging.INFO, logger="lgp_edge"):
        got = read_state_dict(best)
    assert "EMA weights ('state_dict_ema')" in caplog.text
    emas = ema.module.state_dict()
    assert got.keys() == emas.keys() and all(torch.equal(got[k], emas[k]) for k in got)
    anc, spec = create_ancestry(TINY, checkpoint=best)
    assert spec.num_classes == 4


def test_other_pickled_objects_are_still_refused(tmp_path: Path) -> None:
    from lgp_edge.models.ancestry import read_state_dict

    path = tmp_path / "w.pth"
    torch.save({"state_dict": _tiny().state_dict(), "args": Path("/data")}, path)
    with pytest.raises(CheckpointError, match="a pickle of arbitrary objects is never loaded.*PosixPath"):
        read_state_dict(path)
    torch.save({"model": argparse.Namespace(weights=[1, 2, 3])}, path)  # loads now, but holds no weights
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(path)



_EVIL = """
import os, pickle, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
obj = {"state_dict": {"w": torch.zeros(2)}, "hook": Evil()}
if sys.argv[3] == "zip":
    torch.save(obj, sys.argv[1])
else:
    with open(sys.argv[1], "wb") as f:
        pickle.dump(obj, f, protocol=int(sys.argv[3]))
"""


@pytest.mark.parametrize("kind", ["zip", "2", "4"], ids=["torch-save", "pickle-protocol-2", "pickle-protocol-4"])
def test_a_pickle_that_would_run_code_is_refused_naming_the_object(kind: str, tmp_path: Path) -> None:
    """A checkpoint whose pickle calls os.system is refused, nothing runs, and the one line names the refused
    object. torch 2.14's wording ("Trying to load unsupported GLOBAL posix.system ...") was not recognised: the line
    ended in torch's advice to re-run torch.load with weights_only set to False, and a raw pickle printed two lines
    of torch's UserWarning before it."""
    import os
    import subprocess
    import sys

    evil, marker = tmp_path / "evil.pth", tmp_path / "PWNED"
    subprocess.run([sys.executable, "-c", _EVIL, str(evil), str(marker), kind], check=True)
    done = subprocess.run([sys.executable, "-m", "lgp_edge.cli", "export", "--model", "lgp_vit_fmnist", "--checkpoint",
                           str(evil), "--target", "cpu", "--out", str(tmp_path / "out"), "--format", "onnx"],
                          capture_output=True, text=True, timeout=300)
    err = done.stderr
    assert done.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert f"({os.system.__module__}.system)" in err and "never loaded" in err, err
    assert "weights_only` set to `False" not in err and "weights_only=False" not in err, err
    assert "safetensors" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ 5. a weights folder
def test_a_hugging_face_snapshot_folder_is_read(tmp_path: Path) -> None:
    from lgp_edge.models.ancestry import create_ancestry, read_state_dict

    mine = _tiny(num_classes=4)
    snap = tmp_path / "snapshot"
    _save(mine, snap / "model.safetensors")
    (snap / "config.json").write_text(json.dumps({"architecture": TINY, "num_classes": 4}))
    assert read_state_dict(snap).keys() == mine.state_dict().keys()
    model, spec = create_ancestry(TINY, checkpoint=snap)
    assert spec.num_classes == 4 and _same(model, mine)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"folder '.*empty' holds neither ancestry.safetensors .* nor "
                       r"model.safetensors"):
        read_state_dict(empty)


# ------------------------------------------------------------------ the classes a warm start or export is given
def _reordered(tmp_path: Path) -> tuple[str, str]:
    """Two folders of the same four classes, the second with one renamed so that they sort in another order."""
    first = _folder(tmp_path / "images")
    (tmp_path / "other").mkdir()
    import shutil

    for split in ("train", "val"):
        shutil.copytree(tmp_path / "images" / split, tmp_path / "other" / split)
        (tmp_path / "other" / split / "c3").rename(tmp_path / "other" / split / "B3")  # sorts first now
    return first, f"imagefolder:{tmp_path / 'other'}"


def test_export_model_refuses_a_folder_whose_classes_are_in_another_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`export --model --checkpoint DIR --data FOLDER` labelled the head by the folder's order, not the one the
    checkpoint was trained with (its ancestry.json): an app would name the wrong class."""
    first, other = _reordered(tmp_path)
    anc = tmp_path / "anc"
    rc, err = run_cli(["ancestry", "train", "--ancestry", TINY, "--data", first, "--out", str(anc), *QUICK], capsys)
    assert rc == 0, err
    rc, err = run_cli(["export", "--model", TINY, "--checkpoint", str(anc), "--data", other, "--target", "cpu",
                       "--format", "onnx", "--out", str(tmp_path / "out"), "--quiet"], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "'B3'" in lines[0] and "in that order" in lines[0], err
    assert not (tmp_path / "out").exists()


def test_a_warm_start_on_reordered_classes_starts_a_new_head(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The head of an earlier run classifies its folder's classes in its order; warm-starting on a folder of as
    many classes in another order kept that head and trained it against the new order without a word."""
    from safetensors.torch import load_file

    from lgp_edge.cli import main

    first, other = _reordered(tmp_path)
    anc, again = tmp_path / "anc", tmp_path / "again"
    assert main(["ancestry", "train", "--ancestry", TINY, "--data", first, "--out", str(anc), *QUICK]) == 0
    with caplog.at_level(logging.INFO, logger="lgp_edge"):
        assert main(["ancestry", "train", "--ancestry", TINY, "--initial-checkpoint", str(anc), "--data", other,
                     "--out", str(again), *QUICK, "--lr", "1e-9"]) == 0
    old, new = load_file(str(anc / "ancestry.safetensors")), load_file(str(again / "ancestry.safetensors"))
    assert (new["head.weight"] - old["head.weight"]).abs().max() > 1e-3  # a new head, not the old one trained on
    assert (new["blocks.2.attn.qkv.weight"] - old["blocks.2.attn.qkv.weight"]).abs().max() < 1e-5
    assert "new 4-class head" in caplog.text and "another order" in caplog.text
    # the same folder again: the head is kept (a second cycle)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lgp_edge"):
        assert main(["ancestry", "train", "--ancestry", TINY, "--initial-checkpoint", str(anc), "--data", first,
                     "--out", str(tmp_path / "cycle"), *QUICK, "--lr", "1e-9"]) == 0
    kept = load_file(str(tmp_path / "cycle" / "ancestry.safetensors"))
    assert (kept["head.weight"] - old["head.weight"]).abs().max() < 1e-5 and "new 4-class head" not in caplog.text


def test_an_ancestry_the_pool_cannot_split_is_refused_before_the_class_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 3-head model with an ImageNet head was told to be fine-tuned on the data first, and refused after that
    (3 heads cannot be split into Ti's quarter): the head count is checked first."""
    import timm

    three = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)
    ckpt = _save(three, tmp_path / "three.safetensors")
    rc, err = run_cli(["pool", "build", "--ancestry", "deit_tiny_patch16_224", "--ancestry-checkpoint", str(ckpt),
                       "--data", _folder(tmp_path / "images"), "--out", str(tmp_path / "pool"), *QUICK], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "heads" in lines[0] and "fine-tune" not in lines[0], err


def test_a_checkpoint_of_another_variant_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An `ancestry train` directory of one variant given with another's name failed with torch's raw size
    mismatch; its ancestry.json says which variant it is."""
    anc = tmp_path / "anc"
    rc, err = run_cli(["ancestry", "train", "--ancestry", TINY, "--data", "synthetic", "--out", str(anc), *QUICK],
                      capsys)
    assert rc == 0, err
    rc, err = run_cli(["pool", "build", "--ancestry", "lgp_vit_fmnist", "--ancestry-checkpoint", str(anc), "--data",
                       "synthetic", "--out", str(tmp_path / "pool"), *QUICK], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and f"--ancestry {TINY}" in lines[0], err


def _snapshot(tmp_path: Path) -> Path:
    """A Hugging Face snapshot of a fine-tuned timm model: model.safetensors and timm's config.json, whose
    pretrained_cfg records the normalisation it was trained with."""
    snap = tmp_path / "snapshot"
    _save(_tiny(num_classes=4, in_chans=3), snap / "model.safetensors")
    (snap / "config.json").write_text(json.dumps({
        "architecture": TINY, "num_classes": 4, "num_features": 32, "global_pool": "token",
        "pretrained_cfg": {"tag": "mine", "input_size": [3, 16, 16], "mean": [0.1, 0.2, 0.3],
                           "std": [0.4, 0.5, 0.6], "num_classes": 4, "classifier": "head"}}))
    return snap


def test_a_hub_snapshot_with_constants_of_0_255_pixels_is_refused(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Constants of 0..255 pixels in config.json were dropped, silently, and the stock model's used instead."""
    snap = _snapshot(tmp_path)
    cfg = json.loads((snap / "config.json").read_text())
    cfg["pretrained_cfg"].update(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
    (snap / "config.json").write_text(json.dumps(cfg))
    pool = tmp_path / "pool"
    rc, err = run_cli(["pool", "build", "--ancestry", TINY, "--ancestry-checkpoint", str(snap), "--data",
                       _folder(tmp_path / "images"), "--out", str(pool), "--init", "lstsq", *QUICK], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "config.json' has pretrained_cfg mean [123.675" in lines[0], err
    assert "mean in [0, 1] and std in (0, 1]" in lines[0] and not pool.exists()


def test_a_hub_snapshot_is_normalised_as_its_config_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A snapshot's config.json records the mean/std the model was trained with; it was ignored (the stock
    model's were used, silently) and an export of the snapshot would have crashed reading it."""
    snap = _snapshot(tmp_path)
    pool = tmp_path / "pool"
    rc, err = run_cli(["pool", "build", "--ancestry", TINY, "--ancestry-checkpoint", str(snap), "--data",
                       _folder(tmp_path / "images"), "--out", str(pool), "--init", "lstsq", *QUICK], capsys)
    assert rc == 0, err
    pre = json.loads((pool / "pool.json").read_text())["preprocess"]
    assert (pre["mean"], pre["std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    out = tmp_path / "out"
    rc, err = run_cli(["export", "--model", TINY, "--checkpoint", str(snap), "--target", "cpu", "--format", "onnx",
                       "--out", str(out), "--quiet"], capsys)
    assert rc == 0, err
    mf = json.loads((out / "manifest.json").read_text())
    assert (mf["preprocess"]["mean"], mf["preprocess"]["std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])


def _args_snapshot(tmp_path: Path, name: str, **model_args) -> tuple[Path, torch.nn.Module]:
    """A snapshot as timm's ``save_for_hf`` writes it for a model built with ``model_args``: config.json carries
    them (``model_args``), and only with them do the weights mean what they were trained as."""
    model = _tiny(num_classes=4, in_chans=3, **model_args)
    snap = tmp_path / name
    _save(model, snap / "model.safetensors")
    (snap / "config.json").write_text(json.dumps({
        "architecture": TINY, "num_classes": 4, "num_features": 32,
        "global_pool": model_args.get("global_pool", "token"), "model_args": model_args,
        "pretrained_cfg": {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.25] * 3, "num_classes": 4}}))
    return snap, model


def test_a_snapshots_model_args_build_the_model_it_was_trained_as(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """config.json's model_args were ignored: a snapshot of an average-pooled model was rebuilt with class-token
    pooling, exported, and "passed" validation against that same wrong model (3% agreement with the user's own);
    other options (register tokens, QK-norm) ended in "does not fit", as if the file were damaged."""
    import numpy as np
    import onnxruntime as ort

    from lgp_edge.export.timm_model import build_model

    snap, mine = _args_snapshot(tmp_path, "avg", global_pool="avg", fc_norm=False)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        want = mine(x).numpy()
        assert np.abs(build_model(TINY, snap)(x).numpy() - want).max() < 1e-5
    out = tmp_path / "out"
    rc, err = run_cli(["export", "--model", TINY, "--checkpoint", str(snap), "--target", "cpu", "--format", "onnx",
                       "--out", str(out), "--val-images", "4", "--quiet"], capsys)
    assert rc == 0, err
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(3)])
    assert np.abs(got - want).max() < 1e-4
    # as an ancestry, the layout it really has is refused for what it is, in one line
    pool = tmp_path / "pool"
    rc, err = run_cli(["pool", "build", "--ancestry", TINY, "--ancestry-checkpoint", str(snap), "--data",
                       _folder(tmp_path / "images"), "--out", str(pool), *QUICK], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "token pooling" in err and not pool.exists(), err
    qk, _ = _args_snapshot(tmp_path, "qk", qk_norm=True)
    rc, err = run_cli(["pool", "build", "--ancestry", TINY, "--ancestry-checkpoint", str(qk), "--data",
                       _folder(tmp_path / "images2"), "--out", str(pool), *QUICK], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "QK-norm" in err and "does not fit" not in err, err
    # model_args that are no argument of the model: one line naming it
    cfg = json.loads((qk / "config.json").read_text())
    cfg["model_args"] = {"qk_norm": True, "no_such_option": 3}
    (qk / "config.json").write_text(json.dumps(cfg))
    rc, err = run_cli(["export", "--model", TINY, "--checkpoint", str(qk), "--target", "cpu", "--format", "onnx",
                       "--out", str(tmp_path / "o2"), "--quiet"], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "no_such_option" in err and "model_args" in err, err


def test_layerscale_is_folded_into_the_inherited_blocks() -> None:
    """LayerScale (ls1/ls2, e.g. DINOv2) was dropped without a word when the auxiliary models inherited the
    ancestry's blocks: B's block 0 then differed from the ancestry's by 1.05 (output scale 3). Folded into the
    attention projection and fc2, B's inherited blocks compute exactly the ancestry's."""
    from torch import nn

    from lgp_edge.models.ancestry import _check_supported, spec_of
    from lgp_edge.models.instances import create_auxiliary, plan_instances
    from lgp_edge.pool.inherit import inherit_from_ancestry

    anc = _plain_vit(init_values=0.5)
    with torch.no_grad():
        for b in anc.blocks:
            b.ls1.gamma.uniform_(0.2, 1.5)
            b.ls2.gamma.uniform_(0.2, 1.5)
    _check_supported(anc, "mine")
    spec = spec_of(anc, "mine", None)
    insts = plan_instances(spec, 6, ("ti", "b"))
    students = nn.ModuleDict({i.name: create_auxiliary(spec, i) for i in insts})
    for inst in insts:
        inherit_from_ancestry(students[inst.name], anc, inst)
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        assert (students["b6"].blocks[0](x) - anc.blocks[0](x)).abs().max() < 1e-5
        assert (students["b6"].blocks[3](x) - anc.blocks[3](x)).abs().max() < 1e-5


def test_blocks_with_qk_norm_are_refused() -> None:
    from lgp_edge.models.ancestry import _check_supported

    with pytest.raises(UsageError, match="QK-norm"):
        _check_supported(_plain_vit(qk_norm=True), "mine")


def test_a_snapshots_evaluation_crop_is_the_one_its_config_records(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A snapshot's config.json records the transform it was evaluated with (bicubic, centre crop 0.875); an
    export said "bilinear, no crop", and its manifest gave the stock model's pretrained_cfg beside it."""
    snap = _snapshot(tmp_path)
    cfg = json.loads((snap / "config.json").read_text())
    cfg["pretrained_cfg"].update(crop_pct=0.875, interpolation="bicubic", crop_mode="center")
    (snap / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    rc, err = run_cli(["export", "--model", TINY, "--checkpoint", str(snap), "--target", "cpu", "--format", "onnx",
                       "--out", str(out), "--val-images", "4", "--quiet"], capsys)
    assert rc == 0, err
    mf = json.loads((out / "manifest.json").read_text())
    got = mf["model"]["timm_pretrained_cfg"]
    assert got["crop_pct"] == 0.875 and got["interpolation"] == "bicubic", got
    text = (out / "EMBEDDING.md").read_text()
    assert "bicubic" in text and "no crop" not in text and "central 16 x 16" in text, text[:1500]
