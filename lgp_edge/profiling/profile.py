"""Profiling a pool (or a stock timm ViT) on a target: measure, calibrate, predict, check the predictor.

A *subject* is what gets profiled: the descendants of a pool (or one timm model) with their parts and a
way to build each as a module, plus the calibration probes. Measurement runs in this process for
``local`` targets (any runtime here) and on the board for ``ssh`` / ``adb`` targets; rows go to the
store only after every model was measured, so a failure writes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgp_edge import __version__
from lgp_edge.errors import UsageError
from lgp_edge.profiling.measure import MeasureSettings, Timing, repeat_if_noisy, summarize
from lgp_edge.profiling.predict import (
    Predictor,
    calibration_probes,
    fit_calibration,
    make_predictor,
    now_utc,
    probe_key,
)
from lgp_edge.profiling.roofline import Part, parts_of, vit_parts
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import DescendantSpec, LatencyRecord, Segment, TargetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One model to profile."""

    key: str  # descendant key, "timm:<name>" or a probe key
    parts: tuple[Part, ...]  # for prediction
    build: Callable[[], nn.Module]  # the module, built on demand
    params: int | None = None
    flops: int | None = None  # fvcore convention (multiply-add = 1)
    top1: float | None = None


@dataclass(frozen=True)
class Subject:
    pool_id: str  # "" for a stock model
    input_shape: tuple[int, int, int]  # (C, H, W)
    items: tuple[Item, ...]
    probes: tuple[Item, ...]


def pool_subject(pool: Any, manifest: Any = None, keys: Sequence[str] | None = None) -> Subject:
    """Every descendant of ``pool`` (or those named in ``keys``), with top-1 from the manifest when known."""
    from lgp_edge.models.descendant import descendant_flops

    specs = pool.descendants()
    if keys:
        known = {s.key for s in specs}
        bad = [k for k in keys if k not in known]
        if bad:
            raise UsageError(f"pool {pool.pool_id} has no descendant '{bad[0]}'; see 'lgp-edge pool info'")
        specs = [s for s in specs if s.key in set(keys)]
    top1 = {r.key: r.top1 for r in (manifest.descendants if manifest is not None else ())}
    a = pool.spec.ancestry

    def item(spec: DescendantSpec, key: str, with_size: bool) -> Item:
        rec = pool.record(spec) if with_size else None
        return Item(key=key, parts=tuple(parts_of(pool.spec, spec)), build=lambda: pool.descendant(spec),
                    params=rec.params if rec else None, flops=descendant_flops(pool.spec, spec) if with_size else None,
                    top1=top1.get(spec.key) if with_size else None)

    items = tuple(item(s, s.key, True) for s in specs)
    probes = tuple(item(s, probe_key(parts_of(pool.spec, s)), False) for s in calibration_probes(pool.spec))
    return Subject(pool_id=pool.pool_id, input_shape=(a.in_chans, a.img_size, a.img_size), items=items,
                   probes=probes)


