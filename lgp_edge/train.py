"""One training engine for every stage (ancestry, distillation, fine-tuning, baselines).

An *objective* is an ``nn.Module`` whose ``forward(images, labels, **step_kwargs)`` returns the scalar loss;
its trainable parameters are those with ``requires_grad``. ``fit`` runs AdamW with linear warm-up and
cosine decay (``train_optim``), on one process or under ``torchrun`` (DistributedDataParallel +
DistributedSampler; rank 0 alone writes checkpoints and shows progress). Checkpoints (``train_checkpoint``)
are safetensors + JSON (no pickles), written atomically every epoch and every ``save_every`` steps, and hold
the model, optimizer, step, the RNG states of every rank and the run's measured losses and seconds, so
``resume`` continues exactly where a killed run stopped (bit-exact with ``num_workers=0``; with loader
workers the augmentation draws after a mid-epoch resume differ) and reports the whole run. The learning-rate
schedule is a pure function of the step, so it needs no state of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from lgp_edge.errors import CheckpointError, DataError, UsageError
from lgp_edge.progress import NULL, Reporter
from lgp_edge.train_checkpoint import (
    CKPT_META,
    CKPT_STATE,
    legacy_groups,
    load_checkpoint,
    read_checkpoint_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lgp_edge.train_optim import NO_DECAY_NAMES, decays, legacy_optimizer, lr_at, make_optimizer

__all__ = ["CKPT_META", "CKPT_STATE", "NO_DECAY_NAMES", "FitResult", "TrainConfig", "decays", "dist_info",
           "evaluate", "fit", "is_main", "legacy_groups", "legacy_optimizer", "load_checkpoint", "lr_at",
           "make_optimizer", "read_checkpoint_meta", "rng_state", "save_checkpoint", "set_rng_state",
           "state_digest", "step_rng"]

log = logging.getLogger(__name__)


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
    bf16: bool = False  # bf16 autocast (GPUs; CPUs with AVX512-BF16 or AMX)
    num_workers: int = 0  # DataLoader workers

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs) so that the learning rate reaches lr and decays "
                             f"after it, got {self.warmup_epochs} with epochs {self.epochs}")

    def with_epochs(self, epochs: int) -> TrainConfig:
        """This run's settings for a phase of ``epochs`` (a stitch-only phase, a width's own budget): its warm-up
        where it is shorter than the phase, else a tenth of the phase."""
        warmup = self.warmup_epochs if self.warmup_epochs < epochs else 0.1 * epochs
        return dataclasses.replace(self, epochs=epochs, warmup_epochs=warmup)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that define a run's result (for checkpoint fingerprints): everything except
        how often it saves, how many loader workers it uses and which device it runs on, so a run
        can be resumed with other values of those."""
        return config_identity(self.to_dict())


RESUMABLE_SETTINGS = ("save_every", "num_workers", "device")  # what a resume may change (TrainConfig.identity)


def config_identity(config: dict[str, Any]) -> dict[str, Any]:
    """``TrainConfig.identity`` of a config recorded as ``to_dict`` made it (a pool's history)."""
    return {k: v for k, v in config.items() if k not in RESUMABLE_SETTINGS}


@dataclass(frozen=True)
class FitResult:
    epochs: int  # epochs completed in total
    steps: int  # optimizer steps in total
    epoch_loss: tuple[float, ...]  # mean training loss per epoch of the whole run (interrupted processes included)
    wall_s: float  # seconds spent in this call
    resumed_from: int | None = None  # step the run resumed at
    earlier_wall_s: float = 0.0  # seconds the run had spent in the processes before the resume
    history: dict[str, Any] = field(default_factory=dict)


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return dist_info()[0] == 0


def environment() -> dict[str, Any]:
    """What a training result depends on beside its config, recorded with it: the code and library versions, the
    threads and processes it ran on (they change the floating-point summation order and, with augmentation, the
    random stream, so a result is bit-identical only with the same of each, and the same ``--workers``), and the
    CPU it ran on (a recorded wall time means little without it)."""
    import os

    import timm

    from lgp_edge import __version__
    from lgp_edge.profiling.host import cpu_model

    return {"lgp-edge": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "threads": torch.get_num_threads(), "processes": int(os.environ.get("WORLD_SIZE", "1") or 1),
            "cpu": cpu_model()}


