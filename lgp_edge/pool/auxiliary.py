"""``pool distill``: the ancestry distilled into auxiliary models once, for several pools to share.

Distillation is the costly stage of a pool, and most of its cost is the ancestry's forward pass: a
depth-6 Ti student's step is about 5% of the ancestry's. The paper's two depth groups (and SN-Net's Ti
and S anchors, distilled the same way in benchmarks) all learn from the same ancestry on the same images,
so ``pool distill --models ti6,ti9,ti12`` trains them in one run with one ancestry forward pass per batch.
Their parameters are disjoint and the loss is a sum, so each student gets exactly the updates it would get
alone (``DistillObjective``). ``pool build --distilled DIR`` and ``baseline snnet --distilled DIR`` then take
their models from DIR instead of distilling.

A distilled directory holds ``models.safetensors`` (each model's weights under ``<name>.``),
``transforms.safetensors`` (the hidden-state and attention transformation matrices; the stitch layers'
learned init is built from the hidden ones) and ``distilled.json`` (the models' specs, the ancestry weights'
digest, data, recipe, per-model epochs and losses, and the files' hashes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgp_edge.datasets import check_data_name, open_for_ancestry
from lgp_edge.errors import CheckpointError, DataError, UsageError
from lgp_edge.fileio import json_loads, save_safetensors, sha256_file, write_json
from lgp_edge.models.ancestry import check_name, create_ancestry, default_checkpoint, read_ancestry_dir
from lgp_edge.models.instances import DEPTHS, create_auxiliary, instance_spec
from lgp_edge.outdir import atomic_dir, check_output_dir, check_resume_dir, replace_dir
from lgp_edge.pool.distill import (
    DistillObjective,
    attn_transform_name,
    check_width_epochs,
    epoch_groups,
    position_pairs,
    run_distillation,
    transform_name,
)
from lgp_edge.pool.inherit import AUX_INITS, inherit_from_ancestry, selection_transform_
from lgp_edge.pool.pool import safe_load_file
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import AncestrySpec, InstanceSpec, content_hash
from lgp_edge.train import TrainConfig, environment, evaluate, is_main, resume_after, state_digest

RECORD = "distilled.json"
MODELS = "models.safetensors"
TRANSFORMS = "transforms.safetensors"
KIND = "lgp-edge distilled auxiliary models"
_NAME = re.compile(r"(ti|s|b)([0-9]+)")
log = logging.getLogger(__name__)


def auxiliary_instance(ancestry: AncestrySpec, name: str) -> InstanceSpec:
    """The auxiliary model ``<width><depth>`` (``ti6``, ``b9``; ``ti12``/``s12`` = SN-Net's anchors of a
    12-block ancestry): width 1/4, 1/2 or 1 of the ancestry's, heads alike, supervision by width."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise UsageError(f"auxiliary model '{name}' is not <width><depth> with width ti, s or b, e.g. ti6 or b9")
    width, depth = m.group(1), int(m.group(2))
    if depth == ancestry.depth and width == "b":
        raise UsageError(f"'{name}' is the ancestry itself (full width and depth): there is nothing to distil")
    if depth not in (*DEPTHS, ancestry.depth):
        raise UsageError(f"auxiliary model '{name}': depth must be one of {', '.join(map(str, DEPTHS))} (the pools' "
                         f"depth groups) or {ancestry.depth} (the ancestry's, SN-Net's anchors)")
    return instance_spec(ancestry, width, depth)


def start_from_ancestry(objective: DistillObjective, teacher: nn.Module,
                        instances: tuple[InstanceSpec, ...]) -> dict[str, list[int]]:
    """Every student of ``objective`` as a weight selection of ``teacher``, its transformation matrices as the
    matching channel selection (``pool.inherit``). Returns the ancestry blocks each instance inherited."""
    used = {i.name: list(inherit_from_ancestry(objective.students[i.name], teacher, i)) for i in instances}
    for linear in [*objective.transforms.values(), *objective.attn_transforms.values()]:
        selection_transform_(linear)
    return used


