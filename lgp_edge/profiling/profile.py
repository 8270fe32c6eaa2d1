"""Profiling a pool (or a stock timm ViT) on a target: measure, calibrate, predict, check the predictor.

A *subject* (``subject``) is what gets profiled: the descendants of a pool (or one timm model) with their parts
and a way to build each as a module, plus the calibration probes. Measurement runs in this process for
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
from typing import TYPE_CHECKING, Any

from lgp_edge import __version__
from lgp_edge.errors import UsageError
from lgp_edge.profiling.checks import check_request
from lgp_edge.profiling.host import CpuWatch, default_threads, host_versions
from lgp_edge.profiling.measure import MeasureSettings, Timing, repeat_if_noisy, summarize
from lgp_edge.profiling.predict import (
    Predictor,
    fit_calibration,
    fit_probes,
    make_predictor,
    now_utc,
    scaled_roofline,
)
from lgp_edge.profiling.subject import Item, Subject, pool_subject, timm_subject
from lgp_edge.progress import NULL, Reporter, counted
from lgp_edge.specs import LatencyRecord, TargetSpec

if TYPE_CHECKING:
    import torch

    from lgp_edge.profiling.parts import Part

__all__ = ["CheckResult", "Item", "Subject", "calibrate", "calibrated_predictor", "check_predictions",
           "default_threads", "measure_items", "pool_subject", "predict_items", "predictor_for", "stored_predictor",
           "timm_subject"]

log = logging.getLogger(__name__)


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
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, *subject.input_shape), generator=g)


def measure_items(subject: Subject, items: Sequence[Item], target: TargetSpec, runtime: str, precision: str,
                  settings: MeasureSettings, *, reporter: Reporter = NULL, targets_dir: str | None = None,
                  what: str = "measuring", done: list[LatencyRecord] | None = None) -> list[LatencyRecord]:
    """Measure ``items`` on the target; returns records (the caller stores them). Each model timed on its own
    (one round, or a board) is appended to ``done`` as soon as it is measured, so a caller that is interrupted
    can keep what was measured; interleaved rounds give records only at the end."""
    check_request(target, runtime, precision, measuring=True)
    done = [] if done is None else done
    if target.connection.kind == "local":
        watch = CpuWatch()
        try:
            records = _measure_local(subject, items, target, runtime, precision, settings, reporter, what, done)
            warn_if_crowded(watch, settings.threads, what, target.name)
            return records
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_resources(exc):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UsageError(f"{runtime} could not run batch {settings.batch} with {settings.threads} threads on "
                             f"this host ({first}): use a smaller --batch or --threads") from None
    return _measure_remote(subject, items, target, precision, settings, reporter, targets_dir, what, done)


def warn_if_crowded(watch: Any, threads: int, what: str, target: str) -> None:
    """A warning when other processes held the CPUs a local measurement needed while ``watch`` watched: its times
    are steady (so not flagged noisy) but the load's, and a calibration taken so scales every later prediction."""
    share = watch.share()
    if share is None or not share.crowded(threads):
        return
    log.warning("other processes used %.1f of the %s this measurement may use while %s on %s (%s): its latencies "
                "are this busy machine's, slower than a quiet one's; measure again when it is quieter",
                share.others, counted(share.cpus, "CPU"), what, target, counted(threads, "thread"))


