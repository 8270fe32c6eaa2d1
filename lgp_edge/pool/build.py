"""``pool build``: ancestry -> distilled auxiliary models -> initialised stitch layers -> pool directory."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lgp_edge.datasets import check_data_name, open_for_ancestry
from lgp_edge.errors import DataError, UsageError
from lgp_edge.models.ancestry import check_name, create_ancestry, default_checkpoint, read_ancestry_dir
from lgp_edge.models.instances import DEPTHS, plan_instances
from lgp_edge.models.plan import check_pool_widths
from lgp_edge.outdir import check_output_dir, check_resume_dir
from lgp_edge.pool.auxiliary import (
    after_distillation,
    check_distilled_use,
    load_distilled,
    position_identity,
    start_from_ancestry,
)
from lgp_edge.pool.distill import DistillObjective, check_width_epochs, distill_history, run_distillation
from lgp_edge.pool.inherit import AUX_INITS
from lgp_edge.pool.pool import LearngenePool, PoolManifest, save_pool
from lgp_edge.pool.stitch_init import (
    INITS,
    fit_image_count,
    held_out_images,
    init_stitches,
    lstsq_images,
    r2_summary,
    stitch_config,
    tune_stitches,
)
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import PoolSpec, content_hash
from lgp_edge.train import TrainConfig, environment, is_main, resume_after, state_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildRequest:
    ancestry: str  # timm name
    checkpoint: str | None  # ancestry weights (file or 'ancestry train' output dir)
    data: str  # dataset name
    out: str  # pool directory to create
    depth: int = 6  # depth group
    widths: tuple[str, ...] = ("ti", "b")  # auxiliary widths
    chains: str = "pairs"  # descendant families
    init: str = "lstsq-kd"  # stitch init
    aux_init: str = "ancestry"  # auxiliary models: "ancestry" (weight selection) or "random" (the paper's)
    alpha: float = 0.1  # CE weight
    temperature: float = 1.0  # soft CE temperature
    position_loss: str = "mean"  # the supervised positions' feature losses: "mean" or "sum" (the authors')
    allow_random_ancestry: bool = False  # smoke tests only
    pretrained: bool = False  # timm's pretrained weights (needs a reachable model hub)
    force: bool = False  # overwrite a non-empty output
    lstsq_images: int = 100  # images for the lstsq init (lstsq-kd uses at least LSTSQ_KD_IMAGES)
    resume: bool = False  # continue an interrupted distillation
    stitch_steps: int = 300  # lstsq-kd: steps of stitch-only distillation after the least-squares fit
    stitch_lr: float = 1e-3  # lstsq-kd: peak learning rate of those steps
    width_epochs: tuple[tuple[str, int], ...] = ()  # (width, epochs): a width's own distillation budget
    distilled: tuple[str, ...] = ()  # 'pool distill' directories to take the auxiliary models from (no distilling)
    eval_images: int | None = None  # each instance's top-1 alone after distillation on the first N validation images


def _check(req: BuildRequest) -> None:
    check_name(req.ancestry)
    if req.depth not in DEPTHS:
        raise UsageError(f"--depth must be one of {', '.join(map(str, DEPTHS))} (the paper's depth groups), "
                         f"got {req.depth}")
    if req.init not in INITS:
        raise UsageError(f"--init must be one of {', '.join(INITS)}")
    if req.aux_init not in AUX_INITS:
        raise UsageError(f"--aux-init must be one of {', '.join(AUX_INITS)}")
    if req.eval_images is not None and req.eval_images < 1:
        raise UsageError(f"--eval-images must be >= 1, got {req.eval_images}")
    if req.eval_images is not None and req.distilled:
        raise UsageError("--distilled takes the auxiliary models with the top-1 their 'pool distill' run measured: "
                         "drop --eval-images (give it to 'pool distill')")
    if req.stitch_steps < 0 or not (0 < req.stitch_lr < 1):
        raise UsageError("--stitch-steps must be >= 0 and --stitch-lr in (0, 1)")
    check_pool_widths(req.widths)
    check_width_epochs(dict(req.width_epochs), req.widths)
    if req.chains not in ("pairs", "tsb"):
        raise UsageError("--chains must be 'pairs' or 'tsb'")
    if req.chains == "tsb" and tuple(sorted(req.widths)) != ("b", "s", "ti"):
        raise UsageError("--chains tsb needs --widths ti,s,b")
    check_distilled_use(req.distilled, resume=req.resume, width_epochs=req.width_epochs, what="the auxiliary models")
    if req.resume:
        check_resume_dir(req.out)
    else:
        check_output_dir(req.out, req.force, kind="pool")
    check_data_name(req.data)
    if req.checkpoint is None and not (req.allow_random_ancestry or req.pretrained):
        raise UsageError(f"ancestry '{req.ancestry}' has no trained weights: pass --ancestry-checkpoint (train one "
                         "with 'lgp-edge ancestry train'), --pretrained (timm hub) or --allow-random-ancestry for a "
                         "smoke test")


def _stitch_stage(req: BuildRequest, cfg: TrainConfig, pool: LearngenePool, teacher: nn.Module, data: Any,
                  matrices: dict[str, Any] | None, reporter: Reporter) -> dict[str, Any]:
    """The stitches initialised (and, for lstsq-kd, tuned alone) and their R^2 on held-out images: the pool.json
    history entry of the stitch init."""
    n_images = fit_image_count(req.init, req.lstsq_images)
    images = lstsq_images(data, n_images, cfg.seed) if n_images else None
    init_stitches(pool, req.init, matrices=matrices, images=images)
    init_entry: dict[str, Any] = {"stage": "stitch-init", "init": req.init}
    if images is not None:
        init_entry["images"] = int(images.shape[0])
    if req.init == "lstsq-kd" and req.stitch_steps:
        scfg = stitch_config(cfg, req.stitch_steps, req.stitch_lr, len(data.train))
        tuned = tune_stitches(pool, teacher, data.train, scfg, reporter=reporter)
        init_entry.update(stitch_steps=tuned.steps, config=scfg.to_dict(), epoch_loss=list(tuned.epoch_loss))
    init_entry.update(r2_summary(pool, held_out_images(data, 500)))
    return init_entry


def build_pool(req: BuildRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> PoolManifest:
    req = dataclasses.replace(req, checkpoint=default_checkpoint(req.ancestry, req.checkpoint,
                                                                 pretrained=req.pretrained,
                                                                 allow_random=req.allow_random_ancestry))
    _check(req)
    t0 = time.time()
    torch.manual_seed(cfg.seed)  # a random ancestry (--allow-random-ancestry) is the same again on --resume
    teacher, aspec = create_ancestry(req.ancestry, checkpoint=req.checkpoint, pretrained=req.pretrained)
    meta = read_ancestry_dir(req.checkpoint) if req.checkpoint else None
    instances = plan_instances(aspec, req.depth, req.widths)  # before the data: an ancestry it cannot split
    data = open_for_ancestry(req.data, teacher, aspec, meta)
    spec = PoolSpec(aspec, req.depth, instances, chains=req.chains)
    torch.manual_seed(cfg.seed)
    pool = LearngenePool(spec)
    if req.distilled:
        taken = load_distilled(req.distilled, spec.instances, ancestry=aspec, teacher=teacher, data=req.data,
                               aux_init=req.aux_init, alpha=req.alpha, temperature=req.temperature,
                               position_loss=req.position_loss)
        for inst in spec.instances:
            pool.models[inst.name].load_state_dict(taken.states[inst.name], strict=True)
        matrices = {i.name: taken.matrices(i, aspec.depth) for i in spec.instances}
        transforms = taken.transforms
        distilled = {k: v for k, v in taken.history.items() if k != "stage"}
        earlier = 0.0
    else:
        objective = DistillObjective(teacher, pool.models, spec.instances, teacher_dim=aspec.embed_dim,
                                     teacher_depth=aspec.depth, alpha=req.alpha, temperature=req.temperature,
                                     position_loss=req.position_loss)
        inherited = start_from_ancestry(objective, teacher, spec.instances) if req.aux_init == "ancestry" else None
        fingerprint = content_hash({"stage": "distill", "spec": spec.identity(), "cfg": cfg.identity(),
                                    "alpha": req.alpha, "T": req.temperature, "data": req.data,
                                    "teacher": state_digest(teacher), "aux_init": req.aux_init,
                                    **position_identity(req.position_loss)})
        width_epochs = dict(req.width_epochs)
        run = run_distillation(objective, data.train, cfg, out=req.out, width_epochs=width_epochs,
                               fingerprint=fingerprint, resume=req.resume, description="distill", reporter=reporter)
        matrices = {i.name: objective.matrices(i.name) for i in spec.instances}
        transforms = objective.transform_tensors()
        earlier = run.earlier_wall_s
        distilled = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "data": req.data,
                     "config": cfg.to_dict(), "environment": environment(), "alpha": req.alpha,
                     "temperature": req.temperature,
                     "position_loss": req.position_loss,
                     **distill_history(run, spec.instances, cfg.epochs, width_epochs),
                     "aux_init": req.aux_init, "inherited_blocks": inherited,
                     "ancestry_checkpoint": req.checkpoint, "ancestry_top1": (meta or {}).get("top1")}
    try:
        init_entry = _stitch_stage(req, cfg, pool, teacher, data, matrices, reporter)
        if not req.distilled and is_main():
            # each instance model alone right after distillation: the stitch tuning trains the stitches alone, so
            # they are the same now; evaluated after its collectives, which the other ranks would wait in meanwhile
            distilled.update(after_distillation(pool.models, data.val, max_images=req.eval_images,
                                                device=cfg.device, reporter=reporter))
    except DataError as exc:  # a damaged image read after the distillation, which its checkpoints keep
        if req.distilled:
            raise
        raise resume_after(exc, req.out, "the distillation is checkpointed") from None
    history = ({"stage": "distill", "when": distilled.pop("when"),
                "wall_s": round(time.time() - t0 + earlier, 1), **distilled},  # with --distilled: assembling only
               init_entry)
    manifest = PoolManifest(spec=spec, preprocess=data.info.preprocess, data=data.info.name, stitch_init=req.init,
                            stage="distilled", history=history)
    if is_main():
        manifest = save_pool(req.out, pool, manifest, ancestry=teacher,
                             transforms=transforms)
    return manifest

