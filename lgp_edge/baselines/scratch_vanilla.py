"""Baselines that train single models with cross-entropy: scratch and vanilla learngene (docs/METHOD.md §5).

Each model is a :class:`~lgp_edge.models.descendant.Descendant` of a freshly initialised depth-6 Ti/B
pool, so its architecture, params and FLOPs are computed exactly like a Learngene Pool descendant's.
Training goes through :func:`lgp_edge.train.fit` with :class:`~lgp_edge.pool.ancestry_train.SupervisedObjective`
(cross-entropy with label smoothing 0.1, the ancestry's recipe); no teacher.

- scratch: the chosen descendant architectures, every weight random.
- vanilla learngene (Wang et al. 2022, the paper's second baseline): the ancestry's last 3 blocks plus
  its norm and head are the learngene; below them ``n`` random narrow (Ti) blocks -> Linear -> random wide
  blocks, to 6 blocks in all. ``n = 0`` is 3 random wide blocks + the learngene.
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
from lgp_edge.errors import UsageError
from lgp_edge.models.ancestry import create_ancestry, default_checkpoint, read_ancestry_dir
from lgp_edge.models.descendant import count_params
from lgp_edge.models.instances import plan_instances
from lgp_edge.models.plan import descendant_flops
from lgp_edge.outdir import atomic_dir, check_output_dir, replace_dir
from lgp_edge.pool.ancestry_train import SupervisedObjective
from lgp_edge.pool.pool import LearngenePool
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import AncestrySpec, DescendantSpec, PoolSpec
from lgp_edge.train import TrainConfig, environment, evaluate, fit, is_main

log = logging.getLogger(__name__)

RESULTS = "results.json"
DEPTH = 6  # descendants of the depth-6 Ti/B family
LEARNGENE_BLOCKS = 3  # vanilla learngene: the ancestry's last 3 blocks


def family(aspec: AncestrySpec) -> PoolSpec:
    """The depth-6 Ti/B pool spec whose descendants the single-model baselines train."""
    return PoolSpec(aspec, DEPTH, plan_instances(aspec, DEPTH, ("ti", "b")))


def default_scratch_keys(spec: PoolSpec) -> list[str]:
    """Three sizes: the smallest, the median-FLOPs and the largest descendant of the depth-6 family."""
    descs = sorted(LearngenePool(spec).descendants(), key=lambda d: (descendant_flops(spec, d), d.key))
    picks = [descs[0], descs[len(descs) // 2], descs[-1]]
    return list(dict.fromkeys(d.key for d in picks))


def vanilla_key(spec: PoolSpec, narrow: int) -> str:
    """Key of the vanilla-learngene descendant with ``narrow`` random Ti blocks at the bottom."""
    ti, b = (i.name for i in spec.instances)
    if not 0 <= narrow <= DEPTH - LEARNGENE_BLOCKS:
        raise UsageError(f"--narrow values must be in 0..{DEPTH - LEARNGENE_BLOCKS} (the learngene takes the top "
                         f"{LEARNGENE_BLOCKS} of {DEPTH} blocks), got {narrow}")
    return f"{b}.0-{DEPTH - 1}" if narrow == 0 else f"{ti}.0-{narrow - 1}+{b}.{narrow}-{DEPTH - 1}"


def inherit_learngene(pool: LearngenePool, ancestry: torch.nn.Module) -> None:
    """Copy the ancestry's last 3 blocks, norm and head into the top of the pool's B model."""
    b = pool.models[pool.spec.instances[-1].name]
    with torch.no_grad():
        for i in range(LEARNGENE_BLOCKS):
            b.blocks[DEPTH - LEARNGENE_BLOCKS + i].load_state_dict(
                ancestry.blocks[len(ancestry.blocks) - LEARNGENE_BLOCKS + i].state_dict())
        b.norm.load_state_dict(ancestry.norm.state_dict())
        b.head.load_state_dict(ancestry.head.state_dict())


@dataclass(frozen=True)
class SingleRequest:
    method: str  # "scratch" or "vanilla"
    ancestry: str  # timm name (scratch: architecture source only; vanilla: learngene source)
    checkpoint: str | None  # ancestry weights (vanilla needs them)
    data: str  # dataset
    out: str  # output directory: results.json + <key>.safetensors per model
    keys: tuple[str, ...] = ()  # scratch: descendant keys (default: three sizes)
    narrow: tuple[int, ...] = (3, 2, 1, 0)  # vanilla: random Ti blocks below the learngene
    smoothing: float = 0.1  # label smoothing of the CE loss
    eval_images: int | None = None  # evaluate on the first N validation images (None = all)
    allow_random_ancestry: bool = False  # smoke tests only
    force: bool = False  # overwrite a non-empty output


def train_single_models(req: SingleRequest, cfg: TrainConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train and evaluate each model of a scratch / vanilla baseline; write ``out/results.json``."""
    if req.method not in ("scratch", "vanilla"):
        raise UsageError(f"unknown single-model baseline '{req.method}'")
    if req.eval_images is not None and req.eval_images < 1:
        raise UsageError(f"--eval-images: must be >= 1, got {req.eval_images}")
    if req.method == "vanilla":
        import dataclasses

        req = dataclasses.replace(req, checkpoint=default_checkpoint(req.ancestry, req.checkpoint,
                                                                     allow_random=req.allow_random_ancestry))
    check_output_dir(req.out, req.force, kind="baseline")
    check_data_name(req.data)
    if req.method == "vanilla" and req.checkpoint is None and not req.allow_random_ancestry:
        raise UsageError(f"vanilla learngene inherits blocks of a trained ancestry: pass --ancestry-checkpoint "
                         f"for '{req.ancestry}' (or --allow-random-ancestry for a smoke test)")
    checkpoint = req.checkpoint if req.method == "vanilla" else None
    ancestry, aspec = create_ancestry(req.ancestry, checkpoint=checkpoint)
    spec = family(aspec)
    keys = _single_keys(req, spec)
    data = open_for_ancestry(req.data, ancestry, aspec, read_ancestry_dir(checkpoint) if checkpoint else None)
    t0 = time.time()
    rows, states = [], {}
    for n, key in enumerate(keys):
        row, states[key] = _train_one(req, cfg, spec, ancestry, data, n, key, reporter)
        rows.append(row)
    n_val = len(data.val) if req.eval_images is None else min(req.eval_images, len(data.val))
    out = {"method": req.method, "ancestry": aspec.to_dict(), "data": data.info.name,
           "synthetic_data": data.info.synthetic, "val_images": n_val, "config": cfg.to_dict(),
           "environment": environment(),
           "smoothing": req.smoothing, "stored_params": sum(r["params"] for r in rows),
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "wall_s": round(time.time() - t0, 1),
           "configs": rows}
    if req.method == "vanilla":
        out["learngene"] = {"ancestry_checkpoint": req.checkpoint, "blocks": LEARNGENE_BLOCKS,
                            "narrow": list(req.narrow)}
    if is_main():
        _write_results(req.out, states, out)
    return out