def step_rng(seed: int, step: int) -> random.Random:
    """A per-step RNG, identical on every rank (e.g. to choose the step's descendant)."""
    return random.Random(seed * 1_000_003 + step)


def state_digest(module: nn.Module) -> str:
    """A short sha256 over a module's state (names, shapes, values): tells two sets of weights apart."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        v = v.detach().cpu().contiguous()
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)};".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


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
@dataclass(frozen=True)
class _Plan:
    """The fixed facts of one ``fit`` call: where it runs and how many steps it takes."""

    rank: int
    world: int
    device: torch.device
    local_bs: int  # batch per rank
    steps_per_epoch: int
    total: int  # optimizer steps over all epochs
    warmup: int  # warm-up steps


@dataclass
class _Progress:
    """What a run has measured so far, saved in each checkpoint so a resumed run reports the whole run: the mean
    loss of each finished epoch, the loss sum and step count of the epoch under way, and the training seconds."""

    epoch_loss: list[float] = field(default_factory=list)
    running: float = 0.0
    count: int = 0
    wall_s: float = 0.0

    @classmethod
    def from_checkpoint(cls, extra: dict[str, Any], epochs_done: int, steps_in_epoch: int) -> _Progress | None:
        """None for a checkpoint written before progress was saved (its run's earlier epochs are unknown);
        ValueError when the record does not match the checkpoint's counters."""
        d = extra.get("progress")
        if not isinstance(d, dict):
            return None
        p = cls(epoch_loss=[float(v) for v in d["epoch_loss"]], running=float(d["running"]),
                count=int(d["count"]), wall_s=float(d["wall_s"]))
        if len(p.epoch_loss) != epochs_done or p.count != steps_in_epoch or not p.wall_s >= 0 or \
                not all(math.isfinite(v) for v in (*p.epoch_loss, p.running)):
            raise ValueError(f"{len(p.epoch_loss)} epoch losses and {p.count} steps recorded at epoch {epochs_done} "
                             f"step {steps_in_epoch}")
        return p


@dataclass(frozen=True)
class _Start:
    """Where the loop starts (all 0 for a new run): epoch, optimizer step, steps already done in that epoch."""

    epoch: int = 0
    step: int = 0
    skip: int = 0
    resumed_from: int | None = None
    progress: _Progress | None = None  # what the interrupted processes measured (None: a new run)


@dataclass
class _Loop:
    """What the loop trains and where it saves; ``step`` counts optimizer steps so far."""

    objective: nn.Module
    model: nn.Module  # ``objective``, wrapped in DDP under torchrun
    opt: torch.optim.Optimizer
    params: list[nn.Parameter]
    cfg: TrainConfig
    plan: _Plan
    ckpt: Path | None
    fingerprint: str
    description: str
    step: int
    progress: _Progress  # of the whole run; ``wall_s`` up to this process' start
    t0: float  # when this process started training (perf_counter)
    known: bool  # False after resuming a checkpoint without a progress record: ``progress`` is this process' only

    def measured(self) -> _Progress:
        """The run's progress now, with this process' seconds counted in."""
        return dataclasses.replace(self.progress, epoch_loss=list(self.progress.epoch_loss),
                                   wall_s=self.progress.wall_s + time.perf_counter() - self.t0)


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
    local_bs = _local_batch(len(train_set), cfg, world)
    objective.to(device)
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    legacy = resume and ckpt is not None and legacy_groups(ckpt)
    opt, params = legacy_optimizer(objective, cfg) if legacy else make_optimizer(objective, cfg)

    # Per-rank seeds: augmentation and dropout differ between ranks (as they would between the samples of
    # one large batch); the model is identical anyway (DDP broadcasts rank 0's weights).
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    np.random.seed((cfg.seed + rank) % 2 ** 32)  # timm's RandAugment draws its operations with NumPy
    start = _resume(ckpt, objective, opt, fingerprint, description, rank, world, device) if resume else _Start()
    model = _wrap(objective, device, world, find_unused_parameters)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    plan = _plan(cfg, len(sampler), rank, world, device, local_bs)
    known = start.progress is not None or start.resumed_from is None
    t0 = time.perf_counter()
    loop = _Loop(objective, model, opt, params, cfg, plan, ckpt, fingerprint, description, step=start.step,
                 progress=start.progress or _Progress(), t0=t0, known=known)
    if not known:
        log.warning("%s: the checkpoint predates saved progress: the epochs before step %d are not in the "
                    "reported losses and time", description, start.step)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    show = reporter if rank == 0 else NULL
    objective.train()
    skip = start.skip
    try:
        for epoch in range(start.epoch, cfg.epochs):
            _run_epoch(loop, train_set, sampler, epoch, skip, step_kwargs, autocast, show)
            skip = 0
            log.info("%s epoch %d: loss %.4f", description, epoch + 1, loop.progress.epoch_loss[-1])
            _checkpoint(loop, epoch + 1, 0)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    except DataError as exc:  # a damaged image found mid-run: what was trained so far is not lost
        if ckpt is not None and (ckpt / "state.json").is_file():
            raise resume_after(exc, ckpt) from None
        raise
    objective.eval()
    if device.type != "cpu":
        objective.cpu()
    earlier = start.progress.wall_s if start.progress is not None else 0.0
    return FitResult(epochs=cfg.epochs, steps=loop.step, epoch_loss=tuple(loop.progress.epoch_loss),
                     wall_s=time.perf_counter() - t0, resumed_from=start.resumed_from, earlier_wall_s=earlier)


def resume_after(exc: DataError, ckpt: str | Path, done: str = "the run is checkpointed") -> DataError:
    """``exc`` (a damaged image) saying that the work so far is in the checkpoint ``ckpt`` and how to go on."""
    return DataError(f"{exc}; {done} in '{ckpt}': rerun the same command with --resume once the data is fixed")


def recorded_progress(ckpt_dir: str | Path, fingerprint: str) -> tuple[tuple[float, ...], float] | None:
    """(mean loss per finished epoch, training seconds) that a run's checkpoint records, or None when it has
    no progress record: how a later stage reports an earlier one that finished in a process now gone."""
    progress = _progress_of(read_checkpoint_meta(Path(ckpt_dir), fingerprint, dist_info()[1]), ckpt_dir)
    return None if progress is None else (tuple(progress.epoch_loss), progress.wall_s)


def _progress_of(meta: dict[str, Any], ckpt: str | Path | None) -> _Progress | None:
    """A checkpoint's progress record (None when it predates them); CheckpointError when it is damaged."""
    try:
        return _Progress.from_checkpoint(meta.get("extra") or {}, meta["epoch"], meta["step_in_epoch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint '{ckpt}' has a damaged progress record ({exc}); delete it and start "
                              "again without --resume") from None


def _local_batch(n_images: int, cfg: TrainConfig, world: int) -> int:
    """The batch of one rank; UsageError when the global batch cannot be split or filled."""
    if cfg.batch_size % world:
        raise UsageError(f"--batch-size {cfg.batch_size} cannot be split evenly over {world} processes; use a "
                         f"multiple of {world}")
    local_bs = cfg.batch_size // world
    if n_images < cfg.batch_size:
        raise UsageError(f"the training set has {n_images} images, fewer than one global batch of "
                         f"{cfg.batch_size} ({world} process(es) x {local_bs}); lower --batch-size"
                         + (" or use fewer processes (--nproc_per_node)" if world > 1 else ""))
    return local_bs


def _resume(ckpt: Path | None, objective: nn.Module, opt: torch.optim.Optimizer, fingerprint: str,
            description: str, rank: int, world: int, device: torch.device) -> _Start:
    """Load the checkpoint on every rank; all ranks raise if any rank could not."""
    error: Exception | None = None
    meta: dict[str, Any] = {}
    try:
        if ckpt is None:
            raise UsageError("--resume needs a checkpoint directory")
        meta = load_checkpoint(ckpt, objective, opt, fingerprint, world, rank, device)
    except (CheckpointError, UsageError) as exc:
        error = exc
    _agree(error)
    progress = _progress_of(meta, ckpt)
    start = _Start(epoch=meta["epoch"], step=meta["step"], skip=meta["step_in_epoch"], resumed_from=meta["step"],
                   progress=progress)
    log.info("resumed %s at epoch %d step %d", description, start.epoch, start.step)
    return start


def _wrap(objective: nn.Module, device: torch.device, world: int, find_unused_parameters: bool) -> nn.Module:
    """``objective`` itself on one process, in DistributedDataParallel under torchrun."""
    if world == 1:
        return objective
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(objective, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=find_unused_parameters)


def _plan(cfg: TrainConfig, sampler_len: int, rank: int, world: int, device: torch.device,
          local_bs: int) -> _Plan:
    steps_per_epoch = sampler_len // local_bs
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    return _Plan(rank=rank, world=world, device=device, local_bs=local_bs, steps_per_epoch=steps_per_epoch,
                 total=steps_per_epoch * cfg.epochs, warmup=int(cfg.warmup_epochs * steps_per_epoch))


def _epoch_loader(train_set: Dataset, sampler: DistributedSampler, cfg: TrainConfig, plan: _Plan, epoch: int,
                  skip: int) -> DataLoader:
    """This rank's batches of one epoch, from batch ``skip`` on."""
    sampler.set_epoch(epoch)
    order = list(sampler)[skip * plan.local_bs: plan.steps_per_epoch * plan.local_bs]
    batches = BatchSampler(order, plan.local_bs, drop_last=True)
    # Its own generator, so creating the loader (e.g. mid-epoch after --resume) draws nothing from the
    # global RNG, whose state the checkpoint restores exactly.
    gen = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + epoch) * 1_009 + plan.rank) % (2 ** 63))
    return DataLoader(train_set, batch_sampler=batches, num_workers=cfg.num_workers, generator=gen,
                      pin_memory=plan.device.type == "cuda", persistent_workers=False,
                      worker_init_fn=data_loading_worker_init if cfg.num_workers else None)


