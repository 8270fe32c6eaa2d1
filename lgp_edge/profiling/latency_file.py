"""The latency records file: the JSON that ``lgp-edge profile --import`` reads, that ``build_engine.sh --time``
writes on a board, and that a store write which cannot be made leaves beside the store (``save_beside``).

``check_record`` is the rule every stored or imported record passes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lgp_edge.errors import UsageError
from lgp_edge.fileio import json_loads, write_text_atomic
from lgp_edge.registry import NAME_CHAR, NAME_START
from lgp_edge.specs import PRECISIONS, RUNTIMES, LatencyRecord, is_integer, is_number

IMPORT_FORMAT = "lgp-edge-latency"  # the JSON files `profile --import` reads and failed writes leave behind
IMPORT_VERSION = 1


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


MAX_MS = 1e7  # one inference: at most ~2.8 hours (anything longer is a unit or typing mistake)
MAX_CV = 1e3
MAX_RUNS = 10 ** 9  # n and warmup (SQLite integers are 64-bit; no run is this long)
_SEGMENT = r"[A-Za-z][A-Za-z0-9_]*\.(?:\d+-\d+|head)"
KEY_PATTERN = re.compile(rf"{_SEGMENT}(?:\+{_SEGMENT})*|timm:[A-Za-z0-9_.\-]+|probe:\S+")
_NAME = re.compile(f"{NAME_START}{NAME_CHAR}*")  # a target name's characters (a target file bounds its length)


def field_problem(name: str, v: object) -> str | None:
    """Why ``v`` is not a valid value of the LatencyRecord field ``name`` (None when it is)."""
    from lgp_edge.profiling.measure import MAX_BATCH, MAX_THREADS

    ints = {"batch": (1, MAX_BATCH), "threads": (1, MAX_THREADS), "n": (0, MAX_RUNS), "warmup": (0, MAX_RUNS)}
    if name in ints:
        lo, hi = ints[name]
        return None if is_integer(v) and lo <= v <= hi else f"{name} must be an integer in {lo}..{hi}, got {v!r}"
    if name in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv"):
        hi = MAX_CV if name == "cv" else MAX_MS
        return None if is_number(v) and 0 <= v <= hi else f"{name} must be a finite number in 0..{hi:g}, got {v!r}"
    if name == "runtime":
        return None if v in RUNTIMES else f"runtime must be one of {', '.join(RUNTIMES)}, got {v!r}"
    if name == "precision":
        return None if v in PRECISIONS else f"precision must be one of {', '.join(PRECISIONS)}, got {v!r}"
    if name == "source":
        return None if v in ("measured", "predicted") else f"source must be 'measured' or 'predicted', got {v!r}"
    if name == "noisy":
        return None if isinstance(v, bool) else f"noisy must be true or false, got {v!r}"
    if name == "tool_versions":
        ok = isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
        return None if ok else f"tool_versions must be an object of strings, got {v!r}"
    if name in ("descendant_key", "target"):
        return None if isinstance(v, str) and v and len(v) <= 1000 else f"{name} must be a non-empty string, got {v!r}"
    if name in ("pool_id", "calibration", "when"):
        return None if isinstance(v, str) and len(v) <= 1000 else f"{name} must be a string, got {v!r}"
    return None


def check_record(r: LatencyRecord) -> None:
    """Refuse records no run can produce (ValueError naming the field)."""
    for name in LatencyRecord.__dataclass_fields__:
        problem = field_problem(name, getattr(r, name))
        if problem:
            raise ValueError(f"record {r.descendant_key!r}: {problem}")
    if r.median_ms <= 0 or not r.median_ms <= r.p90_ms * (1 + 1e-9) or not r.p90_ms <= r.p99_ms * (1 + 1e-9):
        raise ValueError(f"record {r.descendant_key}: need 0 < median <= p90 <= p99, got {r.median_ms:g}, "
                         f"{r.p90_ms:g}, {r.p99_ms:g}")


#: What a run of target 'cpu' records about the machine it ran on (``profiling.host.host_versions``).
HOST_KEYS = ("host_cpu", "host_logical_cpus")

# The ISO 8601 times a record's "when" may hold: a date, optionally with a time to the minute or second (T or a
# space between, fractions of 1 to 6 digits) and an offset, Z or +HH:MM. ``datetime.fromisoformat`` alone would
# judge files differently per Python: 3.10's refuses "Z" and a 1-digit fraction, 3.11's also takes the basic
# format ("20260101T000000Z") and week dates.
_WHEN = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})"
                   r"(?:[T ]([0-9]{2}:[0-9]{2}(?::[0-9]{2})?)(?:\.([0-9]{1,6}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?")


def parse_when(text: str) -> datetime:
    """``text`` as a time if it is one of the ISO 8601 forms above (ValueError if not, or out of range), the
    same on every supported Python."""
    m = _WHEN.fullmatch(text)
    if m is None or (m.group(3) is not None and len(m.group(2)) != 8):  # a fraction needs seconds
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    day, clock, fraction, zone = m.groups()
    if clock is None:
        return datetime.fromisoformat(day)
    fraction = f".{fraction.ljust(6, '0')}" if fraction else ""
    return datetime.fromisoformat(f"{day}T{clock}{fraction}{'+00:00' if zone == 'Z' else zone or ''}")


def utc_when(text: str) -> str:
    """``text`` (one of ``parse_when``'s forms) in UTC, ISO 8601 to the second (a fraction kept), the one form the
    store orders runs by: "04:00-08:00" is after "10:00+00:00". A time without an offset is read as UTC."""
    t = parse_when(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat()


# how far ahead of this machine's clock an imported run may be dated (a board's clock set a little ahead, time zones
# written wrong by a few hours); later than that it is refused
FUTURE_SLACK = timedelta(days=1)
# the earliest date an imported run may carry: before it, a clock that was never set (1970 on a board without a
# real-time clock), not a measurement of a runtime that exists
EARLIEST_RUN = datetime(2020, 1, 1, tzinfo=timezone.utc)


def import_problem(row: dict) -> str | None:
    """The stricter rules of a record read from a file (a board's, or one left beside a store), beyond every
    field's type and range (``check_record``): a target name, a pool id, an ISO 8601 time, and for target 'cpu'
    the machine it ran on. None when it passes.
    (``profile --import`` also checks the key's shape, ``KEY_PATTERN``, and the target, precision and pool:
    ``session.import_records``.)"""
    if not _NAME.fullmatch(row["target"]):
        return f"target {row['target']!r} is not a target name"
    if "pool_id" in row and not re.fullmatch(r"[0-9A-Za-z]*", row["pool_id"]):
        return f"pool_id {row['pool_id']!r} is not a pool id"
    if "when" in row:
        try:
            parse_when(row["when"])
        except ValueError:
            return f"when must be an ISO 8601 time like '2026-01-01T00:00:00+00:00', got {row['when']!r}"
        try:
            when = utc_when(row["when"])  # the store keeps it in UTC
        except OverflowError:
            return f"when {row['when']!r} is out of range: in UTC it is not between years 1 and 9999"
        now = datetime.now(timezone.utc)
        if datetime.fromisoformat(when) < EARLIEST_RUN:  # it would be the oldest run for good, never a recent one
            return (f"when {row['when']!r} is before {EARLIEST_RUN.year}: the clock of the machine that wrote it was "
                    "probably not set (a board without a real-time clock starts at 1970); fix that clock, or the file")
        if datetime.fromisoformat(when) > now + FUTURE_SLACK:  # it would be the newest run for good
            return (f"when {row['when']!r} is in the future (this machine's clock says "
                    f"{now.isoformat(timespec='seconds')}): a run dated later than every run to come would be read "
                    "as the newest forever; fix the clock of the machine that wrote it, or the file")
    unnamed = [k for k in HOST_KEYS if k not in (row.get("tool_versions") or {})]
    if row["target"] == "cpu" and unnamed:
        return (f"a run of target 'cpu' must name the machine it ran on (tool_versions lacks {', '.join(unnamed)}); "
                "'cpu' is whichever machine runs lgp-edge, so this run would count as this one's: if it ran on this "
                "machine (a file an lgp-edge before 2026-12-05 saved), import it with --this-host")
    return None


def records_json(records: Sequence[LatencyRecord]) -> str:
    return json.dumps({"format": IMPORT_FORMAT, "version": IMPORT_VERSION,
                       "records": [r.to_dict() for r in records]}, indent=1) + "\n"


def save_beside(store_path: Path, records: Sequence[LatencyRecord]) -> Path:
    """Write ``records`` in the import format next to the store (else in the temp directory), atomically."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{store_path.stem}.unsaved-{stamp}-{os.getpid()}.json"
    text = records_json(records)
    for folder in (store_path.parent, Path(tempfile.gettempdir())):
        try:
            return write_text_atomic(folder / name, text)
        except OSError:
            continue
    raise UsageError(f"could not write {len(records)} records to '{store_path}' nor save them anywhere")


def read_records_file(path: str | Path, *, this_host: bool = False) -> list[LatencyRecord]:
    """Records from an import file (``profile --import``); UsageError naming what is wrong. ``this_host``: a run of
    target 'cpu' that names no machine (saved before runs named it) is taken as this machine's and named so."""
    p = Path(path)
    try:
        data = json_loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read '{p}': {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"'{p}' is not JSON ({exc}); --import reads the files written by build_engine.sh "
                         "--time or left beside a store that could not be written") from None
    if not isinstance(data, dict) or data.get("format") != IMPORT_FORMAT:
        raise UsageError(f"'{p}' is not an lgp-edge latency file (expected \"format\": \"{IMPORT_FORMAT}\")")
    if data.get("version") != IMPORT_VERSION:
        raise UsageError(f"'{p}' has format version {data.get('version')!r}; this lgp-edge reads {IMPORT_VERSION}")
    rows = data.get("records")
    if not isinstance(rows, list) or not rows:
        raise UsageError(f"'{p}' holds no records")
    fields = set(LatencyRecord.__dataclass_fields__)
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UsageError(f"'{p}': record {i} is not an object")
        unknown = set(row) - fields
        missing = {"descendant_key", "target", "runtime", "precision", "batch", "median_ms", "p90_ms", "p99_ms",
                   "source", "when"} - set(row)  # when: the run's UTC time, what makes a file imported twice count once
        if unknown or missing:
            raise UsageError(f"'{p}': record {i} has unknown fields {sorted(unknown)} / lacks {sorted(missing)}")
        if this_host and row.get("target") == "cpu" and isinstance(row.get("tool_versions", {}), dict):
            from lgp_edge.profiling.host import host_versions

            row = {**row, "tool_versions": {**host_versions(), **row.get("tool_versions", {})}}
        d = {"mean_ms": row.get("median_ms"), "std_ms": 0.0, "cv": 0.0, "n": 0, "warmup": 0, "threads": 1,
             "tool_versions": {}, **row}
        try:
            rec = LatencyRecord.from_dict(d)
            check_record(rec)  # every field's type and range
        except (TypeError, ValueError) as exc:
            raise UsageError(f"'{p}': record {i}: {exc}; nothing was imported") from None
        problem = import_problem(row)
        if problem:
            raise UsageError(f"'{p}': record {i}: {problem}; nothing was imported")
        out.append(rec)
    return out
