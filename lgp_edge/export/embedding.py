"""``EMBEDDING.md``: how to load and call the exported model in an app, with the exact preprocessing.

Rendered from the manifest (so every number in it is the export's own) and from the artifacts themselves
(input and output names, shapes, metadata keys, Core ML image input and classifier outputs, OpenVINO Model
API keys: each format's section describes the file as written), and written beside the artifacts,
together with the sample sources from ``targets/ios`` (Swift, Core ML) and ``targets/android`` (Kotlin,
ONNX Runtime Android) when the export has a Core ML or an .ort artifact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

SAMPLES = {"swift": ("ios", "LgpClassifier.swift"), "kotlin": ("android", "LgpClassifier.kt")}

ORT_ANDROID_VERSION = "1.20.0"  # pinned in EMBEDDING.md and targets/android/LgpClassifier.kt alike
ORT_MIN = "1.16"  # the .ort files written here are ORT format v6, which ONNX Runtime reads from 1.16 on

HEADER = """# Embedding {key} in an app

Exported by lgp-edge {version} for profile **{profile}** (target `{target}`, {runtime_version}).
Descendant `{key}` of pool `{pool_id}`: {params:,} parameters, {mflops:.1f} MFLOPs, top-1 {top1},
expected p90 latency {latency} on the target ({source}).
Check `manifest.json` for the files' sha256 and the validation figures. {data_note}

Classes, in output order: {labels}.
"""

TENSOR = """
## Preprocessing ({formats})

Read from the artifact: the model takes one {layout} float32 tensor `{input}` of shape {shape}: {chans},
{size} x {size} pixels, and returns `{output}` ({out_shape}): one logit per class.

1. Resize the whole image to {size} x {size} (bilinear, no crop).
2. {chan_step}
3. For each channel c: `x = (pixel / 255 - mean[c]) / std[c]` with
   mean = {mean} and std = {std}.
4. Lay the values out as {layout} (all of channel 0, then channel 1, ...), row by row.

Apply softmax to `{output}` for probabilities. The file carries the same constants as metadata
({meta_keys}): read them from the model instead of copying them.
"""

PYTHON = """
## Python (ONNX Runtime), to check the model on a desktop

```python
import json, numpy as np, onnxruntime as ort
from PIL import Image

sess = ort.InferenceSession("{onnx}")
meta = sess.get_modelmeta().custom_metadata_map
mean, std = np.array(json.loads(meta["mean"])), np.array(json.loads(meta["std"]))
size, labels = int(meta["img_size"]), json.loads(meta["labels"])
img = Image.open("photo.png").convert("RGB").resize((size, size), Image.BILINEAR)
x = np.asarray(img, dtype=np.float32) / 255.0  # H, W, 3
if int(meta["in_chans"]) == 1:
    x = x.mean(-1, keepdims=True)  # grayscale: the mean of R, G and B
x = ((x - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
logits = sess.run(None, {{"{input}": x}})[0][0]
print(labels[int(logits.argmax())])
```
"""

KOTLIN = """
## Android (Kotlin, ONNX Runtime Android)

`{model}` needs ONNX Runtime >= {ort_min} (`.ort` format v6). Add
`implementation("com.microsoft.onnxruntime:onnxruntime-android:{ort_version}")` (the version this export
and `samples/LgpClassifier.kt` are written for) to the app's Gradle file and copy `{model}` into
`app/src/main/assets/`. `samples/LgpClassifier.kt` does the preprocessing above
with the constants it reads from the model's metadata:

```kotlin
val classifier = LgpClassifier(assets.open("{model}").readBytes())
val (label, probability) = classifier.classify(bitmap).first()
classifier.close()
```

The core of it: `OrtEnvironment.getEnvironment().createSession(bytes, OrtSession.SessionOptions())`,
`OnnxTensor.createTensor(env, floatBuffer, longArrayOf(1, {chans_n}, {size}, {size}))`,
`session.run(mapOf("{input}" to tensor))`, `(result[0].value as Array<FloatArray>)[0]` = `{output}`.
{ort_note}
"""

SWIFT = """
## iOS (Swift, Core ML)

