"""One profiling run as a library call: what ``lgp-edge profile`` does between parsing and printing.

``run_profile`` checks the request, picks the subject (a pool's descendants or one timm model), measures
and/or predicts their latencies on the target, writes the rows to the measurement store and returns what
happened; ``import_records`` adds a records file to the store. Neither prints: the caller reports.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgp_edge.errors import UsageError
from lgp_edge.fileio import remove_empty_dirs
from lgp_edge.progress import NULL, counted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile, where and how (``None`` means: the target's default)."""

    target: str
    pool: str | None = None  # pool directory (None: the bundled demo pool)
    model: str | None = None  # a stock timm ViT instead of a pool
    descendants: tuple[str, ...] | None = None  # only these descendant keys
    runtime: str | None = None
    precision: str | None = None
    predict: bool = False
    calibrate: bool = False  # measure the calibration probes now, then predict
    check: bool = False  # with predict: also measure every model and report the predictor's error
    threads: int | None = None
    warmup: int | None = None  # None: 10 (a phone's onnxruntime_perf_test: its own one run)
    iters: int = 50
    seconds: float | None = None
    batch: int = 1
    rounds: int | None = None  # default 1, 5 with check
    store: str | None = None  # None: $LGP_EDGE_STORE or the per-user store
    targets_dir: str | None = None


@dataclass(frozen=True)
class ProfileResult:
    subject: Any  # profiling.profile.Subject
    target: Any  # TargetSpec
    runtime: str
    precision: str
    records: list[Any]  # LatencyRecord per profiled item, measured or predicted
    predictor: Any  # the Predictor used, None when measuring
    check: Any  # CheckResult of --check, else None
    store_path: Path
    written: int  # rows written to the store
    note: str  # what was profiled, e.g. "pool 1a2b (path)"

    @property
    def mode(self) -> str:
        return "predicted" if self.predictor is not None else "measured"


def _validate(req: ProfileRequest) -> ProfileRequest:
    from dataclasses import replace

    if req.calibrate and not req.predict:
        req = replace(req, predict=True)  # calibrating is for predicting
    if req.check and not req.predict:
        raise UsageError("--check compares predictions with measurements: use it with --predict")
    if req.model is not None and not req.model.strip():
        raise UsageError("--model needs a timm model name, e.g. deit_tiny_patch16_224")
    if req.model and (req.pool or req.descendants):
        raise UsageError("--model profiles one timm model; it cannot be combined with --pool or --descendant")
    return req


def _check_settings(req: ProfileRequest, target: Any) -> None:
    """Refuse measurement settings out of range, naming the flag (before anything is created or run)."""
    from lgp_edge.profiling.host import check_target_threads, usable_cpus
    from lgp_edge.profiling.measure import MAX_BATCH, MAX_ITERS, MAX_SECONDS, MAX_THREADS, settings_problem

    if req.threads is None:
        check_target_threads(target)
    threads_max, why = MAX_THREADS, f"at most {MAX_THREADS}"
    if target.connection.kind == "local" and usable_cpus() < MAX_THREADS:
        threads_max, why = usable_cpus(), f"this host lets lgp-edge use {usable_cpus()} CPUs"
    checks = [
        ("--threads", req.threads, 1, threads_max, why),
        ("--batch", req.batch, 1, MAX_BATCH, f"images per inference, at most {MAX_BATCH}"),
        ("--warmup", req.warmup, 0, MAX_ITERS, f"at most {MAX_ITERS}"),
        ("--iters", req.iters, 1, MAX_ITERS, f"at most {MAX_ITERS}"),
        ("--rounds", req.rounds, 1, req.iters if isinstance(req.iters, int) else 1,
         "each round times at least one run of the --iters"),
    ]
    for flag, value, low, high, note in checks:
        if value is None:
            continue
        problem = settings_problem(flag, value, low, max(low, high))
        if problem:
            raise UsageError(f"{problem} ({note})")
    if req.seconds is not None:
        problem = settings_problem("--seconds", req.seconds, 0, MAX_SECONDS, integer=False)
        if problem:
            raise UsageError(f"{problem} (seconds to time each model)")
    if (req.runtime or target.runtime) == "coreml" and req.batch != 1:
        from lgp_edge.profiles import COREML_ONE_IMAGE

        raise UsageError(f"--batch {req.batch}: {COREML_ONE_IMAGE}; leave --batch out")
    if target.connection.kind == "adb" and req.warmup is not None and (not req.predict or req.calibrate):
        raise UsageError(f"--warmup: target '{target.name}' is timed by onnxruntime_perf_test, which takes no "
                         "warm-up count (it warms up with one run of its own): leave --warmup out")
    if target.connection.kind != "local":  # a board's bench script times a count of runs, one model at a time
        for flag, given in (("--seconds", req.seconds is not None), ("--rounds", (req.rounds or 1) > 1)):
            if given:
                raise UsageError(f"{flag} times models on this host; target '{target.name}' is a board "
                                 f"({target.connection.kind}), which times --iters runs of each model: use --iters")


