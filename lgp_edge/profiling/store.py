"""The measurement store: one SQLite file (WAL mode) holding every latency run and the host calibrations.

- ``runs``: one row per measurement run (history is kept: profiling again adds rows, it never overwrites
  one), and one row per stored prediction (``source = 'predicted'``, with the calibration it came from).
  Readers take a robust aggregate of the recent runs (``predict.robust_measured``), so one bad run cannot
  decide anything. Calibration runs of the predictor are stored like any measurement, with keys starting
  ``probe:``.
- ``host_calibration``: the measured facts of this machine for one runtime and thread count (GEMM peak,
  bandwidths, last-level cache, run-to-run dispersion), keyed by a fingerprint (CPU model, cores, threads,
  runtime versions), measured once and reused by every later process (``roofline.host_calibration``).

Several profilers may write at once: WAL lets readers run beside one writer, and writers wait
(``busy_timeout``). A write that still cannot be made (another writer holds the lock for longer, a damaged
file) is retried, then the records are saved beside the store in the import format (``latency_file``;
``lgp-edge profile --import FILE``) and ``StoreWriteFailed`` says where: measurements are never lost.

Commands that only read (select, export, report) open the store with ``readonly=True``: a missing file is
an empty store (nothing is created), and a read-only file is only read.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lgp_edge.errors import WRITE_ERRNOS, LgpEdgeError, StoreWriteFailed, UsageError, write_failed
from lgp_edge.fileio import json_loads, write_problem
from lgp_edge.profiling.latency_file import (
    HOST_KEYS,
    IMPORT_FORMAT,
    IMPORT_VERSION,
    check_record,
    now_iso,
    read_records_file,
    records_json,
    save_beside,
    utc_when,
)
from lgp_edge.specs import LatencyRecord

__all__ = ["IMPORT_FORMAT", "IMPORT_VERSION", "SCHEMA_VERSION", "MeasurementStore", "check_record",
           "default_store_path", "read_records_file", "records_json", "save_beside"]

log = logging.getLogger(__name__)

_COLUMNS = ("pool_id", "descendant_key", "target", "runtime", "precision", "batch", "tool_versions", "source",
            "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv", "n", "warmup", "threads", "noisy", "when_utc",
            "calibration")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
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
    calibration    TEXT    NOT NULL DEFAULT ''  -- predicted rows: the calibration they came from
);
CREATE INDEX IF NOT EXISTS runs_target ON runs (target, runtime, precision, pool_id);
CREATE INDEX IF NOT EXISTS runs_model ON runs (descendant_key, when_utc);  -- a run stored already (imports)
CREATE TABLE IF NOT EXISTS host_calibration (
    fingerprint TEXT PRIMARY KEY,  -- hash of the canonical fingerprint JSON
    facts       TEXT NOT NULL,     -- JSON: fingerprint + measured facts
    when_utc    TEXT NOT NULL
);
"""
SCHEMA_VERSION = 3  # 3: every when_utc in UTC (schema 2 kept an imported run's offset)


def default_store_path() -> Path:
    """``$LGP_EDGE_STORE``, else ``$XDG_DATA_HOME/lgp-edge/measurements.sqlite`` (~/.local/share by default)."""
    env = os.environ.get("LGP_EDGE_STORE")
    if env:
        return Path(env).expanduser()
    from lgp_edge.fileio import user_dir

    base = user_dir("XDG_DATA_HOME", ".local/share", "pass --store FILE or set LGP_EDGE_STORE")
    return base / "lgp-edge" / "measurements.sqlite"


def _versions_json(v: Mapping[str, str]) -> str:
    return json.dumps(dict(v), sort_keys=True, separators=(",", ":"))


