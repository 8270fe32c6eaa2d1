"""``lgp-edge baseline snnet|scratch|vanilla``: the paper's baselines (docs/METHOD.md §5)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lgp_edge.commands.common import DATA_HELP, add_json, data_value, int_at_least, name_list, print_json, reporter
from lgp_edge.commands.train_args import (
    add_finetune_recipe,
    add_train_args,
    add_width_epochs,
    check_before_torch,
    finetune_recipe,
    single_process,
    train_config,
)


def _names(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(w) for w in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one integer (a comma list), or leave the flag out")
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"{twice} is named twice; give each value once")
    return values


def _common(p: argparse.ArgumentParser, *, checkpoint_required: bool) -> None:
    """The flags of every baseline; an ancestry, data and output are required where there is no --plan."""
    p.add_argument("--ancestry", required=checkpoint_required, default=None, metavar="NAME",
                   help="timm ViT name of the ancestry, e.g. lgp_vit_fmnist")
    p.add_argument("--ancestry-checkpoint", default=None, metavar="PATH",
                   help="ancestry weights: safetensors, a timm checkpoint (weights_only), an 'ancestry train' dir "
                        "or a Hugging Face snapshot folder")
    p.add_argument("--allow-random-ancestry", action="store_true", help="use an untrained ancestry (smoke tests)")
    p.add_argument("--data", type=data_value, required=checkpoint_required, default=None, metavar="DATA",
                   help=DATA_HELP)
    p.add_argument("--out", required=checkpoint_required, default=None, metavar="DIR",
                   help="output directory to create")
    p.add_argument("--eval-images", type=int_at_least(1), default=None, metavar="N",
                   help="evaluate on N validation images (a fixed random subset; default all)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output directory")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="the paper's baselines: SN-Net, scratch, vanilla learngene")
    s = p.add_subparsers(dest="action", metavar="BASELINE", required=True)

    sn = s.add_parser("snnet", help="SN-Net: Ti/S/B anchors of full depth, nearest + paired stitching, "
                                    "lstsq init, one random stitch per step")
    _common(sn, checkpoint_required=False)
    sn.add_argument("--plan", action="store_true", help="list the stitch configs with params/FLOPs; no training")
    sn.add_argument("--anchors", type=name_list("--anchors", "timm anchor name"), default=None,
                    metavar="NAME,NAME,...",
                    help="--plan: comma list of timm anchors, e.g. deit_tiny_patch16_224,deit_small_patch16_224,"
                         "deit_base_patch16_224 (default: Ti/S/B at 1/4, 1/2, 1 of --ancestry)")
    sn.add_argument("--anchor-epochs", type=int, default=None, metavar="N",
                    help="epochs distilling the Ti and S anchors from the ancestry (default: --epochs)")
    sn.add_argument("--aux-init", choices=("ancestry", "random"), default="ancestry",
                    help="Ti and S anchors start as a weight selection of the ancestry (default, as 'pool build') "
                         "or random")
    add_width_epochs(sn, who="the Ti and S anchors")
    sn.add_argument("--distilled", type=name_list("--distilled", "'pool distill' directory"), default=(),
                    metavar="DIR,DIR,...",
                    help="take the Ti and S anchors from 'pool distill' outputs (models ti<D>, s<D>, D the "
                         "ancestry's depth) instead of distilling them here; with --resume, the fine-tuning of "
                         "anchors assembled from the same outputs goes on")
    add_finetune_recipe(sn, anchors_flag="--finetune-anchors", members="anchors", prefix="fine-tuning: ")
    add_json(sn)
    add_train_args(sn, epochs=50)
    sn.set_defaults(func=_snnet)

    sc = s.add_parser("scratch", help="three descendant architectures trained from scratch (CE)")
    _common(sc, checkpoint_required=True)
    sc.add_argument("--keys", type=name_list("--keys", "descendant key"), default=None, metavar="KEY,KEY,...",
                    help="descendant keys of the depth-6 family (default: smallest, median, largest)")
    add_json(sc)
    add_train_args(sc, epochs=50, resumable=False)
    sc.set_defaults(func=_single, method="scratch")

    va = s.add_parser("vanilla", help="vanilla learngene: the ancestry's last 3 blocks under random lower layers")
    _common(va, checkpoint_required=True)
    va.add_argument("--narrow", type=_ints, default=(3, 2, 1, 0), metavar="N,N,...",
                    help="random narrow blocks below the learngene, one model per value (default 3,2,1,0)")
    add_json(va)
    add_train_args(va, epochs=50, resumable=False)
    va.set_defaults(func=_single, method="vanilla")


def _require(args: argparse.Namespace, *names: str) -> None:
    from lgp_edge.errors import UsageError

    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise UsageError(f"'lgp-edge baseline {args.action}' needs {', '.join(missing)}")


def _rows_table(title: str, rows: list[dict[str, Any]]) -> None:
    from lgp_edge.commands.pool import print_descendants

    print_descendants(title, rows)


def _snnet_plan(args: argparse.Namespace) -> int:
    from lgp_edge.baselines.snnet import plan_snnet, snnet_spec
    from lgp_edge.errors import UsageError
    from lgp_edge.models.plan import descendant_record, enumerate_descendants, stitch_specs, stored_params

    timm_names: list[str] | None = None
    if args.anchors:
        spec, timm_names = plan_snnet(args.anchors)
    elif args.ancestry:
        from lgp_edge.models.ancestry import ancestry_spec

        spec = snnet_spec(ancestry_spec(args.ancestry))
    else:
        raise UsageError("'baseline snnet --plan' needs --anchors NAME,NAME,… or --ancestry NAME")
    rows = []
    for d in enumerate_descendants(spec):  # counted from the spec, as pool plan counts a pool's
        r = descendant_record(spec, d)
        rows.append({"key": r.key, "blocks": r.blocks, "params": r.params, "flops": r.flops, "top1": None,
                     "segments": [s.to_dict() for s in d.segments], "stitches": list(d.stitches)})
    anchors = [{"name": i.name, "embed_dim": i.embed_dim, "depth": i.depth, "num_heads": i.num_heads}
               for i in spec.instances]
    for a, name in zip(anchors, timm_names or ()):
        a["timm"] = name
    stitches = len(stitch_specs(spec))
    out = {"method": "snnet", "widest": spec.ancestry.to_dict(), "anchors": anchors,
           "stitch_layers": stitches, "stored_params": stored_params(spec), "configs": len(rows),
           "descendants": rows}
    if args.json:
        print_json(out)
    else:
        _rows_table(f"SN-Net over {', '.join(a['name'] for a in anchors)}: {len(rows)} configs, "
                    f"{stitches} stitch layers, {out['stored_params']:,} stored params "
                    "(counted from the architectures; nothing built or trained)", rows)
    return 0


def _snnet(args: argparse.Namespace) -> int:
    from lgp_edge.errors import UsageError

    if args.plan:
        if args.resume:
            raise UsageError("--plan lists the configs and trains nothing: drop --resume")
        return _snnet_plan(args)
    if args.anchors:
        raise UsageError("--anchors plans SN-Net over timm models (with --plan); training takes its anchors from "
                         "--ancestry: drop --anchors or add --plan")
    single_process("baseline snnet")
    _require(args, "ancestry", "data", "out")
    check_before_torch(args, "pool")
    from lgp_edge.baselines.snnet import SNNetRequest, build_snnet, check_finetuned_as_asked
    from lgp_edge.pool.evaluate import evaluate_pool
    from lgp_edge.pool.finetune import CKPT, STITCH_CKPT, FinetuneRequest, finetune_pool

    cfg = train_config(args)
    if args.anchor_epochs is not None and args.anchor_epochs < 1:
        raise UsageError("--anchor-epochs must be positive")
    anchor_cfg = cfg.with_epochs(args.anchor_epochs or cfg.epochs)
    if args.distilled and args.anchor_epochs is not None:
        raise UsageError("--distilled takes the anchors as they were distilled: drop --anchor-epochs (give the "
                         "epochs to 'pool distill')")
    rep = reporter(args)
    built = build_snnet(SNNetRequest(ancestry=args.ancestry, checkpoint=args.ancestry_checkpoint, data=args.data,
                             out=args.out, allow_random_ancestry=args.allow_random_ancestry, force=args.force,
                             resume=args.resume, aux_init=args.aux_init, width_epochs=args.width_epochs,
                             distilled=tuple(args.distilled)),
                anchor_cfg, rep)
    if built.stage == "finetuned":  # a resume of a finished run, or of one stopped while evaluating
        check_finetuned_as_asked(built, args.out, cfg, finetune_recipe(args), args.data)
    else:
        stopped = any((Path(args.out) / ckpt / "state.json").is_file() for ckpt in (CKPT, STITCH_CKPT))
        finetune_pool(FinetuneRequest(pool=args.out, data=args.data, resume=args.resume and stopped,
                                      **finetune_recipe(args)), cfg, rep)
    manifest = evaluate_pool(args.out, args.data, max_images=args.eval_images, reporter=rep)
    rows = [r.to_dict() for r in manifest.descendants]
    if args.json:
        print_json({"method": "snnet", "pool": args.out, "pool_id": manifest.spec.pool_id, "data": args.data,
                    "descendants": rows})
    else:
        tag = " — SYNTHETIC DATA, accuracies are meaningless" if args.data == "synthetic" else ""
        _rows_table(f"SN-Net {manifest.spec.pool_id} on {args.data}{tag}", rows)
    return 0


def _single(args: argparse.Namespace) -> int:
    single_process(f"baseline {args.method}")
    _require(args, "ancestry", "data", "out")
    check_before_torch(args, "baseline")
    from lgp_edge.baselines.scratch_vanilla import SingleRequest, train_single_models

    req = SingleRequest(method=args.method, ancestry=args.ancestry, checkpoint=args.ancestry_checkpoint,
                        data=args.data, out=args.out, keys=tuple(getattr(args, "keys", None) or ()),
                        narrow=tuple(getattr(args, "narrow", (3, 2, 1, 0))), eval_images=args.eval_images,
                        allow_random_ancestry=args.allow_random_ancestry, force=args.force)
    out = train_single_models(req, train_config(args), reporter(args))
    if args.json:
        print_json(out)
    else:
        tag = " — SYNTHETIC DATA, accuracies are meaningless" if out["synthetic_data"] else ""
        _rows_table(f"{args.method} on {args.data}{tag}", out["configs"])
    return 0