Read from `{path}`: an ML program (specification version {spec_version}, minimum deployment target
{deployment}) with one image input `{input}` ({size} x {size}, {color}) and the classifier outputs
`{label_out}` (the best class) and `{probs_out}` (class -> probability, softmax). The normalisation is inside
the model: the image input applies `scale * pixel + bias` = `(pixel / 255 - mean) / std`, so the app hands
it plain pixels and must not normalise them. {gray}

Add `{path}` to the Xcode target (Xcode compiles it to `model.mlmodelc`). `samples/LgpClassifier.swift`
(iOS 17+) resizes the whole image to {size} x {size} (no crop, as in training){gray_sample} and calls the model:

```swift
let url = Bundle.main.url(forResource: "model", withExtension: "mlmodelc")!
let classifier = try LgpClassifier(modelURL: url)
let best = try classifier.classify(cgImage).first   // (label, probability)
```

Compute precision {precision}. Core ML cannot run on Linux, so this export was checked structurally; on a
Mac, `python validate_coreml.py` compares it with torch on the {n_images} validation images in
`coreml_validation.npz`.
"""

TENSORRT = """
## NVIDIA Jetson (TensorRT)

Copy this directory to the board and build the engine there (engines are specific to a GPU and a
TensorRT version): `sh build_engine.sh` writes `model.plan` ({precision}; the LayerNorm and softmax
layers listed in `fp32_layers.txt` stay in fp32). Time it with
`trtexec --loadEngine=model.plan --iterations=200 --percentile=90`. `bench.sh` is the profiler's device
script (`sh bench.sh {onnx} {precision} 200 500`): it builds its own plain `--{precision}` engine and saves
it as `model.plan`, so run it before `build_engine.sh` or in a copy of this directory.
In C++ or Python, deserialize `model.plan` with `IRuntime::deserializeCudaEngine`, bind `{input}`
({shape}) and `{output}`, and feed tensors preprocessed as above.
"""

OPENVINO = """
## OpenVINO (C++/Python)

`core.compile_model("model.xml", "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})`: without the hint, CPUs
with bf16 support run bf16 (faster, about 1e-2 off). Precision of this IR: {precision}. {int8_note}
Input `{input}` {shape}, output `{output}`, preprocessed as above.

OpenVINO Model API: the IR's `rt_info` holds {model_api}, so
`model_api.models.Model.create_model("model.xml")` loads it as a classifier with no glue code (it resizes and
normalises 0..255 pixels itself). lgp-edge's own metadata is under `model_info/lgp_edge`.
"""


def _fmt_latency(manifest: dict[str, Any]) -> tuple[str, str]:
    d = manifest["descendant"]
    if d.get("expected_latency_ms") is None:
        return "unknown", "no latency record"
    return f"{d['expected_latency_ms']:.3g} ms", f"{d['latency_source']}, {d.get('latency_runtime')}"


def _data_note(data: str, synthetic: bool) -> str:
    if synthetic:
        return "**This pool was trained on synthetic data: its predictions mean nothing.**"
    if data == "fashion-mnist":
        return ("The pool was trained on Fashion-MNIST: centred product photos, light object on a black "
                "background. Camera images need the same look (crop to the object, dark background) to be "
                "recognised.")
    return f"The pool was trained on `{data}`."


GRAY_DOC = ("Convert to grayscale as the mean of R, G and B (the training loader's conversion; not a "
            "luminance weighting).")


def _tensor_io(path: Path) -> dict[str, Any]:
    """Input/output names and shapes and metadata keys of an ONNX or .ort file, from ONNX Runtime."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    i, o = sess.get_inputs()[0], sess.get_outputs()[0]
    return {"input": i.name, "shape": "x".join(str(d) for d in i.shape), "output": o.name,
            "out_shape": "x".join(str(d) for d in o.shape),
            "meta_keys": sorted(sess.get_modelmeta().custom_metadata_map)}


