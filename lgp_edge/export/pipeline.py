"""``lgp-edge export``: select the descendant for a profile, export every format, validate, write OUT.

Order of work, so that bad input costs nothing and leaves nothing behind:
1. checks (exit 2, nothing written): formats and precision against the target, each exporter's backend
   and options, the output directory (non-empty OUT needs --force), the validation dataset;
2. selection (exit 2 when nothing fits);
3. export into a temporary directory beside OUT, each artifact validated against the torch descendant
   on real validation images; an exporter error (e.g. an operator TensorRT cannot parse) removes it;
4. EMBEDDING.md, app samples, then manifest.json (written last);
5. every validation passed: the temporary directory is renamed to OUT (replacing it under --force).
   Any validation failed: OUT is left untouched; the temporary directory becomes ``OUT.failed`` (its
   manifest says ``"status": "failed"``) for inspection, and ``ValidationFailed`` (exit 1) is raised.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lgp_edge.errors import UsageError, ValidationFailed
from lgp_edge.export.base import ExportContext, ValidationSet, get_exporter
from lgp_edge.export.embedding import copy_samples, render
from lgp_edge.export.manifest import MANIFEST, build_manifest, file_entries, write_manifest
from lgp_edge.profiles import check_against_target
from lgp_edge.progress import NULL
from lgp_edge.specs import DeviceProfile, ExportArtifact, TargetSpec

log = logging.getLogger(__name__)

DEFAULT_VAL_IMAGES = 1000
DEFAULT_CALIB_IMAGES = 300


@dataclass(frozen=True)
class ExportRequest:
    profile: DeviceProfile  # budgets, precision, formats (after command-line overrides)
    target: TargetSpec  # the profile's target
    out: Path  # output directory
    pool: Path | None = None  # pool directory (None = bundled demo pool)
    force: bool = False  # replace a non-empty OUT
    data: str | None = None  # validation dataset (None = the pool's own)
    val_images: int = DEFAULT_VAL_IMAGES  # validation images per artifact
    calib_images: int = DEFAULT_CALIB_IMAGES  # int8 calibration images (>= 300)
    opset: int | None = None  # ONNX opset (None = min(target max opset, 17))
    dynamic_batch: bool = False  # symbolic batch dimension
    descendant: str | None = None  # export this descendant instead of selecting one
    store: Path | None = None  # measurement store (None = default)
    targets_dir: Path | None = None  # --targets-dir
    build_plan: bool = True  # build model.plan when tensorrt and a GPU are here


@dataclass(frozen=True)
class ExportResult:
    out: Path  # where the artifacts are
    manifest: dict[str, Any]  # contents of manifest.json
    artifacts: tuple[ExportArtifact, ...]


def default_data(pool_data: str, data: str | None) -> str:
    """The validation dataset: --data, else the pool's own (fashion-mnist, imagefolder:…, synthetic)."""
    if data is not None:
        return data
    if pool_data in ("fashion-mnist", "synthetic") or pool_data.startswith("imagefolder:"):
        return pool_data
    raise UsageError(f"the pool was trained on '{pool_data}', which cannot be opened for validation; pass --data")


def check_out(req: ExportRequest, pool_dir: Path | None) -> None:
    """OUT is writable, empty or (with --force) an earlier export, and holds neither the pool nor the store."""
    import os

    from lgp_edge.outdir import check_not_inside, check_output_dir

    check_output_dir(req.out, req.force, kind="export")
    if pool_dir is not None:
        check_not_inside(req.out, pool_dir, "the pool")
    store = req.store or os.environ.get("LGP_EDGE_STORE")
    if store:
        check_not_inside(req.out, store, "the measurement store")


