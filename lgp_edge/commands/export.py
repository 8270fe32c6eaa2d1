"""``lgp-edge export``: the chosen descendant for a profile as validated artifacts plus manifest.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from lgp_edge.commands.common import DATA_HELP, add_json, add_pool_arg, data_value, int_at_least
from lgp_edge.commands.select import add_profile_args
from lgp_edge.specs import MB


def _formats(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(f.strip() for v in values for f in v.split(",") if f.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the best descendant for a profile (validated artifacts + manifest)",
                       description="Select the descendant for a profile, export it in the profile's formats into a "
                                   "temporary directory, validate every runnable artifact against torch on real "
                                   "images, then rename the directory to OUT. Exit 1 when a validation fails: OUT "
                                   "is left untouched and the failed output is kept in OUT.failed (removed by the next "
                                   "passing export to OUT).")
    add_profile_args(p)
    add_pool_arg(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (refused if non-empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--format", action="append", default=None, metavar="FORMAT",
                   help="formats instead of the profile's: onnx, tensorrt, openvino, coreml, ort (repeat or comma "
                        "list)")
    p.add_argument("--descendant", default=None, metavar="KEY", help="export this descendant, skipping selection")
    p.add_argument("--opset", type=int_at_least(13), default=None, metavar="N",
                   help="ONNX opset (default: min(target's max opset, 17))")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="symbolic batch dimension in ONNX, TensorRT and OpenVINO files (default: static; Core ML "
                        "packages take one image)")
    p.add_argument("--data", type=data_value, default=None, metavar="DATA",
                   help=f"validation images; {DATA_HELP} (default: the pool's own dataset)")
    p.add_argument("--val-images", type=int_at_least(1), default=1000, metavar="N",
                   help="validation images per artifact (default 1000; >= 300 for int8)")
    p.add_argument("--calib-images", type=int_at_least(300), default=None, metavar="N",
                   help="int8 only: calibration images, from the training split (>= 300; default 300; used in "
                        "whole batches of the profile's batch)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="export this timm ViT (e.g. deit_tiny_patch16_224) instead of a pool's descendant; needs "
                        "--checkpoint; preprocessing from --data, else its pretrained_cfg")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="with --model: its weights (.safetensors, an 'ancestry train' directory, or a timm .pth "
                        "read with weights_only=True)")
    p.add_argument("--no-plan", action="store_true", help="never build model.plan here, even with TensorRT + GPU")
    add_json(p)
    add_switchable_args(p)
    p.set_defaults(func=_run)


def _check_model_args(args: argparse.Namespace) -> None:
    """--model excludes the pool options; --checkpoint needs --model."""
    from lgp_edge.errors import UsageError

    if args.model is None:
        if args.checkpoint is not None:
            raise UsageError("--checkpoint goes with --model NAME (a pool's descendants come from --pool)")
        return
    for flag, given in (("--pool", args.pool), ("--descendant", args.descendant), ("--switchable", args.switchable),
                        ("--descendants", args.descendants), ("--front", args.front)):
        if given:
            raise UsageError(f"--model exports a timm model; {flag} selects from a pool: use one or the other")
    if args.checkpoint is None:
        raise UsageError("--model needs --checkpoint PATH (safetensors, an 'ancestry train' directory, or a timm .pth "
                         "read with weights_only=True)")


def _run(args: argparse.Namespace) -> int:
    _check_model_args(args)
    if args.switchable or args.descendants is not None or args.front:
        return _run_switchable(args)
    from lgp_edge.commands.common import print_json, reporter
    from lgp_edge.commands.select import resolve_profile
    from lgp_edge.errors import NothingFits
    from lgp_edge.export.pipeline import ExportRequest, export_profile

    profile, target = resolve_profile(args, formats=_formats(args.format))
    req = ExportRequest(profile=profile, target=target, out=Path(args.out), pool=args.pool, force=args.force,
                        data=args.data, val_images=args.val_images, calib_images=args.calib_images,
                        opset=args.opset, dynamic_batch=args.dynamic_batch, descendant=args.descendant,
                        store=Path(args.store) if args.store else None,
                        targets_dir=Path(args.targets_dir) if args.targets_dir else None,
                        build_plan=not args.no_plan, model=args.model,
                        checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    try:
        result = export_profile(req, reporter(args))
    except NothingFits as exc:
        if args.json:  # a script reads why (and the front) as JSON; the CLI prints the reason as one line, exit 2
            print_json({"status": "nothing fits", "problem": str(exc), "selection": exc.selection})
        raise
    if args.json:
        print_json(result.manifest)
        return 0
    _print_result(result.manifest, profile.name, result.out)
    return 0


def _check_line(r: dict) -> str:
    """One artifact's validation in words: what was compared, by what limit, and what ran it."""
    if r.get("kind") != "numeric":
        return "structural check (Core ML is not run here: validate_coreml.py on a Mac)"
    limit = f"<= {r['atol']:.1e}" if r.get("atol") is not None else "(no limit: judged by agreement)"
    check = (f"max|diff| {r['max_abs_diff']:.2e} {limit}  agreement {r['top1_agreement']:.3f} (>= "
             f"{r['min_agreement']})  top-1 torch {r['top1_ref']:.2f} -> {r['top1_artifact']:.2f}")
    if r.get("top1_change") is not None and r.get("atol") is None:
        check += f" ({r['top1_change']:+.2f} points)"
    if r.get("note"):  # what actually ran the check, e.g. an fp16 ONNX in ONNX Runtime for a TensorRT fp16 engine
        check += f"  (checked in {r['note']})"
    return check


