"""lgp-edge export end to end on the tiny pool: every built-in target's formats, validated for real.

Each export runs once per module (fixtures) and the tests inspect what it wrote, re-running the artifacts
in real ONNX Runtime / OpenVINO sessions on fresh inputs against the torch descendant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import fresh_inputs, manifest, ort_logits, torch_logits, with_options

from lgp_edge.cli import main
from lgp_edge.export.base import ExportContext
from lgp_edge.fileio import sha256_file
from lgp_edge.pool.pool import load_pool

VAL = "48"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> object:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LGP_EDGE_STORE", str(tmp_path_factory.mktemp("store") / "store.sqlite"))
        yield mp


def export(pool: Path, out: Path, *args: str) -> int:
    return main(with_options(["export", "--pool", str(pool), "--out", str(out), "--quiet", "--val-images", VAL], *args))


def _export_once(tmp_path_factory: pytest.TempPathFactory, pool: Path, name: str, *args: str) -> Path:
    out = tmp_path_factory.mktemp(name) / "out"
    assert export(pool, out, *args) == 0
    return out


@pytest.fixture(scope="module")
def cpu_out(env: object, tiny_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_once(tmp_path_factory, tiny_pool, "cpu", "--target", "cpu")


@pytest.fixture(scope="module")
def nano_out(env: object, tiny_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_once(tmp_path_factory, tiny_pool, "nano", "--target", "jetson-nano")


@pytest.fixture(scope="module")
def android_out(env: object, tiny_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_once(tmp_path_factory, tiny_pool, "android", "--target", "android-arm64")


@pytest.fixture(scope="module")
def pi_out(env: object, tiny_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_once(tmp_path_factory, tiny_pool, "pi", "--target", "raspberry-pi-5")


@pytest.fixture(scope="module")
def iphone_out(env: object, tiny_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_once(tmp_path_factory, tiny_pool, "iphone", "--target", "iphone")


def _check_common(out: Path, tiny_pool: Path, profile: str, images: int = int(VAL)) -> dict:
    mf = manifest(out)
    assert mf["status"] == "passed" and mf["validation"]["passed"] is True
    assert mf["profile"]["name"] == profile and mf["pool"]["synthetic_data"] is True
    assert mf["validation"]["synthetic"] is True and mf["validation"]["images"] == images
    kinds = {a["path"]: a["validation"]["kind"] for a in mf["artifacts"]}
    assert mf["validation"]["numeric"] == [p for p, k in kinds.items() if k == "numeric"]
    assert mf["validation"]["structural"] == [p for p, k in kinds.items() if k == "structural"]
    assert mf["preprocess"]["tensor_input"] == "(pixel / 255 - mean[c]) / std[c]"
    d = mf["descendant"]
    assert d["latency_source"] == "predicted" and d["expected_latency_ms"] > 0 and d["top1"] is not None
    assert mf["selection"]["chosen"]["key"] == d["key"]
    for a in mf["artifacts"]:
        assert a["validation"]["passed"] is True
        p = out / a["path"]
        if p.is_file():
            assert sha256_file(p) == a["sha256"] and a["bytes"] == p.stat().st_size
        for f in a["files"]:
            assert (out / f["path"]).exists()
    for f in mf["files"]:
        if f["sha256"]:
            assert sha256_file(out / f["path"]) == f["sha256"]
    assert (out / "EMBEDDING.md").is_file() and oct(out.stat().st_mode & 0o777) != "0o700"
    assert not list(out.parent.glob(".out.tmp-*"))  # the temporary directory is gone
    return mf


def test_cpu_export_onnx_and_openvino(cpu_out: Path, tiny_pool: Path) -> None:
    import openvino as ov

    mf = _check_common(cpu_out, tiny_pool, "cpu")
    arts = {a["format"]: a for a in mf["artifacts"]}
    assert set(arts) == {"onnx", "openvino"}
    key = mf["descendant"]["key"]
    for a in arts.values():
        v = a["validation"]
        assert v["kind"] == "numeric" and v["max_abs_diff"] <= v["atol"] <= 1e-3 and v["top1_agreement"] >= 0.99
    model = onnx.load(str(cpu_out / "model.onnx"))
    assert next(o.version for o in model.opset_import if o.domain == "") == 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["descendant_key"] == key and meta["pool_id"] == mf["pool"]["pool_id"]
    assert json.loads(meta["labels"]) == mf["preprocess"]["labels"] and json.loads(meta["mean"]) == [0.286]
    assert meta["layout"] == "NCHW" and meta["img_size"] == "16"
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 16, 16]  # static batch 1 by default
    # independent re-check on fresh inputs: ORT and OpenVINO (f32 hint) against torch
    x = fresh_inputs(6, 1)
    ref = torch_logits(tiny_pool, key, x)
    assert np.abs(ort_logits(cpu_out / "model.onnx", x) - ref).max() < 1e-4
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(cpu_out / "model.xml")), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.concatenate([compiled(x[i:i + 1])[compiled.outputs[0]] for i in range(len(x))])
    assert np.abs(got - ref).max() < 1e-4
    assert arts["openvino"]["precision"] == "fp32" and arts["openvino"]["files"][0]["path"] == "model.bin"
    text = (cpu_out / "EMBEDDING.md").read_text()
    assert key in text and "[0.286]" in text and "[0.353]" in text and "INFERENCE_PRECISION_HINT" in text
    # a desktop export: no phone sections, no phone samples
    assert "## Android" not in text and "Kotlin" not in text and "## iOS" not in text
    assert not (cpu_out / "samples").exists()
    # a 1-channel IR: no Model API keys (Model API feeds 3-channel images), and the doc says why
    assert "model_type" not in text and "Model API feeds 3-channel" in text


def test_jetson_nano_export_is_tensorrt_8_2_ready(nano_out: Path, tiny_pool: Path) -> None:
    from lgp_edge.export.trt_ops import unsupported_ops
    from lgp_edge.targets import bench_script, load_target

    mf = _check_common(nano_out, tiny_pool, "jetson-nano")
    (art,) = mf["artifacts"]
    assert art["format"] == "tensorrt" and art["precision"] == "fp16" and art["path"] == "model.onnx"
    assert "engine not built here" in art["note"]
    model = onnx.load(str(nano_out / "model.onnx"))
    # "fp16" is the engine's arithmetic: the file itself is fp32, and its note says so
    assert {t.data_type for t in model.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    assert art["note"].startswith("fp32 ONNX, from which build_engine.sh builds the fp16 engine")
    # the engine the app deploys has no metadata to read the preprocessing from: where to read it instead
    assert "(`model.plan`) carries no metadata" in (nano_out / "EMBEDDING.md").read_text()
    assert next(o.version for o in model.opset_import if o.domain == "") == 13
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" not in ops and "ReduceMean" in ops  # decomposed
    assert unsupported_ops(ops, (8, 2)) == []
    layers = [s for s in (nano_out / "fp32_layers.txt").read_text().splitlines() if s and not s.startswith("#")]
    must = {n.name for n in model.graph.node if n.op_type in ("ReduceMean", "Softmax", "Sqrt", "Pow")}
    assert must <= set(layers)
    blocks = sum(len(s) for s in load_pool(tiny_pool)[0].descendant(mf["descendant"]["key"]).stages)
    assert sum(1 for n in model.graph.node if n.op_type == "Softmax") == blocks
    # ORT reproduces torch on fresh inputs
    x = fresh_inputs(6, 1)
    assert np.abs(ort_logits(nano_out / "model.onnx", x) - torch_logits(tiny_pool, mf["descendant"]["key"], x)).max() \
        < 1e-4
    assert (nano_out / "bench.sh").read_bytes() == bench_script(load_target("jetson-nano")).read_bytes()
    assert os.access(nano_out / "build_engine.sh", os.X_OK)
    subprocess.run(["sh", "-n", str(nano_out / "build_engine.sh")], check=True)
    subprocess.run([sys.executable, "-m", "py_compile", str(nano_out / "build_engine.py")], check=True)


def _fake(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_an_fp32_engine_is_built_by_any_trtexec(tmp_path: Path) -> None:
    """An fp32 engine pins no layer, but build_engine.sh sent TensorRT 8.2's trtexec (no --layerPrecisions) to
    build_engine.py, which needs the Python bindings a board may lack."""
    from lgp_edge.export.tensorrt import build_script
    from lgp_edge.targets import load_target

    script = build_script(onnx_name="model.onnx", precision="fp32", input_name="input", input_shape=(1, 1, 16, 16),
                          dynamic_batch=False, key="ti6.0-5", target=load_target("jetson-nano"))
    (tmp_path / "build_engine.sh").write_text(script)
    log = tmp_path / "args.txt"
    trtexec = _fake(tmp_path / "trtexec", f'if [ "$1" = --help ]; then echo "--fp16 --int8"; exit 0; fi\n'
                                          f'printf "%s\\n" "$@" > {log}\n')
    python = _fake(tmp_path / "python3", f'echo python >> {log}\n')
    res = subprocess.run(["sh", "build_engine.sh"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "TRTEXEC": str(trtexec), "PYTHON": str(python)})
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines() == ["--onnx=model.onnx", "--saveEngine=model.plan"]


@pytest.mark.parametrize("args", [["--help"], ["--tme", "t.json"], ["t.json"], ["--time", "t.json", "x"]])
def test_build_engine_script_refuses_what_it_does_not_take(tmp_path: Path, args: list[str]) -> None:
    """Any argument but --time [FILE] fell through to a build: '--help' rebuilt and replaced model.plan, a
    misspelt '--tme t.json' built and timed nothing, both exiting 0."""
    from lgp_edge.export.tensorrt import build_script
    from lgp_edge.targets import load_target

    script = build_script(onnx_name="model.onnx", precision="fp32", input_name="input", input_shape=(1, 1, 16, 16),
                          dynamic_batch=False, key="ti6.0-5", target=load_target("jetson-nano"))
    (tmp_path / "build_engine.sh").write_text(script, encoding="utf-8")
    log = tmp_path / "args.txt"
    trtexec = _fake(tmp_path / "trtexec", f'printf "%s\\n" "$@" >> {log}\n')
    res = subprocess.run(["sh", "build_engine.sh", *args], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "TRTEXEC": str(trtexec)})
    assert res.returncode == 2 and not log.exists(), (res.returncode, res.stdout, res.stderr)
    assert "usage: sh build_engine.sh" in res.stderr


@pytest.mark.parametrize("new_trtexec", [True, False], ids=["trtexec>=8.4", "trtexec-8.2"])
def test_build_engine_script_runs_the_right_builder(nano_out: Path, tmp_path: Path, new_trtexec: bool) -> None:
    work = tmp_path / "board"
    shutil.copytree(nano_out, work)
    log = tmp_path / "args.txt"
    help_text = "--layerPrecisions=spec" if new_trtexec else "--fp16 --int8"
    trtexec = _fake(tmp_path / "trtexec", f'if [ "$1" = --help ]; then echo "{help_text}"; exit 0; fi\n'
                                          f'printf "%s\\n" "$@" > {log}\n')
    python = _fake(tmp_path / "python3", f'printf "%s\\n" "$@" > {log}\n')
    env = {**os.environ, "TRTEXEC": str(trtexec), "PYTHON": str(python)}
    res = subprocess.run(["sh", "build_engine.sh"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    args = log.read_text().splitlines()
    layers = [s for s in (work / "fp32_layers.txt").read_text().splitlines() if s and not s.startswith("#")]
    if new_trtexec:
        assert {"--onnx=model.onnx", "--saveEngine=model.plan", "--fp16", "--precisionConstraints=obey"} <= set(args)
        spec = next(a for a in args if a.startswith("--layerPrecisions=")).split("=", 1)[1].split(",")
        assert spec == [f"{n}:fp32" for n in layers]
        assert not any(a.startswith("--minShapes") for a in args)  # static shapes
    else:
        assert args == ["build_engine.py", "--onnx", "model.onnx", "--engine", "model.plan", "--precision", "fp16",
                        "--fp32-layers", "fp32_layers.txt"]
        sys.path.insert(0, str(work))
        try:
            import build_engine  # the copied Python builder reads the same list
        finally:
            sys.path.remove(str(work))
        assert build_engine.read_layer_names(str(work / "fp32_layers.txt")) == layers
        assert build_engine._matches(layers[0] + "_1", layers) and not build_engine._matches("/head/Gemm", layers)


def test_the_layer_precision_tip_fits_the_targets_tensorrt_and_precision(nano_out: Path, env: object,
                                                                        tiny_pool: Path, tmp_path: Path) -> None:
    """A Jetson Nano's EMBEDDING.md said to add --exportLayerInfo to the trtexec line of build_engine.sh (TensorRT
    >= 8.4), a line that never runs on its TensorRT 8.2 (build_engine.py builds there); an fp32 export, which pins
    nothing, got the paragraph about pinned layers too."""
    text = (nano_out / "EMBEDDING.md").read_text()
    assert "--exportLayerInfo" not in text and "--layer-info layers.json" in text, text
    out = tmp_path / "fp32"
    assert export(tiny_pool, out, "--target", "jetson-nano", "--precision", "fp32", "--descendant", "ti6.0-5") == 0
    fp32 = (out / "EMBEDDING.md").read_text()
    assert "pinned layer" not in fp32 and "--layer-info" not in fp32 and "--exportLayerInfo" not in fp32


def test_build_engine_py_writes_the_engines_layer_information(nano_out: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`build_engine.py --layer-info FILE` (TensorRT 8.2's path, whose trtexec has no --exportLayerInfo) asks for
    detailed profiling and writes the engine inspector's JSON: here with a stand-in for the tensorrt module (its
    libraries are not on PyPI), which records what the builder was asked."""
    import types

    seen: dict = {}

    class Obj:
        def __init__(self, **kw):  # noqa: ANN003
            self.__dict__.update(kw)

    class Config:
        profiling_verbosity = None

        def set_flag(self, flag):  # noqa: ANN001, ANN202
            seen.setdefault("flags", []).append(flag)

        def set_memory_pool_limit(self, *a):  # noqa: ANN002, ANN202
            pass

    layer = Obj(name="/blocks/Softmax", type="SOFTMAX", precision=None, num_outputs=1,
                get_output=lambda j: Obj(dtype="f32"), set_output_type=lambda j, t: None)
    network = Obj(num_layers=1, get_layer=lambda i: layer)
    config = Config()
    builder = Obj(create_network=lambda flags: network, create_builder_config=lambda: config,
                  platform_has_fast_fp16=True, build_serialized_network=lambda n, c: b"PLAN")

    class Inspector:
        def get_engine_information(self, fmt):  # noqa: ANN001, ANN202
            seen["format"] = fmt
            return '{"Layers": ["/blocks/Softmax"]}'

    class Logger:
        WARNING = 2

        def __init__(self, level):  # noqa: ANN001
            self.level = level

    engine = Obj(create_engine_inspector=lambda: Inspector())
    trt = types.SimpleNamespace(
        Logger=Logger, Builder=lambda logger: builder, float32="f32", float16="f16",
        NetworkDefinitionCreationFlag=Obj(EXPLICIT_BATCH=0), MemoryPoolType=Obj(WORKSPACE=0),
        OnnxParser=lambda n, lg: Obj(parse=lambda data: True, num_errors=0),
        BuilderFlag=Obj(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY"),
        LayerType=Obj(QUANTIZE="Q", DEQUANTIZE="DQ"), ProfilingVerbosity=Obj(DETAILED="DETAILED"),
        LayerInformationFormat=Obj(JSON="JSON"), Runtime=lambda lg: Obj(deserialize_cuda_engine=lambda b: engine))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    work = tmp_path / "board"
    shutil.copytree(nano_out, work)
    monkeypatch.syspath_prepend(str(work))
    monkeypatch.delitem(sys.modules, "build_engine", raising=False)
    import build_engine

    monkeypatch.chdir(work)
    layer.name = build_engine.read_layer_names("fp32_layers.txt")[0]  # a softmax or LayerNorm node of the export
    assert build_engine.main(["--onnx", "model.onnx", "--engine", "model.plan", "--precision", "fp16",
                              "--fp32-layers", "fp32_layers.txt", "--layer-info", "layers.json"]) == 0
    assert config.profiling_verbosity == "DETAILED" and seen["format"] == "JSON"
    assert json.loads((work / "layers.json").read_text()) == {"Layers": ["/blocks/Softmax"]}
    assert (work / "model.plan").read_bytes() == b"PLAN" and layer.precision == "f32"


def test_android_export_ort(android_out: Path, tiny_pool: Path) -> None:
    import re

    import onnxruntime as ort

    mf = _check_common(android_out, tiny_pool, "android-arm64")
    arts = {a["format"]: a for a in mf["artifacts"]}
    assert set(arts) == {"onnx", "ort"}
    x = fresh_inputs(6, 1)
    ref = torch_logits(tiny_pool, mf["descendant"]["key"], x)
    assert np.abs(ort_logits(android_out / "model.ort", x) - ref).max() < 1e-4
    cfg = (android_out / "model.required_operators.config").read_text()
    assert "ai.onnx;" in cfg and "tmp" not in cfg
    # the Kotlin sample reads exactly the metadata keys the model carries
    kt = (android_out / "samples" / "LgpClassifier.kt").read_text()
    meta = ort.InferenceSession(str(android_out / "model.ort")).get_modelmeta().custom_metadata_map
    wanted = set(re.findall(r'getValue\("(\w+)"\)', kt)) | set(re.findall(r'floats\("(\w+)"\)', kt))
    assert wanted and wanted <= set(meta), wanted - set(meta)
    assert "OrtEnvironment.getEnvironment()" in kt and "createSession" in kt
    # one ONNX Runtime version, >= 1.16 (the .ort format v6), pinned in the doc and the sample alike
    from lgp_edge.export.embedding import ORT_ANDROID_VERSION

    text = (android_out / "EMBEDDING.md").read_text()
    pin = f"com.microsoft.onnxruntime:onnxruntime-android:{ORT_ANDROID_VERSION}"
    assert pin in text and pin in kt and "<version>" not in text
    assert tuple(int(v) for v in ORT_ANDROID_VERSION.split(".")[:2]) >= (1, 16) and ">= 1.16" in text
    assert set(re.findall(r"onnxruntime-android:([\w.]+)", text + kt)) == {ORT_ANDROID_VERSION}
    # the interface in the doc is the .ort file's own: its input and output names
    sess = ort.InferenceSession(str(android_out / "model.ort"))
    assert f"`{sess.get_inputs()[0].name}`" in text and f"`{sess.get_outputs()[0].name}`" in text
    # grayscale conversion: the same in the doc and the sample (the training loader's mean of R, G, B)
    assert "mean of R, G and B" in text and "(r + g + b) / 3f" in kt
    # what runs the .ort: the full onnxruntime-android package (onnxruntime-mobile, gone since 1.19, lacked its
    # operators); a reduced build must be the converter's own ONNX Runtime version
    ort_art = arts["ort"]
    assert "mobile" not in text.lower() and "mobile" not in ort_art["note"].lower()
    assert "onnxruntime-android" in ort_art["note"]
    assert f"ONNX Runtime {ort_art['versions']['onnxruntime']}" in text and "required_operators.config" in text
    # the minimum version is the one for the format the file has
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    fmt = int(InferenceSession.InferenceSession.GetRootAs((android_out / "model.ort").read_bytes(), 0).OrtVersion())
    assert f"`.ort` format v{fmt}" in text
    # the app runs at the thread count the manifest's latency is for; the sample closes its session options
    assert f"threads = {mf['selection']['threads']}" in text
    assert "options.close()" in kt and "IR 10" in kt


def test_a_phones_onnx_file_alone_gets_the_android_section_and_sample(tiny_pool: Path, tmp_path: Path) -> None:
    """`--format onnx` for a phone: onnxruntime-android loads a plain .onnx as well, so the app developer gets
    the Kotlin section and sample for it (not only the desktop Python section)."""
    import onnxruntime as ort

    out = tmp_path / "out"
    assert export(tiny_pool, out, "--target", "android-arm64", "--format", "onnx") == 0
    mf = manifest(out)
    assert [a["format"] for a in mf["artifacts"]] == ["onnx"]
    text = (out / "EMBEDDING.md").read_text()
    assert "## Android (Kotlin, ONNX Runtime Android)" in text
    assert 'assets.open("model.onnx")' in text and "`.ort` format" not in text and "--format ort" in text
    kt = out / "samples" / "LgpClassifier.kt"
    assert kt.is_file() and "samples/LgpClassifier.kt" in {f["path"] for f in mf["files"]}
    assert "onnxruntime-android" in mf["artifacts"][0]["note"]
    sess = ort.InferenceSession(str(out / "model.onnx"))
    assert f"`{sess.get_inputs()[0].name}`" in text and f"threads = {mf['selection']['threads']}" in text


def test_core_ml_doc_says_where_an_rgb_model_normalises() -> None:
    """Per-channel stds (ImageNet's) cannot be one image scale: the model divides by them itself."""
    from lgp_edge.export.embedding import coreml_norm_text

    rgb = {"img_size": 32, "in_chans": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
           "labels": ["a", "b"]}
    gray = {**rgb, "in_chans": 1, "mean": [0.286], "std": [0.353]}
    assert "per-channel std" in coreml_norm_text(rgb) and "bias" not in coreml_norm_text(rgb)
    assert "`scale * pixel + bias`" in coreml_norm_text(gray)


def test_ort_conversion_platform_follows_the_target() -> None:
    from lgp_edge.export.ort import ort_platform
    from lgp_edge.targets import load_target

    assert ort_platform(load_target("android-arm64")) == "arm"
    assert ort_platform(load_target("raspberry-pi-5")) == "arm"
    host = "amd64" if platform.machine().lower() in ("x86_64", "amd64") else "arm"
    assert ort_platform(load_target("cpu")) == host  # this machine
    t = load_target("android-arm64")
    assert ort_platform(dataclasses.replace(t, extra={**t.extra, "ort_platform": "amd64"})) == "amd64"


def test_python_snippet_uses_the_latency_thread_count(pi_out: Path) -> None:
    mf = manifest(pi_out)
    text = (pi_out / "EMBEDDING.md").read_text()
    assert f"so.intra_op_num_threads = {mf['selection']['threads']}" in text
    assert "python3 -m venv" in text  # Raspberry Pi OS refuses a system-wide pip install (PEP 668)


def test_iphone_export_coreml(iphone_out: Path, tiny_pool: Path) -> None:
    import coremltools as ct

    mf = _check_common(iphone_out, tiny_pool, "iphone")
    (art,) = mf["artifacts"]
    v = art["validation"]
    assert art["format"] == "coreml" and art["precision"] == "fp16" and v["kind"] == "structural"
    # the summary does not read as if the package had been run on the validation images here
    top = mf["validation"]
    assert top["numeric"] == [] and top["structural"] == ["model.mlpackage"]
    assert "model.mlpackage: structural check only here" in top["note"]
    # an image input that normalises inside the model, and the formula a tensor input would take
    assert art["inputs"][0]["normalized_in_model"] is True
    assert mf["preprocess"]["pixel_range"] == [0, 255] and "mean of R, G and B" in mf["preprocess"]["grayscale"]
    assert "relative path, a NUL byte and its bytes" in art["note"]
    assert v["max_abs_diff"] is None and "validate_coreml.py" in v["note"]
    spec = ct.utils.load_spec(str(iphone_out / "model.mlpackage"))
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 8  # iOS17 from the target file
    from lgp_edge.fileio import default_mode  # coremltools wrote model.mlmodel 0600, the rest 0644

    modes = {f.name: f.stat().st_mode & 0o777 for f in (iphone_out / "model.mlpackage").rglob("*") if f.is_file()}
    assert "model.mlmodel" in modes and set(modes.values()) == {default_mode(directory=False)}, modes
    (inp,) = spec.description.input
    assert inp.name == "image" and (inp.type.imageType.width, inp.type.imageType.height) == (16, 16)
    assert spec.description.predictedProbabilitiesName == "classLabel_probs"
    user = dict(spec.description.metadata.userDefined)
    assert user["descendant_key"] == mf["descendant"]["key"] and user["pool_id"] == mf["pool"]["pool_id"]
    # normalisation is inside the package: its metadata must not give an app the tensor rule to apply again
    assert user["preprocess"].startswith("none: pass the image") and "(pixel / 255" not in user["preprocess"][:30]
    assert v["images"] == int(VAL)  # the images validate_coreml.py runs on a Mac (was 0)
    data = np.load(iphone_out / "coreml_validation.npz")
    assert data["pixels"].shape == (int(VAL), 16, 16, 1) and data["pixels"].dtype == np.uint8
    assert np.allclose(data["probs"].sum(1), 1.0, atol=1e-5) and str(data["precision"]) == "fp16"
    res = subprocess.run([sys.executable, "validate_coreml.py"], cwd=iphone_out, capture_output=True, text=True)
    assert res.returncode == 2 and "macOS only" in res.stderr  # refuses to pretend on Linux
    swift = (iphone_out / "samples" / "LgpClassifier.swift").read_text()
    assert '"descendant_key"' in swift and '"classLabel_probs"' in swift and '"image"' in swift
    text = (iphone_out / "EMBEDDING.md").read_text()
    assert "iOS17" in text or "iOS 17" in text
    # the doc describes the .mlpackage's real interface: image input, normalisation inside, classifier outputs
    assert f"`{inp.name}`" in text and "`classLabel`" in text and "`classLabel_probs`" in text
    assert "`logits`" not in text and "`input`" not in text  # no tensor interface it does not have
    assert "pixel / 255 - mean[c]" not in text  # no manual normalisation (it would normalise twice)
    # Swift: iOS 17 like the model, grayscale as the mean of R, G and B (as the doc and the Kotlin sample)
    assert "iOS 17+" in swift and "iOS 16" not in swift
    assert "mean of R, G and B" in text and "/ 3" in swift and "VNCoreMLRequest" not in swift


def test_coreml_structural_check_reads_the_program(iphone_out: Path) -> None:
    """The check passed a package whose in-model normalisation, class labels or weight precision were not the
    intended ones (an export with no normalisation at all printed 'passed')."""
    import dataclasses

    from lgp_edge.export.coreml import structural_check
    from lgp_edge.specs import PreprocessSpec

    mf = manifest(iphone_out)
    import coremltools as ct

    pre = PreprocessSpec.from_dict(mf["preprocess"])
    path = iphone_out / "model.mlpackage"
    user = dict(ct.utils.load_spec(str(path)).description.metadata.userDefined)
    assert structural_check(path, pre, user, "iOS17", "fp16") == []
    other_mean = dataclasses.replace(pre, mean=tuple(m + 0.1 for m in pre.mean))
    assert any("bias" in p for p in structural_check(path, other_mean, user, "iOS17", "fp16"))
    other_std = dataclasses.replace(pre, std=tuple(s * 2 for s in pre.std))
    assert any("scale" in p for p in structural_check(path, other_std, user, "iOS17", "fp16"))
    swapped = dataclasses.replace(pre, labels=tuple(reversed(pre.labels)))
    assert any("labels" in p for p in structural_check(path, swapped, user, "iOS17", "fp16"))
    assert any("FLOAT16" in p for p in structural_check(path, pre, user, "iOS17", "fp32"))


def test_coreml_classifier_output_and_metadata_checks_of_a_model_and_of_a_function() -> None:
    """One check of a description's classifier outputs and metadata, for a model and for each function of a
    multifunction package (whose messages name the function and leave its long metadata values out)."""
    from types import SimpleNamespace as NS

    from lgp_edge.export.coreml import classifier_output_problems, metadata_problems

    def desc(outputs: list[str], meta: dict[str, str]) -> NS:
        return NS(output=[NS(name=o) for o in outputs], predictedFeatureName="classLabel",
                  predictedProbabilitiesName="classLabel_probs", metadata=NS(userDefined=meta))

    ok = desc(["classLabel", "classLabel_probs"], {"a": "1"})
    assert classifier_output_problems(ok) == [] and metadata_problems(ok, {"a": "1"}) == []
    bad = desc(["logits"], {"a": "2"})
    assert classifier_output_problems(bad) == ["classifier outputs missing (outputs ['logits'])"]
    assert classifier_output_problems(bad, "f1: ") == ["f1: classifier outputs missing (outputs ['logits'])"]
    assert metadata_problems(bad, {"a": "1", "b": "x"}) == ["metadata 'a' is '2', expected '1'",
                                                            "metadata 'b' is None, expected 'x'"]
    assert metadata_problems(bad, {"a": "1"}, values=False) == ["metadata 'a' differs from what was written"]


def test_cpu_int8_openvino(env: object, tiny_pool: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export(tiny_pool, out, "--profile", "cpu-int8", "--val-images", "300") == 0  # int8: >= 300
    mf = _check_common(out, tiny_pool, "cpu-int8", images=256)  # all of the synthetic validation split
    (art,) = mf["artifacts"]
    v = art["validation"]
    assert art["precision"] == "int8" and v["top1_change"] is not None and v["min_agreement"] == 0.9
    assert "NNCF PTQ on 300 calibration images" in art["note"] and "top-1 change" in art["note"]
    assert "FakeQuantize" in (out / "model.xml").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["EMBEDDING.md", "manifest.json", "model.bin", "model.xml"]
    # what was quantized, counted in the saved IR (the record was empty)
    q = art["quantization"]
    assert "NNCF" in q["method"] and q["for_runtime"] == "openvino" and q["calibration_images"] >= 300
    text = (out / "model.xml").read_text()
    assert q["FakeQuantize"] == text.count('type="FakeQuantize"') > 0
    assert 1 <= q["int8_layers"] <= text.count('type="MatMul"') + text.count('type="Convolution"')
    assert "256 levels" in q["activations"] and "classifier" in q["layers"]


def test_openvino_fp16_through_the_exporter_api(tiny_pool: Path, tmp_path: Path) -> None:
    import dataclasses

    from lgp_edge.export.base import ValidationSet
    from lgp_edge.export.openvino import OpenVINOExporter
    from lgp_edge.export.validate import reference_logits
    from lgp_edge.profiles import load_profile
    from lgp_edge.progress import NULL
    from lgp_edge.targets import load_target

    pool, mf = load_pool(tiny_pool)
    rec = mf.descendants[3]
    model = pool.descendant(rec.key).eval()
    target = dataclasses.replace(load_target("cpu"), precisions=("fp32", "fp16"))  # a user target with fp16
    profile = dataclasses.replace(load_profile("cpu"), precision="fp16", formats=("openvino",))
    x = fresh_inputs(32, 1)
    vset = ValidationSet(images=x, labels=np.zeros(32, np.int64), reference=reference_logits(model, x),
                         data="synthetic", synthetic=True)
    outs: dict = {}
    onnx_cache: dict = {}  # the fp32 run converts from the ONNX the fp16 run exported
    for prec in ("fp16", "fp32"):
        d = tmp_path / prec
        d.mkdir()
        ctx = ExportContext(out_dir=d, model=model, record=rec, pool_id=mf.spec.pool_id, preprocess=mf.preprocess,
                            profile=dataclasses.replace(profile, precision=prec), target=target, opset=None,
                            dynamic_batch=False, validation=vset, calibration=x[:0], reporter=NULL,
                            onnx_cache=onnx_cache)
        OpenVINOExporter().check(ctx.profile, target, None)
        (art,) = OpenVINOExporter().export(ctx)
        outs[prec] = (art, (d / "model.bin").stat().st_size)
    fp16, fp32 = outs["fp16"][0].validation, outs["fp32"][0].validation
    assert fp16.passed and fp32.passed and outs["fp16"][0].precision == "fp16"
    assert fp32.max_abs_diff < 1e-5 and 10 * fp32.max_abs_diff < fp16.max_abs_diff <= fp16.atol  # really fp16
    assert outs["fp16"][1] < 0.6 * outs["fp32"][1]


def test_default_pool_is_the_bundled_demo_pool(env: object, tiny_pool: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from lgp_edge.pool import manifest as pool_mod  # resolve_pool reads the demo pool's place from here

    monkeypatch.setattr(pool_mod, "demo_pool_dir", lambda: tmp_path / "no-demo")
    args = ["export", "--target", "cpu", "--format", "onnx", "--out", str(tmp_path / "a"), "--quiet", "--val-images",
            "8"]
    assert main(args) == 2 and "--pool" in capsys.readouterr().err
    monkeypatch.setattr(pool_mod, "demo_pool_dir", lambda: tiny_pool)
    assert main(args) == 0
    assert manifest(tmp_path / "a")["pool"]["path"] == str(tiny_pool)
    # a relative --pool is recorded absolute: read from the export folder, 'pool' named another folder
    monkeypatch.chdir(tiny_pool.parent)
    assert main([*args[:args.index("--out")], "--out", str(tmp_path / "b"), *args[args.index("--out") + 2:],
                 "--pool", tiny_pool.name]) == 0
    assert manifest(tmp_path / "b")["pool"]["path"] == str(tiny_pool)


def test_dynamic_batch_and_forced_descendant(env: object, tiny_pool: Path, tmp_path: Path) -> None:
    key = "ti6.0-5"
    out = tmp_path / "out"
    assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--dynamic-batch", "--descendant", key) == 0
    mf = manifest(out)
    assert mf["descendant"]["key"] == key and mf["selection"]["forced"] == key
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"))
    assert sess.get_inputs()[0].shape[0] == "batch"
    x = fresh_inputs(5, 1)
    assert np.abs(sess.run(None, {"input": x})[0] - torch_logits(tiny_pool, key, x)).max() < 1e-4


def test_dynamic_batch_is_refused_for_core_ml(env: object, tiny_pool: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--target iphone --dynamic-batch wrote a batch-1 package and said nothing."""
    out = tmp_path / "out"
    assert export(tiny_pool, out, "--target", "iphone", "--dynamic-batch") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Core ML" in err and "--dynamic-batch" in err and not out.exists()


def test_an_onnx_first_jetson_export_gives_the_tensorrt_latency_as_tensorrt(env: object, tiny_pool: Path,
                                                                           tmp_path: Path) -> None:
    """`export --target jetson-orin-nano --format onnx,tensorrt` said its expected latency was ONNX Runtime's (the
    first format's runtime), where the number was TensorRT's prediction: the ONNX file of a TensorRT target is the
    engine's input, and EMBEDDING.md's Python sample told the reader to run it on the CPU at that latency."""
    out = tmp_path / "orin"
    assert export(tiny_pool, out, "--target", "jetson-orin-nano", "--format", "onnx,tensorrt",
                  "--descendant", "ti6.0-5") == 0
    d = manifest(out)["descendant"]
    assert d["latency_runtime"] == "tensorrt" and d["latency_source"] == "predicted"
    assert "(predicted, onnxruntime)" not in (out / "EMBEDDING.md").read_text()
    assert "--exportLayerInfo=layers.json" in (out / "EMBEDDING.md").read_text()  # TensorRT 10.3's trtexec has it
    # how it was predicted, as select says it: the note named only the assumed spread, not the roofline
    assert d["latency_note"].startswith("roofline; spread assumed"), d["latency_note"]


def test_dynamic_batch_jetson_export_states_the_engine_batch_range(env: object, tiny_pool: Path,
                                                                   tmp_path: Path) -> None:
    """The ONNX input says only "batch"; the engine build_engine.sh builds takes batch 1..8 (its optimization
    profile). The manifest and EMBEDDING.md say so, and the bench.sh command they give builds that engine."""
    out = tmp_path / "nano-dyn"
    assert export(tiny_pool, out, "--target", "jetson-nano", "--dynamic-batch",
                  "--descendant", "ti6.0-5") == 0
    (art,) = manifest(out)["artifacts"]
    (inp,) = art["inputs"]
    assert inp["shape"][0] == "batch" and inp["batch_range"] == [1, 8]
    assert inp["engine_shapes"] == "input:1x1x16x16:1x1x16x16:8x1x16x16" and "dynamic batch 1..8" in art["note"]
    assert "--maxShapes=input:8x1x16x16" in (out / "build_engine.sh").read_text()
    text = (out / "EMBEDDING.md").read_text()
    assert "a batch of 1 to 8" in text and "`SHAPES=input:1x1x16x16:1x1x16x16:8x1x16x16 sh bench.sh model.onnx" in text


def test_validation_failure_exits_1_and_keeps_out_untouched(env: object, tiny_pool: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from lgp_edge.export import validate

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous export")  # an earlier export, which --force may replace
    (out / "manifest.json").write_text(json.dumps({"kind": "lgp-edge export", "status": "passed",
                                                   "artifacts": [{"path": "keep.txt"}]}))
    monkeypatch.setitem(validate.TOLERANCES, "fp32", validate.Tolerance(atol=0.0, rtol=0.0, min_agreement=1.0))
    for _ in range(2):  # the second failure replaces the first OUT.failed
        assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--force") == 1
        err = capsys.readouterr().err
        assert "validation failed, nothing written to" in err and "max |diff|" in err
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "manifest.json"]  # OUT untouched
        failed = manifest(tmp_path / "out.failed")
        assert failed["status"] == "failed" and failed["validation"]["passed"] is False
        assert failed["artifacts"][0]["validation"]["passed"] is False
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_a_passing_export_removes_the_failed_output_an_earlier_run_left(env: object, tiny_pool: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """OUT.failed of an earlier failed run stayed beside the passing export that replaced it, and read as the state
    of OUT. A passing export removes it when it is lgp-edge's failed export and holds nothing else; one that holds
    another file is kept, with a warning."""
    from lgp_edge.export import validate

    out, failed, copy = tmp_path / "out", tmp_path / "out.failed", tmp_path / "copy"
    normal = validate.TOLERANCES["fp32"]
    monkeypatch.setitem(validate.TOLERANCES, "fp32", validate.Tolerance(atol=0.0, rtol=0.0, min_agreement=1.0))
    assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--force") == 1
    assert manifest(failed)["status"] == "failed"
    shutil.copytree(failed, copy)
    monkeypatch.setitem(validate.TOLERANCES, "fp32", normal)
    for extra in (None, "notes.txt"):
        if extra:  # the same failed export, with a file of the user's added
            shutil.copytree(copy, failed)
            (failed / extra).write_text("the user's")
        caplog.clear()
        with caplog.at_level("INFO", logger="lgp_edge"):
            assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--force") == 0
        assert manifest(out)["status"] == "passed"
        if extra is None:
            assert not failed.exists() and "removed" in caplog.text
        else:
            assert (failed / extra).read_text() == "the user's" and manifest(failed)["status"] == "failed"
            assert "out.failed" in caplog.text and "kept" in caplog.text


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "cpu", "--format", "coreml"], "format 'coreml' is not supported by target 'cpu'"),
    (["--target", "jetson-nano", "--opset", "17"], "above what target 'jetson-nano' parses"),
    (["--target", "cpu", "--opset", "8"], "--opset: must be >= 13"),  # was accepted by the parser (>= 7)
    (["--target", "cpu", "--opset", "99"], "--opset must be between 13 and"),
    (["--target", "jetson-nano", "--precision", "int8"], "precision 'int8' is not supported"),
    (["--target", "cpu", "--format", "tflite"], "unknown format 'tflite'"),
    (["--profile", "cpu-int8", "--calib-images", "100"], "--calib-images: must be >= 300"),
    (["--target", "cpu", "--val-images", "0"], "--val-images: must be >= 1"),
    (["--target", "cpu", "--budget-ms", "0.001"], "the fastest"),
    (["--target", "cpu", "--descendant", "ti6.9-9"], "has no descendant"),
    (["--target", "cpu", "--data", "mnist"], "unknown --data"),
])
def test_bad_input_exits_2_and_writes_nothing(env: object, tiny_pool: Path, tmp_path: Path, args: list[str],
                                              message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    try:
        rc = main(["export", "--pool", str(tiny_pool), "--out", str(out), "--quiet", *args])
    except SystemExit as exc:  # a flag out of range is refused by the argument parser
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_non_empty_out_refused_then_forced(env: object, tiny_pool: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx") == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["mine.txt"]
    # --force replaces only an earlier export: a folder of the user's files is left alone
    assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--force") == 2
    assert "did not write" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["mine.txt"]
    earlier = tmp_path / "earlier"
    assert export(tiny_pool, earlier, "--target", "cpu", "--format", "onnx") == 0
    first = manifest(earlier)["created_utc"]
    time.sleep(1.1)
    assert export(tiny_pool, earlier, "--target", "cpu", "--format", "onnx", "--force") == 0
    assert manifest(earlier)["status"] == "passed" and manifest(earlier)["created_utc"] != first


def test_missing_backend_names_pip_extra(env: object, tiny_pool: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "coremltools" else real(name, *a))
    assert export(tiny_pool, tmp_path / "out", "--target", "iphone") == 2
    assert "pip install 'lgp-edge[coreml]'" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_embedding_python_snippet_runs(cpu_out: Path, tmp_path: Path) -> None:
    import re

    from PIL import Image

    text = (cpu_out / "EMBEDDING.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    shutil.copyfile(cpu_out / "model.onnx", tmp_path / "model.onnx")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    path, label = res.stdout.strip().split(" ", 1)
    assert path == "photo.png" and label in manifest(cpu_out)["preprocess"]["labels"]
    # a 16-bit grayscale PNG is prepared as its 8-bit image: convert("RGB") clipped it (an ankle boot read as a
    # sandal), where lgp-edge's own loader scales it
    gray = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint16)
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "p8.png")
    Image.fromarray(gray * 257).save(tmp_path / "p16.png")
    assert Image.open(tmp_path / "p16.png").mode.startswith("I")
    ns: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "EMBEDDING.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    np.testing.assert_allclose(ns["prepare"](str(tmp_path / "p16.png")), ns["prepare"](str(tmp_path / "p8.png")),
                               atol=1e-6)


def test_every_python_session_names_its_execution_providers(cpu_out: Path, nano_out: Path, tmp_path: Path) -> None:
    """The Python sample opened its session without providers=: ONNX Runtime 1.9 to 1.15 GPU builds (a Jetson's)
    refuse that with "you are required to explicitly set the providers parameter", and on a CPU build the fp16
    file EMBEDDING.md says to run on a GPU provider ran on the CPU."""
    import re

    from PIL import Image

    for out in (cpu_out, nano_out):
        text = (out / "EMBEDDING.md").read_text()
        sessions = re.findall(r"InferenceSession\(.*", text)
        assert sessions and all("providers=" in s for s in sessions), (out.name, sessions)
    (code,) = re.findall(r"```python\n(.*?)```", (nano_out / "EMBEDDING.md").read_text(), re.S)
    (model,) = re.findall(r'InferenceSession\("([^"]+)"', code)
    assert "CUDAExecutionProvider" in code, code
    (cpu_code,) = re.findall(r"```python\n(.*?)```", (cpu_out / "EMBEDDING.md").read_text(), re.S)
    assert 'providers = ["CPUExecutionProvider"]' in cpu_code and "CUDA" not in cpu_code, cpu_code
    # here (an ONNX Runtime without CUDA) the GPU sample still runs, on the providers this build has
    Image.new("L", (28, 28), 100).save(tmp_path / "photo.png")
    shutil.copyfile(nano_out / model, tmp_path / model)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    assert res.stdout.split()[1] in manifest(nano_out)["preprocess"]["labels"]


def test_embedding_python_snippet_runs_at_the_profiles_batch(env: object, tiny_pool: Path, tmp_path: Path) -> None:
    """A profile at batch 4 exports a model taking exactly 4 images; the snippet built one (ONNX Runtime:
    "Got invalid dimensions for input")."""
    import re

    from PIL import Image

    d = tmp_path / "profiles"
    d.mkdir()
    (d / "b4.toml").write_text('name = "b4"\ntarget = "cpu"\nlatency_budget_ms = 1e6\nmemory_budget_mb = 1e6\n'
                               'precision = "fp32"\nformats = ["onnx"]\nbatch = 4\n')
    out = tmp_path / "out"
    assert export(tiny_pool, out, "--profiles-dir", str(d), "--profile", "b4") == 0
    text = (out / "EMBEDDING.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    work = tmp_path / "app"
    work.mkdir()
    for i in range(4):
        rgb = np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(work / f"photo{i}.png")
    shutil.copyfile(out / "model.onnx", work / "model.onnx")
    res = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [line.split(" ", 1) for line in res.stdout.strip().splitlines()]
    assert [p for p, _ in lines] == [f"photo{i}.png" for i in range(4)]
    assert all(label in manifest(out)["preprocess"]["labels"] for _, label in lines)


def test_context_metadata_matches_manifest(cpu_out: Path, tiny_pool: Path) -> None:
    import openvino as ov

    # the keys every artifact carries are those EMBEDDING.md tells app developers to read
    text = (cpu_out / "EMBEDDING.md").read_text()
    for k in ("img_size", "in_chans", "mean", "std", "labels", "descendant_key", "pool_id"):
        assert f"`{k}`" in text
    # ... and each value in the model file is the manifest's, and the pool's own (pool.json)
    mf = manifest(cpu_out)
    pool = json.loads((tiny_pool / "pool.json").read_text())
    pre = mf["preprocess"]
    assert {k: pre[k] for k in pool["preprocess"]} == pool["preprocess"] and mf["pool"]["pool_id"] == pool["pool_id"]
    assert mf["descendant"]["key"] in {d["key"] for d in pool["descendants"]}
    meta = {p.key: p.value for p in onnx.load(str(cpu_out / "model.onnx")).metadata_props}
    assert set(meta) == {"lgp_edge_version", "descendant_key", "pool_id", "profile", "target", "labels", "mean",
                         "std", "img_size", "in_chans", "layout", "preprocess"}
    assert meta["descendant_key"] == mf["descendant"]["key"] and meta["pool_id"] == pool["pool_id"]
    assert meta["profile"] == mf["profile"]["name"] == "cpu" and meta["target"] == mf["target"]["name"] == "cpu"
    assert meta["lgp_edge_version"] == mf["versions"]["lgp-edge"]
    assert int(meta["img_size"]) == pre["img_size"] and int(meta["in_chans"]) == pre["in_chans"]
    assert meta["layout"] == pre["layout"]
    for k in ("labels", "mean", "std"):
        assert json.loads(meta[k]) == pre[k], k
    assert "mean" in meta["preprocess"] and "std" in meta["preprocess"] and "img_size" in meta["preprocess"]
    # the OpenVINO IR of the same export carries the same values in rt_info (model_info/lgp_edge)
    ir = ov.Core().read_model(str(cpu_out / "model.xml"))
    for k, v in meta.items():
        assert ir.get_rt_info(["model_info", "lgp_edge", k]).astype(str) == v, k
    fields = {f for f in ExportContext.__dataclass_fields__}
    assert {"validation", "calibration", "opset", "dynamic_batch"} <= fields
    assert hashlib.sha256((cpu_out / "model.onnx").read_bytes()).hexdigest() == manifest(cpu_out)["artifacts"][0][
        "sha256"]


def test_cli_names_what_ran_each_check(env: object, tiny_pool: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    """A TensorRT fp16 artifact says what its check ran: an fp16 ONNX in ONNX Runtime CPU, with the fp32 file's own
    check beside it, not a bare 'fp16 ... passed'."""
    assert main(["export", "--pool", str(tiny_pool), "--out", str(tmp_path / "o"), "--val-images", VAL,
                 "--target", "jetson-nano"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("model.onnx"))
    assert "tensorrt" in line and "fp16" in line and "(checked in fp16 ONNX with the" in line
    assert "in ONNX Runtime CPU" in line and "the fp32 ONNX file itself: max|diff|" in line
    # sizes in the same MB as select's memory and the budgets (2^20 bytes; export printed 10^6-byte MB)
    size = (tmp_path / "o" / "model.onnx").stat().st_size
    assert f" {size / 2**20:.2f} MB " in line


def test_coreml_reference_top1_is_rounded_like_every_other_validation() -> None:
    """89.60000000000001 in the manifest beside 89.6 everywhere else: the structural report's torch top-1 went
    unrounded."""
    from types import SimpleNamespace

    from lgp_edge.export.coreml import _structural_report

    labels = np.arange(1000) % 10
    ref = np.eye(10, dtype=np.float32)[(labels + (np.arange(1000) < 104)) % 10]  # 896 of 1000 right
    ctx = SimpleNamespace(preprocess=SimpleNamespace(img_size=28),
                          validation=SimpleNamespace(synthetic=False, reference=ref, labels=labels, data="x"))
    r = _structural_report(ctx, [])
    assert repr(r.top1_ref) == "89.6" and r.images == 1000 and r.kind == "structural" and r.passed


def test_a_tensorrt_files_top1_is_worded_as_its_engines() -> None:
    """EMBEDDING.md said "fp16 `model.onnx` 89.60%" of the fp32 ONNX a TensorRT engine is built from."""
    from lgp_edge.export.manifest import own_top1_words

    def art(path: str, fmt: str, precision: str, top1: float) -> dict:
        return {"path": path, "format": fmt, "precision": precision,
                "validation": {"kind": "numeric", "top1_artifact": top1}}
    mf = {"validation": {"synthetic": False},
          "artifacts": [art("model.onnx", "tensorrt", "fp16", 89.6), art("model.int8.onnx", "onnx", "int8", 89.4)]}
    assert own_top1_words(mf, code=True) == ("the fp16 engine from `model.onnx` (approximated in ONNX Runtime) 89.60%, "
                       "int8 `model.int8.onnx` 89.40%")


def test_a_latency_from_a_calibration_this_export_did_not_store_says_so(env: object, tiny_pool: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports of the same model on the same host wrote 0.421 ms and 1.22 ms into EMBEDDING.md: with no
    store to keep it, each process measured the host calibration again, and the artifact said nothing of it."""
    import os

    from lgp_edge.profiling import roofline
    from lgp_edge.profiling.host import default_threads
    from lgp_edge.profiling.store import MeasurementStore
    from lgp_edge.specs import UNSTORED_NOTE
    from lgp_edge.targets import load_target

    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "store.sqlite"))  # none yet
    out = tmp_path / "a"
    assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--descendant", "ti6.0-5") == 0
    d = manifest(out)["descendant"]
    assert d["latency_source"] == "predicted" and UNSTORED_NOTE in d["latency_note"], d["latency_note"]
    assert "did not store, so another export predicts another time" in (out / "EMBEDDING.md").read_text()
    # a stored calibration: every process predicts the same, and nothing is said
    with MeasurementStore(os.environ["LGP_EDGE_STORE"]) as s:
        roofline.host_calibration("onnxruntime", default_threads(load_target("cpu")), s)
    out = tmp_path / "b"
    assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--descendant", "ti6.0-5") == 0
    d = manifest(out)["descendant"]
    assert d["latency_source"] == "predicted" and UNSTORED_NOTE not in d["latency_note"], d["latency_note"]
    assert "did not store" not in (out / "EMBEDDING.md").read_text()


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="an x86-64 host")
def test_an_ort_file_converted_for_this_x86_machine_is_not_described_as_a_phones(env: object, tiny_pool: Path,
                                                                                 tmp_path: Path) -> None:
    """`export --target cpu --format ort` on an x86-64 machine wrote a .ort with x86 NCHWc kernels, and its note,
    EMBEDDING.md and samples/LgpClassifier.kt told the reader to run it in onnxruntime-android, which cannot
    load it."""
    out = tmp_path / "cpu-ort"
    assert export(tiny_pool, out, "--target", "cpu", "--format", "ort", "--descendant", "ti6.0-5") == 0
    (art,) = manifest(out)["artifacts"]
    assert art["note"].startswith("optimised for amd64") and "onnxruntime-android package" not in art["note"]
    assert "do not load in ARM builds" in art["note"]
    doc = (out / "EMBEDDING.md").read_text()
    assert "## ONNX Runtime format (.ort, amd64)" in doc and "## Android" not in doc
    assert not (out / "samples" / "LgpClassifier.kt").exists()


@pytest.mark.parametrize("where", ["raspberry-pi-5", "arm-host"])
def test_an_ort_file_for_an_arm_linux_board_or_host_is_not_described_as_a_phones(env: object, tiny_pool: Path,
                                                                               tmp_path: Path, monkeypatch,
                                                                               where: str) -> None:
    """`export --target raspberry-pi-5 --format ort` (and `--target cpu` on an aarch64 or Apple-silicon host)
    told the reader to run the .ort in the onnxruntime-android package and wrote EMBEDDING.md's Android (Kotlin)
    section and samples/LgpClassifier.kt: any ONNX Runtime on an ARM CPU loads it, the board's or this host's
    `pip install onnxruntime` included, and the export itself had just validated it in that package."""
    import platform

    if where == "arm-host":
        monkeypatch.setattr(platform, "machine", lambda: "arm64")
    target = "raspberry-pi-5" if where == "raspberry-pi-5" else "cpu"
    out = tmp_path / "arm-ort"
    assert export(tiny_pool, out, "--target", target, "--format", "ort", "--descendant", "ti6.0-5") == 0
    (art,) = manifest(out)["artifacts"]
    assert art["note"].startswith("optimised for arm") and "onnxruntime-android" not in art["note"], art["note"]
    assert "the onnxruntime package" in art["note"]
    doc = (out / "EMBEDDING.md").read_text()
    assert "## ONNX Runtime format (.ort, arm)" in doc and "## Android" not in doc and "Kotlin" not in doc
    assert "x86" not in doc.split("## ONNX Runtime format (.ort, arm)")[1]
    assert not (out / "samples" / "LgpClassifier.kt").exists()


def test_a_core_ml_structural_check_does_not_say_core_ml_cannot_run_on_this_machine() -> None:
    """On a Mac (where Core ML runs, and where validate_coreml.py is meant to be run) the export said the package
    'cannot run here' / 'cannot run on this machine': lgp-edge runs no Core ML prediction anywhere, and the
    numerical check is the bundled script's, on a Mac."""
    from lgp_edge.commands.export import _check_line
    from lgp_edge.export.manifest import validation_entry

    note = validation_entry({}, [("model.mlpackage", "structural")], True)["note"]
    assert "cannot run" not in note and "validate_coreml.py" in note and "on a Mac" in note, note
    line = _check_line({"kind": "structural"})
    assert "cannot run" not in line and "Core ML" in line, line


def test_a_pool_whose_preprocessing_is_not_its_datasets_is_refused_before_any_export(env: object, tmp_path: Path,
                                                                                     capsys) -> None:
    """A pool.json saying mean 0 / std 1 for a Fashion-MNIST pool (measured with 0.286 / 0.353): the export
    warned, validated on images normalised the dataset's way, passed, and shipped that mean and std in the ONNX
    metadata, manifest and EMBEDDING.md; an app following them got 11% top-1."""
    from lgp_edge.pool.manifest import demo_pool_dir

    pool = Path(shutil.copytree(demo_pool_dir(), tmp_path / "pool"))
    mf = json.loads((pool / "pool.json").read_text())
    mf["preprocess"]["mean"], mf["preprocess"]["std"] = [0.0], [1.0]
    (pool / "pool.json").write_text(json.dumps(mf))
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["export", "--target", "cpu", "--format", "onnx", "--pool", str(pool), "--out", str(out), "--quiet",
               "--val-images", "16"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists(), err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("lgp-edge: error")]
    assert "mean (0.0,) / std (1.0,)" in line and "(0.286,)" in line and "pool.json" in line, line


def test_validation_on_a_handful_of_images_says_that_it_says_little(env: object, tiny_pool: Path, tmp_path: Path,
                                                                     caplog) -> None:
    """`--val-images 1` printed 'passed' and wrote passed: true with no word, where a logit cap that fails at the
    default 1,000 images passed on 1 or 2 (agreement 1.000 on one image says nothing)."""
    from lgp_edge.export.validate import FEW_IMAGES

    assert main(["export", "--pool", str(tiny_pool), "--out", str(tmp_path / "few"), "--target", "cpu", "--format",
                 "onnx", "--descendant", "ti6.0-5", "--val-images", "2", "--quiet"]) == 0
    text = caplog.text
    assert "2 validation images" in text and f"fewer than {FEW_IMAGES}" in text and "--val-images" in text, text
    assert manifest(tmp_path / "few")["validation"]["images"] == 2
    caplog.clear()
    assert main(["export", "--pool", str(tiny_pool), "--out", str(tmp_path / "enough"), "--target", "cpu",
                 "--format", "onnx", "--descendant", "ti6.0-5", "--val-images", str(FEW_IMAGES), "--quiet"]) == 0
    assert "says little" not in caplog.text


@pytest.mark.parametrize("key, value", [("mean", "[0.0]"), ("labels", None)])
def test_an_onnx_file_whose_preprocessing_metadata_is_not_the_models_fails_validation(env: object, tiny_pool: Path,
                                                                                     tmp_path: Path, monkeypatch,
                                                                                     key: str, value: str) -> None:
    """The ONNX file's metadata (mean, std, labels, which EMBEDDING.md tells an app to read from the model) was
    never read back: a writer that put mean 0 or swapped two labels there exported as 'passed', and an app reading
    them got 11% top-1, or the wrong class names."""
    from lgp_edge.export import onnx_export

    real = onnx_export._finish

    def wrong(proto, opset, metadata):  # noqa: ANN001, ANN202
        meta = dict(metadata)
        if value is not None:
            meta[key] = value
        else:
            labels = json.loads(meta[key])
            labels[0], labels[1] = labels[1], labels[0]
            meta[key] = json.dumps(labels)
        return real(proto, opset, meta)

    monkeypatch.setattr(onnx_export, "_finish", wrong)
    monkeypatch.setenv("LGP_EDGE_CACHE", str(tmp_path / "cache"))  # not the run's shared cache: this graph is wrong
    out = tmp_path / "out"
    assert export(tiny_pool, out, "--target", "cpu", "--format", "onnx", "--descendant", "ti6.0-5") == 1
    failed = json.loads((tmp_path / "out.failed" / "manifest.json").read_text())
    (art,) = failed["artifacts"]
    assert not art["validation"]["passed"] and f"metadata '{key}'" in art["validation"]["note"], art["validation"]


def test_an_openvino_ir_whose_preprocessing_metadata_is_not_the_models_fails_validation(env: object, tiny_pool: Path,
                                                                                      tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """The IR's rt_info (model_info/lgp_edge: mean, std, labels, ...) was never read back: an IR whose metadata
    said mean 0 exported as 'passed', as the ONNX file's did before its read-back."""
    from lgp_edge.export import openvino

    real = ExportContext.metadata

    def wrong(self):  # noqa: ANN001, ANN202
        return {**real(self), "mean": "[0.0]"}

    monkeypatch.setattr(openvino.ExportContext, "metadata", wrong, raising=True)
    monkeypatch.setenv("LGP_EDGE_CACHE", str(tmp_path / "cache"))  # the ONNX it converts carries the same error
    out = tmp_path / "out"
    assert export(tiny_pool, out, "--target", "cpu", "--format", "openvino", "--descendant", "ti6.0-5") == 1
    failed = json.loads((tmp_path / "out.failed" / "manifest.json").read_text())
    (art,) = failed["artifacts"]
    assert art["path"] == "model.xml"
    assert not art["validation"]["passed"] and "metadata 'mean'" in art["validation"]["note"], art["validation"]


def test_a_structural_check_alone_is_noted_without_a_leading_separator() -> None:
    """The switchable Core ML package's manifest note read '; model.switchable.mlpackage: structural check ...':
    the separator was added to a note its caller never gave."""
    from lgp_edge.export.manifest import validation_entry

    entry = validation_entry({"images": 0}, [("model.switchable.mlpackage", "structural")], True)
    assert entry["note"].startswith("model.switchable.mlpackage: structural check only here"), entry["note"]
    assert "validate_coreml_switchable.py" in entry["note"]
    both = validation_entry({"note": "real validation images"}, [("model.mlpackage", "structural")], True)
    assert both["note"] == ("real validation images; model.mlpackage: structural check only here (lgp-edge runs no "
                            "Core ML prediction), numerical check with 'python validate_coreml.py' and the files "
                            "beside it, on a Mac")


def test_a_descendant_export_keeps_the_thread_count_its_latency_is_for(env: object, tiny_pool: Path,
                                                                       tmp_path: Path) -> None:
    """`export --descendant KEY --threads 2` recorded the 2-thread latency, but the manifest's selection had no
    thread count, so EMBEDDING.md's Python sample said ONNX Runtime's default (one per core) and the Kotlin one its
    own default of 4."""
    out = tmp_path / "t2"
    assert export(tiny_pool, out, "--target", "android-arm64", "--threads", "2", "--descendant", "ti6.0-5") == 0
    m = manifest(out)
    assert m["selection"]["threads"] == 2
    text = (out / "EMBEDDING.md").read_text()
    assert "so.intra_op_num_threads = 2" in text and "threads = 2" in text.split("LgpClassifier(assets")[1][:200]


def test_a_batch_profiles_latency_is_said_to_be_per_batch(env: object, tiny_pool: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A batch-8 profile's p90 (one call on 8 images) was written "expected p90 latency 2.34 ms" beside "memory at
    batch 8", in EMBEDDING.md, the export's headline and select's chosen line: read as per image, 8x off."""
    d = tmp_path / "profiles"
    d.mkdir()
    src = (Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "profiles" / "cpu.toml").read_text()
    (d / "cpu-b4.toml").write_text(src.replace('name = "cpu"', 'name = "cpu-b4"').replace("batch = 1", "batch = 4"))
    out = tmp_path / "b4"
    assert main(with_options(["export", "--pool", str(tiny_pool), "--out", str(out), "--val-images", VAL,
                              "--profile", "cpu-b4", "--profiles-dir", str(d), "--format", "onnx",
                              "--descendant", "ti6.0-5"])) == 0
    said = capsys.readouterr().out
    assert "ms p90 per batch of 4 images" in said, said
    assert "per batch of 4 images (one call)" in (out / "EMBEDDING.md").read_text()
    assert main(["select", "--pool", str(tiny_pool), "--profile", "cpu-b4", "--profiles-dir", str(d)]) == 0
    assert "ms per batch of 4 images" in capsys.readouterr().out


def test_an_openvino_export_tells_the_app_the_thread_count_its_latency_is_for(env: object, tiny_pool: Path,
                                                                              tmp_path: Path) -> None:
    """The manifest's latency was OpenVINO's at 1 thread, but EMBEDDING.md's compile_model line set no thread
    count (OpenVINO then takes every core) and no LATENCY hint, unlike the profiler that measured it."""
    out = tmp_path / "ov1"
    assert export(tiny_pool, out, "--target", "cpu", "--format", "openvino", "--threads", "1", "--descendant",
                  "ti6.0-5") == 0
    assert manifest(out)["selection"]["threads"] == 1
    text = (out / "EMBEDDING.md").read_text()
    assert '"INFERENCE_NUM_THREADS": 1' in text and '"PERFORMANCE_HINT": "LATENCY"' in text, text


def test_class_names_and_free_text_read_literally_in_embedding_md(env: object, tiny_pool: Path,
                                                                  tmp_path: Path) -> None:
    """A label "Trouser`s" (a class name the pool takes) was wrapped in single backticks: the odd backtick shifted
    every later code span, so the documented output order rendered wrong ("it's \\(x)" as "it's (x)", an
    "<img ...>" label as an HTML element)."""
    import shutil

    from markdown_it import MarkdownIt

    pool = Path(shutil.copytree(tiny_pool, tmp_path / "pool"))
    mf = json.loads((pool / "pool.json").read_text())
    labels = ["Trouser`s", "it's \\(x)", "<img src=x onerror=alert(4)>", "``", *[f"c{i}" for i in range(4, 10)]]
    mf["preprocess"]["labels"] = labels[:len(mf["preprocess"]["labels"])]
    (pool / "pool.json").write_text(json.dumps(mf))
    out = tmp_path / "out"
    assert export(pool, out, "--target", "cpu", "--format", "onnx", "--descendant", "ti6.0-5") == 0
    text = (out / "EMBEDDING.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("Classes, in output order"))
    tokens = MarkdownIt().parseInline(line)[0].children
    assert [t.content for t in tokens if t.type == "code_inline"] == mf["preprocess"]["labels"]
    assert not any(t.type.startswith("html") for t in tokens)


def test_the_headline_and_embedding_say_the_thread_count_of_the_latency(env: object, tiny_pool: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """"cpu -> b6.0-5: ... 6.24 ms p90 (measured, onnxruntime)" and EMBEDDING.md's "expected p90 latency 6.24 ms on
    the target (measured, onnxruntime)" named no thread count, which the latency depends on."""
    out = tmp_path / "t1"
    assert main(with_options(["export", "--pool", str(tiny_pool), "--out", str(out), "--val-images", VAL,
                              "--target", "cpu", "--threads", "1", "--format", "onnx", "--descendant", "ti6.0-5"])) == 0
    head = next(ln for ln in capsys.readouterr().out.splitlines() if "ms p90" in ln)
    assert "onnxruntime, 1 thread)" in head, head
    assert "(predicted, onnxruntime, 1 thread" in (out / "EMBEDDING.md").read_text().split("Classes")[0]


def test_the_kotlin_samples_default_thread_count_is_onnx_runtimes_not_a_fixed_four() -> None:
    """LgpClassifier(bytes) without the `threads =` EMBEDDING.md passes ran at 4 threads, a count no target names
    (android-arm64 runs 5); without it the class leaves ONNX Runtime's default, as the switchable class does."""
    from lgp_edge.export.assets import data_dir

    kt = (data_dir() / "targets" / "android" / "LgpClassifier.kt").read_text()
    assert "threads: Int = 0)" in kt and "if (threads > 0) options.setIntraOpNumThreads(threads)" in kt