def measure_settings(req: ProfileRequest, target: Any) -> Any:
    """The MeasureSettings of a request (threads and rounds defaulted); UsageError naming the flag."""
    from lgp_edge.profiling.host import default_measure_threads
    from lgp_edge.profiling.measure import MeasureSettings

    _check_settings(req, target)
    threads = req.threads if req.threads is not None else default_measure_threads(target)
    rounds = req.rounds if req.rounds is not None else (5 if req.check and target.connection.kind == "local" else 1)
    if rounds > 1 and req.seconds is not None:
        raise UsageError("--rounds and --seconds cannot be combined")
    try:
        return MeasureSettings(warmup=10 if req.warmup is None else req.warmup, iters=req.iters, seconds=req.seconds,
                               threads=threads, batch=req.batch, rounds=rounds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _checked_pool(req: ProfileRequest) -> tuple[Path, Any] | None:
    """The pool directory of a request and its manifest (None for --model), its pool.json and --descendant keys
    checked (no torch, no weights)."""
    from lgp_edge.pool.manifest import find_descendant, read_manifest, resolve_pool

    if req.model:
        return None
    path = resolve_pool(req.pool)
    manifest = read_manifest(path)
    for key in req.descendants or ():
        find_descendant(manifest.spec, key)
    return path, manifest


def _subject(req: ProfileRequest, pool: tuple[Path, Any] | None, measuring: bool) -> tuple[Any, str]:
    """What is profiled: the pool's descendants (loaded when measured; a prediction needs the checked pool.json
    alone, neither torch nor the weights) or a timm model."""
    from lgp_edge.profiling.subject import pool_subject, timm_subject

    if pool is None:
        return timm_subject(req.model), f"timm model {req.model} (random weights)"
    path, manifest = pool
    build = _not_measured
    if measuring:
        from lgp_edge.pool.pool import load_pool

        loaded, manifest = load_pool(path)  # pool.json again, with the weights it describes
        build = loaded.descendant
    subject = pool_subject(manifest.spec, build, manifest, list(req.descendants) if req.descendants else None)
    return subject, f"pool {manifest.spec.pool_id} ({path})" + (
        "" if manifest.descendants else "; never evaluated: no top-1")


def _stored_calibration_will_do(req: ProfileRequest, pool: tuple[Path, Any] | None, target: Any, runtime: str,
                                precision: str, settings: Any, store: Any) -> bool:
    """A pool's ``--predict`` on this host (no ``--check``, no ``--calibrate``) whose stored calibration covers the
    pool: predicted from the store alone, as ``select`` would."""
    from lgp_edge.profiling.profile import stored_predictor

    if not req.predict or req.check or req.calibrate or pool is None:
        return False
    lazy, _ = _subject(req, pool, measuring=False)
    return stored_predictor(lazy, target, runtime, precision, settings, store) is not None


def _not_measured(spec: Any) -> Any:
    raise AssertionError(f"descendant {spec.key} built for a run that only predicts")


@dataclass(frozen=True)
class _Run:
    """The parts every stage below shares."""

    subject: Any
    target: Any
    runtime: str
    precision: str
    settings: Any
    reporter: Any
    targets_dir: str | None


def _predict_and_check(run: _Run, calibrate: bool, store: Any) -> tuple[list[Any], Any, Any, list[Any]]:
    """Predict, and measure every model to score the predictions: (records, predictor, check, rows to store)."""
    from lgp_edge.profiling import profile as prof

    s = run.subject
    args = (run.target, run.runtime, run.precision, run.settings)
    predictor = None if calibrate else prof.stored_predictor(s, *args, store)
    if predictor is None:  # calibrate and check in one interleaved measurement
        both = prof.measure_items(s, s.probes + s.items, *args, reporter=run.reporter,
                                  targets_dir=run.targets_dir, what="calibrating + checking")
        probes, measured = both[:len(s.probes)], both[len(s.probes):]
        predictor = prof.calibrated_predictor(probes, s, run.target, run.runtime, run.precision)
    else:
        both = measured = prof.measure_items(s, s.items, *args, reporter=run.reporter, targets_dir=run.targets_dir,
                                             what="checking")
    records = prof.predict_items(s, predictor, run.settings)
    used = predictor.calibration.probes if predictor.calibration is not None else 0  # noisy ones may be left out
    check = prof.check_predictions(records, measured, used)
    return records, predictor, check, [*both, *records]


def _profile_into(run: _Run, req: ProfileRequest, store: Any) -> tuple[list[Any], Any, Any, int]:
    """Measure or predict, write the rows: (records, predictor, check, rows written, a calibration's probes
    included)."""
    from lgp_edge.profiling import profile as prof

    before = store.rows_added

    if req.predict and req.check:
        records, predictor, check, rows = _predict_and_check(run, req.calibrate, store)
    elif req.predict:
        predictor, check = prof.predictor_for(run.subject, run.target, run.runtime, run.precision, run.settings,
                                              store, calibrate_now=req.calibrate, reporter=run.reporter,
                                              targets_dir=run.targets_dir), None
        records = rows = prof.predict_items(run.subject, predictor, run.settings)  # each names its calibration
    else:
        predictor = check = None
        done: list[Any] = []
        try:
            records = rows = prof.measure_items(run.subject, run.subject.items, run.target, run.runtime,
                                                run.precision, run.settings, reporter=run.reporter,
                                                targets_dir=run.targets_dir, done=done)
        except BaseException as exc:  # Ctrl-C or SIGTERM: keep the models measured so far (an hour on a board)
            if done and not isinstance(exc, Exception):
                store.put_many(done)
                log.warning("interrupted: the %s measured before it %s stored (%s)", counted(len(done), "model"),
                            "is" if len(done) == 1 else "are", ", ".join(r.descendant_key for r in done))
            raise
    store.put_many(rows)
    return records, predictor, check, store.rows_added - before


def _missing_parts(path: Path) -> list[Path]:
    """What opening a store at ``path`` will create: the file and its missing folders, innermost first."""
    if path.exists():
        return []
    out = [path]
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        out.append(parent)
        parent = parent.parent
    return out


def _remove_created(created: list[Path]) -> None:
    """Remove a store this process created (file, WAL sidecars, folders), unless something is in it or another
    process has it open: call after closing this process's connection. SQLite removes a WAL store's ``-wal``
    and ``-shm`` when its last connection closes, so sidecars still there mean another connection (a second
    ``profile`` measuring into the new store, whose rows would go to an unlinked file) or a crashed one."""
    if not created:
        return
    import sqlite3

    path = created[0]
    if any(p.exists() for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))):
        log.debug("keeping the new store '%s': another process has it open", path)
        return
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM host_calibration)")
            if rows.fetchone()[0]:
                return  # e.g. a host calibration measured before the failure: worth keeping
        finally:
            db.close()
    except sqlite3.Error:
        pass
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            p.unlink(missing_ok=True)
        except OSError:  # e.g. its "folder" is a file: nothing was created there, and the open's error says why
            pass
    remove_empty_dirs(created[1:])


