"""lgp-edge export --model NAME --checkpoint FILE: a timm ViT saved here (tiny, random weights) through the same
validated, manifest-writing export, checked in real ONNX Runtime / OpenVINO sessions; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lgp_edge.cli import main

NAME = "lgp_test_tiny"  # a timm VisionTransformer lgp-edge registers (dim 32, 16 px by default)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny ViT, fine-tuned-style at 20 px with a 10-class head, as safetensors and as a timm .pth."""
    import timm
    from safetensors.torch import save_file

    from lgp_edge.models.ancestry import _register_small_variants

    _register_small_variants()
    torch.manual_seed(0)
    model = timm.create_model(NAME, img_size=20, num_classes=10).eval()
    d = tmp_path_factory.mktemp("ckpt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "tiny.safetensors"))
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, d / "tiny.pth")
    torch.save({"state_dict": model.state_dict(), "args": Path("lr=0.1")}, d / "pickled.pth")
    other = timm.create_model(NAME, num_classes=7)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(d / "seven.safetensors"))
    (d / "junk.safetensors").write_bytes(b"not a safetensors file")
    (d / "notes.txt").write_text("lr 0.1, 30 epochs\n")  # not a checkpoint at all (was: "pop from empty list")
    return {"safetensors": d / "tiny.safetensors", "pth": d / "tiny.pth", "pickled": d / "pickled.pth",
            "seven": d / "seven.safetensors", "junk": d / "junk.safetensors", "text": d / "notes.txt"}


def _reference(ckpt: Path, x: np.ndarray) -> np.ndarray:
    from lgp_edge.export.timm_model import build_model

    with torch.no_grad():
        return build_model(NAME, ckpt)(torch.from_numpy(x)).numpy()


