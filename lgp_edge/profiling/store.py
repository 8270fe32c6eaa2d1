"""The measurement store: one SQLite file (WAL mode), one row per measurement.

A row is keyed by (pool id, descendant key, target, runtime, precision, batch, tool versions, source), so
re-profiling with the same tools replaces the row, a new runtime version adds one, and a prediction never
overwrites a measurement. Several profilers may write at once: WAL lets readers run beside one writer,
and writers wait (``busy_timeout``) instead of failing.

Calibration runs of the predictor are stored like any measurement, with keys starting ``probe:``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from lgp_edge.errors import UsageError
from lgp_edge.specs import LatencyRecord

_COLUMNS = ("pool_id", "descendant_key", "target", "runtime", "precision", "batch", "tool_versions", "source",
            "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv", "n", "warmup", "threads", "noisy", "when_utc")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    pool_id        TEXT    NOT NULL,
    descendant_key TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    runtime        TEXT    NOT NULL,
    precision      TEXT    NOT NULL,
    batch          INTEGER NOT NULL,
    tool_versions  TEXT    NOT NULL,  -- canonical JSON (sorted keys)
    source         TEXT    NOT NULL CHECK (source IN ('measured', 'predicted')),
    median_ms      REAL    NOT NULL,
    p90_ms         REAL    NOT NULL,
    p99_ms         REAL    NOT NULL,
    mean_ms        REAL    NOT NULL,
    std_ms         REAL    NOT NULL,
    cv             REAL    NOT NULL,
    n              INTEGER NOT NULL,
    warmup         INTEGER NOT NULL,
    threads        INTEGER NOT NULL,
    noisy          INTEGER NOT NULL,
    when_utc       TEXT    NOT NULL,
    PRIMARY KEY (pool_id, descendant_key, target, runtime, precision, batch, tool_versions, source)
);
CREATE INDEX IF NOT EXISTS latency_target ON latency (target, runtime, precision, pool_id);
"""
SCHEMA_VERSION = 1


def default_store_path() -> Path:
    """``$LGP_EDGE_STORE``, else ``$XDG_DATA_HOME/lgp-edge/measurements.sqlite`` (~/.local/share by default)."""
    env = os.environ.get("LGP_EDGE_STORE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "lgp-edge" / "measurements.sqlite"


def _versions_json(v: dict[str, str]) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


class MeasurementStore:
    """Latency records in one SQLite file; safe to share between processes."""

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        if self.path.exists() and self.path.is_dir():
            raise UsageError(f"store '{self.path}' is a directory; pass a file path with --store")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.DatabaseError, OSError) as exc:
            raise UsageError(f"cannot open measurement store '{self.path}': {exc}") from None
        self.journal_mode = str(mode)

    # -------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MeasurementStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ writes
    @staticmethod
    def _row(r: LatencyRecord) -> tuple[Any, ...]:
        if r.source not in ("measured", "predicted"):
            raise ValueError(f"record source must be 'measured' or 'predicted', got {r.source!r}")
        return (r.pool_id, r.descendant_key, r.target, r.runtime, r.precision, int(r.batch),
                _versions_json(r.tool_versions), r.source, float(r.median_ms), float(r.p90_ms), float(r.p99_ms),
                float(r.mean_ms), float(r.std_ms), float(r.cv), int(r.n), int(r.warmup), int(r.threads),
                int(bool(r.noisy)), r.when)

    def put(self, record: LatencyRecord) -> None:
        """Insert a record, replacing the row with the same key (re-profiling)."""
        self.put_many([record])

    def put_many(self, records: list[LatencyRecord]) -> None:
        """Insert records in one transaction (all or nothing)."""
        rows = [self._row(r) for r in records]
        if not rows:
            return
        marks = ",".join("?" * len(_COLUMNS))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(f"INSERT OR REPLACE INTO latency ({','.join(_COLUMNS)}) VALUES ({marks})", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def delete(self, *, target: str, pool_id: str | None = None, runtime: str | None = None) -> int:
        where, args = self._where(target=target, runtime=runtime, precision=None, pool_id=pool_id)
        cur = self._db.execute(f"DELETE FROM latency {where}", args)
        return cur.rowcount

    # ------------------------------------------------------------------------------------------- reads
    @staticmethod
    def _where(**filters: Any) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for col, value in filters.items():
            if value is not None:
                clauses.append(f"{col} = ?")
                args.append(value)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    @staticmethod
    def _record(row: sqlite3.Row | tuple[Any, ...]) -> LatencyRecord:
        d = dict(zip(_COLUMNS, row))
        return LatencyRecord(descendant_key=d["descendant_key"], target=d["target"], runtime=d["runtime"],
                             precision=d["precision"], batch=d["batch"], median_ms=d["median_ms"],
                             p90_ms=d["p90_ms"], p99_ms=d["p99_ms"], mean_ms=d["mean_ms"], std_ms=d["std_ms"],
                             cv=d["cv"], n=d["n"], warmup=d["warmup"], threads=d["threads"], source=d["source"],
                             when=d["when_utc"], tool_versions=json.loads(d["tool_versions"]),
                             pool_id=d["pool_id"], noisy=bool(d["noisy"]))

    def records(self, target: str | None = None, runtime: str | None = None, precision: str | None = None,
                pool_id: str | None = None, *, source: str | None = None, batch: int | None = None,
                latest: bool = False) -> list[LatencyRecord]:
        """Rows matching every given filter, oldest first. ``latest``: one row per (descendant, runtime,
        precision, batch, source), the newest, whatever the tool versions."""
        where, args = self._where(target=target, runtime=runtime, precision=precision, pool_id=pool_id,
                                  source=source, batch=batch)
        rows = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM latency {where} ORDER BY when_utc, rowid",
                                args).fetchall()
        out = [self._record(r) for r in rows]
        if latest:
            newest: dict[tuple[Any, ...], LatencyRecord] = {}
            for r in out:  # ascending time: later rows win
                newest[(r.pool_id, r.descendant_key, r.target, r.runtime, r.precision, r.batch, r.source)] = r
            out = list(newest.values())
        return out

    def get(self, descendant_key: str, target: str, runtime: str, precision: str, *, batch: int = 1,
            pool_id: str | None = None, source: str | None = "measured") -> LatencyRecord | None:
        """The newest record for one descendant (any tool versions), or None."""
        where, args = self._where(descendant_key=descendant_key, target=target, runtime=runtime,
                                  precision=precision, batch=batch, pool_id=pool_id, source=source)
        row = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM latency {where} "
                               "ORDER BY when_utc DESC, rowid DESC LIMIT 1", args).fetchone()
        return None if row is None else self._record(row)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM latency").fetchone()[0])

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