def data_loading_worker_init(worker_id: int) -> None:
    """A data-loading worker leaves stopping to the main process, which owns the terminal.

    SIGTERM is ignored: the main process stops the workers as it unwinds (``timeout`` and systemd signal the whole
    process group: a worker dying of it made torch print a traceback); torch's own watchdog still ends a worker
    whose main process is gone. A broken connection in multiprocessing's fd-passing thread (the main process,
    stopped while taking a batch's shared memory, gone mid-handshake) is not printed: the main process says why it
    stopped, and a main process that goes on reports its own failed receive.
    """
    import signal
    import sys
    from multiprocessing import AuthenticationError

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    default = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(kind, (EOFError, ConnectionError, AuthenticationError)):
            default(kind, value, tb)

    sys.excepthook = excepthook


def _run_epoch(loop: _Loop, train_set: Dataset, sampler: DistributedSampler, epoch: int, skip: int,
               step_kwargs: Callable[[int], dict[str, Any]] | None, autocast: torch.autocast,
               show: Reporter) -> None:
    """One epoch (from step ``skip`` of it after a resume), with the mid-epoch checkpoints; appends its mean loss
    (over all its steps, those before a resume included) to ``loop.progress``."""
    cfg, plan, progress = loop.cfg, loop.plan, loop.progress
    loader = _epoch_loader(train_set, sampler, cfg, plan, epoch, skip)  # (running/count: 0 at an epoch start)
    with show.task(f"{loop.description} epoch {epoch + 1}/{cfg.epochs}", total=plan.steps_per_epoch) as task:
        task.advance(skip)
        for i, (x, y) in enumerate(loader, start=skip):
            saved = i + 1 == plan.steps_per_epoch or bool(cfg.save_every and (loop.step + 1) % cfg.save_every == 0)
            progress.running += _train_step(loop, x, y, step_kwargs, autocast, check_after=saved)
            progress.count += 1
            task.advance(1, loss=progress.running / progress.count)
            if cfg.save_every and loop.step % cfg.save_every == 0 and i + 1 < plan.steps_per_epoch:
                _checkpoint(loop, epoch, i + 1)
    progress.epoch_loss.append(progress.running / max(1, progress.count))
    progress.running, progress.count = 0.0, 0


