"""``lgp-edge export``: the chosen descendant for a profile as validated artifacts plus manifest.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from lgp_edge.commands.common import DATA_HELP, add_json, add_pool_arg, int_at_least
from lgp_edge.commands.select import add_profile_args


def _formats(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(f.strip() for v in values for f in v.split(",") if f.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the best descendant for a profile (validated artifacts + manifest)",
                       description="Select the descendant for a profile, export it in the profile's formats into a "
                                   "temporary directory, validate every runnable artifact against torch on real "
                                   "images, then rename the directory to OUT. Exit 1 when a validation fails: OUT "
                                   "is left untouched and the failed output is kept in OUT.failed.")
    add_profile_args(p)
    add_pool_arg(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (refused if non-empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--format", action="append", default=None, metavar="FORMAT",
                   help="formats instead of the profile's: onnx, tensorrt, openvino, coreml, ort (repeat or comma "
                        "list)")
    p.add_argument("--descendant", default=None, metavar="KEY", help="export this descendant, skipping selection")
    p.add_argument("--opset", type=int_at_least(7), default=None, metavar="N",
                   help="ONNX opset (default: min(target's max opset, 17))")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (default: static)")
    p.add_argument("--data", default=None, metavar="DATA",
                   help=f"validation images; {DATA_HELP} (default: the pool's own dataset)")
    p.add_argument("--val-images", type=int_at_least(1), default=1000, metavar="N",
                   help="validation images per artifact (default 1000)")
    p.add_argument("--calib-images", type=int_at_least(1), default=300, metavar="N",
                   help="int8 calibration images (>= 300; default 300)")
    p.add_argument("--no-plan", action="store_true", help="never build model.plan here, even with TensorRT + GPU")
    add_json(p)
    add_switchable_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.switchable or args.descendants is not None or args.front:
        return _run_switchable(args)
    from lgp_edge.commands.common import console, print_json, reporter
    from lgp_edge.commands.select import resolve_profile
    from lgp_edge.export.pipeline import ExportRequest, export_profile

    profile, target = resolve_profile(args, formats=_formats(args.format))
    req = ExportRequest(profile=profile, target=target, out=Path(args.out), pool=args.pool, force=args.force,
                        data=args.data, val_images=args.val_images, calib_images=args.calib_images,
                        opset=args.opset, dynamic_batch=args.dynamic_batch, descendant=args.descendant,
                        store=Path(args.store) if args.store else None,
                        targets_dir=Path(args.targets_dir) if args.targets_dir else None,
                        build_plan=not args.no_plan)
    result = export_profile(req, reporter(args))
    mf = result.manifest
    if args.json:
        print_json(mf)
        return 0
    d = mf["descendant"]
    c = console()
    lat = (f"{d['expected_latency_ms']:.3g} ms p90 ({d['latency_source']}, {d['latency_runtime']})"
           if d["expected_latency_ms"] is not None else "latency unknown")
    top1 = f"{d['top1']:.2f}%" if d["top1"] is not None else "n/a"
    c.print(f"[bold]{profile.name}[/] -> {d['key']}: top-1 {top1}, {lat}, {d['params']:,} params")
    if mf["selection"] and "reason" in mf["selection"]:
        c.print(f"why: {mf['selection']['reason']}")
    v = mf["validation"]
    synthetic = " (synthetic: numerical check only)" if v["synthetic"] else ""
    c.print(f"validation on {v['images']} {v['data']} images{synthetic}:")
    for a in mf["artifacts"]:
        r = a["validation"] or {}
        size = f"{a['model_bytes'] / 1e6:.2f} MB"
        if r.get("kind") == "numeric":
            check = (f"max|diff| {r['max_abs_diff']:.2e} <= {r['atol']:.1e}  agreement {r['top1_agreement']:.3f}  "
                     f"top-1 torch {r['top1_ref']:.2f} -> {r['top1_artifact']:.2f}")
            if r.get("note"):  # what actually ran the check, e.g. fp32 ONNX Runtime for a TensorRT fp16 artifact
                check += f"  (checked in {r['note']})"
        else:
            check = "structural check (cannot run here)"
        status = "passed" if r.get("passed") else "FAILED"
        print(f"  {a['path']:22s} {a['format']:9s} {a['precision']:5s} {size:>9s}  {check}  {status}")
    for a in mf["artifacts"]:
        if a.get("note"):
            c.print(f"{a['path']}: {a['note']}")
    c.print(f"wrote {result.out}/ (manifest.json, EMBEDDING.md)")
    return 0


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
                     help="with --switchable: the Pareto front of the profile (the default)")


def _run_switchable(args: argparse.Namespace) -> int:
    from lgp_edge.commands.common import console, print_json, reporter
    from lgp_edge.commands.select import resolve_profile
    from lgp_edge.errors import UsageError
    from lgp_edge.export.switchable_export import SwitchableRequest, export_switchable, parse_keys

    if not args.switchable:
        raise UsageError("--descendants and --front select what goes into a switchable model; add --switchable")
    if args.descendant is not None:
        raise UsageError("--descendant exports one descendant; with --switchable use --descendants KEY,KEY…")
    profile, target = resolve_profile(args, formats=_formats(args.format))
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
    c.print(f"[bold]{profile.name}[/]: {len(mf['descendants'])} descendants ({mf['selection']}) in one artifact")
    for a in mf["artifacts"]:
        size = a["size"]
        if a["format"] == "onnx":
            worst = max(v["vs_torch"]["max_abs_diff"] for v in a["validation"])
            c.print(f"  {a['path']}: {a['bytes'] / 1e6:.2f} MB = {size['ratio_to_pool']:.2f} x the pool's fp32 "
                    f"weights, {size['ratio_to_singles']:.2f} x its descendants' single ONNX exports; "
                    f"max|diff| vs torch {worst:.2e} over {len(a['validation'])} checks (onnxruntime/openvino): "
                    f"{'passed' if a['passed'] else 'FAILED'}")
        else:
            c.print(f"  {a['path']}: weights {size['weight_bytes'] / 1e6:.2f} MB = {size['ratio_to_pool']:.2f} x "
                    f"the pool's {a['precision']} weights; {len(a['functions'])} functions, {a['deployment']}; "
                    f"structural check {'passed' if a['passed'] else 'FAILED'}")
    c.print(f"wrote {result.out}/ (manifest.json, EMBEDDING.md)")
    return 0
