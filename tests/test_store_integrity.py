"""The measurement store as a team uses it for months: other schema versions, hand-edited or damaged rows,
runs under other runtime versions or on other hosts, calibration probes, read-only files, long histories
and files imported twice. Each number a reader takes from the store is either trustworthy or refused."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import error_lines, run_cli

from lgp_edge.errors import UsageError
from lgp_edge.models.plan import enumerate_descendants
from lgp_edge.pool.pool import load_pool, resolve_pool
from lgp_edge.profiling import roofline
from lgp_edge.profiling.host import default_threads, fingerprint_key, host_fingerprint
from lgp_edge.profiling.parts import Part
from lgp_edge.profiling.predict import (
    calibration_probes,
    fit_calibration,
    latencies_for,
    make_predictor,
    probe_key,
    probe_records,
    robust_measured,
)
from lgp_edge.profiling.roofline import parts_of
from lgp_edge.profiling.store import SCHEMA_VERSION, MeasurementStore
from lgp_edge.specs import LatencyRecord
from lgp_edge.targets import load_target

ROOT = Path(__file__).resolve().parent.parent


def rec(key: str = "b6.0-5", *, median: float = 1.0, p90: float | None = None, threads: int = 1,
        versions: dict | None = None, when: str = "2026-01-01T00:00:00+00:00", pool_id: str = "p1",
        noisy: bool = False, target: str = "cpu") -> LatencyRecord:
    return LatencyRecord(descendant_key=key, target=target, runtime="onnxruntime", precision="fp32", batch=1,
                         median_ms=median, p90_ms=p90 if p90 is not None else median * 1.1, p99_ms=median * 20,
                         mean_ms=median, std_ms=0.01, cv=0.3 if noisy else 0.01, n=50, warmup=10, threads=threads,
                         source="measured", when=when, tool_versions=versions or {"onnxruntime": "1.32.0"},
                         pool_id=pool_id, noisy=noisy)


def _store_with_one_run(path: Path) -> None:
    with MeasurementStore(path) as s:
        s.put(rec())


def _store_of_a_newer_lgp_edge(path: Path) -> None:
    _store_with_one_run(path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()


@pytest.fixture(scope="module")
def demo():
    return load_pool(resolve_pool(None))[0]


# ------------------------------------------------------------------------------ schema and damaged rows
def test_a_store_from_a_newer_lgp_edge_is_refused_and_left_as_it_is(tmp_path, capsys):
    path = tmp_path / "newer.sqlite"
    _store_of_a_newer_lgp_edge(path)
    for readonly in (False, True):
        with pytest.raises(UsageError, match="newer lgp-edge"):
            MeasurementStore(path, readonly=readonly)
    rc, err = run_cli(["select", "--target", "cpu", "--store", str(path)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "newer lgp-edge" in err
    rc, err = run_cli(["profile", "--target", "jetson-nano", "--predict", "--store", str(path)], capsys)
    assert rc == 2 and "newer lgp-edge" in err
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1  # never stamped back
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_a_newer_store_in_rollback_journal_mode_is_not_switched_to_wal(tmp_path, capsys):
    """The refusal comes before anything is changed: a newer store kept in rollback-journal mode (as another
    tool may keep it) is not switched to WAL, which rewrites its header."""
    path = tmp_path / "newer.sqlite"
    _store_with_one_run(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = DELETE")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match="newer lgp-edge"):
        MeasurementStore(path)
    rc, err = run_cli(["profile", "--target", "jetson-nano", "--predict", "--store", str(path)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "newer lgp-edge" in err
    assert path.read_bytes() == before and not path.with_name("newer.sqlite-wal").exists()


def test_another_programs_sqlite_file_is_refused_by_writers_and_left_as_it_is(tmp_path, capsys):
    """A mistyped --store naming another program's database: refused in one line by the commands that write
    (as by those that read), with no table added, no schema version stamped and its journal mode kept."""
    path = tmp_path / "contacts.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    db.execute("INSERT INTO contacts VALUES ('a', '1')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match="not an lgp-edge measurement store"):
        MeasurementStore(path)
    rc, err = run_cli(["profile", "--target", "jetson-nano", "--predict", "--store", str(path)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "not an lgp-edge measurement store (tables: contacts)" in err
    assert path.read_bytes() == before and not path.with_name("contacts.sqlite-wal").exists()


def test_a_row_whose_tool_versions_are_not_json_is_one_line(tmp_path, capsys):
    path = tmp_path / "edited.sqlite"
    _store_with_one_run(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET tool_versions = 'not json'")
    db.commit()
    db.close()
    with MeasurementStore(path, readonly=True) as s, pytest.raises(UsageError, match="impossible record"):
        s.records()
    # the row is read where it counts (the spread of the runs at its thread count); elsewhere it is not read
    rc, err = run_cli(["select", "--target", "cpu", "--threads", "1", "--store", str(path)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "tool_versions" in err


@pytest.mark.parametrize("facts", ["garbage", json.dumps({"peak_gflops_fp32": -5.0, "mem_gbps": 20.0,
                                                           "threads": 1, "gemm_n": 512}),
                                   json.dumps({"peak_gflops_fp32": 1e-9, "mem_gbps": 20.0, "threads": 1,
                                               "gemm_n": 512})])
@pytest.mark.parametrize("measured_before", [False, True], ids=["fresh-process", "measured-earlier-in-process"])
def test_an_impossible_host_calibration_is_measured_again_not_used(tmp_path, facts, measured_before, caplog,
                                                                   monkeypatch):
    """A negative peak made every model free; 1e-9 GFLOP/s predicted a billion ms. An unreadable row was left
    in place when this process had measured the host before (another store, or none): replaced in both cases."""
    monkeypatch.setattr(roofline, "_IN_PROCESS", {})
    if measured_before:
        roofline.host_calibration("onnxruntime", 1, None)
    path = tmp_path / "s.sqlite"
    key = fingerprint_key(host_fingerprint("onnxruntime", 1))
    with MeasurementStore(path) as s:
        s.put_host_calibration(key, {"x": 1})
        s._db.execute("UPDATE host_calibration SET facts = ? WHERE fingerprint = ?", (facts, key))
        got = roofline.host_calibration("onnxruntime", 1, s)
        assert 1.0 < got.peak_gflops_fp32 < 1e5 and 0.1 < got.mem_gbps < 1e4  # measured now
        assert "measured again" in caplog.text
        assert s.host_calibration(key)["peak_gflops_fp32"] == got.peak_gflops_fp32  # and it replaced the bad one


# --------------------------------------------------------------------------- what readers aggregate
def test_runs_under_other_runtime_versions_are_not_mixed_into_the_median():
    """Four runs under an older ONNX Runtime outvoted the one just measured under the installed one."""
    old = [rec(median=2.0, versions={"onnxruntime": "1.17.0"}, when=f"2026-01-0{i}T00:00:00+00:00")
           for i in range(1, 5)]
    new = rec(median=0.64, versions={"onnxruntime": "1.32.0"}, when="2026-01-09T00:00:00+00:00")
    (agg,) = robust_measured([*old, new]).values()
    assert agg.median_ms == 0.64 and agg.tool_versions["onnxruntime"] == "1.32.0"
    assert "4 runs under other tool versions left out" in agg.tool_versions["aggregate"]


def test_one_calm_run_beside_noisy_ones_says_the_noisy_ones_were_left_out():
    """One calm run and two noisy ones: the latency note read "one run of 50", hiding the runs left out."""
    import dataclasses

    calm = rec(median=1.0, when="2026-01-01T00:00:00+00:00")
    noisy = [dataclasses.replace(rec(median=3.0, when=f"2026-01-0{i}T00:00:00+00:00"), noisy=True, cv=0.5)
             for i in (2, 3)]
    (agg,) = robust_measured([calm, *noisy]).values()
    assert agg.median_ms == 1.0 and not agg.noisy
    assert agg.tool_versions["aggregate"] == "median of 1 recent run (2 noisy left out)"
    (alone,) = robust_measured([calm]).values()
    assert alone == calm  # a single run is itself


def test_local_runs_record_the_host_they_ran_on(tmp_path):
    """Target 'cpu' is whatever machine ran the profile: a store shared between machines must tell them apart."""
    from lgp_edge.profiling.session import ProfileRequest, run_profile

    res = run_profile(ProfileRequest(target="cpu", runtime="onnxruntime", descendants=("ti6.0-5",), warmup=1,
                                     iters=3, threads=1, store=str(tmp_path / "s.sqlite")))
    (r,) = res.records
    assert r.tool_versions["host_cpu"] == host_fingerprint("onnxruntime", 1)["cpu"]
    assert int(r.tool_versions["host_logical_cpus"]) >= 1


def test_calibration_probes_do_not_decide_the_thread_count_descendants_are_compared_at(demo, tmp_path):
    cpu = load_target("cpu")
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        for key in ("ti6.0-5", "ti6.0-5+b6.5-5", "b6.0-5"):
            s.put(rec(key, median=0.5, threads=1, pool_id=demo.pool_id))
        for p in calibration_probes(demo.spec):  # 12 probes measured at 2 threads by --calibrate
            s.put(rec(probe_key(parts_of(demo.spec, p)), median=0.3, threads=2, pool_id=demo.pool_id))
        got = latencies_for(demo.spec, cpu, "fp32", s)
    assert got["b6.0-5"].source == "measured" and got["b6.0-5"].threads == 1
    assert all(r.threads == 1 for r in got.values())


def test_noisy_calibration_probes_are_left_out_of_the_fit(demo, tmp_path):
    """A probe whose p90 was 13x its median set the p90 of every descendant predicted near its size."""
    probes = calibration_probes(demo.spec)
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        for i, p in enumerate(probes):
            noisy = i < 3
            s.put(rec(probe_key(parts_of(demo.spec, p)), median=0.3, p90=3.9 if noisy else 0.33, noisy=noisy,
                      pool_id=demo.pool_id))
        used = probe_records(s, "cpu", "onnxruntime", "fp32", threads=1)
    assert len(used) == len(probes) and sum(r.noisy for r in used) == 3
    calm_fit = fit_calibration([r for r in used if not r.noisy])
    need = [q for q in (parts_of(demo.spec, d) for d in enumerate_descendants(demo.spec)) if calm_fit.covers(q)]
    with MeasurementStore(tmp_path / "s.sqlite") as s:  # models the calm probes cover are predicted from them alone
        pred = make_predictor(load_target("cpu"), "fp32", "onnxruntime", store=s, threads=1, need=need)
    assert need and pred.kind == "calibrated" and pred.calibration.ident == calm_fit.ident


def test_noisy_probes_a_calibration_kept_are_kept_by_every_later_process(demo, tmp_path):
    """A calibration whose calm probes alone did not cover the descendants kept its noisy ones, and predicted
    with them; a later '--predict' read only the calm ones, fell back, and measured the probes again: the same
    store gave two predictions of one descendant."""
    probes = calibration_probes(demo.spec)
    need = [parts_of(demo.spec, d) for d in enumerate_descendants(demo.spec)]
    recs = [rec(probe_key(parts_of(demo.spec, p)), median=0.3 + 0.01 * i, noisy=i > 0, pool_id=demo.pool_id)
            for i, p in enumerate(probes)]  # one calm probe covers almost nothing
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        s.put_many(recs)
        pred = make_predictor(load_target("cpu"), "fp32", "onnxruntime", store=s, threads=1, need=need)
    assert pred.kind == "calibrated" and pred.calibration.probes == len(probes)
    assert pred.calibration.ident == fit_calibration(recs).ident  # the fit the measuring process made
    with MeasurementStore(tmp_path / "s.sqlite") as s:  # what they do not cover is not predicted from them
        pred = make_predictor(load_target("cpu"), "fp32", "onnxruntime", store=s, threads=1,
                              need=[*need, [Part("block", "block:d999:h1:n17:r4", 1, 1, 1)]])
    assert pred.kind == "roofline"


def test_a_board_measured_from_different_workstations_keeps_one_thread_count(monkeypatch):
    """Board targets without extra.threads took the thread count of the machine that ran lgp-edge."""
    from lgp_edge.profiling import host

    monkeypatch.setattr(host, "usable_cpus", lambda: 16)
    assert default_threads(load_target("jetson-nano")) == 1
    assert default_threads(load_target("jetson-orin-nano")) == 1
    assert default_threads(load_target("raspberry-pi-5")) == 4  # what the target file says
    assert default_threads(load_target("cpu")) == 16  # this machine: all of its cores


# ------------------------------------------------------------------------------ files and history
def _in_read_only_mount(script: str, mount: Path) -> subprocess.CompletedProcess[str]:
    """Run python ``script`` where ``mount`` (a file or a folder) is a read-only bind mount of itself."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a read-only mount")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available here ({probe.stderr.strip()})")
    cmd = (f"mount --bind {mount} {mount} && mount -o remount,ro,bind {mount} && "
           f"exec {sys.executable} -c \"$0\"")
    return subprocess.run(["unshare", "-rm", "sh", "-c", cmd, textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=120)


def _open_store_in_read_only_mount(path, mounted):
    """Open the store at ``path`` with ``mounted`` (the file or its folder) read-only; prints its refusal."""
    out = _in_read_only_mount(f"""
        from lgp_edge.errors import UsageError
        from lgp_edge.profiling.store import MeasurementStore
        try:
            MeasurementStore({str(path)!r})
        except UsageError as exc:
            print("refused:", exc)
        """, mounted)
    assert out.returncode == 0, out.stderr
    return out


def test_a_store_file_that_cannot_be_written_is_refused_before_any_measuring(tmp_path):
    path = tmp_path / "s.sqlite"
    _store_with_one_run(path)
    out = _open_store_in_read_only_mount(path, path)
    assert "refused:" in out.stdout and "cannot be written" in out.stdout


def test_writes_still_in_the_wal_of_a_read_only_folder_are_not_silently_ignored(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "s.sqlite"
    _store_with_one_run(path)
    keep = sqlite3.connect(path)  # a connection that keeps the WAL from being checkpointed at close
    keep.execute("PRAGMA wal_autocheckpoint = 0")
    keep.execute("BEGIN")
    keep.execute("SELECT COUNT(*) FROM runs").fetchall()
    with MeasurementStore(path) as s:
        s.put(rec(median=50.0, when="2026-02-01T00:00:00+00:00"))
    # copy what a reader in another place sees: the database and its WAL, no -shm
    seen = tmp_path / "seen"
    seen.mkdir()
    shutil.copy(path, seen / "s.sqlite")
    shutil.copy(path.with_name("s.sqlite-wal"), seen / "s.sqlite-wal")
    keep.close()
    assert (seen / "s.sqlite-wal").stat().st_size > 0
    out = _in_read_only_mount(f"""
        from lgp_edge.errors import UsageError
        from lgp_edge.profiling.store import MeasurementStore
        try:
            print("medians:", [r.median_ms for r in MeasurementStore({str(seen / 's.sqlite')!r},
                                                                       readonly=True).records()])
        except UsageError as exc:
            print("refused:", exc)
        """, seen)
    assert out.returncode == 0, out.stderr
    # either the newest run is read, or the reader is told why it cannot be: never the old value alone
    assert "medians: [1.0, 50.0]" in out.stdout or ("refused:" in out.stdout and "-wal" in out.stdout), out.stdout


def test_readers_take_only_the_recent_runs_from_a_long_history(demo, tmp_path, monkeypatch):
    """A year of nightly profiles: readers use the 5 newest runs of each model, so they read only those."""
    path = tmp_path / "s.sqlite"
    keys = [d.key for d in demo.descendants()]
    with MeasurementStore(path) as s:
        s.put_many([rec(k, median=1.0 + day / 1000, pool_id=demo.pool_id,
                        when=f"2025-{1 + day // 28:02d}-{1 + day % 28:02d}T00:00:00+00:00")
                    for day in range(300) for k in keys])
    read = []
    real = MeasurementStore._record

    def counting(self, row):
        read.append(1)
        return real(self, row)

    monkeypatch.setattr(MeasurementStore, "_record", counting)
    with MeasurementStore(path, readonly=True) as s:
        got = latencies_for(demo.spec, load_target("cpu"), "fp32", s)
    assert all(r.source == "measured" for r in got.values())
    assert got[keys[0]].median_ms == pytest.approx(1.0 + 297 / 1000)  # median of days 295..299
    assert len(read) <= 5 * len(keys) * 3  # not the 5,400 rows of the whole history (per reader)


def test_importing_the_same_file_twice_adds_its_runs_once(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    f = tmp_path / "runs.json"
    from lgp_edge.profiling.host import host_versions
    from lgp_edge.profiling.store import records_json

    mine = {"onnxruntime": "1.32.0", **host_versions()}  # a run of target 'cpu' names its machine
    f.write_text(records_json([rec("b6.0-5", when="2026-03-01T00:00:00+00:00", versions=mine),
                               rec("ti6.0-5", when="2026-03-01T00:00:00+00:00", versions=mine)]))
    rc, err = run_cli(["profile", "--import", str(f), "--store", str(store)], capsys)
    assert rc == 0 and "imported 2 records" in err
    rc, err = run_cli(["profile", "--import", str(f), "--store", str(store)], capsys)
    assert rc == 0 and "2 already in the store" in err
    with MeasurementStore(store, readonly=True) as s:
        assert s.count() == 2
    # a new run with the same numbers at another time is a new run
    f.write_text(records_json([dataclasses.replace(rec("b6.0-5", versions=mine), when="2026-03-02T00:00:00+00:00")]))
    rc, _ = run_cli(["profile", "--import", str(f), "--store", str(store)], capsys)
    with MeasurementStore(store, readonly=True) as s:
        assert rc == 0 and s.count() == 3


def test_runs_of_another_machine_sharing_the_store_are_not_this_hosts(demo, tmp_path):
    """A later run recorded by another machine was reported as this host's measured latency, and this host's own
    run was the one left out."""
    from lgp_edge.profiling.host import host_versions

    me = {"onnxruntime": "1.32.0", **host_versions()}
    other = {**me, "host_cpu": "Some Other CPU 9000"}
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        s.put(rec("b6.0-5", median=0.2, threads=2, versions=me, pool_id=demo.pool_id))
        s.put(rec("b6.0-5", median=5.0, threads=2, versions=other, pool_id=demo.pool_id,
                  when="2026-02-01T00:00:00+00:00"))
        s.put(rec("ti6.0-5", median=3.0, threads=2, versions=other, pool_id=demo.pool_id))
        got = latencies_for(demo.spec, load_target("cpu"), "fp32", s, threads=2)
    assert got["b6.0-5"].source == "measured" and got["b6.0-5"].median_ms == 0.2
    assert got["ti6.0-5"].source == "predicted"  # measured only elsewhere


def test_a_machine_with_the_same_cpu_name_but_another_cpu_is_not_this_host(demo, tmp_path):
    """A VM shows a generic name ("Intel(R) Xeon(R) Processor", "AMD EPYC Processor") for CPUs with and without
    AMX or VNNI, whose int8 and bf16 latencies differ 2-4x: runs record the family/model/stepping and features,
    and a run of another such CPU is not this host's. Runs that predate the field still count as this host's."""
    from lgp_edge.profiling.host import host_versions

    me = {"onnxruntime": "1.32.0", **host_versions()}
    assert "host_cpu_id" in me or not Path("/proc/cpuinfo").is_file()
    other = {**me, "host_cpu_id": "family 25 model 1 stepping 1; avx2"}
    old = {k: v for k, v in me.items() if k != "host_cpu_id"}
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        s.put(rec("b6.0-5", median=5.0, threads=2, versions=other, pool_id=demo.pool_id))
        s.put(rec("ti6.0-5", median=0.3, threads=2, versions=old, pool_id=demo.pool_id))
        got = latencies_for(demo.spec, load_target("cpu"), "fp32", s, threads=2)
    assert got["b6.0-5"].source == "predicted" and got["ti6.0-5"].source == "measured"


def test_a_batch_nothing_was_measured_at_is_predicted_from_the_batch_1_runs(demo, tmp_path):
    """With calm batch-1 runs stored, a profile at batch 4 was predicted by the bare roofline: ti6.0-5 at 6.3 ms,
    15x four of its measured 0.1 ms images, which pushed b6.0-5 over a 10 ms budget. Scaled to the batch-1 runs
    instead, one image's cost times the batch (an upper bound), and said so."""
    from lgp_edge.profiling.host import host_versions

    me = {"onnxruntime": "1.32.0", **host_versions()}
    measured = {"ti6.0-5": 0.1, "b6.0-5": 0.5}
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        for k, ms in measured.items():
            s.put(rec(k, median=ms, threads=2, versions=me, pool_id=demo.pool_id))
        got = latencies_for(demo.spec, load_target("cpu"), "fp32", s, threads=2, batch=4)
    for k, ms in measured.items():
        assert got[k].source == "predicted" and got[k].median_ms == pytest.approx(4 * ms, rel=1e-6)
    assert "at batch 1, times the batch" in got["ti6.0-5"].tool_versions["scale"]
    assert all(r.batch == 4 and r.median_ms > 0 for r in got.values())


def test_a_gpu_batch_nothing_was_measured_at_is_scaled_to_the_batch_1_runs_whatever_their_thread_count(demo,
                                                                                                       tmp_path):
    """A GPU runtime's thread count says nothing, so its runs are compared whatever count they record; but the
    batch-1 runs a batch-4 prediction is scaled to were still filtered by it: a board's TensorRT runs recorded at
    4 threads left none, and the bare roofline was used."""
    measured = {"ti6.0-5": 0.4, "b6.0-5": 1.5}
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        for k, ms in measured.items():
            s.put(dataclasses.replace(rec(k, median=ms, threads=4, pool_id=demo.pool_id), target="jetson-nano",
                                      runtime="tensorrt", precision="fp16",
                                      tool_versions={"tensorrt": "8.2.1", "machine": "aarch64"}))
        got = latencies_for(demo.spec, load_target("jetson-nano"), "fp16", s, runtime="tensorrt", batch=4)
        ones = latencies_for(demo.spec, load_target("jetson-nano"), "fp16", s, runtime="tensorrt")
    assert all(ones[k].source == "measured" and ones[k].median_ms == ms for k, ms in measured.items())
    for k, ms in measured.items():
        assert got[k].source == "predicted" and got[k].median_ms == pytest.approx(4 * ms, rel=1e-6), got[k]
    assert "at batch 1, times the batch" in got["ti6.0-5"].tool_versions["scale"]


def test_this_hosts_runs_are_not_pushed_out_of_the_recent_window_by_another_machines(demo, tmp_path):
    """The recent-runs window was taken over every machine's runs, then filtered to this host's: five newer runs
    of another machine left none of this host's own, and its measured latency was replaced by a prediction."""
    from lgp_edge.profiling.host import host_versions
    from lgp_edge.profiling.predict import RECENT_RUNS

    me = {"onnxruntime": "1.32.0", **host_versions()}
    other = {**me, "host_cpu": "Some Other CPU 9000"}
    with MeasurementStore(tmp_path / "s.sqlite") as s:
        s.put(rec("b6.0-5", median=0.2, threads=2, versions=me, pool_id=demo.pool_id))
        for day in range(1, RECENT_RUNS + 2):
            s.put(rec("b6.0-5", median=5.0, threads=2, versions=other, pool_id=demo.pool_id,
                      when=f"2026-02-{day:02d}T00:00:00+00:00"))
        got = latencies_for(demo.spec, load_target("cpu"), "fp32", s, threads=2)
    assert got["b6.0-5"].source == "measured" and got["b6.0-5"].median_ms == 0.2


# ------------------------------------------------------------------------- a store that cannot be opened
def _open_limited(path: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """Open the store at ``path`` for writing in a child process whose files may not grow past ``limit`` bytes
    (as on a full disk: EFBIG instead of ENOSPC)."""
    import resource
    import signal

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    script = textwrap.dedent(f"""
        from lgp_edge.errors import LgpEdgeError
        from lgp_edge.profiling.store import MeasurementStore
        try:
            MeasurementStore({str(path)!r}).close()
            print("opened")
        except LgpEdgeError as exc:
            print("refused:", exc)
        """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          preexec_fn=limited, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_new_store_on_a_full_disk_says_what_to_do_and_leaves_no_file(tmp_path):
    """It said only 'database or disk is full' and left a 0-byte store behind."""
    path = tmp_path / "new" / "s.sqlite"
    out = _open_limited(path, 1000)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "file too large" in out.stdout and "--store" in out.stdout, out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_existing_store_on_a_full_disk_says_what_to_do_and_leaves_no_sidecar_files(tmp_path):
    """It said only 'disk I/O error' and left an empty -wal and a 3-byte -shm behind."""
    path = tmp_path / "s.sqlite"
    _store_with_one_run(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert before == ["s.sqlite"]
    out = _open_limited(path, 1000)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "file too large" in out.stdout and "--store" in out.stdout, out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_store_in_a_read_only_folder_says_to_pass_a_writable_store(tmp_path):
    """It said only 'unable to open database file'."""
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "s.sqlite"
    _store_with_one_run(path)
    out = _open_store_in_read_only_mount(path, folder)
    assert "refused:" in out.stdout and "cannot be written" in out.stdout and "writable --store" in out.stdout, \
        out.stdout


def test_a_truncated_store_says_to_move_it_aside(tmp_path, capsys):
    """It said only 'database disk image is malformed'."""
    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as s:
        s.put_many([rec(f"k{i}") for i in range(200)])
    os.truncate(path, 5000)
    before = path.read_bytes()
    with pytest.raises(UsageError, match="damaged") as err:
        MeasurementStore(path)
    assert "move it aside" in str(err.value) and "new store" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"] and path.read_bytes() == before


def test_a_store_damaged_past_its_first_pages_is_refused_before_profile_measures(tiny_pool, tmp_path, capsys):
    """Damage in the data pages (not the header or schema SQLite reads at open) let `profile` measure every model
    first, then fail to write and save the runs beside the store: the refusal README promises came last."""
    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as s:
        s.put_many([rec(f"k{i}") for i in range(2000)])
    data = bytearray(path.read_bytes())
    assert len(data) > 4096 * 8
    data[4096 * 3:4096 * 6] = b"\x5a" * (4096 * 3)
    path.write_bytes(bytes(data))
    rc, err = run_cli(["profile", "--target", "cpu", "--pool", str(tiny_pool), "--descendant", "ti6.0-5", "--iters",
                       "3", "--warmup", "1", "--store", str(path)], capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "is damaged" in lines[0] and "move it aside" in lines[0], err
    assert "measuring" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]


def test_a_reader_of_a_store_another_process_holds_locked_says_so(tmp_path):
    """A store in rollback-journal mode (schema 1, or edited with sqlite3) locked by a writer: a reader waited, then
    read it as immutable, past the lock and whatever the writer had half written, and said nothing."""
    path = tmp_path / "s.sqlite"
    with MeasurementStore(path) as s:
        s.put_many([rec(f"k{i}") for i in range(3)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=delete")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE runs SET median_ms = median_ms * 100, p90_ms = p90_ms * 100, p99_ms = p99_ms * 100")
    try:
        with pytest.raises(UsageError) as err:
            MeasurementStore(path, readonly=True, timeout_s=0.5).records(target="cpu")
        assert "locked by another process" in str(err.value) and str(path) in str(err.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [r.median_ms for r in MeasurementStore(path, readonly=True).records(target="cpu")] == [1.0] * 3


@pytest.mark.parametrize("under", ["s.sqlite", "sub/s.sqlite"])
def test_a_store_under_a_file_is_one_line(under, tmp_path, capsys):
    """`profile --store afile/sub/s.sqlite` ended in a 34-line traceback (removing the store it had not made raised
    NotADirectoryError), and `afile/s.sqlite` said only "[Errno 17] File exists: 'afile'"."""
    (tmp_path / "afile").write_text("x\n")
    rc, err = run_cli(["profile", "--target", "cpu", "--predict", "--store", str(tmp_path / "afile" / under)],
                      capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and f"'{tmp_path / 'afile'}' is a file, not a directory" in lines[0], err
    assert (tmp_path / "afile").read_text() == "x\n"


def test_a_refused_store_read_only_leaves_no_connection_open(tmp_path):
    """A store refused when read (another program's database, a newer schema) kept its SQLite connection, and the
    file descriptor, open until garbage collection: 20 refused selects in a service held 20 more descriptors."""
    import gc

    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE foo (x)")
    db.commit()
    db.close()
    newer = tmp_path / "newer.sqlite"
    _store_of_a_newer_lgp_edge(newer)
    gc.collect()
    gc.disable()  # the descriptors must be closed by the refusal, not by a collection
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(10):
            for path in (other, newer):
                with pytest.raises(UsageError):
                    MeasurementStore(path, readonly=True)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()


def test_a_cpu_without_family_model_stepping_is_identified_by_what_is_known(monkeypatch):
    """On macOS (sysctl gives the features, no family/model/stepping) and on aarch64 Linux every record's
    host_cpu_id read 'family None model None stepping None; asimd,asimddot,i8mm'."""
    from lgp_edge.profiling import host

    facts = {"model": "Apple M2 Pro", "family": None, "model_number": None, "stepping": None,
             "features": ["asimd", "asimddot", "i8mm"], "logical_cpus": 10, "affinity_cpus": 10}
    monkeypatch.setattr(host, "cpu_facts", lambda: facts)
    assert host.host_versions()["host_cpu_id"] == "asimd,asimddot,i8mm"
    facts.update(family="25", model_number="1", stepping="1", features=[])
    assert host.host_versions()["host_cpu_id"] == "family 25 model 1 stepping 1"
    facts.update(features=["avx2"])
    assert host.host_versions()["host_cpu_id"] == "family 25 model 1 stepping 1; avx2"


def test_predicting_on_this_host_from_a_stored_calibration_loads_neither_torch_nor_the_weights(demo, tmp_path):
    """`profile --target cpu --predict` with a stored calibration that covers the pool took 7-10 s: it loaded
    the pool's weights (timm, torch) and the runtime before finding that nothing had to be measured; `select`
    answers from the same store in half a second."""
    from helpers import cli_imports

    store = tmp_path / "s.sqlite"
    with MeasurementStore(store) as s:
        s.put_many([rec(probe_key(parts_of(demo.spec, p)), median=0.3 + 0.02 * len(parts_of(demo.spec, p)),
                        pool_id=demo.pool_id) for p in calibration_probes(demo.spec)])
    got = cli_imports([["profile", "--target", "cpu", "--predict", "--threads", "1", "--store", str(store),
                        "--quiet"]])
    assert got["codes"] == [0], got["errors"]
    assert got["imported"] == [], got["imported"]
    with MeasurementStore(store) as s:
        rows = s.records(target="cpu", source="predicted")
    assert len(rows) == len(list(enumerate_descendants(demo.spec)))
    assert all(r.calibration.startswith("probes:") for r in rows)


def test_a_read_only_store_leaves_no_wal_and_holds_what_it_recorded_in_its_file(tmp_path):
    """`select`, `export` and `report` (read-only stores) left m.sqlite-wal and m.sqlite-shm beside the store, with
    the host calibration select had just measured only in the -wal: a copy of the one file the docs name lost it,
    and the next process measured the host again."""
    path = tmp_path / "m.sqlite"
    with MeasurementStore(path) as s:
        s.put(rec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sqlite"]
    with MeasurementStore(path, readonly=True) as s:
        assert s.count() == 1
        assert s.put_host_calibration("k", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sqlite"]
    copy = tmp_path / "copy" / "m.sqlite"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)  # the file alone, as a backup takes it
    with MeasurementStore(copy, readonly=True) as s:
        assert s.host_calibration("k") == {"x": 1}
    with MeasurementStore(path, readonly=True) as s:  # a reader only
        assert s.count() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "m.sqlite"]


def test_a_read_only_store_reached_through_a_symbolic_link_is_folded_beside_its_file(tmp_path):
    """SQLite opens the link's target, so its -wal lies beside the real file; the fold looked beside the link,
    found none, and left the host calibration in the -wal."""
    real, link = tmp_path / "real" / "m.sqlite", tmp_path / "link" / "m.sqlite"
    real.parent.mkdir()
    link.parent.mkdir()
    with MeasurementStore(real) as s:
        s.put(rec())
    link.symlink_to(real)
    with MeasurementStore(link, readonly=True) as s:
        assert s.put_host_calibration("k", {"x": 1})
    assert sorted(p.name for p in real.parent.iterdir()) == ["m.sqlite"]
    assert sorted(p.name for p in link.parent.iterdir()) == ["m.sqlite"]
