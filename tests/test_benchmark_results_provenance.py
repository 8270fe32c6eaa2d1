"""The results files of benchmarks/latency.py, switchable.py, int8.py and aux_init.py record which code, when, the
command and the CPU; they are written atomically with NaN refused; and the README renderer shows that provenance,
saying so when an older file lacks it. Each benchmark's own writer and renderer on small synthetic results."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import pytest
from helpers import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
DATE = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


def _module(name: str):
    return load_benchmark(name, f"bench_prov_{name}")


@pytest.fixture(scope="module")
def render():
    return _module("render_readme")


def _check_header(res: dict, script: str, command: str) -> None:
    from lgp_edge.profiling.host import cpu_model

    assert res["code_version"] == _module("make_demo_pool").git_rev() and res["code_version"] not in ("", "unknown")
    assert DATE.match(res["date"]) and abs(time.mktime(time.strptime(res["date"], "%Y-%m-%dT%H:%M:%SZ"))
                                           - time.mktime(time.gmtime())) < 600
    assert res["command"] == f"python benchmarks/{script}.py {command}".rstrip()
    assert res["cpu"] == cpu_model() and res["cpu"]
    facts = res["cpu_facts"]
    assert facts["model"] == res["cpu"] and facts["logical_cpus"] >= 1 and 1 <= facts["affinity_cpus"] <= 4096


def test_cpu_facts_tell_apart_what_the_model_name_does_not() -> None:
    """Two VMs both named "AMD EPYC": family/model and the instruction sets a timing or an int8 result depends on
    are read from /proc/cpuinfo's first processor (a later processor's lines are not mixed in)."""
    from lgp_edge.profiling.host import cpu_facts

    info = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
            "stepping\t: 1\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n\n"
            "processor\t: 1\ncpu family\t: 23\nmodel\t\t: 49\nflags\t\t: avx2 amx_int8\n")
    facts = cpu_facts(info)
    assert (facts["family"], facts["model_number"], facts["stepping"]) == ("25", "17", "1")
    assert facts["features"] == ["avx2", "fma", "avx512f", "avx512_vnni"]
    arm = cpu_facts("processor\t: 0\nFeatures\t: fp asimd asimddot i8mm\nCPU part\t: 0xd0b\n")
    assert arm["features"] == ["asimd", "asimddot", "i8mm"] and arm["family"] is None
    assert cpu_facts("")["features"] is None


def _write_refuses_nan(bench, path: Path) -> None:
    """``write_results`` refuses NaN (json.dumps alone writes it) and leaves the existing file as it was."""
    before = path.read_bytes()
    with pytest.raises(ValueError):
        bench.write_results(path, {"x": math.nan})
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def _latency_result(bench, argv: list[str]) -> dict:
    summary = {"speedup_over_torch_geomean": 1.5, "achieved_gflops_max": 3.25, "fraction_of_gemm_peak_max": 0.1,
               "predictor_mape_percent": 4.5, "predictor_p90_mape_percent": 6.0}
    ms = {"median_ms": 1.0, "predicted_ms": 1.1}
    return {"benchmark": "benchmarks/latency.py", **bench.provenance(argv),
            "machine": {"logical_cpus": 2, "threads": 1, "gemm_peak_gflops_fp32": 100.0,
                        "torch_matmul_2048_gflops_fp32": 90.0},
            "pools": [{"name": "demo pool", "summary": {rt: summary for rt in ("torch", "onnxruntime", "openvino")},
                       "descendants": [{"key": "ti6.0-5", "flops_fvcore": 2e6, "torch": ms, "onnxruntime": ms,
                                        "openvino": ms}]}],
            "wall_s": 42.0}


def test_latency_results_record_provenance_and_readme_shows_it(tmp_path: Path, render,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _module("latency")
    argv = ["--threads", "1", "--out", "my results/latency_1thread.json"]
    res = _latency_result(bench, argv)
    for name in ("latency_1thread.json", "latency.json"):
        assert bench.write_results(tmp_path / name, res) == tmp_path / name
    back = json.loads((tmp_path / "latency.json").read_text())
    _check_header(back, "latency", "--threads 1 --out 'my results/latency_1thread.json'")
    monkeypatch.setattr(sys, "argv", ["benchmarks/latency.py", "--skip-big"])  # no argv given: the process's own
    assert bench.provenance(None)["command"] == "python benchmarks/latency.py --skip-big"
    _write_refuses_nan(bench, tmp_path / "latency.json")

    monkeypatch.setattr(render, "RESULTS", tmp_path)
    text = render.latency()
    assert (f"`{back['command']}` ({back['date'][:10]}, code version {back['code_version']}): {back['cpu']}, "
            "1 thread, ") in text
    # a file from before provenance was recorded: its "when" and machine.cpu, the code version said to be missing
    old = {k: v for k, v in back.items() if k not in ("code_version", "date", "cpu")}
    old |= {"when": "2026-11-30T10:00:00+00:00", "machine": {**back["machine"], "cpu": "Old CPU"}}
    (tmp_path / "latency.json").write_text(json.dumps(old))
    assert f"`{back['command']}` (2026-11-30, code version not recorded): Old CPU, 1 thread" in render.latency()


def _switchable_result(bench, argv: list[str]) -> dict:
    row = {"key": "ti6.0-5", "top1": 85.0, "ratio_vs_single_shipped": 1.02,
           "median_ms": {"single_shipped": 1.0, "switchable": 1.02}}
    return {"benchmark": "benchmarks/switchable.py", **bench.provenance(argv),
            "latency_method": {"threads": 2},
            "selections": [{"selection": "all", "descendants": 1, "validation_all_passed": True,
                            "size": {"switchable_bytes": 2e6, "single_onnx_sum_bytes": 2.1e6,
                                     "ratio_to_pool_weights": 1.01}, "size_goal_met_vs_pool": True,
                            "latency_goal_met_vs_single_shipped": True, "latency_per_descendant": [row]}],
            "machine": {"cores": 2}}


def test_switchable_results_record_provenance_and_readme_shows_it(tmp_path: Path, render,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _module("switchable")
    res = _switchable_result(bench, ["--threads", "2", "--rounds", "3"])
    bench.write_results(tmp_path / "switchable.json", res)
    back = json.loads((tmp_path / "switchable.json").read_text())
    _check_header(back, "switchable", "--threads 2 --rounds 3")
    _write_refuses_nan(bench, tmp_path / "switchable.json")

    monkeypatch.setattr(render, "RESULTS", tmp_path)
    assert render.switchable().startswith(
        f"`python benchmarks/switchable.py --threads 2 --rounds 3` ({back['date'][:10]}, code version "
        f"{back['code_version']}): {back['cpu']}, 2 cores, ONNX Runtime, 2 threads,")
    old = {k: v for k, v in back.items() if k not in ("code_version", "date", "command", "cpu")}
    old["machine"] = {"cores": 2, "cpu": "Old CPU"}
    old["latency_method"] = {"threads": 1}
    (tmp_path / "switchable.json").write_text(json.dumps(old))
    assert render.switchable().startswith(
        "`python benchmarks/switchable.py` (arguments not recorded) (date not recorded, code version not recorded): "
        "Old CPU, 2 cores, ONNX Runtime, 1 thread,")


def test_int8_quick_run_writes_int8_quick_json_by_default() -> None:
    bench = _module("int8")
    results = ROOT / "benchmarks" / "results"
    assert Path(bench.parse(["--quick"]).out) == results / "int8_quick.json"
    assert Path(bench.parse([]).out) == results / "int8.json"
    assert bench.parse(["--quick", "--out", "/tmp/x.json"]).out == "/tmp/x.json"


def _int8_run(cpu: str, vnni: bool, date: str, rev: str | None, command: str) -> dict:
    run = {"date": date, "command": command, "cpu": cpu,
           "machine": {"cpu_family_model": "6/1", "avx2": True, "avx512_vnni": vnni, "avx_vnni": False,
                       "amx_int8": False, "threads": 1, "load_average_start": [0.5, 0.5, 0.5]},
           "versions": {"onnxruntime": "1.0", "openvino": "2026.1-x", "nncf": "3", "torch": "2"}}
    return run | ({"code_version": rev} if rev else {})


def _int8_result(speed_run: dict, acc_run: dict) -> dict:
    """Speed measured by ``speed_run``, accuracy by ``acc_run`` (the last run: the top level)."""
    speed = {"ancestry": "deit_base_patch16_224", "img_size": 224, "weights": "random", "calibration": "noise",
             "settings": {"rounds": 2}, "wall_s": 60.0, "run": speed_run,
             "descendants": [{"key": "ti6.0-5", "flops_fvcore": 1e9, "speedup_int8": {"onnxruntime": 2.0,
                                                                                     "openvino": 2.5},
                              "ms": {k: {"median": 2.0} for k in ("onnxruntime_fp32", "onnxruntime_int8",
                                                                  "openvino_fp32", "openvino_int8")}}],
             "speedup_int8_geomean": {"onnxruntime": 2.0, "openvino": 2.5}}
    summary = {"mean_change": -0.1, "max_abs_change": 0.2}
    accuracy = {"images": 200, "data": "fashion-mnist", "calibration_images": 32, "wall_s": 120.0, "run": acc_run,
                "descendants": [{"key": "ti6.0-5", "torch_fp32_top1": 85.0, "onnxruntime_int8_change": -0.1,
                                 "onnxruntime_int8_agreement": 0.99, "openvino_int8_change": -0.2,
                                 "openvino_int8_agreement": 0.98}],
                "summary": {"onnxruntime": summary, "openvino": summary}}
    verdict = {rt: {"speedup_geomean": 2.0, "speedup_goal": 1.8, "speedup_met": True, "max_abs_top1_change": 0.2,
                    "top1_goal": 0.5, "top1_met": True} for rt in ("onnxruntime", "openvino")}
    return {"benchmark": "benchmarks/int8.py", **acc_run, "quick": False, "speed": speed, "accuracy": accuracy,
            "verdict": verdict, "wall_s": 120.0}


def test_int8_readme_names_each_parts_own_run(tmp_path: Path, render, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _module("int8")
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    speed_run = _int8_run("Xeon X", True, "2026-12-01T01:00:00Z", "aaa111", "python benchmarks/int8.py")
    acc_run = _int8_run("EPYC Y", False, "2026-12-04T02:00:00Z", "bbb222+dirty",
                        "python benchmarks/int8.py --part accuracy")
    bench.write_results(tmp_path / "int8.json", _int8_result(speed_run, acc_run))
    _write_refuses_nan(bench, tmp_path / "int8.json")
    lines = render.int8().splitlines()
    assert lines[0].startswith("Speed part: `python benchmarks/int8.py` (2026-12-01, code version aaa111): Xeon X "
                               "(family/model 6/1, AVX2 yes, with VNNI")
    assert lines[2].startswith("Accuracy part: `python benchmarks/int8.py --part accuracy` (2026-12-04, code version "
                               "bbb222+dirty): EPYC Y (family/model 6/1, AVX2 yes, without VNNI")

    # one run measured both: one line, from the top level
    bench.write_results(tmp_path / "int8.json", _int8_result(acc_run, acc_run))
    assert render.int8().startswith("`python benchmarks/int8.py --part accuracy` (2026-12-04, code version "
                                    "bbb222+dirty): EPYC Y")

    # the committed file's shape: parts' runs with "when" and machine.model_name, no code version: said so
    def old(run: dict) -> dict:
        r = {k: v for k, v in run.items() if k not in ("date", "cpu", "code_version")}
        return r | {"when": run["date"].replace("Z", "+00:00"),
                    "machine": {**run["machine"], "model_name": run["cpu"] + " (lscpu)"}}
    (tmp_path / "int8.json").write_text(json.dumps(_int8_result(old(speed_run), old(acc_run))))
    lines = render.int8().splitlines()
    assert lines[0].startswith("Speed part: `python benchmarks/int8.py` (2026-12-01, code version not recorded): "
                               "Xeon X (lscpu) (family/model")
    assert lines[2].startswith("Accuracy part: `python benchmarks/int8.py --part accuracy` (2026-12-04, code version "
                               "not recorded): EPYC Y (lscpu)")


def test_int8_kept_part_of_an_old_file_records_only_what_it_has(tmp_path: Path) -> None:
    """A file from before parts recorded their run: the kept part gets the top level's run, no invented keys."""
    bench = _module("int8")
    old = _int8_result({}, {})
    for part in ("speed", "accuracy"):
        del old[part]["run"]
    old |= {"when": "2026-11-01T00:00:00+00:00", "command": "python benchmarks/int8.py",
            "machine": {"model_name": "Old CPU"}, "versions": {"torch": "2"}}
    (tmp_path / "int8.json").write_text(json.dumps(old))
    kept = bench.kept_part(tmp_path / "int8.json", "speed", quick=False)
    assert kept["run"] == {"when": "2026-11-01T00:00:00+00:00", "command": "python benchmarks/int8.py",
                           "machine": {"model_name": "Old CPU"}, "versions": {"torch": "2"}}


