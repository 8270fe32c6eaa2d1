"""The SQLite measurement store: WAL, replace on re-profile, filters, concurrent writers."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import pytest

from lgp_edge.errors import UsageError
from lgp_edge.profiling.host import host_versions
from lgp_edge.profiling.store import MeasurementStore, default_store_path
from lgp_edge.specs import LatencyRecord


def rec(key: str = "ti6.0-5", *, median: float = 1.0, source: str = "measured", target: str = "cpu",
        runtime: str = "onnxruntime", versions: dict | None = None, when: str = "2026-01-01T00:00:00+00:00",
        pool_id: str = "p1", batch: int = 1) -> LatencyRecord:
    return LatencyRecord(descendant_key=key, target=target, runtime=runtime, precision="fp32", batch=batch,
                         median_ms=median, p90_ms=median * 1.1, p99_ms=median * 1.3, mean_ms=median, std_ms=0.01,
                         cv=0.01, n=50, warmup=10, threads=2, source=source, when=when,
                         tool_versions=versions or {"onnxruntime": "1.0", **host_versions()}, pool_id=pool_id)


def test_default_path_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("LGP_EDGE_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "lgp-edge" / "measurements.sqlite"



def test_a_relative_xdg_folder_is_ignored_and_no_home_is_one_line(monkeypatch, tmp_path, capsys):
    """A relative XDG_DATA_HOME / XDG_CACHE_HOME put the store and the cache under whatever folder a command ran in
    (the XDG spec: ignore it); with HOME unset for a user the system does not know, '~' stayed '~' and both went
    into a folder named '~' in the current directory."""
    from helpers import run_cli

    from lgp_edge.export import graph_cache

    monkeypatch.delenv("LGP_EDGE_STORE", raising=False)
    monkeypatch.delenv("LGP_EDGE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", "reldata")
    monkeypatch.setenv("XDG_CACHE_HOME", "relcache")
    assert default_store_path() == tmp_path / "home" / ".local" / "share" / "lgp-edge" / "measurements.sqlite"
    assert graph_cache.cache_root() == tmp_path / "home" / ".cache" / "lgp-edge"
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(os.path, "expanduser", lambda p: p)  # as for a user without a passwd entry
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="--store"):
        default_store_path()
    with pytest.raises(UsageError, match="LGP_EDGE_CACHE"):
        graph_cache.cache_root()
    rc, err = run_cli(["cache", "info"], capsys)
    assert rc == 2 and "home directory" in err and len(err.strip().splitlines()) == 1, err
    rc, err = run_cli(["select", "--target", "cpu"], capsys)
    assert rc == 2 and "home directory" in err and "--store" in err, err
    assert sorted(q.name for q in tmp_path.iterdir()) == []


def test_wal_roundtrip_and_history(tmp_path):
    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as s:
        assert s.journal_mode == "wal"
        r = rec()
        s.put(r)
        assert s.get("ti6.0-5", "cpu", "onnxruntime", "fp32") == r
        s.put(dataclasses.replace(r, median_ms=2.0, p90_ms=2.2, p99_ms=2.6, when="2026-01-02T00:00:00+00:00"))
        assert s.count() == 2  # profiling again adds a run: the history is kept
        assert [x.median_ms for x in s.records(target="cpu")] == [1.0, 2.0]
        s.put(rec(versions={"onnxruntime": "2.0"}, median=3.0, when="2026-01-03T00:00:00+00:00"))  # new tools
        assert s.count() == 3
        assert s.get("ti6.0-5", "cpu", "onnxruntime", "fp32").median_ms == 3.0  # newest wins
        assert [x.median_ms for x in s.records(target="cpu")] == [1.0, 2.0, 3.0]  # oldest first
    # a different process view: the file is a real WAL-mode SQLite database
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3


def test_schema_1_store_becomes_history(tmp_path):
    """A store written by the previous schema (one row per key in table 'latency') is migrated in place."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE latency (pool_id TEXT NOT NULL, descendant_key TEXT NOT NULL,
        target TEXT NOT NULL, runtime TEXT NOT NULL, precision TEXT NOT NULL, batch INTEGER NOT NULL,
        tool_versions TEXT NOT NULL, source TEXT NOT NULL, median_ms REAL NOT NULL, p90_ms REAL NOT NULL,
        p99_ms REAL NOT NULL, mean_ms REAL NOT NULL,
        std_ms REAL NOT NULL, cv REAL NOT NULL, n INTEGER NOT NULL, warmup INTEGER NOT NULL, threads INTEGER NOT NULL,
        noisy INTEGER NOT NULL, when_utc TEXT NOT NULL,
        PRIMARY KEY (pool_id, descendant_key, target, runtime, precision, batch, tool_versions, source));
        INSERT INTO latency VALUES ('p1','ti6.0-5','cpu','onnxruntime','fp32',1,'{}','measured',1.0,1.1,1.3,1.0,0.01,
        0.01,50,10,2,0,'2026-01-01T00:00:00+00:00');
        PRAGMA user_version = 1;""")
    db.close()
    with MeasurementStore(path, readonly=True) as ro:  # read as is, not migrated by a reader
        assert [r.median_ms for r in ro.records()] == [1.0]
        assert ro.older_layout
    with MeasurementStore(path) as s:
        assert [r.median_ms for r in s.records()] == [1.0]
        s.put(rec(median=2.0))
        assert s.count() == 2
def test_prediction_never_overwrites_measurement_and_filters(tmp_path):
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        s.put_many([rec(median=1.0), rec(median=9.0, source="predicted"), rec("b6.0-5", runtime="openvino"),
                    rec("b6.0-5", target="jetson-nano", runtime="tensorrt"), rec("x", pool_id="p2", batch=4)])
        assert s.get("ti6.0-5", "cpu", "onnxruntime", "fp32").median_ms == 1.0
        assert s.get("ti6.0-5", "cpu", "onnxruntime", "fp32", source="predicted").median_ms == 9.0
        assert {r.descendant_key for r in s.records(runtime="openvino")} == {"b6.0-5"}
        assert [r.target for r in s.records(target="jetson-nano")] == ["jetson-nano"]
        assert [r.descendant_key for r in s.records(pool_id="p2")] == ["x"]
        assert len(s.records(target="cpu", source="measured")) == 3
        assert s.records(batch=4)[0].batch == 4


def _writer(path: str, worker: int, n: int) -> None:
    with MeasurementStore(path) as s:
        for i in range(n):
            s.put(rec(f"w{worker}-{i}", median=float(i + 1)))


def test_concurrent_profilers_do_not_corrupt(tmp_path):
    path = tmp_path / "shared.sqlite"
    MeasurementStore(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with MeasurementStore(path) as s:
        assert s.integrity_ok()
        assert s.count() == 160
        assert {r.descendant_key for r in s.records()} == {f"w{w}-{i}" for w in range(4) for i in range(40)}


def test_failed_batch_writes_nothing(tmp_path):
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        bad = dataclasses.replace(rec("b"), source="guessed")
        with pytest.raises(ValueError, match="guessed"):
            s.put_many([rec("a"), bad])
        assert s.count() == 0


def test_store_path_is_directory_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="directory"):
        MeasurementStore(Path(tmp_path))


def test_a_store_path_sqlite_cannot_open_for_its_length_says_so(tmp_path):
    """A store path over SQLite's 512 bytes (its "-journal" file's included), or a file name with no room for the
    journal's beside it, was "unable to open database file; pass another --store": which store would open?"""
    deep = tmp_path.joinpath(*["d" * 100] * 5)
    with pytest.raises(UsageError, match=r"its path is \d+ bytes long; SQLite opens paths of at most 512 bytes, "
                                         r"its journal's included: pass a shorter --store"):
        MeasurementStore(deep / "measurements.sqlite")
    assert not tmp_path.joinpath("d" * 100).exists()  # the folders made for it are gone
    with pytest.raises(UsageError, match=r"its file name is 250 bytes long, and the journal SQLite writes beside it "
                                         r"would have 258, over the 255 a file name can have: pass a shorter --store"):
        MeasurementStore(tmp_path / ("m" * 250))
    assert list(tmp_path.iterdir()) == []
    MeasurementStore(tmp_path / ("m" * 247)).close()  # the longest name that works
    # SQLite resolves links: a short link to a deep folder is too long too
    deep = tmp_path.joinpath("real", *["e" * 100] * 5)
    deep.mkdir(parents=True)
    (tmp_path / "short").symlink_to(deep)
    with pytest.raises(UsageError, match=r"its path is \d+ bytes long"):
        MeasurementStore(tmp_path / "short" / "m.sqlite")
    # a store that is there, at a path too long (read by select, export, report): said the same way
    MeasurementStore(tmp_path / "src.sqlite").close()
    (tmp_path / "src.sqlite").rename(deep / "m.sqlite.there")
    with pytest.raises(UsageError, match=r"cannot read measurement store .*: its path is \d+ bytes long; SQLite "
                                         r"opens paths of at most 512 bytes, its journal's included: move it"):
        MeasurementStore(tmp_path / "short" / "m.sqlite.there", readonly=True)


