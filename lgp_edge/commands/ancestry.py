"""``lgp-edge ancestry train|list``."""

from __future__ import annotations

import argparse

from lgp_edge.commands.common import DATA_HELP, add_json, data_value, print_json, reporter
from lgp_edge.commands.train_args import add_train_args, check_before_torch, setup_distributed, train_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ancestry", help="train or list ancestry ViTs")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = s.add_parser("train", help="train an ancestry ViT from scratch, or fine-tune one (--initial-checkpoint)")
    t.add_argument("--ancestry", required=True, metavar="NAME", help="timm name, e.g. lgp_vit_fmnist")
    t.add_argument("--data", type=data_value, required=True, metavar="DATA", help=DATA_HELP)
    t.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (ancestry.safetensors + ancestry.json)")
    t.add_argument("--force", action="store_true", help="overwrite a non-empty output directory")
    t.add_argument("--initial-checkpoint", metavar="PATH",
                   help="start from these weights (an earlier 'ancestry train' output of the same variant, or a "
                        "timm checkpoint of NAME: .safetensors, .pth(.tar), a Hugging Face snapshot folder) with a "
                        "fresh optimizer and schedule, e.g. a second, lower learning-rate cycle or fine-tuning a "
                        "pretrained model; a head for other classes is replaced by a new one for --data and the "
                        "position embedding resampled to NAME's image size; recorded in ancestry.json")
    add_train_args(t, epochs=10, warmup=0.5)
    t.set_defaults(func=_train)
    ls = s.add_parser("list", help="the small registered variants")
    add_json(ls)
    ls.set_defaults(func=_list)


def _train(args: argparse.Namespace) -> int:
    check_before_torch(args, "ancestry")
    from lgp_edge.pool.ancestry_train import AncestryRequest, train_ancestry

    setup_distributed(args)
    meta = train_ancestry(AncestryRequest(name=args.ancestry, data=args.data, out=args.out, force=args.force,
                                          resume=args.resume, initial_checkpoint=args.initial_checkpoint),
                           train_config(args), reporter(args))
    from lgp_edge.train import is_main

    if is_main():
        tag = " (synthetic data: meaningless)" if meta["synthetic_data"] else ""
        print(f"{args.ancestry}: top-1 {meta['top1']:.2f}% on {meta['val_images']} validation images{tag}; "
              f"{meta['wall_s']:.0f} s; saved to {args.out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from lgp_edge.models.variants import SMALL_VARIANTS

    if args.json:
        print_json({"variants": [{"name": k, **v} for k, v in SMALL_VARIANTS.items()]})
    else:
        for k, v in SMALL_VARIANTS.items():
            print(f"{k:22s} dim {v['embed_dim']:4d}  depth {v['depth']:2d}  heads {v['num_heads']:2d}  "
                  f"{v['img_size']} px / patch {v['patch_size']}  {v['in_chans']} ch  {v['num_classes']} classes")
    return 0