def check_distilled_use(distilled: tuple[str, ...], *, resume: bool, width_epochs: tuple, what: str) -> None:
    """``--distilled`` takes ``what`` as 'pool distill' left them: resuming or re-budgeting them here is refused."""
    if distilled and (resume or width_epochs):
        raise UsageError(f"--distilled takes {what} as they were distilled: drop "
                         + ("--resume" if resume else "--width-epochs") + " (give it to 'pool distill')")


@dataclass(frozen=True)
class DistillRequest:
    ancestry: str  # timm name
    checkpoint: str | None  # ancestry weights (file or 'ancestry train' output dir)
    data: str  # dataset name
    out: str  # directory to create
    models: tuple[str, ...]  # auxiliary models, e.g. ("ti6", "ti9", "ti12")
    aux_init: str = "ancestry"  # students start as a weight selection of the ancestry, or "random"
    alpha: float = 0.1  # CE weight
    temperature: float = 1.0  # soft CE temperature
    position_loss: str = "mean"  # the supervised positions' feature losses: "mean" or "sum" (the authors')
    width_epochs: tuple[tuple[str, int], ...] = ()  # (width, epochs): a width's own budget (a separate run)
    allow_random_ancestry: bool = False  # smoke tests only
    force: bool = False  # overwrite an earlier distilled directory
    resume: bool = False  # continue an interrupted distillation
    eval_images: int | None = None  # each model's top-1 alone afterwards on the first N validation images (None: all)


def _check(req: DistillRequest) -> None:
    check_name(req.ancestry)
    if not req.models:
        raise UsageError("--models needs at least one auxiliary model, e.g. ti6,b6")
    if len(set(req.models)) != len(req.models):
        raise UsageError(f"--models names a model twice: {','.join(req.models)}")
    if req.eval_images is not None and req.eval_images < 1:
        raise UsageError(f"--eval-images must be >= 1, got {req.eval_images}")
    if req.aux_init not in AUX_INITS:
        raise UsageError(f"--aux-init must be one of {', '.join(AUX_INITS)}")
    if req.resume:
        check_resume_dir(req.out)
    else:
        check_output_dir(req.out, req.force, kind="distilled")
    check_data_name(req.data)
    if req.checkpoint is None and not req.allow_random_ancestry:
        raise UsageError(f"ancestry '{req.ancestry}' has no trained weights: pass --ancestry-checkpoint (train one "
                         "with 'lgp-edge ancestry train') or --allow-random-ancestry for a smoke test")


def position_identity(position_loss: str) -> dict[str, str]:
    """The position loss in a run's fingerprint: absent for the default, so that runs started before the
    option existed still resume."""
    return {} if position_loss == "mean" else {"position_loss": position_loss}