def test_stored_prediction_replaces_only_the_same_calibration(tmp_path):
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        p = dataclasses.replace(rec(source="predicted"), calibration="host:a")
        s.put(p)
        s.put(dataclasses.replace(p, median_ms=1.5, p90_ms=1.6, p99_ms=1.7))
        s.put(dataclasses.replace(p, calibration="host:b"))
        rows = s.records(source="predicted")
        assert sorted((r.calibration, r.median_ms) for r in rows) == [("host:a", 1.5), ("host:b", 1.0)]


# ------------------------------------------------------------------------------ failures keep the records
def test_locked_store_keeps_the_records_beside_it(tmp_path):
    """Another connection holds the write lock: the write is retried, then the records are saved beside the
    store in the import format, and the error says where (nothing is lost, no traceback)."""
    from lgp_edge.errors import StoreWriteFailed
    from lgp_edge.profiling.store import read_records_file

    path = tmp_path / "s.sqlite"
    MeasurementStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a real writer lock, held
    try:
        records = [rec(f"k{i}", median=1.0 + i) for i in range(18)]
        with MeasurementStore(path, timeout_s=0.6) as s:
            with pytest.raises(StoreWriteFailed) as err:
                s.put_many(records)
        msg = str(err.value)
        assert "locked" in msg and "18 records" in msg and "--import" in msg and "\n" not in msg
        saved = err.value.saved_to
        assert saved.parent == tmp_path and str(saved) in msg
        assert read_records_file(saved) == records
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with MeasurementStore(path) as s:  # the lock is gone: the saved file imports
        s.put_many(read_records_file(saved))
        assert s.count() == 18


