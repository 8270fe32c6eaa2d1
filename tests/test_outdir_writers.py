"""Output directories under real use: two runs aimed at one OUT, a run stopped before its first output, OUT
reached through a symbolic link, manifests edited by hand, switchable Core ML exports replaced with --force."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import error_lines, run_cli

from lgp_edge.errors import UsageError
from lgp_edge.outdir import check_output_dir, recognise_output

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--batch-size", "8",
         "--save-every", "5"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LGP_EDGE_STORE": str(tmp_path / "store.sqlite")}


def test_a_second_run_on_the_same_out_is_refused_while_the_first_one_trains(tmp_path):
    """The later of two 'ancestry train --out anc' runs replaced the earlier one's output without --force, and the
    earlier one went on writing checkpoints into the published directory. OUT's parent folder is new (as with
    the README's `--out runs/ancestry-e30` in a fresh clone): the first run held no lock then, and the second one
    took its live checkpoints for an interrupted run's."""
    out = tmp_path / "runs" / "anc"
    first = subprocess.Popen([sys.executable, "-m", "lgp_edge", *TRAIN, "--epochs", "200", "--out", str(out)],
                             env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "train.ckpt").is_dir() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()
        second = subprocess.run([sys.executable, "-m", "lgp_edge", *TRAIN, "--epochs", "1", "--out", str(out),
                                 "--force"], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert "being written by another lgp-edge" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err
    # stopped before its first output: OUT holds the checkpoints only, and says how to go on
    assert sorted(p.name for p in out.iterdir()) == ["train.ckpt"]
    assert not (tmp_path / "runs" / ".anc.lock").exists()
    again = subprocess.run([sys.executable, "-m", "lgp_edge", *TRAIN, "--epochs", "1", "--out", str(out)],
                           env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr and "--force" in again.stderr, again.stderr
    fresh = subprocess.run([sys.executable, "-m", "lgp_edge", *TRAIN, "--epochs", "1", "--max-steps-per-epoch", "2",
                            "--out", str(out), "--force"], env=_env(tmp_path), capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert (out / "ancestry.json").is_file()


def test_checkpoints_alone_are_an_interrupted_run_that_force_may_replace(tmp_path):
    out = tmp_path / "anc"
    (out / "train.ckpt").mkdir(parents=True)
    (out / "train.ckpt" / "state.json").write_text("{}")
    assert recognise_output(out)[0] is not None
    with pytest.raises(UsageError, match="--resume"):
        check_output_dir(out, False, "ancestry")
    check_output_dir(out, True, "ancestry")  # accepted
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="notes.txt"):
        check_output_dir(out, True, "ancestry")


def test_out_through_a_symbolic_link_is_written_where_the_link_points(tmp_path, capsys):
    """The link was swapped for a real directory, the folder it pointed to stayed empty, and a '.link.tmp-*'
    link stayed behind for good."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "linkout"
    link.symlink_to(real)
    for force in ([], ["--force"]):
        rc, err = run_cli(["report", "--profile", "cpu", "--out", str(link), *force], capsys)
        assert rc == 0, err
        assert link.is_symlink() and (real / "report.md").is_file()
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _export(tmp_path: Path, capsys, out: Path, *extra: str) -> tuple[int, str]:
    return run_cli(["export", "--target", "cpu", "--format", "onnx", "--val-images", "16", "--out", str(out),
                    *extra], capsys)


def test_a_hand_edited_manifest_claims_nothing_outside_out_and_no_changed_file(tmp_path, capsys, monkeypatch):
    """An artifact path of '/usr' had --force hash 5.9 GB outside OUT (45 s; '/' would walk /proc), a 'files' entry
    naming a folder claimed it whole, and a file changed since the export was replaced without a word."""
    from lgp_edge import fileio

    hashed = []
    for name in ("tree_sha256", "sha256_file"):
        real = getattr(fileio, name)
        monkeypatch.setattr(fileio, name, lambda p, _real=real: hashed.append(Path(p)) or _real(p))
    out = tmp_path / "exp"
    rc, err = _export(tmp_path, capsys, out)
    assert rc == 0, err
    mf_path = out / "manifest.json"
    original = mf_path.read_text()
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for bad in ("/usr", "../userdir", "./../userdir", "userdir/../../userdir"):
        mf = json.loads(original)
        mf["artifacts"][0]["files"].append({"path": bad, "bytes": 1, "sha256": None})
        mf["artifacts"].append({"path": bad, "format": "onnx", "sha256": "0" * 64})
        mf_path.write_text(json.dumps(mf))
        hashed.clear()
        kind, foreign = recognise_output(out)
        assert kind == "export" and foreign == [], (bad, foreign)  # the odd path claims nothing (it is not in OUT)
        assert all(out.resolve() in h.resolve().parents for h in hashed), hashed  # nothing outside OUT was read
    # a folder the user put into OUT is not the export's because an edited manifest names it
    (out / "userdir").mkdir()
    (out / "userdir" / "notes.txt").write_text("mine")
    mf = json.loads(original)
    mf["files"] = [*mf.get("files", []), {"path": "userdir", "bytes": 4, "sha256": None}]
    mf_path.write_text(json.dumps(mf))
    rc, err = _export(tmp_path, capsys, out, "--force")
    assert rc == 2 and "userdir" in err and (out / "userdir" / "notes.txt").read_text() == "mine"
    (out / "userdir" / "notes.txt").unlink()
    (out / "userdir").rmdir()
    mf_path.write_text(original)
    # a file of the export changed since it was written is the user's now
    mf = json.loads(original)
    listed = [f for a in mf["artifacts"] for f in a.get("files", [])] + mf.get("files", [])
    companion = "EMBEDDING.md"
    assert any(f["path"] == companion and f.get("sha256") for f in listed)
    (out / companion).write_text((out / companion).read_text() + "\n# my note\n")
    rc, err = _export(tmp_path, capsys, out, "--force")
    assert rc == 2 and companion in err and len(error_lines(err)) == 1
    assert (out / companion).read_text().endswith("# my note\n")


@pytest.mark.parametrize("where", ["cwd", "dotdot"])
def test_out_may_not_be_the_current_directory_for_any_command(tmp_path, capsys, monkeypatch, where):
    out = tmp_path / "rep"
    rc, err = run_cli(["report", "--profile", "cpu", "--out", str(out)], capsys)
    assert rc == 0, err
    monkeypatch.chdir(out if where == "cwd" else out / "..")
    arg = str(out) if where == "cwd" else "rep/sub/.."
    if where == "dotdot":
        (out / "sub").mkdir()
    rc, err = run_cli(["report", "--profile", "cpu", "--out", arg, "--force"], capsys)
    assert rc == 2 and len(error_lines(err)) == 1, err
    cwd_refusal = f"'{arg}' is the current directory or holds it"
    foreign_refusal = f"--force would delete '{arg}/sub', which lgp-edge did not write there"
    if where == "cwd":
        assert cwd_refusal in err and "--force would delete" not in err, err
    else:  # 'rep/sub/..' is 'rep', below the current directory: its temporary folder goes beside it, not into it
        # refused only because sub/ is not the report's (not as the current directory's), nothing touched
        assert foreign_refusal in err and "current directory" not in err, err
        assert (out / "report.md").is_file()
        assert not any(p.name.startswith(".") for p in out.iterdir())


def test_a_switchable_core_ml_export_is_replaced_with_force(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["export", "--target", "iphone", "--switchable", "--descendants", "ti6.0-5,b6.0-5", "--val-images", "8",
            "--out", str(out)]
    rc, err = run_cli(args, capsys)
    assert rc == 0, err
    mf = json.loads((out / "manifest.json").read_text())
    files = mf["artifacts"][0]["files"]
    assert files and all(isinstance(f, dict) and len(f["sha256"]) == 64 for f in files)
    # its image input normalises in the model, as the single package's: the app must not normalise again
    import coremltools as ct

    from lgp_edge.export.coreml import IN_MODEL_RULE

    meta = ct.utils.load_spec(str(out / "model.switchable.mlpackage")).description.metadata.userDefined
    assert meta["preprocess"] == IN_MODEL_RULE
    (inp,) = mf["artifacts"][0]["inputs"]
    assert inp["dtype"] == "image" and inp["normalized_in_model"] is True and inp["shape"] == [1, 1, 28, 28]
    assert [o["name"] for o in mf["artifacts"][0]["outputs"]] == ["classLabel", "classLabel_probs"]
    # and the summary says what was only checked for structure, as a single export's does
    assert mf["validation"]["structural"] == ["model.switchable.mlpackage"] and mf["validation"]["numeric"] == []
    rc, err = run_cli([*args, "--force"], capsys)
    assert rc == 0, err


def test_an_export_into_a_folder_that_does_not_exist_yet(tmp_path, capsys):
    """The recheck under the writer lock claimed OUT a second time and the release failed after the export
    was written (KeyError, exit 1)."""
    out = tmp_path / "new" / "parent" / "exp"
    rc, err = _export(tmp_path, capsys, out)
    assert rc == 0, err
    assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["exp"]


def test_the_api_gives_out_back_after_bad_input(tmp_path):
    """api.export left OUT locked for the life of the Python process (a notebook) after a UsageError."""
    from lgp_edge import api, outdir

    out = tmp_path / "apiout"
    with pytest.raises(UsageError):
        api.export("cpu", out, descendant="nope", data="synthetic", val_images=8)
    assert not outdir._claims and not (tmp_path / ".apiout.lock").exists()
    done = subprocess.run([sys.executable, "-m", "lgp_edge", "report", "--profile", "cpu", "--out", str(out)],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_second_finetune_of_one_pool_is_refused_while_the_first_runs(tiny_pool, tmp_path):
    """pool finetune replaces the pool in place and took no lock: two '--resume' runs trained on one checkpoint."""
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    tune = [sys.executable, "-m", "lgp_edge", "pool", "finetune", str(pool), "--data", "synthetic", "--batch-size",
            "8", "--save-every", "2"]
    first = subprocess.Popen([*tune, "--epochs", "200"], env=_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (pool / "finetune.ckpt").is_dir() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()
        second = subprocess.run([*tune, "--epochs", "1", "--resume"], env=_env(tmp_path), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2 and "being written by another lgp-edge" in second.stderr, second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143


def test_pool_eval_is_refused_while_another_lgp_edge_writes_the_pool(tiny_pool, tmp_path, capsys):
    """pool eval took no lock: run during a pool finetune of the same pool, it wrote the old manifest (old weights'
    sha256) beside the new weights, and the pool no longer loaded; both exited 0."""
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool, pool)
    before = (pool / "pool.json").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom lgp_edge.outdir import output_lock\n"
                               f"with output_lock({str(pool)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, err = run_cli(["pool", "eval", str(pool), "--data", "synthetic", "--max-images", "8", "--quiet"], capsys)
        assert rc == 2 and "being written by another lgp-edge" in error_lines(err)[0], err
        assert "--out" not in err and "run this command again" in err, err  # pool eval has no --out to choose
        assert (pool / "pool.json").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    rc, err = run_cli(["pool", "eval", str(pool), "--data", "synthetic", "--max-images", "8", "--quiet"], capsys)
    assert rc == 0, err
    assert not (tmp_path / ".pool.lock").exists()


def test_resume_and_in_place_fine_tuning_never_replace_the_current_directory(tmp_path, monkeypatch):
    from lgp_edge.outdir import check_resume_dir, claim_in_place, release

    out = tmp_path / "c1"
    (out / "train.ckpt").mkdir(parents=True)
    monkeypatch.chdir(out)
    try:
        with pytest.raises(UsageError, match="current directory"):
            check_resume_dir("../c1")
        with pytest.raises(UsageError, match="current directory"):
            claim_in_place(".")
    finally:
        release()


def test_a_failed_export_through_a_link_to_another_file_system_is_kept_beside_the_linked_folder(
        tmp_path, capsys, monkeypatch):
    from lgp_edge.export import validate

    other = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    if other is None or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary folder")
    real = Path(tempfile.mkdtemp(dir=other)) / "target"
    real.mkdir()
    try:
        link = tmp_path / "lnk"
        link.symlink_to(real)
        monkeypatch.setitem(validate.TOLERANCES, "fp32", validate.Tolerance(atol=0.0, rtol=0.0, min_agreement=1.0))
        rc, err = _export(tmp_path, capsys, link)
        assert rc == 1 and "validation failed" in err and "Traceback" not in err, err
        assert (real.parent / "target.failed" / "manifest.json").is_file()
    finally:
        shutil.rmtree(real.parent, ignore_errors=True)


def test_a_pool_replaced_while_it_is_read_is_read_whole(tiny_pool: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader (export, select, pool info…) that straddled the swap of a pool being rewritten in place (pool
    stitch, finetune, eval) returned the new weights with the old pool.json: the old top-1 records chose the
    descendant, and the export's manifest named the old weights' hashes. The swap here falls between the reader's
    opening of pool.json and of the weights; it reads the pool again and returns one generation."""
    import torch

    from lgp_edge.pool import pool as pool_mod
    from lgp_edge.pool.pool import load_pool, save_pool

    p = Path(shutil.copytree(tiny_pool, tmp_path / "pool"))
    pool, manifest = load_pool(p)
    with torch.no_grad():
        next(iter(pool.stitches.values())).bias.fill_(7.0)
    save_pool(tmp_path / "gen2", pool, manifest.replace(history=(*manifest.history, {"stage": "eval", "data": "x",
                                                                                      "images": 1})), keep_from=p)
    real, swapped = pool_mod._build, []

    def build_then_swap(path, m):  # the writer's swap, after this reader read pool.json and hashed the weights
        if not swapped:
            swapped.append(True)
            os.rename(p, tmp_path / ".pool.old-1")
            os.rename(tmp_path / "gen2", p)
        return real(path, m)

    monkeypatch.setattr(pool_mod, "_build", build_then_swap)
    got, m2 = load_pool(p)
    bias = next(iter(got.stitches.values())).bias
    assert swapped and len(m2.history) == len(manifest.history) + 1 and m2.history[-1]["stage"] == "eval"
    assert bool((bias == 7.0).all())
