"""benchmarks/distill_convergence.py with the shipped ancestry and real data, a few steps: each run is a real
``pool distill`` output whose saved models it evaluates, beside the replication's numbers; a finished run is
reused, a work directory holding another run refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_benchmark


def _bench():
    return load_benchmark("distill_convergence", "bench_distill_convergence", register=True)  # it has a dataclass


def test_distill_convergence_smoke_run_and_reuse(tmp_path: Path) -> None:
    bench = _bench()
    work, out = tmp_path / "work", tmp_path / "c.json"
    argv = ["--run", "ti6@1", "--steps", "2", "--images", "100", "--work", str(work), "--out", str(out), "--quiet"]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["code_version"] and res["cpu_facts"] and res["test_images"] == 100
    run = res["runs"][0]
    assert (run["models"], run["epochs"], run["status"]) == (["ti6"], 1, "computed")
    assert run["recorded_top1"] == run["top1"] and len(run["epoch_loss"]) == 1 and len(run["epoch_loss"][0]) == 1
    rec = json.loads((work / "ti6-e1" / "distilled.json").read_text())
    assert rec["top1_images"] == 100 and rec["config"]["max_steps_per_epoch"] == 2
    ti6 = res["models"]["ti6"]
    rep = json.loads(Path(bench.REPLICATION).read_text())
    assert ti6["replication_top1"] == rep["methods"]["lgp_d6_lstsq-kd"]["instances_after_distill"]["ti6.0-5"]
    assert ti6["replication_epochs"] == rep["settings"]["distill_width_epochs"]["ti"]
    assert ti6["gain"] == pytest.approx(ti6["top1"] - ti6["replication_top1"], abs=0.011)
    assert "b12" not in res["replication"]["epochs"]  # SN-Net's B anchor is the ancestry, never distilled
    assert bench.main(argv) == 0  # the finished run is reused, with the same numbers
    again = json.loads(out.read_text())
    assert again["runs"][0]["status"] == "reused" and again["models"] == res["models"]
    with pytest.raises(SystemExit, match="holds another run"):  # same directory name, other recipe
        bench.main([*argv[:3], "3", *argv[4:]])


def test_distill_bf16_smoke_run_pairs_the_precisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/distill_bf16.py: the same run in float32 and under --bf16, each a real ``pool distill`` output
    whose saved models it evaluates; the ratio is of the runs' own training seconds; README renders the file."""
    bench = load_benchmark("distill_bf16", "bench_distill_bf16")
    work, out = tmp_path / "work", tmp_path / "distill_bf16.json"
    assert bench.main(["--run", "ti6@1", "--steps", "2", "--images", "100", "--work", str(work), "--out", str(out),
                       "--quiet"]) == 0
    res = json.loads(out.read_text())
    (run,) = res["runs"]
    f32, b16 = run["float32"], run["bf16"]
    assert (f32["config"]["bf16"], b16["config"]["bf16"]) == (False, True)
    for r, d in ((f32, "ti6-e1-float32"), (b16, "ti6-e1-bf16")):
        rec = json.loads((work / d / "distilled.json").read_text())
        assert r["status"] == "computed" and r["train_s"] == rec["train_s"] and 0 < rec["train_s"] <= rec["wall_s"]
        assert r["top1"] == {"ti6": rec["top1"]["ti6"]} and rec["top1_images"] == 100
    assert run["seconds_ratio_bf16_to_float32"] == pytest.approx(b16["train_s"] / f32["train_s"], abs=1e-3)
    assert run["top1_change"] == {"ti6": pytest.approx(b16["top1"]["ti6"] - f32["top1"]["ti6"], abs=0.011)}
    assert res["cpu_facts"]["features"] is not None and res["test_images"] == 100
    render = load_benchmark("render_readme", "bench_render_bf16")
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    row = (f"| ti6 | 1 | {f32['train_s'] / 60:.1f} | {b16['train_s'] / 60:.1f} | "
           f"{run['seconds_ratio_bf16_to_float32']:.2f} | ti6 {f32['top1']['ti6']:.2f} -> {b16['top1']['ti6']:.2f} ")
    assert row in render.bf16() and "on 100 test images" in render.bf16()
