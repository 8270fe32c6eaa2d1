"""The output-directory swap never deletes what lgp-edge did not write, whatever was checked before the work."""

from __future__ import annotations

import json
from pathlib import Path

from lgp_edge.fileio import tree_sha256
from lgp_edge.outdir import atomic_dir, recognise_output, replace_dir


def _pool_dir(d: Path) -> None:
    d.mkdir()
    (d / "pool.json").write_text(json.dumps({"pool_id": "old", "schema_version": 1}))
    (d / "weights.safetensors").write_bytes(b"old")
    (d / "finetune.ckpt").mkdir()
    (d / "finetune.ckpt" / "state.json").write_text("{}")


def test_a_file_added_during_a_run_survives_the_swap(tmp_path: Path) -> None:
    out = tmp_path / "pool"
    _pool_dir(out)
    with atomic_dir(out) as tmp:
        (Path(tmp) / "pool.json").write_text(json.dumps({"pool_id": "new", "schema_version": 1}))
        (Path(tmp) / "weights.safetensors").write_bytes(b"new")
        (out / "notes.txt").write_text("written while the run was under way\n")  # after the preflight check
        (out / "plots").mkdir()
        (out / "plots" / "mine.png").write_bytes(b"png")
        replace_dir(tmp, out)
    assert json.loads((out / "pool.json").read_text())["pool_id"] == "new"
    assert (out / "weights.safetensors").read_bytes() == b"new"
    assert (out / "notes.txt").read_text() == "written while the run was under way\n"
    assert (out / "plots" / "mine.png").read_bytes() == b"png"
    assert not (out / "finetune.ckpt").exists()  # lgp-edge's own checkpoint goes with the old directory


def test_what_lgp_edge_writes_is_recognised_by_name(tmp_path: Path) -> None:
    out = tmp_path / "pool"
    _pool_dir(out)
    (out / "descendants.json").write_text("{}")
    (out / "distill-ti6+ti9.ckpt").mkdir()
    (out / "measurements.sqlite").write_bytes(b"SQLite format 3\x00")
    (out / "notes.txt").write_text("mine\n")
    assert recognise_output(out) == ("pool", ["measurements.sqlite", "notes.txt"])

    exp = tmp_path / "export"
    (exp / "openvino").mkdir(parents=True)
    (exp / "model.mlpackage" / "Data").mkdir(parents=True)  # a package as hashed in the manifest is lgp-edge's
    (exp / "model.mlpackage" / "Data" / "weights.bin").write_bytes(b"w")
    (exp / "manifest.json").write_text(json.dumps({"kind": "lgp-edge export", "status": "passed",
                                                   "artifacts": [{"path": "openvino/model.xml"},
                                                                 {"path": "model.mlpackage",
                                                                  "sha256": tree_sha256(exp / "model.mlpackage")}]}))
    (exp / "openvino" / "model.xml").write_text("<net/>")
    (exp / "openvino" / "notes.txt").write_text("mine\n")
    (exp / "EMBEDDING.md").write_text("# embedding\n")
    assert recognise_output(exp) == ("export", ["openvino/notes.txt"])


def test_only_the_manifests_file_paths_are_lgp_edges(tmp_path: Path) -> None:
    """Any string of an export's manifest counted as a file lgp-edge wrote (a label 'Bag', the status 'passed',
    the dataset 'fashion-mnist'), and a package named in it owned whatever was added inside: export --force
    deleted a user's files of those names."""
    exp = tmp_path / "export"
    (exp / "model.mlpackage" / "Data").mkdir(parents=True)
    (exp / "model.mlpackage" / "Data" / "weights.bin").write_bytes(b"w")
    (exp / "manifest.json").write_text(json.dumps({
        "kind": "lgp-edge export", "status": "passed", "preprocess": {"labels": ["Bag", "Coat"]},
        "validation": {"data": "fashion-mnist", "structural": ["model.mlpackage"]},
        "artifacts": [{"path": "model.mlpackage", "sha256": tree_sha256(exp / "model.mlpackage"),
                       "files": [{"path": "validate_coreml.py"}]}],
        "files": [{"path": "samples/LgpClassifier.swift"}]}))
    for name in ("EMBEDDING.md", "validate_coreml.py", "samples/LgpClassifier.swift", "Bag", "passed",
                 "fashion-mnist/my-images.txt"):
        (exp / name).parent.mkdir(parents=True, exist_ok=True)
        (exp / name).write_text("x\n")
    assert recognise_output(exp) == ("export", ["Bag", "fashion-mnist", "passed"])
    (exp / "model.mlpackage" / "NOTES.txt").write_text("mine\n")  # the package is no longer what was written
    assert recognise_output(exp) == ("export", ["Bag", "fashion-mnist", "model.mlpackage", "passed"])


