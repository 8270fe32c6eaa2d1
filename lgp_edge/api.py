"""The Python API: the steps of the CLI as functions, returning the same typed records the CLI uses.

Everything heavy is imported inside the function that needs it, so ``import lgp_edge.api`` is cheap.
See docs/API.md (its examples are run by tests/test_api.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _check(value: Any, what: str, kinds: tuple[type, ...], expected: str, *, optional: bool = False) -> None:
    """``UsageError`` naming the argument when ``value`` is not of ``kinds`` (None allowed when ``optional``), or is
    an empty path or name (taken for "not given" it would select the default: ``pool=""`` the demo pool)."""
    from lgp_edge.errors import UsageError

    if value is None and optional:
        return
    if isinstance(value, kinds) and not isinstance(value, bool):
        if isinstance(value, (str, os.PathLike)) and not str(os.fspath(value)).strip():
            raise UsageError(f"{what} is empty: give {expected.split(' (')[0]}" + (", or None" if optional else ""))
        return
    raise UsageError(f"{what} must be {expected}, got {type(value).__name__} {value!r:.60}")


def _numbers(**numbers: Any) -> None:
    """Budget overrides: a real number or None (a bool or a string is no budget; range checked with the flags')."""
    for what, value in numbers.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            from lgp_edge.errors import UsageError

            raise UsageError(f"{what} must be a number (int or float) or None, got {type(value).__name__} "
                             f"{value!r:.60}")


def _paths(**paths: Any) -> None:
    for what, value in paths.items():
        _check(value, what, (str, os.PathLike), "a path (str or os.PathLike)", optional=True)


def _names(**names: Any) -> None:
    for what, value in names.items():
        _check(value, what, (str,), "a name (str)")


def _manifest(manifest: Any) -> None:
    from lgp_edge.pool.manifest import PoolManifest

    _check(manifest, "manifest", (PoolManifest,), "the PoolManifest api.load_pool returns")


def load_pool(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(LearngenePool, PoolManifest)`` of a pool directory (None: the bundled demo pool)."""
    from lgp_edge.pool.pool import load_pool as _load
    from lgp_edge.pool.pool import resolve_pool

    _paths(path=path)
    return _load(resolve_pool(str(path) if path is not None else None))


def descendants(manifest: Any) -> tuple[Any, ...]:
    """The pool's evaluated descendants (``DescendantRecord``: key, params, FLOPs, top-1)."""
    from lgp_edge.select import records_of

    _manifest(manifest)
    return records_of(manifest)


def target(name: str, targets_dir: str | Path | None = None) -> Any:
    """A ``TargetSpec`` by name (built-in, or from ``targets_dir``)."""
    from lgp_edge.targets import load_target

    _names(name=name)
    _paths(targets_dir=targets_dir)
    return load_target(name, targets_dir)


def profile(name: str, profiles_dir: str | Path | None = None) -> Any:
    """A ``DeviceProfile`` by name (built-in, or from ``profiles_dir``)."""
    from lgp_edge.profiles import load_profile

    _names(name=name)
    _paths(profiles_dir=profiles_dir)
    return load_profile(name, profiles_dir)


def predict_latencies(pool: Any, manifest: Any, target_name: str, *, runtime: str | None = None,
                      precision: str | None = None, store: str | Path | None = None,
                      targets_dir: str | Path | None = None) -> list[Any]:
    """Predicted latency of every descendant on a target (``LatencyRecord``s, ``source`` "predicted"),
    as ``lgp-edge profile --target NAME --predict``; stored when ``store`` is given (else the default store
    is only read, and not created)."""
    from lgp_edge.pool.pool import LearngenePool
    from lgp_edge.profiling import profile as prof
    from lgp_edge.profiling.checks import check_request, default_precision
    from lgp_edge.profiling.measure import MeasureSettings
    from lgp_edge.profiling.store import MeasurementStore, default_store_path

    _check(pool, "pool", (LearngenePool,), "the LearngenePool api.load_pool returns")
    _manifest(manifest)
    _paths(store=store)
    for what, value in (("runtime", runtime), ("precision", precision)):
        _check(value, what, (str,), "a name (str) or None", optional=True)
    t = target(target_name, targets_dir)
    rt = runtime or t.runtime
    prec = precision or default_precision(t)
    check_request(t, rt, prec, measuring=False)
    subject = prof.pool_subject(pool.spec, pool.descendant, manifest)
    settings = MeasureSettings(threads=prof.default_threads(t))
    st = (MeasurementStore(store) if store is not None
          else MeasurementStore(default_store_path(), readonly=True))
    try:
        predictor = prof.predictor_for(subject, t, rt, prec, settings, st, calibrate_now=False)
        records = prof.predict_items(subject, predictor, settings)
        if store is not None:
            st.put_many(records)
    finally:
        st.close()
    return records


def select(pool: Any, manifest: Any, profile_name: str, *, store: str | Path | None = None,
           profiles_dir: str | Path | None = None, targets_dir: str | Path | None = None,
           budget_ms: float | None = None, memory_mb: float | None = None, threads: int | None = None) -> Any:
    """The ``Selection`` for a device profile (chosen ``Candidate``, every candidate, the reason), as
    ``lgp-edge select``; raises ``NothingFits`` when no descendant fits the budgets. ``budget_ms``,
    ``memory_mb`` and ``threads`` override the profile's, checked as ``--budget-ms``, ``--memory-mb`` and
    ``--threads`` are. Only ``manifest`` is read (the choice needs no weights); ``pool`` stays so that
    ``select(*load_pool(path), name)`` reads."""
    from lgp_edge.profiles import check_against_target, with_overrides
    from lgp_edge.select import open_store, plan_selection

    _manifest(manifest)
    _paths(store=store)
    _numbers(budget_ms=budget_ms, memory_mb=memory_mb)
    p = with_overrides(profile(profile_name, profiles_dir), budget_ms=budget_ms, memory_mb=memory_mb,
                       threads=threads)
    t = target(p.target, targets_dir)
    check_against_target(p, t)
    manifest.check_top1("POOL")  # top-1 measured on synthetic images for a real-data pool: refused, as by the CLI
    st = open_store(store)
    try:
        return plan_selection(manifest, p, t, st)  # NothingFits: select --json's shape, "pool" None (no folder)
    finally:
        st.close()


def export(profile_name: str, out: str | Path, *, pool: str | Path | None = None, descendant: str | None = None,
           store: str | Path | None = None, val_images: int | None = None, force: bool = False,
           precision: str | None = None, data: str | None = None, model: str | None = None,
           checkpoint: str | Path | None = None, profiles_dir: str | Path | None = None,
           targets_dir: str | Path | None = None, budget_ms: float | None = None, memory_mb: float | None = None,
           threads: int | None = None) -> Any:
    """Export for a profile, validated, with manifest.json (``ExportResult``), as ``lgp-edge export``;
    ``precision``, ``budget_ms``, ``memory_mb`` and ``threads`` override the profile's (checked as the CLI's
    flags are), ``model`` + ``checkpoint`` export a timm ViT (``--model``). Refused on Windows, as the CLI is."""
    from lgp_edge.errors import UNSUPPORTED_OS, UsageError

    if os.name == "nt":  # before the writer's modules, which need fcntl
        raise UsageError(UNSUPPORTED_OS)
    from lgp_edge.export.pipeline import ExportRequest, export_profile
    from lgp_edge.fileio import canonical_data
    from lgp_edge.outdir import release
    from lgp_edge.profiles import with_overrides

    _check(out, "out", (str, os.PathLike), "a path (str or os.PathLike)")
    _paths(pool=pool, store=store, checkpoint=checkpoint)
    _numbers(budget_ms=budget_ms, memory_mb=memory_mb)
    for what, value in (("descendant", descendant), ("precision", precision), ("data", data), ("model", model)):
        _check(value, what, (str,), "a name (str) or None", optional=True)
    if (model is None) != (checkpoint is None) or (model is not None and (pool or descendant)):
        raise UsageError("model and checkpoint go together, and without pool or descendant")
    if val_images is not None and (isinstance(val_images, bool) or not isinstance(val_images, int) or val_images < 1):
        raise UsageError(f"val_images must be an integer >= 1, got {val_images!r}")
    if not isinstance(force, bool):  # a truthy string replaced an earlier export
        raise UsageError(f"force must be True or False, got {force!r}")
    p = with_overrides(profile(profile_name, profiles_dir), precision=precision, budget_ms=budget_ms,
                       memory_mb=memory_mb, threads=threads)
    kw: dict[str, Any] = {} if val_images is None else {"val_images": val_images}
    if targets_dir is not None:
        kw["targets_dir"] = Path(targets_dir)
    req = ExportRequest(profile=p, target=target(p.target, targets_dir), out=Path(out),
                        pool=Path(pool) if pool is not None else None, force=force, descendant=descendant,
                        store=Path(store) if store is not None else None,
                        data=canonical_data(data) if data is not None else None, model=model,
                        checkpoint=Path(checkpoint) if checkpoint is not None else None, **kw)
    try:
        return export_profile(req)
    finally:
        release(out)  # OUT's writer lock, when the export stopped before publishing (bad input, a failure)


def read_manifest(out: str | Path) -> dict[str, Any]:
    """``manifest.json`` of an export directory (``UsageError`` when it is missing, unreadable or not a JSON
    object)."""
    from lgp_edge.errors import UsageError
    from lgp_edge.fileio import json_loads

    _check(out, "out", (str, os.PathLike), "a path (str or os.PathLike)")
    path = Path(out) / "manifest.json"
    try:
        mf = json_loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"'{out}' is not an export directory (no manifest.json)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"'{path}' cannot be read as JSON ({exc})") from None
    if not isinstance(mf, dict):
        raise UsageError(f"'{path}' holds a JSON {type(mf).__name__}, not an object")
    return mf