def _headline_top1(mf: dict) -> str:
    """The exported model's top-1; for an export below fp32, labelled as the pool's torch fp32 number, with the
    top-1 each lower-precision file measured on this export's validation images beside it."""
    from lgp_edge.export.manifest import exported, low_precision, own_top1_words, pool_top1_of

    d = exported(mf)
    text = f"{d['top1']:.2f}%" if d["top1"] is not None else "n/a"
    if not low_precision(mf):
        return text
    words = own_top1_words(mf)
    files = ""
    if words:
        files = f"; on the {mf['validation']['images']:,} validation images: {words}"
    if d["top1"] is None:
        return text + (f" ({files[2:]})" if files else "")
    return f"{text} ({pool_top1_of(mf)}{files})"


def _print_result(mf: dict, profile: str, out: Path) -> None:
    from lgp_edge.commands.common import console, styled
    from lgp_edge.export.manifest import exported, threads_words
    from lgp_edge.select import per_batch

    d = exported(mf)
    c = console()
    batch = mf["profile"].get("batch", 1)
    lat = (f"{d['expected_latency_ms']:.3g} ms p90{per_batch(batch)} ({d['latency_source']}, {d['latency_runtime']}"
           f"{threads_words(mf)})"
           if d["expected_latency_ms"] is not None else "latency unknown")
    c.print(styled(str(profile), f" -> {d['key']}: top-1 {_headline_top1(mf)}, {lat}, {d['params']:,} params"))
    if mf["selection"] and "reason" in mf["selection"]:
        c.print(f"why: {mf['selection']['reason']}")
    v = mf["validation"]
    synthetic = " (synthetic: numerical check only)" if v["synthetic"] else ""
    c.print(f"validation on {v['images']} {v['data']} images{synthetic}:")
    for a in mf["artifacts"]:
        r = a["validation"] or {}
        size = f"{a['model_bytes'] / MB:.2f} MB"
        status = "passed" if r.get("passed") else "FAILED"
        print(f"  {a['path']:22s} {a['format']:9s} {a['precision']:5s} {size:>9s}  {_check_line(r)}  {status}")
    for a in mf["artifacts"]:
        if a.get("note"):
            c.print(f"{a['path']}: {a['note']}")
    c.print(f"wrote {out}/ (manifest.json, EMBEDDING.md)")


# ---------------------------------------------------------------------------------------- --switchable
def add_switchable_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("switchable", "one artifact holding several descendants, chosen at run time")
    g.add_argument("--switchable", action="store_true",
                   help="write one switchable model (ONNX with an int64 'descendant' input; Core ML multifunction "
                        ".mlpackage) holding several descendants, each weight stored once")
    sel = g.add_mutually_exclusive_group()
    sel.add_argument("--descendants", default=None, metavar="KEY,KEY,...",
                     help="with --switchable: these descendants, in this order (index 0, 1, …)")
    sel.add_argument("--front", action="store_true",
                     help="with --switchable: the Pareto front of the descendants within the profile's budgets "
                          "(the default)")


def _run_switchable(args: argparse.Namespace) -> int:
    from lgp_edge.commands.common import console, print_json, reporter, styled
    from lgp_edge.commands.select import resolve_profile
    from lgp_edge.errors import UsageError
    from lgp_edge.export.switchable_export import SwitchableRequest, export_switchable, parse_keys

    if not args.switchable:
        raise UsageError("--descendants and --front select what goes into a switchable model; add --switchable")
    if args.descendant is not None:
        raise UsageError("--descendant exports one descendant; with --switchable use --descendants KEY,KEY…")
    if args.dynamic_batch:  # it was accepted and ignored: the switchable input kept the profile's batch
        raise UsageError("--dynamic-batch is not available with --switchable (its input has the profile's static "
                         "batch); export single descendants for a dynamic batch")
    profile, target = resolve_profile(args, formats=_formats(args.format))
    if profile.precision == "int8":  # it was accepted and an fp32 artifact written under an int8 profile
        raise UsageError(f"profile '{profile.name}' asks for int8, which --switchable does not export (its "
                         "artifact is fp32 ONNX or an fp16/fp32 Core ML package); export single descendants "
                         "for int8")
    if args.calib_images is not None:
        raise UsageError("--calib-images is for int8 exports, which --switchable does not make: leave it out")
    req = SwitchableRequest(profile=profile, target=target, out=Path(args.out),
                            pool=Path(args.pool) if args.pool else None, keys=parse_keys(args.descendants),
                            force=args.force, data=args.data, val_images=args.val_images,
                            store=Path(args.store) if args.store else None, opset=args.opset)
    result = export_switchable(req, reporter(args))
    mf = result.manifest
    if args.json:
        print_json(mf)
        return 0
    c = console()
    c.print(styled(profile.name, f": {len(mf['descendants'])} descendants ({mf['selection']}) in one artifact"))
    for a in mf["artifacts"]:
        size = a["size"]
        if a["format"] == "onnx":
            worst = max(v["vs_torch"]["max_abs_diff"] for v in a["validation"])
            c.print(f"  {a['path']}: {a['bytes'] / MB:.2f} MB = {size['ratio_to_pool']:.2f} x the pool's fp32 "
                    f"weights, {size['ratio_to_singles']:.2f} x its descendants exported alone (unsimplified); "
                    f"max|diff| vs torch {worst:.2e} over {len(a['validation'])} checks (onnxruntime/openvino): "
                    f"{'passed' if a['passed'] else 'FAILED'}")
        else:
            c.print(f"  {a['path']}: weights {size['weight_bytes'] / MB:.2f} MB = {size['ratio_to_pool']:.2f} x "
                    f"the pool's {a['precision']} weights; {len(a['functions'])} functions, {a['deployment']}; "
                    f"structural check {'passed' if a['passed'] else 'FAILED'}")
    c.print(f"wrote {result.out}/ (manifest.json, EMBEDDING.md)")
    return 0
