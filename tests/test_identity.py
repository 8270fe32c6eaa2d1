"""A pool's identity is its network, not the directory its ancestry weights were read from.

``pool_id`` keys the latency measurements of a pool's descendants and every checkpoint fingerprint: the same
ancestry weights read from another path (a moved checkout, another machine, the package installed elsewhere)
must give the same pool id, and an interrupted build must resume from there.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY, make_tiny_pool

from lgp_edge.cli import main
from lgp_edge.models.ancestry import create_ancestry
from lgp_edge.pool.pool import MANIFEST, read_manifest
from lgp_edge.specs import PoolSpec

BUILD = ["pool", "build", "--ancestry", TINY, "--data", "synthetic", "--epochs", "2", "--max-steps-per-epoch", "3",
         "--batch-size", "32", "--init", "lstsq", "--quiet"]


def _ancestry_file(path: Path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model, _ = create_ancestry(TINY)
    path.parent.mkdir(parents=True)
    save_file(model.state_dict(), str(path))
    return path


def test_pool_id_ignores_where_the_ancestry_weights_were_read_from(tmp_path: Path) -> None:
    spec = read_manifest(make_tiny_pool(tmp_path / "p")).spec
    here = dataclasses.replace(spec.ancestry, checkpoint="/build/machine/lgp_edge/data/ancestry/x")
    there = dataclasses.replace(spec.ancestry, checkpoint="/home/user/.venv/lib/lgp_edge/data/ancestry/x")
    ids = {PoolSpec(a, spec.depth, spec.instances).pool_id for a in (here, there, spec.ancestry)}
    assert len(ids) == 1
    assert PoolSpec(spec.ancestry, 9, spec.instances).pool_id not in ids  # the network still counts


def test_an_interrupted_build_resumes_after_its_ancestry_file_moved(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import lgp_edge.train as train

    first = _ancestry_file(tmp_path / "checkout-a" / "ancestry.safetensors")
    out = tmp_path / "pool"
    saved = train.save_checkpoint

    def save_then_stop(*args: object, **kw: object) -> None:
        saved(*args, **kw)
        raise KeyboardInterrupt  # as Ctrl-C right after the first checkpoint

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    assert main([*BUILD, "--ancestry-checkpoint", str(first), "--out", str(out), "--save-every", "1"]) != 0
    monkeypatch.setattr(train, "save_checkpoint", saved)
    assert list(out.glob("distill*.ckpt/state.json")), "the interrupted build left no checkpoint"

    moved = tmp_path / "checkout-b" / "ancestry.safetensors"
    moved.parent.mkdir()
    shutil.move(first, moved)
    capsys.readouterr()
    rc = main([*BUILD, "--ancestry-checkpoint", str(moved), "--out", str(out), "--save-every", "1", "--resume"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["history"][0]["ancestry_checkpoint"] == str(moved)  # where it came from is still recorded


def test_records_written_under_an_earlier_pool_id_keep_their_top1(tmp_path: Path) -> None:
    """A pool evaluated by an lgp-edge whose pool id still hashed the ancestry's path keeps its top-1."""
    pool = make_tiny_pool(tmp_path / "p")
    raw = json.loads((pool / MANIFEST).read_text())
    for r in raw["descendants"]:
        r["spec"]["pool_id"] = "0123456789ab"
    (pool / MANIFEST).write_text(json.dumps(raw))
    manifest = read_manifest(pool)
    assert len(manifest.descendants) == 18 and all(r.top1 is not None for r in manifest.descendants)
    assert {r.spec.pool_id for r in manifest.descendants} == {manifest.spec.pool_id}
