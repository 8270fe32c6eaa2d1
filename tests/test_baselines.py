"""Baselines: SN-Net plan at DeiT scale, and each baseline end-to-end on the tiny ancestry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lgp_edge.cli import main

DEIT = "deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224"
TINY = "lgp_test_tiny"
SMOKE = ["--data", "synthetic", "--epochs", "1", "--batch-size", "64", "--max-steps-per-epoch", "2",
         "--eval-images", "64", "--quiet", "--json"]


def run_json(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_snnet_plan_counts_without_building_and_matches_a_built_family(capsys: pytest.CaptureFixture,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan is counted from the architectures (it built the whole random family, 1.5 GB at DeiT scale);
    its numbers are those of the family built for real."""
    from lgp_edge.baselines.snnet import snnet_spec
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.pool.pool import LearngenePool

    built = LearngenePool(snnet_spec(create_ancestry(TINY)[1])).eval()
    expected = {d.key: built.record(d) for d in built.descendants()}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("baseline snnet --plan built a pool")

    monkeypatch.setattr(LearngenePool, "__init__", refuse)
    out = run_json(capsys, ["baseline", "snnet", "--plan", "--ancestry", TINY, "--json"])
    assert {r["key"]: (r["blocks"], r["params"], r["flops"]) for r in out["descendants"]} == {
        k: (r.blocks, r.params, r.flops) for k, r in expected.items()}
    assert out["stored_params"] == built.stored_params() and out["stitch_layers"] == len(built.stitches)


def test_snnet_plan_reproduces_deit_configs(capsys: pytest.CaptureFixture) -> None:
    out = run_json(capsys, ["baseline", "snnet", "--plan", "--anchors", DEIT, "--json"])
    rows = out["descendants"]
    assert len(rows) == 71 and out["configs"] == 71
    assert out["stitch_layers"] == 22  # 11 per pair, Ti-S and S-B
    by_key = {r["key"]: r for r in rows}
    assert len(by_key) == 71
    for key, params, flops in (("ti12.0-11", 5_717_416, 1_258_411_200), ("s12.0-11", 22_050_664, 4_608_338_304),
                               ("b12.0-11", 86_567_656, 17_582_740_224)):
        assert (by_key[key]["params"], by_key[key]["flops"]) == (params, flops)
        assert isinstance(by_key[key]["params"], int) and isinstance(by_key[key]["flops"], int)
    # nearest stitching: no Ti->B config, 34 per pair
    assert sum(k.startswith("ti12") and "+s12" in k for k in by_key) == 34
    assert sum(k.startswith("s12") and "+b12" in k for k in by_key) == 34
    assert not any(k.startswith("ti12") and "+b12" in k for k in by_key)
    # SN-Net's config (j, k) runs front blocks 0..j, the stitch, back blocks k..11: (0, 0) is the deepest
    # Ti->S config and no config ends in the back anchor's head alone
    assert "ti12.0-0+s12.0-11" in by_key and "s12.0-1+b12.0-11" in by_key and "s12.0-11+b12.11-11" in by_key
    assert not any(k.endswith(".head") for k in by_key)
    assert max(by_key["ti12.0-1+s12.0-11"]["flops"], by_key["ti12.0-0+s12.0-11"]["flops"]) > 4_608_338_304
    assert [a["timm"] for a in out["anchors"]] == DEIT.split(",")
    # stored = three DeiT models + 22 stitch layers (SN-Net's ~118 M)
    stitches = 11 * (192 * 384 + 384) + 11 * (384 * 768 + 768)
    assert out["stored_params"] == 5_717_416 + 22_050_664 + 86_567_656 + stitches


