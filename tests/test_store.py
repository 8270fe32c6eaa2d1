"""The SQLite measurement store: WAL, replace on re-profile, filters, concurrent writers."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import sqlite3
from pathlib import Path

from lgp_edge.profiling.store import MeasurementStore, default_store_path
from lgp_edge.specs import LatencyRecord


def rec(key: str = "ti6.0-5", *, median: float = 1.0, source: str = "measured", target: str = "cpu",
        runtime: str = "onnxruntime", versions: dict | None = None, when: str = "2026-01-01T00:00:00+00:00",
        pool_id: str = "p1", batch: int = 1) -> LatencyRecord:
    return LatencyRecord(descendant_key=key, target=target, runtime=runtime, precision="fp32", batch=batch,
                         median_ms=median, p90_ms=median * 1.1, p99_ms=median * 1.3, mean_ms=median, std_ms=0.01,
                         cv=0.01, n=50, warmup=10, threads=2, source=source, when=when,
                         tool_versions=versions or {"onnxruntime": "1.0"}, pool_id=pool_id)


def test_default_path_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("LGP_EDGE_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "lgp-edge" / "measurements.sqlite"


def test_wal_roundtrip_and_replace(tmp_path):
    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as s:
        assert s.journal_mode == "wal"
        r = rec()
        s.put(r)
        assert s.get("ti6.0-5", "cpu", "onnxruntime", "fp32") == r
        s.put(dataclasses.replace(r, median_ms=2.0, when="2026-01-02T00:00:00+00:00"))  # re-profile: replaces
        assert s.count() == 1 and s.get("ti6.0-5", "cpu", "onnxruntime", "fp32").median_ms == 2.0
        s.put(rec(versions={"onnxruntime": "2.0"}, median=3.0, when="2026-01-03T00:00:00+00:00"))  # new tools
        assert s.count() == 2
        assert s.get("ti6.0-5", "cpu", "onnxruntime", "fp32").median_ms == 3.0  # newest wins
        assert len(s.records(target="cpu", latest=True)) == 1
    # a different process view: the file is a real WAL-mode SQLite database
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM latency").fetchone()[0] == 2


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
        try:
            s.put_many([rec("a"), bad])
        except ValueError:
            pass
        assert s.count() == 0


def test_store_path_is_directory_is_usage_error(tmp_path):
    import pytest

    from lgp_edge.errors import UsageError

    with pytest.raises(UsageError, match="directory"):
        MeasurementStore(Path(tmp_path))
