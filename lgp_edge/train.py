"""One training engine for every stage (ancestry, distillation, fine-tuning, baselines).

An *objective* is an ``nn.Module`` whose ``forward(images, labels, **step_kwargs)`` returns the scalar loss;
its trainable parameters are those with ``requires_grad``. ``fit`` runs AdamW with linear warm-up and
cosine decay, on one process or under ``torchrun`` (DistributedDataParallel + DistributedSampler;
rank 0 alone writes checkpoints and shows progress). Checkpoints are safetensors + JSON (no pickles),
written atomically every epoch and every ``save_every`` steps, and hold the model, optimizer, step and
the RNG states of every rank, so ``resume`` continues exactly where a killed run stopped (bit-exact with
``num_workers=0``; with loader workers the augmentation draws after a mid-epoch resume differ).
The learning-rate schedule is a pure function of the step, so it needs no state of its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from lgp_edge.errors import CheckpointError, UsageError
from lgp_edge.fileio import write_atomic, write_text_atomic
from lgp_edge.progress import NULL, Reporter

log = logging.getLogger(__name__)

CKPT_STATE = "state.safetensors"
CKPT_META = "state.json"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int  # passes over the (possibly capped) training set
    batch_size: int = 256  # global batch (split across ranks)
    lr: float = 5e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_epochs: float = 0.0  # linear warm-up length
    min_lr: float = 1e-6  # floor of the cosine decay
    seed: int = 0  # seeds data order, augmentation and descendant sampling
    max_steps_per_epoch: int | None = None  # cap for smoke runs / quick benchmarks
    grad_clip: float | None = None  # max global grad norm (None = off)
    save_every: int = 0  # also checkpoint every N steps (0 = at epoch ends only)
    device: str = "cpu"  # "cpu" or "cuda"
    bf16: bool = False  # bf16 autocast (GPUs)
    num_workers: int = 0  # DataLoader workers

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that define a run's result (for checkpoint fingerprints): everything except
        how often it saves, how many loader workers it uses and which device it runs on, so a run
        can be resumed with other values of those."""
        d = self.to_dict()
        for k in ("save_every", "num_workers", "device"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class FitResult:
    epochs: int  # epochs completed in total
    steps: int  # optimizer steps in total
    epoch_loss: tuple[float, ...]  # mean training loss per epoch (this process' shard, rank 0)
    wall_s: float  # seconds spent in this call
    resumed_from: int | None = None  # step the run resumed at
    history: dict[str, Any] = field(default_factory=dict)


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return dist_info()[0] == 0


def lr_at(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    """Linear warm-up to ``base`` then cosine decay to ``floor``."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, t)))


def step_rng(seed: int, step: int) -> random.Random:
    """A per-step RNG, identical on every rank (e.g. to choose the step's descendant)."""
    return random.Random(seed * 1_000_003 + step)


NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token")  # timm's no_weight_decay() set


def decays(name: str, p: nn.Parameter) -> bool:
    """Weight decay applies to weight matrices only: not to biases, norms, position embeddings or tokens."""
    return p.ndim >= 2 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES


def state_digest(module: nn.Module) -> str:
    """A short sha256 over a module's state (names, shapes, values): tells two sets of weights apart."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        v = v.detach().cpu().contiguous()
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)};".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def make_optimizer(objective: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[nn.Parameter]]:
    """AdamW over the trainable parameters, in groups by weight decay and learning-rate scale.

    An objective may scale the learning rate of some parameters with a method ``lr_scale(name) -> float``
    (e.g. a lower rate for shared instance blocks than for stitch layers); a group's rate is
    ``lr_at(step) * group["lr_scale"]``.
    """
    scale_of = getattr(objective, "lr_scale", None)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in objective.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        scale = float(scale_of(name)) if scale_of is not None else 1.0
        if not (0.0 <= scale <= 1e3):
            raise UsageError(f"learning-rate scale {scale} for '{name}' is out of range [0, 1000]")
        groups.setdefault((decays(name, p), scale), []).append(p)
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale}
                    for (decay, scale), ps in groups.items()]
    params = [p for g in param_groups for p in g["params"]]
    return torch.optim.AdamW(param_groups, lr=cfg.lr), params


def legacy_optimizer(objective: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[nn.Parameter]]:
    """The grouping of checkpoints written before per-name decay rules and learning-rate scales: weight decay on
    every parameter of 2 or more dimensions (pos_embed and cls_token included), none on the others. Used only to
    resume such a checkpoint, so the run ends with the recipe it started with."""
    seen: dict[int, nn.Parameter] = {}
    for p in objective.parameters():
        if p.requires_grad:
            seen.setdefault(id(p), p)
    params = list(seen.values())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr), decay + no_decay


def _legacy_groups(ckpt: Path) -> bool:
    """True for a checkpoint whose optimizer groups predate ``lr_scale`` (see ``legacy_optimizer``)."""
    try:
        groups = json.loads((ckpt / CKPT_META).read_text()).get("param_groups") or []
    except (OSError, ValueError):
        return False  # load_checkpoint reports the damage
    return bool(groups) and all(isinstance(g, dict) and "lr_scale" not in g for g in groups)


# ------------------------------------------------------------------------------------------ checkpoints
# A checkpoint is a directory: ``state-<step>.safetensors`` (weights, optimizer moments, RNG states) and
# ``state.json`` (counters, fingerprint, world size, optimizer hyper-parameters, Python/NumPy RNG states and
# the name of its safetensors file). The tensors are written and fsync'ed first under a new name; then
# ``state.json`` is replaced by one rename, the commit point; only then are older tensor files deleted.
# A kill at any moment leaves the previous checkpoint or the new one, never a mix.

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process' RNG states: torch CPU (+ CUDA), Python ``random`` and NumPy."""
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    try:
        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        out["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
    except ImportError:  # pragma: no cover - numpy ships with torch wheels
        pass
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    v, st, gauss = state["python"]
    random.setstate((v, tuple(st), gauss))
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def save_checkpoint(path: Path, objective: nn.Module, opt: torch.optim.Optimizer, *, epoch: int, step: int,
                    step_in_epoch: int, fingerprint: str, world: int, extra: dict[str, Any],
                    rng: list[dict[str, Any]] | None = None) -> None:
    """Atomically write model + optimizer + RNG (one entry per rank) + counters to directory ``path``."""
    from safetensors.torch import save_file

    if rng is None:
        rng = [rng_state(torch.device("cpu"))]
    tensors: dict[str, torch.Tensor] = {}
    for k, v in objective.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for name, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"opt.{idx}.{name}"] = t.detach().cpu().contiguous()
    py_rng = []
    for r, st in enumerate(rng):
        tensors[f"rng.torch.{r}"] = st["torch"].cpu()
        if "cuda" in st:
            tensors[f"rng.cuda.{r}"] = st["cuda"].cpu()
        py_rng.append({k: st[k] for k in ("python", "numpy") if k in st})
    state_file = f"state-{step:09d}.safetensors"
    meta = {"epoch": epoch, "step": step, "step_in_epoch": step_in_epoch, "fingerprint": fingerprint,
            "world_size": world, "param_groups": osd["param_groups"], "rng": py_rng, "state_file": state_file,
            "extra": extra, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.mkdir(parents=True, exist_ok=True)
    write_atomic(path / state_file, lambda tmp: save_file(tensors, tmp))
    write_text_atomic(path / CKPT_META, json.dumps(meta))  # the commit point
    _fsync_dir(path)
    for old in path.iterdir():  # older tensor files and leftovers of killed writes
        if old.name != state_file and old.name != CKPT_META and old.name.startswith(("state-", ".state-", f".{CKPT_META}.", f"{CKPT_META}.tmp")):
            old.unlink(missing_ok=True)


def _py_state() -> list[Any]:
    v, state, gauss = random.getstate()
    return [v, list(state), gauss]


def read_checkpoint_meta(path: Path, fingerprint: str, world: int) -> dict[str, Any]:
    """The checkpoint's ``state.json`` after checking it belongs to this run (CheckpointError if not)."""
    meta_f = path / CKPT_META
    if not meta_f.is_file():
        raise CheckpointError(f"no checkpoint to resume in '{path}'; run without --resume to start")
    try:
        meta = json.loads(meta_f.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint '{meta_f}' is damaged ({exc.msg}); delete '{path}' and start "
                              "again without --resume") from None
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"checkpoint '{path}' belongs to another run (different pool, ancestry, data or "
                              "training settings); resume with the original arguments, or delete it and start "
                              "without --resume")
    if meta.get("world_size", 1) != world:
        raise CheckpointError(f"checkpoint '{path}' was written by {meta.get('world_size')} process(es), this run "
                              f"has {world}: the data order cannot be continued; resume with the same number "
                              f"of processes (torchrun --nnodes x --nproc_per_node = {meta.get('world_size')})")
    state_f = path / meta.get("state_file", CKPT_STATE)
    if not state_f.is_file():
        raise CheckpointError(f"checkpoint '{path}' is incomplete ({state_f.name} is missing); delete it and "
                              "start again without --resume")
    return meta


def load_checkpoint(path: Path, objective: nn.Module, opt: torch.optim.Optimizer, fingerprint: str,
                    world: int, rank: int = 0, device: torch.device | None = None) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG states; returns the metadata (epoch, step, ...)."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path, fingerprint, world)
    try:
        tensors = load_file(str(path / meta.get("state_file", CKPT_STATE)))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({str(exc)[:120]}); delete it and start "
                              "again without --resume") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        objective.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint '{path}' does not fit this model: {str(exc)[:160]}") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint '{path}' holds optimizer state of another parameter grouping ({exc}); "
                              "resume it with the lgp-edge version that wrote it, or delete it and start again "
                              "without --resume") from None
    try:
        rng: dict[str, Any] = {"torch": tensors[f"rng.torch.{rank}"], **meta["rng"][rank]}
    except (KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(f"checkpoint '{path}' has no random-number state for rank {rank} ({exc}); delete it "
                              "and start again without --resume") from None
    if f"rng.cuda.{rank}" in tensors:
        rng["cuda"] = tensors[f"rng.cuda.{rank}"]
    set_rng_state(rng, device or torch.device("cpu"))
    return meta


def _agree(error: Exception | None) -> None:
    """Raise on every rank if any rank failed (so no rank is left waiting in a collective)."""
    rank, world = dist_info()
    if world == 1:
        if error is not None:
            raise error
        return
    errors: list[Any] = [None] * world
    torch.distributed.all_gather_object(errors, None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    for e in errors:
        if e is not None:
            cls = CheckpointError if e[0] == "CheckpointError" else UsageError
            raise cls(e[1])


# ----------------------------------------------------------------------------------------------- the loop
def fit(objective: nn.Module, train_set: Dataset, cfg: TrainConfig, *, description: str,
        ckpt_dir: str | Path | None = None, resume: bool = False, fingerprint: str = "",
        step_kwargs: Callable[[int], dict[str, Any]] | None = None, reporter: Reporter = NULL,
        on_epoch_end: Callable[[int], None] | None = None, find_unused_parameters: bool = True) -> FitResult:
    """Train ``objective`` on ``train_set``; see the module docstring.

    Under torchrun every rank calls ``fit`` with the same arguments. The global batch ``cfg.batch_size`` is
    split evenly over the ranks; each step's gradient is the mean over the whole global batch (DDP averages
    the per-rank means), so N processes compute what one process computes with the same global batch, up to
    float rounding and the per-rank augmentation randomness. ``step_kwargs(step)`` must be the same on every
    rank (use ``step_rng``). Only rank 0 writes the checkpoint; all ranks read it on ``resume``.
    ``find_unused_parameters``: keep True when a step may leave trainable parameters unused (one descendant
    of a pool per step); objectives that use every parameter in every step pass False (faster under DDP).
    Returns with ``objective`` in eval mode, moved back to the CPU.
    """
    rank, world = dist_info()
    device = torch.device(cfg.device)
    if cfg.batch_size % world:
        raise UsageError(f"--batch-size {cfg.batch_size} cannot be split evenly over {world} processes; use a "
                         f"multiple of {world}")
    local_bs = cfg.batch_size // world
    if len(train_set) < cfg.batch_size:
        raise UsageError(f"the training set has {len(train_set)} images, fewer than one global batch of "
                         f"{cfg.batch_size} ({world} process(es) x {local_bs}); lower --batch-size"
                         + (" or use fewer processes (--nproc_per_node)" if world > 1 else ""))
    objective.to(device)
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    legacy = resume and ckpt is not None and _legacy_groups(ckpt)
    opt, params = legacy_optimizer(objective, cfg) if legacy else make_optimizer(objective, cfg)

    # Per-rank seeds: augmentation and dropout differ between ranks (as they would between the samples of
    # one large batch); the model is identical anyway (DDP broadcasts rank 0's weights).
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    start_epoch, step, skip, resumed_from = 0, 0, 0, None
    if resume:
        error: Exception | None = None
        meta: dict[str, Any] = {}
        try:
            if ckpt is None:
                raise UsageError("--resume needs a checkpoint directory")
            meta = load_checkpoint(ckpt, objective, opt, fingerprint, world, rank, device)
        except (CheckpointError, UsageError) as exc:
            error = exc
        _agree(error)
        start_epoch, step, skip = meta["epoch"], meta["step"], meta["step_in_epoch"]
        resumed_from = step
        log.info("resumed %s at epoch %d step %d", description, start_epoch, step)

    model: nn.Module = objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=find_unused_parameters)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    steps_per_epoch = len(sampler) // local_bs
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def checkpoint(epoch: int, step_in_epoch: int) -> None:  # collective: every rank calls it
        if ckpt is None:
            return
        states = [rng_state(device)]
        if world > 1:
            states = [None] * world  # type: ignore[list-item]
            torch.distributed.all_gather_object(states, rng_state(device))
        if rank == 0:
            save_checkpoint(ckpt, objective, opt, epoch=epoch, step=step, step_in_epoch=step_in_epoch,
                            fingerprint=fingerprint, world=world, extra={"config": cfg.to_dict()}, rng=states)

    def global_mean(value: torch.Tensor) -> float:
        value = value.detach().float().reshape(1)
        if world > 1:
            torch.distributed.all_reduce(value)
            value /= world
        return float(value)

    t0 = time.perf_counter()
    epoch_loss: list[float] = []
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    objective.train()
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        order = list(sampler)[skip * local_bs: steps_per_epoch * local_bs]
        batches = BatchSampler(order, local_bs, drop_last=True)
        # Its own generator, so creating the loader (e.g. mid-epoch after --resume) draws nothing from the
        # global RNG, whose state the checkpoint restores exactly.
        gen = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + epoch) * 1_009 + rank) % (2 ** 63))
        loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.num_workers, generator=gen,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        running, count = 0.0, 0
        show = reporter if rank == 0 else NULL
        with show.task(f"{description} epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch) as task:
            task.advance(skip)
            for i, (x, y) in enumerate(loader, start=skip):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, warmup, cfg.lr, cfg.min_lr) * group.get("lr_scale", 1.0)
                kwargs = step_kwargs(step) if step_kwargs else {}
                with autocast:
                    loss = model(x, y, **kwargs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                step += 1
                value = global_mean(loss)  # the same on every rank, so all stop together on a bad loss
                if not math.isfinite(value):
                    raise UsageError(f"{description}: the loss became {value} at step {step}; lower --lr")
                running += value
                count += 1
                task.advance(1, loss=running / count)
                if cfg.save_every and step % cfg.save_every == 0 and i + 1 < steps_per_epoch:
                    checkpoint(epoch, i + 1)
        skip = 0
        epoch_loss.append(running / max(1, count))
        log.info("%s epoch %d: loss %.4f", description, epoch + 1, epoch_loss[-1])
        checkpoint(epoch + 1, 0)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    objective.eval()
    if device.type != "cpu":
        objective.cpu()
    return FitResult(epochs=cfg.epochs, steps=step, epoch_loss=tuple(epoch_loss),
                     wall_s=time.perf_counter() - t0, resumed_from=resumed_from)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str = "cpu",
             max_images: int | None = None) -> float:
    """Top-1 accuracy in percent."""
    model.eval().to(device)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    correct = 0
    for x, y in loader:
        correct += int((model(x.to(device)).argmax(-1).cpu() == y).sum())
    return 100.0 * correct / max(1, n)
