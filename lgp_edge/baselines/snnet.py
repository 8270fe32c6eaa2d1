"""SN-Net (Pan et al., CVPR 2023), the paper's main baseline (docs/METHOD.md §5).

Three anchors of full depth (Ti, S, B: 12 blocks each at 1/4, 1/2 and 1 of the widest anchor's width),
stitched with nearest stitching (Ti->S and S->B only) and paired stitching (window 2, stride 1):
11 stitch layers and 34 configs per pair, 3 + 34 + 34 = 71 configs for 12-block anchors.

A stitched SN-Net config is structurally a :class:`~lgp_edge.models.descendant.Descendant` over
12-block models, so SN-Net is stored as a :class:`~lgp_edge.pool.pool.LearngenePool` whose "instances"
are the anchors (``ti12``, ``s12``, ``b12``). It therefore reuses the pool's save/load, fine-tuning
(one random config per step, KD from the ancestry), lstsq stitch init and evaluation unchanged.

Anchors, as this replication trains them: B is the ancestry itself (no pretrained DeiT-B exists offline);
Ti and S are distilled from the ancestry with the same recipe and budget the Learngene Pool's auxiliary
models get (``DistillObjective``: Ti "front,end", S "end"), since no pretrained DeiT is reachable.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lgp_edge.datasets import check_data_name, open_for_ancestry
from lgp_edge.errors import CheckpointError, DataError, UsageError
from lgp_edge.models.ancestry import create_ancestry, default_checkpoint, read_ancestry_dir
from lgp_edge.models.instances import SUPERVISION, WIDTH_DIVISOR, instance_spec
from lgp_edge.outdir import check_output_dir, check_resume_dir
from lgp_edge.pool.auxiliary import (
    after_distillation,
    check_distilled_use,
    load_distilled,
    read_distilled,
    start_from_ancestry,
)
from lgp_edge.pool.distill import DistillObjective, check_width_epochs, distill_history, run_distillation
from lgp_edge.pool.inherit import AUX_INITS
from lgp_edge.pool.pool import LearngenePool, PoolManifest, save_pool
from lgp_edge.pool.stitch_init import init_stitches, lstsq_images
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import AncestrySpec, InstanceSpec, PoolSpec, content_hash
from lgp_edge.train import TrainConfig, config_identity, environment, is_main, resume_after, state_digest

log = logging.getLogger(__name__)

DEIT_ANCHORS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
CODES = {div: code for code, div in WIDTH_DIVISOR.items()}  # 4 -> "ti", 2 -> "s", 1 -> "b"


def anchor_instances(widest: AncestrySpec, anchors: list[AncestrySpec] | None = None) -> tuple[InstanceSpec, ...]:
    """Instance specs of the anchors, narrowest first.

    ``anchors`` None: Ti/S/B at 1/4, 1/2, 1 of ``widest`` (heads scaled alike), full depth.
    Otherwise the given anchor specs (e.g. DeiT-Ti/S/B); they must share ``widest``'s input, patching,
    classes, depth and MLP ratio, since a stitched config mixes their blocks.
    """
    if anchors is None:
        return tuple(instance_spec(widest, CODES[div], widest.depth) for div in (4, 2, 1))
    out = []
    for a in sorted(anchors, key=lambda s: s.embed_dim):
        for field in ("img_size", "in_chans", "num_classes", "patch_size", "depth", "mlp_ratio"):
            if getattr(a, field) != getattr(widest, field):
                raise UsageError(f"anchor '{a.name}' has {field} {getattr(a, field)}, the widest anchor "
                                 f"'{widest.name}' {getattr(widest, field)}: anchors must match to be stitched")
        div = widest.embed_dim // a.embed_dim
        if widest.embed_dim % a.embed_dim or div not in CODES:
            raise UsageError(f"anchor '{a.name}' has width {a.embed_dim}; SN-Net anchors here must be 1/4, 1/2 or 1 "
                             f"of the widest ({widest.embed_dim})")
        code = CODES[div]
        out.append(InstanceSpec(name=f"{code}{a.depth}", width=code, embed_dim=a.embed_dim, depth=a.depth,
                                num_heads=a.num_heads, supervision=SUPERVISION[code]))
    if len({i.name for i in out}) != len(out):
        raise UsageError("two anchors have the same width; give anchors of distinct widths")
    return tuple(out)


def snnet_spec(widest: AncestrySpec, anchors: list[AncestrySpec] | None = None) -> PoolSpec:
    """The SN-Net model family as a pool spec: anchors of full depth, neighbour pairs stitched."""
    return PoolSpec(widest, widest.depth, anchor_instances(widest, anchors), chains="pairs")


def plan_snnet(anchor_names: list[str]) -> tuple[PoolSpec, list[str]]:
    """SN-Net over the named timm anchors (e.g. DeiT-Ti/S/B), for params/FLOPs: the spec alone (their sizes
    are counted from it; nothing is built).

    Returns the spec and the anchor names in its instance order (narrowest first).
    """
    from lgp_edge.models.ancestry import ancestry_spec

    if len(anchor_names) < 2:
        raise UsageError("--anchors needs at least two timm names, e.g. "
                         + ",".join(DEIT_ANCHORS))
    specs = [ancestry_spec(name) for name in anchor_names]
    widest = max(specs, key=lambda s: s.embed_dim)
    ordered = [s.name for s in sorted(specs, key=lambda s: s.embed_dim)]
    return snnet_spec(widest, specs), ordered


@dataclass(frozen=True)
class SNNetRequest:
    ancestry: str  # timm name of the ancestry (= the B anchor)
    checkpoint: str | None  # ancestry weights
    data: str  # dataset
    out: str  # SN-Net directory (a pool directory whose instances are the anchors)
    alpha: float = 0.1  # CE weight of the anchors' distillation (same as the pool's auxiliary models)
    temperature: float = 1.0  # soft CE temperature of the anchors' distillation
    lstsq_images: int = 100  # images for the lstsq stitch init (SN-Net: 100)
    allow_random_ancestry: bool = False  # smoke tests only
    force: bool = False  # overwrite a non-empty output
    resume: bool = False  # continue an interrupted anchor distillation
    aux_init: str = "ancestry"  # narrow anchors start as a weight selection of the ancestry (as the pool's models)
    width_epochs: tuple[tuple[str, int], ...] = ()  # (width, epochs): a narrow anchor's own distillation budget
    distilled: tuple[str, ...] = ()  # 'pool distill' directories holding the Ti and S anchors (no distilling)


def built_anchors(req: SNNetRequest, cfg: TrainConfig) -> PoolManifest | None:
    """The SN-Net pool a stopped run saved in ``req.out`` before fine-tuning (None when it saved none), refused
    as another run's when its anchors were built with other settings than ``req`` and ``cfg`` (those a resume may
    change aside: --save-every, --workers, --device)."""
    from lgp_edge.pool.manifest import MANIFEST, read_manifest

    if not (Path(req.out) / MANIFEST).is_file():
        return None
    manifest = read_manifest(req.out)
    first = manifest.history[0] if manifest.history else {}
    if first.get("stage") != "snnet-anchors":
        return None
    narrow = manifest.spec.instances[:-1]  # the distilled anchors (B, the last, is the ancestry)
    taken = first.get("distilled")  # assembled from 'pool distill' outputs: the hashes of the weights taken
    asked = {"distilled": _distilled_files(req.distilled, narrow) if req.distilled else None, "data": req.data,
             "aux_init": req.aux_init, "ancestry": req.ancestry, "ancestry_checkpoint": req.checkpoint}
    saved = {"distilled": sorted(json.dumps(e.get("files"), sort_keys=True) for e in taken) if taken else None,
             "data": first.get("data"), "aux_init": first.get("aux_init"), "ancestry": manifest.spec.ancestry.name,
             "ancestry_checkpoint": first.get("ancestry_checkpoint")}
    if not req.distilled:  # distilled by this run: with its settings (those a resume may change aside)
        asked.update(config=cfg.identity(),
                     epochs={i.name: dict(req.width_epochs).get(i.width, cfg.epochs) for i in narrow})
        saved.update(config=config_identity(first.get("config") or {}), epochs=first.get("epochs"))
    for d in (asked, saved):  # one file named two ways ('anc', /abs/anc) is one checkpoint
        if isinstance(d["ancestry_checkpoint"], str):
            d["ancestry_checkpoint"] = os.path.realpath(d["ancestry_checkpoint"])
    if asked != saved:
        raise CheckpointError(f"the SN-Net anchors in '{req.out}' belong to another run ({_differing(asked, saved)}); "
                              "resume with the original arguments, or start again with --force")
    return manifest


def _differing(asked: dict[str, Any], saved: dict[str, Any]) -> str:
    """'its data differs', 'its config, epochs differ': the settings of a resume that are not the run's."""
    differ = sorted(k for k in asked if asked[k] != saved.get(k))
    return f"its {', '.join(differ)} {'differs' if len(differ) == 1 else 'differ'}"