def test_real_outputs_hold_only_what_lgp_edge_writes(tmp_path: Path) -> None:
    """The names above against what the commands really write: a pool after eval, a report, an ancestry run."""
    from helpers import make_tiny_pool

    from lgp_edge.cli import main

    pool = make_tiny_pool(tmp_path / "pool")
    tiny = ["--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8", "--quiet"]
    assert main(["pool", "eval", str(pool), "--data", "synthetic", "--max-images", "16", "--quiet"]) == 0
    assert main(["report", "--pool", str(pool), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    assert main(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic",
                 "--out", str(tmp_path / "ancestry"), *tiny]) == 0
    assert {p.name for p in pool.iterdir()} >= {"pool.json", "weights.safetensors", "descendants.json"}
    assert any(p.suffix == ".png" for p in (tmp_path / "report").iterdir())
    for kind in ("pool", "report", "ancestry"):
        assert recognise_output(tmp_path / kind) == (kind, [])


def test_a_lock_that_is_a_symbolic_link_is_never_followed(tmp_path: Path, capsys) -> None:
    """A pool sent with ``.pool.lock`` linking elsewhere: reading it creates nothing there, and a writer refuses
    in one line (lgp-edge never makes its lock a link)."""
    import shutil

    from helpers import error_lines, run_cli

    from lgp_edge.pool.manifest import demo_pool_dir

    bundle, outside = tmp_path / "bundle", tmp_path / "outside"
    bundle.mkdir()
    outside.mkdir()
    shutil.copytree(demo_pool_dir(), bundle / "pool")
    (bundle / ".pool.old-1").mkdir()
    (bundle / ".pool.lock").symlink_to(outside / "created-by-lgp-edge")
    rc, _ = run_cli(["pool", "info", str(bundle / "pool")], capsys)
    assert rc == 0
    assert not (outside / "created-by-lgp-edge").exists()
    assert (bundle / ".pool.lock").is_symlink()
    out = bundle / "out"
    (bundle / ".out.lock").symlink_to(outside / "created-by-lgp-edge")
    rc, err = run_cli(["export", "--target", "cpu", "--pool", str(bundle / "pool"), "--out", str(out),
                       "--format", "onnx", "--val-images", "50", "--store", str(tmp_path / "m.sqlite")], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "symbolic link" in lines[0], err
    assert not (outside / "created-by-lgp-edge").exists() and not out.exists()


def test_output_directories_import_without_fcntl() -> None:
    """fcntl (the writer lock's flock) and resource (the file-size limit a failed write is checked against) are
    POSIX-only; lgp-edge imports them where it uses them, so importing its modules never fails without them."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['fcntl'] = sys.modules['resource'] = None; "
            "import lgp_edge.outdir, lgp_edge.fileio, lgp_edge.cli; "
            "print('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0 and run.stdout == "ok\n", run.stderr


def test_a_directory_artifacts_hash_names_its_files_with_forward_slashes(tmp_path: Path) -> None:
    """The hash of an .mlpackage is the same on every OS: relative paths as POSIX paths, whatever os.sep is."""
    import hashlib

    pkg = tmp_path / "model.mlpackage"
    (pkg / "Data" / "weights").mkdir(parents=True)
    (pkg / "Manifest.json").write_bytes(b"{}")
    (pkg / "Data" / "weights" / "weight.bin").write_bytes(b"w" * 10)
    h = hashlib.sha256()
    for name, data in (("Data/weights/weight.bin", b"w" * 10), ("Manifest.json", b"{}")):
        h.update(name.encode() + b"\0" + data)
    assert tree_sha256(pkg) == h.hexdigest()


def _path_of(base: Path, size: int) -> Path:
    """A path below ``base`` of exactly ``size`` bytes (names of at most 200 bytes)."""
    left, p = size - len(str(base).encode()), base
    while left > 0:
        n = min(200, left - 1)
        p, left = p / ("d" * n), left - n - 1
    assert len(str(p).encode()) == size
    return p


def test_a_path_longer_than_this_systems_path_max_allows_is_refused_up_front(tmp_path: Path, monkeypatch, capsys,
                                                                            tiny_pool: Path) -> None:
    """macOS's PATH_MAX is 1024, not Linux's 4096: a 1,000-byte --out leaves no room for the files inside it."""
    import os

    import pytest
    from helpers import error_lines, run_cli

    from lgp_edge.errors import UsageError
    from lgp_edge.outdir import check_output_dir, release

    out = _path_of(tmp_path, 1000)
    check_output_dir(out, False, kind="export")  # Linux: room enough
    release()  # the writer lock it took, and the new parent folders made for it, go with it
    assert list(tmp_path.iterdir()) == []
    real = os.pathconf
    monkeypatch.setattr(os, "pathconf", lambda p, name: 1024 if name == "PC_PATH_MAX" else real(p, name))
    with pytest.raises(UsageError, match="output path is 1000 bytes long; at most 950 bytes are allowed"):
        check_output_dir(out, False, kind="export")
    check_output_dir(_path_of(tmp_path, 950), False, kind="export")
    release()
    assert list(tmp_path.iterdir()) == []
    rc, err = run_cli(["export", "--pool", str(tiny_pool), "--target", "raspberry-pi-5", "--format", "onnx",
                       "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and error_lines(err) == ["lgp-edge: error: output path is 1000 bytes long; at most 950 bytes are "
                                            "allowed"], err
    assert list(tmp_path.iterdir()) == []


def test_path_limit_without_pathconf_is_linuxs(tmp_path: Path, monkeypatch) -> None:
    import os

    from lgp_edge import outdir

    monkeypatch.delattr(os, "pathconf", raising=False)
    assert outdir.max_path_bytes(tmp_path) == outdir.MAX_PATH_BYTES == 3800
    monkeypatch.setattr(os, "pathconf", lambda p, name: -1, raising=False)  # no limit reported
    assert outdir.max_path_bytes(tmp_path / "a" / "b") == 3800


def test_files_named_like_a_report_or_an_ancestry_are_not_taken_for_lgp_edges(tmp_path: Path, capsys) -> None:
    """--force took any directory holding report.md for an earlier report, and any ancestry.json beside
    ancestry.safetensors for an earlier ancestry run, and replaced the user's files. Now they must begin as
    lgp-edge writes them, and an ancestry's weights must hash as its ancestry.json records."""
    import json

    from helpers import error_lines, run_cli, snapshot

    mine = tmp_path / "mydocs"
    mine.mkdir()
    (mine / "report.md").write_text("# my own report\n")
    (mine / "report.csv").write_text("a,b\n")
    assert recognise_output(mine)[0] is None
    before = snapshot(tmp_path)
    rc, err = run_cli(["report", "--out", str(mine), "--force", "--profile", "cpu",
                       "--store", str(tmp_path / "none.sqlite")], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "did not write" in err and snapshot(tmp_path) == before

    anc = tmp_path / "myanc"
    anc.mkdir()
    (anc / "ancestry.json").write_text(json.dumps({"my": "notes"}))
    (anc / "ancestry.safetensors").write_text("blob")
    assert recognise_output(anc)[0] is None
    # an ancestry run's files whose weights were replaced since: the weights are not lgp-edge's
    (anc / "ancestry.json").write_text(json.dumps({"name": "x", "config": {}, "top1": 1.0, "weights_sha256": "0" * 64}))
    assert recognise_output(anc) == ("ancestry", ["ancestry.safetensors"])
    before = snapshot(tmp_path)
    rc, err = run_cli(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--out", str(anc),
                       "--force", "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8", "--quiet"],
                      capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "ancestry.safetensors" in err and snapshot(tmp_path) == before


def test_folders_and_plots_named_like_lgp_edges_are_the_users_unless_they_hold_what_it_writes(tmp_path: Path,
                                                                                           capsys) -> None:
    """A folder named like a checkpoint (train.ckpt/precious.txt), a pareto-*.png folder or annotated plot beside a
    report, and a backup named like a swap leftover (.demo.old-2025) were taken for lgp-edge's by name alone:
    --force, a plain training run and even `pool info` deleted them."""
    import shutil

    from helpers import run_cli

    from lgp_edge.outdir import recover
    from lgp_edge.pool.pool import demo_pool_dir

    out = tmp_path / "pool"
    _pool_dir(out)
    (out / "train.ckpt").mkdir()
    (out / "train.ckpt" / "precious.txt").write_text("mine\n")
    # a checkpoint as lgp-edge writes one, and the temporary file of a killed write
    (out / "finetune.ckpt" / "state-000000004.safetensors").write_bytes(b"x")
    (out / "finetune.ckpt" / ".state.json.tmp1").write_text("{")
    assert recognise_output(out) == ("pool", ["train.ckpt"])

    rep = tmp_path / "report"
    rep.mkdir()
    (rep / "report.md").write_text("# lgp-edge report: pool p\n\n![Pareto front for cpu](pareto-cpu.png)\n")
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 16
    (rep / "pareto-cpu.png").write_bytes(png)
    (rep / "pareto-cpu-annotated.png").write_bytes(png)  # the user's, not in the report
    (rep / "pareto-notes.png").mkdir()
    assert recognise_output(rep) == ("report", ["pareto-cpu-annotated.png", "pareto-notes.png"])

    pool = tmp_path / "demo"
    shutil.copytree(demo_pool_dir(), pool)
    backup = tmp_path / ".demo.old-2025"
    backup.mkdir()
    (backup / "precious.txt").write_text("backup\n")
    left = tmp_path / ".demo.old-4242"  # what a killed swap left: the old pool
    shutil.copytree(demo_pool_dir(), left)
    rc, _ = run_cli(["pool", "info", str(pool)], capsys)
    assert rc == 0 and (backup / "precious.txt").read_text() == "backup\n" and not left.exists()
    shutil.rmtree(pool)
    recover(pool)  # OUT missing: only an lgp-edge output is renamed back into its place
    assert not pool.exists() and backup.is_dir()


def test_a_mount_point_as_the_output_is_refused_before_the_work(tmp_path: Path, capsys, monkeypatch) -> None:
    """`--out` a Docker volume or bind mount (and `pool finetune` of a pool that is one): the rename that puts the
    new output in its place fails with EBUSY, which was a traceback, exit 1, after all the work (and a finetune
    checkpoint left behind). Mounting needs privileges a test does not have: os.path.ismount says it is one."""
    import os
    import shutil

    from helpers import error_lines, run_cli, snapshot

    from lgp_edge.pool.pool import demo_pool_dir

    vol, pool = tmp_path / "volume", tmp_path / "pool"
    vol.mkdir()
    shutil.copytree(demo_pool_dir(), pool)
    mounts = {os.path.realpath(vol), os.path.realpath(pool)}
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.path.realpath(p) in mounts or real(p))
    before = snapshot(tmp_path)
    for argv, fix in ((["report", "--pool", str(pool), "--out", str(vol), "--store", str(tmp_path / "s.sqlite")],
                       f"--out '{vol}/out'"),
                      (["pool", "finetune", str(pool), "--data", "fashion-mnist", "--epochs", "1", "--quiet"],
                       "folder inside")):
        rc, err = run_cli(argv, capsys)
        lines = error_lines(err)
        assert rc == 2 and len(lines) == 1 and "is a mount point" in lines[0] and fix in lines[0], err
    assert snapshot(tmp_path) == before


def test_a_missing_output_is_restored_from_the_newest_old_copy(tmp_path: Path) -> None:
    """Two `.OUT.old-N` left by killed swaps: the newest is the output the last run was replacing. Only one ever
    appeared in a test, so restoring the oldest passed them all."""
    import os
    import shutil

    from lgp_edge.outdir import recover
    from lgp_edge.pool.pool import demo_pool_dir

    pool = tmp_path / "demo"
    older, newer = tmp_path / ".demo.old-111", tmp_path / ".demo.old-222"
    for d, stamp in ((older, 1_700_000_000), (newer, 1_800_000_000)):
        shutil.copytree(demo_pool_dir(), d)
        (d / "which.txt").write_text(d.name)
        os.utime(d, (stamp, stamp))
    recover(pool)
    assert (pool / "which.txt").read_text() == newer.name and not newer.exists()
