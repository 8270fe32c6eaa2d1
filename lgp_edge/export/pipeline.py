"""``lgp-edge export``: select the descendant for a profile, export every format, validate, write OUT.

``--model NAME --checkpoint FILE`` exports a timm ViT instead of a pool's descendant through the same steps
(loaded by ``lgp_edge.export.timm_model``; no selection).

Order of work, so that bad input costs nothing and leaves nothing behind:
1. checks (exit 2, nothing written): formats and precision against the target, each exporter's backend
   and options, int8's image counts (>= 300 validation images; >= 300 calibration images in whole batches
   of the model's batch, no more than the training split where its size is cheap to read), the output
   directory (non-empty OUT needs --force), the validation dataset;
2. selection (exit 2 when nothing fits);
3. export into a temporary directory beside OUT, each artifact validated against the torch descendant
   on real validation images; an exporter error (e.g. an operator TensorRT cannot parse) removes it;
4. EMBEDDING.md, app samples, then manifest.json (written last);
5. published by ``lgp_edge.export.publish``: every validation passed, the temporary directory becomes OUT;
   any failed, OUT is left untouched, the output is kept in ``OUT.failed`` and ``ValidationFailed``
   (exit 1) is raised.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgp_edge.errors import CheckpointError, UsageError
from lgp_edge.export.base import ExportContext, ValidationSet, check_opset_used
from lgp_edge.export.embedding import copy_samples, render, sample_formats, timm_crop
from lgp_edge.export.images import ImageSets, default_data, load_images
from lgp_edge.export.manifest import build_manifest, file_entries
from lgp_edge.export.publish import Staged, check_out, publish
from lgp_edge.export.quantize import batches_reaching, calibration_batch, whole_batches
from lgp_edge.export.registry import get_exporter
from lgp_edge.profiles import check_against_target
from lgp_edge.progress import NULL
from lgp_edge.specs import (
    DescendantRecord,
    DeviceProfile,
    ExportArtifact,
    LatencyRecord,
    ModelRecord,
    PreprocessSpec,
    TargetSpec,
)

log = logging.getLogger(__name__)

DEFAULT_VAL_IMAGES = 1000
DEFAULT_CALIB_IMAGES = 300
VERSIONED = ("onnx", "onnxslim", "onnxscript", "onnxruntime", "openvino", "nncf", "coremltools", "timm")


@dataclass(frozen=True)
class ExportRequest:
    profile: DeviceProfile  # budgets, precision, formats (after command-line overrides)
    target: TargetSpec  # the profile's target
    out: Path  # output directory
    pool: Path | None = None  # pool directory (None = bundled demo pool)
    force: bool = False  # replace a non-empty OUT
    data: str | None = None  # validation dataset (None = the pool's own)
    val_images: int = DEFAULT_VAL_IMAGES  # validation images per artifact (>= 300 for int8)
    calib_images: int | None = None  # int8 calibration images (>= 300, from the training split; None: 300)
    opset: int | None = None  # ONNX opset (None = min(target max opset, 17))
    dynamic_batch: bool = False  # symbolic batch dimension
    descendant: str | None = None  # export this descendant instead of selecting one
    store: Path | None = None  # measurement store (None = default)
    targets_dir: Path | None = None  # --targets-dir
    build_plan: bool = True  # build model.plan when tensorrt and a GPU are here
    model: str | None = None  # --model: a timm ViT name, exported instead of a pool's descendant
    checkpoint: Path | None = None  # --checkpoint: its weights (safetensors, or .pth read with weights_only=True)

    @property
    def calib_requested(self) -> int:
        """--calib-images, else the default in whole calibration batches (300 at batch 8 made 296, and every int8
        export of a batch-8 profile was refused until --calib-images 304 was passed)."""
        if self.calib_images is not None:
            return self.calib_images
        return batches_reaching(DEFAULT_CALIB_IMAGES, self.calibration_batch)

    @property
    def calibration_batch(self) -> int:
        return calibration_batch(self.profile, self.dynamic_batch)

    @property
    def int8_calibration(self) -> int:
        """Calibration images to load for an int8 export (none for another precision): the whole batches of
        ``calib_images``, the images the calibration loops use."""
        if self.profile.precision != "int8":
            return 0
        return whole_batches(self.calib_requested, self.calibration_batch)


@dataclass(frozen=True)
class ExportResult:
    out: Path  # where the artifacts are
    manifest: dict[str, Any]  # contents of manifest.json
    artifacts: tuple[ExportArtifact, ...]


@dataclass(frozen=True)
class Choice:
    """The descendant to export, and why."""

    record: DescendantRecord | ModelRecord  # key, params, FLOPs, top-1
    latency: LatencyRecord | None  # expected latency on the profile's target (None: unknown)
    selection: dict[str, Any]  # the selection (chosen, front, reason) or why there was none
    memory_mb: float | None = None  # what select charges it: weights + activation estimate (None: --model)


@dataclass(frozen=True)
class Job:
    """Everything the export writes from, loaded before OUT is touched."""

    req: ExportRequest
    choice: Choice
    model: Any  # the descendant or the timm model (torch, eval mode)
    preprocess: PreprocessSpec  # what the app does to an image
    images: ImageSets
    validation: ValidationSet
    pool_dir: Path | None = None  # where the pool was loaded from (None for --model)
    manifest: Any = None  # the pool's PoolManifest (None for --model)
    model_info: dict[str, Any] | None = None  # --model: the manifest's "model" entry (name, checkpoint, ...)

    @property
    def pool_id(self) -> str:
        return self.manifest.spec.pool_id if self.manifest is not None else ""


def check_backends(req: ExportRequest) -> None:
    """Each format's packages imported (a broken install refused in one line), once the request and the pool
    have passed the checks that need no backend, before torch, the weights and any work."""
    from lgp_edge.backends import importing

    with importing():
        for fmt in req.profile.formats:
            get_exporter(fmt).check(req.profile, req.target, req.opset)


def preflight(req: ExportRequest, pool_dir: Path | None = None) -> None:
    """Every check that needs no pool loading; raises before anything is written."""
    check_against_target(req.profile, req.target)
    for fmt in req.profile.formats:
        get_exporter(fmt).check(req.profile, req.target, req.opset)
    check_opset_used(req.opset, req.profile.formats)
    if req.dynamic_batch and "coreml" in req.profile.formats:
        raise UsageError("--dynamic-batch: the Core ML package takes one image per prediction (batch 1); leave "
                         "--dynamic-batch out, or pass --format for the other formats only")
    if req.val_images < 1:
        raise UsageError(f"--val-images must be >= 1, got {req.val_images}")
    if req.profile.precision == "int8":
        _check_int8_counts(req)
    elif req.calib_images is not None:
        raise UsageError(f"--calib-images is for int8 exports and profile '{req.profile.name}' exports "
                         f"{req.profile.precision}: leave it out, or add --precision int8")
    check_out(req.out, req.force, pool_dir, req.store, req.checkpoint)


def _check_int8_counts(req: ExportRequest) -> None:
    """Enough validation images for the int8 gates, and enough calibration images in whole batches."""
    from lgp_edge.export.openvino import MIN_CALIBRATION
    from lgp_edge.export.validate import TOLERANCES

    need = TOLERANCES["int8"].min_images
    if req.val_images < need:
        raise UsageError(f"--val-images {req.val_images} is too few for int8: its checks (top-1 agreement >= "
                         f"{TOLERANCES['int8'].min_agreement}, top-1 change <= {TOLERANCES['int8'].max_top1_drop:g} "
                         f"points) need >= {need} validation images (default {DEFAULT_VAL_IMAGES})")
    asked = req.calib_requested
    if asked < MIN_CALIBRATION:
        raise UsageError(f"--calib-images must be >= {MIN_CALIBRATION} for int8, got {asked}")
    # (the whole batches it makes are checked with the dataset's size, check_calibration_size: advice of a count
    # the dataset cannot give is refused in turn)


def slow_int8_cpu(isa: list[str] | None, machine: str) -> bool:
    """An x86 CPU without VNNI or AMX (``isa``: ``host.int8_instructions()``), where int8 runs no faster than
    fp32: an AVX2 EPYC measured 1.03x in ONNX Runtime and 0.60x in OpenVINO (README, int8)."""
    fast = ("avx512_vnni", "avx_vnni", "amx_int8")
    return isa is not None and machine.lower() in ("x86_64", "amd64") and not any(f in isa for f in fast)


def _warn_int8_without_fast_kernels(req: ExportRequest) -> None:
    """An int8 export that runs on this host's CPU (a local target whose runtime is a CPU one), where that CPU has
    no fast int8 kernels: said, and exported as asked."""
    from lgp_edge.profiling.host import cpu_model, int8_instructions
    from lgp_edge.specs import CPU_RUNTIMES

    target = req.target
    if target.connection.kind != "local" or target.runtime not in CPU_RUNTIMES:
        return
    if slow_int8_cpu(int8_instructions(), platform.machine()):
        log.warning("this CPU (%s) has no VNNI or AMX int8 instructions: int8 runs no faster than fp32 here (an AVX2 "
                    "CPU measured 1.03x in ONNX Runtime, 0.60x in OpenVINO), so int8 is the wrong precision for "
                    "target '%s' on it; exported as asked (--precision fp32 for fp32)", cpu_model(), target.name)


def check_calibration_size(req: ExportRequest, data_name: str) -> None:
    """Refuse an int8 calibration count ``data_name``'s training split cannot give (its size, when cheap to know)
    or whose whole batches make fewer images than int8 needs, each with advice the dataset can take (before the
    selection and the images are loaded)."""
    from lgp_edge.data_sources import training_images
    from lgp_edge.export.openvino import MIN_CALIBRATION

    if req.profile.precision != "int8":
        return
    _warn_int8_without_fast_kernels(req)
    n = req.int8_calibration
    have = training_images(data_name)
    if have is not None and have < MIN_CALIBRATION:  # no --calib-images can be taken: do not advise one
        raise UsageError(f"int8 calibration needs at least {MIN_CALIBRATION} training images and '{data_name}' "
                         f"has {have} training images: export fp16 or fp32 (--precision), or calibrate on a dataset "
                         "with more")
    batch = req.calibration_batch
    enough = batches_reaching(MIN_CALIBRATION, batch)
    if have is not None and have < enough:  # every count it could take makes too few or is too many: say so
        raise UsageError(f"int8 calibrates on whole batches of {batch} (the batch of profile '{req.profile.name}'): "
                         f"the {MIN_CALIBRATION} images it needs take {enough} and '{data_name}' has {have} training "
                         "images; pass --dynamic-batch, or export fp16 or fp32 (--precision)")
    if have is not None and n > have:
        raise UsageError(f"--calib-images {req.calib_requested}: '{data_name}' has {have} training images; pass "
                         f"--calib-images {have - have % batch}" + (f" (its whole batches of {batch})" if batch > 1
                                                                    else ""))
    asked = req.calib_requested
    if n < MIN_CALIBRATION:
        raise UsageError(f"int8 calibrates on whole batches of {batch} (the batch of profile '{req.profile.name}'): "
                         f"--calib-images {asked} makes {n} images, fewer than the {MIN_CALIBRATION} int8 needs; "
                         f"pass --calib-images {enough} (a multiple of {batch}) or --dynamic-batch")
    if n < asked:
        log.warning("int8 calibrates on whole batches of %d: %d of the %d calibration images are used", batch, n,
                    asked)


def check_validation_size(req: ExportRequest, images: ImageSets) -> None:
    """An int8 export judged on fewer real validation images than its checks need (the dataset has fewer than
    --val-images) is refused before anything is written."""
    from lgp_edge.export.validate import TOLERANCES

    need = TOLERANCES["int8"].min_images
    if req.profile.precision == "int8" and not images.synthetic and len(images.images) < need:
        raise UsageError(f"'{images.data}' has {len(images.images)} validation images; an int8 export is judged "
                         f"on >= {need}")


def choose(req: ExportRequest, manifest: Any, pool_dir: Path) -> Choice:
    """``--descendant``, else the selection for the profile; with the latency expected on the target. Needs the
    manifest and the store only (no weights)."""
    from lgp_edge.pool.manifest import find_descendant
    from lgp_edge.select import (
        memory_mb,
        named_fits,
        nothing_fits_context,
        open_store,
        profile_latencies,
        records_of,
        select_descendant,
    )

    store = open_store(req.store)
    try:  # one latency lookup serves both the choice and the chosen one's expected latency
        lat = profile_latencies(manifest.spec, req.target, req.profile, store)
    finally:
        store.close()
    if req.descendant is None:
        with nothing_fits_context(pool_dir, req.target, manifest):  # select --json's shape, as select's
            selection = select_descendant(records_of(manifest), lat, req.profile, pool=manifest.spec)
        key, sel = selection.chosen.key, selection.to_dict()
    else:
        key = find_descendant(manifest.spec, req.descendant).key
        sel = {"forced": key, "reason": "--descendant given; no selection"}
    latency = lat.get(key)
    if req.descendant is not None and latency is not None:
        sel["threads"] = latency.threads  # the count its latency is for, as a selection's (EMBEDDING's samples)
    record = manifest.record(key)
    memory = memory_mb(manifest.spec, record, req.profile.precision, req.profile.batch)
    if req.descendant is not None:
        sel.update(named_fits(key, latency, memory, req.profile, "--descendant"))
    return Choice(record=record, latency=latency, selection=sel, memory_mb=memory)


def reference(model: Any, images: ImageSets, reporter: Any) -> ValidationSet:
    """The validation images with the torch model's fp32 logits."""
    from lgp_edge.export.validate import reference_logits

    with reporter.task("torch reference logits", total=1) as task:
        ref = reference_logits(model, images.images)
        task.advance()
    return ValidationSet(images=images.images, labels=images.labels, reference=ref, data=images.data,
                         synthetic=images.synthetic)


