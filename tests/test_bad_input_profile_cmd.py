"""``lgp-edge profile`` bad input found by fuzzing: measurement settings out of range (threads, batch, iters,
seconds, warmup, rounds) and import files with wrong fields. Each must give exit 2 and one line on stderr
naming the flag or the record field, write nothing (no store, no temp directory) and never a traceback."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest
from helpers import error_lines, make_tiny_pool, run_cli

from lgp_edge.pool.pool import load_pool

KEY = "ti6.0-5"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pool(tmp_path_factory.mktemp("pool") / "pool")


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A store path that does not exist yet and a private temp directory (both must stay empty)."""
    store = tmp_path / "store.sqlite"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("LGP_EDGE_STORE", str(store))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return {"store": store, "tmp": tmp, "root": tmp_path}


@pytest.fixture()
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad settings must be refused before anything is timed (today some of them hang or crash in the runtime)."""
    from lgp_edge.profiling import measure

    def refuse(*a: object, **k: object) -> list[float]:
        raise AssertionError("measured although the settings are bad input")

    monkeypatch.setattr(measure, "_series", refuse)


def assert_refused(rc: int, err: str, needle: str, env: dict[str, Path]) -> str:
    lines = error_lines(err)
    assert rc == 2, err
    assert len(lines) == 1, lines
    assert "Traceback" not in err and needle in lines[0], lines[0]
    assert not env["store"].exists(), "a refused command created the store"
    assert list(env["tmp"].iterdir()) == [], "a refused command left a temporary directory"
    return lines[0]


def _profile(pool: Path, *extra: str) -> list[str]:
    return ["profile", "--target", "cpu", "--pool", str(pool), "--descendant", KEY, "--runtime", "torch",
            "--warmup", "0", "--iters", "1", "--quiet", *extra]


# ---------------------------------------------------------------------------------- 1-3: settings ranges
@pytest.mark.parametrize("extra, needle", [
    (["--threads", "100000"], "--threads"),
    (["--threads", "257"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--batch", "100000000"], "--batch"),
    (["--batch", "4097"], "--batch"),
    (["--batch", "0"], "--batch"),
    (["--seconds", "nan"], "--seconds"),
    (["--seconds", "inf"], "--seconds"),
    (["--seconds", "-1"], "--seconds"),
    (["--seconds", "3601"], "--seconds"),
    (["--iters", "100000000000000000000"], "--iters"),
    (["--iters", "0"], "--iters"),
    (["--warmup", "100000000000000000000"], "--warmup"),
    (["--warmup", "-1"], "--warmup"),
    (["--rounds", "100000000"], "--rounds"),
    (["--rounds", "0"], "--rounds"),
])
def test_profile_settings_out_of_range_are_refused(pool, env, no_measuring, capsys, extra, needle):
    rc, err = run_cli(_profile(pool, *extra), capsys)
    line = assert_refused(rc, err, needle, env)
    assert "max_series" not in line  # not a flag


def test_profile_threads_beyond_this_hosts_cpus_are_refused(pool, env, no_measuring, capsys):
    from lgp_edge.profiling.host import usable_cpus

    n = usable_cpus()
    if n >= 256:
        pytest.skip("this host has 256 CPUs or more")
    rc, err = run_cli(_profile(pool, "--threads", str(n + 1)), capsys)
    assert str(n) in assert_refused(rc, err, "--threads", env)


@pytest.mark.parametrize("extra", [["--seconds", "3"], ["--rounds", "5"]])
def test_timing_settings_a_board_cannot_honour_are_refused(pool, env, no_measuring, capsys, extra):
    """`profile --target raspberry-pi-5 --seconds 3` timed --iters runs on the board (10 runs, 2 ms) and said
    nothing; --rounds was dropped the same way. A board's bench script times a count of runs of one model."""
    argv = ["profile", "--target", "raspberry-pi-5", "--pool", str(pool), "--descendant", KEY, "--iters", "10",
            "--quiet", *extra]
    rc, err = run_cli(argv, capsys)
    line = assert_refused(rc, err, extra[0], env)
    assert "board" in line and "--iters" in line


