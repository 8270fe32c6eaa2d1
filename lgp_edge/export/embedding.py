"""``EMBEDDING.md``: how to load and call the exported model in an app, with the exact preprocessing.

Rendered from the manifest (so every number in it is the export's own) and from the artifacts themselves
(input and output names, shapes, metadata keys, Core ML image input and classifier outputs, OpenVINO Model
API keys: each format's section describes the file as written), one section per template in
``lgp_edge/data/templates/embedding/``, and written beside the artifacts, together with the sample sources
from ``targets/ios`` (Swift, Core ML) and ``targets/android`` (Kotlin, ONNX Runtime Android) when the
export has a Core ML or an .ort artifact.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgp_edge.export.assets import code_span, md_text, template
from lgp_edge.export.manifest import (
    exported,
    low_precision,
    own_top1_words,
    pool_top1_of,
    selection_threads,
    source_data,
    threads_words,
)
from lgp_edge.specs import UNSTORED_NOTE

SAMPLES = {"swift": ("ios", "LgpClassifier.swift"), "kotlin": ("android", "LgpClassifier.kt")}

ORT_ANDROID_VERSION = "1.20.0"  # pinned in EMBEDDING.md and targets/android/LgpClassifier.kt alike
FORMAT_NAMES = {"onnx": "ONNX", "ort": ".ort", "tensorrt": "TensorRT", "openvino": "OpenVINO"}
META_KEYS = ("img_size", "in_chans", "mean", "std", "labels", "descendant_key", "pool_id")  # named in the doc


def _fmt_latency(manifest: dict[str, Any]) -> tuple[str, str]:
    d = exported(manifest)
    if d.get("expected_latency_ms") is None:
        return "unknown", "no latency record"
    source = f"{d['latency_source']}, {d.get('latency_runtime')}{threads_words(manifest)}"
    if UNSTORED_NOTE in (d.get("latency_note") or ""):  # a number another export would not repeat
        source += ("; from a host calibration this export measured and did not store, so another export predicts "
                   "another time: see latency_note in manifest.json")
    return f"{d['expected_latency_ms']:.3g} ms", source


def _data_note(data: str, synthetic: bool, what: str = "pool") -> str:
    if synthetic:
        if what == "model":  # a timm model validated on synthetic images: its own data is not known here
            return "It was validated on synthetic images (no --data): a numerical check against torch only."
        return "**This pool was trained on synthetic data: its predictions mean nothing.**"
    if data == "fashion-mnist":
        return (f"The {what} was trained on Fashion-MNIST: centred product photos, light object on a black "
                "background. Camera images need the same look (crop to the object, dark background) to be "
                "recognised.")
    return f"The {what} was trained on {code_span(data)}."


GRAY_DOC = ("Convert to grayscale as the mean of R, G and B (the training loader's conversion; not a "
            "luminance weighting).")


def _tensor_io(path: Path) -> dict[str, Any]:
    """Input/output names and shapes and metadata keys of an ONNX or .ort file, from ONNX Runtime."""
    from lgp_edge.export.sessions import ort_session

    sess = ort_session(path)
    i, o = sess.get_inputs()[0], sess.get_outputs()[0]
    return {"input": i.name, "shape": "x".join(str(d) for d in i.shape), "output": o.name,
            "out_shape": "x".join(str(d) for d in o.shape),
            "meta_keys": sorted(sess.get_modelmeta().custom_metadata_map)}


def _openvino_io(path: Path) -> dict[str, Any]:
    import openvino as ov

    m = ov.Core().read_model(str(path))
    keys = [k for k in ("model_type", "labels", "mean_values", "scale_values", "resize_type",
                        "reverse_input_channels") if m.has_rt_info(["model_info", k])]
    ours = m.get_rt_info(["model_info", "lgp_edge"]).astype(dict) if m.has_rt_info(["model_info", "lgp_edge"]) else {}
    return {"input": m.inputs[0].get_any_name(), "shape": "x".join(str(d) for d in m.inputs[0].get_partial_shape()),
            "output": m.outputs[0].get_any_name(),
            "out_shape": "x".join(str(d) for d in m.outputs[0].get_partial_shape()), "model_api": keys,
            "meta_keys": sorted(ours)}  # under model_info/lgp_edge: what the file holds, as for ONNX


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


@dataclass(frozen=True)
class _Doc:
    """What the sections are rendered from: the manifest, its artifacts by format, the output directory."""

    manifest: dict[str, Any]
    arts: dict[str, dict[str, Any]]  # format -> artifact entry
    root: Path | None  # where the artifacts are (None: describe them from the manifest alone)

    @property
    def pre(self) -> dict[str, Any]:
        return self.manifest["preprocess"]

    def io(self, fmt: str) -> dict[str, Any]:
        """The interface of the ``fmt`` artifact: read from the file when it is at hand."""
        a = self.arts[fmt]
        if self.root is None:
            return _fallback_io(a)
        if fmt == "openvino":
            return _openvino_io(self.root / a["path"])
        return _tensor_io(self.root / a["path"])


def _section(name: str, **values: Any) -> str:
    return "\n" + template(f"embedding/{name}.md").format(**values)


def _what(m: dict[str, Any]) -> str:
    """The exported model in words: a pool's descendant, or a timm model and its checkpoint."""
    if m.get("pool"):
        return f"Descendant `{m['descendant']['key']}` of pool `{m['pool']['pool_id']}`"
    d = m["model"]
    return (f"timm model `{d['name']}` (checkpoint `{Path(d['checkpoint']).name}`, sha256 "
            f"`{d['checkpoint_sha256'][:12]}…`; preprocessing from {d['preprocess_from']})")


