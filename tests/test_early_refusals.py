"""Bad input to ``export`` and ``profile`` is refused before torch is imported.

Each refusal below came after importing torch, timm and torchvision (3-5 s on 2 cores), and the ones that need
the pool's descendants after loading its weights too (9 s for ``profile --descendant`` with a typo): a user's
typo waited as long as the start of a real run. The checks need only the target, the profile and pool.json.
"""

from __future__ import annotations

from pathlib import Path

from helpers import cli_imports


def _refused(cases: list[tuple[list[str], str]], tmp_path: Path) -> None:
    """Each (argv, what its one line says) refused with exit 2 in one fresh interpreter that never imports torch,
    timm or torchvision, and no store written."""
    got = cli_imports([argv for argv, _ in cases], env={"LGP_EDGE_STORE": str(tmp_path / "store.sqlite")})
    assert got["codes"] == [2] * len(cases), got
    for (argv, says), error in zip(cases, got["errors"]):
        assert says in error, (argv, error)
    assert got["imported"] == [], got
    assert not (tmp_path / "store.sqlite").exists()


def test_export_refusals_come_before_torch(tiny_pool: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("not lgp-edge's\n")
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"not a database, not empty either\n" * 64)
    pool = ["--pool", str(tiny_pool)]
    out = ["--out", str(tmp_path / "out")]
    cpu = ["export", "--target", "cpu", *pool]
    _refused([
        ([*cpu, *out, "--opset", "99"], "--opset must be between 13 and"),
        (["export", "--target", "jetson-nano", *pool, *out, "--opset", "17"],
         "--opset 17 is above what target 'jetson-nano' parses"),
        ([*cpu, "--out", str(full)], "exists and is not empty"),
        ([*cpu, *out, "--val-images", "0"], "--val-images: must be >= 1"),
        (["export", "--target", "iphone", *pool, *out, "--dynamic-batch"], "--dynamic-batch"),
        (["export", "--profile", "cpu-int8", *pool, *out, "--val-images", "100"],
         "--val-images 100 is too few for int8"),
        (["export", "--target", "cpu", "--pool", str(tmp_path / "no-pool"), *out], "is not a pool directory"),
        ([*cpu, *out, "--descendant", "ti6.0-9"], "has no descendant 'ti6.0-9'"),
        (["export", "--target", "cpu", "--model", "vit_tiny_patch16_224", "--checkpoint", str(tmp_path / "w.pth"),
          "--out", str(full)], "exists and is not empty"),
        (["export", "--target", "cpu", "--model", "vit_tiny_patch16_224", "--checkpoint", str(tmp_path / "w.pth"),
          *out], f"checkpoint '{tmp_path / 'w.pth'}' does not exist"),
        ([*cpu, *out, "--data", "fashion-mnst"], "unknown --data 'fashion-mnst'"),
        ([*cpu, *out, "--data", f"imagefolder:{tmp_path / 'no-images'}"], "needs train/ and val/ subfolders"),
        (["export", "--profile", "cpu-int8", *pool, *out, "--data", "fashion-mnist", "--calib-images", "90000"],
         "'fashion-mnist' has 60000 training images"),
        (["export", "--target", "jetson-nano", *pool, *out, "--budget-ms", "0.001"], "fits"),
        (["export", "--target", "jetson-nano", *pool, *out, "--store", str(damaged)], "damaged.sqlite"),
    ], tmp_path)
    assert not (tmp_path / "out").exists() and [p.name for p in full.iterdir()] == ["mine.txt"]


def test_profile_refusals_come_before_torch(tiny_pool: Path, tmp_path: Path) -> None:
    cpu = ["profile", "--target", "cpu", "--pool", str(tiny_pool)]
    _refused([
        (["profile", "--target", "nosuch", "--pool", str(tiny_pool)], "unknown target 'nosuch'"),
        (["profile", "--target", "cpu", "--pool", str(tmp_path / "no-pool")], "is not a pool directory"),
        ([*cpu, "--descendant", "ti6.0-9"], "has no descendant 'ti6.0-9'"),
        ([*cpu, "--iters", "0"], "--iters must be an integer"),
        ([*cpu, "--precision", "fp16"], "target 'cpu' supports precisions fp32, bf16, int8, not 'fp16'"),
        (["profile", "--target", "iphone", "--pool", str(tiny_pool)], "cannot be measured"),
    ], tmp_path)


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


def test_a_prediction_for_a_runtime_the_board_does_not_run_is_refused(tiny_pool: Path, tmp_path: Path) -> None:
    """``profile --target jetson-nano --predict --runtime onnxruntime`` stored 18 rows labelled ONNX Runtime on the
    Jetson Nano, holding TensorRT's roofline numbers: the board runs TensorRT only (a measurement was refused)."""
    _refused([
        (["profile", "--target", "jetson-nano", "--predict", "--runtime", "onnxruntime", "--pool", str(tiny_pool)],
         "target 'jetson-nano' runs 'tensorrt', not 'onnxruntime'"),
        (["profile", "--target", "iphone", "--predict", "--runtime", "onnxruntime", "--pool", str(tiny_pool)],
         "target 'iphone' runs 'coreml', not 'onnxruntime'"),
    ], tmp_path)


