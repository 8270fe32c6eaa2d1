"""Bad input and faults, end to end from the CLI: nothing lost, nothing let in.

The catalogue runs each bad command line once and checks the promise: the exit code, one line on stderr
naming the problem (log warnings aside), no traceback, and the directory tree holding the pool, the
store, the outputs and the user's files byte-identical before and after. The fault tests kill exports and
in-place pool writes in the middle of replacing a directory, and run two exports into one OUT at once.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import error_lines, make_tiny_pool, run_cli, snapshot

from lgp_edge.fileio import sha256_file
from lgp_edge.pool.pool import MANIFEST, WEIGHTS, LearngenePool, PoolManifest, read_manifest, save_pool
from lgp_edge.specs import PoolSpec, PreprocessSpec

BUILTIN_TARGETS = Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "targets"
REPO = Path(__file__).resolve().parent.parent


def target_text(base: str, name: str, **replace: str) -> str:
    """A built-in target file renamed to ``name`` with lines replaced (``field = value``)."""
    text = (BUILTIN_TARGETS / f"{base}.toml").read_text()
    text = text.replace(f'name = "{base}"', f'name = "{name}"')
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def rgb_pool(out: Path, data: str) -> Path:
    """A random tiny pool taking RGB images (for imagefolder data)."""
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.instances import plan_instances

    torch.manual_seed(0)
    ancestry, aspec = create_ancestry("lgp_test_tiny", num_classes=2, in_chans=3, img_size=16)
    spec = PoolSpec(aspec, 6, plan_instances(aspec, 6, ("ti", "b")))
    pool = LearngenePool(spec).eval()
    pre = PreprocessSpec(img_size=16, in_chans=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), labels=("a", "b"))
    save_pool(out, pool, PoolManifest(spec=spec, preprocess=pre, data=data, stitch_init="learned", stage="distilled"),
              ancestry=ancestry)
    return out


def write_png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    Image.fromarray(torch.randint(0, 255, (20, 20, 3), generator=g, dtype=torch.uint8).numpy()).save(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine tiny pool; cases copy it into their own tree."""
    return make_tiny_pool(tmp_path_factory.mktemp("pristine") / "pool")


# ---------------------------------------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # builds the world under root, returns argv
    code: int  # expected exit code
    message: str  # a fragment of the one stderr line


def _with_pool(root: Path) -> Path:
    return Path(shutil.copytree(TINY_SRC[0], root / "pool"))


TINY_SRC: list[Path] = []  # filled by the fixture below (parametrised setups cannot take fixtures)

EXPORT = ["export", "--target", "raspberry-pi-5", "--format", "onnx", "--val-images", "8", "--quiet"]


def _pool_as_out(root: Path) -> list[str]:
    p = _with_pool(root)
    return [*EXPORT, "--pool", str(p), "--out", str(p), "--force"]


def _report_over_pool(root: Path) -> list[str]:
    p = _with_pool(root)
    return ["report", "--pool", str(p), "--out", str(p), "--force"]


def _build_over_export_like_notes(root: Path) -> list[str]:
    d = root / "ancestry-run"
    d.mkdir()
    (d / "ancestry.json").write_text("{}")
    (d / "ancestry.safetensors").write_bytes(b"")
    return ["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
            "--out", str(d), "--force", "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "32",
            "--quiet"]


TINY_TRAIN = ["--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "32", "--quiet"]


def _build_over_pool_with_notes(root: Path) -> list[str]:
    p = _with_pool(root)
    (p / "notes.txt").write_text("my notes\n")
    return ["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
            "--out", str(p), "--force", *TINY_TRAIN]


def _resume_into_dir_with_notes(root: Path) -> list[str]:
    d = root / "run"
    (d / "distill.ckpt").mkdir(parents=True)
    (d / "distill.ckpt" / "state.json").write_text("{}")
    (d / "notes.txt").write_text("my notes\n")
    return ["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
            "--out", str(d), "--resume", *TINY_TRAIN]


def _ancestry_with_notes(root: Path) -> list[str]:
    d = root / "ancestry-run"
    d.mkdir()
    (d / "ancestry.json").write_text("{}")
    (d / "ancestry.safetensors").write_bytes(b"")
    (d / "notes.txt").write_text("my notes\n")
    return ["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(d), "--force",
            *TINY_TRAIN]


def _report_with_user_image(root: Path) -> list[str]:
    p = _with_pool(root)
    d = root / "report"
    d.mkdir()
    (d / "report.md").write_text("# report\n")
    (d / "holiday.png").write_bytes(b"\x89PNG\r\n")
    return ["report", "--pool", str(p), "--out", str(d), "--force"]


def _export_with_user_file_in_a_folder(root: Path) -> list[str]:
    p = _with_pool(root)
    d = root / "out"
    (d / "openvino").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"kind": "lgp-edge export", "status": "passed",
                                                 "artifacts": [{"path": "openvino/model.xml"}]}))
    (d / "openvino" / "model.xml").write_text("<net/>")
    (d / "openvino" / "notes.txt").write_text("my notes\n")
    return [*EXPORT, "--pool", str(p), "--out", str(d), "--force"]