def _out_of_resources(exc: BaseException) -> bool:
    """A runtime refusing the request for lack of memory or threads (not a bug in lgp-edge)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(w in text for w in (
        "can't allocate", "cannot allocate", "out of memory", "could not create a primitive", "bad_alloc"))


def _measure_local(subject: Subject, items: Sequence[Item], target: TargetSpec, runtime: str, precision: str,
                   settings: MeasureSettings, reporter: Reporter, what: str,
                   out: list[LatencyRecord]) -> list[LatencyRecord]:
    from lgp_edge.profiling.runtimes import get_runtime

    rt = get_runtime(runtime)
    versions = {**rt.versions(), **host_versions()}
    x = _example(subject, settings.batch)
    opset = min(17, target.max_opset)
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
    versions = {**rt.versions(), **host_versions()}
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
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(settings.threads)
        try:
            return time_interleaved(fns, settings, on_round)
        finally:
            torch.set_num_threads(old)
    return time_interleaved(fns, settings, on_round)


def _measure_remote(subject: Subject, items: Sequence[Item], target: TargetSpec, precision: str,
                    settings: MeasureSettings, reporter: Reporter, targets_dir: str | None,
                    what: str, out: list[LatencyRecord]) -> list[LatencyRecord]:
    from lgp_edge.profiling import remote

    kind, runtime = target.connection.kind, target.runtime
    binary = _check_remote(target, precision)
    transport = remote.transport_for(target.connection, target.extra)
    x = _example(subject, settings.batch)
    with tempfile.TemporaryDirectory(prefix="lgp-edge-remote-") as tmp, remote.RemoteSession(transport) as sess, \
            reporter.task(f"{what} on {target.name} ({runtime} over {kind})", len(items)) as task:
        machine = _board_machine(sess, target)
        board = _prepare_board(sess, target, precision, targets_dir, binary, Path(tmp))
        for it in items:
            timing, versions = _measure_on_board(sess, board, it, x, Path(tmp), settings)
            versions["device_machine"] = machine
            rec = _record(it.key, target, runtime, precision, settings, timing, versions, subject.pool_id)
            # a board whose tool printed a negative, NaN or absurd latency
            out.append(_possible(rec, f"{sess.transport.where} returned an invalid timing",
                                 "check the benchmark and its runtime on the board"))
            task.advance(1, ms=timing.median_ms)
    return out


def _possible(rec: LatencyRecord, problem: str, fix: str) -> LatencyRecord:
    """``rec`` when it is a timing some run can have (``check_record``); else refused before anything is stored,
    in one line: ``problem`` (what ``check_record`` found); ``fix``."""
    from lgp_edge.profiling.latency_file import check_record

    try:
        check_record(rec)
    except ValueError as exc:
        raise UsageError(f"{problem} ({exc}); {fix}") from None
    return rec


@dataclass(frozen=True)
class _Board:
    """A remote target made ready to time models: what was copied to it, and how it runs them."""

    target: TargetSpec
    precision: str
    script: str  # bench script on the board ("" over adb)
    perf_test: str  # onnxruntime_perf_test on the board ("" over ssh)
    pin: bool  # TensorRT fp16/int8 with LayerNorm/softmax pinned to fp32, as build_engine.sh builds it
    opset: int


def _check_remote(target: TargetSpec, precision: str) -> Path | None:
    """Refuse what cannot be profiled remotely; the local onnxruntime_perf_test binary for adb targets."""
    kind, runtime = target.connection.kind, target.runtime
    if (kind, runtime) not in (("ssh", "onnxruntime"), ("ssh", "tensorrt"), ("adb", "onnxruntime")):
        raise UsageError(f"target '{target.name}': profiling '{runtime}' over {kind} is not supported "
                         "(ssh: onnxruntime or tensorrt; adb: onnxruntime)")
    if runtime == "onnxruntime" and precision not in ("fp32", "int8"):
        raise UsageError(f"ONNX Runtime on '{target.name}' profiles fp32 or int8, not '{precision}'")
    if kind != "adb":
        return None
    binary = Path(os.environ.get("LGP_EDGE_ORT_PERF_TEST") or target.extra.get("perf_test_binary", "")).expanduser()
    from lgp_edge.targets import targets_root

    howto = targets_root() / "android" / "README.md"  # inside the installed package, not a checkout
    if not binary.is_file():
        raise UsageError(f"target '{target.name}' needs an Android build of onnxruntime_perf_test; "
                         f"'{binary}' does not exist (set LGP_EDGE_ORT_PERF_TEST; see {howto})")
    problem = _program_problem(binary)
    if problem:  # it is copied to the phone: a target file naming ~/.bashrc or a key copied that there
        raise UsageError(f"target '{target.name}': '{binary}' (extra.perf_test_binary or LGP_EDGE_ORT_PERF_TEST) "
                         f"{problem}; point it at an executable Android build of onnxruntime_perf_test (see "
                         f"{howto})")
    return binary


def _program_problem(path: Path) -> str | None:
    """Why ``path`` is not an executable ELF program (the only kind of file pushed to a board to run); None."""
    if not os.access(path, os.X_OK):
        return "is not executable"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if head == b"\x7fELF" else "is not an ELF program"


def _board_machine(sess: Any, target: TargetSpec) -> str:
    """The board's ``uname -m``. A target file that names its machine (``extra.machine``) refuses any other: a
    host name that reaches another computer would fill the store with that computer's timings."""
    machine = sess.run(["uname", "-m"], timeout=60).strip()
    want = target.extra.get("machine")
    if want and machine != want:
        raise UsageError(f"target '{target.name}': {sess.transport.where} is a '{machine}' machine, not the "
                         f"'{want}' the target file names (extra.machine); connection.host may reach another "
                         "computer: fix the target file")
    return machine