def preflight(req: ExportRequest, pool_dir: Path | None = None) -> None:
    """Every check that needs no pool loading; raises before anything is written."""

    check_against_target(req.profile, req.target)
    for fmt in req.profile.formats:
        get_exporter(fmt).check(req.profile, req.target, req.opset)
    if req.val_images < 1:
        raise UsageError(f"--val-images must be >= 1, got {req.val_images}")
    if "openvino" in req.profile.formats and req.profile.precision == "int8":
        from lgp_edge.export.openvino import MIN_CALIBRATION

        if req.calib_images < MIN_CALIBRATION:
            raise UsageError(f"--calib-images must be >= {MIN_CALIBRATION} for int8, got {req.calib_images}")
    check_out(req, pool_dir)
    if req.out.resolve() == Path.cwd().resolve():
        raise UsageError("--out must not be the current directory (it is replaced as a whole)")


def _plain_view(ds: Any) -> Any:
    """The dataset without training augmentation (lgp_edge.datasets.TensorImages has a ``train`` flag)."""
    if hasattr(ds, "train") and isinstance(ds.train, bool):
        view = copy.copy(ds)
        view.train = False
        return view
    return ds


def _stack(ds: Any, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(ds[i] for i in idx))
    return np.stack([x.numpy() for x in xs]).astype(np.float32), np.asarray(ys, dtype=np.int64)


