"""benchmarks/aux_init.py on real data with the shipped ancestry, one distillation step per run: the JSON it
writes, and the direction of its claim (B started from the ancestry is far ahead of B started at random)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers import load_benchmark


def test_aux_init_benchmark_smoke_run(tmp_path: Path) -> None:
    bench = load_benchmark("aux_init", "bench_aux_init")
    out, threads = tmp_path / "aux.json", torch.get_num_threads()
    try:
        assert bench.main(["--steps", "1", "--images", "200", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert res["steps"] == 1 and res["images"] == 200 and set(res["runs"]) == {"ancestry", "random"}
    assert res["settings"]["steps"] == 1 and res["ancestry"]["top1"] > 85  # the shipped ancestry, named in the file
    anc, rnd = res["runs"]["ancestry"], res["runs"]["random"]
    assert anc["inherited_blocks"] == {"ti6": [0, 2, 4, 6, 8, 10], "b6": [0, 2, 4, 6, 8, 10]}
    assert rnd["inherited_blocks"] is None
    assert len(anc["top1"]) == len(rnd["top1"]) == 18
    assert all(0.0 <= v <= 100.0 for r in (anc, rnd) for v in r["top1"].values())
    assert anc["b_alone"] > rnd["b_alone"] + 30  # the ancestry's own blocks vs one step from random