def prepare_model(req: ExportRequest, reporter: Any = NULL) -> Job:
    """The pipeline's Job for ``req.model`` (checks first, before torch is imported; nothing is written)."""
    if req.checkpoint is None:
        raise UsageError("--model needs --checkpoint FILE (safetensors, or a timm .pth read with weights_only=True)")
    preflight(req)
    int8_refused = UsageError("int8 calibrates on real training images: pass --data (fashion-mnist or "
                              "imagefolder:PATH)")
    if req.profile.precision == "int8" and req.data == "synthetic":
        raise int8_refused
    if not Path(req.checkpoint).exists():
        raise CheckpointError(f"checkpoint '{req.checkpoint}' does not exist")
    if req.data is not None:
        from lgp_edge.data_sources import check_data_name

        check_data_name(req.data)
    check_backends(req)
    from lgp_edge.export.timm_model import load_model, measured_latency, model_memory_mb
    from lgp_edge.select import named_fits

    loaded = load_model(req.model, req.checkpoint, req.data)
    if req.profile.precision == "int8" and loaded.data == "synthetic":
        raise int8_refused
    check_calibration_size(req, loaded.data)
    lat = measured_latency(loaded.record.key, req, loaded.record.params)
    memory = model_memory_mb(loaded.model, loaded.record.params, req.profile.precision, req.profile.batch)
    sel = {"model": loaded.record.key, "reason": "--model given; no selection",
           **named_fits(loaded.record.key, lat, memory, req.profile, "--model")}
    choice = Choice(record=loaded.record, latency=lat, selection=sel, memory_mb=memory)
    images = load_images(loaded.data, loaded.preprocess, int(loaded.model.num_classes), req.val_images,
                         req.int8_calibration, loaded.data, reporter)
    check_validation_size(req, images)
    return Job(req=req, choice=choice, model=loaded.model, preprocess=loaded.preprocess, images=images,
               validation=reference(loaded.model, images, reporter), model_info=loaded.info)