def test_ctrl_c_while_waiting_for_a_locked_store_keeps_the_records_beside_it(tmp_path, monkeypatch, caplog):
    """A Ctrl-C during the wait for another writer's lock stops the process, and the records are saved beside
    the store and named in a warning, as when the wait runs out: an hour of measurements is not dropped unsaid."""
    import logging

    from lgp_edge.profiling import store as store_mod
    from lgp_edge.profiling.store import read_records_file

    def interrupted(_seconds):
        raise KeyboardInterrupt

    path = tmp_path / "s.sqlite"
    MeasurementStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        records = [rec(f"k{i}", median=1.0 + i) for i in range(3)]
        monkeypatch.setattr(store_mod.time, "sleep", interrupted)
        with caplog.at_level(logging.WARNING, logger="lgp_edge"):
            with MeasurementStore(path, timeout_s=0.2) as s:
                with pytest.raises(KeyboardInterrupt):
                    s.put_many(records)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    saved = sorted(tmp_path.glob("s.unsaved-*.json"))
    assert len(saved) == 1 and read_records_file(saved[0]) == records
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(saved[0]) in m and "3 records" in m and "--import" in m for m in warned), warned


def test_corrupt_page_keeps_the_records_beside_it(tmp_path):
    from lgp_edge.errors import StoreWriteFailed
    from lgp_edge.profiling.store import read_records_file

    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as s:
        s.put_many([rec(f"k{i}", median=1.0 + i) for i in range(400)])
        s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    for off in range(page, len(data)):  # every page but the first (header + schema) is garbage
        data[off] = 0xA5
    path.write_bytes(bytes(data))
    with MeasurementStore(path, timeout_s=0.3) as s:
        with pytest.raises(StoreWriteFailed) as err:
            s.put_many([rec("new")])
    assert "malformed" in str(err.value) and read_records_file(err.value.saved_to) == [rec("new")]


