"""``lgp-edge export --switchable``: the pool's chosen descendants in one artifact, switchable on the device.

Order of work (as ``lgp_edge.export.pipeline``: bad input costs nothing and leaves nothing behind):
1. checks, exit 2 and nothing written: the target's runtime can hold a switchable model (ONNX Runtime,
   OpenVINO: switchable ONNX; Core ML: multifunction .mlpackage, and the ONNX when the profile lists
   it; TensorRT cannot: one engine per network), backends installed, OUT empty or --force, the keys
   known, the selection non-empty;
2. selection: ``--descendants`` as given, else the Pareto front (top-1 up, p90 latency down) of every
   evaluated descendant on the profile's target and precision, fastest first;
3. into a temporary directory beside OUT: ``model.switchable.onnx`` validated per descendant in ONNX
   Runtime and OpenVINO (against torch and against the descendant's single ONNX export),
   ``model.switchable.mlpackage`` checked structurally, with ``validate_coreml_switchable.py`` and its data
   for the numerical check on a Mac; EMBEDDING.md; manifest.json last;
4. all passed: rename to OUT; otherwise ``ValidationFailed`` (exit 1) and OUT untouched.

This module is callable without the CLI: ``export_switchable(SwitchableRequest(...))``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lgp_edge.errors import UsageError, ValidationFailed
from lgp_edge.progress import NULL
from lgp_edge.specs import SCHEMA_VERSION, DeviceProfile, TargetSpec

log = logging.getLogger(__name__)

ONNX_FILE, COREML_FILE = "model.switchable.onnx", "model.switchable.mlpackage"
# runtime -> switchable formats it can load
SWITCHABLE_FORMATS = {"onnxruntime": ("onnx",), "openvino": ("onnx",), "coreml": ("coreml", "onnx")}
DEFAULT_VAL_IMAGES = 200


@dataclass(frozen=True)
class SwitchableRequest:
    profile: DeviceProfile  # the target's profile (after command-line overrides)
    target: TargetSpec  # its target
    out: Path  # output directory
    pool: Path | None = None  # pool directory (None = bundled demo pool)
    keys: tuple[str, ...] | None = None  # --descendants (None = the Pareto front)
    force: bool = False  # replace a non-empty OUT
    data: str | None = None  # validation dataset (None = the pool's own)
    val_images: int = DEFAULT_VAL_IMAGES  # validation images per descendant
    store: Path | None = None  # measurement store (None = the profiler's default)
    opset: int | None = None  # ONNX opset (None = min(target max opset, 17))


@dataclass(frozen=True)
class SwitchableResult:
    out: Path  # where the artifacts are
    manifest: dict[str, Any]  # contents of manifest.json


def parse_keys(value: str | None) -> tuple[str, ...] | None:
    """``--descendants KEY,KEY…`` -> keys (None when not given; an empty tuple is refused later)."""
    if value is None:
        return None
    return tuple(k.strip() for k in value.split(",") if k.strip())


def switchable_formats(profile: DeviceProfile, target: TargetSpec) -> tuple[str, ...]:
    """The switchable formats to write for this profile; UsageError when the runtime cannot hold one."""
    allowed = SWITCHABLE_FORMATS.get(target.runtime)
    if allowed is None:
        raise UsageError(f"target '{target.name}' runs {target.runtime} ({target.runtime_version}), which builds one "
                         "engine per network and cannot hold a switchable model; export each descendant instead: "
                         f"lgp-edge export --target {target.name} --descendant KEY --out DIR")
    fmts = tuple(f for f in allowed if f in profile.formats)
    if not fmts:
        raise UsageError(f"profile '{profile.name}' asks for {', '.join(profile.formats)}; a switchable model on "
                         f"{target.runtime} is {' or '.join(allowed)} (pass --format {allowed[0]}; OpenVINO reads the "
                         "switchable ONNX directly)")
    return fmts


def preflight(req: SwitchableRequest) -> tuple[str, ...]:
    from lgp_edge.export.base import check_opset, require
    from lgp_edge.outdir import check_not_inside, check_output_dir

    fmts = switchable_formats(req.profile, req.target)
    if req.keys is not None and not req.keys:
        raise UsageError("--descendants names no descendant; give KEY,KEY… (see 'lgp-edge pool info') or --front")
    if "onnx" in fmts:
        for pkg in ("onnx", "onnxruntime"):
            require(pkg, "export", "switchable ONNX export")
        check_opset(req.opset, req.target)
    if "coreml" in fmts:
        require("coremltools", "coreml", "Core ML multifunction export")
        if req.profile.precision not in ("fp16", "fp32"):
            raise UsageError(f"Core ML computes in fp16 or fp32, not {req.profile.precision}")
    if req.val_images < 1:
        raise UsageError(f"--val-images must be >= 1, got {req.val_images}")
    check_output_dir(req.out, req.force, kind="export")
    if req.pool is not None:
        check_not_inside(req.out, req.pool, "the pool")
    if req.out.resolve() == Path.cwd().resolve():
        raise UsageError("--out must not be the current directory (it is replaced as a whole)")
    return fmts


def choose_keys(pool: Any, manifest: Any, req: SwitchableRequest, lat: dict[str, Any]) -> tuple[str, ...]:
    """``--descendants`` as given, else the Pareto front of the profile (fastest first)."""
    from lgp_edge.select import pareto_front, score_candidates

    if req.keys is not None:
        return req.keys
    cands = score_candidates(tuple(manifest.descendants), lat, req.profile, pool=manifest.spec)
    return tuple(c.key for c in pareto_front(cands))


def onnx_metadata(manifest: Any, profile: DeviceProfile, target: TargetSpec) -> dict[str, str]:
    from lgp_edge import __version__

    p = manifest.preprocess
    return {"lgp_edge_version": __version__, "pool_id": manifest.spec.pool_id, "profile": profile.name,
            "target": target.name, "labels": json.dumps(list(p.labels)), "mean": json.dumps(list(p.mean)),
            "std": json.dumps(list(p.std)), "img_size": str(p.img_size), "in_chans": str(p.in_chans),
            "layout": p.layout,
            "preprocess": "x = (pixel / 255 - mean) / std per channel, resized to img_size x img_size"}


def _tree_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def export_switchable(req: SwitchableRequest, reporter: Any = NULL) -> SwitchableResult:
    """Write the switchable artifact(s) for ``req`` (see the module docstring)."""
    import torch

    from lgp_edge.export.base import MAX_ONNX_OPSET
    from lgp_edge.export.coreml import _tree_sha256, min_target
    from lgp_edge.export.onnx import versions
    from lgp_edge.export.pipeline import default_data, validation_images
    from lgp_edge.export.switchable import build_switchable_onnx, switch_entries, validate_switchable_onnx
    from lgp_edge.fileio import sha256_file, write_json_atomic
    from lgp_edge.outdir import atomic_dir, check_output_dir, replace_dir
    from lgp_edge.pool.pool import load_pool, resolve_pool
    from lgp_edge.select import latencies, open_store

    pool_dir = resolve_pool(req.pool)
    fmts = preflight(req)
    pool, manifest = load_pool(pool_dir)
    profile, target = req.profile, req.target
    lat = latencies(pool, target, profile.precision, open_store(req.store), profile.batch)
    entries = switch_entries(pool, manifest, choose_keys(pool, manifest, req, lat), lat)
    pre = manifest.preprocess
    shape = (profile.batch, pre.in_chans, pre.img_size, pre.img_size)
    data_name = default_data(manifest.data, req.data)
    x, y, _, synthetic = validation_images(data_name, pre, manifest.spec.ancestry.num_classes, req.val_images, 0,
                                           manifest.data, reporter)
    pool_bytes = sum(p.numel() * 4 for p in pool.parameters())
    used = {id(p): p for e in entries for p in pool.descendant(e.key).parameters()}
    used_bytes = sum(p.numel() * 4 for p in used.values())
    artifacts: list[dict[str, Any]] = []
    with atomic_dir(req.out) as tmp_name, tempfile.TemporaryDirectory(prefix="lgp-switch-singles-") as singles:
        check_output_dir(req.out, req.force, kind="export")  # again, under OUT's writer lock
        tmp = Path(tmp_name)
        if "onnx" in fmts:
            opset = req.opset if req.opset is not None else min(target.max_opset, MAX_ONNX_OPSET)
            sw = build_switchable_onnx(pool, entries, tmp / ONNX_FILE, input_shape=shape, opset=opset,
                                       metadata=onnx_metadata(manifest, profile, target), singles_dir=singles,
                                       reporter=reporter)
            import importlib.util

            rts = ("onnxruntime",) + (("openvino",) if importlib.util.find_spec("openvino") else ())
            checks = validate_switchable_onnx(sw, pool, x, y, data=data_name, synthetic=synthetic, runtimes=rts,
                                              reporter=reporter)
            single_bytes = sum(Path(p).stat().st_size for _, p in sw.singles)
            size = (tmp / ONNX_FILE).stat().st_size
            artifacts.append({
                "path": ONNX_FILE, "format": "onnx", "precision": "fp32", "opset": opset, "bytes": size,
                "sha256": sha256_file(tmp / ONNX_FILE),
                "inputs": [{"name": "input", "shape": list(shape), "dtype": "float32"},
                           {"name": "descendant", "shape": [1], "dtype": "int64"}],
                "outputs": [{"name": "logits", "shape": [profile.batch, len(pre.labels)], "dtype": "float32"}],
                "size": {"bytes": size, "single_onnx_sum_bytes": single_bytes, "pool_fp32_bytes": pool_bytes,
                         "selection_fp32_bytes": used_bytes, "ratio_to_pool": size / pool_bytes,
                         "ratio_to_selection": size / used_bytes, "ratio_to_singles": size / single_bytes},
                "validation": [c.to_dict() for c in checks],
                "passed": all(c.passed for c in checks),
                "versions": versions("onnx", "onnxruntime", "openvino"),
                "note": "fp32; feed int64 'descendant' [1] = index in the 'descendants' table"
                        + ("" if profile.precision == "fp32" else f" (profile precision {profile.precision}: "
                           "the runtime may lower it)")})
        if "coreml" in fmts:
            from lgp_edge.export.coreml_multifunction import build_multifunction_mlpackage

            with torch.no_grad():
                pkg = build_multifunction_mlpackage(
                    pool, entries, tmp / COREML_FILE, preprocess=pre, input_shape=shape,
                    precision=profile.precision, deployment=min_target(target),
                    metadata=onnx_metadata(manifest, profile, target), reporter=reporter)
            bpv = 2 if profile.precision == "fp16" else 4
            artifacts.append({
                **pkg.to_dict(), "format": "coreml", "bytes": _tree_bytes(tmp / COREML_FILE),
                "sha256": _tree_sha256(tmp / COREML_FILE),
                "size": {"weight_bytes": pkg.weight_bytes, "single_packages_weight_bytes": pkg.singles_weight_bytes,
                         "pool_bytes_at_precision": pool_bytes // 4 * bpv,
                         "ratio_to_pool": pkg.weight_bytes / (pool_bytes // 4 * bpv)},
                "validation": {"kind": "structural", "passed": pkg.passed, "problems": list(pkg.problems),
                               "note": "spec loads; one function per descendant with its input/outputs; default "
                                       "function; shared weights. Core ML predicts on macOS only: run "
                                       "'python validate_coreml_switchable.py' on a Mac for the numerical check."},
                "versions": versions("coremltools"),
                "files": _write_mac_check(tmp, pool, pkg, x, y, pre, profile.precision)})
        passed = all(a["passed"] for a in artifacts)
        mf = {"schema_version": SCHEMA_VERSION, "kind": "lgp-edge export --switchable",
              "status": "passed" if passed else "failed",
              "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "profile": profile.to_dict(),
              "target": {"name": target.name, "runtime": target.runtime, "runtime_version": target.runtime_version},
              "pool": {"pool_id": manifest.spec.pool_id, "path": str(pool_dir), "data": manifest.data,
                       "stage": manifest.stage},
              "selection": "--descendants" if req.keys is not None else "pareto front (top-1 vs p90 latency)",
              "descendants": [e.to_dict() for e in entries],
              "validation": {"data": data_name, "synthetic": synthetic, "images": len(x)},
              "artifacts": artifacts}
        (tmp / "EMBEDDING.md").write_text(render_embedding(mf))
        write_json_atomic(tmp / "manifest.json", mf)
        if not passed:
            raise ValidationFailed(f"switchable export failed validation; nothing written to '{req.out}': "
                                   + "; ".join(_failures(artifacts)))
        replace_dir(tmp, req.out)
    log.info("switchable export of %d descendants to %s", len(entries), req.out)
    return SwitchableResult(out=req.out, manifest=mf)


def _write_mac_check(out: Path, pool: Any, pkg: Any, images: Any, labels: Any, pre: Any, precision: str) -> list[str]:
    """validate_coreml_switchable.py + its data (pixels, torch probabilities per function), for a Mac."""
    import shutil

    import numpy as np
    import torch

    from lgp_edge.export.coreml import from_pixels, to_pixels

    pixels = to_pixels(images, pre)
    x = torch.from_numpy(from_pixels(pixels, pre))
    with torch.no_grad():
        probs = np.stack([torch.softmax(pool.descendant(e.key).eval()(x), -1).numpy() for e in pkg.entries])
    np.savez_compressed(out / "coreml_switchable_validation.npz", pixels=pixels, probs=probs.astype(np.float32),
                        labels=labels.astype(np.int64),
                        functions=np.asarray(json.dumps([list(f) for f in pkg.functions])),
                        class_labels=np.asarray(json.dumps(list(pre.labels))), precision=np.asarray(precision))
    shutil.copyfile(Path(__file__).with_name("coreml_multifunction_check.py"), out / "validate_coreml_switchable.py")
    return ["validate_coreml_switchable.py", "coreml_switchable_validation.npz"]


def _failures(artifacts: list[dict[str, Any]]) -> list[str]:
    out = []
    for a in artifacts:
        if a["format"] == "onnx":
            out += [f"{v['runtime']} {v['key']}: {v['vs_torch']['note']} (vs single {v['vs_single_max_abs_diff']})"
                    for v in a["validation"] if not v["passed"]]
        elif not a["passed"]:
            out.append(f"coreml: {'; '.join(a['validation']['problems'])}")
    return out


def render_embedding(mf: dict[str, Any]) -> str:
    """EMBEDDING.md for a switchable export: the table and how an app selects a descendant."""
    from lgp_edge.export.switchable_docs import embedding_markdown

    return embedding_markdown(mf)
