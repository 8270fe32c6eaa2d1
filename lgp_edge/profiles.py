"""Deployment profiles as data: one TOML file per profile (target, budgets, precision, formats).

A profile says what an app on a device needs: "on a Jetson Nano, a p90 latency within 33 ms (30 FPS) and
512 MB for weights and activations, in fp16, as a TensorRT-ready ONNX". ``lgp-edge select`` picks the best
descendant for it and ``lgp-edge export`` writes the artifacts.

Built-in profiles ship in ``lgp_edge/data/profiles`` (also ``profiles/`` at the repository root), one per
built-in target and named like it; ``--profiles-dir DIR`` adds user profiles, which win over a built-in
profile of the same name (the same rule as ``--targets-dir``). Every file is checked field by field; a
problem names the file and the field.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from lgp_edge.errors import UsageError
from lgp_edge.fileio import read_toml
from lgp_edge.profiling.measure import MAX_BATCH, MAX_THREADS  # a profile asks only for what can be measured
from lgp_edge.registry import check_name, check_text, named_files, pick, search_dirs
from lgp_edge.specs import CPU_RUNTIMES, FORMAT_PRECISIONS, FORMATS, DeviceProfile
from lgp_edge.specs import PROFILE_PRECISIONS as PRECISIONS

log = logging.getLogger(__name__)

# upper bounds of the budgets: about 2.8 hours per inference, 1 PB; larger is a typo (and overflows the plots)
MAX_BUDGET = {"latency_budget_ms": 1e7, "memory_budget_mb": 1e9}
# lower bounds: 1 us, less than one GPU kernel launch or a few thousand CPU cycles, so no network's inference
# takes it; 1 kB, less than the weights of one ViT layer. A budget below them is a typo (1e-3 for 1e3), not a
# device, and no descendant could ever meet it
MIN_BUDGET = {"latency_budget_ms": 1e-3, "memory_budget_mb": 1e-3}

# field -> (accepted types, required); numbers accept int or float
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "target": ((str,), True),
    "latency_budget_ms": ((int, float), True),
    "memory_budget_mb": ((int, float), True),
    "precision": ((str,), True),
    "formats": ((list,), True),
    "batch": ((int,), False),
    "threads": ((int,), False),
    "description": ((str,), False),
}


def profiles_root() -> Path:
    """Directory of the built-in profile files (inside the installed package)."""
    return Path(__file__).resolve().parent / "data" / "profiles"



def parse_profile(raw: dict[str, Any], path: Path) -> DeviceProfile:
    """Validate one profile file's contents; every error names the file and the field."""
    for name, (kinds, required) in _FIELDS.items():
        if name not in raw:
            if required:
                raise UsageError(f"profile file '{path}' is missing field '{name}'")
            continue
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            want = "number" if float in kinds else kinds[0].__name__
            raise UsageError(f"profile file '{path}': field '{name}' must be a {want}, got {value!r}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise UsageError(f"profile file '{path}' has unknown field '{unknown[0]}' (fields: {', '.join(_FIELDS)})")
    for name in ("name", "target", "precision", "description"):
        check_text("profile", path, name, raw.get(name, ""))
    for item in raw["formats"]:
        check_text("profile", path, "formats", item if isinstance(item, str) else "")
    check_name("profile", path, raw["name"])
    if raw["name"] != path.stem:
        raise UsageError(f"profile file '{path}': field 'name' is '{raw['name']}' but the file is named "
                         f"'{path.stem}.toml'; they must match")
    for name, high in MAX_BUDGET.items():
        problem = _budget_problem(raw[name], MIN_BUDGET[name], high)
        if problem:
            raise UsageError(f"profile file '{path}': field '{name}' {problem}")
    if raw["precision"] not in PRECISIONS:
        raise UsageError(f"profile file '{path}': field 'precision' is '{raw['precision']}', not one of "
                         f"{', '.join(PRECISIONS)}")
    formats = raw["formats"]
    if not formats:
        raise UsageError(f"profile file '{path}': field 'formats' is empty")
    for f in formats:
        if f not in FORMATS:
            raise UsageError(f"profile file '{path}': field 'formats' has '{f}', not one of {', '.join(FORMATS)}")
    if len(set(formats)) != len(formats):
        raise UsageError(f"profile file '{path}': field 'formats' lists a format twice")
    batch = raw.get("batch", 1)
    if not 1 <= batch <= MAX_BATCH:
        raise UsageError(f"profile file '{path}': field 'batch' must be between 1 and {MAX_BATCH}, got {batch}")
    threads = raw.get("threads")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"profile file '{path}': field 'threads' must be between 1 and {MAX_THREADS}, got "
                         f"{threads}")
    return DeviceProfile(name=raw["name"], target=raw["target"], latency_budget_ms=float(raw["latency_budget_ms"]),
                         memory_budget_mb=float(raw["memory_budget_mb"]), precision=raw["precision"],
                         formats=tuple(formats), batch=batch, description=raw.get("description", ""),
                         threads=threads)


def _shown(value: float) -> str:
    """``value`` as an error message writes it: six significant digits at most (an integer of 400 digits, or
    1e-300 written out, made a line of hundreds of characters)."""
    from decimal import Decimal

    try:
        return f"{float(value):.6g}"
    except OverflowError:  # an integer beyond any float
        return f"{Decimal(value):.6g}"


def _budget_problem(value: float, low: float, high: float) -> str | None:
    """Why ``value`` is no budget (a finite number in [low, high]); None when it is one."""
    try:
        finite = math.isfinite(float(value))
    except OverflowError:  # an integer beyond any float
        finite = False
    if not finite:
        return f"must be a finite number > 0 (from {low:g} to {high:g}), got {_shown(value)}"
    if not value > 0:
        return f"must be > 0 (at least {low:g}), got {_shown(value)}"
    if value < low:
        return f"must be at least {low:g} (no device's budget is smaller), got {_shown(value)}"
    if value > high:
        return f"must be at most {high:g}, got {_shown(value)}"
    return None