def _train_step(loop: _Loop, x: torch.Tensor, y: torch.Tensor, step_kwargs: Callable[[int], dict[str, Any]] | None,
                autocast: torch.autocast, check_after: bool = False) -> float:
    """One optimizer step on one batch; returns the loss averaged over the ranks. ``check_after``: the weights it
    leaves are saved (an epoch's end, a checkpoint): their loss on the batch must be finite too."""
    cfg, plan = loop.cfg, loop.plan
    x, y = x.to(plan.device, non_blocking=True), y.to(plan.device, non_blocking=True)
    for group in loop.opt.param_groups:
        group["lr"] = lr_at(loop.step, plan.total, plan.warmup, cfg.lr, cfg.min_lr) * group.get("lr_scale", 1.0)
    kwargs = step_kwargs(loop.step) if step_kwargs else {}
    with autocast:
        loss = loop.model(x, y, **kwargs)
    loop.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(loop.params, cfg.grad_clip)
    loop.opt.step()
    loop.step += 1
    value = _global_mean(loss, plan.world)  # the same on every rank, so all stop together on a bad loss
    if not math.isfinite(value):
        if loop.step == 1:  # computed before any update: the starting weights or the loss's settings give it
            raise UsageError(f"{loop.description}: the loss was {value} at step 1, before any update: the starting "
                             "weights (or the loss settings, such as --tau) make it non-finite")
        raise UsageError(f"{loop.description}: the loss became {value} at step {loop.step}; lower --lr")
    if check_after:
        _check_after_update(loop, x, y, kwargs, autocast)
    return value