def _too_long_for_sqlite(path: Path, exc: Exception) -> str | None:
    """Why SQLite (built with its default limits) could not open ``path`` ("unable to open database file") for its
    length, if that is why: it opens paths of at most 512 bytes counting the "-journal" it writes beside the file,
    as given and with its links resolved (it resolves them one by one), and the journal's name must fit in the 255
    bytes of a file name. Asked only after an open failed: another build may allow more."""
    if "unable to open database file" not in str(exc):
        return None
    given, real = os.fsencode(os.path.abspath(path)), os.fsencode(os.path.realpath(path))
    journal = max(len(os.path.basename(given)), len(os.path.basename(real))) + len(b"-journal")
    if journal > 255:
        return (f"its file name is {journal - 8} bytes long, and the journal SQLite writes beside it would have "
                f"{journal}, over the 255 a file name can have")
    full = max(len(given), len(real))
    if full + len(b"-journal") > 512:
        return f"its path is {full} bytes long; SQLite opens paths of at most 512 bytes, its journal's included"
    return None


def _damaged(path: Path, exc: Exception) -> UsageError | None:
    """The error for a store file SQLite finds damaged (truncated, overwritten); None for other errors."""
    if not any(t in str(exc) for t in ("malformed", "not a database")):
        return None
    return damaged_store(path, str(exc))


def damaged_store(path: Path, why: str) -> UsageError:
    return UsageError(f"measurement store '{path}' is damaged ({why}): move it aside (e.g. mv '{path}' "
                      f"'{path}.damaged') and run again; lgp-edge starts a new store")


#: What SQLite says when a write or an open failed for a cause outside it (a full disk, a read-only folder, the
#: file-size limit), which ``write_problem`` then looks for; a locked or busy store, a bad query are not these
_IO_FAILURES = ("disk I/O error", "unable to open database file", "database or disk is full",
                "attempt to write a readonly database")


