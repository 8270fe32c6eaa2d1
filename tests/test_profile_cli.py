"""``lgp-edge profile`` end to end on the tiny pool: real ONNX Runtime / OpenVINO / torch sessions, a real
SQLite store, predictions that say so, and the bad-input paths (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import make_tiny_pool

from lgp_edge.cli import main
from lgp_edge.pool.pool import demo_pool_dir, load_pool
from lgp_edge.profiling.store import MeasurementStore

KEYS = ["ti6.0-5", "b6.0-5"]
FAST = ["--warmup", "2", "--iters", "15", "--threads", "1", "--quiet"]  # 1 thread: the CI box is shared


def _profile(capsys, *argv):
    rc = main(["profile", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "torch"])
def test_measure_descendants_on_this_cpu(runtime, tiny_pool, tmp_path, capsys):
    store = tmp_path / "m.sqlite"
    rc, out, _ = _profile(capsys, "--target", "cpu", "--runtime", runtime, "--pool", str(tiny_pool), "--store",
                          str(store), "--descendant", KEYS[0], "--descendant", KEYS[1], "--json",
                          *FAST)
    assert rc == 0
    data = json.loads(out)
    assert data["mode"] == "measured" and data["predictor"] is None and data["rows_written"] == 2
    recs = {r["descendant_key"]: r for r in data["records"]}
    assert set(recs) == set(KEYS)
    pool, manifest = load_pool(tiny_pool)
    for key, r in recs.items():
        assert r["source"] == "measured" and r["runtime"] == runtime and r["target"] == "cpu"
        assert r["threads"] == 1 and r["n"] == 15 and r["batch"] == 1 and r["pool_id"] == pool.pool_id
        assert 0 < r["median_ms"] <= r["p90_ms"] and runtime in r["tool_versions"]
        assert r["params"] == pool.record(pool.find(key)).params and r["flops"] > 0
        assert r["top1"] == next(d.top1 for d in manifest.descendants if d.key == key)
    with MeasurementStore(store) as s:
        rows = s.records(target="cpu", runtime=runtime)
        assert {r.descendant_key for r in rows} == set(KEYS) and all(r.source == "measured" for r in rows)


def test_table_output_lists_columns(tiny_pool, tmp_path, capsys):
    rc, out, err = _profile(capsys, "--target", "cpu", "--pool", str(tiny_pool), "--store", str(tmp_path / "s"),
                            "--descendant", KEYS[0], *FAST)
    assert rc == 0
    for col in ("descendant", "params", "MFLOPs", "top-1", "median ms", "p90 ms", "source", "measured"):
        assert col in out
    assert "wrote 1 measurement to" in err
    # params and FLOPs as `pool info` and `select` print them (the table said 0.079 (M) and 0.0014 GFLOPs)
    from lgp_edge.pool.pool import load_pool

    pool, _ = load_pool(tiny_pool)
    rec = pool.record(pool.find(KEYS[0]))
    row = next(ln for ln in out.splitlines() if ln.startswith(KEYS[0]))
    assert f"{rec.params:,}" in row and f"{rec.flops / 1e6:.1f}" in row.split()[2], row


def test_the_tables_noisy_footnote_states_the_rule_that_flags(tiny_pool, tmp_path, capsys, monkeypatch):
    """The footnote said a noisy row's "coefficient of variation stayed above 10%", the std / mean that a
    JSON reader sees as `cv` and that does not decide the flag (a row with `cv` 0.05 could be starred)."""
    from lgp_edge.profiling import measure

    monkeypatch.setattr(measure.Timing, "dispersion", property(lambda self: 0.5))  # every series noisy
    rc, out, _ = _profile(capsys, "--target", "cpu", "--pool", str(tiny_pool), "--store", str(tmp_path / "s"),
                          "--descendant", KEYS[0], "--warmup", "0", "--iters", "3", "--threads", "1", "--quiet")
    assert rc == 0 and "measured*" in out
    footnote = " ".join(ln.strip() for ln in out.splitlines() if ln.startswith("* noisy") or ln.startswith("  "))
    assert "coefficient of variation" not in out and "robust CV" in footnote and "p90" in footnote


def test_predict_unattached_target_says_so(tiny_pool, tmp_path, capsys):
    store = tmp_path / "m.sqlite"
    rc, out, _ = _profile(capsys, "--target", "jetson-nano", "--predict", "--pool", str(tiny_pool), "--store",
                          str(store), "--json", "--quiet")
    assert rc == 0
    data = json.loads(out)
    assert data["mode"] == "predicted" and "roofline" in data["predictor"] and data["rows_written"] == 18
    assert len(data["records"]) == 18 and all(r["source"] == "predicted" for r in data["records"])
    assert all(r["tool_versions"]["predictor"] == "roofline" for r in data["records"])
    assert all(r["p90_ms"] > r["median_ms"] and r["calibration"] == "declared:jetson-nano" for r in data["records"])
    assert data["precision"] == "fp16" and data["runtime"] == "tensorrt"
    rc, out, err = _profile(capsys, "--target", "jetson-nano", "--predict", "--precision", "fp32", "--pool",
                            str(tiny_pool), "--store", str(store), "--quiet")
    assert rc == 0 and "PREDICTED, not measured" in err and "predicted" in out
    with MeasurementStore(store) as s:  # predictions are stored as predicted rows, with their calibration
        rows = s.records(target="jetson-nano")
        assert len(rows) == 36 and all(r.source == "predicted" and r.calibration for r in rows)
        assert {r.precision for r in rows} == {"fp16", "fp32"}
    rc, out, _ = _profile(capsys, "--target", "jetson-nano", "--predict", "--pool", str(tiny_pool), "--store",
                          str(store), "--json", "--quiet")
    with MeasurementStore(store) as s:  # the same prediction again replaces its rows
        assert s.count() == 36


def test_predict_check_reports_mape_on_held_out_descendants(tiny_pool, tmp_path, capsys):
    held_out = ["ti6.0-5", "b6.0-5", "ti6.0-2+b6.3-5", "ti6.0-4+b6.5-5"]  # a subset keeps the test short
    rc, out, _ = _profile(capsys, "--target", "cpu", "--runtime", "onnxruntime", "--predict", "--check", "--pool",
                          str(tiny_pool), "--store", str(tmp_path / "m.sqlite"), "--threads", "1", "--rounds", "2",
                          "--json", "--warmup", "2", "--iters", "10", "--quiet",
                          *[a for k in held_out for a in ("--descendant", k)])
    assert rc == 0
    data = json.loads(out)
    check = data["check"]
    with MeasurementStore(tmp_path / "m.sqlite") as s:
        calm = sum(not r.noisy for r in s.records(target="cpu") if r.descendant_key.startswith("probe:"))
    # 9 probes measured; one noisy on a busy machine is left out of the fit unless the calm ones alone do not cover
    used = calm if f"calibrated on {calm} probe" in data["predictor"] else 9
    assert f"calibrated on {used} probe" in data["predictor"], data["predictor"]
    assert check["calibration_models"] == used  # the fit's probes, not every probe measured
    assert check["held_out"] == len(held_out)
    rows = check["rows"]
    assert [r["descendant_key"] for r in rows] == held_out
    assert not any(r["descendant_key"].startswith("probe:") for r in rows)
    mape = sum(abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] for r in rows) / len(rows) * 100
    assert check["mape_percent"] == pytest.approx(mape)
    # and of the p90s, which select decides on (only the medians were checked), against each stored measurement
    with MeasurementStore(tmp_path / "m.sqlite") as s:
        runs = {r.descendant_key: r for r in s.records(target="cpu", source="measured")}
        pred = {r.descendant_key: r for r in s.records(target="cpu", source="predicted")}
    p90 = sum(abs(pred[k].p90_ms - runs[k].p90_ms) / runs[k].p90_ms for k in held_out) / len(held_out) * 100
    assert check["p90_mape_percent"] == pytest.approx(p90)
    assert check["noisy_references"] == sum(runs[k].noisy for k in held_out)
    # how well it predicts is timing on a shared machine: benchmarks/latency.py reports it, a test only checks that
    # every held-out descendant got a finite positive prediction beside its measurement
    assert all(0 < r["predicted_ms"] < float("inf") and r["measured_ms"] > 0 for r in rows)
    with MeasurementStore(tmp_path / "m.sqlite") as s:
        keys = {r.descendant_key for r in s.records(target="cpu")}
        assert len(keys) == 9 + len(held_out) and sum(k.startswith("probe:") for k in keys) == 9
        # each row's measurement is the stored measured row of that descendant, not some other number
        stored = {r.descendant_key: r.median_ms for r in s.records(target="cpu", source="measured")}
    assert all(r["measured_ms"] == pytest.approx(stored[r["descendant_key"]], rel=1e-9) for r in rows)
    # a later --predict reuses the stored calibration instead of measuring again
    rc, out, _ = _profile(capsys, "--target", "cpu", "--runtime", "onnxruntime", "--predict", "--pool",
                          str(tiny_pool), "--store", str(tmp_path / "m.sqlite"), "--threads", "1", "--json",
                          "--quiet")
    again = json.loads(out)
    assert rc == 0 and again["rows_written"] == 18
    assert again["predictor"] == data["predictor"]  # the calibration the check predicted with, noisy probes or not
    assert len(again["records"]) == 18 and all(r["source"] == "predicted" for r in again["records"])
    cal = {r["calibration"] for r in again["records"]}
    assert len(cal) == 1 and cal.pop().startswith("probes:")  # the stored probe runs it came from
    assert all(r["p90_ms"] >= r["median_ms"] for r in again["records"])
    # each row's prediction is the predictor's, not one derived from the measurement: the same stored calibration
    # predicts the same median for the same descendant in this separate run (predictions are deterministic)
    predicted = {r["descendant_key"]: r["median_ms"] for r in again["records"]}
    assert {r["descendant_key"]: pytest.approx(predicted[r["descendant_key"]], rel=1e-9) for r in rows} == \
        {r["descendant_key"]: r["predicted_ms"] for r in rows}
    with MeasurementStore(tmp_path / "m.sqlite") as s:  # no new measurement; the check's 4 predictions came
        assert len(s.records(target="cpu", source="measured")) == 9 + len(held_out)  # from the same calibration,
        assert len(s.records(target="cpu", source="predicted")) == 18  # so they were replaced, not duplicated


def test_calibrating_counts_the_probe_rows_it_writes_and_select_uses_them_at_their_threads(tiny_pool, tmp_path,
                                                                                           capsys):
    """`profile --predict --calibrate --json` said rows_written 1 after writing the 9 probes' runs too. And with
    probes timed at 1 thread and nothing else, select had no way to ask for 1 thread and priced every descendant
    with the roofline at the target's default thread count: --threads (or a profile's `threads`) asks for it."""
    store = tmp_path / "c.sqlite"
    rc, out, _ = _profile(capsys, "--target", "cpu", "--runtime", "onnxruntime", "--predict", "--calibrate",
                          "--pool", str(tiny_pool), "--store", str(store), "--threads", "1", "--warmup", "1",
                          "--iters", "5", "--descendant", "ti6.0-5", "--json", "--quiet")
    assert rc == 0
    with MeasurementStore(store) as s:
        rows = s.records(target="cpu")
    assert sum(r.descendant_key.startswith("probe:") for r in rows) == 9
    assert json.loads(out)["rows_written"] == len(rows) == 10
    ident = {r.calibration for r in rows if r.source == "predicted"}
    assert main(["select", "--target", "cpu", "--pool", str(tiny_pool), "--store", str(store), "--threads", "1",
                 "--budget-ms", "1000", "--json"]) == 0
    sel = json.loads(capsys.readouterr().out)
    assert sel["threads"] == 1 and sel["profile"]["threads"] == 1
    assert sel["chosen"]["calibration"] in ident and sel["chosen"]["calibration"].startswith("probes:")
    assert main(["select", "--target", "cpu", "--pool", str(tiny_pool), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_an_interrupted_profile_keeps_the_models_it_measured(tiny_pool, tmp_path, capsys, monkeypatch, caplog):
    """Ctrl-C during the third model: the two measured before it were lost with the rest (on a board, an hour of
    timings). They are stored; the exit is still 130 and the third model has no row."""
    import lgp_edge.profiling.profile as prof

    real, calls = prof._record, []

    def third_interrupts(key, *a, **kw):
        calls.append(key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(key, *a, **kw)
    monkeypatch.setattr(prof, "_record", third_interrupts)
    store = tmp_path / "m.sqlite"
    keys = ["ti6.0-5", "b6.0-5", "ti6.0-2+b6.3-5"]
    rc, _, err = _profile(capsys, "--target", "cpu", "--runtime", "onnxruntime", "--pool", str(tiny_pool),
                          "--store", str(store), *[a for k in keys for a in ("--descendant", k)], *FAST)
    assert rc == 130 and "interrupted" in err
    assert "the 2 models measured before it are stored" in caplog.text
    with MeasurementStore(store) as s:
        assert sorted(r.descendant_key for r in s.records(target="cpu")) == sorted(keys[:2])


def test_stock_timm_model(tmp_path, capsys):
    rc, out, _ = _profile(capsys, "--target", "cpu", "--runtime", "torch", "--model", "lgp_test_tiny", "--store",
                          str(tmp_path / "m.sqlite"), "--json", *FAST)
    assert rc == 0
    rec = json.loads(out)["records"][0]
    assert rec["descendant_key"] == "timm:lgp_test_tiny" and rec["source"] == "measured" and rec["pool_id"] == ""
    rc, out, _ = _profile(capsys, "--target", "iphone", "--model", "deit_tiny_patch16_224", "--predict",
                          "--store", str(tmp_path / "m.sqlite"), "--json", "--quiet")
    rec = json.loads(out)["records"][0]
    assert rc == 0 and rec["source"] == "predicted" and rec["flops"] == 1_258_411_200  # DeiT-Ti, fvcore
    assert rec["precision"] == "fp16" and rec["runtime"] == "coreml"


def test_never_evaluated_pool_still_profiles(tmp_path, capsys):
    pool = make_tiny_pool(tmp_path / "raw", with_records=False)
    rc, out, _ = _profile(capsys, "--target", "cpu", "--pool", str(pool), "--store", str(tmp_path / "m"),
                          "--descendant", KEYS[0], "--json", *FAST)
    assert rc == 0 and json.loads(out)["records"][0]["top1"] is None


@pytest.mark.parametrize("argv,needle", [
    (["--target", "jetson-nan", "--pool", "{pool}"], "known targets:"),
    (["--target", "cpu", "--pool", "{tmp}"], "not a pool directory"),
    (["--target", "cpu", "--pool", "{pool}", "--check"], "--check"),
    (["--target", "iphone", "--pool", "{pool}"], "--predict"),
    (["--target", "cpu", "--pool", "{pool}", "--precision", "fp16"], "precisions"),
    (["--target", "cpu", "--model", "lgp_test_tiny", "--pool", "{pool}"], "--model"),
    (["--target", "cpu", "--pool", "{pool}", "--descendant", "zz9.0-1"], "no descendant"),
    (["--target", "cpu", "--model", "no_such_vit"], "--model 'no_such_vit' is not a timm ViT lgp-edge knows"),
    (["--target", "cpu", "--model", "vit_base_patch16_rpn_224", "--predict"],
     "--model 'vit_base_patch16_rpn_224' must use a class token"),
    # a distilled DeiT (export --model takes it): said of --model and what can be done, not of an ancestry
    (["--target", "jetson-nano", "--model", "deit_tiny_distilled_patch16_224", "--predict"],
     "--model 'deit_tiny_distilled_patch16_224' has a distillation token, which the per-block latency model of "
     "profile --model does not take: profile deit_tiny_patch16_224 (the same blocks); 'lgp-edge export --model' "
     "exports it"),
    (["--target", "cpu", "--runtime", "coreml", "--pool", "{pool}"], "not available here"),
    (["--target", "cpu", "--pool", "{pool}", "--iters", "0"], "iters"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(argv, needle, tiny_pool, tmp_path, capsys):
    if sys.platform == "darwin" and "coreml" in argv:
        pytest.skip("Core ML is available on macOS")
    store = tmp_path / "m.sqlite"
    argv = [a.format(pool=tiny_pool, tmp=tmp_path) for a in argv]
    rc, out, err = _profile(capsys, *argv, "--store", str(store), "--quiet")
    assert rc == 2 and out == ""
    assert err.startswith("lgp-edge: error:") and err.count("\n") == 1 and needle in err
    if store.exists():
        with MeasurementStore(store) as s:
            assert s.count() == 0


def test_missing_runtime_package_says_which_extra(tiny_pool, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    rc, _, err = _profile(capsys, "--target", "cpu", "--runtime", "openvino", "--pool", str(tiny_pool), "--store",
                          str(tmp_path / "m"), "--quiet")
    assert rc == 2 and "pip install 'lgp-edge[export]'" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


def test_without_pool_uses_demo_or_says_pass_pool(tmp_path, capsys):
    argv = ["--target", "cpu", "--runtime", "onnxruntime", "--store", str(tmp_path / "m"), "--json",
            "--descendant", "ti6.0-5", *FAST]
    if (demo_pool_dir() / "pool.json").is_file():  # the bundled demo pool is the default
        rc, out, _ = _profile(capsys, *argv)
        assert rc == 0
        rec = json.loads(out)["records"][0]
        assert rec["pool_id"] == load_pool(demo_pool_dir())[0].pool_id and rec["source"] == "measured"
    else:
        rc, _, err = _profile(capsys, *argv)
        assert rc == 2 and "--pool" in err


def test_locked_store_mid_run_keeps_the_measurements(tiny_pool, tmp_path, capsys, monkeypatch):
    """Another process holds the store's write lock while profiling runs: one line, exit 2, and the
    measurements are saved beside the store, from where --import loads them once the lock is gone."""
    import sqlite3

    store = tmp_path / "m.sqlite"
    MeasurementStore(store).close()
    monkeypatch.setattr(MeasurementStore, "default_timeout_s", 0.6)
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        rc, out, err = _profile(capsys, "--target", "cpu", "--pool", str(tiny_pool), "--store", str(store),
                                "--descendant", KEYS[0], "--descendant", KEYS[1], *FAST)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "locked" in err and "2 records" in err and "--import" in err
    saved = [p for p in tmp_path.iterdir() if p.name.startswith("m.unsaved-") and p.suffix == ".json"]
    assert len(saved) == 1 and str(saved[0]) in err
    with MeasurementStore(store) as s:
        assert s.count() == 0
    rc, _, err = _profile(capsys, "--import", str(saved[0]), "--store", str(store))
    assert rc == 0 and "imported 2 records" in err
    with MeasurementStore(store) as s:
        rows = s.records(target="cpu", source="measured")
        assert sorted(r.descendant_key for r in rows) == sorted(KEYS) and all(r.n == 15 for r in rows)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    rc, _, err = _profile(capsys, "--import", str(bad), "--store", str(store))
    assert rc == 2 and "not an lgp-edge latency file" in err


def test_predicting_for_a_board_needs_neither_torch_nor_the_weights(tiny_pool, tmp_path):
    """``profile --target jetson-nano --predict`` imported torch, timm and torchvision and loaded the pool's weights
    (4.3 s for the demo pool) to predict from the spec; it now reads pool.json only, and writes the same rows."""
    from helpers import cli_imports

    store = tmp_path / "m.sqlite"
    got = cli_imports([["profile", "--target", "jetson-nano", "--predict", "--pool", str(tiny_pool), "--store",
                        str(store), "--quiet"]])
    assert got == {"codes": [0], "errors": [f"wrote 18 predictions to {store}"], "imported": []}
    pool, manifest = load_pool(tiny_pool)
    with MeasurementStore(store) as s:
        rows = {r.descendant_key: r for r in s.records(target="jetson-nano")}
    assert set(rows) == {r.key for r in manifest.descendants}
    assert all(r.source == "predicted" and r.median_ms > 0 for r in rows.values())
    # the sizes the table shows come from the spec: those of the built modules
    from lgp_edge.models.descendant import count_params
    from lgp_edge.profiling.subject import pool_subject

    subject = pool_subject(manifest.spec, pool.descendant, manifest)
    assert [it.key for it in subject.items] == [d.key for d in pool.descendants()]
    assert all(it.params == count_params(it.build()) for it in subject.items)


def test_a_board_prediction_is_the_same_in_profile_select_and_the_api_once_a_run_is_imported(tiny_pool, tmp_path,
                                                                                               capsys):
    """With one Jetson Nano timing imported, select scaled the roofline to it (3x here) and said nothing of the
    scale, while profile --predict and api.predict_latencies gave the bare roofline: three numbers for one model."""
    from lgp_edge import api

    pool_id = json.loads((tiny_pool / "pool.json").read_text())["pool_id"]
    timing = tmp_path / "timing.json"
    timing.write_text(json.dumps({"format": "lgp-edge-latency", "version": 1, "records": [
        {"descendant_key": "b6.0-5", "target": "jetson-nano", "runtime": "tensorrt", "precision": "fp16",
         "batch": 1, "median_ms": 5.0, "p90_ms": 5.4, "p99_ms": 6.0, "source": "measured",
         "when": "2026-12-01T00:00:00Z", "pool_id": pool_id, "n": 200}]}))
    store = str(tmp_path / "m.sqlite")
    assert main(["profile", "--import", str(timing), "--store", store, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["profile", "--target", "jetson-nano", "--predict", "--pool", str(tiny_pool), "--store", store,
                 "--json", "--quiet"]) == 0
    profiled = {r["descendant_key"]: r for r in json.loads(capsys.readouterr().out)["records"]}
    assert main(["select", "--target", "jetson-nano", "--pool", str(tiny_pool), "--store", store, "--json",
                 "--quiet"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    candidates = {c["key"]: c for c in chosen["front"]}
    pool, manifest = api.load_pool(tiny_pool)
    from_api = {r.descendant_key: r for r in api.predict_latencies(pool, manifest, "jetson-nano", store=store)}
    ti = candidates["ti6.0-5"]
    assert ti["latency_source"] == "predicted" and "scaled x" in ti["latency_note"]
    assert profiled["ti6.0-5"]["p90_ms"] == pytest.approx(ti["latency_ms"], rel=1e-6)
    assert from_api["ti6.0-5"].p90_ms == pytest.approx(ti["latency_ms"], rel=1e-6)
    assert profiled["b6.0-5"]["source"] == "predicted"  # profile --predict predicts every descendant


def test_a_cpu_boards_roofline_prices_the_threads_asked_for(tiny_pool, tmp_path, capsys):
    """The Raspberry Pi 5's declared peak is its 4 cores'; a prediction at --threads 1 was the 4-thread number,
    labelled 1 thread (an app on one thread was promised a 4-thread latency). The peak now scales with the threads
    (up to the count the target file declares it for), and the roofline says so; more threads than its cores are
    priced as its cores, and the roofline says that too."""
    got = {}
    argv = ["profile", "--target", "raspberry-pi-5", "--predict", "--pool", str(tiny_pool), "--descendant", "b6.0-5",
            "--json", "--quiet"]
    for threads in (1, 2, 4):
        capsys.readouterr()
        assert main([*argv, "--threads", str(threads), "--store", str(tmp_path / f"m{threads}.sqlite")]) == 0
        out = json.loads(capsys.readouterr().out)
        (rec,) = out["records"]
        assert rec["threads"] == threads
        got[threads] = (rec["median_ms"], out["predictor"])
    assert got[1][0] > got[2][0] > got[4][0]
    assert "scaled to 1 thread" in got[1][1] and "scaled" not in got[4][1]
    capsys.readouterr()
    assert main([*argv, "--threads", "8", "--store", str(tmp_path / "m8.sqlite")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"][0]["median_ms"] == got[4][0] and "8 threads priced as 4" in out["predictor"]


def test_a_board_measured_at_more_threads_than_its_cores_is_still_selected_for(tiny_pool, tmp_path, capsys):
    """Some descendants measured on the Raspberry Pi 5 at 8 threads (its target file declares 4): select and report
    compare at the count the runs were made at, and the others' predictions at 8 threads were refused ("give
    --threads 4 or fewer, or measure the board at 8", which the user had done; report has no --threads)."""
    from lgp_edge.pool.manifest import read_manifest

    mf = read_manifest(tiny_pool)
    keys = [d.key for d in mf.descendants][:3]
    records = [{"descendant_key": k, "target": "raspberry-pi-5", "runtime": "onnxruntime", "precision": "fp32",
                "batch": 1, "median_ms": 1.0 + i, "p90_ms": 1.1 + i, "p99_ms": 1.2 + i, "source": "measured",
                "pool_id": mf.spec.pool_id, "threads": 8, "n": 100, "tool_versions": {"onnxruntime": "1.20.0"},
                "when": "2026-12-01T00:00:00+00:00"} for i, k in enumerate(keys)]
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"format": "lgp-edge-latency", "version": 1, "records": records}))
    store = str(tmp_path / "m.sqlite")
    assert main(["profile", "--import", str(f), "--store", store]) == 0
    capsys.readouterr()
    assert main(["select", "--target", "raspberry-pi-5", "--pool", str(tiny_pool), "--store", store, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threads"] == 8 and out["latency_sources"]["measured"] == 3
    assert main(["report", "--pool", str(tiny_pool), "--store", store, "--out", str(tmp_path / "rep")]) == 0


def test_more_threads_than_a_boards_cores_is_said_where_the_latency_is_read(tiny_pool, tmp_path, capsys):
    """The 'priced as its cores' label was only in the predictor's description (the debug log): select --json's
    latency notes, report and export manifests said nothing of an 8-thread latency priced at 4 cores."""
    store = str(tmp_path / "m.sqlite")
    assert main(["select", "--target", "raspberry-pi-5", "--threads", "8", "--pool", str(tiny_pool), "--store",
                 store, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all("priced as its 4 cores" in c["latency_note"] for c in out["front"])
    assert main(["select", "--target", "raspberry-pi-5", "--threads", "4", "--pool", str(tiny_pool), "--store",
                 store, "--json"]) == 0
    assert not any("priced as" in c["latency_note"] for c in json.loads(capsys.readouterr().out)["front"])


def test_an_int8_prediction_on_this_host_says_it_is_priced_at_fp32(tiny_pool, tmp_path, capsys):
    """Only fp32 GEMM is measured on this host: an int8 latency was that fp32 figure (measured about 3x slower
    on a CPU without VNNI) and said nothing of it in select, report or the export manifest."""
    store = str(tmp_path / "m.sqlite")
    assert main(["select", "--profile", "cpu-int8", "--pool", str(tiny_pool), "--store", store, "--json"]) == 0
    notes = [c["latency_note"] for c in json.loads(capsys.readouterr().out)["front"]]
    assert notes and all("int8 priced at this host's fp32 GEMM peak" in n for n in notes), notes
    # the command it names measures the profile's runtime (OpenVINO), whose runs alone scale the prediction
    assert all("'lgp-edge profile --target cpu --runtime openvino --precision int8'" in n for n in notes), notes
    assert main(["select", "--target", "cpu", "--pool", str(tiny_pool), "--store", store, "--json"]) == 0
    assert not any("priced at" in c["latency_note"] for c in json.loads(capsys.readouterr().out)["front"])


def test_predicting_on_this_host_with_a_fresh_store_measures_the_host_once(tiny_pool, tmp_path, capsys,
                                                                          monkeypatch):
    """`profile --target cpu --predict` on a fresh store measured the host calibration twice (the roofline looked
    for one, then the probes' calibration measured it again), printing its 'machine was busy' warning twice."""
    from helpers import count_host_measurements

    from lgp_edge.profiling import roofline

    calls = count_host_measurements(monkeypatch)
    rc, _, _ = _profile(capsys, "--target", "cpu", "--runtime", "onnxruntime", "--predict", "--pool", str(tiny_pool),
                        "--store", str(tmp_path / "fresh.sqlite"), "--threads", "1", "--warmup", "1", "--iters", "3",
                        "--descendant", "ti6.0-5", "--json", "--quiet")
    assert rc == 0 and calls == [("onnxruntime", 1)]
    # --calibrate in a later process measures it again, as asked
    monkeypatch.setattr(roofline, "_IN_PROCESS", {})
    rc, _, _ = _profile(capsys, "--target", "cpu", "--runtime", "onnxruntime", "--predict", "--calibrate", "--pool",
                        str(tiny_pool), "--store", str(tmp_path / "fresh.sqlite"), "--threads", "1", "--warmup", "1",
                        "--iters", "3", "--descendant", "ti6.0-5", "--json", "--quiet")
    assert rc == 0 and len(calls) == 2


def _spinning(n: int) -> list:
    """``n`` processes that each keep one CPU busy (real load, as another job on the machine)."""
    import subprocess

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_a_measurement_beside_processes_that_hold_the_cpus_says_so(tiny_pool, tmp_path, capsys, caplog):
    """Under a steady load every series is calm (so not flagged noisy) and slow: a host calibration taken beside
    two busy processes on 2 CPUs predicted ti6.0-5 at 4.3 ms p90, 12x its roofline prediction (0.36 ms), and
    nothing said so."""
    import time

    from lgp_edge.profiling.host import CpuWatch, usable_cpus

    cpus = usable_cpus()
    procs = _spinning(cpus + 1)  # one more than the CPUs: the measurement's thread gets at most 2/3 of one
    try:
        time.sleep(0.3)
        watch = CpuWatch()
        time.sleep(1.0)
        share = watch.share()
        caplog.clear()
        rc, _, err = _profile(capsys, "--target", "cpu", "--runtime", "torch", "--pool", str(tiny_pool), "--store",
                              str(tmp_path / "m.sqlite"), "--descendant", KEYS[0], "--warmup", "2", "--iters", "300",
                              "--threads", "1", "--quiet")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert share is not None and share.others >= cpus - 0.25 and share.crowded(1), share
    assert rc == 0 and "other processes used" in caplog.text and "measure again when it is quieter" in caplog.text
    # the rule: what the others left against the threads measured, with half a CPU of slack
    from lgp_edge.profiling.host import CpuShare

    def taken(others: float, cpus: int = 2) -> CpuShare:
        return CpuShare(others=others, cpus=cpus, seconds=1.0)

    assert taken(0.3).crowded(2) and not taken(0.2).crowded(2)
    assert not taken(1.0).crowded(1) and taken(1.33).crowded(1) and not taken(3.0, 16).crowded(4)
