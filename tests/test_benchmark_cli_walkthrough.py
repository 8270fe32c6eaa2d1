"""benchmarks/cli_walkthrough.py and benchmarks/memory.py: the README's walkthrough and memory paragraphs are
rendered from their results files (small hand-made ones here), the walkthrough script runs the CLI on the tiny
pool, and the memory script's measurement and arithmetic hold on models of known size."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from helpers import load_benchmark


def _module(name: str):
    return load_benchmark(name, f"bench_walk_{name}")


@pytest.fixture
def render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    r = _module("render_readme")
    monkeypatch.setattr(r, "RESULTS", tmp_path)
    return r


def _choice(key: str, top1: float, ms: float, source: str, threads: int, noisy: bool = False) -> dict:
    return {"key": key, "top1": top1, "latency_ms": ms, "latency_source": source, "threads": threads, "noisy": noisy}


def _walkthrough() -> dict:
    """A results file as cli_walkthrough.py writes it, with only the fields the README reads."""
    sels = [{"profile": p, "candidates": 18, "fitting": 18, "threads": t, "noisy": [],
             "chosen": _choice("b6.0-5", 90.52, ms, src, t)}
            for p, ms, src, t in (("cpu", 0.514, "measured", 2), ("jetson-nano", 1.7776, "predicted", 1),
                                  ("iphone", 3.0, "predicted", 1))]
    art = {"top1_agreement": 1.0, "precision": "fp32"}
    return {
        "command": "python benchmarks/cli_walkthrough.py", "date": "2026-12-05T10:00:00Z", "code_version": "abc1234",
        "cpu": "Test CPU", "machine": {"logical_cpus": 2, "load_average_start": [0.25, 0, 0],
                                       "load_average_end": [0.5, 0, 0]},
        "pool": {"bundled_demo_pool": True, "path": "lgp_edge/data/demo_pool", "descendants": 18},
        "profile": {"command": "lgp-edge profile --target cpu --runtime onnxruntime --json", "wall_s": 9.2},
        "selections": sels,
        "exports": {"cpu": {"command": "lgp-edge export --target cpu --out out/cpu --json", "wall_s": 31.0,
                            "validation": {"images": 1000, "data": "fashion-mnist"},
                            "artifacts": [{**art, "format": "onnx", "max_abs_diff": 3.81e-6},
                                          {**art, "format": "openvino", "max_abs_diff": 3.58e-6}]},
                    "jetson-nano": {"command": "lgp-edge export --target jetson-nano --out out/jetson-nano --json",
                                    "wall_s": 20.0,
                                    "artifacts": [{"format": "tensorrt", "precision": "fp16", "opset": 13,
                                                   "max_abs_diff": 5.64e-3, "top1_agreement": 1.0,
                                                   "fp32_file": {"max_abs_diff": 3.81e-6}}]}},
        "tight_budget": {"command": "lgp-edge select --target jetson-nano --budget-ms 1.6 --json", "problem": None,
                         "chosen": _choice("ti6.0-5", 86.91, 1.5253, "predicted", 1),
                         "most_accurate": _choice("b6.0-5", 90.52, 1.7776, "predicted", 1)},
    }


def test_walkthrough_paragraph_is_rendered_from_its_results_file(tmp_path: Path, render) -> None:
    d = _walkthrough()
    (tmp_path / "cli_walkthrough.json").write_text(json.dumps(d))
    text = render.walkthrough()
    for part in ("`python benchmarks/cli_walkthrough.py` (2026-12-05, code version abc1234; Test CPU, 2 logical CPUs, "
                 "load average 0.2 at the start, 0.5 at the end;",
                 "`lgp-edge profile --target cpu --runtime onnxruntime --json` first, 9 s",
                 "admits all 18 descendants of this small pool, so each chose `b6.0-5` (90.52% top-1); on cpu its "
                 "measured p90 was 0.51 ms (2 threads), on the Jetson Nano 1.78 ms predicted.",
                 "validated on 1,000 fashion-mnist validation images: max |diff| 3.8e-6 (ONNX) and 3.6e-6 (OpenVINO), "
                 "top-1 agreement 1.000;",
                 "the opset-13 ONNX, 3.8e-6 in fp32 and, checked in fp16, 5.6e-3 with agreement 1.000.",
                 "A tighter budget changes the choice: `lgp-edge select --target jetson-nano --budget-ms 1.6 --json` "
                 "picks `ti6.0-5` (86.91%, p90 1.53 ms predicted) and says that `b6.0-5` needs 1.78 ms."):
        assert part in text
    assert "were all noisy" not in text and text.endswith(".\n") and "\n" not in text[:-1]
    assert "; fresh store; " in text  # a run from before the exported-graph cache
    d["what"] = "... a new measurement store ($LGP_EDGE_STORE) and an empty exported-graph cache ($LGP_EDGE_CACHE) ..."
    (tmp_path / "cli_walkthrough.json").write_text(json.dumps(d))
    assert "; fresh store and exported-graph cache; " in render.walkthrough()

    # every number comes from the file: another run, other words
    e = copy.deepcopy(d)
    cpu = e["selections"][0]
    cpu["chosen"] |= {"latency_ms": 0.8659, "latency_source": "predicted", "noisy": True}
    cpu["noisy"] = ["b6.0-5", "ti6.0-5", "ti6.0-4+b6.5-5", "ti6.0-5+b6.5-5"]
    e["selections"][2]["fitting"] = 17
    e["exports"]["cpu"]["artifacts"][1]["max_abs_diff"] = 4.5e-6
    e["tight_budget"] |= {"chosen": None, "most_accurate": None,
                          "problem": "no descendant of pool x fits profile 'jetson-nano'"}
    (tmp_path / "cli_walkthrough.json").write_text(json.dumps(e))
    text = render.walkthrough()
    assert "every built-in profile chose `b6.0-5` (90.52% top-1)" in text.replace("Every", "every")
    assert "its p90 was 0.87 ms predicted (2 threads; its measured runs were noisy)" in text
    assert "4.5e-6 (OpenVINO)" in text and "in this run 4 of 18 descendants' cpu runs were all noisy" in text
    assert text.rstrip().endswith("leaves nothing that fits: no descendant of pool x fits profile 'jetson-nano'.")
    cpu["noisy"] = [f"k{i}" for i in range(18)]
    (tmp_path / "cli_walkthrough.json").write_text(json.dumps(e))
    assert "in this run every descendant's cpu runs were all noisy" in render.walkthrough()

    e["selections"][1]["chosen"] = _choice("ti6.0-5", 86.91, 1.5253, "predicted", 1)  # profiles disagree
    (tmp_path / "cli_walkthrough.json").write_text(json.dumps(e))
    text = render.walkthrough()
    assert "The built-in profiles chose `cpu` `b6.0-5` (90.52%), `jetson-nano` `ti6.0-5` (86.91%)" in text
    assert "on the Jetson Nano (`ti6.0-5`) 1.53 ms predicted" in text


def _memory() -> dict:
    return {"command": "python benchmarks/memory.py", "date": "2026-12-05T10:00:00Z", "code_version": "abc1234",
            "cpu": "Test CPU", "versions": {"onnxruntime": "1.32.0"}, "threads": 1, "batches": [1, 512],
            "pool": {"bundled_demo_pool": True}, "descendant": "b6.0-5", "reference": "ti6.0-5",
            "models": {"descendant": {"params": 1199882}, "reference": {"params": 78794}},
            "summary": {"peak_mib": {"1": 21.17, "512": 155.7}, "charged_mb": {"1": 4.6563, "512": 45.14},
                        "runtime_mib": 12.18, "weights_mib": 4.577, "weights_factor": 1.906, "prepack_mib": 1.25,
                        "activation_kib_per_image": 269.6, "charged_activation_kib_per_image": 80.83}}


def test_memory_paragraph_is_rendered_from_its_results_file(tmp_path: Path, render) -> None:
    d = _memory()
    (tmp_path / "memory.json").write_text(json.dumps(d))
    text = render.memory()
    for part in ("`python benchmarks/memory.py` (2026-12-05, code version abc1234; Test CPU, ONNX Runtime 1.32.0, "
                 "1 thread, the demo pool's `b6.0-5`",
                 "21.2 MiB at batch 1 and 155.7 MiB at batch 512, where 4.66 and 45.1 MB are charged.",
                 "`ti6.0-5`, which has 15 times fewer weights, that is about 12 MiB of session and runtime, the "
                 "4.58 MiB of weights held 1.9 times (pre-packing them for ONNX Runtime's GEMM accounts for 1.2 MiB: "
                 "with it off, batch 1 peaks 19.9 MiB over the baseline), and 270 KiB of activations per image "
                 "against 81 charged."):
        assert part in text
    d["summary"]["activation_kib_per_image"] = 264.0
    (tmp_path / "memory.json").write_text(json.dumps(d))
    assert "264 KiB of activations per image" in render.memory()


def test_memory_derives_runtime_weights_and_activations_from_peaks() -> None:
    """Peaks made from a known runtime, weights factor and per-image activations give those three back."""
    mem = _module("memory")
    runtime, factor, top = 12e6, 1.9, 512

    def model(weights: float, per_image: float, prepack: float) -> dict:
        peak = {b: runtime + factor * weights + b * per_image for b in (1, top)}
        return {"peak": peak, "inference_peak": {b: 1e6 + b * per_image for b in (1, top)}, "weight_bytes": weights,
                "peak_1_no_prepack": peak[1] - prepack}

    d = mem.derive(model(4.8e6, 270e3, 1.3e6), model(0.3e6, 64e3, 0.1e6), top)
    assert d["activation_bytes_per_image"] == pytest.approx(270e3)
    assert d["reference_activation_bytes_per_image"] == pytest.approx(64e3)
    assert d["weights_factor"] == pytest.approx(factor) and d["runtime_bytes"] == pytest.approx(runtime)
    assert d["prepack_bytes"] == pytest.approx(1.3e6)


def _matmul_onnx(path: Path, n: int) -> None:
    """x (batch, n) @ W (n, n), W stored in the file: n * n * 4 bytes of weights, a dynamic batch."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_memory_measures_a_fresh_process_over_its_baseline(tmp_path: Path) -> None:
    """A model holding 16 MiB of weights: the session's peak is at least that, the first inference's at least the
    session's, and the inference's own peak grows by about the 16 MiB output at a batch of 2048 rows of 2048 floats
    (the input is made before the baseline)."""
    mem = _module("memory")
    path = tmp_path / "m.onnx"
    _matmul_onnx(path, 2048)
    one = mem.measure(path, 1, (2048,), 1, 1)
    big = mem.measure(path, 2048, (2048,), 1, 1)
    (run,) = one["runs"]
    assert run["peak_reset"] and run["threads"] == 1 and run["batch"] == 1
    weights = 2048 * 2048 * 4
    assert one["peak_after_session"] >= 0.9 * weights
    assert one["peak_after_first_inference"] >= one["peak_after_session"]
    assert one["peak_after_first_inference"] < 3 * weights + 64 * mem.MIB  # the baseline is subtracted
    grew = big["inference_peak"] - one["inference_peak"]
    assert 0.9 * weights < grew < 2 * weights  # the output (and any working memory), not the input


