"""The on-board benchmark times the engine that is deployed: bench.sh pins the same layers to fp32 as
build_engine.sh, and build_engine.sh --time writes the store's import format for `lgp-edge profile --import`.
trtexec is not installed here: stand-in trtexec scripts record their arguments and write what trtexec writes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lgp_edge.cli import main
from lgp_edge.export.tensorrt import build_script
from lgp_edge.pool.pool import read_manifest
from lgp_edge.profiling.measure import NOISY_RULE
from lgp_edge.profiling.store import MeasurementStore, read_records_file
from lgp_edge.targets import bench_script, load_target

LAYERS = ["/blocks.0/norm1/ReduceMean", "/blocks.0/attn/Softmax"]
TRTEXEC = r'''#!/bin/sh
if [ "$1" = --help ]; then echo "  --layerPrecisions=spec  --percentile=P1,P2"; exit 0; fi
printf "%s\n" "$@" >> "{log}"
for a in "$@"; do
  case "$a" in
    --saveEngine=*) echo engine > "${{a#--saveEngine=}}" ;;
    --exportTimes=*) printf '[{{"latencyMs": 1.0}}, {{"latencyMs": 1.1}}, {{"latencyMs": 1.2}}, '\
'{{"latencyMs": 1.3}}, {{"latencyMs": 2.0}}]' > "${{a#--exportTimes=}}" ;;
  esac
done
echo "[I] TensorRT version: 8.6.2"
'''


def _fake_trtexec(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "trtexec.args"
    fake = tmp_path / "trtexec"
    fake.write_text(TRTEXEC.format(log=log))
    fake.chmod(0o755)
    return fake, log


def _board_dir(tmp_path: Path) -> Path:
    d = tmp_path / "board"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"onnx stand-in")
    (d / "fp32_layers.txt").write_text("# kept in fp32\n" + "\n".join(LAYERS) + "\n")
    return d


def test_bench_script_times_the_pinned_engine_like_build_engine(tmp_path: Path) -> None:
    fake, log = _fake_trtexec(tmp_path)
    d = _board_dir(tmp_path)
    bench = bench_script(load_target("jetson-nano"))
    res = subprocess.run(["sh", str(bench), str(d / "model.onnx"), "fp16", "50", "200", str(fake)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    args = log.read_text().splitlines()
    spec = ",".join(f"{n}:fp32" for n in LAYERS)
    assert {"--fp16", "--precisionConstraints=obey", f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}",
            "--iterations=50"} <= set(args)
    assert not (d / "model.plan").exists()  # never overwrites the deployed engine
    log.unlink()
    script = build_script(onnx_name="model.onnx", precision="fp16", input_name="input", input_shape=(1, 1, 28, 28),
                          dynamic_batch=False, key="b6.0-5", target=load_target("jetson-nano"), pool_id="p1")
    (d / "build_engine.sh").write_text(script)
    res = subprocess.run(["sh", "build_engine.sh"], cwd=d, env={**os.environ, "TRTEXEC": str(fake)},
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    built = log.read_text().splitlines()  # the deployed engine: the same precision flags
    assert {a for a in built if a.startswith(("--fp16", "--precision", "--layer"))} == \
        {a for a in args if a.startswith(("--fp16", "--precision", "--layer"))}


def test_build_engine_time_writes_the_import_format(tiny_pool: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake, log = _fake_trtexec(tmp_path)
    d = _board_dir(tmp_path)
    m = read_manifest(tiny_pool)
    key = m.descendants[-1].key
    script = build_script(onnx_name="model.onnx", precision="fp16", input_name="input", input_shape=(1, 1, 16, 16),
                          dynamic_batch=False, key=key, target=load_target("jetson-nano"), pool_id=m.spec.pool_id)
    (d / "build_engine.sh").write_text(script)
    res = subprocess.run(["sh", "build_engine.sh", "--time", "timing.json"], cwd=d,
                         env={**os.environ, "TRTEXEC": str(fake)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert any(a == "--loadEngine=model.plan" for a in log.read_text().splitlines())
    (rec,) = read_records_file(d / "timing.json")
    assert rec.descendant_key == key and rec.pool_id == m.spec.pool_id and rec.target == "jetson-nano"
    assert rec.runtime == "tensorrt" and rec.precision == "fp16" and rec.source == "measured" and rec.n == 5
    assert rec.median_ms == pytest.approx(1.2) and rec.p90_ms == pytest.approx(1.72) and rec.noisy
    assert rec.tool_versions["tensorrt"] == "8.6.2"
    store = tmp_path / "s.sqlite"
    assert main(["profile", "--import", str(d / "timing.json"), "--store", str(store)]) == 0
    with MeasurementStore(store) as s:
        assert s.records(target="jetson-nano", source="measured")[0].median_ms == pytest.approx(1.2)
    capsys.readouterr()
    assert main(["select", "--target", "jetson-nano", "--pool", str(tiny_pool), "--store", str(store), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert key in out["noisy"]  # its one run was noisy (cv > 10%): flagged, and predicted instead
    # the statistic named is the one that decided (not "CV", which reads as std/mean: 1.58 was "not noisy")
    assert main(["select", "--target", "jetson-nano", "--pool", str(tiny_pool), "--store", str(store)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("noisy:"))
    assert NOISY_RULE in line and "robust CV (1.4826 x MAD / median)" in line and "p90" in line, line


def _timing_board(pool: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A fake trtexec and a board folder holding the fp16 build_engine.sh of the pool's last descendant."""
    fake, _ = _fake_trtexec(tmp_path)
    d = _board_dir(tmp_path)
    m = read_manifest(pool)
    (d / "build_engine.sh").write_text(build_script(
        onnx_name="model.onnx", precision="fp16", input_name="input", input_shape=(1, 1, 16, 16), dynamic_batch=False,
        key=m.descendants[-1].key, target=load_target("jetson-nano"), pool_id=m.spec.pool_id))
    return fake, d