def test_export_model_from_safetensors(checkpoints: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort
    import openvino as ov

    out = tmp_path / "out"
    assert main(["export", "--model", NAME, "--checkpoint", str(checkpoints["safetensors"]), "--target", "cpu",
                 "--data", "fashion-mnist", "--out", str(out), "--val-images", "48", "--quiet"]) == 0
    assert f"cpu -> timm:{NAME}" in capsys.readouterr().out
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["status"] == "passed" and mf["pool"] is None and mf["descendant"] is None
    m = mf["model"]
    assert m["key"] == f"timm:{NAME}" and m["name"] == NAME and m["checkpoint"] == str(checkpoints["safetensors"])
    assert m["preprocess_from"] == "dataset fashion-mnist" and m["params"] > 0 and m["flops"] > 0
    assert mf["preprocess"]["img_size"] == 20 and mf["preprocess"]["labels"][0] == "T-shirt/top"  # read off the file
    assert mf["validation"]["data"] == "fashion-mnist" and not mf["validation"]["synthetic"]
    assert {a["format"] for a in mf["artifacts"]} == {"onnx", "openvino"}
    assert all(a["validation"]["passed"] and a["validation"]["max_abs_diff"] < 1e-4 for a in mf["artifacts"])
    x = np.random.default_rng(0).standard_normal((4, 1, 20, 20)).astype(np.float32)
    ref = _reference(checkpoints["safetensors"], x)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(4)])
    assert np.abs(got - ref).max() < 1e-4
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["model"] == NAME and meta["checkpoint_sha256"] == m["checkpoint_sha256"] and "pool_id" not in meta
    compiled = ov.Core().compile_model(str(out / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.abs(compiled(x[:1])[compiled.outputs[0]] - ref[:1]).max() < 1e-4
    text = (out / "EMBEDDING.md").read_text()
    assert f"timm model `{NAME}`" in text and "tiny.safetensors" in text and "pool" not in text.split("\n\n")[1]


def test_a_models_export_says_whether_it_keeps_the_profiles_budgets(checkpoints: dict[str, Path], tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """`--memory-mb` / `--budget-ms` with `--model` were taken without a word: the manifest gave them as the profile
    applied, and no memory figure or fit was recorded (as `--descendant` records them)."""
    out = tmp_path / "out"
    assert main(["export", "--model", NAME, "--checkpoint", str(checkpoints["safetensors"]), "--target", "cpu",
                 "--format", "onnx", "--data", "fashion-mnist", "--out", str(out), "--val-images", "8", "--quiet",
                 "--memory-mb", "0.01"]) == 0
    mf = json.loads((out / "manifest.json").read_text())
    mem = mf["model"]["memory_mb"]
    assert mem > 0.01 and mf["selection"]["memory_mb"] == mem and mf["selection"]["fits_memory"] is False
    # weights alone (fp32) are a floor of the figure
    assert mem * 2 ** 20 >= mf["model"]["params"] * 4
    assert f"timm:{NAME} does not fit profile cpu" in caplog.text and "(--model)" in caplog.text
    assert "model memory about" in (out / "EMBEDDING.md").read_text()


def test_an_openvino_only_model_export_names_the_metadata_keys_its_ir_holds(checkpoints: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """EMBEDDING.md of an OpenVINO-only --model export told the app to read `descendant_key` and `pool_id` from
    the IR, which holds `model` and `checkpoint_sha256` instead: get_rt_info raised on the first."""
    import re

    import openvino as ov

    out = tmp_path / "out"
    assert main(["export", "--model", NAME, "--checkpoint", str(checkpoints["safetensors"]), "--target", "cpu",
                 "--format", "openvino", "--data", "fashion-mnist", "--out", str(out), "--val-images", "48",
                 "--quiet"]) == 0
    (line,) = re.findall(r"constants as metadata\s*\(([^)]*)\)", (out / "EMBEDDING.md").read_text())
    named = re.findall(r"`(\w+)`", line)
    ir = ov.Core().read_model(str(out / "model.xml"))
    assert "mean" in named and "pool_id" not in named and "descendant_key" not in named, line
    assert all(ir.has_rt_info(["model_info", "lgp_edge", k]) for k in named), named


def test_export_model_from_timm_pth_int8(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["export", "--model", NAME, "--checkpoint", str(checkpoints["pth"]), "--target", "android-arm64",
                 "--precision", "int8", "--format", "onnx", "--data", "fashion-mnist", "--out", str(out),
                 "--val-images", "300", "--quiet"]) == 0
    (a,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert a["path"] == "model.int8.onnx" and a["precision"] == "int8" and a["validation"]["passed"]
    assert a["quantization"]["calibration_data"] == "fashion-mnist (training split)"
    # Independent of lgp-edge's loader: the .pth reads back as the fixture's own weights (as safetensors wrote
    # them), and the int8 ONNX agrees with the fixture's timm model rebuilt from those weights by timm itself.
    import onnxruntime as ort
    import timm
    from safetensors.torch import load_file

    from lgp_edge.datasets import open_data
    from lgp_edge.models.ancestry import read_state_dict

    own = load_file(str(checkpoints["safetensors"]))
    loaded = read_state_dict(checkpoints["pth"])
    assert loaded.keys() == own.keys() and all(torch.equal(loaded[k], own[k]) for k in own)
    model = timm.create_model(NAME, img_size=20, num_classes=10).eval()
    model.load_state_dict(own, strict=True)
    val = open_data("fashion-mnist", img_size=20, in_chans=1).val
    x = torch.stack([val[i][0] for i in range(64)]).numpy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9  # int8 quantization noise only (1.0 measured)
    assert np.abs(got - ref).max() < 0.05  # ~0.007 measured; logits span ~0.3, wrong weights are off by ~0.4


def test_stock_timm_vit_without_data_is_a_labelled_numerical_check(tmp_path: Path) -> None:
    """deit_tiny_patch16_224 fine-tuned at 32 px with a 10-class head: shapes read off the checkpoint, mean/std from
    its timm pretrained_cfg, validation on synthetic images (said so)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", img_size=32, num_classes=10).eval()
    ckpt = tmp_path / "deit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    out = tmp_path / "out"
    assert main(["export", "--model", "deit_tiny_patch16_224", "--checkpoint", str(ckpt), "--target", "cpu",
                 "--format", "onnx,openvino", "--out", str(out), "--val-images", "8", "--quiet"]) == 0
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["validation"]["synthetic"] and mf["model"]["preprocess_from"] == "timm pretrained_cfg"
    pre = mf["preprocess"]
    assert pre["img_size"] == 32 and pre["in_chans"] == 3 and pre["mean"] == [0.485, 0.456, 0.406]
    assert pre["labels"][3] == "class_3" and mf["model"]["timm_pretrained_cfg"]["crop_pct"] == 0.9
    assert all(a["validation"]["passed"] for a in mf["artifacts"])
    text = (out / "EMBEDDING.md").read_text()
    assert "synthetic images" in text
    # the files' own preprocessing rule says the crop too, and the IR holds no OpenVINO Model API keys, whose
    # resize (the whole image, or a square crop) cannot be timm's crop_pct: an app trusting them resized otherwise
    import onnx
    import openvino as ov

    rule = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}["preprocess"]
    assert "shorter side resized to 35" in rule and "central 32 x 32" in rule, rule
    ir = ov.Core().read_model(str(out / "model.xml"))
    assert ir.get_rt_info(["model_info", "lgp_edge", "preprocess"]).astype(str) == rule
    assert not ir.has_rt_info(["model_info", "resize_type"]) and not ir.has_rt_info(["model_info", "model_type"])
    assert "crop_pct" in text.split("## OpenVINO", 1)[1] and "no glue" not in text
    # the resize the manifest's timm config describes (bicubic, crop_pct 0.9), not "the whole image, no crop"
    assert "Resize the shorter side to 35 pixels (bicubic), then crop the central 32 x 32" in text
    assert "no crop" not in text
    # ... and the Python snippet does that transform (it resized the whole image, bilinear)
    import re
    import shutil
    import subprocess
    import sys

    import onnxruntime as ort
    from PIL import Image

    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "scale = 35 / min(img.size)" in code and "Image.BICUBIC" in code and "img.crop(" in code
    rgb = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    shutil.copyfile(out / "model.onnx", tmp_path / "model.onnx")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    img = Image.fromarray(rgb).resize((35, round(50 * 35 / 40)), Image.BICUBIC)  # timm's eval transform by hand
    left, top = (img.width - 32) // 2, (img.height - 32) // 2
    x = (np.asarray(img.crop((left, top, left + 32, top + 32)), np.float32) / 255 - pre["mean"]) / pre["std"]
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
    assert res.stdout.split() == ["photo.png", pre["labels"][int(want.argmax())]]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "vit_no_such_model", "--checkpoint", "{safetensors}"], "is not a timm ViT lgp-edge knows"),
    (["--model", NAME], "--model needs --checkpoint PATH"),
    (["--checkpoint", "{safetensors}"], "--checkpoint goes with --model"),
    (["--model", NAME, "--checkpoint", "{safetensors}", "--pool", "{safetensors}"], "--pool selects from a pool"),
    (["--model", NAME, "--checkpoint", "{safetensors}", "--descendant", "b6.0-5"], "--descendant selects"),
    (["--model", NAME, "--checkpoint", "{missing}"], "does not exist"),
    (["--model", NAME, "--checkpoint", "{junk}"], "is not a readable safetensors file"),
    (["--model", NAME, "--checkpoint", "{pickled}"], "a pickle of arbitrary objects is never loaded"),
    (["--model", NAME, "--checkpoint", "{text}"], "is neither a safetensors file nor a torch checkpoint"),
    (["--model", "deit_tiny_patch16_224", "--checkpoint", "{safetensors}"], "does not fit timm model"),
    (["--model", NAME, "--checkpoint", "{seven}", "--data", "fashion-mnist"], "has 10 classes; the checkpoint's"),
    (["--model", NAME, "--checkpoint", "{safetensors}"], "pass --data"),
    (["--model", NAME, "--checkpoint", "{safetensors}", "--data", "mnist"], "unknown --data"),
    (["--model", NAME, "--checkpoint", "{safetensors}", "--precision", "int8", "--data", "synthetic"],
     "int8 calibrates on real training images"),
])
def test_export_model_bad_input_exits_2_and_writes_nothing(checkpoints: dict[str, Path], tmp_path: Path,
                                                           args: list[str], message: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    paths = {k: str(v) for k, v in checkpoints.items()} | {"missing": str(tmp_path / "missing.safetensors")}
    work = tmp_path / "work"
    work.mkdir()
    argv = ["export", "--target", "cpu", "--out", str(work / "out"), "--quiet", *[a.format(**paths) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(work.iterdir()) == []


def test_measured_latency_of_the_stock_model_is_not_given_to_another_shape(checkpoints: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """The store names a stock timm model `timm:NAME` (profile --model); a checkpoint of the same name at another
    input size or head is another network: its manifest carried the stock model's 57.9 ms, 8x what it takes."""
    import dataclasses

    from lgp_edge.profiling.store import MeasurementStore
    from lgp_edge.specs import LatencyRecord

    store = tmp_path / "s.sqlite"
    rec = LatencyRecord(descendant_key=f"timm:{NAME}", target="cpu", runtime="onnxruntime", precision="fp32",
                        batch=1, median_ms=57.0, p90_ms=57.9, p99_ms=60.0, mean_ms=57.0, std_ms=0.1, cv=0.01, n=50,
                        warmup=5, threads=1, source="measured", when="2026-01-01T00:00:00+00:00", tool_versions={})
    with MeasurementStore(store) as s:
        s.put(rec)
        s.put(dataclasses.replace(rec, runtime="openvino"))
    out = tmp_path / "out"
    assert main(["export", "--model", NAME, "--checkpoint", str(checkpoints["safetensors"]), "--target", "cpu",
                 "--data", "fashion-mnist", "--out", str(out), "--val-images", "8", "--store", str(store),
                 "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["model"]["expected_latency_ms"] is None  # 20 px, not 16
    stock = tmp_path / "stock.safetensors"
    import timm
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in timm.create_model(NAME).state_dict().items()}, str(stock))
    out2 = tmp_path / "out2"
    assert main(["export", "--model", NAME, "--checkpoint", str(stock), "--target", "cpu", "--data", "fashion-mnist",
                 "--out", str(out2), "--val-images", "8", "--store", str(store), "--quiet"]) == 0
    assert json.loads((out2 / "manifest.json").read_text())["model"]["expected_latency_ms"] == 57.9  # the same net


def test_a_models_latency_is_the_aggregate_of_this_hosts_calm_runs_at_the_profiles_threads(
        checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """export --model took the newest single run of the model whatever its thread count, machine or noise: one
    noisy 1-thread run of another machine (9.9 ms) was the manifest's latency of a 2-thread export on this host,
    whose three calm runs took about 1 ms. A pool's descendants are read by the store's rules (recent runs of this
    machine at the profile's threads, noisy ones left out, their median); a model now is too."""
    import dataclasses

    import timm
    from safetensors.torch import save_file

    from lgp_edge.profiling.host import host_versions
    from lgp_edge.profiling.store import MeasurementStore
    from lgp_edge.specs import LatencyRecord

    stock = tmp_path / "stock.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(NAME).state_dict().items()}, str(stock))
    here = LatencyRecord(descendant_key=f"timm:{NAME}", target="cpu", runtime="onnxruntime", precision="fp32",
                         batch=1, median_ms=1.0, p90_ms=1.1, p99_ms=1.2, mean_ms=1.0, std_ms=0.01, cv=0.01, n=50,
                         warmup=5, threads=2, source="measured", when="2026-11-01T00:00:00+00:00",
                         tool_versions={"lgp-edge": "0.1.0", **host_versions()})
    runs = [dataclasses.replace(here, median_ms=1.0 + d / 100, p90_ms=1.1 + d / 100,
                                when=f"2026-11-0{d}T00:00:00+00:00") for d in (1, 2, 3)]
    elsewhere = dataclasses.replace(here, median_ms=9.0, p90_ms=9.9, p99_ms=12.0, threads=1, noisy=True,
                                    when="2026-12-01T00:00:00+00:00",
                                    tool_versions={"lgp-edge": "0.1.0", "host_cpu": "Apple M1 (another laptop)",
                                                   "host_logical_cpus": "8"})
    store = tmp_path / "s.sqlite"
    with MeasurementStore(store) as s:
        s.put_many([*runs, elsewhere])
    for extra in (["--threads", "2"], []):
        out = tmp_path / f"out{len(extra)}"
        assert main(["export", "--model", NAME, "--checkpoint", str(stock), "--target", "cpu", "--format", "onnx",
                     "--data", "fashion-mnist", "--out", str(out), "--val-images", "8", "--store", str(store),
                     *extra, "--quiet"]) == 0
        model = json.loads((out / "manifest.json").read_text())["model"]
        assert model["expected_latency_ms"] == pytest.approx(1.12), extra  # the median of the calm runs' p90
        assert model["latency_noisy"] is False


# ---------------------------------------------------------------------- a damaged ancestry.json beside the weights
SHIPPED = Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "ancestry" / "lgp_vit_fmnist"


def _edited_ancestry(root: Path, edit) -> Path:
    """A copy of the shipped lgp_vit_fmnist ancestry whose ancestry.json was edited by ``edit(meta)``."""
    import shutil

    d = Path(shutil.copytree(SHIPPED, root / "anc"))
    meta = json.loads((d / "ancestry.json").read_text())
    edit(meta)
    (d / "ancestry.json").write_text(json.dumps(meta))  # allow_nan: NaN / Infinity literals as a hand edit can
    return d


def _pre(**changes):
    return lambda m: m["preprocess"].update(changes)


def _no_data_pre(**changes):
    def edit(m: dict) -> None:
        m.pop("data")
        m["preprocess"].update(changes)
    return edit


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda m: m.update(top1=-42.5), "top1 -42.5"),
    (lambda m: m.update(top1=1e308), "top1 1e+308"),
    (lambda m: m.update(top1=float("nan")), "top1 nan"),
    (lambda m: m.update(top1="ninety"), "top1 'ninety'"),
    (lambda m: m.update(top1=True), "top1 True"),
    (lambda m: m.update(val_images=0), "val_images 0"),
    (lambda m: m.update(val_images=2.5), "val_images 2.5"),
    (lambda m: m["initial_checkpoint"].update(top1=150), "initial_checkpoint.top1 150"),
    (lambda m: m.update(data=5), "data 5"),
    (_no_data_pre(std=[0.0]), "preprocess.std[0] 0.0"),
    (_no_data_pre(mean=[-1e300]), "preprocess.mean[0] -1e-300".replace("-1e-300", "-1e+300")),
    (_no_data_pre(mean=[float("inf")]), "preprocess.mean[0] inf"),
    (_no_data_pre(std="0.3"), "preprocess.std '0.3'"),
    # accepted here, refused in the pool.json a pool build wrote from it: every later command refused the pool
    (_no_data_pre(std=[1.5]), "preprocess.std[0] 1.5"),
    (_no_data_pre(mean=[-0.5]), "preprocess.mean[0] -0.5"),
    (_no_data_pre(mean=[123.675], std=[58.395]), "preprocess.mean[0] 123.675"),  # of 0..255 pixels: wrong, silently
    (_no_data_pre(mean=[0.1, 0.2], std=[0.3, 0.3]), "preprocess.mean has 2 values for 1 input channel"),
    (_no_data_pre(labels=["a", "b", "c"]), "preprocess.labels has 3 names for 10 classes"),
    (_pre(labels=["a"] * 10), "preprocess.labels names 'a' twice"),
    (_pre(labels=[*"abcdefghi", 7]), "preprocess.labels[9] 7"),
    # consistent in itself (a 3-class spec), but the checkpoint's head has 10 classes
    (lambda m: (m["spec"].update(num_classes=3), m.pop("data"), m["preprocess"].update(labels=["a", "b", "c"])),
     "3 classes but the checkpoint's head has 10"),
], ids=["top1-negative", "top1-huge", "top1-nan", "top1-string", "top1-bool", "val-images-zero",
        "val-images-fraction", "initial-top1", "data-number", "std-zero", "mean-huge", "mean-inf", "std-string",
        "std-above-one", "mean-negative", "constants-of-0-255-pixels",
        "mean-channels", "labels-count", "labels-twice", "labels-not-string", "labels-vs-head"])
def test_a_damaged_ancestry_json_is_refused_before_the_export(edit, fragment: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """What an ancestry.json says reaches the manifest, EMBEDDING.md and the app's preprocessing: a top-1 of
    -42.5% or 1e308%, a std of 0, 3 labels for a 10-class head were exported (exit 0); "ninety" ended in a
    traceback after the validation. Each is one line naming the file and the field, exit 2, nothing written."""
    from helpers import error_lines, run_cli, snapshot

    anc = _edited_ancestry(tmp_path, edit)
    before = snapshot(tmp_path)
    rc, err = run_cli(["export", "--model", "lgp_vit_fmnist", "--checkpoint", str(anc), "--target", "cpu", "--out",
                       str(tmp_path / "out"), "--val-images", "100", "--format", "onnx", "--quiet"], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "ancestry.json" in lines[0] and fragment in lines[0], err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("edit", [lambda m: m.update(top1=0), lambda m: m.update(top1=100),
                                  lambda m: m.update(top1=None), lambda m: m.pop("top1"),
                                  lambda m: m.pop("preprocess"), lambda m: m.clear()],
                         ids=["top1-0", "top1-100", "top1-null", "no-top1", "no-preprocess", "empty"])
def test_valid_ancestry_json_values_are_read(edit, tmp_path: Path) -> None:
    from lgp_edge.models.ancestry import read_ancestry_dir

    anc = _edited_ancestry(tmp_path, edit)
    assert read_ancestry_dir(anc) == json.loads((anc / "ancestry.json").read_text())


def test_a_gap_vit_exports_at_opset_17(tmp_path: Path) -> None:
    """timm's GAP ViTs (``global_pool="avg"``, no class token, e.g. vit_base_patch16_gap_224): torch's dynamo
    exporter cannot lower their ReduceMean to opset 17 and quietly kept 18, and the export failed after a minute
    with 'the ONNX exporter produced opset 18'. The TorchScript exporter takes it at the requested opset."""
    import onnx
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from lgp_edge.export.onnx_export import export_onnx
    from lgp_edge.export.sessions import ort_runner

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=32, depth=1,
                              num_heads=2, global_pool="avg", class_token=False).eval()
    x = torch.randn(2, 1, 16, 16)
    path = export_onnx(model, x[:1], tmp_path / "m.onnx", opset=17, ship=True, cache=False)
    (op,) = [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")]
    assert op == 17
    with torch.no_grad():
        ref = model(x[:1]).numpy()
    assert abs(ort_runner(str(path))(x[:1].numpy()) - ref).max() < 1e-4


def test_a_centre_crop_of_crop_pct_1_is_a_crop_too() -> None:
    """crop_pct 1.0 with a centre crop (vit_small_patch16_384's config) is timm's Resize(shorter side) then
    CenterCrop: the docs and the files said "the whole image, no crop"."""
    from lgp_edge.export.embedding import timm_crop

    m = {"model": {"preprocess_from": "timm pretrained_cfg",
                   "timm_pretrained_cfg": {"crop_pct": 1.0, "crop_mode": "center", "interpolation": "bicubic"}}}
    assert timm_crop(m) == (1.0, "bicubic")
    m["model"]["timm_pretrained_cfg"]["crop_mode"] = "squash"
    assert timm_crop(m) is None


def test_phone_exports_of_a_centre_crop_model_say_the_crop(tmp_path: Path) -> None:
    """Core ML's package rule said "resized to img_size", EMBEDDING.md's Swift section "no crop, as in training"
    and its Android section that the Kotlin sample (which scales the whole bitmap) "does the preprocessing
    above", for a model evaluated with timm's centre crop."""
    import timm
    from safetensors.torch import save_file

    from lgp_edge.export.coreml import package_rule

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", img_size=32, num_classes=10).eval()
    ckpt = tmp_path / "deit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    assert "central 32 x 32" in package_rule((0.9, "bicubic"), 32) and "crop" not in package_rule(None, 32)
    out = tmp_path / "android"
    assert main(["export", "--model", "deit_tiny_patch16_224", "--checkpoint", str(ckpt), "--target",
                 "android-arm64", "--out", str(out), "--val-images", "8", "--quiet"]) == 0
    android = (out / "EMBEDDING.md").read_text().split("## Android", 1)[1]
    assert "does the preprocessing above" not in android and "crop" in android.split("```", 1)[0], android[:900]


def test_a_distilled_deits_flops_are_not_the_one_token_formulas() -> None:
    """A distilled DeiT (two prefix tokens, a second head) got the one-token ViT's FLOPs (17% low at 32 px)."""
    import timm

    from lgp_edge.export.timm_model import _model_size

    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, in_chans=1,
                              num_classes=10, depth=2)
    params, flops, blocks = _model_size(model)
    assert params > 0 and blocks == 2 and flops is None


def test_an_exporter_failure_is_one_plain_line() -> None:
    """torch's exporter colours its messages and ends its first line with "Next steps:": the refusal carried the
    escape codes and stopped at that colon."""
    import torch

    from lgp_edge.errors import ExportError
    from lgp_edge.export import onnx_export

    def failing(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("Failed to decompose the FX graph for ONNX compatibility. \x1b[96mThis is step 2/3\x1b[0m "
                           "of exporting the model to ONNX. Next steps:\n- Create an issue")

    with pytest.raises(ExportError) as exc:
        onnx_export._raw(failing, torch.nn.Identity(), torch.zeros(1, 1, 4, 4), opset=17, dynamic_batch=False)
    msg = str(exc.value)
    assert "\x1b" not in msg and "[96m" not in msg and not msg.rstrip().endswith(":"), msg
    assert "Failed to decompose the FX graph" in msg and "This is step 2/3 of exporting the model to ONNX" in msg


@pytest.mark.parametrize(("name", "kwargs", "needle"), [
    ("vit_small_patch16_dinov3", {"img_size": 32, "depth": 1}, "is a timm Eva, not a VisionTransformer"),
    ("vit_tiny_r_s16_p8_224", {"img_size": 32, "num_classes": 10}, "HybridEmbed (a CNN stem)"),
])
def test_a_vit_name_export_model_cannot_take_is_one_line_before_any_work(name: str, kwargs: dict, needle: str,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An Eva (rotary embeddings) failed inside torch's exporter after the images were loaded; a hybrid ended in a
    traceback from timm (its patch size is on the CNN's features) or read its 64 feature channels as image ones."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model(name, pretrained=False, **kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    out = tmp_path / "out"
    rc = main(["export", "--model", name, "--checkpoint", str(tmp_path / "m.safetensors"), "--target", "cpu",
               "--format", "onnx", "--data", "fashion-mnist", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1 and not out.exists(), err


def test_an_iphones_onnx_is_not_described_as_an_android_file(checkpoints: dict[str, Path], tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The iphone target (Core ML) described its ONNX file as onnxruntime-android's, with a Kotlin sample; and
    with no measurement store, a --model export warned that "every latency is predicted" (none is)."""
    out = tmp_path / "out"
    assert main(["export", "--model", NAME, "--checkpoint", str(checkpoints["safetensors"]), "--target", "iphone",
                 "--precision", "fp32", "--format", "onnx", "--data", "fashion-mnist", "--out", str(out),
                 "--val-images", "8", "--quiet", "--store", str(tmp_path / "none.sqlite")]) == 0
    mf = json.loads((out / "manifest.json").read_text())
    assert "android" not in mf["artifacts"][0]["note"].lower()
    assert "Kotlin" not in (out / "EMBEDDING.md").read_text() and not (out / "samples").exists()
    assert "every latency is predicted" not in caplog.text and "the model's latency is unknown" in caplog.text
    # an unknown latency is not a budget missed
    assert "does not fit" not in caplog.text and mf["selection"]["fits_latency"] is None


def test_an_eva_snapshot_gets_the_eva_refusal_not_a_config_complaint(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A valid Eva snapshot's model_args were checked against VisionTransformer's and called wrong ("correct it")."""
    import timm
    from safetensors.torch import save_file

    args = {"img_size": 32, "depth": 1, "use_rot_pos_emb": True}
    model = timm.create_model("vit_small_patch16_dinov3", pretrained=False, **args)
    snap = tmp_path / "snap"
    snap.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps({"architecture": "vit_small_patch16_dinov3", "model_args": args}))
    rc = main(["export", "--model", "vit_small_patch16_dinov3", "--checkpoint", str(snap), "--target", "cpu",
               "--format", "onnx", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a timm Eva" in err and "correct it" not in err, err
