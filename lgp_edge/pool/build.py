"""``pool build``: ancestry -> distilled auxiliary models -> initialised stitch layers -> pool directory."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lgp_edge.data import ImageData, check_data_name, open_data
from lgp_edge.errors import UsageError
from lgp_edge.models.ancestry import check_name, create_ancestry, read_ancestry_dir
from lgp_edge.models.descendant import stitch_specs
from lgp_edge.models.instances import DEPTHS, forward_with_taps, plan_instances
from lgp_edge.models.stitch import INITS, learned_init, lstsq_init
from lgp_edge.pool.distill import DistillObjective
from lgp_edge.pool.pool import LearngenePool, PoolManifest, check_output_dir, save_pool
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import PoolSpec, content_hash
from lgp_edge.train import TrainConfig, fit, is_main, state_digest

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
    init: str = "learned"  # stitch init
    alpha: float = 0.1  # CE weight
    temperature: float = 1.0  # soft CE temperature
    allow_random_ancestry: bool = False  # smoke tests only
    pretrained: bool = False  # timm's pretrained weights (needs a reachable model hub)
    force: bool = False  # overwrite a non-empty output
    lstsq_images: int = 100  # images for the lstsq init
    resume: bool = False  # continue an interrupted distillation


def _check(req: BuildRequest) -> None:
    check_name(req.ancestry)
    if req.depth not in DEPTHS:
        raise UsageError(f"--depth must be one of {', '.join(map(str, DEPTHS))} (the paper's depth groups), "
                         f"got {req.depth}")
    if req.init not in INITS:
        raise UsageError(f"--init must be one of {', '.join(INITS)}")
    if req.chains not in ("pairs", "tsb"):
        raise UsageError("--chains must be 'pairs' or 'tsb'")
    if req.chains == "tsb" and tuple(sorted(req.widths)) != ("b", "s", "ti"):
        raise UsageError("--chains tsb needs --widths ti,s,b")
    if not req.resume:
        check_output_dir(req.out, req.force)
    check_data_name(req.data)
    if req.checkpoint is None and not (req.allow_random_ancestry or req.pretrained):
        raise UsageError(f"ancestry '{req.ancestry}' has no trained weights: pass --ancestry-checkpoint (train one "
                         "with 'lgp-edge ancestry train'), --pretrained (timm hub) or --allow-random-ancestry for a "
                         "smoke test")


def feature_pairs_for_lstsq(pool: LearngenePool, images: torch.Tensor) -> dict[str, list[tuple[torch.Tensor,
                                                                                              torch.Tensor]]]:
    """For every stitch layer, (front features after block j, back features after block k) per config (j, k)."""
    with torch.no_grad():
        taps = {name: forward_with_taps(m.eval(), images) for name, m in pool.models.items()}
    out: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for s in stitch_specs(pool.spec):
        out[s.name] = [(taps[s.front].hidden[j], taps[s.back].hidden[k]) for j, k in s.configs]
    return out


def init_stitches(pool: LearngenePool, method: str, *, matrices: dict[str, list[torch.Tensor]] | None = None,
                  images: torch.Tensor | None = None) -> None:
    """Initialise every stitch layer: ``learned`` from transformation matrices, ``lstsq`` from features."""
    full_width = pool.spec.ancestry.embed_dim
    if method == "learned":
        if not matrices:
            raise UsageError("the learned stitch init needs the distillation's transformation matrices "
                             "(transforms.safetensors), which this pool does not have; use --init lstsq")
        for s in stitch_specs(pool.spec):
            back = None if pool.spec.instance(s.back).embed_dim == full_width else matrices[s.back]
            learned_init(pool.stitches[s.name], matrices[s.front], back)
    elif method == "lstsq":
        if images is None:
            raise UsageError("the lstsq stitch init needs training images")
        for name, pairs in feature_pairs_for_lstsq(pool, images).items():
            lstsq_init(pool.stitches[name], pairs)
    else:
        raise UsageError(f"unknown stitch init '{method}'")


def matrices_from_tensors(tensors: dict[str, torch.Tensor], instances: list[str]) -> dict[str, list[torch.Tensor]]:
    """Group transforms.safetensors entries ``<instance>_b<block>.weight`` by instance."""
    out: dict[str, list[torch.Tensor]] = {i: [] for i in instances}
    for k in sorted(tensors):
        inst, _, rest = k.partition("_b")
        if rest.endswith(".weight") and inst in out:
            out[inst].append(tensors[k].float())
    return out


def lstsq_images(data: ImageData, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` training images without augmentation (SN-Net: ~100 images)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[:n].tolist()
    train = data.train
    was = getattr(train, "train", None)
    if was is not None:
        train.train = False
    try:
        return torch.stack([train[i][0] for i in idx])
    finally:
        if was is not None:
            train.train = was


def build_pool(req: BuildRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> PoolManifest:
    _check(req)
    t0 = time.time()
    teacher, aspec = create_ancestry(req.ancestry, checkpoint=req.checkpoint, pretrained=req.pretrained)
    meta = read_ancestry_dir(req.checkpoint) if req.checkpoint else None
    data = open_data(req.data, img_size=aspec.img_size, in_chans=aspec.in_chans, num_classes=aspec.num_classes)
    if data.info.num_classes != aspec.num_classes:
        raise UsageError(f"--data {req.data} has {data.info.num_classes} classes, ancestry '{req.ancestry}' "
                         f"{aspec.num_classes}")
    spec = PoolSpec(aspec, req.depth, plan_instances(aspec, req.depth, req.widths), chains=req.chains)
    torch.manual_seed(cfg.seed)
    pool = LearngenePool(spec)
    objective = DistillObjective(teacher, pool.models, spec.instances, teacher_dim=aspec.embed_dim,
                                 teacher_depth=aspec.depth, alpha=req.alpha, temperature=req.temperature)
    fingerprint = content_hash({"stage": "distill", "spec": spec, "cfg": cfg.identity(), "alpha": req.alpha,
                                "T": req.temperature, "data": req.data, "teacher": state_digest(teacher)})
    ckpt = Path(req.out) / "distill.ckpt"
    result = fit(objective, data.train, cfg, description=f"distill {'+'.join(i.name for i in spec.instances)}",
                 ckpt_dir=ckpt, resume=req.resume, fingerprint=fingerprint, reporter=reporter,
                 find_unused_parameters=False)  # every student and transform is trained in every step
    matrices = {i.name: objective.matrices(i.name) for i in spec.instances}
    images = lstsq_images(data, req.lstsq_images, cfg.seed) if req.init == "lstsq" else None
    init_stitches(pool, req.init, matrices=matrices, images=images)
    history = ({"stage": "distill", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
                "wall_s": round(time.time() - t0, 1), "data": req.data, "config": cfg.to_dict(),
                "alpha": req.alpha, "temperature": req.temperature, "epoch_loss": list(result.epoch_loss),
                "ancestry_checkpoint": req.checkpoint, "ancestry_top1": (meta or {}).get("top1")},
               {"stage": "stitch-init", "init": req.init})
    manifest = PoolManifest(spec=spec, preprocess=data.info.preprocess, data=data.info.name, stitch_init=req.init,
                            stage="distilled", history=history)
    if is_main():
        manifest = save_pool(req.out, pool, manifest, ancestry=teacher,
                             transforms=objective.transform_tensors())
    return manifest


def new_random_pool(ancestry: nn.Module | str, depth: int, widths: tuple[str, ...] = ("ti", "b"),
                    chains: str = "pairs") -> LearngenePool:
    """A pool with random weights (for ``pool plan`` and latency work, where values do not matter)."""
    if isinstance(ancestry, str):
        _, aspec = create_ancestry(ancestry)
    else:
        from lgp_edge.models.ancestry import spec_of

        aspec = spec_of(ancestry, type(ancestry).__name__, None)
    return LearngenePool(PoolSpec(aspec, depth, plan_instances(aspec, depth, widths), chains=chains)).eval()