def check_pool_json(req: ExportRequest, pool_dir: Path, manifest: Any) -> str:
    """The checks of a request against the pool's manifest (a --descendant it has, top-1 to choose by, int8's real
    data, the data's files): the data the images come from."""
    from lgp_edge.data_sources import check_data_name
    from lgp_edge.pool.manifest import find_descendant

    if req.descendant is None:
        manifest.check_top1(pool_dir)  # no choice by top-1 measured on synthetic data for a real-data pool
    else:
        find_descendant(manifest.spec, req.descendant)
    data_name = default_data(manifest.data, req.data)
    check_data_name(data_name)
    if req.profile.precision == "int8" and data_name == "synthetic" and manifest.data != "synthetic":
        raise UsageError(f"int8 calibrates on real training images and this pool was trained on {manifest.data}: "
                         f"pass --data {manifest.data} (or leave --data out)")
    check_calibration_size(req, data_name)
    return data_name


def prepare(req: ExportRequest, reporter: Any = NULL) -> Job:
    """Checks, pool (or --model), choice, images and the torch reference: everything before OUT is touched. The
    checks that need only pool.json come before torch is imported and the weights are loaded."""
    from lgp_edge.pool.manifest import read_manifest, resolve_pool

    if req.model is not None:
        return prepare_model(req, reporter)
    pool_dir = resolve_pool(req.pool)
    preflight(req, pool_dir)
    checked = read_manifest(pool_dir)
    data_name = check_pool_json(req, pool_dir, checked)
    choice = choose(req, checked, pool_dir)  # the store and the selection ("nothing fits") before torch and the weights
    check_backends(req)
    from lgp_edge.pool.pool import load_pool

    pool, manifest = load_pool(pool_dir)  # pool.json again, with the weights it describes
    if manifest != checked:  # another lgp-edge rewrote the pool since: checked and chosen again
        data_name = check_pool_json(req, pool_dir, manifest)
        choice = choose(req, manifest, pool_dir)
    model = pool.descendant(choice.record.key).eval()
    images = load_images(data_name, manifest.preprocess, manifest.spec.ancestry.num_classes, req.val_images,
                         req.int8_calibration, manifest.data, reporter)
    check_validation_size(req, images)
    return Job(req=req, pool_dir=pool_dir, manifest=manifest, choice=choice, model=model,
               preprocess=manifest.preprocess, images=images, validation=reference(model, images, reporter))


