"""benchmarks/int8.py --quick on the tiny pool: one run of both parts (speed and accuracy), the JSON it writes and
the README table rendered from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import load_benchmark


def _module(name: str):
    return load_benchmark(name, f"bench_{name}")


def test_int8_benchmark_quick_run_and_readme_table(tiny_pool: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bench, threads = _module("int8"), torch.get_num_threads()
    out = tmp_path / "results" / "int8.json"
    argv = ["--quick", "--pool", str(tiny_pool), "--ancestry", "lgp_test_tiny", "--data", "fashion-mnist", "--images",
            "64", "--calib-images", "32", "--accuracy-models", "1", "--out", str(out)]
    try:
        assert bench.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert res["quick"] and res["cpu"] and res["machine"]["threads"] == 1 and res["code_version"] and res["date"]
    assert res["command"] == "python benchmarks/int8.py " + " ".join(argv)
    for part in ("speed", "accuracy"):  # both parts measured by this run, which each records
        assert {k: res[part]["run"][k] for k in ("code_version", "date", "command", "cpu")} == {
            k: res[k] for k in ("code_version", "date", "command", "cpu")}
    (row,) = res["speed"]["descendants"]
    assert row["key"] == "ti6.0-5" and set(row["ms"]) == {"onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32",
                                                         "openvino_int8"}
    assert all(v["median"] > 0 and v["n"] == 4 for v in row["ms"].values())
    assert row["int8_bytes"] > 0 and row["fp32_bytes"] > 0  # (at this size Q/DQ scales outweigh the int8 savings)
    (acc,) = res["accuracy"]["descendants"]
    assert res["accuracy"]["images"] == 64 and res["accuracy"]["data"] == "fashion-mnist"
    assert 0.0 <= acc["onnxruntime_int8_agreement"] <= 1.0 and "openvino_int8_change" in acc
    assert set(res["verdict"]) == {"onnxruntime", "openvino"}
    render = _module("render_readme")
    render.RESULTS = out.parent
    table = render.int8()
    assert "| `ti6.0-5` |" in table and "speed-up (geomean)" in table and res["command"] in table
    assert table.startswith(f"`{res['command']}` ({res['date'][:10]}, code version {res['code_version']}): "
                            f"{res['cpu']} (family/model")

    # --part accuracy: a new accuracy run, the speed part kept as measured, both runs named in the README
    first = res
    try:
        assert bench.main([*argv, "--part", "accuracy"]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert {k: v for k, v in res["speed"].items() if k != "run"} == {k: v for k, v in first["speed"].items()
                                                                      if k != "run"}
    assert res["speed"]["run"]["command"] == first["command"] and "--part accuracy" in res["accuracy"]["run"]["command"]
    assert res["speed"]["run"]["date"] == first["date"] and res["accuracy"]["run"]["date"] == res["date"]
    table = render.int8()
    assert table.startswith("Speed part: `") and "\nAccuracy part: `" in table and "--part accuracy" in table

    # a part can only be kept from a full run of both: one line, exit 2, nothing written
    before = out.read_bytes()
    for bad, needle in (([*argv[:-1], str(tmp_path / "none.json")], "not a readable results file"),
                        ([a for a in argv if a != "--quick"], "--quick smoke run")):
        with pytest.raises(SystemExit) as e:
            bench.main([*bad, "--part", "accuracy"])
        assert e.value.code == 2 and needle in capsys.readouterr().err
    assert out.read_bytes() == before and not (tmp_path / "none.json").exists()


def test_cpu_facts_where_the_os_has_no_affinity_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS has no os.sched_getaffinity and no lscpu: the machine facts come from the library's, under the keys
    the committed int8.json and the README renderer read."""
    import os

    bench = _module("int8")
    here = bench.cpu_facts()
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    facts = bench.cpu_facts()
    assert set(facts) == {"cpu_family_model", "affinity_cpus", "avx2", "avx512_vnni", "avx_vnni", "amx_int8"}
    assert facts["affinity_cpus"] == (os.cpu_count() or 1)
    assert {k: v for k, v in facts.items() if k != "affinity_cpus"} == {k: v for k, v in here.items()
                                                                       if k != "affinity_cpus"}
    assert all(isinstance(facts[k], bool) for k in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8"))


def test_cpu_facts_match_lscpu_on_linux() -> None:
    """The same values lscpu gave, so results measured before and after read alike."""
    import os
    import shutil
    import subprocess

    if not shutil.which("lscpu") or not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs lscpu and CPU affinity (Linux)")
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C"})
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in text.stdout.splitlines() if ":" in ln)}
    if "CPU family" not in fields or "Flags" not in fields:
        pytest.skip("lscpu shows no x86 family and flags here")
    flags = set(fields["Flags"].split())
    facts = _module("int8").cpu_facts()
    assert facts == {"cpu_family_model": f"{fields['CPU family']}/{fields['Model']}",
                     "affinity_cpus": len(os.sched_getaffinity(0)),
                     **{k: k in flags for k in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")}}