def test_profile_settings_at_the_bounds_still_measure(pool, env, capsys, monkeypatch):
    import sqlite3

    import torch

    from lgp_edge.cli import main
    from lgp_edge.profiling.runtimes.torch import TorchRuntime

    seen: list[tuple[tuple[int, ...], int]] = []  # (input shape, torch threads) of every timed inference
    real_prepare = TorchRuntime.prepare

    def prepare(self, model, example, *a, **k):
        prepared = real_prepare(self, model, example, *a, **k)
        run = prepared.run

        def spy() -> object:
            seen.append((tuple(example.shape), torch.get_num_threads()))
            return run()

        prepared.run = spy
        return prepared

    monkeypatch.setattr(TorchRuntime, "prepare", prepare)
    capsys.readouterr()
    rc = main(_profile(pool, "--threads", "1", "--batch", "2", "--seconds", "0.01", "--json"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert env["store"].exists() and list(env["tmp"].iterdir()) == []
    # what was measured is what was asked: a batch of 2 images on 1 thread
    assert seen and {(len(s), s[0]) for s, _ in seen} == {(4, 2)} and {t for _, t in seen} == {1}
    (rec,) = json.loads(out)["records"]
    assert (rec["descendant_key"], rec["source"], rec["batch"], rec["threads"]) == (KEY, "measured", 2, 1)
    db = sqlite3.connect(f"file:{env['store']}?mode=ro", uri=True)  # the real SQLite file, not the library's view
    try:
        rows = db.execute("SELECT descendant_key, source, batch, threads FROM runs").fetchall()
    finally:
        db.close()
    assert rows == [(KEY, "measured", 2, 1)]


# ---------------------------------------------------------------------------------------- 4: --import
HOST = {"host_cpu": "Some CPU", "host_logical_cpus": "8"}  # a run of target 'cpu' names its machine


DROP = object()  # a field _records_file leaves out of record 1


def _records_file(path: Path, pid: str, **change: object) -> Path:
    rec = {"descendant_key": KEY, "target": "cpu", "runtime": "onnxruntime", "precision": "fp32", "batch": 1,
           "median_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "source": "measured", "pool_id": pid,
           "tool_versions": {"onnxruntime": "1.17", **HOST}, "when": "2026-01-01T00:00:00+00:00"}
    changed = {k: v for k, v in {**rec, **change}.items() if v is not DROP}  # record 1; record 0 is a good one
    path.write_text(json.dumps({"format": "lgp-edge-latency", "version": 1, "records": [rec, changed]}))
    return path


@pytest.mark.parametrize("field, value", [
    ("batch", 1e30), ("batch", 10 ** 23), ("batch", 1.7), ("batch", True), ("batch", 0), ("batch", 4097),
    ("target", "nope"), ("precision", "bogus"), ("runtime", "bogus"), ("descendant_key", "zzz"),
    ("descendant_key", ""), ("descendant_key", 5), ("when", 12), ("when", "yesterday"), ("noisy", "yes"),
    ("threads", 10 ** 23), ("threads", 2.5), ("n", 10 ** 23), ("n", -1), ("warmup", 1e30),
    ("median_ms", 1e30), ("median_ms", "1"), ("cv", True), ("pool_id", 7), ("tool_versions", {"x": 1}),
    ("calibration", 3), ("precision", "fp16"),  # cpu does not compute in fp16
    ("when", DROP),  # a record without its time was stamped with the import's, and a second import added it again
    ("when", "9999-12-31T23:59:59-01:00"),  # past year 9999 in UTC: a traceback, exit 1, a store created
])
def test_import_refuses_every_bad_field(pool, env, capsys, field, value):
    pool_id = load_pool(pool)[0].pool_id
    f = _records_file(env["root"] / "t.json", pool_id, **{field: value})
    rc, err = run_cli(["profile", "--import", str(f), "--store", str(env["store"])], capsys)
    line = assert_refused(rc, err, "record 1", env)
    assert field in line


def test_import_with_pool_refuses_keys_and_pool_ids_not_of_that_pool(pool, env, capsys):
    pool_id = load_pool(pool)[0].pool_id
    for name, change in (("descendant_key", {"descendant_key": "ti6.0-4+zz9.9-9"}),
                         ("pool_id", {"pool_id": "0123456789ab"})):
        f = _records_file(env["root"] / "t.json", pool_id, **change)
        rc, err = run_cli(["profile", "--import", str(f), "--pool", str(pool), "--store", str(env["store"])],
                          capsys)
        assert name in assert_refused(rc, err, "record 1", env)


def test_import_of_a_good_file_still_works(pool, env, capsys):
    pool_id = load_pool(pool)[0].pool_id
    f = _records_file(env["root"] / "t.json", pool_id, descendant_key="b6.0-5", batch=2, noisy=True,
                      when="2026-01-01T00:00:00+00:00", tool_versions={"onnxruntime": "1.16", **HOST})
    rc, err = run_cli(["profile", "--import", str(f), "--pool", str(pool), "--store", str(env["store"])], capsys)
    assert rc == 0, err
    assert list(env["tmp"].iterdir()) == []
    from lgp_edge.profiling.store import MeasurementStore

    with MeasurementStore(env["store"], readonly=True) as s:
        assert sorted(r.descendant_key for r in s.records()) == ["b6.0-5", KEY]
    # --json: what was imported, on stdout (it printed nothing there), the second time none added again
    from lgp_edge.cli import main

    capsys.readouterr()
    assert main(["profile", "--import", str(f), "--pool", str(pool), "--store", str(env["store"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["store"] == str(env["store"]) and out["records"] == 2 and out["added"] == 0
    assert out["already_in_store"] == 2 and sorted(r["descendant_key"] for r in out["imported"]) == ["b6.0-5", KEY]


# the ISO 8601 forms a record's "when" may take, judged alike on every supported Python (3.10's
# datetime.fromisoformat refuses "Z" and one-digit fractions, 3.11's accepts the basic format and week dates)
WHEN_ACCEPTED = ("2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z",
                 "2026-01-01T00:00:00.123+02:00", "2026-01-01T00:00:00.123456-05:30", "2026-01-01 00:00:00Z",
                 "2026-01-01T00:00:00", "2026-01-01T00:00", "2026-01-01T00:00Z", "2026-01-01")
WHEN_REFUSED = ("20260101T000000Z", "2026-W01-1", "2026-001", "2026-01-01T00:00:00,5+00:00", "2026-01-01T00:00:00z",
                "2026-01-01T00:00:00+0000", "2026-01-01T00:00:00+00", "2026-01-01T00:00:00+00:00:00",
                "2026-01-01T00:00:00.1234567Z", "2026-01-01x00:00:00", "2026-01-01T00", "2026-13-01T00:00:00Z",
                "2026-01-01T24:00:00Z", "2026-01-01T00:00:00+24:00", " 2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z\n",
                "\u0662\u0660\u0662\u0666-01-01", "")


def test_when_is_judged_alike_on_every_python() -> None:
    from lgp_edge.profiling.latency_file import import_problem

    for when in WHEN_ACCEPTED:
        assert import_problem({"target": "jetson", "when": when}) is None, when
    for when in WHEN_REFUSED:
        problem = import_problem({"target": "jetson", "when": when})
        assert problem and problem.startswith("when must be an ISO 8601 time"), when


def test_a_when_that_leaves_the_calendar_in_utc_is_refused() -> None:
    """A time in the file's offset that is past year 9999 (or before year 1) in UTC crashed the import when the
    store converted it (OverflowError: a traceback, exit 1, the store created)."""
    from lgp_edge.profiling.latency_file import import_problem

    for when in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+23:59"):
        problem = import_problem({"target": "jetson", "when": when})
        assert problem and "out of range" in problem and when in problem, when


def test_import_takes_a_when_in_utc_with_z(pool, env, capsys):
    """What lgp-edge's own pool records write ("...Z") imports on Python 3.10 as on 3.11."""
    pool_id = load_pool(pool)[0].pool_id
    f = _records_file(env["root"] / "t.json", pool_id, when="2026-01-01T00:00:00.5Z")
    rc, err = run_cli(["profile", "--import", str(f), "--store", str(env["store"])], capsys)
    assert rc == 0, err


# ------------------------------------------------------------------------------- 5: host calibration note
def test_calibration_note_names_the_missing_store_and_how_to_create_it(env, monkeypatch, caplog):
    from lgp_edge.profiling import roofline
    from lgp_edge.profiling.store import MeasurementStore

    fake = roofline.HostFacts(peak_gflops_fp32=100.0, mem_gbps=10.0, threads=1, gemm_n=512)
    monkeypatch.setattr(roofline, "measure_host", lambda runtime, threads, gemm_n=512: fake)
    monkeypatch.setattr(roofline, "_IN_PROCESS", {})
    with caplog.at_level(logging.WARNING), MeasurementStore(env["store"], readonly=True) as store:
        assert roofline.host_calibration("torch", 1, store) == fake
    text = " ".join(r.getMessage() for r in caplog.records)
    assert str(env["store"]) in text and "does not exist or is empty" in text and "--calibrate" in text
    assert "no writable store" not in text
    assert not env["store"].exists()  # read-only commands never create the store (by design)


def test_runtime_out_of_memory_is_one_line_and_leaves_no_temp_dir(pool, env, monkeypatch, capsys):
    """Within the bounds a runtime may still refuse (a big model at a big batch): one line, exit 2, no
    temporary directory, nothing stored."""
    from lgp_edge.profiling.runtimes.torch import TorchRuntime

    def oom(self, prepared, settings):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(TorchRuntime, "measure", oom)
    rc, err = run_cli(_profile(pool, "--batch", "8"), capsys)
    assert "--batch" in assert_refused(rc, err, "can't allocate memory", env)


def test_import_of_a_cpu_run_that_names_no_machine_is_refused(pool, env, capsys):
    """Target 'cpu' is whichever machine runs lgp-edge: a run that does not say which machine it was measured on
    counted as this machine's (select showed another machine's 0.001 ms as 'measured' here)."""
    pool_id = load_pool(pool)[0].pool_id
    f = _records_file(env["root"] / "t.json", pool_id, tool_versions={"onnxruntime": "1.17"})
    rc, err = run_cli(["profile", "--import", str(f), "--store", str(env["store"])], capsys)
    assert "host_cpu" in assert_refused(rc, err, "record 1", env)


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _schema_1(path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE latency (pool_id TEXT, when_utc TEXT); PRAGMA user_version = 1;")
    db.close()


@pytest.mark.parametrize(("make", "says"), [
    (_empty_file, "does not exist or is empty"),
    (_schema_1, "older lgp-edge, which commands that only read do not upgrade (any 'lgp-edge profile' upgrades it)"),
], ids=["empty", "schema-1"])
def test_calibration_note_says_why_a_store_that_can_be_written_holds_no_calibration(make, says, env, monkeypatch,
                                                                                     caplog, tmp_path):
    """An empty store file, and a schema-1 store (which a reader does not upgrade, so every select measured the
    host again): the note said the writable store 'could not be written'."""
    from lgp_edge.profiling import roofline
    from lgp_edge.profiling.store import MeasurementStore

    path = tmp_path / "store.sqlite"
    make(path)
    fake = roofline.HostFacts(peak_gflops_fp32=100.0, mem_gbps=10.0, threads=1, gemm_n=512)
    monkeypatch.setattr(roofline, "measure_host", lambda runtime, threads, gemm_n=512: fake)
    monkeypatch.setattr(roofline, "_IN_PROCESS", {})
    with caplog.at_level(logging.WARNING), MeasurementStore(path, readonly=True) as store:
        assert roofline.host_calibration("torch", 1, store) == fake
    text = " ".join(r.getMessage() for r in caplog.records)
    assert says in text and "could not be written" not in text


def test_a_stopped_profile_keeps_the_new_store_another_process_has_open(pool: Path, env: dict[str, Path],
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """The run that created a store is stopped while a second profile (another process) has the store open: the
    empty store is kept, so the second run's measurements land in the file at the path, not in an unlinked one."""
    import subprocess
    import sys

    from lgp_edge.profiling import measure
    from lgp_edge.profiling.store import MeasurementStore

    script = ("import sys\nfrom lgp_edge.profiling.store import MeasurementStore\n"
              "s = MeasurementStore(sys.argv[1])\nprint('open', flush=True)\nsys.stdin.readline()\n"
              "s._db.execute(\"INSERT INTO host_calibration VALUES ('fp', '{}', '2026-12-06T00:00:00Z')\")\n"
              "s.close()\n")
    others: list[subprocess.Popen] = []

    def stop(*a: object, **k: object) -> list[float]:  # Ctrl-C while measuring, once another run has opened it
        assert env["store"].exists()  # created by this run
        others.append(subprocess.Popen([sys.executable, "-c", script, str(env["store"])], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True))
        assert others[0].stdout is not None and others[0].stdout.readline() == "open\n"
        raise KeyboardInterrupt

    monkeypatch.setattr(measure, "_series", stop)
    try:
        rc, err = run_cli(_profile(pool), capsys)
        assert rc == 130, err
        assert env["store"].exists(), "the stopped run removed a store another process had open"
    finally:
        for other in others:
            other.communicate("\n", timeout=60)
    assert len(others) == 1 and others[0].returncode == 0
    with MeasurementStore(env["store"], readonly=True) as s:
        assert s._db is not None and s._db.execute("SELECT COUNT(*) FROM host_calibration").fetchone()[0] == 1


def test_a_phone_target_without_perf_test_names_a_readme_that_exists(pool: Path, env: dict[str, Path],
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """The error pointed at 'targets/android/README.md', a path of a git checkout only: an installed lgp-edge
    names the file inside the package."""
    import re

    monkeypatch.delenv("LGP_EDGE_ORT_PERF_TEST", raising=False)
    rc, err = run_cli(["profile", "--target", "android-arm64", "--pool", str(pool), "--descendant", KEY], capsys)
    line = assert_refused(rc, err, "onnxruntime_perf_test", env)
    m = re.search(r"see (/\S+README\.md)\)", line)
    assert m and Path(m.group(1)).is_file(), line


def test_runs_saved_before_machines_were_recorded_import_with_this_host(pool, env, capsys):
    """A file an lgp-edge before 2026-12-05 saved beside its store (its cpu runs name no machine) was refused with
    no way forward, while the same rows already in a store count as this machine's. --this-host imports them as
    this machine's runs; the refusal names it."""
    from lgp_edge.profiling.host import host_versions
    from lgp_edge.profiling.store import MeasurementStore

    pool_id = load_pool(pool)[0].pool_id
    f = _records_file(env["root"] / "t.json", pool_id, tool_versions={"onnxruntime": "1.17"})
    rc, err = run_cli(["profile", "--import", str(f), "--store", str(env["store"])], capsys)
    assert "--this-host" in assert_refused(rc, err, "record 1", env)
    rc, err = run_cli(["profile", "--import", str(f), "--this-host", "--store", str(env["store"])], capsys)
    assert rc == 0, err
    with MeasurementStore(env["store"], readonly=True) as s:
        named = sorted(r.tool_versions["host_cpu"] for r in s.records())
    assert named == sorted([HOST["host_cpu"], host_versions()["host_cpu"]])  # a run that names its machine keeps it


def test_a_board_file_under_the_id_the_pools_own_pool_json_records_imports_under_the_current_id(pool, env, capsys):
    """A pool built before 2026-12-03 records in its pool.json the pool id of that version's hash; its board files
    (build_engine.sh --time) carry that id, and `--import --pool` refused them ("pool_id ... is not the id of
    --pool") although the pool's own pool.json names it. They are imported under the current id."""
    import shutil

    from lgp_edge.profiling.store import MeasurementStore

    old = shutil.copytree(pool, env["root"] / "old-pool")
    mf = json.loads((old / "pool.json").read_text())
    current, mf["pool_id"] = mf["pool_id"], "baafbebf5eee"
    (old / "pool.json").write_text(json.dumps(mf))
    f = _records_file(env["root"] / "t.json", "baafbebf5eee")
    rc, err = run_cli(["profile", "--import", str(f), "--pool", str(old), "--store", str(env["store"])], capsys)
    assert rc == 0, err
    with MeasurementStore(env["store"], readonly=True) as s:
        assert {r.pool_id for r in s.records()} == {current}
    f = _records_file(env["root"] / "t.json", "0123456789ab")
    rc, err = run_cli(["profile", "--import", str(f), "--pool", str(old), "--store", str(env["root"] / "s2.sqlite")],
                      capsys)
    assert rc == 2 and "is not the id of --pool" in err


def test_runs_stored_under_the_id_the_pools_pool_json_records_are_read_after_a_profile(pool, env, capsys):
    """Runs an older lgp-edge stored under the pool's former id (the one its pool.json records) were never read
    again: select predicted every latency of a pool measured on the board. The next profile of that pool moves
    them to its current id."""
    import shutil

    from lgp_edge.profiling.store import MeasurementStore

    old = shutil.copytree(pool, env["root"] / "old-pool")
    mf = json.loads((old / "pool.json").read_text())
    current, mf["pool_id"] = mf["pool_id"], "baafbebf5eee"
    (old / "pool.json").write_text(json.dumps(mf))
    board = {"descendant_key": KEY, "target": "jetson-nano", "runtime": "tensorrt", "precision": "fp16", "batch": 1,
             "median_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2, "source": "measured", "pool_id": "baafbebf5eee",
             "tool_versions": {"tensorrt": "8.2.1"}, "when": "2026-01-01T00:00:00+00:00", "n": 200}
    f = env["root"] / "t.json"
    f.write_text(json.dumps({"format": "lgp-edge-latency", "version": 1, "records": [board]}))
    assert run_cli(["profile", "--import", str(f), "--store", str(env["store"])], capsys)[0] == 0  # under the old id
    assert run_cli(["profile", "--target", "jetson-nano", "--predict", "--pool", str(old), "--descendant", KEY,
                    "--store", str(env["store"]), "--quiet"], capsys)[0] == 0
    with MeasurementStore(env["store"], readonly=True) as s:
        assert {r.pool_id for r in s.records(source="measured")} == {current}
    from lgp_edge.cli import main

    capsys.readouterr()
    assert main(["select", "--target", "jetson-nano", "--pool", str(old), "--store", str(env["store"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_sources"].get("measured") == 1