def _memory_note(m: dict[str, Any]) -> str:
    mb = exported(m).get("memory_mb")
    if mb is None:
        return ""
    return (f";\nmodel memory about {mb:.2f} MB at batch {m['profile'].get('batch', 1)} (weights + an activation "
            "estimate; the runtime's own memory and working copies come on top, see lgp-edge's README)")


def _top1(m: dict[str, Any]) -> str:
    """The exported model's top-1; below fp32, labelled as the pool's torch fp32 number, with each lower-precision
    file's own top-1 on this export's validation images (and torch fp32's on the same images) beside it."""
    d, v = exported(m), m["validation"]
    words = own_top1_words(m, code=True)
    files = ""
    if words:
        files = (f"; on this export's {v['images']:,} {v['data']} validation images: torch fp32 "
                 f"{v['torch_top1']:.2f}%, {words}")
    if d.get("top1") is not None:
        return f"{d['top1']:.2f}% ({pool_top1_of(m)}{files})" if low_precision(m) else f"{d['top1']:.2f}%"
    if files:
        return files[2:].replace("on this export's", "on the", 1)
    if m.get("model") and not v["synthetic"]:
        return f"{v['torch_top1']:.2f}% (torch, on the {v['images']} {v['data']} validation images of this export)"
    return "not evaluated"


def _header(doc: _Doc) -> str:
    m, d, pre = doc.manifest, exported(doc.manifest), doc.pre
    latency, source = _fmt_latency(m)
    if d.get("expected_latency_ms") is not None and m["profile"].get("batch", 1) != 1:
        from lgp_edge.select import per_batch

        latency += f"{per_batch(m['profile']['batch'])} (one call)"
    return template("embedding/header.md").format(
        key=d["key"], version=m["versions"].get("lgp-edge", "?"), profile=m["profile"]["name"],
        target=m["target"]["name"], runtime_version=md_text(m["target"]["runtime_version"]),
        what=_what(m),
        params=d["params"], mflops=f"{d['flops'] / 1e6:.1f}" if d.get("flops") is not None else "n/a",
        top1=_top1(m), latency=latency, source=source, memory=_memory_note(m),
        labels=", ".join(f"{i} {code_span(lab)}" for i, lab in enumerate(pre["labels"])),
        data_note=_data_note(*source_data(m), what="pool" if m.get("pool") else "model"))