def _adopt_former_id(store: Any, path: Path, manifest: Any) -> None:
    """Runs stored under the id the pool's pool.json records, when an older lgp-edge computed another one for it
    (before 2026-12-03 the ancestry's folder was hashed in), moved to its current id, where readers look."""
    from lgp_edge.pool.manifest import recorded_pool_id

    former, current = recorded_pool_id(path), manifest.spec.pool_id
    if former and former != current:
        moved = store.rename_pool(former, current)
        if moved:
            log.warning("%s stored under pool id %s (the id %s/pool.json records, an older lgp-edge's) moved to its "
                        "current id %s", counted(moved, "run"), former, path, current)


def run_profile(req: ProfileRequest, reporter: Any = NULL) -> ProfileResult:
    """Profile ``req``'s subject on its target and store the rows; bad requests raise UsageError first, those that
    need only the target file and pool.json before torch is imported."""
    from lgp_edge.profiling.checks import check_runtime_here, check_target, default_precision
    from lgp_edge.profiling.runtimes import check_installed
    from lgp_edge.profiling.store import MeasurementStore, default_store_path
    from lgp_edge.targets import load_target

    req = _validate(req)
    target = load_target(req.target, req.targets_dir)
    runtime = req.runtime or target.runtime
    if req.threads is not None:
        from lgp_edge.profiles import check_thread_count

        check_thread_count(target, runtime)
    precision = req.precision or default_precision(target)
    settings = measure_settings(req, target)
    measuring = not req.predict or req.check or req.calibrate or (
        target.connection.kind == "local")  # this host calibrates itself when predicting
    check_target(target, runtime, precision, measuring=measuring)
    pool = _checked_pool(req)
    here = measuring and target.connection.kind == "local"
    if here:
        check_installed(runtime)
    store_path = Path(req.store) if req.store else default_store_path()
    created = _missing_parts(store_path)
    store = None
    try:  # the store is opened (a damaged one refused) before the runtime and the pool's weights are loaded
        store = MeasurementStore(store_path)
        store.check_pages()  # damage past the pages read at open: refused now, not after the measuring
        if pool is not None:
            _adopt_former_id(store, *pool)
        if here and _stored_calibration_will_do(req, pool, target, runtime, precision, settings, store):
            here = measuring = False  # nothing is measured: neither the runtime nor the pool's weights are loaded
        if here:
            check_runtime_here(runtime, precision)
        subject, note = _subject(req, pool, measuring)
        run = _Run(subject, target, runtime, precision, settings, reporter, req.targets_dir)
        records, predictor, check, written = _profile_into(run, req, store)
    except BaseException:
        if store is not None:
            store.close()
        _remove_created(created)  # a failed run (or open) leaves no new, empty store behind
        raise
    store.close()
    log.debug("profiled %s of %s on %s, %s written", counted(len(records), "item"), note, target.name,
              counted(written, "row"))
    return ProfileResult(subject=subject, target=target, runtime=runtime, precision=precision, records=records,
                         predictor=predictor, check=check, store_path=store.path, written=written, note=note)


