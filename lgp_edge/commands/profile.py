"""``lgp-edge profile``: latency of every descendant on a target, measured or predicted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lgp_edge.commands.common import add_pool_arg, add_quiet, console, print_json, reporter
from lgp_edge.errors import UsageError
from lgp_edge.specs import PRECISIONS, RUNTIMES


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="measure (or predict) the latency of every descendant on a target",
                       description="Measure every descendant of a pool on a target (this host, or a board over "
                                   "ssh/adb), or predict it (--predict). Measurements go to the store.")
    p.add_argument("--target", default=None, help="target name (see 'lgp-edge targets list'); required unless "
                                                  "--import")
    add_pool_arg(p)
    p.add_argument("--model", metavar="TIMM_NAME", default=None,
                   help="profile one stock timm ViT (random weights) instead of a pool, e.g. deit_tiny_patch16_224")
    p.add_argument("--runtime", choices=RUNTIMES, default=None, help="runtime (default: the target's)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default: the target's first listed precision")
    p.add_argument("--predict", action="store_true",
                   help="predict instead of measuring: calibrated from probe measurements when available "
                        "(this host calibrates itself), else a roofline over the target's hardware facts")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the calibration probes on the device now (on this host also its GEMM peak, "
                        "bandwidths and dispersion, stored per machine + runtime fingerprint), then predict "
                        "(implies --predict)")
    p.add_argument("--import", dest="import_file", default=None, metavar="FILE",
                   help="add the records of FILE to the store: the JSON written by build_engine.sh --time on a "
                        "board, or left beside a store that could not be written")
    p.add_argument("--check", action="store_true",
                   help="with --predict: also measure every model and report the predictor's error (MAPE)")
    p.add_argument("--descendant", action="append", metavar="KEY", default=None,
                   help="profile only this descendant (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the target's, else all)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs before timing (default 10)")
    p.add_argument("--iters", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--seconds", type=float, default=None,
                   help="time each model for this long instead (at least --iters runs)")
    p.add_argument("--batch", type=int, default=1, help="images per inference (default 1)")
    p.add_argument("--rounds", type=int, default=None,
                   help="measure all models in N interleaved rounds of iters/N runs, so load drift on a shared "
                        "machine hits every model alike (local targets; default 1, 5 with --check)")
    p.add_argument("--store", default=None, metavar="PATH",
                   help="measurement store (SQLite; default $LGP_EDGE_STORE or ~/.local/share/lgp-edge/"
                        "measurements.sqlite)")
    p.add_argument("--targets-dir", default=None, metavar="DIR", help="extra directory of target TOML files")
    p.add_argument("--json", action="store_true", help="print JSON: {\"records\": [...], ...}")
    add_quiet(p)
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace, target: Any) -> Any:
    from lgp_edge.profiling.measure import MeasureSettings
    from lgp_edge.profiling.profile import default_threads

    threads = args.threads if args.threads is not None else default_threads(target)
    rounds = args.rounds if args.rounds is not None else (5 if args.check else 1)
    if rounds > 1 and args.seconds is not None:
        raise UsageError("--rounds and --seconds cannot be combined")
    try:
        return MeasureSettings(warmup=args.warmup, iters=args.iters, seconds=args.seconds, threads=threads,
                               batch=args.batch, rounds=rounds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from lgp_edge.profiling import profile as prof
    from lgp_edge.profiling.store import MeasurementStore, default_store_path
    from lgp_edge.targets import load_target

    if args.import_file is not None:
        return _import(args)
    if args.target is None:
        raise UsageError("profile needs --target NAME (see 'lgp-edge targets list'), or --import FILE")
    if args.calibrate:
        args.predict = True
    if args.check and not args.predict:
        raise UsageError("--check compares predictions with measurements: use it with --predict")
    if args.model and (args.pool or args.descendant):
        raise UsageError("--model profiles one timm model; it cannot be combined with --pool or --descendant")
    target = load_target(args.target, args.targets_dir)
    runtime = args.runtime or target.runtime
    precision = args.precision or prof.default_precision(target)
    settings = _settings(args, target)
    measuring = not args.predict or args.check or args.calibrate or (
        target.connection.kind == "local")  # this host calibrates itself when predicting
    prof.check_request(target, runtime, precision, measuring=measuring)

    if args.model:
        subject, manifest_note = prof.timm_subject(args.model), f"timm model {args.model} (random weights)"
    else:
        from lgp_edge.pool.pool import load_pool, resolve_pool

        path = resolve_pool(args.pool)
        pool, manifest = load_pool(path)
        subject = prof.pool_subject(pool, manifest, args.descendant)
        manifest_note = f"pool {pool.pool_id} ({path})" + ("" if manifest.descendants else
                                                           "; never evaluated: no top-1")
    rep = reporter(args)
    store = MeasurementStore(args.store or default_store_path())
    try:
        predictor = check = None
        written = 0
        if args.predict and args.check:
            predictor = None if args.calibrate else prof.stored_predictor(subject, target, runtime, precision,
                                                                          settings, store)
            if predictor is None:  # calibrate and check in one interleaved measurement
                both = prof.measure_items(subject, subject.probes + subject.items, target, runtime, precision,
                                          settings, reporter=rep, targets_dir=args.targets_dir,
                                          what="calibrating + checking")
                probes, measured = both[:len(subject.probes)], both[len(subject.probes):]
                predictor = prof.calibrated_predictor(probes, subject, target, runtime, precision)
            else:
                both = measured = prof.measure_items(subject, subject.items, target, runtime, precision, settings,
                                                     reporter=rep, targets_dir=args.targets_dir, what="checking")
            records = prof.predict_items(subject, predictor, settings)
            check = prof.check_predictions(records, measured, len(subject.probes))
            store.put_many([*both, *records])
            written = len(both) + len(records)
        elif args.predict:
            predictor = prof.predictor_for(subject, target, runtime, precision, settings, store,
                                           calibrate_now=args.calibrate, reporter=rep,
                                           targets_dir=args.targets_dir)
            records = prof.predict_items(subject, predictor, settings)
            store.put_many(records)  # predicted rows, each naming the calibration it came from
            written = len(records)
        else:
            records = prof.measure_items(subject, subject.items, target, runtime, precision, settings,
                                         reporter=rep, targets_dir=args.targets_dir)
            store.put_many(records)
            written = len(records)
    finally:
        store.close()
    _output(args, subject, records, target, runtime, precision, predictor, check, store.path, written, manifest_note)
    return 0


def _import(args: argparse.Namespace) -> int:
    from lgp_edge.profiling.store import MeasurementStore, default_store_path, read_records_file

    if args.predict or args.calibrate or args.check or args.model or args.descendant:
        raise UsageError("--import adds the records of a file; it cannot be combined with --predict, --calibrate, "
                         "--check, --model or --descendant")
    records = read_records_file(args.import_file)
    if args.target is not None and any(r.target != args.target for r in records):
        other = next(r.target for r in records if r.target != args.target)
        raise UsageError(f"'{args.import_file}' holds records of target '{other}', not '{args.target}'")
    with MeasurementStore(args.store or default_store_path()) as store:
        store.put_many(records)
        path = store.path
    print(f"imported {len(records)} records ({', '.join(sorted({r.source for r in records}))}) into {path}",
          file=sys.stderr)
    return 0


def _output(args: argparse.Namespace, subject: Any, records: list[Any], target: Any, runtime: str, precision: str,
            predictor: Any, check: Any, store_path: Any, written: int, note: str) -> None:
    items = {it.key: it for it in subject.items}
    if args.json:
        rows = []
        for r in records:
            it = items[r.descendant_key]
            rows.append({**r.to_dict(), "params": it.params, "flops": it.flops, "top1": it.top1})
        out: dict[str, Any] = {"target": target.name, "runtime": runtime, "precision": precision,
                               "pool_id": subject.pool_id, "mode": "predicted" if predictor else "measured",
                               "predictor": predictor.describe() if predictor else None, "store": str(store_path),
                               "rows_written": written, "records": rows}
        if check is not None:
            out["check"] = {"mape_percent": check.mape, "max_ape_percent": check.max_ape,
                            "calibration_models": check.calibration_models, "held_out": len(check.rows),
                            "rows": [{"descendant_key": k, "predicted_ms": p, "measured_ms": m}
                                     for k, p, m in check.rows]}
        print_json(out)
        return
    from rich.table import Table

    measured = {k: m for k, _, m in check.rows} if check else {}
    title = (f"{target.name} · {runtime} · {precision} · batch {records[0].batch if records else 1} · "
             f"{records[0].threads if records else '?'} threads")
    table = Table(title=title)
    for col in ("descendant", "params (M)", "GFLOPs", "top-1", "median ms", "p90 ms", "source"):
        table.add_column(col, justify="left" if col in ("descendant", "source") else "right",
                         no_wrap=col in ("descendant", "source"))
    if check:
        table.add_column("measured ms", justify="right")
        table.add_column("error", justify="right")
    for r in records:
        it = items[r.descendant_key]
        row = [r.descendant_key, f"{it.params / 1e6:.3f}" if it.params else "",
               f"{it.flops / 1e9:.4f}" if it.flops else "", f"{it.top1:.2f}" if it.top1 is not None else "",
               f"{r.median_ms:.4f}", f"{r.p90_ms:.4f}", r.source + ("*" if r.noisy else "")]
        if check:
            m = measured.get(r.descendant_key)
            row += [f"{m:.4f}" if m else "", f"{100 * (r.median_ms - m) / m:+.1f}%" if m else ""]
        table.add_row(*row)
    c = console()
    c.print(table)
    if any(r.noisy for r in records):
        c.print("* noisy: the run's coefficient of variation stayed above 10% after a repeat")
    err = sys.stderr
    print(f"{note}", file=err)
    if predictor is not None:
        print(f"PREDICTED, not measured: {predictor.describe()}", file=err)
    if check is not None:
        c.print(f"predictor check: MAPE {check.mape:.2f}% (max {check.max_ape:.1f}%) over {len(check.rows)} "
                f"measured models; calibration used {check.calibration_models} probe models, none of them a "
                "checked model")
    if written:
        predicted = sum(r.source == "predicted" for r in records) if predictor is not None else 0
        measured_rows = written - predicted
        what = " and ".join(x for x in (f"{measured_rows} measurements" if measured_rows else "",
                                        f"{predicted} predictions" if predicted else "") if x)
        print(f"wrote {what} to {store_path}", file=err)
