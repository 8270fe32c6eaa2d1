"""The output-directory swap never deletes what lgp-edge did not write, whatever was checked before the work."""

from __future__ import annotations

import json
from pathlib import Path

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
    (exp / "manifest.json").write_text(json.dumps({"kind": "lgp-edge export", "status": "passed",
                                                   "artifacts": [{"path": "openvino/model.xml"},
                                                                 {"path": "model.mlpackage"}]}))
    (exp / "openvino" / "model.xml").write_text("<net/>")
    (exp / "openvino" / "notes.txt").write_text("mine\n")
    (exp / "model.mlpackage" / "Data").mkdir(parents=True)  # a package named in the manifest is lgp-edge's whole
    (exp / "model.mlpackage" / "Data" / "weights.bin").write_bytes(b"w")
    (exp / "EMBEDDING.md").write_text("# embedding\n")
    assert recognise_output(exp) == ("export", ["openvino/notes.txt"])


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