def test_build_engine_time_file_is_relative_to_where_it_is_run(tiny_pool: Path, tmp_path: Path) -> None:
    """`sh OUT/build_engine.sh --time results/t.json` from another folder wrote into the export folder (the script
    changes into it first), or ended in a FileNotFoundError traceback after timing when that folder had no
    results/; the file goes where the caller's path says."""
    fake, d = _timing_board(tiny_pool, tmp_path)
    caller = tmp_path / "caller"
    (caller / "results").mkdir(parents=True)
    res = subprocess.run(["sh", str(d / "build_engine.sh"), "--time", "results/t.json"], cwd=caller,
                         env={**os.environ, "TRTEXEC": str(fake)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (rec,) = read_records_file(caller / "results" / "t.json")
    assert rec.descendant_key == read_manifest(tiny_pool).descendants[-1].key and not (d / "results").exists()


def _fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in interpreter for build_engine.py: records its arguments, writes the engine it was asked for."""
    log = tmp_path / "python.args"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{log}"\nwhile [ $# -gt 0 ]; do\n'
                    '  if [ "$1" = --engine ]; then echo engine > "$2"; fi\n  shift\ndone\n')
    fake.chmod(0o755)
    return fake, log


@pytest.mark.parametrize("pins", [True, False], ids=["trtexec-pins-layers", "build_engine.py"])
def test_bench_script_builds_a_dynamic_batch_engine_with_its_profile(pins: bool, tmp_path: Path) -> None:
    """A dynamic-batch export's bench.sh must build the engine with the optimization profile build_engine.sh
    uses: without shapes, build_engine.py (TensorRT 8.2's path) cannot build a dynamic input at all."""
    fake, log = _fake_trtexec(tmp_path)
    if not pins:  # a trtexec before 8.4: no --layerPrecisions, so build_engine.py builds the engine
        fake.write_text(fake.read_text().replace("--layerPrecisions=spec  ", ""))
    python, py_log = _fake_python(tmp_path)
    d = _board_dir(tmp_path)
    (d / "build_engine.py").write_text("# stand-in: the fake interpreter never reads it\n")
    shapes = "input:1x1x28x28:1x1x28x28:8x1x28x28"
    env = {**os.environ, "SHAPES": shapes, "PYTHON": str(python)}
    bench = bench_script(load_target("jetson-nano"))
    res = subprocess.run(["sh", str(bench), str(d / "model.onnx"), "fp16", "50", "200", str(fake)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    args = log.read_text().splitlines()
    if pins:
        assert {"--minShapes=input:1x1x28x28", "--optShapes=input:1x1x28x28",
                "--maxShapes=input:8x1x28x28"} <= set(args)
    else:
        built = py_log.read_text().splitlines()
        assert built[built.index("--shapes") + 1] == shapes
        assert "--shapes=input:1x1x28x28" in args and "--loadEngine=" + str(d / "model.bench.plan") in args
    for bad in ("input:1x1x28x28", "input:1x1:2x1:$(reboot)x1", "a:b:c:d:e"):
        res = subprocess.run(["sh", str(bench), str(d / "model.onnx"), "fp16", "50", "200", str(fake)],
                             capture_output=True, text=True, env={**env, "SHAPES": bad})
        assert res.returncode == 2 and "SHAPES must be NAME:MIN:OPT:MAX" in res.stderr, bad


def test_build_engine_time_runs_a_dynamic_engine_at_its_opt_shape(tmp_path: Path) -> None:
    fake, log = _fake_trtexec(tmp_path)
    d = _board_dir(tmp_path)
    script = build_script(onnx_name="model.onnx", precision="fp16", input_name="input", input_shape=(2, 1, 28, 28),
                          dynamic_batch=True, key="b6.0-5", target=load_target("jetson-nano"), pool_id="p1")
    (d / "build_engine.sh").write_text(script)
    res = subprocess.run(["sh", "build_engine.sh", "--time", "timing.json"], cwd=d,
                         env={**os.environ, "TRTEXEC": str(fake)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    args = log.read_text().splitlines()
    assert "--maxShapes=input:8x1x28x28" in args and "--minShapes=input:1x1x28x28" in args
    assert "--loadEngine=model.plan" in args and "--shapes=input:2x1x28x28" in args


def test_build_engine_refuses_a_missing_pin_list(tmp_path: Path) -> None:
    """Without fp32_layers.txt the trtexec path built an fp16 engine with an empty --layerPrecisions (nothing
    pinned, no word said)."""
    fake, log = _fake_trtexec(tmp_path)
    d = _board_dir(tmp_path)
    (d / "fp32_layers.txt").unlink()
    script = build_script(onnx_name="model.onnx", precision="fp16", input_name="input", input_shape=(1, 1, 28, 28),
                          dynamic_batch=False, key="b6.0-5", target=load_target("jetson-orin-nano"), pool_id="p1")
    (d / "build_engine.sh").write_text(script)
    res = subprocess.run(["sh", "build_engine.sh"], cwd=d, env={**os.environ, "TRTEXEC": str(fake)},
                         capture_output=True, text=True)
    assert res.returncode == 3 and "fp32_layers.txt" in res.stderr and not log.exists(), res.stderr


def test_bench_script_usage_and_the_8_2_workspace(tmp_path: Path) -> None:
    """bench.sh without its arguments stopped on the shell's 'parameter not set'; an fp32 engine timed with
    TensorRT 8.2's trtexec got its 16 MiB default workspace where build_engine.py (8.2's builder) gives 1 GiB."""
    bench = bench_script(load_target("jetson-nano"))
    res = subprocess.run(["sh", str(bench)], capture_output=True, text=True)
    assert res.returncode == 2 and "usage: bench.sh MODEL.onnx PRECISION ITERATIONS WARMUP_MS" in res.stderr
    fake, log = _fake_trtexec(tmp_path)
    fake.write_text(fake.read_text().replace("--layerPrecisions=spec  --percentile=P1,P2",
                                             "--workspace=N  --percentile=P"))
    d = _board_dir(tmp_path)
    res = subprocess.run(["sh", str(bench), str(d / "model.onnx"), "fp32", "50", "200", str(fake)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "--workspace=1024" in log.read_text().splitlines()


def test_build_engine_time_leaves_out_the_warm_up_runs_older_trtexec_exports(tmp_path: Path) -> None:
    """trtexec before TensorRT 8.6 (JetPack 4.6's 8.2 on the Jetson Nano) writes every run of its trace to
    --exportTimes, the warm-up runs of --warmUp=500 too (its printed summary leaves out those whose compute starts
    before 500 ms): at ~2 ms per run about 250 warm-up runs, at ramping clocks, were in the stored median, p90,
    p99 and n."""
    fake, _ = _fake_trtexec(tmp_path)
    warm = ", ".join(f'{{{{"startComputeMs": {i * 2.0}, "latencyMs": 3.0}}}}' for i in range(250))
    timed = ", ".join(f'{{{{"startComputeMs": {500.0 + i * 1.1}, "latencyMs": {1.0 + i / 1000}}}}}'
                      for i in range(200))
    fake.write_text(TRTEXEC.replace('''printf '[{{"latencyMs": 1.0}}, {{"latencyMs": 1.1}}, {{"latencyMs": 1.2}}, '\\
'{{"latencyMs": 1.3}}, {{"latencyMs": 2.0}}]\'''', f"printf '[{warm}, {timed}]'").format(log=tmp_path / "log"))
    d = _board_dir(tmp_path)
    (d / "build_engine.sh").write_text(build_script(
        onnx_name="model.onnx", precision="fp16", input_name="input", input_shape=(1, 1, 28, 28),
        dynamic_batch=False, key="b6.0-5", target=load_target("jetson-nano"), pool_id="p1"))
    res = subprocess.run(["sh", "build_engine.sh", "--time", "timing.json"], cwd=d,
                         env={**os.environ, "TRTEXEC": str(fake)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (rec,) = read_records_file(d / "timing.json")
    assert rec.n == 200 and rec.warmup == 250
    assert rec.median_ms == pytest.approx(1.0995) and rec.p99_ms < 1.2


def test_build_engine_takes_a_python_path_with_a_space(tmp_path: Path) -> None:
    """PYTHON="/opt/my env/bin/python3" ended build_engine.sh in "/opt/my: not found" (exit 127) where bench.sh
    takes it: the interpreter was not quoted."""
    fake, _ = _fake_trtexec(tmp_path)
    fake.write_text(fake.read_text().replace("--layerPrecisions=spec  ", ""))  # 8.2: build_engine.py pins
    python, py_log = _fake_python(tmp_path)
    spaced = tmp_path / "my env" / "python3"
    spaced.parent.mkdir()
    spaced.write_bytes(python.read_bytes())
    spaced.chmod(0o755)
    d = _board_dir(tmp_path)
    (d / "build_engine.sh").write_text(build_script(
        onnx_name="model.onnx", precision="fp16", input_name="input", input_shape=(1, 1, 28, 28),
        dynamic_batch=False, key="b6.0-5", target=load_target("jetson-nano"), pool_id="p1"))
    res = subprocess.run(["sh", "build_engine.sh"], cwd=d, env={**os.environ, "TRTEXEC": str(fake),
                                                                 "PYTHON": str(spaced)},
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "--engine" in py_log.read_text().splitlines()


def test_an_fp32_engine_is_built_with_the_workspace_bench_sh_times_it_with(tmp_path: Path) -> None:
    """bench.sh gave TensorRT 8.2's trtexec a 1 GiB workspace (build_engine.py's) for an fp32 engine, while
    build_engine.sh deployed it with trtexec's 16 MiB default: the timed engine was not the deployed one."""
    fake, log = _fake_trtexec(tmp_path)
    fake.write_text(fake.read_text().replace("--layerPrecisions=spec  --percentile=P1,P2",
                                             "--workspace=N  --percentile=P"))
    d = _board_dir(tmp_path)
    (d / "build_engine.sh").write_text(build_script(
        onnx_name="model.onnx", precision="fp32", input_name="input", input_shape=(1, 1, 28, 28),
        dynamic_batch=False, key="b6.0-5", target=load_target("jetson-nano"), pool_id="p1"))
    res = subprocess.run(["sh", "build_engine.sh"], cwd=d, env={**os.environ, "TRTEXEC": str(fake)},
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "--workspace=1024" in log.read_text().splitlines()
    log.unlink()
    fake.write_text(fake.read_text().replace("--workspace=N", "--memPoolSize=spec"))  # 8.4+: the device's memory
    res = subprocess.run(["sh", "build_engine.sh"], cwd=d, env={**os.environ, "TRTEXEC": str(fake)},
                         capture_output=True, text=True)
    assert res.returncode == 0 and not any(a.startswith("--workspace") for a in log.read_text().splitlines())


def test_build_engine_time_prints_an_import_command_that_pastes_as_one_path(tiny_pool: Path, tmp_path: Path) -> None:
    """The follow-up line "load it with: lgp-edge profile --import PATH" printed the path bare: one with a space
    or `$(...)` split (or ran) when pasted into a shell."""
    import shlex

    fake, d = _timing_board(tiny_pool, tmp_path)
    name = "t 'x\" $(y).json"
    res = subprocess.run(["sh", "build_engine.sh", "--time", name], cwd=d, env={**os.environ, "TRTEXEC": str(fake)},
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if "load it with:" in x)
    argv = shlex.split(line.split("load it with: ", 1)[1])
    assert argv[:3] == ["lgp-edge", "profile", "--import"] and len(argv) == 4 and argv[3].endswith(name), argv