def _io_failure(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(t in str(exc) for t in _IO_FAILURES)


def _utc_or_as_is(when: str) -> str:
    """A stored run time in UTC (``utc_when``); one that is no time is left as it is, for its reader to refuse."""
    try:
        return utc_when(when)
    except (ValueError, OverflowError, TypeError):
        return when


class MeasurementStore:
    """Latency records in one SQLite file; safe to share between processes.

    ``timeout_s``: how long a write waits for another writer in all (split over ``write_attempts``).
    ``readonly``: never create or change the file (a missing file reads as an empty store).
    """

    write_attempts = 3
    default_timeout_s = 60.0

    def __init__(self, path: str | Path | None = None, *, timeout_s: float | None = None,
                 readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.readonly = readonly
        self.timeout_s = float(timeout_s if timeout_s is not None else self.default_timeout_s)
        self._wait_s = self.timeout_s / self.write_attempts  # one write attempt's wait for another writer
        self._db: sqlite3.Connection | None = None
        self.rows_added = 0  # rows this object has written (``put_many``'s counts)
        self._table = "runs"
        self._when = "when_utc"  # the ORDER BY of run times: in UTC from schema 3 on (older: converted on read)
        self.journal_mode = ""
        if self.path.exists() and self.path.is_dir():
            raise UsageError(f"store '{self.path}' is a directory; pass a file path with --store")
        if readonly:
            self._open_readonly()
            return
        existed = {f: f.exists() for f in (self.path, *self._sidecars())}
        made = [d for d in self.path.parents if not d.exists()]  # innermost first
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=self._wait_s, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(self._wait_s * 1000)}")
            # what the file is, before anything is written to it: a newer store or another program's database
            # is refused as it is (switching it to WAL would already rewrite its header)
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            self._check_version(version)
            self._check_ours(self._tables())
            mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._check_writable(version)
            if version != SCHEMA_VERSION:
                self._migrate()  # only a new or older file is written to on open
            else:  # an index added within schema 2 (CREATE ... IF NOT EXISTS: nothing written when it is there)
                self._db.execute("CREATE INDEX IF NOT EXISTS runs_model ON runs (descendant_key, when_utc)")
        except (sqlite3.DatabaseError, OSError) as exc:
            self._abandon(existed, made)
            raise self._open_failed(exc) from None
        except UsageError:
            self._abandon(existed, made)
            raise
        self.journal_mode = str(mode)

    def _sidecars(self) -> tuple[Path, Path]:
        return self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")

    def _abandon(self, existed: dict[Path, bool], made: list[Path]) -> None:
        """Close a failed open and remove what it created: the store file and its ``-wal`` while empty, the
        ``-shm`` with the ``-wal``, the folders made for them (never a file that was there before it)."""
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        wal, shm = self._sidecars()
        try:
            for f in (wal, self.path):
                if not existed[f] and f.is_file() and f.stat().st_size == 0:
                    f.unlink()
            if not existed[shm] and not wal.exists() and shm.exists():
                shm.unlink()
            for d in made:
                d.rmdir()
        except OSError:  # what cannot be removed, a failed open did not create (or someone else uses now)
            pass

    def _open_failed(self, exc: Exception) -> LgpEdgeError:
        """The one-line error of a failed open, saying what to do: a damaged file is moved aside, a full disk
        freed, an unwritable store replaced by a writable one (SQLite says "disk I/O error" or "unable to open
        database file" for a full disk or a read-only folder: the folder is probed)."""
        damaged = _damaged(self.path, exc)
        if damaged is not None:
            return damaged
        blocker = next((d for d in self.path.parents if d.exists()), None)
        if blocker is not None and not blocker.is_dir():  # mkdir's "File exists" named no cause
            return UsageError(f"cannot open measurement store '{self.path}': '{blocker}' is a file, not a directory; "
                              "pass another --store")
        found: int | None = None
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            found = exc.errno
        elif _io_failure(exc):
            found = write_problem(next(d for d in self.path.parents if d.exists()))
        if found in (errno.EROFS, errno.EACCES):
            return self._unwritable(os.strerror(found))
        if found in WRITE_ERRNOS:
            return write_failed(OSError(found, os.strerror(found)), self.path, "pass another --store")
        too_long = _too_long_for_sqlite(self.path, exc)
        if too_long:
            return UsageError(f"cannot open measurement store '{self.path}': {too_long}: pass a shorter --store")
        return UsageError(f"cannot open measurement store '{self.path}': {exc}; pass another --store")

    def _unwritable(self, why: object) -> UsageError:
        return UsageError(f"measurement store '{self.path}' cannot be written ({why}): profile adds its runs to it; "
                          "pass a writable --store (select, export and report only read)")

    def _check_version(self, version: int) -> None:
        """A store of a newer schema is neither read (its columns may mean something else) nor stamped back."""
        if version > SCHEMA_VERSION:
            raise UsageError(f"measurement store '{self.path}' was written by a newer lgp-edge (schema {version}; "
                             f"this one knows up to {SCHEMA_VERSION}): upgrade lgp-edge, or pass another --store")

    def _check_writable(self, version: int) -> None:
        """SQLite opens a file it cannot write read-only without a word; find out now, not after an hour of
        measuring. A store another writer holds locked is writable (the write waits for it)."""
        assert self._db is not None
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"PRAGMA user_version = {version}")
            finally:
                self._db.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc).replace("-", "").replace(" ", ""):
                raise self._unwritable(exc) from None
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(self._wait_s * 1000)}")

    def _open_readonly(self) -> None:
        if not self.path.exists():
            log.info("measurement store %s does not exist: reading it as empty", self.path)
            return
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            try:
                self._db = sqlite3.connect(uri, uri=True, timeout=self.timeout_s, isolation_level=None)
                tables = self._tables()
            except sqlite3.OperationalError as exc:  # a WAL file in a directory we cannot write: read it as immutable
                if "locked" in str(exc) or "busy" in str(exc):  # a writer holds it: an immutable read would read past
                    self.close()  # the lock, and whatever it has half written
                    raise UsageError(f"measurement store '{self.path}' is locked by another process (waited "
                                     f"{self.timeout_s:g} s): run again once it is done") from None
                self._check_no_pending_wal()
                self._db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
                tables = self._tables()
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            self.close()
            too_long = _too_long_for_sqlite(self.path, exc)
            if too_long:
                raise UsageError(f"cannot read measurement store '{self.path}': {too_long}: move it to a shorter "
                                 "path and pass that --store") from None
            raise _damaged(self.path, exc) or UsageError(f"cannot read measurement store '{self.path}': {exc}") \
                from None
        try:
            self._check_version(version)
            self._check_ours(tables)
        except UsageError:
            self.close()  # refused: its connection (and file descriptor) not left to the garbage collector
            raise
        if "runs" in tables:
            self._table = "runs"
        elif "latency" in tables:  # schema 1, read as is
            self._table = "latency"
        else:
            self._db.close()
            self._db = None  # an empty file: an empty store
            return
        # an older schema is read as it is, its times in UTC (a writer converts the file); a time written in UTC
        # ends in +00:00, as lgp-edge's own measurements always did: when every one does, none is converted
        if version < SCHEMA_VERSION and self._db.execute(
                f"SELECT 1 FROM {self._table} WHERE substr(when_utc, -6) <> '+00:00' LIMIT 1").fetchone():
            self._db.create_function("lgp_utc", 1, _utc_or_as_is, deterministic=True)
            self._when = "lgp_utc(when_utc)"

    def _wal(self) -> Path:
        """The store's ``-wal`` file: beside a link's target, which SQLite opens."""
        real = self.path.resolve()
        return real.with_name(real.name + "-wal")

    def _check_no_pending_wal(self) -> None:
        """An immutable read sees only the main file: runs still in its ``-wal`` would be left out silently."""
        wal = self._wal()
        if wal.exists() and wal.stat().st_size > 0:
            raise UsageError(f"measurement store '{self.path}' has runs not yet merged from '{wal.name}', and its "
                             "folder cannot be written, so they cannot be read: open it once where its folder is "
                             "writable (any 'lgp-edge profile' there merges them), or copy the store with its "
                             f"'{wal.name}' to a writable folder")

    def _check_ours(self, tables: set[str]) -> None:
        """An SQLite file with tables but neither ``runs`` nor schema 1's ``latency`` is another program's."""
        if tables and not {"runs", "latency"} & tables:
            raise UsageError(f"'{self.path}' is an SQLite file but not an lgp-edge measurement store "
                             f"(tables: {', '.join(sorted(tables))}); pass another --store")

    def _tables(self) -> set[str]:
        assert self._db is not None
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _migrate(self) -> None:
        """Create the schema; a schema-1 store (one row per key, replaced on re-profile) becomes history; run times
        an older lgp-edge stored with their file's offset are converted to UTC (schema 3)."""
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            if "latency" in self._tables():
                old = [c for c in _COLUMNS if c != "calibration"]
                self._db.execute(f"INSERT INTO runs ({','.join(old)}) SELECT {','.join(old)} FROM latency "
                                 "ORDER BY when_utc, rowid")
                self._db.execute("DROP TABLE latency")
            # one statement over the table (an UPDATE per distinct time scanned it once per time: minutes on a
            # long history, with the store write-locked)
            self._db.create_function("lgp_utc", 1, _utc_or_as_is, deterministic=True)
            changed = self._db.execute("UPDATE runs SET when_utc = lgp_utc(when_utc) "
                                       "WHERE when_utc <> lgp_utc(when_utc)").rowcount
            if changed:  # one run stored twice under two spellings of its time (imported again): kept once
                cols = ", ".join(_COLUMNS)
                self._db.execute(f"DELETE FROM runs WHERE source = 'measured' AND id NOT IN "
                                 f"(SELECT MIN(id) FROM runs GROUP BY {cols})")
                log.info("store %s: %d run times converted to UTC (schema %d)", self.path, changed, SCHEMA_VERSION)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def exists(self) -> bool:
        """False for a read-only store whose file does not exist (or is empty)."""
        return self._db is not None

    @property
    def older_layout(self) -> bool:
        """A schema-1 store read as it is: a writer (any ``profile``) upgrades it; a reader stores nothing in it."""
        return self._db is not None and self._table != "runs"

    # -------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            if self.readonly:
                self._fold_wal()

    def _fold_wal(self) -> None:
        """A read-only connection cannot checkpoint or remove the ``-wal`` and ``-shm`` files it (or a host
        calibration written beside it) made: a writable connection opened and closed last does, so the store is
        one file again, holding all it has. Left as it is when the file cannot be written or another process
        has it open (SQLite removes them only from the last connection)."""
        real, wal = self.path.resolve(), self._wal()
        if not wal.exists() or not os.access(real, os.W_OK) or not os.access(real.parent, os.W_OK):
            return
        try:
            db = sqlite3.connect(f"file:{quote(str(real))}?mode=rw", uri=True, timeout=0.5,
                                 isolation_level=None)
            try:
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            log.debug("left %s's -wal as it is: %s", self.path, exc)

    def __enter__(self) -> MeasurementStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ writes
    @staticmethod
    def _row(r: LatencyRecord) -> tuple[Any, ...]:
        check_record(r)
        return (r.pool_id, r.descendant_key, r.target, r.runtime, r.precision, int(r.batch),
                _versions_json(r.tool_versions), r.source, float(r.median_ms), float(r.p90_ms), float(r.p99_ms),
                float(r.mean_ms), float(r.std_ms), float(r.cv), int(r.n), int(r.warmup), int(r.threads),
                int(bool(r.noisy)), utc_when(r.when), r.calibration)

    def put(self, record: LatencyRecord) -> None:
        """Add one record (a new run; earlier runs are kept)."""
        self.put_many([record])

    def put_many(self, records: Sequence[LatencyRecord]) -> int:
        """Add records in one transaction (all or nothing); returns how many were added. A stored prediction
        replaces the earlier prediction of the same model from the same calibration; a measurement is added
        unless the store holds the very same run already (a file imported twice counts once).

        When the store stays locked or is damaged, the write is retried ``write_attempts`` times, then the
        records are saved beside the store and ``StoreWriteFailed`` says where."""
        rows = [self._row(r) for r in records]
        if not rows:
            return 0
        if self.readonly or self._db is None:
            raise UsageError(f"measurement store '{self.path}' is open read-only")
        problem = ""
        try:
            for attempt in range(self.write_attempts):
                try:
                    added = self._insert(rows)
                    self.rows_added += added
                    return added
                except sqlite3.OperationalError as exc:  # locked / busy: wait and try again
                    problem = str(exc)
                    log.info("store %s: %s (attempt %d of %d)", self.path, exc, attempt + 1, self.write_attempts)
                    time.sleep(min(1.0, 0.1 * (attempt + 1)))
                except sqlite3.DatabaseError as exc:  # damaged file: retrying will not help
                    problem = str(exc)
                    break
        except BaseException as exc:
            if isinstance(exc, Exception):
                raise
            # Ctrl-C or SIGTERM while waiting for the lock: the process stops, the records are not dropped
            saved = save_beside(self.path, records)
            log.warning("stopped while writing to the measurement store %s: the %d records are saved in %s; "
                        "load them with 'lgp-edge profile --import %s --store PATH'", self.path, len(rows), saved,
                        saved)
            raise
        saved = save_beside(self.path, records)
        raise StoreWriteFailed(
            f"could not write {len(rows)} records to the measurement store '{self.path}' ({problem}); they are "
            f"saved in '{saved}': load them with 'lgp-edge profile --import {saved} --store PATH'", saved)

    def _insert(self, rows: list[tuple[Any, ...]]) -> int:
        assert self._db is not None
        marks = ",".join("?" * len(_COLUMNS))
        same = " AND ".join(f"{c} = ?" for c in _COLUMNS)  # every column is NOT NULL
        stored = f"SELECT 1 FROM runs INDEXED BY runs_model WHERE {same} LIMIT 1"
        added = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                d = dict(zip(_COLUMNS, row))
                if d["source"] == "measured" and self._db.execute(stored, row).fetchone():
                    continue  # this very run is stored already
                if d["source"] == "predicted":
                    self._db.execute("DELETE FROM runs WHERE source = 'predicted' AND pool_id = ? AND "
                                     "descendant_key = ? AND target = ? AND runtime = ? AND precision = ? AND "
                                     "batch = ? AND threads = ? AND calibration = ?",
                                     (d["pool_id"], d["descendant_key"], d["target"], d["runtime"], d["precision"],
                                      d["batch"], d["threads"], d["calibration"]))
                self._db.execute(f"INSERT INTO runs ({','.join(_COLUMNS)}) VALUES ({marks})", row)
                added += 1
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return added

    # ------------------------------------------------------------------------------------------- reads
    @staticmethod
    def _where(**filters: Any) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for col, value in filters.items():
            if value is not None:
                clauses.append(f"{col} = ?")
                args.append(value)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _record(self, row: sqlite3.Row | tuple[Any, ...]) -> LatencyRecord:
        """One row as a record; a row no run can produce (written into the file by hand, or damaged) is refused
        rather than scored."""
        d = dict(zip(_COLUMNS, row))
        try:
            versions = json_loads(d["tool_versions"])
        except (TypeError, ValueError):
            versions = d["tool_versions"]  # refused by check_record below, naming the field
        rec = LatencyRecord(descendant_key=d["descendant_key"], target=d["target"], runtime=d["runtime"],
                            precision=d["precision"], batch=d["batch"], median_ms=d["median_ms"],
                            p90_ms=d["p90_ms"], p99_ms=d["p99_ms"], mean_ms=d["mean_ms"], std_ms=d["std_ms"],
                            cv=d["cv"], n=d["n"], warmup=d["warmup"], threads=d["threads"], source=d["source"],
                            when=d["when_utc"] if self._when == "when_utc" else _utc_or_as_is(d["when_utc"]),
                            tool_versions=versions,
                            pool_id=d["pool_id"], noisy=bool(d["noisy"]), calibration=d["calibration"] or "")
        try:
            check_record(rec)
        except ValueError as exc:
            raise UsageError(f"measurement store '{self.path}' holds an impossible record ({exc}, target "
                             f"{rec.target!r}); move the store aside (profiling again creates a new one)") from None
        return rec

    def _select(self, sql_tail: str, args: list[Any], source: str = "") -> list[Any]:
        if self._db is None:
            return []
        cols = ",".join(c if c != "calibration" or self._table == "runs" else "'' AS calibration" for c in _COLUMNS)
        try:
            return self._db.execute(f"SELECT {cols} FROM {source or self._table} {sql_tail}", args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot read measurement store '{self.path}': {exc}; move it aside (profiling "
                             "again creates a new one)") from None

    def records(self, target: str | None = None, runtime: str | None = None, precision: str | None = None,
                pool_id: str | None = None, *, source: str | None = None, batch: int | None = None,
                recent: int | None = None, descendant_key: str | None = None,
                threads: int | None = None, key_prefix: str | None = None,
                exclude_prefix: bool = False) -> list[LatencyRecord]:
        """Rows matching every given filter, oldest first; ``key_prefix``: only the descendant keys that start with
        it (``exclude_prefix``: only those that do not), filtered by SQLite before ``recent`` ranks the rest (a
        store's history of other models is not read). ``recent``: only the ``recent`` newest
        runs of each (descendant, runtime, precision, batch, source, thread count, machine), selected by SQLite
        (readers aggregate the recent runs, and a store keeps years of history; a store shared between machines
        keeps each machine's recent runs, which newer ones of another machine would push out)."""
        where, args = self._where(target=target, runtime=runtime, precision=precision, pool_id=pool_id,
                                  source=source, batch=batch, descendant_key=descendant_key, threads=threads)
        if key_prefix is not None:
            where += (" AND " if where else "WHERE ") + \
                f"substr(descendant_key, 1, {len(key_prefix)}) {'!=' if exclude_prefix else '='} ?"
            args.append(key_prefix)
        seq = "id" if self._table == "runs" else "rowid"
        if recent is None:
            rows = self._select(f"{where} ORDER BY {self._when}, {seq}", args)
        else:
            machine = ", ".join(f"CASE WHEN json_valid(tool_versions) THEN json_extract(tool_versions, '$.{k}') END"
                                for k in (*HOST_KEYS, "host_cpu_id"))  # a damaged row is refused by its reader
            ranked = (f"(SELECT *, {seq} AS seq_, ROW_NUMBER() OVER (PARTITION BY pool_id, descendant_key, target, "
                      f"runtime, precision, batch, source, threads, {machine} ORDER BY {self._when} DESC, {seq} DESC) "
                      f"AS rank_ FROM {self._table} {where})")
            rows = self._select(f"WHERE rank_ <= ? ORDER BY {self._when}, seq_", [*args, int(recent)], source=ranked)
        return [self._record(r) for r in rows]

    def get(self, descendant_key: str, target: str, runtime: str, precision: str, *, batch: int = 1,
            pool_id: str | None = None, source: str | None = "measured") -> LatencyRecord | None:
        """The newest record for one descendant (any tool versions), or None."""
        where, args = self._where(descendant_key=descendant_key, target=target, runtime=runtime,
                                  precision=precision, batch=batch, pool_id=pool_id, source=source)
        order = f"{self._when} DESC, {'id' if self._table == 'runs' else 'rowid'} DESC"
        rows = self._select(f"{where} ORDER BY {order} LIMIT 1", args)
        return self._record(rows[0]) if rows else None

    def rename_pool(self, old: str, new: str) -> int:
        """Move the rows of pool id ``old`` to ``new`` (a pool whose pool.json records the id an older lgp-edge
        computed for it); the number of rows moved."""
        assert self._db is not None and not self.readonly
        self._db.execute("BEGIN IMMEDIATE")
        try:
            moved = self._db.execute("UPDATE runs SET pool_id = ? WHERE pool_id = ?", (new, old)).rowcount
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return int(moved)

    def count(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0])

    def check_pages(self) -> None:
        """Refuse (UsageError, ``damaged_store``'s) a file damaged past the pages SQLite reads when it opens it (the
        header and the schema): a command that measures before it writes would spend its whole run first. SQLite's
        quick_check reads every page once (a store of 100k runs: well under a second)."""
        if self._db is None:
            return
        try:
            result = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            result = str(exc)
        if result != "ok":
            raise damaged_store(self.path, f"SQLite's quick_check: {result}")

    def integrity_ok(self) -> bool:
        if self._db is None:
            return True
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ------------------------------------------------------------------------------- host calibration
    def host_calibration(self, fingerprint: str) -> dict[str, Any] | None:
        """The stored facts for a host fingerprint key, or None."""
        if self._db is None or self._table != "runs":
            return None
        try:
            row = self._db.execute("SELECT facts FROM host_calibration WHERE fingerprint = ?",
                                   (fingerprint,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) or UsageError(f"cannot read measurement store '{self.path}': {exc}") \
                from None
        if row is None:
            return None
        try:
            facts = json_loads(row[0])
        except (TypeError, ValueError):
            facts = None
        if not isinstance(facts, dict):
            log.warning("the host calibration stored in %s is not readable: measured again", self.path)
            return None
        return facts

    def put_host_calibration(self, fingerprint: str, facts: dict[str, Any]) -> bool:
        """Store (replace) a host calibration. A read-only store records it when its file exists and can be
        written (a calibration is a measurement of the machine, not of the user's models); returns whether
        it was stored."""
        row = (fingerprint, json.dumps(facts, sort_keys=True), now_iso())
        sql = "INSERT OR REPLACE INTO host_calibration (fingerprint, facts, when_utc) VALUES (?, ?, ?)"
        if not self.readonly and self._db is not None:
            try:
                self._db.execute(sql, row)
                return True
            except sqlite3.DatabaseError as exc:
                log.warning("host calibration not stored in %s: %s", self.path, exc)
                return False
        if self._db is None or self._table != "runs":
            return False
        try:
            db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=rw", uri=True, timeout=2.0,
                                 isolation_level=None)
            try:
                db.execute(sql, row)
            finally:
                db.close()
            return True
        except sqlite3.DatabaseError as exc:
            log.info("host calibration not stored in %s (%s): it is measured again by the next process",
                     self.path, exc)
            return False
