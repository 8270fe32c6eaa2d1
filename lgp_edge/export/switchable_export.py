"""``lgp-edge export --switchable``: the pool's chosen descendants in one artifact, switchable on the device.

Order of work (as ``lgp_edge.export.pipeline``: bad input costs nothing and leaves nothing behind):
1. checks, exit 2 and nothing written: the target's runtime can hold a switchable model (ONNX Runtime,
   OpenVINO: switchable ONNX; Core ML: multifunction .mlpackage, and the ONNX when the profile lists
   it; TensorRT cannot: one engine per network), backends installed, OUT empty or --force, the keys
   known, the selection non-empty;
2. selection: ``--descendants`` as given (each one outside the profile's budgets said in a warning), else the
   Pareto front (top-1 up, p90 latency down) of the evaluated descendants within the profile's latency and
   memory budgets on its target and precision, fastest first (none within them: select's refusal, exit 2);
3. into a temporary directory beside OUT: ``model.switchable.onnx`` validated per descendant in ONNX
   Runtime and OpenVINO (against torch and against the descendant's single ONNX export),
   ``model.switchable.mlpackage`` checked structurally, with ``validate_coreml_switchable.py`` and its data
   for the numerical check on a Mac; EMBEDDING.md; manifest.json last;
4. published by ``lgp_edge.export.publish``, as every export: all passed, the directory becomes OUT;
   otherwise OUT is untouched, the output is kept in ``OUT.failed`` and ``ValidationFailed`` (exit 1)
   is raised.

This module is callable without the CLI: ``export_switchable(SwitchableRequest(...))``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lgp_edge.errors import UsageError
from lgp_edge.export.images import default_data, load_images
from lgp_edge.export.publish import Staged, check_out, publish
from lgp_edge.export.switchable_table import SwitchEntry, switch_entries
from lgp_edge.progress import NULL
from lgp_edge.specs import DeviceProfile, Format, Runtime, TargetSpec

if TYPE_CHECKING:  # they import torch: a refusal does not wait for it
    from lgp_edge.export.switchable_artifacts import SwitchJob

log = logging.getLogger(__name__)

# runtime -> switchable formats it can load
SWITCHABLE_FORMATS: dict[Runtime, tuple[Format, ...]] = {"onnxruntime": ("onnx",), "openvino": ("onnx",),
                                                         "coreml": ("coreml", "onnx")}
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
        also = "; OpenVINO reads the switchable ONNX directly" if target.runtime == "openvino" else ""
        raise UsageError(f"profile '{profile.name}' asks for {', '.join(profile.formats)}; a switchable model on "
                         f"{target.runtime} is {' or '.join(allowed)} (pass --format {allowed[0]}{also})")
    left = [f for f in profile.formats if f not in fmts]
    if left:
        how = (" (a phone's ONNX Runtime Mobile build reads it only where its operators are in the build: the full "
               "onnxruntime-android package loads model.switchable.onnx)" if "ort" in left else "")
        log.warning("a switchable model is %s only: the profile's %s not written%s", " and ".join(fmts),
                    ", ".join(left), how)
    return fmts


def preflight(req: SwitchableRequest, pool_dir: Path | None = None) -> tuple[str, ...]:
    """Every check that needs no pool loading; the formats to write."""
    from lgp_edge.export.base import check_opset, check_opset_used, require_all
    from lgp_edge.export.coreml import CoreMLExporter

    fmts = switchable_formats(req.profile, req.target)
    if req.keys is not None and not req.keys:
        raise UsageError("--descendants names no descendant; give KEY,KEY… (see 'lgp-edge pool info') or --front")
    if "onnx" in fmts:
        require_all(("onnx", "onnxruntime"), "export", "switchable ONNX export")
        check_opset(req.opset, req.target)
    if "coreml" in fmts:  # the single package's checks: precision, batch, deployment target
        CoreMLExporter().check(req.profile, req.target, None)
    check_opset_used(req.opset, fmts)
    if req.val_images < 1:
        raise UsageError(f"--val-images must be >= 1, got {req.val_images}")
    check_out(req.out, req.force, pool_dir, req.store)
    return fmts


def choose_keys(manifest: Any, req: SwitchableRequest, lat: dict[str, Any]) -> tuple[str, ...]:
    """``--descendants`` as given (a warning for each one outside the profile's budgets: exported as asked), else
    the Pareto front of the descendants within the profile's budgets (fastest first; NothingFits, select's, when
    none is)."""
    from lgp_edge.select import FLAGS_HINT, choose, memory_mb, named_fits, pareto_front, score_candidates

    p = req.profile
    if req.keys is not None:
        for key in req.keys:
            named_fits(key, lat.get(key), memory_mb(manifest.spec, manifest.record(key), p.precision, p.batch), p,
                       "--descendants")
        return req.keys
    cands = score_candidates(tuple(manifest.descendants), lat, p, pool=manifest.spec)
    # none within the budgets: select's refusal, naming what is closest
    choose(cands, p, pool=manifest.spec, hint=f"{FLAGS_HINT}, or name the descendants with --descendants")
    return tuple(c.key for c in pareto_front([c for c in cands if c.fits]))


def choose_entries(req: SwitchableRequest, manifest: Any) -> tuple[SwitchEntry, ...]:
    """The table of the switchable model, with each descendant's latency on the target (pool.json alone)."""
    from lgp_edge.select import latencies, open_store

    if req.keys is not None:  # checked before the latencies, which on this host may calibrate it
        switch_entries(manifest, req.keys)
    store = open_store(req.store)
    try:
        lat = latencies(manifest.spec, req.target, req.profile.precision, store, req.profile.batch,
                        threads=req.profile.threads)
    finally:
        store.close()
    return switch_entries(manifest, choose_keys(manifest, req, lat), lat)