def _check_imported(path: str | Path, records: list[Any], target: str | None, targets_dir: str | None,
                    pool: str | None) -> list[Any]:
    """Refuse records of unknown targets, of precisions their target does not compute in, and (with a pool)
    of descendants or pool ids not of that pool: UsageError naming the record and field. The records to store:
    those under the id the pool's pool.json records, when an older lgp-edge computed another one (the hash before
    2026-12-03 included the ancestry's folder), moved to the pool's current id."""
    from lgp_edge.profiling.latency_file import KEY_PATTERN
    from lgp_edge.profiling.predict import PROBE_PREFIX
    from lgp_edge.targets import known_targets, load_target

    known = set(known_targets(targets_dir))
    pool_id, keys, recorded = None, set(), None
    if pool is not None:  # the pool's id and keys are pool.json's: neither torch nor the weights
        from lgp_edge.models.plan import enumerate_descendants
        from lgp_edge.pool.manifest import read_manifest, recorded_pool_id, resolve_pool

        spec = read_manifest(resolve_pool(pool)).spec
        pool_id, keys = spec.pool_id, {d.key for d in enumerate_descendants(spec)}
        recorded = recorded_pool_id(resolve_pool(pool))
    precisions: dict[str, tuple[str, ...]] = {}
    for i, r in enumerate(records):
        where = f"'{path}': record {i}"
        if not KEY_PATTERN.fullmatch(r.descendant_key):
            raise UsageError(f"{where}: descendant_key '{r.descendant_key}' is not a descendant key (like "
                             "'ti6.0-5' or 'ti6.0-3+b6.4-5'), 'timm:<name>' nor 'probe:...'; nothing was imported")
        if target is not None and r.target != target:
            raise UsageError(f"{where}: target is '{r.target}', not '{target}' (--target); nothing was imported")
        if r.target not in known:
            raise UsageError(f"{where}: target '{r.target}' is not a known target (see 'lgp-edge targets list', "
                             "or pass --targets-dir); nothing was imported")
        if r.target not in precisions:
            precisions[r.target] = tuple(load_target(r.target, targets_dir).precisions)
        if r.precision not in precisions[r.target]:
            raise UsageError(f"{where}: precision '{r.precision}' is not one target '{r.target}' computes in "
                             f"({', '.join(precisions[r.target])}); nothing was imported")
        if pool_id is None or r.descendant_key.startswith((PROBE_PREFIX, "timm:")):
            continue
        if r.pool_id == recorded and recorded != pool_id:
            log.info("%s: pool_id %s is the one %s records (an older lgp-edge's): stored under %s", where,
                     recorded, pool, pool_id)
            records[i] = r = dataclasses.replace(r, pool_id=pool_id)
        if r.pool_id != pool_id:
            raise UsageError(f"{where}: pool_id '{r.pool_id}' is not the id of --pool ({pool_id}); nothing was "
                             "imported")
        if r.descendant_key not in keys:
            raise UsageError(f"{where}: descendant_key '{r.descendant_key}' is not a descendant of pool {pool_id} "
                             "(see 'lgp-edge pool info'); nothing was imported")
    return records


def import_records(path: str | Path, *, target: str | None = None, store: str | None = None,
                   targets_dir: str | None = None, pool: str | None = None,
                   this_host: bool = False) -> tuple[list[Any], Path, int]:
    """Add the records of a JSON file to the store; refuses records of another ``target``, of an unknown
    target, and (with ``pool``) of another pool, all or nothing. Runs the store holds already are not added
    again. ``this_host``: runs of target 'cpu' that name no machine are this machine's. (records, store path,
    records added)"""
    from lgp_edge.profiling.store import MeasurementStore, default_store_path, read_records_file

    records = _check_imported(path, read_records_file(path, this_host=this_host), target, targets_dir, pool)
    with MeasurementStore(store or default_store_path()) as st:
        added = st.put_many(records)
        return records, st.path, added