def validation_images(data_name: str, pre: Any, num_classes: int, n_val: int, n_cal: int, pool_data: str,
                      reporter: Any = NULL) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(validation images, labels, calibration images, synthetic): fixed random subsets, disjoint."""
    import torch

    from lgp_edge.datasets import check_data_name, open_data

    check_data_name(data_name)
    data = open_data(data_name, img_size=pre.img_size, in_chans=pre.in_chans, num_classes=num_classes)
    dpre = data.info.preprocess
    if tuple(dpre.mean) != tuple(pre.mean) or tuple(dpre.std) != tuple(pre.std):
        log.warning("--data %s normalises with mean %s / std %s, the pool with %s / %s (pool data: %s)", data_name,
                    dpre.mean, dpre.std, pre.mean, pre.std, pool_data)
    perm = torch.randperm(len(data.val), generator=torch.Generator().manual_seed(0)).tolist()
    if n_val > len(perm):
        log.warning("--val-images %d > %d validation images; using all", n_val, len(perm))
        n_val = len(perm)
    with reporter.task(f"load {n_val} validation images ({data_name})", total=1) as task:
        x, y = _stack(data.val, perm[:n_val])
        task.advance()
    cal = np.zeros((0, *x.shape[1:]), np.float32)
    if n_cal:
        if len(perm) >= n_val + n_cal:
            cal, _ = _stack(data.val, perm[n_val:n_val + n_cal])
        else:
            train = _plain_view(data.train)
            tperm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1)).tolist()
            if len(tperm) < n_cal:
                raise UsageError(f"int8 calibration needs {n_cal} images; '{data_name}' has {len(tperm)} training "
                                 "images")
            cal, _ = _stack(train, tperm[:n_cal])
    return x, y, cal, data.info.synthetic


def _move_failed(tmp: Path, out: Path) -> Path | None:
    """Keep a failed export for inspection at OUT.failed (only replacing an earlier failed export)."""
    failed = out.with_name(out.name + ".failed")
    if failed.exists():
        try:
            earlier = json.loads((failed / MANIFEST).read_text())
            ours = earlier.get("kind") == "lgp-edge export" and earlier.get("status") == "failed"
        except (OSError, ValueError):
            ours = False
        if not ours:
            log.warning("'%s' exists and is not an earlier failed export; the failed output is discarded", failed)
            return None
    from lgp_edge.outdir import replace_dir

    replace_dir(tmp, failed)
    return failed


def _versions() -> dict[str, str]:
    from lgp_edge.export.onnx import versions

    return versions("onnx", "onnxslim", "onnxscript", "onnxruntime", "openvino", "nncf", "coremltools", "timm")


def export_profile(req: ExportRequest, reporter: Any = NULL) -> ExportResult:
    """Run the whole export for one profile (see the module docstring for the order and failure modes)."""
    from lgp_edge.export.validate import reference_logits, top1
    from lgp_edge.outdir import atomic_dir, replace_dir
    from lgp_edge.pool.pool import load_pool, resolve_pool
    from lgp_edge.select import open_store, plan_selection, profile_latencies

    pool_dir = resolve_pool(req.pool)
    preflight(req, pool_dir)
    pool, manifest = load_pool(pool_dir)
    if req.descendant is None:
        manifest.check_top1(pool_dir)  # no choice by top-1 measured on synthetic data for a real-data pool
    data_name = default_data(manifest.data, req.data)
    profile, target = req.profile, req.target
    store = open_store(req.store)
    if req.descendant is None:
        selection = plan_selection(pool, manifest, profile, target, store)
        key = selection.chosen.key
        sel_dict: dict[str, Any] | None = selection.to_dict()
    else:
        key = pool.find(req.descendant).key
        selection, sel_dict = None, {"forced": key, "reason": "--descendant given; no selection"}
    record = next((r for r in manifest.descendants if r.key == key), None) or pool.record(pool.find(key))
    lat = profile_latencies(pool, target, profile, store).get(key)
    store.close()
    model = pool.descendant(key).eval()
    need_cal = req.calib_images if ("openvino" in profile.formats and profile.precision == "int8") else 0
    x, y, cal, synthetic = validation_images(data_name, manifest.preprocess, manifest.spec.ancestry.num_classes,
                                             req.val_images, need_cal, manifest.data, reporter)
    with reporter.task("torch reference logits", total=1) as task:
        ref = reference_logits(model, x)
        task.advance()
    vset = ValidationSet(images=x, labels=y, reference=ref, data=data_name, synthetic=synthetic)
    with atomic_dir(req.out) as tmp_name:  # holds OUT's writer lock: a second export exits 2
        check_out(req, pool_dir)  # again, under the lock: OUT may have been written since the preflight
        tmp = Path(tmp_name)
        ctx = ExportContext(out_dir=tmp, model=model, record=record, pool_id=manifest.spec.pool_id,
                            preprocess=manifest.preprocess, profile=profile, target=target, opset=req.opset,
                            dynamic_batch=req.dynamic_batch, validation=vset, calibration=cal, reporter=reporter,
                            targets_dir=req.targets_dir, build_plan=req.build_plan)
        artifacts: list[ExportArtifact] = []
        for fmt in profile.formats:
            artifacts += get_exporter(fmt).export(ctx)
        shipped = {a.path for a in artifacts} | {f for a in artifacts for f in a.files}
        for path in ctx.onnx_cache.values():  # an ONNX made only to convert from (e.g. for OpenVINO int8)
            if path.name not in shipped:
                path.unlink()
        formats = {a.format for a in artifacts}
        extra = copy_samples(tmp, formats)
        validation = {"data": data_name, "synthetic": synthetic, "images": len(x),
                      "torch_top1": top1(ref, y),
                      "note": ("synthetic images: agreement is a numerical check only; top-1 means nothing"
                               if synthetic else "real validation images"
                               + (f", disjoint from the {len(cal)} int8 calibration images" if len(cal) else ""))}
        mf = build_manifest(out_dir=tmp, profile=profile, target=target, pool_dir=pool_dir, pool_manifest=manifest,
                            record=record, latency=lat.to_dict() if lat is not None else None, selection=sel_dict,
                            preprocess=manifest.preprocess, artifacts=artifacts, validation=validation,
                            extra_files=extra + ["EMBEDDING.md"], versions=_versions())
        (tmp / "EMBEDDING.md").write_text(render(mf, tmp))
        mf["files"] = file_entries(tmp, extra + ["EMBEDDING.md"])  # now with EMBEDDING.md's hash
        write_manifest(tmp, mf)
        if mf["status"] != "passed":
            failed = [a for a in artifacts if not (a.validation and a.validation.passed)]
            where = _move_failed(tmp, req.out)
            detail = "; ".join(f"{a.format} {a.path}: {a.validation.note if a.validation else 'not validated'}"
                               for a in failed)
            raise ValidationFailed(f"validation failed, nothing written to '{req.out}'"
                                   + (f" (failed output kept in '{where}')" if where else "") + f": {detail}")
        replace_dir(tmp, req.out)
    log.info("exported %s for profile %s to %s", key, profile.name, req.out)
    return ExportResult(out=req.out, manifest=mf, artifacts=tuple(artifacts))