def write_artifacts(job: Job, tmp: Path, reporter: Any) -> list[ExportArtifact]:
    """Every format of the profile into ``tmp``, validated; ONNX files made only to convert from removed."""
    req = job.req
    ctx = ExportContext(out_dir=tmp, model=job.model, record=job.choice.record, pool_id=job.pool_id,
                        preprocess=job.preprocess, profile=req.profile, target=req.target, opset=req.opset,
                        dynamic_batch=req.dynamic_batch, validation=job.validation,
                        calibration=job.images.calibration, reporter=reporter, targets_dir=req.targets_dir,
                        build_plan=req.build_plan, calibration_data=job.images.data,
                        crop=timm_crop({"model": job.model_info or {}}))
    artifacts: list[ExportArtifact] = []
    for fmt in req.profile.formats:
        artifacts += get_exporter(fmt).export(ctx)
    shipped = {a.path for a in artifacts} | {f for a in artifacts for f in a.files}
    # an ONNX made only to convert or check from (OpenVINO's source, TensorRT's fp16 check, .ort's int8 source)
    for path in [*ctx.onnx_cache.values(), *ctx.variants.values()]:
        if path.name not in shipped:
            path.unlink()
    return artifacts


def _validation_summary(job: Job) -> dict[str, Any]:
    from lgp_edge.export.validate import top1
    from lgp_edge.profiling.host import cpu_model, int8_instructions

    im, n_cal = job.images, len(job.images.calibration)
    # the machine the artifacts ran on here: an int8 check holds for the CPU whose int8 kernels ran it
    host = {"cpu": cpu_model(), "machine": platform.machine(), "int8_instructions": int8_instructions(),
            "target_is_host": job.req.target.connection.kind == "local"}
    return {"data": im.data, "synthetic": im.synthetic, "images": len(im.images),
            "torch_top1": top1(job.validation.reference, im.labels), "host": host,
            "calibration_images": n_cal, "calibration_data": f"{im.data} (training split)" if n_cal else None,
            "note": ("synthetic images: agreement is a numerical check only; top-1 means nothing" if im.synthetic
                     else "real validation images"
                     + (f"; the {n_cal} int8 calibration images are training images" if n_cal else ""))}