def _int8_host(m: dict[str, Any]) -> str:
    """Where an int8 check ran, when that is not on the target: int8 results depend on the kernels a CPU's
    int8 instructions select, so the check holds for this machine's CPU, not the device's."""
    h = m["validation"].get("host") or {}
    if not h or h.get("target_is_host"):
        return ""
    isa = h.get("int8_instructions")
    named = "unknown" if isa is None else (", ".join(isa) or "none of AVX2, VNNI, AMX, dot product, i8mm")
    return (f" This check ran on this machine's CPU ({h.get('cpu')}, {h.get('machine')}; int8 instructions: "
            f"{named}) with its int8 kernels, not the device's (`{m['target']['name']}`): validate the top-1 on "
            "the device before relying on it.")


def _precision_note(a: dict[str, Any], n_images: int, host: str = "", fp32_file: str | None = None) -> str:
    """What an int8 or fp16 ONNX file is, for its section (empty for fp32); ``host``: where an int8 check ran."""
    v, q = a.get("validation") or {}, a.get("quantization") or {}
    if a["precision"] == "int8":
        change = (f" Top-1 change vs torch fp32 on the {n_images} validation images: {v['top1_change']:+.2f} points "
                  f"(agreement {v['top1_agreement']:.3f}).{host}" if v.get("top1_change") is not None else host)
        return (f"\n`{a['path']}` is int8, quantized after training (static, QDQ format: QuantizeLinear/"
                f"DequantizeLinear around the int8 tensors): {q.get('layers', '')}; weights {q.get('weights', '')}, "
                f"activations {q.get('activations', '')}, calibrated on {q.get('calibration_images')} "
                f"{q.get('calibration_data', '')} images. Input and output stay float32: preprocess exactly as "
                f"above.{change}\n")
    if a["precision"] == "fp16":
        return (f"\n`{a['path']}` is fp16 (weights and activations; LayerNorm and softmax kept fp32). Input and "
                "output stay float32. Run it on a GPU execution provider (CUDA, TensorRT, DirectML); ONNX Runtime's "
                "CPU provider runs most fp16 operators in fp32 after converting, so it is slower there than "
                + (f"`{fp32_file}` in fp32.\n" if fp32_file else "an fp32 ONNX model.\n"))
    return ""


def timm_crop(m: dict[str, Any]) -> tuple[float, str] | None:
    """(crop_pct, interpolation) of a timm model whose preprocessing comes from its pretrained_cfg (the stock
    model's, or a snapshot's config.json) and whose evaluation transform is a centre crop, else None (lgp-edge's
    loaders: the whole image, no crop)."""
    model = m.get("model") or {}
    cfg = model.get("timm_pretrained_cfg") or {}
    pct = cfg.get("crop_pct")
    if model.get("preprocess_from") in ("timm pretrained_cfg", "config.json beside the checkpoint") \
            and isinstance(pct, (int, float)) and 0 < pct <= 1 and cfg.get("crop_mode", "center") == "center":
        return float(pct), str(cfg.get("interpolation") or "bilinear")
    return None


def _resize_step(m: dict[str, Any], size: int) -> str:
    """How an image reaches the input size: what lgp-edge's loaders do (the whole image, no crop), or for a
    timm model whose preprocessing comes from its pretrained_cfg, timm's evaluation transform (the manifest
    records its interpolation, crop_pct and crop_mode; the doc said "no crop" beside them)."""
    crop = timm_crop(m)
    if crop is not None:
        pct, interp = crop
        return (f"Resize the shorter side to {int(size / pct)} pixels ({interp}), then crop the central {size} x "
                f"{size} (timm's evaluation transform for this model: crop_pct {pct:g}).")
    return f"Resize the whole image to {size} x {size} (bilinear, no crop)."


