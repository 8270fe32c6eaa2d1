"""``lgp-edge profile``: latency of every descendant on a target, measured or predicted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lgp_edge.commands.common import (
    Col,
    add_dirs_args,
    add_json,
    add_pool_arg,
    add_store_arg,
    console,
    print_json,
    print_table,
    reporter,
)
from lgp_edge.errors import UsageError
from lgp_edge.progress import counted
from lgp_edge.specs import PRECISIONS, RUNTIMES


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="measure (or predict) the latency of every descendant on a target",
                       description="Measure every descendant of a pool on a target (this host, or a board over "
                                   "ssh/adb), or predict it (--predict). Measurements go to the store.")
    p.add_argument("--target", default=None, metavar="TARGET",
                   help="target name (see 'lgp-edge targets list'); required unless --import")
    add_pool_arg(p)
    p.add_argument("--model", metavar="NAME", default=None,
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
                        "board, or left beside a store that could not be written (with --pool: its records "
                        "must be of that pool's descendants); every record is checked, all or nothing")
    p.add_argument("--this-host", action="store_true",
                   help="with --import: runs of target cpu that name no machine (a file an lgp-edge before "
                        "2026-12-05 saved beside its store) ran on this machine")
    p.add_argument("--check", action="store_true",
                   help="with --predict: also measure every model and report the predictor's error (MAPE)")
    p.add_argument("--descendant", action="append", metavar="KEY", default=None,
                   help="profile only this descendant (repeatable)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads of a CPU runtime, 1..256 and on this host at most its CPUs (default: the "
                        "target file's 'threads', else this host's CPUs for target cpu and 1 for a board)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="untimed runs before timing, 0..1000000 (default 10; not on a phone, whose "
                        "onnxruntime_perf_test warms up with one run of its own)")
    p.add_argument("--iters", type=int, default=50, metavar="N", help="timed runs, 1..1000000 (default 50)")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="time each model for this long instead (at least --iters runs; at most 3600; local targets)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per inference, 1..4096 (default 1)")
    p.add_argument("--rounds", type=int, default=None, metavar="N",
                   help="measure all models in N interleaved rounds of iters/N runs, so load drift on a shared "
                        "machine hits every model alike (local targets; default 1, 5 with --check)")
    add_store_arg(p)
    add_dirs_args(p, profiles=False)
    add_json(p)
    p.set_defaults(func=run)


def _request(args: argparse.Namespace) -> Any:
    from lgp_edge.profiling.session import ProfileRequest

    return ProfileRequest(target=args.target, pool=args.pool, model=args.model,
                          descendants=tuple(args.descendant) if args.descendant else None, runtime=args.runtime,
                          precision=args.precision, predict=args.predict, calibrate=args.calibrate, check=args.check,
                          threads=args.threads, warmup=args.warmup, iters=args.iters, seconds=args.seconds,
                          batch=args.batch, rounds=args.rounds, store=args.store, targets_dir=args.targets_dir)


def run(args: argparse.Namespace) -> int:
    from lgp_edge.profiling.session import run_profile

    if args.import_file is not None:
        return _import(args)
    if args.this_host:
        raise UsageError("--this-host says where the runs of an imported file ran: use it with --import FILE")
    if args.target is None:
        raise UsageError("profile needs --target TARGET (see 'lgp-edge targets list'), or --import FILE")
    result = run_profile(_request(args), reporter(args))
    if args.json:
        print_json(_json_output(result))
    else:
        _table_output(result)
    return 0


def _import(args: argparse.Namespace) -> int:
    from lgp_edge.profiling.session import import_records

    if args.predict or args.calibrate or args.check or args.model or args.descendant:
        raise UsageError("--import adds the records of a file; it cannot be combined with --predict, --calibrate, "
                         "--check, --model or --descendant")
    records, path, added = import_records(args.import_file, target=args.target, store=args.store,
                                          targets_dir=args.targets_dir, pool=args.pool, this_host=args.this_host)
    if args.json:
        print_json({"store": str(path), "records": len(records), "added": added,
                    "already_in_store": len(records) - added, "imported": [r.to_dict() for r in records]})
        return 0
    kinds = ", ".join(sorted({r.source for r in records}))
    if added == len(records):
        print(f"imported {len(records)} records ({kinds}) into {path}", file=sys.stderr)
    else:
        print(f"imported {added} of {len(records)} records ({kinds}) into {path}; {len(records) - added} already "
              "in the store (the same runs), not added again", file=sys.stderr)
    return 0


def _json_output(res: Any) -> dict[str, Any]:
    items = {it.key: it for it in res.subject.items}
    rows = []
    for r in res.records:
        it = items[r.descendant_key]
        rows.append({**r.to_dict(), "params": it.params, "flops": it.flops, "top1": it.top1})
    out: dict[str, Any] = {"target": res.target.name, "runtime": res.runtime, "precision": res.precision,
                           "pool_id": res.subject.pool_id, "mode": res.mode,
                           "predictor": res.predictor.describe() if res.predictor else None,
                           "store": str(res.store_path), "rows_written": res.written, "records": rows}
    if res.check is not None:
        check = res.check
        out["check"] = {"mape_percent": check.mape, "max_ape_percent": check.max_ape,
                        "p90_mape_percent": check.p90_mape, "noisy_references": check.noisy_references,
                        "calibration_models": check.calibration_models, "held_out": len(check.rows),
                        "rows": [{"descendant_key": k, "predicted_ms": p, "measured_ms": m}
                                 for k, p, m in check.rows]}
    return out


def _records_table(res: Any) -> None:
    items = {it.key: it for it in res.subject.items}
    check, records = res.check, res.records
    measured = {k: m for k, _, m in check.rows} if check else {}
    cols = ["descendant", *(Col(n, right=True) for n in ("params", "MFLOPs", "top-1", "median ms", "p90 ms")),
            "source"]
    if check:
        cols += [Col("measured ms", right=True), Col("error", right=True)]
    rows = []
    for r in records:
        it = items[r.descendant_key]
        row = [r.descendant_key, f"{it.params:,}" if it.params else "",
               f"{it.flops / 1e6:.1f}" if it.flops else "", f"{it.top1:.2f}" if it.top1 is not None else "",
               f"{r.median_ms:.4f}", f"{r.p90_ms:.4f}", r.source + ("*" if r.noisy else "")]
        if check:
            m = measured.get(r.descendant_key)
            row += [f"{m:.4f}" if m else "", f"{100 * (r.median_ms - m) / m:+.1f}%" if m else ""]
        rows.append(row)
    title = (f"{res.target.name} · {res.runtime} · {res.precision} · batch {records[0].batch if records else 1} · "
             + (f"{records[0].threads} thread{'s' if records[0].threads != 1 else ''}" if records else "? threads"))
    print_table(cols, rows, title=title)


def _table_output(res: Any) -> None:
    _records_table(res)
    c = console()
    if any(r.noisy for r in res.records):
        from lgp_edge.profiling.measure import NOISY_RULE

        c.print(f"* noisy: the run's {NOISY_RULE}, after a repeat")
    err = sys.stderr
    print(res.note, file=err)
    if res.predictor is not None:
        print(f"PREDICTED, not measured: {res.predictor.describe()}", file=err)
    if res.check is not None:
        ch = res.check
        c.print(f"predictor check: MAPE {ch.mape:.2f}% of the medians (max {ch.max_ape:.1f}%), {ch.p90_mape:.2f}% "
                f"of the p90s, over {counted(len(ch.rows), 'measured model')}"
                + (f" ({ch.noisy_references} of them measured noisy: a weaker reference)" if ch.noisy_references
                   else "") + "; "
                + (f"calibration fitted on {counted(ch.calibration_models, 'probe model')}, none of them a checked "
                   "model" if ch.calibration_models else "predicted by the roofline, no probe calibration"))
    if res.written:
        predicted = sum(r.source == "predicted" for r in res.records) if res.predictor is not None else 0
        measured_rows = res.written - predicted
        what = " and ".join(x for x in (counted(measured_rows, "measurement") if measured_rows else "",
                                        counted(predicted, "prediction") if predicted else "") if x)
        print(f"wrote {what} to {res.store_path}", file=err)