# ------------------------------------------------------------------------------------------- read-only
def test_readonly_store_never_creates_or_writes(tmp_path):
    missing = tmp_path / "no" / "such" / "s.sqlite"
    with MeasurementStore(missing, readonly=True) as s:
        assert not s.exists and s.records() == [] and s.count() == 0 and s.host_calibration("host:x") is None
    assert not missing.exists() and not missing.parent.exists()
    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as s:
        s.put(rec())
    before = path.read_bytes()
    with MeasurementStore(path, readonly=True) as s:
        assert [r.descendant_key for r in s.records()] == ["ti6.0-5"]
        with pytest.raises(UsageError, match="read-only"):
            s.put(rec("x"))
    assert path.read_bytes() == before


def test_import_file_is_validated(tmp_path):
    from lgp_edge.profiling.store import read_records_file, records_json

    good = tmp_path / "t.json"
    good.write_text(records_json([rec()]))
    assert read_records_file(good) == [rec()]
    bad = tmp_path / "b.json"
    for text, needle in (("{", "not JSON"), ('{"format": "x"}', "not an lgp-edge latency file"),
                         (records_json([rec()]).replace('"p90_ms": 1.1', '"p90_ms": 0.5'), "median <= p90"),
                         (records_json([rec()]).replace('"source": "measured"', '"source": "guess"'), "source")):
        bad.write_text(text)
        with pytest.raises(UsageError, match=needle):
            read_records_file(bad)


def test_an_imported_run_dated_in_the_future_is_refused(tmp_path):
    """One imported run dated 2099 was the newest run for good: later runs on this host never replaced it, and its
    tool versions made every real run be left out (a descendant read at 50 ms instead of 0.6 ms)."""
    import dataclasses
    from datetime import datetime, timedelta, timezone

    from lgp_edge.profiling.store import read_records_file, records_json

    f = tmp_path / "t.json"
    soon = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()  # a board's clock a little ahead: taken
    f.write_text(records_json([dataclasses.replace(rec(), when=soon)]))
    assert len(read_records_file(f)) == 1
    f.write_text(records_json([dataclasses.replace(rec(), when="2099-01-01T00:00:00+00:00")]))
    with pytest.raises(UsageError, match="in the future"):
        read_records_file(f)


def test_an_imported_run_dated_by_a_reset_clock_is_refused(tmp_path):
    """A board without a real-time clock (a Raspberry Pi before NTP) dates its runs 1970: imported, such a run
    was the oldest for good and never counted among the recent runs, with no word said."""
    import dataclasses

    from lgp_edge.profiling.store import read_records_file, records_json

    f = tmp_path / "t.json"
    f.write_text(records_json([dataclasses.replace(rec(), when="1970-01-01T00:02:13+00:00")]))
    with pytest.raises(UsageError, match="before 2020.*clock"):
        read_records_file(f)
    f.write_text(records_json([dataclasses.replace(rec(), when="2024-05-01T00:00:00+00:00")]))
    assert len(read_records_file(f)) == 1