def _prepare_board(sess: Any, target: TargetSpec, precision: str, targets_dir: str | None, binary: Path | None,
                   tmp: Path) -> _Board:
    """Copy the bench script (ssh), build_engine.py (pinned TensorRT fp16 and int8) or perf_test (adb) to the
    board."""
    from lgp_edge.export.tensorrt import PINNED_PRECISIONS
    from lgp_edge.targets import bench_script

    kind, runtime = target.connection.kind, target.runtime
    script = sess.put(bench_script(target, targets_dir)) if kind == "ssh" else ""
    pin = kind == "ssh" and runtime == "tensorrt" and precision in PINNED_PRECISIONS
    if pin:  # bench.sh builds the engine build_engine.sh deploys: LayerNorm/softmax kept in fp32
        import shutil

        shutil.copyfile(Path(__file__).resolve().parent.parent / "data" / "device" / "build_engine.py",
                        tmp / "build_engine.py")
        sess.put(tmp / "build_engine.py")
    rbin = ""
    if binary is not None:
        rbin = sess.put(binary)
        sess.run(["chmod", "755", rbin], timeout=60)
    return _Board(target=target, precision=precision, script=script, perf_test=rbin, pin=pin,
                  opset=min(17, target.max_opset))


def _measure_on_board(sess: Any, board: _Board, it: Item, x: torch.Tensor, tmp: Path,
                      settings: MeasureSettings) -> tuple[Timing, dict[str, str]]:
    """Copy one model to the board and time it there; the timing and the versions to record with it."""
    from lgp_edge.export.onnx_export import export_onnx

    runtime, precision = board.target.runtime, board.precision
    onnx_path = export_onnx(it.build(), x, tmp / f"{_safe(it.key)}.onnx", opset=board.opset, ship=True)
    if precision == "int8":  # the QDQ model an export ships for this runtime (TensorRT's scheme or ONNX Runtime's)
        from lgp_edge.export.quantize import timing_int8

        onnx_path = timing_int8(onnx_path, x, tmp / f"{_safe(it.key)}.int8.onnx", runtime)
    rmodel = sess.put(onnx_path)
    versions: dict[str, str] = {}
    if board.pin:
        from lgp_edge.export.tensorrt import fp32_nodes

        layers = tmp / f"{onnx_path.stem}.fp32_layers.txt"  # bench.sh reads MODEL.fp32_layers.txt beside MODEL.onnx
        layers.write_text(f"# ONNX nodes kept in fp32 inside the {precision} engine (LayerNorm and softmax)\n"
                          + "\n".join(fp32_nodes(onnx_path, it.build())) + "\n", encoding="utf-8")
        sess.put(layers)
        versions["note_precision"] = f"{precision} with LayerNorm/softmax pinned to fp32 (as build_engine.sh)"
    return _board_timing(sess, board, rmodel, settings, versions), versions


