"""``lgp-edge pool distill|build|finetune|stitch|eval|info|plan``."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from lgp_edge.commands.common import (
    DATA_HELP,
    Col,
    add_json,
    add_pool_arg,
    console,
    data_value,
    fraction,
    int_at_least,
    name_list,
    positive_float,
    print_json,
    print_table,
    reporter,
    seed_value,
    styled,
)
from lgp_edge.commands.train_args import (
    add_finetune_recipe,
    add_train_args,
    add_width_epochs,
    check_before_torch,
    finetune_recipe,
    setup_distributed,
    single_process,
    train_config,
)


def _widths(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


UPDATED = "pool directory (updated in place)"
STAGE_NOTES = {"restitched": " (instances fine-tuned, stitches re-initialised since)"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pool", help="build, fine-tune, evaluate and inspect learngene pools")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for add in (_register_distill, _register_build, _register_finetune, _register_stitch, _register_eval,
                _register_info, _register_plan):
        add(s)


def _add_ancestry_args(b: argparse.ArgumentParser) -> None:
    b.add_argument("--ancestry", required=True, metavar="NAME",
                   help="timm ViT name, e.g. lgp_vit_fmnist or deit_base_patch16_224")
    b.add_argument("--ancestry-checkpoint", default=None, metavar="PATH",
                   help="ancestry weights: safetensors, a timm checkpoint (weights_only), an 'ancestry train' dir "
                        "or a Hugging Face snapshot folder")


def _add_position_loss(p: argparse.ArgumentParser) -> None:
    p.add_argument("--position-loss", choices=("mean", "sum"), default="mean",
                   help="the hidden-state and attention losses of a student's supervised positions (Ti's three "
                        "'front,end' ones): averaged (default) or summed (the authors' code)")


def _register_distill(s: argparse._SubParsersAction) -> None:
    d = s.add_parser("distill", help="distil an ancestry into auxiliary models for several pools at once (one "
                                     "ancestry forward pass per batch for all of them); 'pool build --distilled' "
                                     "and 'baseline snnet --distilled' take them from there")
    _add_ancestry_args(d)
    d.add_argument("--allow-random-ancestry", action="store_true", help="distil an untrained ancestry (smoke tests)")
    d.add_argument("--data", type=data_value, required=True, metavar="DATA", help=DATA_HELP)
    d.add_argument("--out", required=True, metavar="DIR", help="directory to create")
    d.add_argument("--models", type=name_list("--models", "auxiliary model"), required=True, metavar="M,M,...",
                   help="auxiliary models <width><depth>, width ti, s or b, depth 6 or 9 (the pools' depth groups) or "
                        "the ancestry's (SN-Net's Ti/S anchors), e.g. ti6,b6,ti9,b9,ti12,s12")
    d.add_argument("--aux-init", choices=("ancestry", "random"), default="ancestry",
                   help="models start as a weight selection of the ancestry (default) or random (the paper's)")
    d.add_argument("--alpha", type=fraction, default=0.1,
                   help="weight of CE on labels, 0..1; the distillation terms weigh 1 - alpha (default 0.1)")
    _add_position_loss(d)
    add_width_epochs(d, who="the models")
    d.add_argument("--force", action="store_true", help="overwrite an earlier 'pool distill' output")
    d.add_argument("--eval-images", type=int_at_least(1), default=None, metavar="N",
                   help="evaluate each model alone afterwards on N validation images (a fixed random "
                        "subset; default all)")
    add_train_args(d, epochs=100)
    d.set_defaults(func=_distill)


def _distill(args: argparse.Namespace) -> int:
    check_before_torch(args, "distilled")
    from lgp_edge.pool.auxiliary import DistillRequest, distill_auxiliary
    from lgp_edge.train import is_main

    setup_distributed(args)
    req = DistillRequest(ancestry=args.ancestry, checkpoint=args.ancestry_checkpoint, data=args.data, out=args.out,
                         models=args.models, aux_init=args.aux_init, alpha=args.alpha,
                         position_loss=args.position_loss, width_epochs=args.width_epochs,
                         allow_random_ancestry=args.allow_random_ancestry,
                         force=args.force, resume=args.resume, eval_images=args.eval_images)
    record = distill_auxiliary(req, train_config(args), reporter(args))
    if is_main():
        epochs = ", ".join(f"{m} {e}" for m, e in record["epochs"].items())
        print(f"distilled {len(record['models'])} auxiliary models (epochs: {epochs}) in {record['wall_s'] / 60:.1f} "
              f"min, saved to {args.out}; use it with: lgp-edge pool build --distilled {shlex.quote(args.out)}")
        if record["top1"]:
            alone = ", ".join(f"{m} {v:.2f}%" for m, v in record["top1"].items())
            print(f"top-1 of each alone: {alone} ({record['top1_images']:,} validation images of {args.data})")
    return 0


def _register_build(s: argparse._SubParsersAction) -> None:
    b = s.add_parser("build", help="distil an ancestry into auxiliary models and stitch them into a pool")
    _add_ancestry_args(b)
    b.add_argument("--pretrained", action="store_true", help="timm's pretrained ancestry weights (needs a model hub)")
    b.add_argument("--allow-random-ancestry", action="store_true", help="distil an untrained ancestry (smoke tests)")
    b.add_argument("--data", type=data_value, required=True, metavar="DATA", help=DATA_HELP)
    b.add_argument("--out", required=True, metavar="POOL", help="pool directory to create")
    b.add_argument("--depth", type=int_at_least(1), default=6, metavar="N",
                   help="depth group of the auxiliary models: 6 or 9 (default 6)")
    b.add_argument("--widths", type=_widths, default=("ti", "b"), metavar="W,W,...",
                   help="auxiliary widths (default ti,b)")
    b.add_argument("--chains", choices=("pairs", "tsb"), default="pairs",
                   help="descendants: neighbour pairs (paper; default) or also Ti->S->B chains (tsb; needs --widths "
                        "ti,s,b)")
    b.add_argument("--init", choices=("learned", "lstsq", "lstsq-kd"), default="lstsq-kd",
                   help="stitch init: lstsq-kd (least squares on 1000 images, then stitch-only distillation; "
                        "default, the best measured), learned (the paper's rule) or lstsq (SN-Net's)")
    b.add_argument("--aux-init", choices=("ancestry", "random"), default="ancestry",
                   help="auxiliary models start as a weight selection of the ancestry (default: evenly spaced "
                        "blocks, first channels and heads) or random (the paper's)")
    b.add_argument("--stitch-steps", type=int_at_least(0), default=300, metavar="N",
                   help="lstsq-kd: steps of stitch-only distillation, rounded up to equal epochs where the "
                        "training set takes more than one (the count run is recorded; default 300)")
    b.add_argument("--alpha", type=fraction, default=0.1,
                   help="weight of CE on labels, 0..1; the distillation terms weigh 1 - alpha (default 0.1)")
    _add_position_loss(b)
    add_width_epochs(b, who="the auxiliary models")
    b.add_argument("--distilled", type=name_list("--distilled", "'pool distill' directory"), default=(),
                   metavar="DIR,DIR,...",
                   help="take the auxiliary models from 'pool distill' outputs instead of distilling them here "
                        "(the training flags then apply to the lstsq-kd stitch steps only)")
    b.add_argument("--force", action="store_true", help="overwrite a non-empty output directory")
    b.add_argument("--eval-images", type=int_at_least(1), default=None, metavar="N",
                   help="evaluate each auxiliary model alone after distilling it here on N validation images (a "
                        "fixed random subset; default all; not with --distilled)")
    add_train_args(b, epochs=100)
    b.set_defaults(func=_build)


def _register_finetune(s: argparse._SubParsersAction) -> None:
    f = s.add_parser("finetune", help="train the pool one random descendant per step, distilling the ancestry")
    add_pool_arg(f, positional=True, help=UPDATED)
    f.add_argument("--data", type=data_value, required=True, metavar="DATA", help=DATA_HELP)
    f.add_argument("--init", choices=("learned", "lstsq", "lstsq-kd"), default=None,
                   help="re-initialise the stitch layers before training (default: keep the pool's)")
    f.add_argument("--tau", type=positive_float, default=1.0, help="KD temperature (default 1)")
    add_finetune_recipe(f)
    add_train_args(f, epochs=50)
    f.set_defaults(func=_finetune)


def _register_stitch(s: argparse._SubParsersAction) -> None:
    st = s.add_parser("stitch", help="re-initialise the stitch layers in place (learned, lstsq or lstsq-kd) and "
                                     "report their R^2 on validation features")
    add_pool_arg(st, positional=True, help=UPDATED)
    st.add_argument("--data", type=data_value, required=True, metavar="DATA", help=DATA_HELP)
    st.add_argument("--init", choices=("learned", "lstsq", "lstsq-kd"), required=True, help="stitch init")
    st.add_argument("--lstsq-images", type=int_at_least(1), default=100, metavar="N",
                    help="training images for lstsq (lstsq-kd uses at least 1000; default 100)")
    st.add_argument("--stitch-steps", type=int_at_least(0), default=300, metavar="N",
                    help="lstsq-kd: steps of stitch-only distillation, rounded up to equal epochs where the "
                         "training set takes more than one (the count run is recorded; default 300)")
    st.add_argument("--r2-images", type=int_at_least(1), default=500, metavar="N",
                    help="validation images for the R^2 report (default 500)")
    st.add_argument("--batch-size", type=int_at_least(1), default=256, metavar="N",
                    help="lstsq-kd batch (default 256)")
    st.add_argument("--seed", type=seed_value, default=0, metavar="N",
                    help="seed for image choice and draws (default 0)")
    add_json(st)
    st.set_defaults(func=_stitch)


def _register_eval(s: argparse._SubParsersAction) -> None:
    e = s.add_parser("eval", help="top-1, params and FLOPs of every descendant -> POOL/descendants.json")
    add_pool_arg(e, positional=True)
    e.add_argument("--data", type=data_value, required=True, metavar="DATA", help=DATA_HELP)
    e.add_argument("--max-images", type=int_at_least(1), default=None, metavar="N",
                   help="evaluate on N validation images (a fixed random subset; default all)")
    e.add_argument("--batch-size", type=int_at_least(1), default=256, metavar="N",
                   help="images per forward pass (default 256)")
    add_json(e)
    e.set_defaults(func=_eval)


def _register_info(s: argparse._SubParsersAction) -> None:
    i = s.add_parser("info", help="instances, stitches, stored params and descendants of a pool")
    add_pool_arg(i, positional=True, optional=True, help="pool directory (default: the bundled demo pool)")
    add_json(i)
    i.set_defaults(func=_info)


def _register_plan(s: argparse._SubParsersAction) -> None:
    pl = s.add_parser("plan", help="descendants of a pool with params and FLOPs, without training")
    pl.add_argument("--ancestry", required=True, metavar="NAME", help="timm ViT name, e.g. deit_base_patch16_224")
    pl.add_argument("--depth", type=int, default=6, metavar="N", help="depth group: 6 or 9 (default 6)")
    pl.add_argument("--widths", type=_widths, default=("ti", "b"), metavar="W,W,...",
                    help="auxiliary widths (default ti,b)")
    pl.add_argument("--chains", choices=("pairs", "tsb"), default="pairs",
                    help="descendants: neighbour pairs (paper; default) or also Ti->S->B chains (tsb)")
    add_json(pl)
    pl.set_defaults(func=_plan)


def _stitch(args: argparse.Namespace) -> int:
    from lgp_edge.pool.restitch import RestitchRequest, restitch_pool
    from lgp_edge.train import TrainConfig

    single_process("pool stitch", "fits and trains the stitches")

    req = RestitchRequest(pool=args.pool, data=args.data, init=args.init, lstsq_images=args.lstsq_images,
                          stitch_steps=args.stitch_steps, r2_images=args.r2_images)
    manifest = restitch_pool(req, TrainConfig(epochs=1, batch_size=args.batch_size, seed=args.seed), reporter(args))
    entry = manifest.history[-1]
    if args.json:
        print_json(entry)
    else:
        print(f"pool {manifest.spec.pool_id}: stitch layers re-initialised with {args.init}; mean R^2 "
              f"{entry['r2_mean']:.3f} on {entry['r2_images']} validation images; the stitched top-1: "
              f"{shlex.join(['lgp-edge', 'pool', 'eval', args.pool, '--data', args.data])}")
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.pretrained and args.ancestry_checkpoint:
        from lgp_edge.errors import UsageError

        raise UsageError("--pretrained and --ancestry-checkpoint both give the ancestry's weights; pass one")
    check_before_torch(args, "pool")
    from lgp_edge.pool.build import BuildRequest, build_pool
    from lgp_edge.train import is_main

    setup_distributed(args)
    req = BuildRequest(ancestry=args.ancestry, checkpoint=args.ancestry_checkpoint, data=args.data, out=args.out,
                       depth=args.depth, widths=args.widths, chains=args.chains, init=args.init, alpha=args.alpha,
                       position_loss=args.position_loss,
                       aux_init=args.aux_init, allow_random_ancestry=args.allow_random_ancestry,
                       pretrained=args.pretrained,
                       force=args.force, resume=args.resume, stitch_steps=args.stitch_steps,
                       width_epochs=args.width_epochs, distilled=args.distilled, eval_images=args.eval_images)
    cfg = train_config(args)
    manifest = build_pool(req, cfg, reporter(args))
    if is_main():
        n = len(manifest.spec.instances) * manifest.spec.depth
        print(f"pool {manifest.spec.pool_id}: {n} learngene instances, stitch init {manifest.stitch_init}, "
              f"saved to {args.out}" + (" (synthetic data)" if manifest.synthetic else ""))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from lgp_edge.pool.finetune import FinetuneRequest, finetune_pool
    from lgp_edge.train import is_main

    setup_distributed(args)
    manifest = finetune_pool(FinetuneRequest(pool=args.pool, data=args.data, init=args.init, tau=args.tau,
                                             resume=args.resume, **finetune_recipe(args)),
                             train_config(args), reporter(args))
    if is_main():
        last = manifest.history[-1]
        print(f"pool {manifest.spec.pool_id} fine-tuned: {len(last['epoch_loss'])} epoch(s), final loss "
              f"{last['epoch_loss'][-1]:.4f}, {last['wall_s']:.0f} s; next: "
              f"{shlex.join(['lgp-edge', 'pool', 'eval', args.pool, '--data', args.data])}")
    return 0


def print_descendants(title: str, rows: list[dict[str, Any]]) -> None:
    """The descendants table of pool eval/info/plan and the baselines."""
    cols = ("key", *(Col(n, right=True) for n in ("blocks", "params", "MFLOPs", "top-1 %")))
    print_table(cols, [(r["key"], str(r["blocks"]), f"{r['params']:,}", f"{r['flops'] / 1e6:,.1f}",
                        "-" if r.get("top1") is None else f"{r['top1']:.2f}") for r in rows], title=title)


def _eval(args: argparse.Namespace) -> int:
    from lgp_edge.pool.evaluate import evaluate_pool

    single_process("pool eval", "evaluates")
    manifest = evaluate_pool(args.pool, args.data, batch_size=args.batch_size, max_images=args.max_images,
                             reporter=reporter(args))
    rows = [r.to_dict() for r in manifest.descendants]
    n = manifest.top1_images
    if args.json:
        print_json({"pool_id": manifest.spec.pool_id, "data": args.data, "images": n, "descendants": rows})
    else:
        tag = " — SYNTHETIC DATA, accuracies are meaningless" if args.data == "synthetic" else ""
        print_descendants(f"pool {manifest.spec.pool_id} on {n:,} {args.data} images{tag}", rows)
    return 0


def pool_summary(manifest: Any) -> dict[str, Any]:
    """What ``pool info`` prints, from the manifest alone: sizes are arithmetic on the spec (``models.plan``, the
    numbers counting the built modules gives), so neither torch nor the weights are loaded."""
    from lgp_edge.models.plan import (
        descendant_record,
        enumerate_descendants,
        instance_params,
        stitch_params,
        stitch_specs,
        stored_params,
    )

    spec = manifest.spec
    known = {r.key: r for r in manifest.descendants}
    rows = []
    for d in enumerate_descendants(spec):
        r = known.get(d.key) or descendant_record(spec, d)
        rows.append({"key": r.key, "blocks": r.blocks, "params": r.params, "flops": r.flops, "top1": r.top1})
    after = manifest.top1_after_distill()
    return {
        "pool_id": spec.pool_id,
        "ancestry": spec.ancestry.to_dict(),
        "depth": spec.depth,
        "instances": [{**i.to_dict(), "params": instance_params(spec, i),
                       **({"top1_after_distill": after[i.name]} if i.name in after else {})} for i in spec.instances],
        "stitch_layers": len(stitch_specs(spec)),
        "stitch_params": stitch_params(spec),
        "stored_params": stored_params(spec),
        "stitch_init": manifest.stitch_init,
        "stage": manifest.stage,
        "data": manifest.data,
        "synthetic_data": manifest.synthetic,
        "evaluated": bool(manifest.descendants),
        "top1_data": manifest.top1_data,
        "top1_images": manifest.top1_images,
        "provenance": manifest.provenance,
        "descendants": rows,
    }


def _info(args: argparse.Namespace) -> int:
    from lgp_edge.pool.manifest import read_manifest, resolve_pool, verified_weights
    from lgp_edge.progress import counted

    path = resolve_pool(args.pool)
    manifest = read_manifest(path)
    verified_weights(path, manifest)  # load_pool's checks but reading the tensors, whose bytes the sha256 covers
    info = pool_summary(manifest)
    if args.json:
        print_json({"path": str(path), **info})
        return 0
    c = console()
    a = manifest.spec.ancestry
    rows = info["descendants"]
    c.print(styled(f"pool {info['pool_id']}", f"  {path}"))
    c.print(f"ancestry {a.name} (dim {a.embed_dim}, {a.depth} blocks, {a.img_size} px, {a.in_chans} ch); "
            f"stage {info['stage']}{STAGE_NOTES.get(info['stage'], '')} on {info['data']}; "
            f"stitch init {info['stitch_init']}")
    for inst in info["instances"]:
        after = inst.get("top1_after_distill")
        c.print(f"  instances {inst['name']}: {inst['depth']} blocks of width {inst['embed_dim']} "
                f"({counted(inst['num_heads'], 'head')}), {inst['params']:,} params"
                + (f"; top-1 {after:.2f}% alone after distillation" if after is not None else ""))
    c.print(f"  stitch layers: {info['stitch_layers']} ({info['stitch_params']:,} params)")
    c.print(f"  stored params: {info['stored_params']:,}")
    smallest = min(rows, key=lambda r: r["flops"])
    largest = max(rows, key=lambda r: r["flops"])
    c.print(f"  {len(rows)} descendants; smallest {smallest['key']} ({smallest['params']:,} params, "
            f"{smallest['flops'] / 1e6:,.1f} MFLOPs), largest {largest['key']} ({largest['params']:,} params, "
            f"{largest['flops'] / 1e6:,.1f} MFLOPs)")
    if not info["evaluated"]:
        c.print("  not evaluated yet: run 'lgp-edge pool eval POOL --data DATA'")
    on = info["top1_images"]
    print_descendants("descendants" + (f" (top-1 on {on:,} {info['top1_data']} images)" if on else ""), rows)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from lgp_edge.models.plan import (
        check_pool_widths,
        descendant_record,
        enumerate_descendants,
        plan_instances,
        stored_params,
    )
    from lgp_edge.models.variants import variant_spec
    from lgp_edge.specs import PoolSpec

    check_pool_widths(args.widths)  # what 'pool build' would refuse, refused here too

    aspec = variant_spec(args.ancestry)
    if aspec is None:  # a timm model: its registry knows its numbers (torch and timm, but nothing is allocated)
        from lgp_edge.models.ancestry import ancestry_spec

        aspec = ancestry_spec(args.ancestry)
    spec = PoolSpec(aspec, args.depth, plan_instances(aspec, args.depth, args.widths), chains=args.chains)
    rows = [{k: v for k, v in descendant_record(spec, s).to_dict().items() if k != "spec"} | {"segments": [
        seg.to_dict() for seg in s.segments], "stitches": list(s.stitches)} for s in enumerate_descendants(spec)]
    if args.json:
        print_json({"ancestry": aspec.to_dict(), "depth": args.depth, "pool_id": spec.pool_id,
                    "stored_params": stored_params(spec), "descendants": rows})
    else:
        print_descendants(f"{args.ancestry}, depth {args.depth}: {len(rows)} descendants (counted from the "
                          "architecture; nothing built or trained)", rows)
    return 0
