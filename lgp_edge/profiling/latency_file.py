"""The latency records file: the JSON that ``lgp-edge profile --import`` reads, that ``build_engine.sh --time``
writes on a board, and that a store write which cannot be made leaves beside the store (``save_beside``).

``check_record`` is the rule every stored or imported record passes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from lgp_edge.errors import UsageError
from lgp_edge.fileio import write_text_atomic
from lgp_edge.specs import LatencyRecord

IMPORT_FORMAT = "lgp-edge-latency"  # the JSON files `profile --import` reads and failed writes leave behind
IMPORT_VERSION = 1


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_record(r: LatencyRecord) -> None:
    """Refuse records no run can produce (ValueError naming the field)."""
    if r.source not in ("measured", "predicted"):
        raise ValueError(f"record source must be 'measured' or 'predicted', got {r.source!r}")
    for name in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv"):
        v = getattr(r, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"record {r.descendant_key}: {name} must be a finite number >= 0, got {v!r}")
    if r.median_ms <= 0 or not r.median_ms <= r.p90_ms * (1 + 1e-9) or not r.p90_ms <= r.p99_ms * (1 + 1e-9):
        raise ValueError(f"record {r.descendant_key}: need 0 < median <= p90 <= p99, got {r.median_ms:g}, "
                         f"{r.p90_ms:g}, {r.p99_ms:g}")
    if int(r.batch) < 1 or int(r.threads) < 1 or int(r.n) < 0 or int(r.warmup) < 0:
        raise ValueError(f"record {r.descendant_key}: batch and threads must be >= 1, n and warmup >= 0")
    if not r.descendant_key or not r.target or not r.runtime or not r.precision:
        raise ValueError("record needs descendant_key, target, runtime and precision")


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


def read_records_file(path: str | Path) -> list[LatencyRecord]:
    """Records from an import file (``profile --import``); UsageError naming what is wrong."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
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
             "source"} - set(row)
        if unknown or missing:
            raise UsageError(f"'{p}': record {i} has unknown fields {sorted(unknown)} / lacks {sorted(missing)}")
        d = {"mean_ms": row.get("median_ms"), "std_ms": 0.0, "cv": 0.0, "n": 0, "warmup": 0, "threads": 1,
             "when": now_iso(), "tool_versions": {}, **row}
        if not isinstance(d["tool_versions"], dict):
            raise UsageError(f"'{p}': record {i}: tool_versions must be an object")
        try:
            rec = LatencyRecord.from_dict(d)
            check_record(rec)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"'{p}': record {i}: {exc}") from None
        out.append(rec)
    return out