def test_an_import_checked_against_a_pool_reads_its_pool_json_only(tiny_pool: Path, tmp_path: Path) -> None:
    """``profile --import FILE --pool POOL`` loaded the pool's weights (and torch) to learn its id and keys."""
    import json

    timing = tmp_path / "timing.json"
    timing.write_text(json.dumps({"format": "lgp-edge-latency", "version": 1, "records": [
        {"descendant_key": "ti6.0-9", "target": "jetson-nano", "runtime": "tensorrt", "precision": "fp16",
         "batch": 1, "median_ms": 5.0, "p90_ms": 5.4, "p99_ms": 6.0, "source": "measured",
         "when": "2026-12-01T00:00:00Z", "pool_id": json.loads((tiny_pool / "pool.json").read_text())["pool_id"],
         "n": 200}]}))
    _refused([(["profile", "--import", str(timing), "--pool", str(tiny_pool)], "descendant_key")], tmp_path)


def test_a_damaged_store_and_a_missing_runtime_are_refused_before_the_pool_is_loaded(tiny_pool: Path,
                                                                                      tmp_path: Path) -> None:
    """A measuring ``profile`` opened its store after loading torch and the pool's weights (6 s for a damaged
    store), and learnt that a runtime is not installed by importing its module, which imports torch and the
    exporter (1.5 s)."""
    import importlib.util

    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"not a database, not empty either\n" * 64)
    cpu = ["profile", "--target", "cpu", "--pool", str(tiny_pool)]
    cases = [([*cpu, "--store", str(damaged)], "damaged.sqlite"),
             ([*cpu, "--runtime", "onnxruntime", "--store", str(damaged)], "damaged.sqlite")]
    if importlib.util.find_spec("tensorrt") is None:
        cases.append(([*cpu, "--runtime", "tensorrt"],
                      "runtime 'tensorrt' (local) needs the Python package 'tensorrt', which is not installed"))
    _refused(cases, tmp_path)
    assert damaged.read_bytes() == b"not a database, not empty either\n" * 64


def test_training_commands_refuse_their_output_data_and_ancestry_before_torch(tmp_path: Path) -> None:
    """``pool build``, ``pool distill``, ``ancestry train`` and the baselines refused a non-empty --out, a misspelt
    --data or lgp-edge ancestry after importing torch, timm and the training code (3-8 s)."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("not lgp-edge's\n")
    out = ["--out", str(tmp_path / "out")]
    syn = ["--data", "synthetic"]
    build = ["pool", "build", "--ancestry", "lgp_vit_fmnist", "--allow-random-ancestry"]
    distill = ["pool", "distill", "--ancestry", "lgp_vit_fmnist", "--models", "ti6", "--allow-random-ancestry"]
    train = ["ancestry", "train", "--ancestry", "lgp_vit_fmnist"]
    snnet = ["baseline", "snnet", "--ancestry", "lgp_vit_fmnist", "--allow-random-ancestry"]
    scratch = ["baseline", "scratch", "--ancestry", "lgp_vit_fmnist"]
    not_empty = "exists and is not empty"
    _refused([
        ([*build, *syn, "--out", str(full)], not_empty),
        ([*build, *out, "--data", "fashion-mnst"], "unknown --data 'fashion-mnst'"),
        (["pool", "build", "--ancestry", "lgp_vit_fmnsit", *syn, *out], "unknown ancestry 'lgp_vit_fmnsit'; did "
                                                                        "you mean lgp_vit_fmnist"),
        ([*build, *syn, "--out", str(full), "--resume"], "--resume would replace"),
        ([*distill, *syn, "--out", str(full)], not_empty),
        ([*train, *syn, "--out", str(full)], not_empty),
        ([*train, *out, "--data", f"imagefolder:{tmp_path / 'no-images'}"], "needs train/ and val/ subfolders"),
        ([*snnet, *syn, "--out", str(full)], not_empty),
        ([*scratch, *syn, "--out", str(full)], not_empty),
    ], tmp_path)
    assert not (tmp_path / "out").exists() and [p.name for p in full.iterdir()] == ["mine.txt"]


def test_switchable_export_refusals_come_before_torch(tiny_pool: Path, tmp_path: Path) -> None:
    """``export --switchable`` imported torch with its module and loaded the pool's weights before it checked the
    keys, the store and --data (2-8 s for a typo)."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("not lgp-edge's\n")
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"not a database, not empty either\n" * 64)
    sw = ["export", "--switchable", "--target", "cpu", "--pool", str(tiny_pool)]
    out = ["--out", str(tmp_path / "out")]
    _refused([
        ([*sw, "--out", str(full)], "exists and is not empty"),
        ([*sw, *out, "--descendants", "ti6.0-5,ti6.0-9"], "has no descendant 'ti6.0-9'"),
        ([*sw, *out, "--descendants", "ti6.0-5,ti6.0-5"], "named twice"),
        ([*sw, *out, "--data", "fashion-mnst"], "unknown --data 'fashion-mnst'"),
        ([*sw, *out, "--store", str(damaged)], "damaged.sqlite"),
        (["export", "--switchable", "--target", "jetson-nano", "--pool", str(tiny_pool), *out],
         "cannot hold a switchable model"),
    ], tmp_path)
    assert not (tmp_path / "out").exists() and [p.name for p in full.iterdir()] == ["mine.txt"]