def test_runs_are_ordered_by_their_time_whatever_the_offset_they_were_written_with(tmp_path):
    """A board's file with a run at 10:00 UTC and a later one written as 04:00-08:00 (12:00 UTC): the store ordered
    the text, so the older run was read as the newest and the newer runtime's run was left out. Times are stored
    in UTC; a time without an offset is read as UTC."""
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        s.put(rec(median=5.0, when="2026-12-06T10:00:00+00:00"))
        s.put(rec(median=3.0, when="2026-12-06T04:00:00-08:00"))
        s.put(rec(median=4.0, when="2026-12-06T11:30:00+01:00"))  # 10:30 UTC
        s.put(rec(median=6.0, when="2026-12-06 09:00"))
        got = s.records(target="cpu")
        newest = s.records(target="cpu", recent=1)
    assert [r.median_ms for r in got] == [6.0, 5.0, 4.0, 3.0]
    assert [r.when for r in got] == ["2026-12-06T09:00:00+00:00", "2026-12-06T10:00:00+00:00",
                                     "2026-12-06T10:30:00+00:00", "2026-12-06T12:00:00+00:00"]
    assert [r.median_ms for r in newest] == [3.0]


def test_records_are_frozen_all_the_way_down():
    """A measurement record and an export artifact are frozen dataclasses, but their version maps (and an
    artifact's input/output descriptions and quantization) were plain dicts a caller could change after the fact
    and that made the records unhashable."""
    from lgp_edge.specs import ExportArtifact

    r = rec(versions={"onnxruntime": "1.0", "host_cpu": "x", "host_logical_cpus": "2"})
    with pytest.raises(TypeError):
        r.tool_versions["onnxruntime"] = "9.9"  # type: ignore[index]
    assert len({r, dataclasses.replace(r)}) == 1 and r.to_dict()["tool_versions"]["onnxruntime"] == "1.0"
    a = ExportArtifact(path="m.onnx", format="onnx", profile="cpu", descendant_key="ti6.0-5", sha256="0" * 64,
                       inputs=({"name": "pixel_values", "shape": [1, 1, 28, 28]},), outputs=({"name": "logits"},),
                       validation=None, versions={"onnx": "1.0"}, quantization={"method": "qdq"})
    for m in (a.inputs[0], a.outputs[0], a.versions, a.quantization):
        with pytest.raises(TypeError):
            m["x"] = 1  # type: ignore[index]
    assert hash(a) == hash(dataclasses.replace(a))
    assert a.to_dict()["inputs"] == [{"name": "pixel_values", "shape": [1, 1, 28, 28]}]