def test_aux_init_records_images_evaluated_ancestry_and_recipe(tmp_path: Path) -> None:
    """Synthetic data (256 test images), one step: ``--images 1000`` records the 256 evaluated, not the 1,000
    typed; the shipped ancestry is named by its weights' sha256 and top-1, the recipe by its settings."""
    import torch

    from lgp_edge.fileio import sha256_file
    from lgp_edge.models.ancestry import shipped_ancestry_dir

    bench, threads = _module("aux_init"), torch.get_num_threads()
    out = tmp_path / "aux.json"
    argv = ["--steps", "1", "--images", "1000", "--data", "synthetic", "--out", str(out)]
    try:
        assert bench.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert res["images"] == 256 and {r["images"] for r in res["runs"].values()} == {256}
    _check_header(res, "aux_init", " ".join(argv))
    shipped = shipped_ancestry_dir("lgp_vit_fmnist")
    meta = json.loads((shipped / "ancestry.json").read_text())
    assert res["ancestry"] == {"name": "lgp_vit_fmnist", "checkpoint": "lgp_edge/data/ancestry/lgp_vit_fmnist",
                               "sha256": sha256_file(shipped / "ancestry.safetensors"), "top1": meta["top1"],
                               "top1_images": meta["val_images"], "data": meta["data"]}
    s = res["settings"]
    assert (s["lr"], s["warmup_epochs"], s["batch_size"], s["steps"], s["max_steps_per_epoch"], s["epochs"]) == (
        1e-3, 0.1, 256, 1, 1, 1) and s["stitch_init"] == "lstsq" and s["data"] == "synthetic"
    _write_refuses_nan(bench, out)
    with pytest.raises(ValueError, match="different numbers of images"):
        bench.results({"a": {"images": 10}, "b": {"images": 20}}, bench.argparse.Namespace(threads=1, steps=1,
                                                                                            data="x"), {}, {}, 0.0)