@pytest.mark.slow
def test_walkthrough_script_runs_on_the_tiny_pool(tiny_pool: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    walk = _module("cli_walkthrough")
    out = tmp_path / "results" / "cli_walkthrough.json"
    argv = ["--pool", str(tiny_pool), "--profile-descendant", "ti6.0-5", "--iters", "5", "--val-images", "16",
            "--tight-budget-ms", "0.001", "--out", str(out)]
    assert walk.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["command"] == "python benchmarks/cli_walkthrough.py " + " ".join(argv)
    assert res["code_version"] and res["cpu"] and not res["pool"]["bundled_demo_pool"]
    assert "an empty exported-graph cache ($LGP_EDGE_CACHE)" in res["what"]
    prof = res["profile"]
    assert prof["command"].startswith("lgp-edge profile --target cpu --runtime onnxruntime --pool ")
    assert [r["key"] for r in prof["records"]] == ["ti6.0-5"] and prof["rows_written"] == 1 and prof["wall_s"] > 0
    sels = {s["profile"]: s for s in res["selections"]}
    assert {"cpu", "jetson-nano", "iphone"} <= set(sels) and all(s["chosen"] for s in sels.values())
    assert sels["cpu"]["threads"] >= 1 and sels["jetson-nano"]["chosen"]["latency_source"] == "predicted"
    cpu, nano = res["exports"]["cpu"], res["exports"]["jetson-nano"]
    assert cpu["status"] == nano["status"] == "passed" and cpu["stdout_is_manifest"]
    assert {a["format"] for a in cpu["artifacts"]} == {"onnx", "openvino"} and cpu["validation"]["images"] == 16
    assert all(0 <= a["max_abs_diff"] < 1e-3 and a["passed"] for a in cpu["artifacts"])
    (trt,) = nano["artifacts"]
    assert trt["opset"] == 13 and trt["precision"] == "fp16" and 0 <= trt["fp32_file"]["max_abs_diff"] < 1e-3
    tight = res["tight_budget"]
    assert tight["exit_code"] == 2 and tight["chosen"] is None and "fits" in tight["problem"]
    r = _module("render_readme")
    monkeypatch.setattr(r, "RESULTS", out.parent)
    assert f"`{res['command']}`" in r.walkthrough()


@pytest.mark.slow
def test_memory_script_runs_on_the_tiny_pool(tiny_pool: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    mem = _module("memory")
    mout = tmp_path / "results" / "memory.json"
    assert mem.main(["--pool", str(tiny_pool), "--batches", "1,64", "--repeats", "1", "--val-images", "16",
                     "--out", str(mout)]) == 0
    m = json.loads(mout.read_text())
    s = m["summary"]
    assert set(s["peak_mib"]) == {"1", "64"} and s["peak_mib"]["64"] > s["peak_mib"]["1"] > 0
    assert s["charged_mb"]["64"] > s["charged_mb"]["1"] > 0 and s["runtime_mib"] > 0
    assert s["activation_kib_per_image"] > 0 and [e["dynamic_batch"] for e in m["exports"]] == [True, False, True]
    assert all(e["validation_passed"] for e in m["exports"])

    r = _module("render_readme")
    monkeypatch.setattr(r, "RESULTS", mout.parent)
    assert f"`{m['command']}`" in r.memory()