def load_profile_file(path: str | Path) -> DeviceProfile:
    p = Path(path)
    return parse_profile(read_toml(p, "profile"), p)


def _files(profiles_dir: str | Path | None) -> dict[str, Path]:
    """Profile name -> file; user files win over built-in ones."""
    return named_files(search_dirs(profiles_root(), profiles_dir, "--profiles-dir"))


def known_profiles(profiles_dir: str | Path | None = None) -> list[str]:
    return sorted(_files(profiles_dir))


def load_profile(name: str, profiles_dir: str | Path | None = None) -> DeviceProfile:
    """The profile called ``name``: from ``profiles_dir`` first, then the built-in ones."""
    return load_profile_file(pick("profile", name, _files(profiles_dir)))


def list_profiles(profiles_dir: str | Path | None = None) -> list[DeviceProfile]:
    return [load_profile_file(f) for _, f in sorted(_files(profiles_dir).items())]


def profile_path(name: str, profiles_dir: str | Path | None = None) -> Path:
    return pick("profile", name, _files(profiles_dir))


def _check_override(flag: str, value: float, low: float, high: float) -> None:
    problem = _budget_problem(value, low, high)
    if problem:
        raise UsageError(f"{flag} {problem}")


def with_overrides(profile: DeviceProfile, *, budget_ms: float | None = None, memory_mb: float | None = None,
                   precision: str | None = None, formats: tuple[str, ...] | None = None,
                   threads: int | None = None) -> DeviceProfile:
    """The profile with command-line overrides applied (each checked like the file's field)."""
    changes: dict[str, Any] = {}
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise UsageError(f"--threads must be an integer between 1 and {MAX_THREADS}, got {threads}")
        changes["threads"] = threads
    if budget_ms is not None:
        _check_override("--budget-ms", budget_ms, MIN_BUDGET["latency_budget_ms"], MAX_BUDGET["latency_budget_ms"])
        changes["latency_budget_ms"] = float(budget_ms)
    if memory_mb is not None:
        _check_override("--memory-mb", memory_mb, MIN_BUDGET["memory_budget_mb"], MAX_BUDGET["memory_budget_mb"])
        changes["memory_budget_mb"] = float(memory_mb)
    if precision is not None:
        if precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        changes["precision"] = precision
    if formats is not None:
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise UsageError(f"unknown format '{bad[0]}'; formats: {', '.join(FORMATS)}")
        if not formats:
            raise UsageError("--format needs at least one format")
        changes["formats"] = tuple(dict.fromkeys(formats))
    return dataclasses.replace(profile, **changes) if changes else profile


def check_thread_count(target: Any, runtime: str, fix: str = "drop --threads") -> None:
    """A thread count asked of ``runtime`` on ``target``: refused where the runtime has none (a GPU or NPU runtime;
    its runs would be left out as measured at another count)."""
    if runtime not in CPU_RUNTIMES:
        raise UsageError(f"target '{target.name}' runs {runtime}, which has no thread count (threads are a CPU "
                         f"runtime's: {', '.join(CPU_RUNTIMES)}): {fix}")


# why a Core ML profile has batch 1 (the classifier's label output is one image's)
COREML_ONE_IMAGE = "the Core ML package takes one image per prediction (batch 1)"


def check_against_target(profile: DeviceProfile, target: Any) -> None:
    """A profile's precision and formats must be ones its target supports (exit 2 otherwise)."""
    if profile.precision not in target.precisions:
        takes = [p for p in target.precisions if p in PRECISIONS]
        only = [p for p in target.precisions if p not in PRECISIONS]
        raise UsageError(f"profile '{profile.name}': precision '{profile.precision}' is not supported by target "
                         f"'{target.name}' (it takes {', '.join(takes) or 'none'}"
                         + (f"; {', '.join(only)} only for 'lgp-edge profile')" if only else ")"))
    for f in profile.formats:
        if f not in target.formats:
            raise UsageError(f"format '{f}' is not supported by target '{target.name}' (it takes "
                             f"{', '.join(target.formats)})")
        if profile.precision not in FORMAT_PRECISIONS.get(f, (profile.precision,)):
            raise UsageError(f"profile '{profile.name}': format '{f}' is written in "
                             f"{' or '.join(FORMAT_PRECISIONS[f])} only, not {profile.precision}: choose another "
                             "precision, or leave the format out")
    if "coreml" in profile.formats and profile.batch != 1:  # select, report and export alike
        others = [f for f in profile.formats if f != "coreml"]
        raise UsageError(f"profile '{profile.name}' has batch {profile.batch}: {COREML_ONE_IMAGE}; use batch = 1"
                         + (f", or leave coreml out of its formats (formats = {list(others)!r})" if others else ""))
    if profile.threads is None:
        from lgp_edge.profiling.host import check_target_threads

        check_target_threads(target)  # the count the target's latencies are for, without a profile's own
    else:
        from lgp_edge.profiling.host import usable_cpus
        from lgp_edge.select import profile_runtime

        check_thread_count(target, profile_runtime(profile, target), "drop --threads (or the profile's 'threads')")
        if target.connection.kind == "local" and profile.threads > (n := usable_cpus()):
            raise UsageError(f"profile '{profile.name}' asks for {profile.threads} threads on target '{target.name}', "
                             f"this host, which lets lgp-edge use {n} CPUs; give --threads {n} or fewer")