def _scratch_over_pool(root: Path) -> list[str]:
    p = _with_pool(root)
    return ["baseline", "scratch", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
            "--out", str(p), "--force", *TINY_TRAIN]


def _dir_with_pool_store_notes(root: Path) -> list[str]:
    p = _with_pool(root)
    d = Path(shutil.copytree(p, root / "work"))
    (d / "measurements.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(100))
    (d / "notes.txt").write_text("my notes\n")
    return [*EXPORT, "--pool", str(p), "--out", str(d), "--force"]


def _dir_with_notes(root: Path) -> list[str]:
    p = _with_pool(root)
    (root / "docs").mkdir()
    (root / "docs" / "notes.txt").write_text("my notes\n")
    return [*EXPORT, "--pool", str(p), "--out", str(root / "docs"), "--force"]


def _export_plus_user_file(root: Path) -> list[str]:
    p = _with_pool(root)
    d = root / "out"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"kind": "lgp-edge export", "status": "passed",
                                                 "artifacts": [{"path": "model.onnx"}]}))
    (d / "model.onnx").write_bytes(b"onnx")
    (d / "thesis.tex").write_text("\\documentclass{article}\n")
    return [*EXPORT, "--pool", str(p), "--out", str(d), "--force"]


def _out_parent_is_file(root: Path) -> list[str]:
    p = _with_pool(root)
    (root / "afile").write_text("x")
    return [*EXPORT, "--pool", str(p), "--out", str(root / "afile" / "out")]


def _out_unwritable_export(root: Path) -> list[str]:
    p = _with_pool(root)
    return [*EXPORT, "--pool", str(p), "--out", "/proc/lgp-edge-out"]


def _out_unwritable_build(root: Path) -> list[str]:
    return ["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
            "--out", "/proc/lgp-edge-pool", "--epochs", "1", "--max-steps-per-epoch", "1", "--quiet"]


def _out_name_long(root: Path) -> list[str]:
    p = _with_pool(root)
    return [*EXPORT, "--pool", str(p), "--out", str(root / ("o" * 250))]


def _out_path_long(root: Path) -> list[str]:
    p = _with_pool(root)
    return [*EXPORT, "--pool", str(p), "--out", str(root / "/".join(["d" * 200] * 22))]


def _out_not_utf8(root: Path) -> list[str]:
    p = _with_pool(root)
    return [*EXPORT, "--pool", str(p), "--out", os.fsdecode(os.fsencode(str(root)) + b"/out-\xff\xfe")]


def _eval_negative(root: Path) -> list[str]:
    return ["pool", "eval", str(_with_pool(root)), "--data", "synthetic", "--max-images", "-5", "--quiet"]


def _eval_batch_zero(root: Path) -> list[str]:
    return ["pool", "eval", str(_with_pool(root)), "--data", "synthetic", "--batch-size", "0", "--quiet"]