def test_quick_replication_readme_line_gives_the_process_wall_time_where_recorded(
        tmp_path: Path, render, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --quick goal is the wall time a user waits for: the results record it from the process's start
    (/proc), and README shows it; an older file without it says it was not recorded (nothing typed in)."""
    bench = load_benchmark("paper_replication", register=True)
    wall = bench.process_wall()
    assert 0 < wall["process_wall_s"] < 24 * 3600  # this test process started before it and not a day ago
    committed = json.loads((ROOT / "benchmarks" / "results" / "paper_replication_quick.json").read_text())
    facts = {"family": "25", "model_number": "17", "affinity_cpus": 2}
    res = {**committed, **wall, "environment": {**committed["environment"], "cpu_facts": facts}}
    (tmp_path / "paper_replication_quick.json").write_text(json.dumps(res))
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    line = render.quick()
    assert f"{wall['process_wall_s']:.0f} s from the process's start" in line and "family/model 25/17" in line
    assert f"{committed['timing_s']['total_this_invocation']:.0f} s inside the script" in line
    old = {k: v for k, v in committed.items() if not k.startswith("process_wall")}
    (tmp_path / "paper_replication_quick.json").write_text(json.dumps(old))
    assert "the process's own wall time not recorded" in render.quick()


def _demo_pool_records(value, where: str = ""):
    """(where, record) for each dict in a results file that names the bundled demo pool as what it measured."""
    if isinstance(value, dict):
        names_demo = value.get("bundled_demo_pool") is True or value.get("pool") in (
            "bundled demo pool", "lgp_edge/data/demo_pool") or value.get("path") == "lgp_edge/data/demo_pool"
        if names_demo and "pool_id" in value:
            yield where, value
        for k, v in value.items():
            yield from _demo_pool_records(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _demo_pool_records(v, f"{where}[{i}]")


def test_results_measured_on_the_demo_pool_name_the_shipped_weights() -> None:
    """A result measured on the bundled demo pool recorded its pool_id only, which names the architecture and stays
    the same when the pool is retrained: a README table could quote a demo pool that no longer ships. Each such
    result records the weights' sha256, and it must be the shipped pool's (rerun the benchmark after a re-ship)."""
    shipped = json.loads((ROOT / "lgp_edge" / "data" / "demo_pool" / "pool.json").read_text())["files"]
    found = {}
    for f in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        for where, rec in _demo_pool_records(json.loads(f.read_text())):
            found[f"{f.name}{where}"] = rec.get("weights_sha256")
    assert {"latency.json", "latency_1thread.json", "int8.json", "switchable.json", "cli_walkthrough.json",
            "memory.json", "ti_front.json"} <= {k.split(".json")[0] + ".json" for k in found}
    assert {k: v for k, v in found.items() if v != shipped["weights.safetensors"]} == {}


def test_a_results_file_of_another_benchmark_or_a_bad_out_is_refused_before_the_run(tmp_path: Path, capsys) -> None:
    """`aux_init.py --out benchmarks/results/latency.json` replaced the latency results after its whole run, and
    `--out FILE/x.json` failed with a traceback after it; a smoke run (other --steps or --images) without --out
    replaced the committed aux_init.json, which the README renders."""
    aux = _module("aux_init")
    latency = tmp_path / "latency.json"
    latency.write_text(json.dumps({"benchmark": "benchmarks/latency.py", "x": 1}))
    before = latency.read_bytes()
    for out, phrase in ((latency, "holds the results of benchmarks/latency.py, not aux_init.py's"),
                        (latency / "x.json", "is a file, not a folder"), (tmp_path, "is a folder")):
        with pytest.raises(SystemExit) as exc:
            aux.main(["--steps", "1", "--images", "8", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and len(err.splitlines()) == 1 and phrase in err, err
    assert latency.read_bytes() == before
    aux.check_results_path(tmp_path / "new" / "aux.json", "benchmarks/aux_init.py")  # a new file: fine
    mine = tmp_path / "aux.json"
    mine.write_text(json.dumps({"benchmark": "benchmarks/aux_init.py"}))
    aux.check_results_path(mine, "aux_init")  # its own results: replaced
    # a smoke run's default results file is not the committed one
    for name in ("aux_init", "position_loss"):
        m = _module(name)
        assert m.results_path(m.__file__, None, False).name == f"{name}.json"
        assert m.results_path(m.__file__, None, True).name == f"{name}_quick.json"


@pytest.mark.parametrize("script, argv, phrase", [
    ("int8", ["--quick", "--images", "-1"], "--images must be >= 1"),  # took 9,999 images (a slice to -1)
    ("int8", ["--calib-images", "0"], "--calib-images must be >= 1"),
    ("latency", ["--threads", "abc"], "--threads needs counts >= 1"),  # a ValueError traceback
    ("latency", ["--small-iters", "0"], "--small-iters must be >= 1"),
])
def test_benchmark_counts_out_of_range_are_refused_before_the_run(script, argv, phrase, capsys) -> None:
    m = _module(script)
    with pytest.raises(SystemExit) as exc:
        (m.parse if script == "int8" else m.main)(argv)
    assert exc.value.code == 2 and phrase in capsys.readouterr().err.splitlines()[-1]


def test_a_latency_smoke_run_does_not_replace_the_committed_results(tmp_path: Path, monkeypatch) -> None:
    """`latency.py --skip-big --select-runs 0 ...` (its help's quick run) replaced latency.json, which the README
    renders (and which then failed to render)."""
    m = _module("latency")
    seen = []
    monkeypatch.setattr(m, "run_one", lambda args, n, out, argv: seen.append(out) or {})
    monkeypatch.setattr(m, "check_results_path", lambda out, script: None)
    for argv, name in ((["--skip-big"], "latency_quick.json"), (["--small-iters", "2"], "latency_quick.json"),
                       ([], "latency.json")):
        seen.clear()
        try:
            m.main(["--threads", "1", *argv])
        except Exception:  # what main does with the (stubbed) run's results is not this test's
            pass
        assert [p.name for p in seen] == [name], argv


@pytest.mark.parametrize("argv, phrase", [
    (["ti_front.py", "--pool", "/nonexistent-pool"], "is not a pool directory"),
    (["aux_init.py", "--data", "nope", "--steps", "1", "--images", "8"], "unknown --data 'nope'"),
])
def test_input_lgp_edge_refuses_is_one_line_from_a_benchmark_script(argv, phrase, tmp_path: Path) -> None:
    """`--pool /nonexist`, `--data nope` and the like ended benchmark scripts in tracebacks."""
    import subprocess

    script = Path(__file__).resolve().parent.parent / "benchmarks" / argv[0]
    done = subprocess.run([sys.executable, str(script), *argv[1:], "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert done.returncode == 2 and len(lines) == 1 and phrase in lines[0], done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_a_benchmark_script_is_one_line(capsys) -> None:
    m = _module("make_demo_pool")

    def stopped() -> int:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        m.run_main(stopped, "benchmarks/paper_replication.py")
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 130 and err.startswith("paper_replication.py: interrupted") and "\n" not in err


@pytest.mark.parametrize("script, argv, phrase", [
    ("memory", ["--batches", "1,x"], "--batches needs a comma list"),  # a ValueError traceback
    ("memory", ["--repeats", "0"], "--repeats must be >= 1"),  # a traceback after 16 s of work
    ("switchable", ["--rounds", "0"], "--rounds must be >= 1"),
    ("cli_walkthrough", ["--iters", "0"], "--iters must be >= 1"),  # recorded 0, profile ran its default 50
    ("cli_walkthrough", ["--tight-budget-ms", "-1"], "--tight-budget-ms must be > 0"),
    ("make_demo_pool", ["src", "--provenance-json", "{not json"], "--provenance-json is neither"),
    ("make_demo_pool", ["src", "--provenance-json", "[1]"], "--provenance-json must be a JSON object"),
])
def test_a_benchmark_scripts_own_bad_input_is_one_line(script, argv, phrase, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _module(script).main(argv)
    assert exc.value.code == 2 and phrase in capsys.readouterr().err.splitlines()[-1]


def test_switchable_times_single_exports_with_the_graph_cache_off(tiny_pool: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """switchable.py records the wall time of the single shipped exports beside the switchable build's: with a
    graph an earlier run left in the user's exported-graph cache it timed a read, not an export."""
    from lgp_edge.pool.pool import load_pool

    bench = _module("switchable")
    monkeypatch.setenv("LGP_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LGP_EDGE_CACHE_MB", "64")
    pool, _ = load_pool(tiny_pool)
    shipped: dict = {}
    seconds = bench.export_shipped(pool, ["ti6.0-5", "b6.0-5"], (1, 1, 16, 16), tmp_path, shipped)
    assert seconds > 0 and sorted(shipped) == ["b6.0-5", "ti6.0-5"] and all(p.is_file() for p in shipped.values())
    assert not (tmp_path / "cache").exists()  # exported, nothing read from or left in the cache
    assert os.environ["LGP_EDGE_CACHE_MB"] == "64"  # the setting given back