_PIL_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST", "lanczos": "LANCZOS"}


def _resize_code(m: dict[str, Any], size: int) -> str:
    """The Python snippet's lines for ``_resize_step`` (inside ``prepare``, on a PIL image ``img``)."""
    crop = timm_crop(m)
    if crop is None:
        return "img = img.resize((size, size), Image.BILINEAR)  # the whole image, no crop"
    pct, interp = crop
    short = int(size / pct)
    return (f"scale = {short} / min(img.size)  # the shorter side to {short} pixels, then the central size x size\n"
            f"    img = img.resize((round(img.width * scale), round(img.height * scale)), "
            f"Image.{_PIL_FILTERS.get(interp, 'BILINEAR')})\n"
            "    left, top = (img.width - size) // 2, (img.height - size) // 2\n"
            "    img = img.crop((left, top, left + size, top + size))")


def _tensor(doc: _Doc) -> str:
    """Preprocessing for the formats that take a tensor (ONNX, .ort, TensorRT, OpenVINO)."""
    fmts = [f for f in ("onnx", "ort", "tensorrt", "openvino") if f in doc.arts]
    if not fmts:
        return ""
    first = next((f for f in ("onnx", "ort", "tensorrt") if f in doc.arts), "openvino")
    t, pre = doc.io(first), doc.pre
    lowp = next((doc.arts[f] for f in ("onnx", "ort") if f in doc.arts and doc.arts[f]["precision"] != "fp32"), None)
    chans = pre["in_chans"]
    meta_keys = t.get("meta_keys") or list(META_KEYS)
    return _section(
        "tensor", formats=", ".join(FORMAT_NAMES[f] for f in fmts), layout=pre["layout"], input=t["input"],
        shape=t["shape"], output=t["output"], out_shape=t.get("out_shape", f"1x{len(pre['labels'])}"),
        chans="1 channel (grayscale)" if chans == 1 else f"{chans} channels (RGB)", size=pre["img_size"],
        chan_step=GRAY_DOC if chans == 1 else "Keep R, G, B in that order (no BGR).",
        mean=list(pre["mean"]), std=list(pre["std"]), resize_step=_resize_step(doc.manifest, pre["img_size"]),
        meta_keys=", ".join(f"`{k}`" for k in meta_keys if k in META_KEYS),
        engine_note=(" A TensorRT engine built from it (`model.plan`) carries no metadata: an app that runs the "
                     f"engine reads them from `{doc.arts['tensorrt']['path']}` or from `preprocess` in manifest.json."
                     if "tensorrt" in doc.arts else ""),
        precision_note=(_precision_note(lowp, doc.manifest["validation"]["images"], _int8_host(doc.manifest),
                                        fp32_file=next((a["path"] for a in doc.manifest["artifacts"]
                                                        if a["path"] == "model.onnx"), None))
                        if lowp else ""))


def _batch(io: dict[str, Any]) -> str:
    """The batch dimension of an artifact's input (``io``'s "NxCxHxW" shape): a number, or a dynamic batch's name."""
    return io["shape"].split("x")[0]


def _python(doc: _Doc) -> str:
    onnx_like = "onnx" if "onnx" in doc.arts else ("tensorrt" if "tensorrt" in doc.arts else None)
    if onnx_like is None:
        return ""
    threads = selection_threads(doc.manifest)
    runtime = exported(doc.manifest).get("latency_runtime")
    if threads and runtime in (None, "onnxruntime"):
        threads_line = f"so.intra_op_num_threads = {threads}  # the thread count the manifest's latency is for"
    else:
        threads_line = "so.intra_op_num_threads = 0  # ONNX Runtime's default: one per core"
        if runtime:
            threads_line += f" (the manifest's latency is {runtime}'s, on {doc.manifest['target']['name']})"
    io = doc.io(onnx_like)
    batch = _batch(io)
    if batch.isdigit() and int(batch) > 1:
        paths = (f'paths = [f"photo{{i}}.png" for i in range({batch})]  # the model takes exactly {batch} images '
                 "per call")
    elif batch.isdigit():
        paths = 'paths = ["photo.png"]  # the model takes one image per call'
    else:
        paths = 'paths = ["photo.png"]  # any number of images per call (a dynamic batch)'
    return _section("python", onnx=doc.arts[onnx_like]["path"], input=io["input"], threads=threads_line,
                    providers=_providers(doc, onnx_like), paths=paths,
                    resize=_resize_code(doc.manifest, doc.pre["img_size"]))