def check_finetuned_as_asked(manifest: PoolManifest, out: str, cfg: TrainConfig, recipe: dict[str, Any],
                             data: str) -> None:
    """A finished run resumed: refused (CheckpointError) when its fine-tuning ran with other settings than
    ``cfg`` and ``recipe`` (``finetune_recipe``'s fields) on other ``data``, those a resume may change aside."""
    entry = next((h for h in reversed(manifest.history) if h.get("stage") == "finetune"), {})
    saved = {"config": config_identity(entry.get("config") or {}), "data": entry.get("data"),
             **{k: entry.get(k) for k in recipe}}
    asked = {"config": cfg.identity(), "data": data, **recipe}
    if saved != asked:
        raise CheckpointError(f"the SN-Net pool in '{out}' is finished, fine-tuned with other settings "
                              f"({_differing(asked, saved)}); resume with the original arguments, or start again "
                              "with --force")


def _distilled_files(dirs: tuple[str, ...], narrow: tuple[InstanceSpec, ...]) -> list[str]:
    """The weight files' hashes of the 'pool distill' outputs among ``dirs`` that hold one of the anchors
    ``narrow``, as the anchors' history records those it took (where they lie may change, their weights not)."""
    names = {i.name for i in narrow}
    records = [read_distilled(d) for d in dirs]
    return sorted(json.dumps(r.get("files"), sort_keys=True) for r in records
                  if names & {m.get("name") for m in r["models"]})


