"""What a result needs to be rebuilt: training records name the code, libraries, threads and processes they ran
with, and an export names the pool weights it came from (``pool_id`` names only the architecture)."""

from __future__ import annotations

import json

import torch
from helpers import run_cli

from lgp_edge import __version__
from lgp_edge.pool.manifest import read_manifest
from lgp_edge.pool.pool import resolve_pool


def test_an_ancestry_records_the_code_libraries_threads_processes_and_cpu_it_was_trained_with(tmp_path, capsys):
    out = tmp_path / "anc"
    rc, err = run_cli(["ancestry", "train", "--ancestry", "lgp_test_tiny", "--data", "synthetic", "--batch-size",
                       "8", "--epochs", "1", "--max-steps-per-epoch", "2", "--out", str(out), "--quiet"], capsys)
    assert rc == 0, err
    env = json.loads((out / "ancestry.json").read_text())["environment"]
    import timm

    from lgp_edge.profiling.host import cpu_model

    assert env == {"lgp-edge": __version__, "torch": torch.__version__, "timm": timm.__version__,
                   "threads": torch.get_num_threads(), "processes": 1, "cpu": cpu_model()}


def test_an_export_names_the_pool_weights_it_came_from(tmp_path, capsys):
    out = tmp_path / "exp"
    rc, err = run_cli(["export", "--target", "cpu", "--format", "onnx", "--val-images", "8", "--out", str(out)],
                      capsys)
    assert rc == 0, err
    pool = json.loads((out / "manifest.json").read_text())["pool"]
    files = read_manifest(resolve_pool(None)).files
    assert pool["files"] == files and len(files["weights.safetensors"]) == 64