def _providers(doc: _Doc, onnx_like: str) -> str:
    """The sample's execution providers, named: ONNX Runtime 1.9-1.15 GPU builds (a Jetson's) refuse a session
    without them. A GPU target's file (or an fp16 one, slow on the CPU provider) asks for CUDA where the
    installed build has it, else the CPU; any other file the CPU, whose latency the manifest gives."""
    gpu = doc.manifest["target"].get("runtime") == "tensorrt" or doc.arts[onnx_like].get("precision") == "fp16"
    if not gpu:
        return 'providers = ["CPUExecutionProvider"]'
    return ('providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")\n'
            '             if p in ort.get_available_providers()]  # onnxruntime-gpu: CUDA; otherwise the CPU')


def _kotlin(doc: _Doc) -> str:
    """A phone export (.ort, or a phone's .onnx alone): the Android section (and, beside it, the sample)."""
    from lgp_edge.export.ort import integer_operators, ort_cpu, ort_format_version, ort_phone, ort_requirement
    from lgp_edge.export.phone import onnx_phone

    if "ort" not in doc.arts:
        onnx = doc.arts.get("onnx")
        return _kotlin_onnx(doc) if onnx is not None and onnx_phone(onnx.get("note", "")) else ""
    a, t = doc.arts["ort"], doc.io("ort")
    if not ort_phone(a.get("note", "")):  # converted for an x86-64 machine, an ARM board or this ARM machine
        return _ort_desktop(a["path"], ort_cpu(a.get("note", "")))
    if doc.root is not None:  # read from the files
        needs = ort_requirement(ort_format_version(doc.root / a["path"]))
        int_ops = ", ".join(integer_operators(doc.root / a["files"][0]["path"])) or "none"
    else:  # as the export's note recorded them
        needs = a["note"].split("needs ", 1)[-1].split(":", 1)[0] if "needs " in a["note"] else "ONNX Runtime"
        int_ops = a["note"].split("integer operators in the .ort: ", 1)[-1].split(";")[0]
    converter = a.get("versions", {}).get("onnxruntime", "")
    return _kotlin_section(doc, a, t, needs, (
        "`.ort` is ONNX Runtime's pre-optimised format; the `onnxruntime-android` package runs it as it is. "
        "`model.required_operators.config` lists its operators for a reduced ONNX Runtime built from source, which "
        f"must be ONNX Runtime {converter} (the version that converted it); the package above does not need it."
        + (f" This `.ort` is int8 (converted from the QDQ model described above; integer operators: {int_ops}), with "
           "float32 input and output." if a["precision"] == "int8" else "")))


def _kotlin_onnx(doc: _Doc) -> str:
    """A phone's plain ONNX file, exported without its ``.ort``: the same app code loads it."""
    a, t = doc.arts["onnx"], doc.io("onnx")
    opset = _onnx_opset(doc.root / a["path"]) if doc.root is not None else None
    needs = (f"an ONNX Runtime that implements ONNX opset {opset} (the version below does)" if opset else
             "an ONNX Runtime that implements its ONNX opset (the version below does)")
    return _kotlin_section(doc, a, t, needs, (
        "This is the plain ONNX file: the `onnxruntime-android` package loads it as it is and optimises the graph "
        "each time a session is created. `lgp-edge export --format ort` writes its pre-optimised `.ort` (no "
        "optimisation at load, and a list of its operators for a reduced ONNX Runtime built from source)."
        + (" This ONNX file is int8 (the QDQ model described above), with float32 input and output."
           if a["precision"] == "int8" else "")))