def stage(job: Job, tmp: Path, reporter: Any = NULL) -> Staged:
    """The artifacts, samples, EMBEDDING.md and the manifest (returned, written by ``publish``)."""
    from lgp_edge.export.metadata import tool_versions

    req, pm = job.req, job.manifest
    artifacts = write_artifacts(job, tmp, reporter)
    extra = copy_samples(tmp, sample_formats(artifacts)) + ["EMBEDDING.md"]
    lat = job.choice.latency
    mf = build_manifest(out_dir=tmp, profile=req.profile, target=req.target, pool_dir=job.pool_dir, pool_manifest=pm,
                        record=job.choice.record, latency=lat.to_dict() if lat is not None else None,
                        selection=job.choice.selection, preprocess=job.preprocess, artifacts=artifacts,
                        validation=_validation_summary(job), extra_files=extra, versions=tool_versions(*VERSIONED),
                        model_info=job.model_info, memory_mb=job.choice.memory_mb)
    (tmp / "EMBEDDING.md").write_text(render(mf, tmp), encoding="utf-8")
    mf["files"] = file_entries(tmp, extra)  # now with EMBEDDING.md's hash
    failures = tuple(f"{a.format} {a.path}: {a.validation.note if a.validation else 'not validated'}"
                     for a in artifacts if not (a.validation and a.validation.passed))
    return Staged(manifest=mf, failures=failures, artifacts=tuple(artifacts))


def export_profile(req: ExportRequest, reporter: Any = NULL) -> ExportResult:
    """Run the whole export for one profile (see the module docstring for the order and failure modes)."""
    job = prepare(req, reporter)
    staged = publish(req.out, lambda tmp: stage(job, tmp, reporter),
                     recheck=lambda: check_out(req.out, req.force, job.pool_dir, req.store, req.checkpoint))
    log.info("exported %s for profile %s to %s", job.choice.record.key, req.profile.name, req.out)
    return ExportResult(out=req.out, manifest=staged.manifest, artifacts=staged.artifacts)