def _board_timing(sess: Any, board: _Board, rmodel: str, settings: MeasureSettings,
                  versions: dict[str, str]) -> Timing:
    """Time a model already on the board: ort_bench.py or trtexec over ssh, onnxruntime_perf_test over adb."""
    from lgp_edge.profiling import remote
    from lgp_edge.profiling.runtimes.tensorrt import parse_trtexec, summary_timing

    target = board.target
    if target.connection.kind == "ssh" and target.runtime == "onnxruntime":
        argv = remote.ort_bench_argv(str(target.extra.get("remote_python", "python3")), board.script, rmodel,
                                     settings)
        return repeat_if_noisy(lambda: _ort_once(sess, argv, versions, settings), settings)
    if target.connection.kind == "ssh":
        summary = parse_trtexec(sess.run(remote.trtexec_argv(board.script, rmodel, board.precision, settings,
                                                              target.extra.get("trtexec"))), sess.transport.where)
        timing, notes = summary_timing(summary, settings.iters, settings.warmup)
        versions["tensorrt"] = summary.version or target.runtime_version
        versions.update({f"note_{k}": v for k, v in notes.items()})
        return timing
    argv = remote.perf_test_argv(board.perf_test, rmodel, settings, str(target.extra.get("big_cores", "0-7")))
    versions["onnxruntime_perf_test"] = target.runtime_version
    versions["note_std"] = "estimated from P90 - P50 (perf_test prints no std)"
    # its std is the tail its P90 implies: measured again while that is over the threshold, as over ssh
    return repeat_if_noisy(lambda: remote.perf_test_timing(
        remote.parse_perf_test(sess.run(argv), sess.transport.where), settings), settings)


def _ort_once(sess: Any, argv: list[str], versions: dict[str, str], settings: MeasureSettings) -> Timing:
    """One run of ort_bench.py on the board; its per-run times are summarized here."""
    from lgp_edge.profiling import remote

    data = remote.parse_ort_bench(sess.run(argv), sess.transport.where)
    versions["onnxruntime"] = str(data.get("onnxruntime", "?"))
    return summarize(data["times_ms"], settings.warmup)


# ------------------------------------------------------------------------------------ high-level steps
def calibrate(subject: Subject, target: TargetSpec, runtime: str, precision: str, settings: MeasureSettings,
              store: Any, *, reporter: Reporter = NULL, targets_dir: str | None = None,
              host_measured: bool = False) -> Predictor:
    """Measure the probes on the device, store them (unless the store is read-only), return the calibrated
    predictor. On this host its calibration is measured again first, unless ``host_measured`` (this command
    has just measured it).

    Probes are few, so each gets three times the timed runs: their noise is every prediction's noise.
    """
    probe_settings = replace(settings, iters=settings.iters * 3, warmup=settings.warmup * 2)
    if target.connection.kind == "local" and target.hardware.detect:
        from lgp_edge.profiling.roofline import host_calibration

        host_calibration(runtime, settings.threads, store, refresh=not host_measured)  # measured again
    recs = measure_items(subject, subject.probes, target, runtime, precision, probe_settings, reporter=reporter,
                         targets_dir=targets_dir, what="calibrating")
    if store is not None and not getattr(store, "readonly", False):  # a read-only store: this process's fit alone
        store.put_many(recs)
        # the calibration every later process reads from the store (the robust aggregate of the recent probe
        # runs), so that this process predicts what they will
        return stored_predictor(subject, target, runtime, precision, settings, store) or \
            calibrated_predictor(recs, subject, target, runtime, precision)
    return calibrated_predictor(recs, subject, target, runtime, precision)


def calibrated_predictor(probe_records: Sequence[LatencyRecord], subject: Subject, target: TargetSpec,
                         runtime: str, precision: str) -> Predictor:
    """Fitted on the probes just measured by the rule the stored calibration follows (``fit_probes``)."""
    need = _needed(subject)
    cal = fit_probes(probe_records, need, target=target.name)
    if cal is None:
        fit = fit_calibration(probe_records)
        if all(fit.covers(p) for p in need):  # covered, and a model predicted at 0 ms or less
            raise UsageError(f"the calibration probes just measured on '{target.name}' predict an impossible latency "
                             "(a probe was timed while the machine was busy); measure them again when it is quieter: "
                             f"lgp-edge profile --target {target.name} --calibrate")
        bad = next((it.key for it in subject.items if not fit.covers(it.parts)), "a descendant of the pool")
        raise UsageError(f"the calibration probes do not cover '{bad}' (a bug: please report it)")
    return Predictor("calibrated", target.name, runtime, precision, calibration=cal)


