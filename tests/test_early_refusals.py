"""Bad input to ``export`` and ``profile`` is refused before torch is imported.

Each refusal below came after importing torch, timm and torchvision (3-5 s on 2 cores), and the ones that need
the pool's descendants after loading its weights too (9 s for ``profile --descendant`` with a typo): a user's
typo waited as long as the start of a real run. The checks need only the target, the profile and pool.json.
"""

from __future__ import annotations

from pathlib import Path

from helpers import cli_imports


def _refused(argvs: list[list[str]], tmp_path: Path) -> list[str]:
    got = cli_imports(argvs, env={"LGP_EDGE_STORE": str(tmp_path / "store.sqlite")})
    assert got["codes"] == [2] * len(argvs), got
    assert got["imported"] == [], got
    assert not (tmp_path / "store.sqlite").exists()
    return got["errors"]


def test_export_refusals_come_before_torch(tiny_pool: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("not lgp-edge's\n")
    pool = ["--pool", str(tiny_pool)]
    out = ["--out", str(tmp_path / "out")]
    errors = _refused([
        ["export", "--target", "cpu", *pool, *out, "--opset", "99"],
        ["export", "--target", "jetson-nano", *pool, *out, "--opset", "17"],
        ["export", "--target", "cpu", *pool, "--out", str(full)],
        ["export", "--target", "cpu", *pool, *out, "--val-images", "0"],
        ["export", "--target", "iphone", *pool, *out, "--dynamic-batch"],
        ["export", "--profile", "cpu-int8", *pool, *out, "--val-images", "100"],
        ["export", "--target", "cpu", "--pool", str(tmp_path / "no-pool"), *out],
        ["export", "--target", "cpu", *pool, *out, "--descendant", "ti6.0-9"],
        ["export", "--target", "cpu", "--model", "vit_tiny_patch16_224", "--checkpoint", str(tmp_path / "w.pth"),
         "--out", str(full)],
        ["export", "--target", "cpu", *pool, *out, "--data", "fashion-mnst"],
        ["export", "--target", "cpu", *pool, *out, "--data", f"imagefolder:{tmp_path / 'no-images'}"],
        ["export", "--profile", "cpu-int8", *pool, *out, "--data", "fashion-mnist", "--calib-images", "90000"],
    ], tmp_path)
    assert "--opset must be between 13 and" in errors[0]
    assert "--opset 17 is above what target 'jetson-nano' parses" in errors[1]
    assert "exists and is not empty" in errors[2]
    assert "--val-images: must be >= 1" in errors[3]
    assert "--dynamic-batch" in errors[4]
    assert "--val-images 100 is too few for int8" in errors[5]
    assert "is not a pool directory" in errors[6]
    assert "has no descendant 'ti6.0-9'" in errors[7]
    assert "exists and is not empty" in errors[8]
    assert "unknown --data 'fashion-mnst'" in errors[9]
    assert "needs train/ and val/ subfolders" in errors[10]
    assert "'fashion-mnist' has 60000 training images" in errors[11]
    assert not (tmp_path / "out").exists() and [p.name for p in full.iterdir()] == ["mine.txt"]


def test_profile_refusals_come_before_torch(tiny_pool: Path, tmp_path: Path) -> None:
    pool = ["--pool", str(tiny_pool)]
    errors = _refused([
        ["profile", "--target", "nosuch", *pool],
        ["profile", "--target", "cpu", "--pool", str(tmp_path / "no-pool")],
        ["profile", "--target", "cpu", *pool, "--descendant", "ti6.0-9"],
        ["profile", "--target", "cpu", *pool, "--iters", "0"],
        ["profile", "--target", "cpu", *pool, "--precision", "fp16"],
        ["profile", "--target", "iphone", *pool],
    ], tmp_path)
    assert "unknown target 'nosuch'" in errors[0]
    assert "is not a pool directory" in errors[1]
    assert "has no descendant 'ti6.0-9'" in errors[2]
    assert "iters" in errors[3]
    assert "target 'cpu' supports precisions fp32, bf16, int8, not 'fp16'" in errors[4]
    assert "cannot be measured" in errors[5]


def test_finetune_and_stitch_of_a_path_that_is_no_pool_say_so(tmp_path: Path) -> None:
    """``pool finetune /typo`` said "cannot update '/typo' in place: '/typo' does not accept new files (No such
    file or directory); make it writable, or copy the pool elsewhere", where ``pool eval /typo`` says what is
    wrong; a folder that is not a pool was claimed (a lock file written into it) before being refused."""
    folder = tmp_path / "photos"
    folder.mkdir()
    data = ["--data", "synthetic"]
    got = cli_imports([["pool", "finetune", str(tmp_path / "typo"), *data],
                       ["pool", "stitch", str(tmp_path / "typo"), *data, "--init", "lstsq"],
                       ["pool", "finetune", str(folder), *data]])
    assert got["codes"] == [2, 2, 2]
    assert all("is not a pool directory (no pool.json)" in e for e in got["errors"]), got["errors"]
    assert not (tmp_path / "typo").exists() and list(folder.iterdir()) == []


def test_export_chooses_from_the_pool_json_it_checked(tmp_path: Path, monkeypatch, capsys) -> None:
    """pool.json is read twice (checked before torch, then with the weights): a pool rewritten in between (here its
    top-1 replaced by ones measured on synthetic data, as a concurrent 'pool eval --data synthetic' does) was chosen
    from unchecked, by top-1 that the first read's check refuses."""
    import json
    import shutil

    from helpers import run_cli

    import lgp_edge.pool.pool as pool_module
    from lgp_edge.pool.manifest import demo_pool_dir

    pool = Path(shutil.copytree(demo_pool_dir(), tmp_path / "pool"))
    real_load = pool_module.load_pool

    def rewritten_then_loaded(path, *args, **kwargs):
        mf = json.loads((pool / "pool.json").read_text())
        for r in mf["descendants"]:
            r["top1_data"] = "synthetic"
        (pool / "pool.json").write_text(json.dumps(mf))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(pool_module, "load_pool", rewritten_then_loaded)
    rc, err = run_cli(["export", "--target", "cpu", "--pool", str(pool), "--out", str(tmp_path / "out"),
                       "--val-images", "16", "--quiet"], capsys)
    assert rc == 2 and "were measured on synthetic data, not fashion-mnist" in err, err
    assert not (tmp_path / "out").exists()