def build_snnet(req: SNNetRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> PoolManifest:
    """Anchors (B = ancestry, Ti/S distilled from it with ``cfg``) + lstsq-initialised stitches, saved as a pool."""
    import dataclasses

    req = dataclasses.replace(req, checkpoint=default_checkpoint(req.ancestry, req.checkpoint,
                                                                 allow_random=req.allow_random_ancestry))
    # --resume with --distilled continues the fine-tuning of the anchors assembled from them (built_anchors)
    check_distilled_use(req.distilled, resume=False, width_epochs=req.width_epochs, what="the anchors")
    if req.resume:
        check_resume_dir(req.out)
    else:
        check_output_dir(req.out, req.force, kind="pool")
    check_data_name(req.data)
    if req.aux_init not in AUX_INITS:
        raise UsageError(f"--aux-init must be one of {', '.join(AUX_INITS)}")
    check_width_epochs(dict(req.width_epochs), ("ti", "s"))  # the distilled anchors; B is the ancestry
    if req.checkpoint is None and not req.allow_random_ancestry:
        raise UsageError(f"ancestry '{req.ancestry}' has no trained weights: pass --ancestry-checkpoint or "
                         "--allow-random-ancestry for a smoke test")
    built = built_anchors(req, cfg) if req.resume else None
    if built is not None:  # stopped after the anchors were saved (while fine-tuning): they are this run's
        return built
    if req.distilled and req.resume:  # nothing saved: assembling them is not checkpointed (it takes seconds)
        raise UsageError(f"'{req.out}' holds no SN-Net anchors assembled from --distilled to resume; run again "
                         "without --resume (with --force to replace what it holds)")
    t0 = time.time()
    torch.manual_seed(cfg.seed)  # a random ancestry (smoke tests) is the same as 'pool distill' makes
    teacher, aspec = create_ancestry(req.ancestry, checkpoint=req.checkpoint)
    meta = read_ancestry_dir(req.checkpoint) if req.checkpoint else None
    data = open_for_ancestry(req.data, teacher, aspec, meta)
    spec = snnet_spec(aspec)
    torch.manual_seed(cfg.seed)
    pool = LearngenePool(spec)
    widest = spec.instances[-1]
    pool.models[widest.name].load_state_dict(teacher.state_dict(), strict=True)  # B anchor = the ancestry
    narrow = tuple(i for i in spec.instances if i.name != widest.name)
    if req.distilled:
        taken = load_distilled(req.distilled, narrow, ancestry=aspec, teacher=teacher, data=req.data,
                               aux_init=req.aux_init, alpha=req.alpha, temperature=req.temperature)
        for inst in narrow:
            pool.models[inst.name].load_state_dict(taken.states[inst.name], strict=True)
        distilled = {k: v for k, v in taken.history.items() if k != "stage"}
        earlier = 0.0
    else:
        students = torch.nn.ModuleDict({i.name: pool.models[i.name] for i in narrow})
        objective = DistillObjective(teacher, students, narrow, teacher_dim=aspec.embed_dim,
                                     teacher_depth=aspec.depth, alpha=req.alpha, temperature=req.temperature)
        inherited = start_from_ancestry(objective, teacher, narrow) if req.aux_init == "ancestry" else None
        fingerprint = content_hash({"stage": "snnet-anchors", "spec": spec.identity(), "cfg": cfg.identity(),
                                    "alpha": req.alpha, "T": req.temperature, "data": req.data,
                                    "aux_init": req.aux_init, "teacher": state_digest(teacher)})
        width_epochs = dict(req.width_epochs)
        run = run_distillation(objective, data.train, cfg, out=req.out, width_epochs=width_epochs,
                               fingerprint=fingerprint, resume=req.resume, description="distill anchors",
                               reporter=reporter)
        earlier = run.earlier_wall_s
        distilled = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "data": req.data,
                     "config": cfg.to_dict(), "environment": environment(), "alpha": req.alpha,
                     "temperature": req.temperature,
                     **distill_history(run, narrow, cfg.epochs, width_epochs), "aux_init": req.aux_init,
                     "inherited_blocks": inherited, "ancestry_checkpoint": req.checkpoint,
                     "ancestry_top1": (meta or {}).get("top1")}
    try:  # images read after the distillation: the validation set, the training images of the lstsq init
        if not req.distilled and is_main():  # each distilled anchor alone right after distillation
            distilled.update(after_distillation(students, data.val, device=cfg.device, reporter=reporter))
        init_stitches(pool, "lstsq", images=lstsq_images(data, req.lstsq_images, cfg.seed))
    except DataError as exc:  # a damaged one: the distillation (if this run made it) is in its checkpoints
        if req.distilled:
            raise
        raise resume_after(exc, req.out, "the anchors' distillation is checkpointed") from None
    history = ({"stage": "snnet-anchors", "when": distilled.pop("when"),
                "wall_s": round(time.time() - t0 + earlier, 1), **distilled,  # with --distilled: assembling only
                "anchors": {i.name: ("ancestry" if i.name == widest.name else "distilled from the ancestry")
                            for i in spec.instances}},
               {"stage": "stitch-init", "init": "lstsq", "images": req.lstsq_images})
    manifest = PoolManifest(spec=spec, preprocess=data.info.preprocess, data=data.info.name, stitch_init="lstsq",
                            stage="distilled", history=history)
    if is_main():
        manifest = save_pool(req.out, pool, manifest, ancestry=teacher)  # the checkpoints are not carried over
    return manifest