def _onnx_opset(path: Path) -> int:
    import onnx

    from lgp_edge.export.onnx_export import onnx_opset

    return onnx_opset(onnx.load(str(path), load_external_data=False))


def _kotlin_section(doc: _Doc, a: dict[str, Any], t: dict[str, Any], needs: str, ort_note: str) -> str:
    threads = selection_threads(doc.manifest)
    batch = _batch(t)
    if batch.isdigit() and int(batch) > 1:
        call = (f"val perImage = classifier.classifyAll(bitmaps)  // exactly {batch} bitmaps per call: the batch "
                "this model was exported for")
    else:
        call = "val (label, probability) = classifier.classify(bitmap).first()"
    crop = timm_crop(doc.manifest)
    size = doc.pre["img_size"]
    sample_does = ("does the preprocessing above" if crop is None else
                   f"scales the whole bitmap to {size} x {size}, where this model was evaluated with timm's centre "
                   f"crop (step 1 above: the shorter side to {int(size / crop[0])}, then the central {size} x "
                   f"{size}): crop the bitmap that way before handing it over, and it does the rest")
    return _section("kotlin", model=a["path"], chans_n=doc.pre["in_chans"], size=doc.pre["img_size"],
                    sample_does=sample_does,
                    batch_n=batch if batch.isdigit() else "n", classify_call=call,
                    input=t["input"], output=t["output"], ort_needs=needs, ort_version=ORT_ANDROID_VERSION,
                    threads_arg=f", threads = {threads}" if threads else "",
                    threads_note=(f" `threads = {threads}` is the thread count the manifest's latency is for; "
                                  "ONNX Runtime can also keep its pool threads on the big cores (session config "
                                  "entry `session.intra_op_thread_affinities`, see its threading docs)."
                                  if threads else ""),
                    ort_note=ort_note)


def _coreml_from_manifest(a: dict[str, Any]) -> dict[str, Any]:
    i = a["inputs"][0]
    deployment = a["note"].split("minimum deployment target ")[-1].split(";")[0]
    return {"input": i["name"], "width": i["shape"][-1], "height": i["shape"][-2], "color": i.get("color", ""),
            "label_out": a["outputs"][0]["name"], "probs_out": a["outputs"][1]["name"], "spec_version": "?",
            "deployment": deployment}


def coreml_norm_text(pre: dict[str, Any]) -> str:
    """How a Core ML export normalises its image input, in words (``coreml.image_scaling`` decides)."""
    from lgp_edge.export.coreml import image_scaling
    from lgp_edge.specs import PreprocessSpec

    if image_scaling(PreprocessSpec.from_dict(pre))[2]:  # per-channel stds: one scale cannot do them
        return ("the image input scales pixels by 1/255 (its `scale`) and the model's first operations subtract "
                "the per-channel mean and divide by the per-channel std, so `(pixel / 255 - mean) / std`")
    return "the image input applies `scale * pixel + bias` = `(pixel / 255 - mean) / std`"


def _swift(doc: _Doc) -> str:
    if "coreml" not in doc.arts:
        return ""
    a = doc.arts["coreml"]
    c = _coreml_io(doc.root / a["path"]) if doc.root is not None else _coreml_from_manifest(a)
    gray = c["color"] == "grayscale"
    crop, size = timm_crop(doc.manifest), c["width"]
    resize_note = ("(no crop, as in training)" if crop is None else
                   f"(no crop; this model was evaluated with timm's centre crop: the shorter side to "
                   f"{int(size / crop[0])} pixels, then the central {size} x {size}, so crop the image that way "
                   "first)")
    return _section("swift", path=a["path"], spec_version=c["spec_version"], deployment=c["deployment"],
                    resize_note=resize_note,
                    input=c["input"], size=c["width"], color=c["color"], label_out=c["label_out"],
                    probs_out=c["probs_out"], norm_how=coreml_norm_text(doc.pre),
                    gray=("A grayscale model takes one 8-bit channel: make it the mean of R, G and B, as "
                          "the training loader did (Vision's own conversion weights by luminance instead, "
                          "so the sample converts the image itself)." if gray else ""),
                    gray_sample=", converts it to gray as the mean of R, G and B" if gray else "",
                    precision=a["precision"], n_images=doc.manifest["validation"]["images"])