def _openvino_io(path: Path) -> dict[str, Any]:
    import openvino as ov

    m = ov.Core().read_model(str(path))
    keys = [k for k in ("model_type", "labels", "mean_values", "scale_values", "resize_type",
                        "reverse_input_channels") if m.has_rt_info(["model_info", k])]
    return {"input": m.inputs[0].get_any_name(), "shape": "x".join(str(d) for d in m.inputs[0].get_partial_shape()),
            "output": m.outputs[0].get_any_name(), "model_api": keys}


def _coreml_io(path: Path) -> dict[str, Any]:
    """The .mlpackage's interface, read from its spec."""
    import coremltools as ct

    from lgp_edge.export.coreml import SPEC_VERSION

    spec = ct.utils.load_spec(str(path))
    (inp,) = spec.description.input
    img = inp.type.imageType
    space = img.ColorSpace.Name(img.colorSpace)
    ios = sorted(k for k, v in SPEC_VERSION.items() if k.startswith("iOS") and v == spec.specificationVersion)
    return {"input": inp.name, "kind": inp.type.WhichOneof("Type"), "width": img.width, "height": img.height,
            "color": {"GRAYSCALE": "grayscale", "RGB": "RGB", "BGR": "BGR"}.get(space, space),
            "label_out": spec.description.predictedFeatureName,
            "probs_out": spec.description.predictedProbabilitiesName,
            "spec_version": spec.specificationVersion,
            "deployment": (f"iOS {ios[0][3:]}" if ios else f"specification {spec.specificationVersion}")}


def _fallback_io(a: dict[str, Any]) -> dict[str, Any]:
    """The interface as the manifest records it (when the artifact is not at hand)."""
    i, o = a["inputs"][0], a["outputs"][0]
    return {"input": i["name"], "shape": "x".join(str(d) for d in i["shape"]), "output": o["name"],
            "out_shape": "x".join(str(d) for d in o["shape"]), "meta_keys": [], "model_api": []}