def _single_keys(req: SingleRequest, spec: PoolSpec) -> list[str]:
    """The descendant keys the baseline trains (UsageError for a key the family does not have)."""
    if req.method == "scratch":
        keys = list(req.keys) or default_scratch_keys(spec)
    else:
        if spec.ancestry.depth < LEARNGENE_BLOCKS:
            raise UsageError(f"ancestry '{req.ancestry}' has fewer than {LEARNGENE_BLOCKS} blocks")
        keys = [vanilla_key(spec, n) for n in req.narrow]
    known = {d.key for d in LearngenePool(spec).descendants()}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise UsageError(f"unknown descendant key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; see "
                         f"'lgp-edge pool plan --ancestry "
                         f"{req.ancestry} --depth {DEPTH}'")
    return keys


def _train_one(req: SingleRequest, cfg: TrainConfig, spec: PoolSpec, ancestry: torch.nn.Module, data: Any, n: int,
               key: str, reporter: Reporter) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train and evaluate the ``n``-th model; its results row and its weights."""
    torch.manual_seed(cfg.seed + n)
    pool = LearngenePool(spec)
    if req.method == "vanilla":
        inherit_learngene(pool, ancestry)
    dspec: DescendantSpec = pool.find(key)
    model = pool.descendant(dspec)
    t1 = time.time()
    result = fit(SupervisedObjective(model, req.smoothing), data.train, cfg,
                 description=f"{req.method} {key}", reporter=reporter)
    top1 = evaluate(model, data.val, batch_size=512, max_images=req.eval_images, device=cfg.device)
    row = {"key": key, "blocks": dspec.num_blocks, "params": count_params(model),
           "flops": descendant_flops(spec, dspec), "top1": round(top1, 3),
           "epoch_loss": list(result.epoch_loss), "wall_s": round(time.time() - t1, 1),
           "spec": dspec.to_dict()}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    log.info("%s %s: top-1 %.2f%%", req.method, key, top1)
    return row, state


def _write_results(out_dir: str, states: dict[str, dict[str, torch.Tensor]], results: dict[str, Any]) -> None:
    """``out_dir``: one ``<key>.safetensors`` per model and ``results.json``, swapped in atomically."""
    from lgp_edge.fileio import save_safetensors, write_json

    with atomic_dir(out_dir) as tmp:
        for key, state in states.items():
            save_safetensors(state, os.path.join(tmp, f"{key}.safetensors"))
        write_json(os.path.join(tmp, RESULTS), results)
        replace_dir(tmp, out_dir)


def read_results(path: str | Path) -> dict[str, Any]:
    f = Path(path) / RESULTS
    if not f.is_file():
        raise UsageError(f"'{path}' holds no {RESULTS}")
    return json.loads(f.read_text(encoding="utf-8"))
