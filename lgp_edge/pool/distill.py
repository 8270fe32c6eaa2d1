"""Distilling the ancestry into the auxiliary models (docs/METHOD.md §1).

For each auxiliary model (student) and its supervised positions P:

    loss = a * CE(student, y) + (1 - a) * ( softCE(student / T, teacher / T)
                                            + mean_p MSE(h_s[p], W_p h_t[p'])
                                            + mean_p MSE(attn_s[p], V_p attn_t[p']) )

``mean_p`` is lgp-edge's default (``position_loss="mean"``); the authors' code sums the positions' losses
(``"sum"``, ``--position-loss sum``), which weighs a Ti student's three "front,end" positions three times as
much against the two logit terms ("end" students, one position, are the same either way);
benchmarks/position_loss.py measures both.

``h`` are block outputs, ``attn`` the attention sub-layer outputs after the projection. ``W_p`` and ``V_p``
are learnable ``Linear(D -> d_student)`` maps (the transformation matrices of position p, one for the hidden
states and one for the attention outputs, as in the authors' code), trained with the student; the stitch
layers' learned init is built from the hidden-state ones, ``W_p``.
Positions: "end" = last student block vs last teacher block; "front,end" = student blocks
{d/3-1, 2d/3-1, d-1} vs teacher blocks {L/3-1, 2L/3-1, L-1} of the teacher's L blocks (3, 7, 11 of 12).
All students of a pool share one teacher forward pass per batch; their parameters are disjoint, so the
summed loss trains each as if alone.

Students converge at different speeds: a Ti that starts as a slice of the ancestry needs more epochs than a
B that keeps most of it. ``width_epochs`` (``pool build --width-epochs ti=10``) gives a width its own
budget; students with different budgets are then distilled in separate runs (one per budget, each with its
own warm-up and cosine schedule and its own teacher forward pass), students with the same budget together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lgp_edge.errors import UsageError
from lgp_edge.models.instances import forward_with_taps, supervised_blocks
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import InstanceSpec, content_hash
from lgp_edge.train import TrainConfig, fit

POSITION_LOSSES = ("mean", "sum")  # how the feature losses of a student's supervised positions combine


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softCE(s/T, t/T) = -sum softmax(t/T) log softmax(s/T), batch mean."""
    target = F.softmax(teacher_logits / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def transform_name(instance: str, block: int) -> str:
    """Name of a hidden-state transformation matrix (``W_p``): ``ti6_b1``."""
    return f"{instance}_b{block}"


def attn_transform_name(instance: str, block: int) -> str:
    """Name of an attention-output transformation matrix (``V_p``): ``attn_ti6_b1``."""
    return f"attn_{instance}_b{block}"


def position_pairs(inst: InstanceSpec, teacher_depth: int) -> list[tuple[int, int]]:
    """(student block, teacher block) pairs for an instance's supervision mode."""
    return list(zip(supervised_blocks(inst.depth, inst.supervision),
                    supervised_blocks(teacher_depth, inst.supervision)))


class DistillObjective(nn.Module):
    """All students of one pool against one frozen teacher; ``forward(x, y)`` returns the summed loss."""

    def __init__(self, teacher: nn.Module, students: nn.ModuleDict, instances: tuple[InstanceSpec, ...], *,
                 teacher_dim: int, teacher_depth: int, alpha: float = 0.1, temperature: float = 1.0,
                 position_loss: str = "mean", shared: DistillObjective | None = None) -> None:
        """``position_loss``: "mean" or "sum" of the supervised positions' feature losses; ``shared``: take the
        transformation matrices from that objective (same modules) instead of new ones."""
        super().__init__()
        if position_loss not in POSITION_LOSSES:
            raise UsageError(f"position_loss must be one of {', '.join(POSITION_LOSSES)}, got {position_loss!r}")
        self.position_loss = position_loss
        self.teacher = teacher.eval().requires_grad_(False)
        self.students = students
        self.instances = tuple(instances)
        self.teacher_dim, self.teacher_depth = teacher_dim, teacher_depth
        if not 0.0 <= alpha <= 1.0:  # the distillation terms weigh 1 - alpha
            raise UsageError(f"alpha must be between 0 and 1, got {alpha}")
        self.alpha, self.temperature = alpha, temperature
        self.pairs = {i.name: position_pairs(i, teacher_depth) for i in instances}
        self.transforms = nn.ModuleDict({
            transform_name(i.name, s): shared.transforms[transform_name(i.name, s)] if shared is not None
            else nn.Linear(teacher_dim, i.embed_dim) for i in instances for s, _ in self.pairs[i.name]})
        self.attn_transforms = nn.ModuleDict({
            attn_transform_name(i.name, s): shared.attn_transforms[attn_transform_name(i.name, s)]
            if shared is not None else nn.Linear(teacher_dim, i.embed_dim)
            for i in instances for s, _ in self.pairs[i.name]})
        self._teacher_blocks = tuple(sorted({t for pairs in self.pairs.values() for _, t in pairs}))

    def subset(self, instances: tuple[InstanceSpec, ...]) -> DistillObjective:
        """The objective of some of the students: the same student and transform modules (shared, not copied)
        and the same teacher."""
        return DistillObjective(self.teacher, nn.ModuleDict({i.name: self.students[i.name] for i in instances}),
                                instances, teacher_dim=self.teacher_dim, teacher_depth=self.teacher_depth,
                                alpha=self.alpha, temperature=self.temperature, position_loss=self.position_loss,
                                shared=self)

    def train(self, mode: bool = True) -> DistillObjective:
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = forward_with_taps(self.teacher, x, self._teacher_blocks)
        total = x.new_zeros(())
        for name, student in self.students.items():
            pairs = self.pairs[name]
            s = forward_with_taps(student, x, tuple(p for p, _ in pairs))
            hidden = attn = x.new_zeros(())
            for sb, tb in pairs:
                w = self.transforms[transform_name(name, sb)]
                v = self.attn_transforms[attn_transform_name(name, sb)]
                hidden = hidden + F.mse_loss(s.hidden[sb], w(t.hidden[tb]))
                attn = attn + F.mse_loss(s.attn[sb], v(t.attn[tb]))
            soft = soft_cross_entropy(s.logits, t.logits, self.temperature)
            ce = F.cross_entropy(s.logits, y)
            features = hidden + attn if self.position_loss == "sum" else (hidden + attn) / len(pairs)
            total = total + self.alpha * ce + (1 - self.alpha) * (soft + features)
        return total

    def matrices(self, instance: str) -> list[torch.Tensor]:
        """The hidden-state transformation matrices (``(d, D)`` weights) of one student."""
        return [self.transforms[transform_name(instance, s)].weight.detach() for s, _ in self.pairs[instance]]

    def transform_tensors(self) -> dict[str, torch.Tensor]:
        """Every transformation matrix and bias: ``ti6_b1.weight`` (hidden), ``attn_ti6_b1.weight`` (attention)."""
        out = {k: v.detach().cpu() for k, v in self.transforms.state_dict().items()}
        out.update({k: v.detach().cpu() for k, v in self.attn_transforms.state_dict().items()})
        return out


def check_width_epochs(width_epochs: Mapping[str, int], widths: Iterable[str]) -> None:
    """UsageError unless every width named in ``width_epochs`` is distilled here and has >= 1 epoch."""
    widths = sorted(set(widths))
    unknown = sorted(set(width_epochs) - set(widths))
    if unknown:
        raise UsageError(f"--width-epochs names {'widths' if len(unknown) > 1 else 'width'} {', '.join(unknown)} "
                         "that are not distilled here "
                         f"(distilled widths: {', '.join(widths)})")
    if any(not isinstance(e, int) or e < 1 for e in width_epochs.values()):
        raise UsageError("--width-epochs values must be positive epoch counts, e.g. ti=12")


def epoch_groups(instances: tuple[InstanceSpec, ...], epochs: int,
                 width_epochs: Mapping[str, int]) -> list[tuple[int, tuple[InstanceSpec, ...]]]:
    """Students grouped by their epoch budget (``width_epochs`` by width, else ``epochs``), fewest epochs first."""
    check_width_epochs(width_epochs, [i.width for i in instances])
    groups: dict[int, list[InstanceSpec]] = {}
    for inst in instances:
        groups.setdefault(width_epochs.get(inst.width, epochs), []).append(inst)
    return [(e, tuple(g)) for e, g in sorted(groups.items())]


def ckpt_name(group: tuple[InstanceSpec, ...], single: bool) -> str:
    """Checkpoint directory of one distillation run: ``distill.ckpt`` when all students train together."""
    return "distill.ckpt" if single else f"distill-{'+'.join(i.name for i in group)}.ckpt"


def interrupted(out: str | Path) -> bool:
    """A killed distillation into ``out`` left a checkpoint (any ``ckpt_name`` directory): ``--resume`` continues it."""
    from lgp_edge.train_checkpoint import CKPT_META

    return any((c / CKPT_META).is_file() for c in Path(out).glob("distill*.ckpt"))


@dataclasses.dataclass(frozen=True)
class DistillRun:
    """What ``run_distillation`` measured, interrupted processes included (their record is in the checkpoints)."""

    losses: dict[str, tuple[float, ...]]  # each student's per-epoch training loss (of its group's run)
    earlier_wall_s: float = 0.0  # training seconds spent before a resume, by processes that were killed
    train_s: float = 0.0  # training seconds of every run, those before a resume included (no loading, no evaluation)
    warmup: dict[str, float] = dataclasses.field(default_factory=dict)  # each student's warm-up epochs, as run


def run_distillation(objective: DistillObjective, train_set, cfg: TrainConfig, *, out: str | Path,
                     width_epochs: Mapping[str, int], fingerprint: str, resume: bool, description: str,
                     reporter: Reporter = NULL) -> DistillRun:
    """Distil every student of ``objective``, each width for its own number of epochs (``epoch_groups``);
    checkpoints under ``out``.

    With one group this is exactly one ``fit`` of the whole objective (checkpoint ``distill.ckpt``, the
    given fingerprint). On ``resume`` a group whose checkpoint exists continues from it and a group without
    one starts; at least one checkpoint must exist."""
    groups = epoch_groups(objective.instances, cfg.epochs, width_epochs)
    single = len(groups) == 1
    if resume and not single and not any((Path(out) / ckpt_name(g, False) / "state.json").is_file()
                                         for _, g in groups):
        raise UsageError(f"--resume: no distillation checkpoint in {out}; run without --resume")
    losses: dict[str, tuple[float, ...]] = {}
    warmup: dict[str, float] = {}
    earlier = train_s = 0.0
    for epochs, group in groups:
        names = "+".join(i.name for i in group)
        ckpt = Path(out) / ckpt_name(group, single)
        run_cfg = cfg if epochs == cfg.epochs else cfg.with_epochs(epochs)  # every width its own budget, as recorded
        warmup.update({i.name: run_cfg.warmup_epochs for i in group})
        result = fit(objective if single else objective.subset(group), train_set, run_cfg,
                     description=f"{description} {names}", ckpt_dir=ckpt,
                     resume=resume and (single or (ckpt / "state.json").is_file()),
                     fingerprint=_run_fingerprint(fingerprint, names, epochs, single=single,
                                                  own_budget=epochs != cfg.epochs),
                     reporter=reporter, find_unused_parameters=False)  # every student in the run trains each step
        losses.update({i.name: result.epoch_loss for i in group})
        earlier += result.earlier_wall_s
        train_s += result.earlier_wall_s + result.wall_s
    return DistillRun(losses, earlier, train_s, warmup)


def _run_fingerprint(fingerprint: str, names: str, epochs: int, *, single: bool, own_budget: bool) -> str:
    """The checkpoint fingerprint of one distillation run: a group's holds its names and budget; one run of every
    student holds its budget where it is not --epochs (the base fingerprint holds --epochs), so a resume with
    another --width-epochs is another run, not the same one under another learning-rate schedule."""
    if not single:
        return content_hash({"run": fingerprint, "group": names, "epochs": epochs})
    return content_hash({"run": fingerprint, "epochs": epochs}) if own_budget else fingerprint


def distill_history(run: DistillRun, instances: tuple[InstanceSpec, ...], epochs: int,
                    width_epochs: Mapping[str, int]) -> dict:
    """pool.json history fields of a distillation: each student's epochs and warm-up epochs as run, and its loss
    per epoch as ``epoch_loss`` (one list: all students trained together) or ``epoch_loss_by_model``."""
    losses = run.losses
    out: dict = {"epochs": {i.name: width_epochs.get(i.width, epochs) for i in instances},
                 "warmup_epochs": {i.name: run.warmup[i.name] for i in instances if i.name in run.warmup}}
    runs = {losses[i.name] for i in instances}
    if len(runs) == 1:
        out["epoch_loss"] = list(next(iter(runs)))
    else:
        out["epoch_loss_by_model"] = {i.name: list(losses[i.name]) for i in instances}
    return out