def _check_after_update(loop: _Loop, x: torch.Tensor, y: torch.Tensor, kwargs: dict[str, Any],
                        autocast: torch.autocast) -> None:
    """UsageError when the weights the last update left give a non-finite loss on its batch: each loss is taken
    before its update, so the update of an epoch's last step (whose weights are saved) would go unseen. The
    random number generators are left as they were (the run's course does not depend on the check)."""
    devices = [loop.plan.device] if loop.plan.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), autocast:
        value = _global_mean(loop.objective(x, y, **kwargs), loop.plan.world)
    if not math.isfinite(value):
        raise UsageError(f"{loop.description}: the weights after the update of step {loop.step} give a loss of "
                         f"{value} (the update diverged); lower --lr")


def _global_mean(value: torch.Tensor, world: int) -> float:
    value = value.detach().float().reshape(1)
    if world > 1:
        torch.distributed.all_reduce(value)
        value /= world
    return float(value)


def _checkpoint(loop: _Loop, epoch: int, step_in_epoch: int) -> None:
    """Save the run (collective: every rank calls it; rank 0 writes)."""
    if loop.ckpt is None:
        return
    plan = loop.plan
    states = [rng_state(plan.device)]
    if plan.world > 1:
        states = [None] * plan.world  # type: ignore[list-item]
        torch.distributed.all_gather_object(states, rng_state(plan.device))
    if plan.rank == 0:
        save_checkpoint(loop.ckpt, loop.objective, loop.opt, epoch=epoch, step=loop.step,
                        step_in_epoch=step_in_epoch, fingerprint=loop.fingerprint, world=plan.world,
                        extra={"config": loop.cfg.to_dict(),
                               **({"progress": dataclasses.asdict(loop.measured())} if loop.known else {})}, rng=states)


def evaluation_indices(size: int, n: int) -> Sequence[int]:
    """Which ``n`` of a split's ``size`` images a partial evaluation reads: all of them in order, else a fixed
    random subset (seed 0, in reading order). Never the first ``n``: an image folder lists its images class by
    class, so they were one class's (every descendant "100%" on 6 of 18 images)."""
    if n >= size:
        return range(size)
    return sorted(int(i) for i in np.random.default_rng(0).choice(size, n, replace=False))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str = "cpu",
             max_images: int | None = None) -> float:
    """Top-1 accuracy in percent on ``dataset`` (``max_images``: a fixed spread subset, ``evaluation_indices``),
    computed on ``device``; ``model`` is left in eval mode on the CPU."""
    dev = torch.device(device)
    model.eval().to(dev)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, evaluation_indices(len(dataset), n)),
                        batch_size=batch_size, pin_memory=dev.type == "cuda")
    correct = torch.zeros((), dtype=torch.long, device=dev)
    for x, y in loader:
        logits = model(x.to(dev, non_blocking=True))
        right = (logits.argmax(-1) == y.to(dev, non_blocking=True)) & torch.isfinite(logits).all(-1)
        correct += right.sum()  # a row with NaN logits is no prediction (argmax would call it class 0)
    if dev.type != "cpu":
        model.cpu()
    return 100.0 * int(correct) / max(1, n)