def _needed(subject: Subject) -> list[Sequence[Part]]:
    """The models a calibration must cover for ``subject``: a pool's every descendant, as ``select`` asks (the
    probes' fit depends on what it must cover: `profile --descendant K` and `select` read two calibrations of one
    store when K alone was asked for), else the subject's own items."""
    if subject.pool is None:
        return [it.parts for it in subject.items]
    from lgp_edge.models.plan import enumerate_descendants
    from lgp_edge.profiling.parts import parts_of

    return [parts_of(subject.pool, d) for d in enumerate_descendants(subject.pool)]


def stored_predictor(subject: Subject, target: TargetSpec, runtime: str, precision: str, settings: MeasureSettings,
                     store: Any) -> Predictor | None:
    """A calibrated predictor from probe rows already in the store, when they cover the subject (the store is only
    read: no roofline, no host calibration measured on the way)."""
    from lgp_edge.profiling.predict import stored_calibration

    cal = None if store is None else stored_calibration(target, precision, runtime, store=store,
                                                        threads=settings.threads, need=_needed(subject),
                                                        batch=settings.batch)
    return None if cal is None else Predictor("calibrated", target.name, runtime, precision, calibration=cal)


def predictor_for(subject: Subject, target: TargetSpec, runtime: str, precision: str, settings: MeasureSettings,
                  store: Any, *, calibrate_now: bool, reporter: Reporter = NULL,
                  targets_dir: str | None = None) -> Predictor:
    """Stored calibration if it covers the subject; else calibrate now if asked (or the target is this
    host); else the roofline, scaled to the pool's descendants measured on the target as ``select`` scales it."""
    from lgp_edge.profiling.roofline import host_measurements

    before = host_measurements()
    if not calibrate_now:
        pred = make_predictor(target, precision, runtime, store=store, threads=settings.threads, batch=settings.batch,
                              need=_needed(subject))
        if pred.kind == "calibrated":
            return pred
        if target.connection.kind != "local":
            if subject.pool is None:
                return pred
            return scaled_roofline(pred, subject.pool, store, target, threads=settings.threads, batch=settings.batch)
    return calibrate(subject, target, runtime, precision, settings, store, reporter=reporter,
                     targets_dir=targets_dir, host_measured=host_measurements() > before)


def predict_items(subject: Subject, predictor: Predictor, settings: MeasureSettings) -> list[LatencyRecord]:
    """A prediction of every item; one past what any run can take (``check_record``: the slowest hardware a target
    file may describe, with a large model) is refused naming the target's numbers, before anything is stored."""
    records = [predictor.record(it.key, it.parts, batch=settings.batch, threads=settings.threads,
                                pool_id=subject.pool_id) for it in subject.items]
    return [_possible(r, f"the predicted latency on target '{r.target}' is impossible",
                      "check the hardware numbers of its target file (peak_gflops, mem_gbps, efficiency)")
            for r in records]


@dataclass(frozen=True)
class CheckResult:
    mape: float  # mean |predicted - measured| / measured of the medians over the held-out models, percent
    max_ape: float  # worst absolute percentage error of a median
    rows: tuple[tuple[str, float, float], ...]  # (key, predicted ms, measured ms) of the medians
    calibration_models: int  # probe measurements the calibration was fitted on (none of them a checked model)
    p90_mape: float = 0.0  # the same of the p90s, what select decides on
    noisy_references: int = 0  # held-out models whose measurement was noisy (a weaker reference)


def check_predictions(predicted: Sequence[LatencyRecord], measured: Sequence[LatencyRecord],
                      calibration_models: int) -> CheckResult:
    meas = {r.descendant_key: r for r in measured}
    pairs = [(p, meas[p.descendant_key]) for p in predicted if p.descendant_key in meas]
    if not pairs:
        raise UsageError("nothing to check: no model was both predicted and measured")
    rows = tuple((p.descendant_key, p.median_ms, m.median_ms) for p, m in pairs)
    errs = [abs(p - m) / m * 100 for _, p, m in rows]
    p90_errs = [abs(p.p90_ms - m.p90_ms) / m.p90_ms * 100 for p, m in pairs]
    return CheckResult(mape=sum(errs) / len(errs), max_ape=max(errs), rows=rows,
                       calibration_models=calibration_models, p90_mape=sum(p90_errs) / len(p90_errs),
                       noisy_references=sum(m.noisy for _, m in pairs))