def test_snnet_plan_needs_anchors_or_ancestry(capsys: pytest.CaptureFixture) -> None:
    assert main(["baseline", "snnet", "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--anchors" in err
    assert main(["baseline", "snnet", "--plan", "--anchors", "deit_tiny_patch16_224,vit_base_patch32_224"]) == 2


def test_snnet_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                               caplog: pytest.LogCaptureFixture) -> None:
    """... and a folder a user puts into OUT during the run, named like a distillation checkpoint, is kept in the
    new OUT as the warning says (it was deleted right after the warning)."""
    from lgp_edge.baselines import snnet

    mine = tmp_path / "sn" / "distill-mine.ckpt"
    real = snnet.init_stitches

    def user_adds_a_folder(*a, **k):
        mine.mkdir(parents=True)
        (mine / "notes.txt").write_text("mine\n")
        return real(*a, **k)

    monkeypatch.setattr(snnet, "init_stitches", user_adds_a_folder)
    out = run_json(capsys, ["baseline", "snnet", "--ancestry", TINY, "--allow-random-ancestry", "--out",
                            str(tmp_path / "sn"), "--anchor-epochs", "1", *SMOKE])
    assert "kept 'distill-mine.ckpt'" in caplog.text
    assert (mine / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in (tmp_path / "sn").iterdir() if p.name.endswith(".ckpt")) == ["distill-mine.ckpt"]
    rows = out["descendants"]
    assert len(rows) == 71 and all(r["top1"] is not None for r in rows)
    from lgp_edge.pool.pool import load_pool

    pool, manifest = load_pool(tmp_path / "sn")
    assert [i.name for i in manifest.spec.instances] == ["ti12", "s12", "b12"]
    assert [i.embed_dim for i in manifest.spec.instances] == [8, 16, 32]
    assert manifest.stage == "finetuned" and manifest.stitch_init == "lstsq"
    assert len(pool.stitches) == 22


def test_snnet_b_anchor_is_the_ancestry(tmp_path: Path) -> None:
    from lgp_edge.baselines.snnet import SNNetRequest, build_snnet
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.pool.pool import load_pool, load_pool_ancestry
    from lgp_edge.train import TrainConfig

    build_snnet(SNNetRequest(ancestry=TINY, checkpoint=None, data="synthetic", out=str(tmp_path / "sn"),
                             allow_random_ancestry=True),
                TrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=1))
    pool, manifest = load_pool(tmp_path / "sn")
    teacher = load_pool_ancestry(tmp_path / "sn", manifest)
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(pool(x, 2), teacher(x), atol=1e-5)  # descendant 2 = b12 alone
    assert create_ancestry(TINY)[1].depth == manifest.spec.depth == 12


@pytest.mark.parametrize("method,extra,count", [("scratch", [], 3), ("vanilla", ["--narrow", "3,0"], 2)])
def test_single_baselines_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture, method: str,
                                          extra: list[str], count: int) -> None:
    out = run_json(capsys, ["baseline", method, "--ancestry", TINY, "--allow-random-ancestry", "--out",
                            str(tmp_path / method), *extra, *SMOKE])
    rows = out["configs"]
    assert len(rows) == count and all(0 <= r["top1"] <= 100 for r in rows)
    assert out["stored_params"] == sum(r["params"] for r in rows)
    assert len(list((tmp_path / method).glob("*.safetensors"))) == count
    if method == "scratch":
        assert rows[0]["flops"] < rows[1]["flops"] < rows[2]["flops"]
    else:
        assert [r["key"] for r in rows] == ["ti6.0-2+b6.3-5", "b6.0-5"]
    # --force replaces the baseline's own earlier output, and nothing it did not write
    again = run_json(capsys, ["baseline", method, "--ancestry", TINY, "--allow-random-ancestry", "--out",
                              str(tmp_path / method), "--force", *extra, *SMOKE])
    assert [r["key"] for r in again["configs"]] == [r["key"] for r in rows]
    (tmp_path / method / "notes.txt").write_text("mine")
    assert main(["baseline", method, "--ancestry", TINY, "--allow-random-ancestry", "--out", str(tmp_path / method),
                 "--force", *extra, *SMOKE]) == 2
    assert "notes.txt" in capsys.readouterr().err and (tmp_path / method / "notes.txt").read_text() == "mine"


def test_vanilla_inherits_the_last_three_blocks() -> None:
    from lgp_edge.baselines.scratch_vanilla import family, inherit_learngene
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.pool.pool import LearngenePool

    ancestry, aspec = create_ancestry(TINY)
    pool = LearngenePool(family(aspec))
    inherit_learngene(pool, ancestry)
    b = pool.models["b6"]
    for i in range(3):
        for (k, v), (_, w) in zip(b.blocks[3 + i].state_dict().items(), ancestry.blocks[9 + i].state_dict().items()):
            assert torch.equal(v, w), k
    assert torch.equal(b.head.weight, ancestry.head.weight)


@pytest.mark.parametrize("argv", [
    ["baseline", "vanilla", "--ancestry", TINY, "--data", "synthetic", "--out", "X"],  # no checkpoint
    ["baseline", "vanilla", "--ancestry", TINY, "--allow-random-ancestry", "--data", "synthetic", "--out", "X",
     "--narrow", "4"],
    ["baseline", "scratch", "--ancestry", TINY, "--data", "synthetic", "--out", "X", "--keys", "nope"],
    ["baseline", "snnet", "--ancestry", TINY, "--data", "synthetic"],  # no --out
    ["baseline", "scratch", "--ancestry", TINY, "--data", "imagenet", "--out", "X"],
])
def test_bad_input_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                   argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lgp-edge: error:") and err.count("\n") == 1
    assert not (tmp_path / "X").exists()