def _tensorrt(doc: _Doc) -> str:
    if "tensorrt" not in doc.arts:
        return ""
    a, t = doc.arts["tensorrt"], doc.io("tensorrt")
    v, q = a.get("validation") or {}, a.get("quantization") or {}
    build = {"fp32": "",
             "fp16": "; the LayerNorm and softmax layers listed in `fp32_layers.txt` stay in fp32",
             "int8": f"; `{a['path']}` is explicitly quantized (QuantizeLinear/DequantizeLinear with int8 scales "
                     f"calibrated on {q.get('calibration_images')} {q.get('calibration_data')} images), so TensorRT "
                     "builds its quantized Gemm layers in int8 from those scales with no calibration cache, "
                     "the other layers in fp16, and the LayerNorm and softmax layers listed in `fp32_layers.txt` "
                     "in fp32"}[a["precision"]]
    check = (f"Checked here (no GPU): {v['note'].split(' | ')[0]}." if v.get("note") else "")
    if a["precision"] == "int8":
        check += _int8_host(doc.manifest)
    first = (a.get("inputs") or [{}])[0]
    shapes = first.get("engine_shapes")
    if shapes:  # a dynamic batch: the engine's optimization profile bounds it, and bench.sh must build the same
        lo, hi = first["batch_range"]
        build += (f". The engine takes a batch of {lo} to {hi} (its optimization profile: `--maxShapes` in "
                  "`build_engine.sh`; build it again with a larger one for bigger batches); set the input's shape "
                  "for each batch before running it (`IExecutionContext::setInputShape`, `setBindingDimensions` "
                  "before TensorRT 8.5)")
        bench = f"SHAPES={shapes} sh bench.sh {a['path']} {a['precision']} 200 500"
    else:
        bench = f"sh bench.sh {a['path']} {a['precision']} 200 500"
    return _section("tensorrt", precision=a["precision"], input=t["input"], shape=t["shape"],
                    output=t["output"], build_note=build, check_note=check, bench=bench,
                    layer_tip=_layer_tip(doc.manifest, a))


def _layer_tip(manifest: Mapping[str, Any], art: Mapping[str, Any]) -> str:
    """How to see which precision each engine layer got, on the target's TensorRT (none for fp32: nothing is
    pinned). trtexec has ``--exportLayerInfo`` from 8.4; before it build_engine.py builds the engine."""
    from lgp_edge.export.trt_ops import parse_trt_version

    if art["precision"] == "fp32":
        return ""
    target_trt = (art.get("versions") or {}).get("tensorrt_target")  # the version the export was checked against
    version = parse_trt_version(f"TensorRT {target_trt}" if target_trt else
                                manifest["target"].get("runtime_version") or "")
    why = " To see which precision each layer got (TensorRT can fuse a pinned layer into a kernel of another precision)"
    if version is not None and version < (8, 4):
        return (f"{why}, add `--layer-info layers.json` to the `python3 build_engine.py` line of `build_engine.sh`, "
                "which builds the engine on a TensorRT before 8.4 (its trtexec writes no layer information): it "
                "writes each layer's precision.")
    return (f"{why}, build with `--profilingVerbosity=detailed --exportLayerInfo=layers.json` added to the "
            "`trtexec` line of `build_engine.sh`.")


