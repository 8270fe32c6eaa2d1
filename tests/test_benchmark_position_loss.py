"""benchmarks/position_loss.py on real data with the shipped ancestry, two distillation steps per run: the JSON
it writes, both runs measured the same way and the per-epoch losses recorded."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import load_benchmark


def test_position_loss_benchmark_smoke_run(tmp_path: Path) -> None:
    bench = load_benchmark("position_loss", "bench_position_loss")
    out = tmp_path / "pl.json"
    assert bench.main(["--epochs", "1", "--steps", "2", "--images", "200", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["runs"]) == {"mean", "sum"} and res["model"] == "ti6" and res["ancestry"]["top1"] > 85
    assert res["settings"]["max_steps_per_epoch"] == 2 and res["code_version"] and res["cpu"]
    for mode, r in res["runs"].items():
        assert r["position_loss"] == mode and r["images"] == 200 and 0.0 <= r["ti_alone"] <= 100.0
        assert len(r["epoch_loss"]) == 1 and r["epoch_loss"][0] > 0
    assert res["runs"]["sum"]["epoch_loss"][0] > res["runs"]["mean"]["epoch_loss"][0]  # three positions, summed
