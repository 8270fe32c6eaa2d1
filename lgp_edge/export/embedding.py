"""``EMBEDDING.md``: how to load and call the exported model in an app, with the exact preprocessing.

Rendered from the manifest (so every number in it is the export's own) and written beside the artifacts,
together with the sample sources from ``targets/ios`` (Swift, Core ML) and ``targets/android`` (Kotlin,
ONNX Runtime Android) when the export has a Core ML or an ONNX/.ort artifact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

SAMPLES = {"swift": ("ios", "LgpClassifier.swift"), "kotlin": ("android", "LgpClassifier.kt")}

HEADER = """# Embedding {key} in an app

Exported by lgp-edge {version} for profile **{profile}** (target `{target}`, {runtime_version}).
Descendant `{key}` of pool `{pool_id}`: {params:,} parameters, {mflops:.1f} MFLOPs, top-1 {top1},
expected p90 latency {latency} on the target ({source}).
Check `manifest.json` for the files' sha256 and the validation figures.

## Preprocessing (every runtime)

The model takes one {layout} float32 tensor `{input}` of shape {shape}: {chans}, {size} x {size} pixels.

1. Resize the whole image to {size} x {size} (bilinear, no crop).
2. {chan_step}
3. For each channel c: `x = (pixel / 255 - mean[c]) / std[c]` with
   mean = {mean} and std = {std}.
4. Lay the values out as {layout} (all of channel 0, then channel 1, ...), row by row.

The output `logits` has {classes} values, one per class, in this order:
{labels}.
Apply softmax for probabilities. The ONNX and .ort files carry the same constants as metadata
(`img_size`, `in_chans`, `mean`, `std`, `labels`, `descendant_key`, `pool_id`): read them from the model
instead of copying them. {data_note}
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

Add `implementation("com.microsoft.onnxruntime:onnxruntime-android:<version>")` to the app's Gradle file
and copy `{model}` into `app/src/main/assets/`. `samples/LgpClassifier.kt` does the preprocessing above
with the constants it reads from the model's metadata:

```kotlin
val classifier = LgpClassifier(assets.open("{model}").readBytes())
val (label, probability) = classifier.classify(bitmap).first()
classifier.close()
```

The core of it: `OrtEnvironment.getEnvironment().createSession(bytes, OrtSession.SessionOptions())`,
`OnnxTensor.createTensor(env, floatBuffer, longArrayOf(1, {chans_n}, {size}, {size}))`,
`session.run(mapOf("{input}" to tensor))`, `(result[0].value as Array<FloatArray>)[0]` = the logits.
{ort_note}
"""

SWIFT = """
## iOS (Swift, Core ML)

Add `model.mlpackage` to the Xcode target (Xcode compiles it to `model.mlmodelc`). The normalisation is
inside the model: its image input `image` ({size} x {size}, {color}) applies
`scale * pixel + bias` = `(pixel / 255 - mean) / std`, and the model outputs `classLabel` and
`classLabel_probs` (softmax probabilities). `samples/LgpClassifier.swift` runs it through Vision, which
resizes the image (`.scaleFill`, as in training) and converts it to {color}:

```swift
let url = Bundle.main.url(forResource: "model", withExtension: "mlmodelc")!
let classifier = try LgpClassifier(modelURL: url)
let best = try classifier.classify(cgImage).first   // (label, probability)
```

Minimum deployment target: {deployment}; compute precision {precision}. Core ML cannot run on Linux, so this
export was checked structurally; on a Mac, `python validate_coreml.py` compares it with torch on the
{n_images} validation images in `coreml_validation.npz`.
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
({shape}) and `logits`, and feed tensors preprocessed as above.
"""

OPENVINO = """
## OpenVINO (C++/Python)

`core.compile_model("model.xml", "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})`: without the hint, CPUs
with bf16 support run bf16 (faster, about 1e-2 off). Precision of this IR: {precision}. {int8_note}
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


def render(manifest: dict[str, Any]) -> str:
    pre, d, prof = manifest["preprocess"], manifest["descendant"], manifest["profile"]
    arts = {a["format"]: a for a in manifest["artifacts"]}
    chans = pre["in_chans"]
    first = manifest["artifacts"][0]
    inp = first["inputs"][0]
    shape = "x".join(str(s) for s in inp["shape"]) if first["format"] != "coreml" else \
        f"{prof['batch']}x{chans}x{pre['img_size']}x{pre['img_size']}"
    latency, source = _fmt_latency(manifest)
    synthetic = manifest["pool"]["synthetic_data"]
    text = HEADER.format(
        key=d["key"], version=manifest["versions"].get("lgp-edge", "?"), profile=prof["name"],
        target=manifest["target"]["name"], runtime_version=manifest["target"]["runtime_version"],
        pool_id=manifest["pool"]["pool_id"], params=d["params"], mflops=d["flops"] / 1e6,
        top1=f"{d['top1']:.2f}%" if d.get("top1") is not None else "not evaluated", latency=latency, source=source,
        layout=pre["layout"], input=inp["name"] if first["format"] != "coreml" else "input", shape=shape,
        chans="1 channel (grayscale)" if chans == 1 else f"{chans} channels (RGB)", size=pre["img_size"],
        chan_step=("Convert to grayscale as the mean of R, G and B (the training loader's conversion)."
                   if chans == 1 else "Keep R, G, B in that order (no BGR)."),
        mean=list(pre["mean"]), std=list(pre["std"]), classes=len(pre["labels"]),
        labels=", ".join(f"{i} `{lab}`" for i, lab in enumerate(pre["labels"])),
        data_note=_data_note(manifest["pool"]["data"], synthetic))
    onnx_like = arts.get("onnx") or arts.get("tensorrt")
    if onnx_like is not None:
        text += PYTHON.format(onnx=onnx_like["path"], input=onnx_like["inputs"][0]["name"])
    model_file = arts["ort"]["path"] if "ort" in arts else (arts["onnx"]["path"] if "onnx" in arts else None)
    if model_file is not None:
        text += KOTLIN.format(model=model_file, chans_n=chans, size=pre["img_size"],
                              input=(arts.get("ort") or arts["onnx"])["inputs"][0]["name"],
                              ort_note=("`.ort` is ONNX Runtime's mobile format (pre-optimised); "
                                        "`model.required_operators.config` builds a reduced ONNX Runtime for it."
                                        if "ort" in arts else ""))
    if "coreml" in arts:
        a = arts["coreml"]
        deployment = a["note"].split("minimum deployment target ")[-1].split(";")[0]
        text += SWIFT.format(size=pre["img_size"], color="grayscale" if chans == 1 else "RGB", deployment=deployment,
                             precision=a["precision"], n_images=manifest["validation"]["images"])
    if "tensorrt" in arts:
        a = arts["tensorrt"]
        text += TENSORRT.format(precision=a["precision"], onnx=a["path"], input=a["inputs"][0]["name"],
                                shape="x".join(str(s) for s in a["inputs"][0]["shape"]))
    if "openvino" in arts:
        a = arts["openvino"]
        v = a.get("validation") or {}
        int8 = (f"int8 top-1 change vs torch fp32 on {v.get('images')} images: {v.get('top1_change'):+.2f} points."
                if a["precision"] == "int8" and v.get("top1_change") is not None else "")
        text += OPENVINO.format(precision=a["precision"], int8_note=int8)
    return text


def samples_for(formats: set[str]) -> list[str]:
    out = []
    if "coreml" in formats:
        out.append("swift")
    if formats & {"onnx", "ort"}:
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
