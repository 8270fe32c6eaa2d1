"""Stitch-layer initialisation: the paper's ``learned`` rule, SN-Net's ``lstsq``, and ``lstsq-kd``.

- ``learned`` (Learngene Pool, docs/METHOD.md §2): the mean of the Ti student's hidden-state transformation
  matrices, transposed (``models.stitch.learned_init``).
- ``lstsq`` (SN-Net): least squares on ~100 training images' features at each stitch position.
- ``lstsq-kd`` (this package's init, beyond the paper): least squares on more images (``LSTSQ_KD_IMAGES``),
  then the stitch layers alone are trained, instances frozen, on the fine-tuning loss of the stitched
  descendants against the ancestry's logits. A feature fit matches tokens channel by channel; the
  distillation step moves each stitch toward what the back blocks and head need to classify.

``stitch_r2`` measures any init on held-out images: for every stitch layer and each (j, k) config that
uses it, R^2 of ``stitch(front output of block j)`` against the back model's input to block k.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from lgp_edge.datasets import ImageData
from lgp_edge.errors import UsageError
from lgp_edge.models.instances import forward_with_taps
from lgp_edge.models.plan import stitch_specs
from lgp_edge.models.stitch import learned_init, lstsq_init
from lgp_edge.pool.kd import FinetuneObjective, descendant_sampler
from lgp_edge.progress import NULL, Reporter
from lgp_edge.train import TrainConfig, fit

log = logging.getLogger(__name__)

INITS = ("learned", "lstsq", "lstsq-kd")
LSTSQ_KD_IMAGES = 1000  # images for the least-squares step of lstsq-kd


def fit_image_count(init: str, lstsq_images: int) -> int:
    """Training images the least-squares fit of ``init`` uses: ``lstsq_images``, at least LSTSQ_KD_IMAGES
    for lstsq-kd (0 for learned, which fits nothing)."""
    if init == "learned":
        return 0
    return max(lstsq_images, LSTSQ_KD_IMAGES) if init == "lstsq-kd" else lstsq_images


def feature_pairs_for_lstsq(pool, images: torch.Tensor) -> dict[str, list[tuple[torch.Tensor,
                                                                                              torch.Tensor]]]:
    """For every stitch layer, per config (j, k): (front output of block j, back input to block k)."""
    with torch.no_grad():
        taps = {name: forward_with_taps(m.eval(), images) for name, m in pool.models.items()}
    out: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for s in stitch_specs(pool.spec):
        out[s.name] = [(taps[s.front].hidden[j], taps[s.back].block_input(k)) for j, k in s.configs]
    return out


def init_stitches(pool, method: str, *, matrices: dict[str, list[torch.Tensor]] | None = None,
                  images: torch.Tensor | None = None) -> None:
    """Initialise every stitch layer: ``learned`` from transformation matrices, ``lstsq`` / the first step of
    ``lstsq-kd`` from features (the distillation step of ``lstsq-kd`` is ``tune_stitches``)."""
    full_width = pool.spec.ancestry.embed_dim
    if method == "learned":
        if not matrices:
            raise UsageError("the learned stitch init needs the distillation's transformation matrices "
                             "(transforms.safetensors), which this pool does not have; use --init lstsq")
        for s in stitch_specs(pool.spec):
            back = None if pool.spec.instance(s.back).embed_dim == full_width else matrices[s.back]
            learned_init(pool.stitches[s.name], matrices[s.front], back)
    elif method in ("lstsq", "lstsq-kd"):
        if images is None:
            raise UsageError("the lstsq stitch init needs training images")
        for name, pairs in feature_pairs_for_lstsq(pool, images).items():
            lstsq_init(pool.stitches[name], pairs)
    else:
        raise UsageError(f"unknown stitch init '{method}'")


def matrices_from_tensors(tensors: dict[str, torch.Tensor], instances: list[str]) -> dict[str, list[torch.Tensor]]:
    """Group the hidden-state entries of transforms.safetensors, ``<instance>_b<block>.weight``, by instance
    (the attention ones, ``attn_<instance>_b<block>.weight``, are not used by the stitch init)."""
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


@dataclass(frozen=True)
class StitchFit:
    layer: str  # stitch layer name, e.g. "ti6-b6-3"
    config: tuple[int, int]  # (j, k): front block j feeds back block k
    r2: float  # 1 - SSE / SST over every token and channel of the held-out images


def stitch_r2(pool, images: torch.Tensor) -> list[StitchFit]:
    """R^2 of every stitch layer at each of its configs, on ``images`` (use images the init did not see)."""
    out = []
    with torch.no_grad():
        taps = {name: forward_with_taps(m.eval(), images) for name, m in pool.models.items()}
        for s in stitch_specs(pool.spec):
            layer = pool.stitches[s.name]
            for j, k in s.configs:
                pred = layer(taps[s.front].hidden[j]).double()
                target = taps[s.back].block_input(k).double()
                sse = ((pred - target) ** 2).sum()
                sst = ((target - target.mean(dim=(0, 1), keepdim=True)) ** 2).sum()
                out.append(StitchFit(s.name, (j, k), float(1.0 - sse / sst.clamp_min(1e-12))))
    return out


def mean_r2(fits: list[StitchFit]) -> float:
    return sum(f.r2 for f in fits) / max(1, len(fits))


def stitched_indices(pool) -> list[int]:
    """Indices (into ``pool.descendants()``) of the descendants that use at least one stitch layer."""
    return [i for i, d in enumerate(pool.descendants()) if d.stitches]


def stitch_config(cfg: TrainConfig, steps: int, lr: float, train_images: int) -> TrainConfig:
    """The stitch-only distillation step of lstsq-kd: ``steps`` optimizer steps (as many epochs as that takes
    over ``train_images``, each capped equally), 10% warm-up, cosine decay."""
    per_epoch = max(1, train_images // cfg.batch_size)
    epochs = max(1, math.ceil(steps / per_epoch))
    return dataclasses.replace(cfg, epochs=epochs, max_steps_per_epoch=math.ceil(steps / epochs), lr=lr,
                               warmup_epochs=0.1 * epochs, save_every=0)


def tune_stitches(pool, teacher: nn.Module, train_set, cfg: TrainConfig, *, tau: float = 1.0,
                  reporter: Reporter = NULL, ckpt_dir=None, resume: bool = False, fingerprint: str = ""):
    """Train the stitch layers alone (instances frozen), one random stitched descendant per step, on the
    KD loss against ``teacher``. Returns ``train.FitResult``."""
    frozen = [p for p in pool.models.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        objective = FinetuneObjective(pool, teacher, tau)
        return fit(objective, train_set, cfg, description="stitch-only", ckpt_dir=ckpt_dir, resume=resume,
                   fingerprint=fingerprint, step_kwargs=descendant_sampler(cfg.seed, stitched_indices(pool)),
                   reporter=reporter)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def held_out_images(data: ImageData, n: int) -> torch.Tensor:
    """``n`` validation images (no augmentation; a partial evaluation's spread subset, ``evaluation_indices``):
    features no init was fitted on, for ``stitch_r2``."""
    from lgp_edge.train import evaluation_indices

    return torch.stack([data.val[i][0] for i in evaluation_indices(len(data.val), n)])


def r2_summary(pool, images: torch.Tensor) -> dict:
    """Mean stitch R^2 and the per-config values, for a pool's history."""
    fits = stitch_r2(pool, images)
    return {"r2_mean": round(mean_r2(fits), 4), "r2_images": int(images.shape[0]),
            "r2": [{"layer": f.layer, "config": list(f.config), "r2": round(f.r2, 4)} for f in fits]}