def timm_subject(name: str) -> Subject:
    """A stock timm ViT with random weights (latency does not depend on their values)."""
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.descendant import build_descendant, count_params, vit_flops

    model, a = create_ancestry(name)
    model.eval()

    def truncated(blocks: int) -> nn.Module:  # embedding, the first `blocks` blocks, norm + head
        spec = DescendantSpec("", (Segment("m", 0, blocks - 1),), ())
        return build_descendant(spec, {"m": model}, {}).eval()

    item = Item(key=f"timm:{name}", parts=tuple(vit_parts(a)), build=lambda: model, params=count_params(model),
                flops=vit_flops(img_size=a.img_size, patch_size=a.patch_size, in_chans=a.in_chans,
                                embed_dim=a.embed_dim, depth=a.depth, num_classes=a.num_classes,
                                mlp_ratio=a.mlp_ratio))
    probes = []
    for k in (1, max(2, a.depth // 2)):
        parts = tuple(vit_parts(a, k))
        probes.append(Item(key=probe_key(parts), parts=parts, build=lambda k=k: truncated(k)))
    return Subject(pool_id="", input_shape=(a.in_chans, a.img_size, a.img_size), items=(item,), probes=tuple(probes))


# ------------------------------------------------------------------------------------------ settings
def default_threads(target: TargetSpec) -> int:
    t = int(target.extra.get("threads", 0) or 0)
    return t if t > 0 else (os.cpu_count() or 1)


def default_precision(target: TargetSpec) -> str:
    """The target's first listed precision (target files list the one they deploy first)."""
    return target.precisions[0]


def check_request(target: TargetSpec, runtime: str, precision: str, *, measuring: bool) -> None:
    """Refuse impossible combinations before anything runs."""
    if precision not in target.precisions:
        raise UsageError(f"target '{target.name}' supports precisions {', '.join(target.precisions)}, "
                         f"not '{precision}'")
    kind = target.connection.kind
    if measuring and kind == "none":
        raise UsageError(f"target '{target.name}' has no connection (kind 'none'): it cannot be measured; "
                         "use --predict")
    if measuring and kind in ("ssh", "adb") and runtime != target.runtime:
        raise UsageError(f"target '{target.name}' runs '{target.runtime}' on the device, not '{runtime}'")
    if measuring and kind == "local":
        from lgp_edge.profiling.runtimes import get_runtime

        rt = get_runtime(runtime)
        rt.check_available()
        rt.check_precision(precision)


# --------------------------------------------------------------------------------------- measurement
def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", key)[:120]


def _record(key: str, target: TargetSpec, runtime: str, precision: str, settings: MeasureSettings,
            timing: Timing, versions: dict[str, str], pool_id: str) -> LatencyRecord:
    return LatencyRecord(descendant_key=key, target=target.name, runtime=runtime, precision=precision,
                         batch=settings.batch, median_ms=timing.median_ms, p90_ms=timing.p90_ms,
                         p99_ms=timing.p99_ms, mean_ms=timing.mean_ms, std_ms=timing.std_ms, cv=timing.cv,
                         n=timing.n, warmup=timing.warmup, threads=settings.threads, source="measured",
                         when=now_utc(), tool_versions={"lgp-edge": __version__, **versions}, pool_id=pool_id,
                         noisy=timing.noisy)


def _example(subject: Subject, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, *subject.input_shape), generator=g)


def measure_items(subject: Subject, items: Sequence[Item], target: TargetSpec, runtime: str, precision: str,
                  settings: MeasureSettings, *, reporter: Reporter = NULL, targets_dir: str | None = None,
                  what: str = "measuring") -> list[LatencyRecord]:
    """Measure ``items`` on the target; returns records (the caller stores them)."""
    check_request(target, runtime, precision, measuring=True)
    if target.connection.kind == "local":
        return _measure_local(subject, items, target, runtime, precision, settings, reporter, what)
    return _measure_remote(subject, items, target, precision, settings, reporter, targets_dir, what)


def _measure_local(subject: Subject, items: Sequence[Item], target: TargetSpec, runtime: str, precision: str,
                   settings: MeasureSettings, reporter: Reporter, what: str) -> list[LatencyRecord]:
    from lgp_edge.profiling.runtimes import get_runtime

    rt = get_runtime(runtime)
    versions = rt.versions()
    x = _example(subject, settings.batch)
    opset = min(17, target.max_opset)
    out = []
    if settings.rounds > 1:
        return _measure_local_interleaved(subject, items, target, runtime, precision, settings, reporter, what)
    with tempfile.TemporaryDirectory(prefix="lgp-edge-profile-") as tmp, \
            reporter.task(f"{what} on {target.name} ({runtime}, {precision})", len(items)) as task:
        for it in items:
            prepared = rt.prepare(it.build(), x, precision, Path(tmp) / _safe(it.key), threads=settings.threads,
                                  opset=opset)
            try:
                timing = rt.measure(prepared, settings)
            finally:
                prepared.close()
            out.append(_record(it.key, target, runtime, precision, settings, timing, versions, subject.pool_id))
            task.advance(1, ms=timing.median_ms)
    return out


def _measure_local_interleaved(subject: Subject, items: Sequence[Item], target: TargetSpec, runtime: str,
                               precision: str, settings: MeasureSettings, reporter: Reporter,
                               what: str) -> list[LatencyRecord]:
    """All models loaded at once, timed in interleaved rounds (see ``measure.time_interleaved``)."""
    from lgp_edge.profiling.runtimes import get_runtime

    rt = get_runtime(runtime)
    versions = rt.versions()
    x = _example(subject, settings.batch)
    opset = min(17, target.max_opset)
    with tempfile.TemporaryDirectory(prefix="lgp-edge-profile-") as tmp:
        prepared = []
        try:
            with reporter.task(f"preparing {len(items)} models ({runtime})", len(items)) as task:
                for it in items:
                    prepared.append(rt.prepare(it.build(), x, precision, Path(tmp) / _safe(it.key),
                                               threads=settings.threads, opset=opset))
                    task.advance(1)
            with reporter.task(f"{what} on {target.name} ({runtime}, {precision}), {settings.rounds} interleaved "
                               "rounds", settings.rounds) as task:
                timings = _timed(rt, prepared, settings, lambda r: task.advance(1))
        finally:
            for p in prepared:
                p.close()
    return [_record(it.key, target, runtime, precision, settings, t, versions, subject.pool_id)
            for it, t in zip(items, timings)]


def _timed(rt: Any, prepared: Sequence[Any], settings: MeasureSettings, on_round: Callable[[int], None]
           ) -> list[Timing]:
    from lgp_edge.profiling.measure import time_interleaved

    fns = [p.run for p in prepared]
    if rt.name == "torch":  # torch's thread count is process-wide: set it around the whole run
        import torch as _torch

        old = _torch.get_num_threads()
        _torch.set_num_threads(settings.threads)
        try:
            return time_interleaved(fns, settings, on_round)
        finally:
            _torch.set_num_threads(old)
    return time_interleaved(fns, settings, on_round)


def _measure_remote(subject: Subject, items: Sequence[Item], target: TargetSpec, precision: str,
                    settings: MeasureSettings, reporter: Reporter, targets_dir: str | None,
                    what: str) -> list[LatencyRecord]:
    from lgp_edge.profiling import remote
    from lgp_edge.export.onnx_export import export_onnx
    from lgp_edge.profiling.runtimes.tensorrt import parse_trtexec, summary_timing
    from lgp_edge.targets import bench_script

    kind, runtime = target.connection.kind, target.runtime
    if (kind, runtime) not in (("ssh", "onnxruntime"), ("ssh", "tensorrt"), ("adb", "onnxruntime")):
        raise UsageError(f"target '{target.name}': profiling '{runtime}' over {kind} is not supported "
                         "(ssh: onnxruntime or tensorrt; adb: onnxruntime)")
    if runtime == "onnxruntime" and precision not in ("fp32", "int8"):
        raise UsageError(f"ONNX Runtime on '{target.name}' profiles fp32 or int8, not '{precision}'")
    binary = None
    if kind == "adb":
        binary = Path(os.environ.get("LGP_EDGE_ORT_PERF_TEST") or target.extra.get("perf_test_binary", "")
                      ).expanduser()
        if not binary.is_file():
            raise UsageError(f"target '{target.name}' needs an Android build of onnxruntime_perf_test; "
                             f"'{binary}' does not exist (set LGP_EDGE_ORT_PERF_TEST; see "
                             "targets/android/README.md)")
    transport = remote.transport_for(target.connection, target.extra)
    x = _example(subject, settings.batch)
    opset = min(17, target.max_opset)
    out: list[LatencyRecord] = []
    with tempfile.TemporaryDirectory(prefix="lgp-edge-remote-") as tmp, remote.RemoteSession(transport) as sess, \
            reporter.task(f"{what} on {target.name} ({runtime} over {kind})", len(items)) as task:
        script = sess.put(bench_script(target, targets_dir)) if kind == "ssh" else ""
        pin = kind == "ssh" and runtime == "tensorrt" and precision == "fp16"
        if pin:  # bench.sh builds the engine build_engine.sh deploys: LayerNorm/softmax kept in fp32
            import shutil

            shutil.copyfile(Path(__file__).resolve().parent.parent / "data" / "device" / "build_engine.py",
                            Path(tmp) / "build_engine.py")
            sess.put(Path(tmp) / "build_engine.py")
        rbin = ""
        if binary is not None:
            rbin = sess.put(binary)
            sess.run(["chmod", "755", rbin], timeout=60)
        for it in items:
            onnx_path = export_onnx(it.build(), x, Path(tmp) / f"{_safe(it.key)}.onnx", opset=opset)
            if runtime == "onnxruntime" and precision == "int8":
                from lgp_edge.profiling.runtimes.onnxruntime import OnnxRuntime

                onnx_path = OnnxRuntime().convert(it.build(), x, "int8", Path(tmp) / f"{_safe(it.key)}-q",
                                                  opset=opset)
            rmodel = sess.put(onnx_path)
            versions: dict[str, str] = {}
            if pin:
                from lgp_edge.export.tensorrt import fp32_nodes

                layers = Path(tmp) / f"{_safe(it.key)}.fp32_layers.txt"
                layers.write_text("# ONNX nodes kept in fp32 inside the fp16 engine (LayerNorm and softmax)\n"
                                  + "\n".join(fp32_nodes(onnx_path, it.build())) + "\n")
                sess.put(layers)
                versions["note_precision"] = "fp16 with LayerNorm/softmax pinned to fp32 (as build_engine.sh)"
            if kind == "ssh" and runtime == "onnxruntime":
                argv = remote.ort_bench_argv(str(target.extra.get("remote_python", "python3")), script, rmodel,
                                             settings)
                timing = repeat_if_noisy(lambda argv=argv, versions=versions: _ort_once(sess, argv, versions,
                                                                                        settings), settings)
            elif kind == "ssh":
                summary = parse_trtexec(sess.run(remote.trtexec_argv(script, rmodel, precision, settings,
                                                                      target.extra.get("trtexec"))))
                timing, notes = summary_timing(summary, settings.iters, settings.warmup)
                versions["tensorrt"] = summary.version or target.runtime_version
                versions.update({f"note_{k}": v for k, v in notes.items()})
            else:
                stats = remote.parse_perf_test(sess.run(remote.perf_test_argv(
                    rbin, rmodel, settings, str(target.extra.get("big_cores", "0-7")))))
                timing = remote.perf_test_timing(stats, settings)
                versions["onnxruntime_perf_test"] = target.runtime_version
                versions["note_std"] = "estimated from P90 - P50 (perf_test prints no std)"
            out.append(_record(it.key, target, runtime, precision, settings, timing, versions, subject.pool_id))
            task.advance(1, ms=timing.median_ms)
    return out


def _ort_once(sess: Any, argv: list[str], versions: dict[str, str], settings: MeasureSettings) -> Timing:
    """One run of ort_bench.py on the board; its per-run times are summarized here."""
    from lgp_edge.profiling import remote

    data = remote.parse_ort_bench(sess.run(argv))
    versions["onnxruntime"] = str(data.get("onnxruntime", "?"))
    versions["device_machine"] = str(data.get("machine", "?"))
    return summarize(data["times_ms"], settings.warmup)


# ------------------------------------------------------------------------------------ high-level steps
def calibrate(subject: Subject, target: TargetSpec, runtime: str, precision: str, settings: MeasureSettings,
              store: Any, *, reporter: Reporter = NULL, targets_dir: str | None = None) -> Predictor:
    """Measure the probes on the device, store them, return the calibrated predictor.

    Probes are few, so each gets three times the timed runs: their noise is every prediction's noise.
    """
    probe_settings = replace(settings, iters=settings.iters * 3, warmup=settings.warmup * 2)
    if target.connection.kind == "local" and target.hardware.get("detect"):
        from lgp_edge.profiling.roofline import host_calibration

        host_calibration(runtime, settings.threads, store, refresh=True)  # the host's facts, measured again
    recs = measure_items(subject, subject.probes, target, runtime, precision, probe_settings, reporter=reporter,
                         targets_dir=targets_dir, what="calibrating")
    if store is not None:
        store.put_many(recs)
        return stored_calibration(store, subject, target, runtime, precision, settings) or \
            calibrated_predictor(recs, subject, target, runtime, precision)
    return calibrated_predictor(recs, subject, target, runtime, precision)


def stored_calibration(store: Any, subject: Subject, target: TargetSpec, runtime: str, precision: str,
                       settings: MeasureSettings) -> Predictor | None:
    """The calibration every later process will read from the store (robust aggregate of the recent
    probe runs), so this process predicts exactly what they will."""
    from lgp_edge.profiling.predict import probe_records

    probes = probe_records(store, target.name, runtime, precision, settings.batch,
                           threads=settings.threads if target.connection.kind == "local" else None)
    if not probes:
        return None
    cal = fit_calibration(probes)
    if not all(cal.covers(it.parts) for it in subject.items):
        return None
    return Predictor("calibrated", target.name, runtime, precision, calibration=cal)


def calibrated_predictor(probe_records: Sequence[LatencyRecord], subject: Subject, target: TargetSpec,
                         runtime: str, precision: str) -> Predictor:
    cal = fit_calibration(probe_records)
    bad = [it.key for it in subject.items if not cal.covers(it.parts)]
    if bad:
        raise UsageError(f"the calibration probes do not cover '{bad[0]}' (a bug: please report it)")
    return Predictor("calibrated", target.name, runtime, precision, calibration=cal)


def stored_predictor(subject: Subject, target: TargetSpec, runtime: str, precision: str, settings: MeasureSettings,
                     store: Any) -> Predictor | None:
    """A calibrated predictor from probe rows already in the store, when they cover the subject."""
    pred = make_predictor(target, precision, runtime, store=store, threads=settings.threads,
                          need=[it.parts for it in subject.items]) if store is not None else None
    return pred if pred is not None and pred.kind == "calibrated" else None


def predictor_for(subject: Subject, target: TargetSpec, runtime: str, precision: str, settings: MeasureSettings,
                  store: Any, *, calibrate_now: bool, reporter: Reporter = NULL,
                  targets_dir: str | None = None) -> Predictor:
    """Stored calibration if it covers the subject; else calibrate now if asked (or the target is this
    host); else the roofline."""
    if not calibrate_now:
        pred = make_predictor(target, precision, runtime, store=store, threads=settings.threads,
                              need=[it.parts for it in subject.items])
        if pred.kind == "calibrated" or target.connection.kind != "local":
            return pred
    return calibrate(subject, target, runtime, precision, settings, store, reporter=reporter,
                     targets_dir=targets_dir)


def predict_items(subject: Subject, predictor: Predictor, settings: MeasureSettings) -> list[LatencyRecord]:
    return [predictor.record(it.key, it.parts, batch=settings.batch, threads=settings.threads,
                             pool_id=subject.pool_id) for it in subject.items]


@dataclass(frozen=True)
class CheckResult:
    mape: float  # mean |predicted - measured| / measured over the held-out models, percent
    max_ape: float  # worst absolute percentage error
    rows: tuple[tuple[str, float, float], ...]  # (key, predicted ms, measured ms)
    calibration_models: int  # probes measured to calibrate (none of them is checked)


def check_predictions(predicted: Sequence[LatencyRecord], measured: Sequence[LatencyRecord],
                      calibration_models: int) -> CheckResult:
    meas = {r.descendant_key: r.median_ms for r in measured}
    rows = tuple((p.descendant_key, p.median_ms, meas[p.descendant_key]) for p in predicted
                 if p.descendant_key in meas)
    if not rows:
        raise UsageError("nothing to check: no model was both predicted and measured")
    errs = [abs(p - m) / m * 100 for _, p, m in rows]
    return CheckResult(mape=sum(errs) / len(errs), max_ape=max(errs), rows=rows,
                       calibration_models=calibration_models)
