"""Files someone else sent: a pool, an import file, a store, an export directory, a target, a checkpoint.

JSON or TOML nested a few thousand levels deep (a 2 KB file) ended in a RecursionError traceback (exit 1); a
state.json or distilled.json holding another JSON type than the object lgp-edge writes, in an AttributeError
traceback; a FIFO named ``*.toml`` in --targets-dir made ``targets list`` wait forever. Each is now one line
and exit 2, with nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers import error_lines, make_tiny_pool, run_cli, snapshot

from lgp_edge.pool.auxiliary import KIND, RECORD
from lgp_edge.pool.manifest import demo_pool_dir
from lgp_edge.profiling.store import MeasurementStore
from lgp_edge.specs import LatencyRecord

NESTED = "[" * 5000


def refused(argv: list[str], root: Path, capsys: pytest.CaptureFixture[str], phrase: str, *,
            store: str | None = None) -> None:
    """One line holding ``phrase``, exit 2, and nothing under ``root`` written (but ``store``, which opening
    probes for writing)."""
    before = snapshot(root)
    rc, err = run_cli(argv, capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and phrase in lines[0] and "Traceback" not in err, err
    after = snapshot(root)
    if store:  # the store and its -wal / -shm
        before, after = ({k: v for k, v in d.items() if not k.startswith(store)} for d in (before, after))
    assert after == before


def test_a_deeply_nested_pool_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = Path(shutil.copytree(demo_pool_dir(), tmp_path / "pool"))
    (pool / "pool.json").write_text(NESTED)
    for argv in (["pool", "info", str(pool)], ["select", "--target", "cpu", "--pool", str(pool),
                                                "--store", str(tmp_path / "none.sqlite")]):
        refused(argv, tmp_path, capsys, "nested too deeply")


def test_a_deeply_nested_import_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "nested.json"
    f.write_text(NESTED)
    refused(["profile", "--import", str(f), "--store", str(tmp_path / "m.sqlite")], tmp_path, capsys,
            "nested too deeply")


def test_a_store_row_with_deeply_nested_tool_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.sqlite"
    with MeasurementStore(path) as s:
        s.put(LatencyRecord(descendant_key="b6.0-5", target="jetson-nano", runtime="tensorrt", precision="fp16",
                            batch=1, median_ms=1.0, p90_ms=1.1, p99_ms=1.2, mean_ms=1.0, std_ms=0.01, cv=0.01, n=50,
                            warmup=10, threads=1, source="measured", when="2026-01-01T00:00:00+00:00",
                            tool_versions={"tensorrt": "8.2"}, pool_id="p1"))
    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET tool_versions = ?", (NESTED,))
    db.commit()
    db.close()
    refused(["select", "--target", "jetson-nano", "--store", str(path)], tmp_path, capsys, "tool_versions",
            store=path.name)


def test_an_export_directory_whose_manifest_is_deeply_nested(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An OUT holding a manifest.json nested too deeply is not lgp-edge's: --force refuses it, without a traceback."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(NESTED)
    refused(["export", "--target", "cpu", "--out", str(out), "--force", "--format", "onnx", "--val-images", "50",
             "--store", str(tmp_path / "m.sqlite")], tmp_path, capsys, "did not write")


def test_a_deeply_nested_target_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "evil.toml").write_text('name = "evil"\n[extra]\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    refused(["targets", "show", "evil", "--targets-dir", str(tdir)], tmp_path, capsys, "nested too deeply")


def test_a_fifo_in_the_targets_directory_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tdir = tmp_path / "targets"
    tdir.mkdir()
    os.mkfifo(tdir / "pipe.toml")
    result: dict[str, tuple[int, str]] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run_cli(["targets", "list", "--targets-dir",
                                                                         str(tdir)], capsys)), daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():  # unblock the reader so the test process can end
        with open(tdir / "pipe.toml", "w"):
            pass
        t.join(10)
        pytest.fail("'targets list' waited on a FIFO named *.toml")
    rc, err = result["r"]
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "not a regular file" in lines[0], err


def test_a_resume_checkpoint_whose_state_is_not_an_object(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pool = make_tiny_pool(tmp_path / "pool", with_records=False)
    ckpt = pool / "finetune.ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text("[1]")
    refused(["pool", "finetune", str(pool), "--data", "synthetic", "--epochs", "1", "--max-steps-per-epoch", "1",
             "--batch-size", "8", "--quiet", "--resume"], tmp_path, capsys, "damaged")


def test_a_distilled_record_whose_models_are_not_objects(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dd = tmp_path / "dd"
    dd.mkdir()
    (dd / RECORD).write_text(json.dumps({"kind": KIND, "models": [1]}))
    refused(["pool", "build", "--ancestry", "lgp_test_tiny", "--allow-random-ancestry", "--data", "synthetic",
             "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8", "--quiet",
             "--out", str(tmp_path / "X"), "--distilled", str(dd)], tmp_path, capsys, "distilled-models record")


def test_a_deeply_nested_ancestry_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lgp_edge.models.ancestry import default_checkpoint

    anc = Path(shutil.copytree(default_checkpoint("lgp_vit_fmnist", None), tmp_path / "anc"))
    (anc / "ancestry.json").write_text(NESTED)
    refused(["export", "--model", "lgp_vit_fmnist", "--checkpoint", str(anc), "--target", "cpu", "--out",
             str(tmp_path / "out"), "--format", "onnx", "--val-images", "50", "--store", str(tmp_path / "m.sqlite")],
            tmp_path, capsys, "nested too deeply")


@pytest.mark.parametrize(("field", "value", "phrase"), [
    ("stage", {"a": 1}, "stage"), ("stage", [], "stage"), ("stage", "", "stage"),
    ("data", 123, "data"), ("data", ["x"], "data"), ("stitch_init", None, "stitch_init"),
    ("stage", "fine\u001b[2Jtuned", "stage"),  # printed into report.md and the terminal
    ("files", {"weights.safetensors": 5}, "files"), ("files", ["weights.safetensors"], "files"),
    ("files", {"weights.safetensors": "abc"}, "files"), ("files", {"../weights.safetensors": "0" * 64}, "files"),
    ("provenance", 7, "provenance"),
], ids=["stage-object", "stage-list", "stage-empty", "data-number", "data-list", "stitch-init-null",
        "stage-escape", "files-number", "files-list", "files-short-hash", "files-path", "provenance-number"])
def test_a_pool_json_field_of_the_wrong_type_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         field: str, value: object, phrase: str) -> None:
    """pool.json's stage, data, stitch_init, files and provenance were taken as they were: an object for stage or
    a number for a file's hash ended in TypeError tracebacks in `pool info`, a number for data in an
    AttributeError one in `export`, and an escape in stage reached report.md and the terminal."""
    pool = Path(shutil.copytree(demo_pool_dir(), tmp_path / "pool"))
    raw = json.loads((pool / "pool.json").read_text())
    raw[field] = value
    (pool / "pool.json").write_text(json.dumps(raw))
    for argv in (["pool", "info", str(pool)], ["select", "--target", "cpu", "--pool", str(pool), "--json",
                                                "--store", str(tmp_path / "none.sqlite")]):
        refused(argv, tmp_path, capsys, phrase)


def test_a_pool_json_whose_data_names_a_folder_with_any_printable_name_is_read(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]
                                                                                ) -> None:
    """The label check refused what `pool build` writes for an image folder named with a no-break space or an
    emoji's joiner (str.isprintable is False for them): only control characters are refused."""
    pool = Path(shutil.copytree(demo_pool_dir(), tmp_path / "pool"))
    raw = json.loads((pool / "pool.json").read_text())
    for data in ("imagefolder:/data/My\u00a0Images", "imagefolder:/data/\U0001f468\u200d\U0001f469 photos"):
        raw["data"] = data
        (pool / "pool.json").write_text(json.dumps(raw))
        rc, err = run_cli(["pool", "info", str(pool), "--json"], capsys)
        assert rc == 0, err