def _openvino(doc: _Doc) -> str:
    if "openvino" not in doc.arts:
        return ""
    a, t = doc.arts["openvino"], doc.io("openvino")
    v = a.get("validation") or {}
    int8 = (f"int8 top-1 change vs torch fp32 on {v.get('images')} images: {v.get('top1_change'):+.2f} points."
            + _int8_host(doc.manifest) if a["precision"] == "int8" and v.get("top1_change") is not None else "")
    keys = t.get("model_api") or []
    crop = timm_crop(doc.manifest)
    if crop is not None:
        api = (f"This model is evaluated with timm's centre crop (crop_pct {crop[0]:g}, step 1 above), which OpenVINO "
               "Model API's resize cannot reproduce (the whole image, or a square crop), so the IR carries no Model "
               "API keys: run it with the runtime\nas above.")
    elif keys:
        api = (f"OpenVINO Model API: the IR's `rt_info` holds {', '.join(f'`{k}`' for k in keys)}, so\n"
               '`model_api.models.Model.create_model("model.xml")` loads it as a classifier with no glue code (it '
               "resizes and\nnormalises 0..255 BGR images itself).")
    else:
        api = ("OpenVINO Model API feeds 3-channel images and this model takes "
               f"{t['shape'].split('x')[1] if 'x' in t['shape'] else 'other'} channel(s), so the IR carries no Model "
               "API keys: run it with the runtime\nas above.")
    config, threads_note = '"INFERENCE_PRECISION_HINT": "f32"', ""
    threads = selection_threads(doc.manifest)
    if threads and exported(doc.manifest).get("latency_runtime") == "openvino":  # as the profiler compiled it
        config = f'"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": {threads}, "NUM_STREAMS": 1, ' + config
        threads_note = (f" The latency hint, {threads} thread(s) and one stream are the settings the manifest's "
                        "latency is for (without them OpenVINO takes every core).")
    return _section("openvino", precision=a["precision"], int8_note=int8, input=t["input"], shape=t["shape"],
                    output=t["output"], model_api=api, config=config, threads_note=threads_note)


def render(manifest: dict[str, Any], out_dir: str | Path | None = None) -> str:
    """EMBEDDING.md for an export; with ``out_dir``, each format's interface is read from its artifact."""
    doc = _Doc(manifest=manifest, arts={a["format"]: a for a in manifest["artifacts"]},
               root=Path(out_dir) if out_dir is not None else None)
    return _header(doc) + "".join(section(doc) for section in (_tensor, _python, _kotlin, _swift, _tensorrt,
                                                                 _openvino))


def samples_for(formats: set[str]) -> list[str]:
    out = []
    if "coreml" in formats:
        out.append("swift")
    if "ort" in formats or "phone-onnx" in formats:  # the Android sample goes with a phone's files only
        out.append("kotlin")
    return out


def _ort_desktop(model: str, cpu: str) -> str:
    """A ``.ort`` for a computer's CPU (this machine, a Linux board): loaded by the onnxruntime package there."""
    return _section("ort_x86" if cpu == "amd64" else "ort_arm", model=model, cpu=cpu)


def sample_formats(artifacts: Sequence[Any]) -> set[str]:
    """The formats of ``artifacts`` that samples go with: a ``.ort`` converted for an x86-64 machine, an ARM board
    or this ARM machine is not a phone's, and the Android sample does not go with it; a phone's ``.onnx`` is
    ``phone-onnx`` (the Android sample goes with it)."""
    from lgp_edge.export.ort import ort_phone
    from lgp_edge.export.phone import onnx_phone

    out = {a.format for a in artifacts if not (a.format == "ort" and not ort_phone(a.note or ""))}
    return out | ({"phone-onnx"} if any(a.format == "onnx" and onnx_phone(a.note or "") for a in artifacts) else set())


def samples_root() -> Path:
    """The app samples sit beside the built-in target files."""
    from lgp_edge.targets import targets_root

    return targets_root()


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
