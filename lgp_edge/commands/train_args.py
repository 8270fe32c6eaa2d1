"""Training flags shared by ``ancestry train``, ``pool build``, ``pool finetune`` and the baselines."""

from __future__ import annotations

import argparse

from lgp_edge.commands.common import MAX_SEED, int_at_least, nonneg_float, positive_float, seed_value


def max_workers() -> int:
    """The most DataLoader worker processes ``--workers`` accepts: max(64, 4 x the CPU count)."""
    import os

    return max(64, 4 * (os.cpu_count() or 1))


def width_epochs(text: str) -> tuple[tuple[str, int], ...]:
    """``ti=12,s=6`` -> (("ti", 12), ("s", 6)): distillation epochs of the named widths."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        width, sep, value = part.partition("=")
        try:
            epochs = int(value)
        except ValueError:
            epochs = 0
        if not sep or not width.strip() or epochs < 1:
            raise argparse.ArgumentTypeError(f"'{part}' is not WIDTH=EPOCHS with a positive epoch count, e.g. ti=12")
        if width.strip() in out:
            raise argparse.ArgumentTypeError(f"'{width.strip()}' is named twice; give each width once")
        out[width.strip()] = epochs
    if not out:
        raise argparse.ArgumentTypeError("give at least one WIDTH=EPOCHS (e.g. ti=12), or leave --width-epochs out")
    return tuple(out.items())


def add_width_epochs(p: argparse.ArgumentParser, *, who: str) -> None:
    p.add_argument("--width-epochs", type=width_epochs, default=(), metavar="W=N,...",
                   help=f"distillation epochs of some widths of {who}, e.g. ti=12 (default: --epochs for all); "
                        "widths with their own budget are distilled in a separate run")


def add_finetune_recipe(p: argparse.ArgumentParser, *, anchors_flag: str = "--anchors", members: str = "instances",
                        prefix: str = "") -> None:
    """The fine-tuning recipe beyond the paper (``pool finetune``; ``baseline snnet`` for its anchors, where
    ``--anchors`` is taken and the flag is ``--finetune-anchors``). ``finetune_recipe(args)`` reads them."""
    p.add_argument("--stitch-epochs", type=int_at_least(0), default=0, metavar="N",
                   help=f"{prefix}stitch-only epochs ({members} frozen) before joint training (default 0)")
    p.add_argument("--instance-lr-scale", type=nonneg_float, default=1.0,
                   help=f"{prefix}{members}' learning rate as a fraction of the stitches' (default 1)")
    p.add_argument(anchors_flag, dest="anchors_each_step", action="store_true",
                   help=f"{prefix}also train each {members[:-1]} model alone in every step (keeps Ti and B accurate)")
    p.add_argument("--sampling", choices=("uniform", "flops-bucket"), default="uniform",  # pool.kd.SAMPLINGS
                   help=f"{prefix}how each step draws its model: uniform (the paper's, default) or flops-bucket "
                        "(a FLOPs range first, then a model in it; SN-Netv2)")


def finetune_recipe(args: argparse.Namespace) -> dict:
    """``FinetuneRequest`` fields from the flags of ``add_finetune_recipe``."""
    return {"stitch_epochs": args.stitch_epochs, "instance_lr_scale": args.instance_lr_scale,
            "anchors": args.anchors_each_step, "sampling": args.sampling}


def add_train_args(p: argparse.ArgumentParser, *, epochs: int, batch_size: int = 256, lr: float = 5e-4,
                   warmup: float = 0.0, resumable: bool = True) -> None:
    """The training flags; ``resumable=False`` for commands that keep no checkpoint (no ``--resume``)."""
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs, help=f"passes over the training set (default {epochs})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"global batch (default {batch_size})")
    g.add_argument("--lr", type=positive_float, default=lr, help=f"AdamW peak learning rate (default {lr})")
    g.add_argument("--weight-decay", type=nonneg_float, default=0.05, help="AdamW weight decay (default 0.05)")
    g.add_argument("--warmup-epochs", type=nonneg_float, default=warmup,
                   help=f"epochs of linear warm-up before the cosine decay (default {warmup:g})")
    g.add_argument("--seed", type=seed_value, default=0,
                   help=f"seed for data order, augmentation, descendant draws, 0..{MAX_SEED} (default 0)")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (quick runs)")
    g.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs; CPUs with AVX512-BF16 or AMX)")
    g.add_argument("--workers", type=int, default=0,
                   help=f"DataLoader worker processes, 0..{max_workers()} (default 0: load in this process)")
    if resumable:  # a command that keeps no checkpoint takes neither
        g.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (default: per epoch)")
        g.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")


def train_flags(cfg) -> str:
    """The ``add_train_args`` flags that reproduce ``cfg``'s epochs, batch, learning rate, seed, warm-up and
    step cap, and its device and loader workers where not the defaults (the inverse of ``train_config`` for the
    settings a recorded command needs)."""
    flags = f"--epochs {cfg.epochs} --batch-size {cfg.batch_size} --lr {cfg.lr} --seed {cfg.seed}"
    if cfg.warmup_epochs:
        flags += f" --warmup-epochs {cfg.warmup_epochs}"
    if cfg.max_steps_per_epoch:
        flags += f" --max-steps-per-epoch {cfg.max_steps_per_epoch}"
    if cfg.device != "cpu":
        flags += f" --device {cfg.device}"
    if cfg.num_workers:
        flags += f" --workers {cfg.num_workers}"
    return flags


def train_config(args: argparse.Namespace):
    import os

    from lgp_edge.errors import UsageError
    from lgp_edge.train import TrainConfig

    if args.epochs < 1 or args.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be positive")
    if args.warmup_epochs >= args.epochs:
        raise UsageError(f"--warmup-epochs {args.warmup_epochs:g} is not shorter than --epochs {args.epochs}: the "
                         "learning rate would never reach --lr; give a shorter warm-up or more epochs")
    save_every = getattr(args, "save_every", 0)
    if save_every < 0:
        raise UsageError("--save-every must be 0 or positive")
    if getattr(args, "resume", False) and getattr(args, "force", False):
        raise UsageError("--resume continues the run in the output directory and --force starts over; pass one")
    if not 0 <= args.workers <= max_workers():
        raise UsageError(f"--workers must be in 0..{max_workers()} (max(64, 4 x the {os.cpu_count() or 1} CPUs)), "
                         f"got {args.workers}")
    if args.max_steps_per_epoch is not None and args.max_steps_per_epoch < 1:
        raise UsageError("--max-steps-per-epoch must be positive")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise UsageError(f"--device must be cpu or cuda, not '{args.device}'")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
        if args.bf16 and not torch.cuda.is_bf16_supported():
            raise UsageError("--bf16: this GPU does not support bfloat16; run without --bf16")
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       warmup_epochs=args.warmup_epochs, seed=args.seed,
                       max_steps_per_epoch=args.max_steps_per_epoch, save_every=save_every,
                       device=args.device, bf16=args.bf16, num_workers=args.workers)


def single_process(command: str, does: str = "trains") -> None:
    """Refuse to run ``command`` under torchrun: it ``does`` its work in one process, so every rank would do it
    alone and write the same output."""
    import os

    from lgp_edge.errors import UsageError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"'lgp-edge {command}' {does} in one process; start it without torchrun (it runs here with "
                         f"WORLD_SIZE={os.environ['WORLD_SIZE']})")


def setup_distributed(args: argparse.Namespace) -> None:
    """Join the process group when started by torchrun (gloo on CPU, nccl on CUDA).

    Outside torchrun (no WORLD_SIZE, or 1) nothing happens. Under torchrun: with ``--device cuda`` each
    process takes GPU ``LOCAL_RANK`` (``args.device`` becomes ``cuda:LOCAL_RANK``); ranks other than 0 log
    errors only; the process group is destroyed when the process exits.
    """
    import atexit
    import logging
    import os

    from lgp_edge.errors import UsageError
    from lgp_edge.progress import counted

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    cuda = args.device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UsageError(f"--nproc_per_node asks for more processes than the "
                             f"{counted(torch.cuda.device_count(), 'GPU')} of this node (local rank {local}); use "
                             "--nproc_per_node "
                             f"{torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)  # before the process group, so nccl binds this GPU
        args.device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    if dist.get_rank() != 0:
        logging.getLogger("lgp_edge").setLevel(logging.ERROR)
    atexit.register(_teardown)


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # exiting anyway; a peer may already be gone
            pass


def check_before_torch(args: argparse.Namespace, kind: str) -> None:
    """The refusals of a training command that need neither torch nor timm, made before they are imported (3-8 s
    on 2 cores): a misspelt lgp-edge ancestry, an --out that cannot be written (``kind`` of lgp-edge output) or
    resumed, an unknown --data. The training code checks them again, with the rest."""
    from lgp_edge.data_sources import check_data_name
    from lgp_edge.models.variants import check_variant_name
    from lgp_edge.outdir import check_output_dir, check_resume_dir

    if getattr(args, "ancestry", None):
        check_variant_name(args.ancestry)
    if getattr(args, "out", None):
        if getattr(args, "resume", False):
            check_resume_dir(args.out)
        else:
            check_output_dir(args.out, args.force, kind=kind)
    if getattr(args, "data", None):
        check_data_name(args.data)