def prepare(req: SwitchableRequest, reporter: Any = NULL) -> SwitchJob:
    """Checks, pool, table and validation images: everything before OUT is touched. What pool.json can refuse
    (the keys, the store, --data) is refused before torch and the weights are loaded."""
    from lgp_edge.data_sources import check_data_name
    from lgp_edge.pool.manifest import read_manifest, resolve_pool

    pool_dir = resolve_pool(req.pool)
    fmts = preflight(req, pool_dir)
    checked = read_manifest(pool_dir)
    data = default_data(checked.data, req.data)
    check_data_name(data)
    entries = choose_entries(req, checked)  # on this host, latencies may calibrate it (torch): after the checks

    from lgp_edge.export.base import MAX_ONNX_OPSET
    from lgp_edge.export.metadata import model_metadata
    from lgp_edge.export.switchable_artifacts import SwitchJob
    from lgp_edge.pool.pool import load_pool

    pool, manifest = load_pool(pool_dir)
    if manifest != checked:  # rewritten since it was read: the table comes from the pool.json of these weights
        entries = choose_entries(req, manifest)
        data = default_data(manifest.data, req.data)
    images = load_images(data, manifest.preprocess, manifest.spec.ancestry.num_classes, req.val_images, 0,
                         manifest.data, reporter)
    return SwitchJob(pool=pool, pool_manifest=manifest, pool_dir=pool_dir, entries=entries, formats=fmts,
                     profile=req.profile, target=req.target,
                     opset=req.opset if req.opset is not None else min(req.target.max_opset, MAX_ONNX_OPSET),
                     images=images,
                     metadata=model_metadata(preprocess=manifest.preprocess, pool_id=manifest.spec.pool_id,
                                             profile=req.profile.name, target=req.target.name))


def stage(job: SwitchJob, tmp: Path, singles: Path, selection: str, reporter: Any = NULL) -> Staged:
    """The switchable artifact(s), EMBEDDING.md and the manifest (returned, written by ``publish``)."""
    from lgp_edge.export.manifest import build_switchable_manifest, file_entries
    from lgp_edge.export.metadata import tool_versions
    from lgp_edge.export.switchable_artifacts import multifunction_artifact, onnx_artifact
    from lgp_edge.export.switchable_docs import embedding_markdown

    artifacts: list[Any] = []
    if "onnx" in job.formats:
        artifacts.append(onnx_artifact(job, tmp, singles, reporter))
    if "coreml" in job.formats:
        artifacts.append(multifunction_artifact(job, tmp, reporter))
    im = job.images
    mf = build_switchable_manifest(
        out_dir=tmp, profile=job.profile, target=job.target, pool_dir=job.pool_dir, pool_manifest=job.pool_manifest,
        selection=selection, entries=job.entries, artifacts=artifacts,
        validation={"data": im.data, "synthetic": im.synthetic, "images": len(im.images)}, extra_files=[],
        versions=tool_versions("onnx", "onnxruntime", "openvino", "coremltools", "timm"))
    (tmp / "EMBEDDING.md").write_text(embedding_markdown(mf), encoding="utf-8")
    mf["files"] = file_entries(tmp, ["EMBEDDING.md"])
    failures = tuple(f for a in artifacts for f in a.failures())
    return Staged(manifest=mf, failures=failures, artifacts=tuple(artifacts))


def export_switchable(req: SwitchableRequest, reporter: Any = NULL) -> SwitchableResult:
    """Write the switchable artifact(s) for ``req`` (see the module docstring)."""
    job = prepare(req, reporter)
    from lgp_edge.select import describe_budget

    selection = ("--descendants" if req.keys is not None
                 else f"pareto front (top-1 vs p90 latency) within {describe_budget(req.profile)}")
    with tempfile.TemporaryDirectory(prefix="lgp-switch-singles-") as singles:
        staged = publish(req.out, lambda tmp: stage(job, tmp, Path(singles), selection, reporter),
                         recheck=lambda: check_out(req.out, req.force, job.pool_dir, req.store),
                         failure="switchable export failed validation")
    log.info("switchable export of %d descendants to %s", len(job.entries), req.out)
    return SwitchableResult(out=req.out, manifest=staged.manifest)