def test_a_user_the_system_does_not_know_without_home_gets_one_line(tmp_path):
    """HOME unset for a user with no passwd entry (a container's arbitrary uid): OpenVINO's import raised pathlib's
    RuntimeError (a traceback, exit 1), and the store and cache went into a folder named '~' in the current one."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "--map-user=12345", "true"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("no user namespaces here to run as a user the system does not know")
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "LGP_EDGE_STORE", "LGP_EDGE_CACHE")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    base = ["unshare", "--user", "--map-user=12345", "--map-group=12345", sys.executable, "-m", "lgp_edge"]
    for argv, phrase in ((["select", "--target", "cpu"], "--store"),
                         (["profile", "--target", "cpu", "--runtime", "openvino", "--descendant", "ti6.0-5",
                           "--iters", "1", "--warmup", "0", "--store", str(work / "s.sqlite")], "set HOME")):
        done = subprocess.run([*base, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and phrase in done.stderr and "home directory" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (work / "~").exists()


def _columns(db: sqlite3.Connection) -> list[str]:
    return [r[1] for r in db.execute("PRAGMA table_info(runs)")]


def _schema_2_store_with_local_times(path: Path) -> None:
    """A store as lgp-edge wrote it before times were stored in UTC (schema 2): an imported run kept its offset."""
    with MeasurementStore(path) as s:
        s.put_many([rec(median=2.2, versions={"tensorrt": "8.2.1"}, when="2026-12-06T06:00:00+00:00"),
                    rec(median=1.0, key="b6.0-5", when="2026-12-05T09:00:00+00:00")])
    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET when_utc = '2026-12-06T10:00:00+04:00' WHERE when_utc = '2026-12-06T06:00:00+00:00'")
    db.execute("UPDATE runs SET when_utc = '2026-12-05T09:00:00Z' WHERE when_utc = '2026-12-05T09:00:00+00:00'")
    db.execute("INSERT INTO runs SELECT NULL, " + ", ".join(c for c in _columns(db) if c != "id")
               + " FROM runs WHERE when_utc = '2026-12-05T09:00:00Z'")  # imported again by schema 2: twice
    db.execute("UPDATE runs SET when_utc = '2026-12-05T09:00:00+00:00' WHERE id = (SELECT MAX(id) FROM runs)")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()


def test_times_an_older_lgp_edge_stored_with_their_offset_are_read_and_kept_in_utc(tmp_path):
    """Before run times were stored in UTC, an imported run kept its file's offset ("10:00+04:00" is 06:00Z): such a
    row sorted as text after a later "07:00+00:00" run and was taken for the newest, its old TensorRT's 2.2 ms
    reported as measured over the newer run's 5.5 ms; a run stored as "09:00:00Z", imported again, was added a
    second time as "09:00:00+00:00". The store moves to schema 3 with every time in UTC; a reader of an older
    store reads them in UTC without writing it."""
    from lgp_edge.profiling.predict import robust_measured

    path = tmp_path / "old.sqlite"
    _schema_2_store_with_local_times(path)
    newer = rec(median=5.5, versions={"tensorrt": "8.5.2"}, when="2026-12-06T07:00:00Z")
    with MeasurementStore(path, readonly=True) as ro:  # a reader: nothing written, times read in UTC
        assert [r.when for r in ro.records()] == ["2026-12-05T09:00:00+00:00", "2026-12-05T09:00:00+00:00",
                                                  "2026-12-06T06:00:00+00:00"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
    with MeasurementStore(path) as s:
        assert s.put_many([newer, rec(median=1.0, key="b6.0-5", when="2026-12-05T09:00:00Z")]) == 1
        rows = s.records(recent=5)
    assert [r.median_ms for r in rows] == [1.0, 2.2, 5.5]  # oldest first, by the time they ran
    (agg,) = [r for r in robust_measured(rows).values() if r.descendant_key == "ti6.0-5"]
    assert agg.median_ms == 5.5
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert {w for (w,) in db.execute("SELECT when_utc FROM runs")} == {
        "2026-12-05T09:00:00+00:00", "2026-12-06T06:00:00+00:00", "2026-12-06T07:00:00+00:00"}


def test_a_schema_2_store_already_in_utc_is_read_without_converting_each_time(tmp_path):
    """Reading a schema-2 store converted every row's time in Python (3.6 s instead of 1.8 s at 200,000 rows) even
    when all of them were written in UTC already (as lgp-edge's own measurements always were)."""
    path = tmp_path / "utc.sqlite"
    with MeasurementStore(path) as s:
        s.put_many([rec(median=1.0, when="2026-12-05T09:00:00+00:00"), rec(median=2.0, when="2026-12-06T09:00:00Z")])
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with MeasurementStore(path, readonly=True) as ro:
        assert ro._when == "when_utc" and [r.median_ms for r in ro.records()] == [1.0, 2.0]
    _schema_2_store_with_local_times(tmp_path / "local.sqlite")
    with MeasurementStore(tmp_path / "local.sqlite", readonly=True) as ro:
        assert ro._when != "when_utc"