def _target_case(base: str, **replace: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        p = _with_pool(root)
        d = root / "targets"
        d.mkdir()
        (d / "evil.toml").write_text(target_text(base, "evil", **replace))
        return ["profile", "--target", "evil", "--targets-dir", str(d), "--pool", str(p), "--iters", "2",
                "--warmup", "0", "--quiet"]
    return setup


def _predict_case(**replace: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        return [*_target_case("raspberry-pi-5", **replace)(root), "--predict"]
    return setup


MARK = f"/tmp/lgp-edge-injected-{os.getpid()}-"  # one per process: xdist workers never see each other's


def _ssh_target(field: str) -> Callable[[Path], list[str]]:
    value = f"-oProxyCommand=touch {MARK}"
    if field == "host":  # no user: the host alone is the destination ssh would parse as an option
        edits = {'host = "raspberrypi.local"': f'host = "{value}"', 'user = "pi"\n': ""}
    else:  # "-oProxyCommand=touch MARK@raspberrypi.local"
        edits = {'user = "pi"': f'user = "{value}"'}
    return _target_case("raspberry-pi-5", **edits, **{'timeout_s = 20.0': 'timeout_s = 3.0'})


def _trt_newline(root: Path) -> list[str]:
    p = _with_pool(root)
    d, pd = root / "targets", root / "profiles"
    d.mkdir()
    pd.mkdir()
    text = target_text("jetson-nano", "evil")
    start = text.index("runtime_version = ")
    end = text.index("\n", start)
    text = text[:start] + f'runtime_version = "TensorRT 8.2\\ntouch {MARK}\\n#"' + text[end:]
    (d / "evil.toml").write_text(text)
    prof = (REPO / "lgp_edge" / "data" / "profiles" / "jetson-nano.toml").read_text()
    (pd / "evil.toml").write_text(prof.replace('name = "jetson-nano"', 'name = "evil"')
                                  .replace('target = "jetson-nano"', 'target = "evil"'))
    return ["export", "--target", "evil", "--targets-dir", str(d), "--profiles-dir", str(pd), "--pool", str(p),
            "--out", str(root / "out"), "--val-images", "8", "--quiet", "--no-plan"]


def _pool_json_list(root: Path) -> list[str]:
    p = _with_pool(root)
    (p / MANIFEST).write_text("[1, 2, 3]\n")
    return ["pool", "info", str(p), "--json"]


def _weights_truncated(root: Path) -> list[str]:
    p = _with_pool(root)
    w = p / WEIGHTS
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    mf = json.loads((p / MANIFEST).read_text())
    mf["files"][WEIGHTS] = sha256_file(w)  # the hash matches: only the file itself is damaged
    (p / MANIFEST).write_text(json.dumps(mf))
    return ["pool", "info", str(p), "--json"]


def _transforms_truncated_finetune(root: Path) -> list[str]:
    """pool finetune copied transforms.safetensors into the new pool unchecked and recorded the damaged file's
    sha256 in the new pool.json."""
    from lgp_edge.fileio import save_safetensors

    p = _with_pool(root)
    t = p / "transforms.safetensors"
    save_safetensors({"ti->b": torch.zeros(32, 32)}, t)
    mf = json.loads((p / MANIFEST).read_text())
    mf["files"]["transforms.safetensors"] = sha256_file(t)
    (p / MANIFEST).write_text(json.dumps(mf))
    os.truncate(t, 100)
    return ["pool", "finetune", str(p), "--data", "synthetic", "--epochs", "1", "--max-steps-per-epoch", "1",
            "--batch-size", "8", "--quiet"]


def _heads_do_not_divide(root: Path) -> list[str]:
    p = _with_pool(root)
    mf = json.loads((p / MANIFEST).read_text())
    mf["spec"]["instances"][1]["num_heads"] = 5  # width 32
    (p / MANIFEST).write_text(json.dumps(mf))
    return ["pool", "info", str(p), "--json"]


def _imagefolder(layout: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        p = rgb_pool(root / "pool", "synthetic")
        data = root / "images"
        for split in ("train", "val"):
            (data / split).mkdir(parents=True)
            if layout == "empty":
                continue
            for c in ("a", "b"):
                for i in range(2):
                    write_png(data / split / c / f"{i}.png", i)
        if layout == "class-without-images":
            shutil.rmtree(data / "val" / "b")
            (data / "val" / "b").mkdir()
            (data / "val" / "b" / "README").write_text("nothing here\n")
        if layout == "zero-byte":
            (data / "val" / "b" / "1.png").write_bytes(b"")
        if layout == "corrupt":
            (data / "val" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
        return ["pool", "eval", str(p), "--data", f"imagefolder:{data}", "--quiet"]
    return setup


def _other_classes(command: str) -> Callable[[Path], list[str]]:
    """A pool trained on image folders with classes (a, b), scored on folders whose classes are (a, zb): the
    logits were compared with other labels and the wrong top-1 stored (pool eval) or shipped (export)."""
    def setup(root: Path) -> list[str]:
        p = rgb_pool(root / "pool", f"imagefolder:{root / 'trained-on'}")
        data = root / "images"
        for split in ("train", "val"):
            for c in ("a", "zb"):
                for i in range(2):
                    write_png(data / split / c / f"{i}.png", i)
        if command == "export":
            return ["export", "--pool", str(p), "--target", "cpu", "--descendant", "ti6.0-5", "--data",
                    f"imagefolder:{data}", "--out", str(root / "out"), "--quiet"]
        return ["pool", "eval", str(p), "--data", f"imagefolder:{data}", "--quiet"]
    return setup


def _select_on_synthetic_top1(root: Path) -> list[str]:
    p = _with_pool(root)
    mf = json.loads((p / MANIFEST).read_text())
    mf["data"] = "fashion-mnist"  # a real-data pool whose top-1 were measured on synthetic images
    mf["synthetic_data"] = False
    mf["history"] = [{"stage": "eval", "data": "synthetic", "images": 256}]
    (p / MANIFEST).write_text(json.dumps(mf))
    return ["select", "--target", "raspberry-pi-5", "--pool", str(p)]


def _build_from(checkpoint: str) -> list[str]:
    return ["pool", "build", "--ancestry", "lgp_test_tiny", "--ancestry-checkpoint", checkpoint, "--data",
            "synthetic", "--out", "out", "--epochs", "1", "--max-steps-per-epoch", "1", "--quiet"]


def _ancestry_json_truncated(root: Path) -> list[str]:
    from safetensors.torch import save_file

    from lgp_edge.models.ancestry import create_ancestry

    d = root / "ancestry"
    d.mkdir()
    model, _ = create_ancestry("lgp_test_tiny")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "ancestry.safetensors"))
    (d / "ancestry.json").write_text('{"name": "lgp_test_tiny", "data": "fash')
    return _build_from(str(d))


def _pickle_checkpoint(root: Path) -> list[str]:
    torch.save({"model": Path("weights")}, root / "ancestry.pt")  # an object, not tensors (timm's args may pass)
    return _build_from(str(root / "ancestry.pt"))


def _negative_lr(root: Path) -> list[str]:
    return ["pool", "finetune", str(_with_pool(root)), "--data", "synthetic", "--lr", "-1", "--quiet"]


CASES = [
    # data loss
    Case("export --out POOL --force", _pool_as_out, 2, "--force replaces only an earlier export"),
    Case("export --force over pool+store+notes", _dir_with_pool_store_notes, 2, "--force replaces only"),
    Case("export --force over a notes folder", _dir_with_notes, 2, "did not write"),
    Case("export --force over an export holding a user file", _export_plus_user_file, 2, "thesis.tex"),
    Case("report --out POOL --force", _report_over_pool, 2, "--force replaces only an earlier report"),
    Case("pool build --force over an ancestry run", _build_over_export_like_notes, 2, "--force replaces only"),
    Case("pool build --force over a pool holding a user file", _build_over_pool_with_notes, 2, "notes.txt"),
    Case("pool build --resume into a run holding a user file", _resume_into_dir_with_notes, 2, "notes.txt"),
    Case("ancestry train --force over a run holding a user file", _ancestry_with_notes, 2, "notes.txt"),
    Case("report --force over a report holding a user image", _report_with_user_image, 2, "holiday.png"),
    Case("export --force over an export with a user file in a folder", _export_with_user_file_in_a_folder, 2,
         "notes.txt"),
    Case("baseline scratch --force over a pool", _scratch_over_pool, 2, "--force replaces only an earlier baseline"),
    # paths, checked before the work
    Case("--out whose parent is a file", _out_parent_is_file, 2, "is a file, not a directory"),
    Case("unwritable --out (export)", _out_unwritable_export, 2, "does not accept new files"),
    Case("unwritable --out (pool build)", _out_unwritable_build, 2, "does not accept new files"),
    Case("--out name of 250 characters", _out_name_long, 2, "bytes long"),
    Case("--out path over 4096 bytes", _out_path_long, 2, "bytes long"),
    Case("non-UTF-8 --out", _out_not_utf8, 2, "not valid UTF-8"),
    # numbers
    Case("pool eval --max-images -5", _eval_negative, 2, "--max-images: must be >= 1"),
    Case("pool eval --batch-size 0", _eval_batch_zero, 2, "--batch-size: must be >= 1"),
    Case("pool finetune --lr -1", _negative_lr, 2, "--lr: must be a finite number > 0"),
    Case("efficiency.overhead_us = -5000", _predict_case(**{"overhead_us = 5.0": "overhead_us = -5000.0"}), 2,
         "overhead_us"),
    Case('extra.threads = "four"', _predict_case(**{"threads = 4": 'threads = "four"'}), 2, "extra.threads"),
    Case("connection.port = 70000", _predict_case(**{"port = 22": "port = 70000"}), 2, "connection.port"),
    # injection
    Case("ssh host starting with -o", _ssh_target("host"), 2, "connection.host"),
    Case("ssh user starting with -o", _ssh_target("user"), 2, "connection.user"),
    Case("extra.ssh_options ProxyCommand", _target_case(
        "raspberry-pi-5", **{'threads = 4': f'threads = 4\nssh_options = ["-o", "ProxyCommand=touch {MARK}"]'}),
        2, "ProxyCommand"),
    Case("extra.bench_script with ..", _target_case(
        "raspberry-pi-5", **{'bench_script = "linux/ort_bench.py"': 'bench_script = "../targets/linux/ort_bench.py"'}),
        2, "extra.bench_script"),
    Case("extra.bench_script absolute", _target_case(
        "raspberry-pi-5", **{'bench_script = "linux/ort_bench.py"': 'bench_script = "/etc/passwd"'}),
        2, "extra.bench_script"),
    Case("runtime_version with a newline", _trt_newline, 2, "control character"),
    # damaged pools
    Case("pool.json that is not an object", _pool_json_list, 2, "not an object"),
    Case("weights truncated, sha256 matching", _weights_truncated, 2, "not a readable safetensors file"),
    Case("transforms truncated, fine-tuned", _transforms_truncated_finetune, 2, "damaged or was modified"),
    Case("num_heads does not divide the width", _heads_do_not_divide, 2, "cannot be built"),
    Case("truncated ancestry.json beside a checkpoint", _ancestry_json_truncated, 2, "is damaged"),
    Case("pickle checkpoint (arbitrary objects)", _pickle_checkpoint, 2, "cannot be loaded safely"),
    # datasets
    Case("imagefolder with empty splits", _imagefolder("empty"), 2, "has no class folders"),
    Case("imagefolder class folder with no images", _imagefolder("class-without-images"), 2, "holds no images"),
    Case("imagefolder zero-byte image", _imagefolder("zero-byte"), 2, "cannot be read"),
    Case("imagefolder corrupt image", _imagefolder("corrupt"), 2, "cannot be read"),
    # silent wrong results
    Case("pool eval on data with other classes", _other_classes("eval"), 2, "the model was trained on"),
    Case("export validated on data with other classes", _other_classes("export"), 2, "the model was trained on"),
    Case("select on top-1 measured on synthetic data", _select_on_synthetic_top1, 2, "measured on synthetic data"),
]


@pytest.fixture(autouse=True)
def _tiny_source(tiny: Path) -> None:
    TINY_SRC[:] = [tiny]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "world"
    root.mkdir()
    for f in glob.glob(MARK + "*"):
        os.unlink(f)
    argv = case.setup(root)
    before = snapshot(root)
    rc, err = run_cli(argv, capsys)
    lines = error_lines(err)
    assert rc == case.code, err
    assert len(lines) == 1 and case.message in lines[0], err
    assert "Traceback" not in err
    assert snapshot(root) == before  # nothing written, nothing deleted
    assert not glob.glob(MARK + "*")  # no injected command ran
    assert not [p for p in Path("/proc").glob("lgp-edge-*")]


@pytest.mark.parametrize("method", ["snnet", "scratch", "vanilla"])
def test_baselines_refuse_torchrun(method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The baselines train in one process: under torchrun every rank would train alone and write the same OUT."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "out"
    rc, err = run_cli(["baseline", method, "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data",
                       "synthetic", "--out", str(out), "--epochs", "1", "--max-steps-per-epoch", "1", "--quiet"],
                      capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "torchrun" in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("cmd", [["pool", "eval", "POOL", "--data", "synthetic", "--max-images", "8"],
                                 ["pool", "stitch", "POOL", "--data", "synthetic", "--init", "lstsq"]])
def test_pool_eval_and_stitch_refuse_torchrun(cmd: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """They run in one process: under torchrun every rank ran them, printed twice and wrote pool.json twice."""
    pool = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    before = snapshot(pool)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    rc, err = run_cli([str(pool) if a == "POOL" else a for a in cmd] + ["--quiet"], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "torchrun" in lines[0], err
    assert snapshot(pool) == before


def test_top1_remembers_its_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pool eval records the dataset with every top-1; a real-data pool with synthetic top-1 (an older lgp-edge's
    synthetic eval of it, which pool eval now refuses) is refused by select."""
    p = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    rc, err = run_cli(["pool", "eval", str(p), "--data", "synthetic", "--max-images", "16", "--quiet"], capsys)
    assert rc == 0, err
    mf = json.loads((p / MANIFEST).read_text())
    mf["data"] = "fashion-mnist"
    (p / MANIFEST).write_text(json.dumps(mf))
    rc, err = run_cli(["pool", "eval", str(p), "--data", "synthetic", "--max-images", "16", "--quiet"], capsys)
    assert rc == 2 and "pool eval writes the top-1 into the pool" in err
    manifest = read_manifest(p)
    assert {r.top1_data for r in manifest.descendants} == {"synthetic"}
    assert manifest.data == "fashion-mnist" and manifest.top1_data == "synthetic"
    rc, err = run_cli(["select", "--target", "raspberry-pi-5", "--pool", str(p)], capsys)
    assert rc == 2 and "measured on synthetic data" in error_lines(err)[0]


# ------------------------------------------------------------------------------------------------- faults
HOOKS = textwrap.dedent("""
    import os, signal, shutil, sys, time
    from pathlib import Path
    out = os.path.abspath(sys.argv[1])
    mode = sys.argv[2]
    argv = sys.argv[3:]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_replace = os.replace
    def replace(src, dst, *a, **k):
        real_replace(src, dst, *a, **k)
        if os.path.abspath(str(src)) == out and mode in ("exchange", "fallback"):
            die()  # OUT moved aside: the window between the two renames
    os.replace = replace
    try:
        import lgp_edge.outdir as outdir
    except ImportError:  # a version without atomic swaps
        outdir = None
    if mode == "fallback" and outdir is not None:
        outdir.exchange = lambda a, b: False
    elif mode == "exchange" and outdir is not None:
        real_exchange = outdir.exchange
        def exchange(a, b):
            done = real_exchange(a, b)
            if done and os.path.abspath(str(b)) == out:
                die()  # swapped: the old directory is still beside OUT, waiting to be removed
            return done
        outdir.exchange = exchange
    if mode == "slow":
        import lgp_edge.export.pipeline as pipeline
        real_copy = pipeline.copy_samples
        def copy_samples(*a, **k):
            Path(out + ".ready").touch()
            for _ in range(600):  # until the other export has finished
                if os.path.exists(out + ".go"):
                    break
                time.sleep(0.2)
            return real_copy(*a, **k)
        pipeline.copy_samples = copy_samples
    if argv[0] == "save_pool":
        from lgp_edge.pool.pool import load_pool, save_pool
        pool, manifest = load_pool(argv[1])
        save_pool(argv[1], pool, manifest.replace(stage="finetuned"), keep_from=argv[1])
    else:  # as the lgp-edge executable runs it
        from lgp_edge.cli import program
        sys.argv = ["lgp-edge", *argv]
        program()
""")


def run_hooked(out: Path, mode: str, argv: list[str], **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", HOOKS, str(out), mode, *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def leftovers(out: Path) -> list[str]:
    return sorted(e.name for e in out.parent.iterdir() if e.name.startswith(f".{out.name}."))


@pytest.mark.parametrize(("mode", "notes"), [("exchange", False), ("fallback", False), ("fallback", True)])
def test_sigkill_while_replacing_a_pool_in_place(mode: str, notes: bool, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """In-place writes (pool finetune's save): a kill while swapping never leaves the pool missing, also when the
    pool holds a file of the user's (carried into the new one, so the old one still holds it too)."""
    p = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    if notes:
        (p / "notes.txt").write_text("mine\n")
    old_id = read_manifest(p).spec.pool_id
    proc = run_hooked(p, mode, ["save_pool", str(p)])
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL  # the hook fired inside the swap
    if mode == "exchange":
        assert (p / MANIFEST).is_file() and read_manifest(p).stage == "finetuned"  # the new pool, complete
    rc, err = run_cli(["pool", "info", str(p), "--json"], capsys)  # the next start
    assert rc == 0, err
    assert read_manifest(p).spec.pool_id == old_id
    assert read_manifest(p).stage == ("finetuned" if mode == "exchange" else "distilled")  # new, or old restored
    assert leftovers(p) == []  # the old copy / temporary directory is cleaned up
    assert not notes or (p / "notes.txt").read_text() == "mine\n"


def test_sigkill_in_the_rename_window_of_export_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export --force over an earlier export, killed while swapping: OUT is always a complete export."""
    p = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    out = tmp_path / "out"
    args = [*EXPORT, "--pool", str(p), "--out", str(out)]
    rc, err = run_cli(args, capsys)
    assert rc == 0, err
    first = json.loads((out / "manifest.json").read_text())["created_utc"]
    time.sleep(1.1)
    proc = run_hooked(out, "exchange", [*args, "--force"])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, err
    mf = json.loads((out / "manifest.json").read_text())  # OUT is there, complete
    assert mf["status"] == "passed" and mf["created_utc"] != first
    for a in mf["artifacts"]:
        assert sha256_file(out / a["path"]) == a["sha256"]
    # the next export into OUT removes what the killed one left beside it
    rc, err = run_cli([*args, "--force"], capsys)
    assert rc == 0, err
    assert leftovers(out) == []


def test_a_second_ctrl_c_while_unwinding_is_the_same_stop(tmp_path: Path) -> None:
    """Ctrl-C pressed twice (or SIGINT sent to the process group twice) during an export: the second one landed in
    the unwinding or at interpreter shutdown, a traceback, exit 1 (which reads as a failed validation) or death
    by the signal. Now one 'interrupted' line and exit 130, OUT's temporary folder removed."""
    p = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    out = tmp_path / "out"
    proc = run_hooked(out, "slow", [*EXPORT[:-1], "--pool", str(p), "--out", str(out)])  # waits in the export
    try:
        deadline = time.time() + 300
        while not Path(str(out) + ".ready").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.count("lgp-edge: interrupted") == 1 and "Traceback" not in err and "Exception ignored" not in err, err
    assert not out.exists() and [n for n in leftovers(out) if not n.endswith(".ready")] == []


def test_two_exports_into_one_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The second export into an OUT being written exits 2; the first completes."""
    p = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    out = tmp_path / "out"
    args = [*EXPORT, "--pool", str(p), "--out", str(out)]
    first = run_hooked(out, "slow", args)
    try:
        deadline = time.time() + 300
        while not Path(str(out) + ".ready").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()[1]
            time.sleep(0.2)
        rc, err = run_cli(args, capsys)
    finally:
        Path(str(out) + ".go").touch()
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert rc == 2 and "is being written by another lgp-edge" in error_lines(err)[0], err
    assert json.loads((out / "manifest.json").read_text())["status"] == "passed"
    assert [n for n in leftovers(out) if not n.endswith((".ready", ".go"))] == []


def _gone_pid() -> int:
    """A process id no process has now (the child's, once it is reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_directories_are_removed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Temporary directories of killed runs go at the next start; the old output a killed swap left (.OUT.old-PID)
    too, but a user's folder of that shape holding something else stays: a dated backup `.pool.tmp-20240101` (the
    8 characters tempfile uses) and `.pool.tmp-20240101-mynotes1` (no process has that id) were removed with what
    was in them, by `pool info` too."""
    p = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    killed = f".pool.tmp-{_gone_pid()}-abcdefgh"
    (tmp_path / killed).mkdir()
    (tmp_path / killed / WEIGHTS).write_bytes(os.urandom(1 << 16))
    shutil.copytree(TINY_SRC[0], tmp_path / ".pool.old-999999")
    (tmp_path / ".pool.old-2025").mkdir()  # a user's backup, named like the swap's leftover
    (tmp_path / ".pool.old-2025" / "precious.txt").write_text("mine\n")
    (tmp_path / ".pool.tmp-keep").mkdir()  # not a name lgp-edge makes: left alone
    # a user's copy of a pool with their own file in it, named like the swap's leftover: kept whole
    shutil.copytree(TINY_SRC[0], tmp_path / ".pool.old-2026")
    (tmp_path / ".pool.old-2026" / "notes.txt").write_text("mine\n")
    for mine in (".pool.tmp-20240101", ".pool.tmp-20240101-mynotes1"):
        (tmp_path / mine).mkdir()
        (tmp_path / mine / "notes.txt").write_text("mine\n")
    rc, err = run_cli(["pool", "info", str(p), "--json"], capsys)
    assert rc == 0, err
    kept = [".pool.old-2025", ".pool.old-2026", ".pool.tmp-20240101", ".pool.tmp-20240101-mynotes1", ".pool.tmp-keep"]
    assert leftovers(p) == kept
    rc, err = run_cli(["pool", "eval", str(p), "--data", "synthetic", "--max-images", "8", "--quiet"], capsys)
    assert rc == 0, err
    assert leftovers(p) == kept
    assert (tmp_path / ".pool.tmp-20240101" / "notes.txt").read_text() == "mine\n"
    assert (tmp_path / ".pool.old-2026" / "notes.txt").read_text() == "mine\n"


def _damage_rng(meta: dict) -> None:
    del meta["rng"]


def _damage_progress(meta: dict) -> None:
    meta["extra"]["progress"]["count"] += 5  # steps of the epoch under way that the counters do not have


def _drop_progress(meta: dict) -> None:  # as written before checkpoints carried the run's progress
    del meta["extra"]["progress"]


def _damage_state_file(meta: dict) -> None:  # a TypeError traceback (exit 1)
    meta["state_file"] = 5


def _damage_python_rng(meta: dict) -> None:  # a ValueError traceback from random.setstate (exit 1)
    meta["rng"][0]["python"] = [3, [1, 2], None]


@pytest.mark.parametrize("damage,needle", [(_damage_rng, "random-number state"),
                                           (_damage_progress, "damaged progress record"),
                                           (_drop_progress, None), (_damage_state_file, "state_file"),
                                           (_damage_python_rng, "random-number state")])
def test_resume_whose_state_json_was_altered(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             damage: Callable[[dict], None], needle: str | None) -> None:
    """A fine-tune checkpoint whose state.json lost its random-number state or has a progress record that does not
    match its counters: one line, exit 2, nothing written. One without a progress record (an older lgp-edge's)
    still resumes."""
    p = make_tiny_pool(tmp_path / "pool", with_records=False)
    run = ["--data", "synthetic", "--epochs", "2", "--max-steps-per-epoch", "4", "--batch-size", "8",
           "--save-every", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lgp_edge.cli", "pool", "finetune", str(p), *run], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = p / "finetune.ckpt" / "state.json"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not state.is_file():
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert state.is_file(), "the fine-tune ended before it wrote a step checkpoint"
    meta = json.loads(state.read_text())
    damage(meta)
    state.write_text(json.dumps(meta))
    (tmp_path / ".pool.lock").unlink(missing_ok=True)  # the killed run's writer lock (the next run removes it too)
    before = snapshot(tmp_path)
    rc, err = run_cli(["pool", "finetune", str(p), *run, "--resume"], capsys)
    if needle is None:
        assert rc == 0, err
        assert len(json.loads((p / "pool.json").read_text())["history"][-1]["epoch_loss"]) == 2
        return
    assert rc == 2 and len(error_lines(err)) == 1 and needle in error_lines(err)[0], err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../state-000000001.safetensors", "/etc/passwd", "sub/state.safetensors",
                                  "state.json", ""])
def test_a_checkpoint_state_file_outside_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    """state.json names the weights file of the checkpoint; a path out of the checkpoint folder was read."""
    from lgp_edge.errors import CheckpointError
    from lgp_edge.train_checkpoint import CKPT_META, read_checkpoint_meta

    ckpt = tmp_path / "run" / "finetune.ckpt"
    ckpt.mkdir(parents=True)
    (tmp_path / "run" / "state-000000001.safetensors").write_bytes(b"x")
    (ckpt / CKPT_META).write_text(json.dumps({"fingerprint": "f", "world_size": 1, "state_file": name}))
    with pytest.raises(CheckpointError, match="state_file"):
        read_checkpoint_meta(ckpt, "f", 1)


def test_pool_plan_tsb_chains_need_three_widths(capsys: pytest.CaptureFixture[str]) -> None:
    """--chains tsb without --widths ti,s,b ended in a ValueError traceback (exit 1)."""
    rc, err = run_cli(["pool", "plan", "--ancestry", "lgp_test_tiny", "--chains", "tsb"], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "--widths ti,s,b" in lines[0] and "Traceback" not in err, err


def test_unreadable_pool_weights_are_one_line(tmp_path: Path) -> None:
    """An unreadable weights.safetensors ended in a PermissionError traceback from the hash check (exit 1). As
    root, the command runs without the capabilities that read any file (setpriv), as a user would."""
    import os
    import subprocess
    import sys

    p = Path(shutil.copytree(TINY_SRC[0], tmp_path / "pool"))
    (p / "weights.safetensors").chmod(0)
    cmd = [sys.executable, "-m", "lgp_edge.cli", "pool", "info", str(p)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: every file is readable")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        (p / "weights.safetensors").chmod(0o644)
    lines = error_lines(res.stderr)
    assert res.returncode == 2 and len(lines) == 1 and "weights.safetensors" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_an_output_named_dash_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out -` (the shell's stdout) made a folder named '-'."""
    monkeypatch.chdir(tmp_path)
    for argv in (["report", "--out", "-"], ["export", "--target", "cpu", "--out", "-"]):
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and "would be a folder named '-'" in error_lines(err)[0], err
    assert list(tmp_path.iterdir()) == []


def test_an_unexpanded_tilde_and_a_pool_path_that_is_not_utf8_are_one_line(tmp_path: Path, monkeypatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`--out=~/x` (the shell does not expand '~' there) wrote into a folder named '~' in the current directory and
    said 'wrote ~/x/'; a pool under a name that is not UTF-8 ended in a UnicodeEncodeError traceback in `report`
    and was called damaged by `export`."""
    import os

    monkeypatch.chdir(tmp_path)
    rc, err = run_cli(["export", "--target", "cpu", "--out=~/x", "--val-images", "8"], capsys)
    assert rc == 2 and "'~'" in err and "not expand" in err and len(error_lines(err)) == 1, err
    assert "'~/x'" in err and not (tmp_path / "~").exists()
    from lgp_edge.outdir import check_path

    assert check_path("./~", "output") == Path("~")  # named on purpose: a folder called '~' here
    bad = Path(os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"bad\xffpool")))
    shutil.copytree(TINY_SRC[0], bad)
    for argv in (["pool", "info", str(bad)], ["report", "--pool", str(bad), "--out", str(tmp_path / "r")],
                 ["select", "--target", "cpu", "--pool", str(bad), "--store", str(tmp_path / "s.sqlite")]):
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and "not valid UTF-8" in err and len(error_lines(err)) == 1, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != bad.name) == []


@pytest.mark.parametrize("cmd", [["pool", "eval", "POOL", "--data", "synthetic", "--max-images", "8"],
                                 ["pool", "stitch", "POOL", "--data", "synthetic", "--init", "lstsq"],
                                 ["pool", "finetune", "POOL", "--data", "synthetic", "--epochs", "1"]])
def test_synthetic_data_for_a_real_data_pool_is_refused_before_its_weights_with_advice_that_works(
        cmd: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal advised "for a smoke test, copy the pool first and use the copy", and the copy, whose pool.json
    names the same real data, was refused alike; and it came after the pool's weights were loaded (6 s)."""
    import lgp_edge.pool.pool as pool_module
    from lgp_edge.pool.manifest import demo_pool_dir

    pool = Path(shutil.copytree(demo_pool_dir(), tmp_path / "copy"))
    before = snapshot(pool)

    def not_loaded(*args, **kwargs):
        raise AssertionError("the pool's weights were loaded before the refusal")

    monkeypatch.setattr(pool_module, "load_pool", not_loaded)
    for module in ("lgp_edge.pool.restitch", "lgp_edge.pool.finetune", "lgp_edge.pool.evaluate"):
        monkeypatch.setattr(f"{module}.load_pool", not_loaded)
    rc, err = run_cli([str(pool) if a == "POOL" else a for a in cmd] + ["--quiet"], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "trained on fashion-mnist" in lines[0], err
    assert "copy the pool" not in lines[0] and "lgp-edge pool build --data synthetic" in lines[0]
    assert snapshot(pool) == before