def distill_auxiliary(req: DistillRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Distil ``req.models`` from the ancestry in one run per epoch budget, each run with one ancestry forward
    pass per batch for all its students; save them to ``req.out``. Returns the record (``distilled.json``)."""
    req = dataclasses.replace(req, checkpoint=default_checkpoint(req.ancestry, req.checkpoint,
                                                                 allow_random=req.allow_random_ancestry))
    _check(req)
    t0 = time.time()
    torch.manual_seed(cfg.seed)  # a random ancestry (--allow-random-ancestry) is the same again on --resume
    teacher, aspec = create_ancestry(req.ancestry, checkpoint=req.checkpoint)
    instances = tuple(sorted((auxiliary_instance(aspec, n) for n in req.models), key=lambda i: (i.depth, i.embed_dim)))
    check_width_epochs(dict(req.width_epochs), [i.width for i in instances])
    meta = read_ancestry_dir(req.checkpoint) if req.checkpoint else None
    data = open_for_ancestry(req.data, teacher, aspec, meta)
    torch.manual_seed(cfg.seed)
    students = nn.ModuleDict({i.name: create_auxiliary(aspec, i) for i in instances})
    objective = DistillObjective(teacher, students, instances, teacher_dim=aspec.embed_dim, teacher_depth=aspec.depth,
                                 alpha=req.alpha, temperature=req.temperature, position_loss=req.position_loss)
    inherited = start_from_ancestry(objective, teacher, instances) if req.aux_init == "ancestry" else None
    digest = state_digest(teacher)
    fingerprint = content_hash({"stage": "distill-auxiliary", "ancestry": aspec.identity(),
                                "models": [i.to_dict() for i in instances], "cfg": cfg.identity(),
                                "alpha": req.alpha, "T": req.temperature, "data": req.data, "teacher": digest,
                                "aux_init": req.aux_init, **position_identity(req.position_loss)})
    width_epochs = dict(req.width_epochs)
    run = run_distillation(objective, data.train, cfg, out=req.out, width_epochs=width_epochs,
                           fingerprint=fingerprint, resume=req.resume, description="distill", reporter=reporter)
    groups = epoch_groups(instances, cfg.epochs, width_epochs)
    try:
        top1, images = (students_top1(students, data.val, max_images=req.eval_images, device=cfg.device,
                                      reporter=reporter) if is_main() else ({}, 0))
    except DataError as exc:  # a damaged validation image: the distillation is in its checkpoints
        raise resume_after(exc, req.out, "the distillation is checkpointed") from None
    record: dict[str, Any] = {
        "kind": KIND, "schema_version": 1, "ancestry": aspec.to_dict(), "teacher": digest, "data": req.data,
        "models": [i.to_dict() for i in instances],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "wall_s": round(time.time() - t0 + run.earlier_wall_s, 1), "train_s": round(run.train_s, 1),
        "config": cfg.to_dict(),
        "environment": environment(),
        "alpha": req.alpha, "temperature": req.temperature, "position_loss": req.position_loss,
        "epochs": {i.name: e for e, group in groups for i in group},
        # one run per epoch budget; its loss per epoch is summed over the run's models
        "runs": [{"models": [i.name for i in group], "epochs": e, "warmup_epochs": run.warmup.get(group[0].name),
                  "epoch_loss": list(run.losses[group[0].name])} for e, group in groups],
        "aux_init": req.aux_init, "inherited_blocks": inherited,
        "ancestry_checkpoint": req.checkpoint, "ancestry_top1": (meta or {}).get("top1"),
        # each model alone right after distillation, on the first top1_images validation images of req.data
        "top1": top1, "top1_images": images}
    if is_main():
        with atomic_dir(req.out) as tmp:  # the checkpoints of the run are left behind with the old directory
            states = {f"{i.name}.{k}": v.detach().contiguous().cpu()
                      for i in instances for k, v in students[i.name].state_dict().items()}
            save_safetensors(states, os.path.join(tmp, MODELS))
            save_safetensors(objective.transform_tensors(), os.path.join(tmp, TRANSFORMS))
            record["files"] = {f: sha256_file(os.path.join(tmp, f)) for f in (MODELS, TRANSFORMS)}
            write_json(os.path.join(tmp, RECORD), record)
            replace_dir(tmp, req.out)
    return record


def students_top1(students: nn.ModuleDict, val: Any, *, max_images: int | None = None, device: str = "cpu",
                  reporter: Reporter = NULL) -> tuple[dict[str, float], int]:
    """Top-1 of each student alone on ``max_images`` images of ``val`` (all when None; ``evaluate``'s spread
    subset), and the number of images evaluated; no student is evaluated on an empty split."""
    n = len(val) if max_images is None else min(max_images, len(val))
    if n == 0:
        log.warning("the data has no validation images: the distilled models are not evaluated")
        return {}, 0
    top1 = {}
    with reporter.task("evaluate distilled models", total=len(students)) as task:
        for name, model in students.items():
            top1[name] = round(evaluate(model, val, max_images=n, device=device), 3)
            task.advance(1, last=f"{name} {top1[name]:.2f}%")
    return top1, n


def after_distillation(students: nn.ModuleDict, val: Any, *, max_images: int | None = None, device: str = "cpu",
                       reporter: Reporter = NULL) -> dict[str, Any]:
    """A pool's distill history fields for each student's top-1 alone right after distillation, on ``max_images``
    images of ``val`` (all when None; ``top1``, ``top1_images``); none without validation images."""
    top1, n = students_top1(students, val, max_images=max_images, device=device, reporter=reporter)
    return {"top1": top1, "top1_images": n} if top1 else {}


@dataclass(frozen=True)
class DistilledModels:
    """Auxiliary models taken from ``pool distill`` directories for one pool (or SN-Net's anchors)."""

    states: dict[str, dict[str, torch.Tensor]]  # instance name -> its model's state dict
    transforms: dict[str, torch.Tensor]  # their transformation matrices (``ti6_b1.weight``, ``attn_ti6_b1.bias``…)
    history: dict[str, Any]  # the pool's "distill" history entry

    def matrices(self, inst: InstanceSpec, teacher_depth: int) -> list[torch.Tensor]:
        """The hidden-state transformation matrices of one model, as ``DistillObjective.matrices``."""
        return [self.transforms[f"{transform_name(inst.name, s)}.weight"] for s, _ in
                position_pairs(inst, teacher_depth)]


def read_distilled(path: str | Path) -> dict[str, Any]:
    """The record of a ``pool distill`` directory; UsageError if ``path`` is not one."""
    rec_path = Path(path) / RECORD
    if not rec_path.is_file():
        raise UsageError(f"--distilled '{path}' is not a 'pool distill' output (no {RECORD}); create it with "
                         "'lgp-edge pool distill'")
    try:
        rec = json_loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"'{rec_path}' cannot be read ({exc}); distil again") from None
    if (not isinstance(rec, dict) or rec.get("kind") != KIND or not isinstance(rec.get("models"), list)
            or not all(isinstance(m, dict) for m in rec["models"])):
        raise CheckpointError(f"'{rec_path}' is not a distilled-models record; distil again")
    return rec


def load_distilled(dirs: tuple[str, ...], instances: tuple[InstanceSpec, ...], *, ancestry: AncestrySpec,
                   teacher: nn.Module, data: str, aux_init: str, alpha: float, temperature: float,
                   position_loss: str = "mean") -> DistilledModels:
    """The models ``instances`` from the ``pool distill`` directories ``dirs``, checked against the ancestry
    weights, data and recipe of the pool being built (each mismatch: one UsageError naming the directory)."""
    records = {d: read_distilled(d) for d in dirs}
    where: dict[str, list[str]] = {}
    for d, rec in records.items():
        for m in rec["models"]:
            where.setdefault(m.get("name"), []).append(d)
    digest = state_digest(teacher)
    used: dict[str, list[str]] = {}
    for inst in instances:
        hits = where.get(inst.name, [])
        if not hits:
            held = ", ".join(sorted(n for n in where if n)) or "none"
            raise UsageError(f"--distilled {','.join(dirs)} holds no auxiliary model '{inst.name}' (it holds {held}); "
                             f"distil it with 'lgp-edge pool distill --models {inst.name} …'")
        if len(hits) > 1:
            raise UsageError(f"auxiliary model '{inst.name}' is in both '{hits[0]}' and '{hits[1]}'; pass one of them")
        d = hits[0]
        rec = records[d]
        spec = next(m for m in rec["models"] if m.get("name") == inst.name)
        if spec != inst.to_dict():
            raise UsageError(f"'{d}' holds a different '{inst.name}' ({spec}) than this pool needs ({inst.to_dict()})")
        for what, theirs, ours in (("ancestry weights", rec.get("teacher"), digest), ("data", rec.get("data"), data),
                                   ("--aux-init", rec.get("aux_init"), aux_init), ("--alpha", rec.get("alpha"), alpha),
                                   ("temperature", rec.get("temperature"), temperature),
                                   ("--position-loss", rec.get("position_loss", "mean"), position_loss)):
            if theirs != ours:
                raise UsageError(f"'{d}' was distilled with other {what} ({theirs}) than this build uses ({ours}); "
                                 "distil again with matching settings")
        if AncestrySpec.from_dict(rec["ancestry"]).identity() != ancestry.identity():
            raise UsageError(f"'{d}' was distilled from a different ancestry architecture")
        used.setdefault(d, []).append(inst.name)
    states: dict[str, dict[str, torch.Tensor]] = {}
    transforms: dict[str, torch.Tensor] = {}
    for d, names in used.items():
        files = {}
        for f in (MODELS, TRANSFORMS):
            p = Path(d) / f
            if not p.is_file() or sha256_file(p) != (records[d].get("files") or {}).get(f):
                raise CheckpointError(f"'{p}' is missing or does not match its hash in {RECORD}; distil again")
            files[f] = safe_load_file(p)
        for name in names:
            inst = next(i for i in instances if i.name == name)
            states[name] = {k[len(name) + 1:]: v for k, v in files[MODELS].items() if k.startswith(f"{name}.")}
            keys = [f"{n}.{p}" for s, _ in position_pairs(inst, ancestry.depth)
                    for n in (transform_name(name, s), attn_transform_name(name, s)) for p in ("weight", "bias")]
            missing = [k for k in keys if k not in files[TRANSFORMS]]
            if missing or not states[name]:
                raise CheckpointError(f"'{d}' lacks the weights or transforms of '{name}' ({(missing or [name])[0]}); "
                                      "distil again")
            transforms.update({k: files[TRANSFORMS][k] for k in keys})
    return DistilledModels(states, transforms, _history(records, used, instances))


def _history(records: dict[str, dict[str, Any]], used: dict[str, list[str]],
             instances: tuple[InstanceSpec, ...]) -> dict[str, Any]:
    """The pool's "distill" history entry, from the records of the distillation runs it took its models from."""
    first = records[next(iter(used))]
    configs = {d: {k: v for k, v in records[d]["config"].items() if k != "epochs"} for d in used}
    out: dict[str, Any] = {
        "stage": "distill", "when": min(records[d]["when"] for d in used), "data": first["data"],
        "config": first["config"], "alpha": first["alpha"], "temperature": first["temperature"],
        "position_loss": first.get("position_loss", "mean"),
        "epochs": {i.name: records[d]["epochs"][i.name] for d, names in used.items() for i in instances
                   if i.name in names},
        # each run distilled these models beside others (one ancestry pass for all); its loss is the sum over them
        "runs": [{**r, "dir": str(d)} for d, names in used.items() for r in records[d]["runs"]
                 if set(r["models"]) & set(names)],
        "aux_init": first["aux_init"],
        "inherited_blocks": ({n: records[d]["inherited_blocks"][n] for d, names in used.items() for n in names}
                             if first.get("inherited_blocks") else None),
        "ancestry_checkpoint": first.get("ancestry_checkpoint"), "ancestry_top1": first.get("ancestry_top1"),
        "distilled": [{"dir": str(d), "models": [m["name"] for m in records[d]["models"]],
                       "wall_s": records[d]["wall_s"], "files": records[d].get("files")} for d in used]}
    top1 = {n: records[d]["top1"][n] for d, names in used.items() for n in names if n in (records[d].get("top1") or {})}
    counts = {records[d].get("top1_images") for d in used}
    if len(top1) == len(instances) and len(counts) == 1:  # runs made before pool distill measured them: none
        out.update(top1={i.name: top1[i.name] for i in instances}, top1_images=counts.pop())
    if len({json.dumps(c, sort_keys=True) for c in configs.values()}) > 1:
        out["config_by_dir"] = {str(d): records[d]["config"] for d in used}
    return out