def render(manifest: dict[str, Any], out_dir: str | Path | None = None) -> str:
    """EMBEDDING.md for an export; with ``out_dir``, each format's interface is read from its artifact."""
    pre, d, prof = manifest["preprocess"], manifest["descendant"], manifest["profile"]
    arts = {a["format"]: a for a in manifest["artifacts"]}
    root = Path(out_dir) if out_dir is not None else None

    def io(fmt: str) -> dict[str, Any]:
        a = arts[fmt]
        if root is None:
            return _fallback_io(a)
        path = root / a["path"]
        if fmt == "openvino":
            return _openvino_io(path)
        return _tensor_io(path)

    chans = pre["in_chans"]
    latency, source = _fmt_latency(manifest)
    synthetic = manifest["pool"]["synthetic_data"]
    text = HEADER.format(
        key=d["key"], version=manifest["versions"].get("lgp-edge", "?"), profile=prof["name"],
        target=manifest["target"]["name"], runtime_version=manifest["target"]["runtime_version"],
        pool_id=manifest["pool"]["pool_id"], params=d["params"], mflops=d["flops"] / 1e6,
        top1=f"{d['top1']:.2f}%" if d.get("top1") is not None else "not evaluated", latency=latency, source=source,
        labels=", ".join(f"{i} `{lab}`" for i, lab in enumerate(pre["labels"])),
        data_note=_data_note(manifest["pool"]["data"], synthetic))
    tensor_fmts = [f for f in ("onnx", "ort", "tensorrt", "openvino") if f in arts]
    if tensor_fmts:
        first = next(f for f in ("onnx", "ort", "tensorrt") if f in arts) if set(tensor_fmts) - {"openvino"} \
            else "openvino"
        t = io(first)
        names = {"onnx": "ONNX", "ort": ".ort", "tensorrt": "TensorRT", "openvino": "OpenVINO"}
        meta_keys = t.get("meta_keys") or ["img_size", "in_chans", "mean", "std", "labels", "descendant_key",
                                           "pool_id"]
        text += TENSOR.format(
            formats=", ".join(names[f] for f in tensor_fmts), layout=pre["layout"], input=t["input"],
            shape=t["shape"], output=t["output"], out_shape=t.get("out_shape", f"1x{len(pre['labels'])}"),
            chans="1 channel (grayscale)" if chans == 1 else f"{chans} channels (RGB)", size=pre["img_size"],
            chan_step=GRAY_DOC if chans == 1 else "Keep R, G, B in that order (no BGR).",
            mean=list(pre["mean"]), std=list(pre["std"]),
            meta_keys=", ".join(f"`{k}`" for k in meta_keys if k in
                                ("img_size", "in_chans", "mean", "std", "labels", "descendant_key", "pool_id")))
    onnx_like = "onnx" if "onnx" in arts else ("tensorrt" if "tensorrt" in arts else None)
    if onnx_like is not None:
        text += PYTHON.format(onnx=arts[onnx_like]["path"], input=io(onnx_like)["input"])
    if "ort" in arts:  # a phone export: the Android section and sample
        t = io("ort")
        text += KOTLIN.format(model=arts["ort"]["path"], chans_n=chans, size=pre["img_size"], input=t["input"],
                              output=t["output"], ort_min=ORT_MIN, ort_version=ORT_ANDROID_VERSION,
                              ort_note=("`.ort` is ONNX Runtime's mobile format (pre-optimised); "
                                        "`model.required_operators.config` builds a reduced ONNX Runtime for it."))
    if "coreml" in arts:
        a = arts["coreml"]
        if root is not None:
            c = _coreml_io(root / a["path"])
        else:
            i = a["inputs"][0]
            deployment = a["note"].split("minimum deployment target ")[-1].split(";")[0]
            c = {"input": i["name"], "width": i["shape"][-1], "height": i["shape"][-2], "color": i.get("color", ""),
                 "label_out": a["outputs"][0]["name"], "probs_out": a["outputs"][1]["name"], "spec_version": "?",
                 "deployment": deployment}
        gray = c["color"] == "grayscale"
        text += SWIFT.format(path=a["path"], spec_version=c["spec_version"], deployment=c["deployment"],
                             input=c["input"], size=c["width"], color=c["color"], label_out=c["label_out"],
                             probs_out=c["probs_out"],
                             gray=("A grayscale model takes one 8-bit channel: make it the mean of R, G and B, as "
                                   "the training loader did (Vision's own conversion weights by luminance instead, "
                                   "so the sample converts the image itself)." if gray else ""),
                             gray_sample=", converts it to gray as the mean of R, G and B" if gray else "",
                             precision=a["precision"], n_images=manifest["validation"]["images"])
    if "tensorrt" in arts:
        a = arts["tensorrt"]
        t = io("tensorrt")
        text += TENSORRT.format(precision=a["precision"], onnx=a["path"], input=t["input"], shape=t["shape"],
                                output=t["output"])
    if "openvino" in arts:
        a = arts["openvino"]
        t = io("openvino")
        v = a.get("validation") or {}
        int8 = (f"int8 top-1 change vs torch fp32 on {v.get('images')} images: {v.get('top1_change'):+.2f} points."
                if a["precision"] == "int8" and v.get("top1_change") is not None else "")
        keys = t.get("model_api") or []
        text += OPENVINO.format(precision=a["precision"], int8_note=int8, input=t["input"], shape=t["shape"],
                                output=t["output"],
                                model_api=", ".join(f"`{k}`" for k in keys) if keys else "no Model API keys")
    return text


def samples_for(formats: set[str]) -> list[str]:
    out = []
    if "coreml" in formats:
        out.append("swift")
    if "ort" in formats:  # the Android sample goes with the phone format only
        out.append("kotlin")
    return out


def samples_root() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "targets"


def copy_samples(out_dir: Path, formats: set[str]) -> list[str]:
    """Copy the app samples that fit the exported formats into ``out_dir/samples``; relative paths."""
    written = []
    for lang in samples_for(formats):
        sub, name = SAMPLES[lang]
        src = samples_root() / sub / name
        if not src.is_file():
            continue
        (out_dir / "samples").mkdir(exist_ok=True)
        shutil.copyfile(src, out_dir / "samples" / name)
        written.append(f"samples/{name}")
    return written
