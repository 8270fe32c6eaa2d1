"""docs/API.md: its examples, run in order as one script; the records are the CLI's types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "API.md"


def test_api_doc_examples_run(tiny_pool: Path, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 4
    script = (f"POOL = {str(tiny_pool)!r}\nSTORE = {str(tmp_path / 'store.sqlite')!r}\n"
              f"OUT = {str(tmp_path / 'out')!r}\n" + "\n".join(blocks)
              + "\nfrom lgp_edge.specs import DescendantRecord, LatencyRecord\n"
                "from lgp_edge.select import Selection\nfrom lgp_edge.export.pipeline import ExportResult\n"
                "assert isinstance(records[0], DescendantRecord) and isinstance(lat[0], LatencyRecord)\n"
                "assert isinstance(sel, Selection) and isinstance(result, ExportResult)\n"
                "assert manifest_json['descendant']['key'] == result.manifest['descendant']['key']\n"
                "assert len(lat) == len(records) and lat[0].source == 'predicted'\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "['onnx', 'openvino']" in res.stdout and "passed" in res.stdout


def test_import_is_cheap() -> None:
    code = "import sys, lgp_edge, lgp_edge.api; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', " \
           "'openvino', 'timm') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_api_errors_are_lgp_edge_errors(tiny_pool: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """An unknown runtime raised a bare ValueError, a missing or damaged export manifest FileNotFoundError /
    JSONDecodeError: none of them the documented LgpEdgeError."""
    import pytest

    from lgp_edge import api
    from lgp_edge.errors import LgpEdgeError

    pool, manifest = api.load_pool(tiny_pool)
    with pytest.raises(LgpEdgeError, match="runtime"):
        api.predict_latencies(pool, manifest, "jetson-nano", runtime="foo", store=tmp_path / "s.sqlite")
    with pytest.raises(LgpEdgeError, match="manifest.json"):
        api.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(LgpEdgeError, match="manifest.json"):
        api.read_manifest(tmp_path)


def test_api_prediction_without_store_creates_none(tiny_pool: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """predict_latencies(store=None) created an empty default store, though nothing is stored then."""
    from lgp_edge import api

    default = tmp_path / "default.sqlite"
    monkeypatch.setenv("LGP_EDGE_STORE", str(default))
    pool, manifest = api.load_pool(tiny_pool)
    lat = api.predict_latencies(pool, manifest, "jetson-nano")
    assert len(lat) == len(manifest.descendants) and not default.exists()


def test_api_select_and_export_take_user_profiles(tiny_pool: Path, tmp_path: Path) -> None:
    """A profile from a user directory could be loaded (api.profile) but not selected for."""
    from lgp_edge import api

    d = tmp_path / "profiles"
    d.mkdir()
    (d / "mine.toml").write_text('name = "mine"\ntarget = "cpu"\nlatency_budget_ms = 1000\nmemory_budget_mb = 1000\n'
                                 'precision = "fp32"\nformats = ["onnx"]\n')
    pool, manifest = api.load_pool(tiny_pool)
    sel = api.select(pool, manifest, "mine", store=tmp_path / "s.sqlite", profiles_dir=d)
    assert sel.profile.name == "mine" and sel.chosen.key


def test_predicting_on_this_host_without_a_store_writes_nothing_and_answers(tiny_pool: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:  # noqa: ANN001
    """api.predict_latencies(pool, manifest, "cpu") without store= measured the calibration probes, then failed
    ("measurement store ... is open read-only") writing them into the default store it had opened to read."""
    from lgp_edge import api

    default = tmp_path / "default.sqlite"
    monkeypatch.setenv("LGP_EDGE_STORE", str(default))
    pool, manifest = api.load_pool(tiny_pool)
    records = api.predict_latencies(pool, manifest, "cpu")
    assert len(records) == len(manifest.descendants) and all(r.source == "predicted" for r in records)
    assert all(r.calibration.startswith("probes:") and r.median_ms > 0 for r in records)
    assert not default.exists()


def test_select_refuses_synthetic_top1_of_a_real_data_pool_as_the_cli_does(tmp_path: Path) -> None:
    """api.select chose b6.0-5 by top-1 values measured on synthetic images for a Fashion-MNIST pool, where
    `lgp-edge select` and `export` refuse them."""
    import json
    import shutil

    import pytest

    from lgp_edge import api
    from lgp_edge.errors import UsageError
    from lgp_edge.pool.manifest import demo_pool_dir

    pool_dir = Path(shutil.copytree(demo_pool_dir(), tmp_path / "pool"))
    mf = json.loads((pool_dir / "pool.json").read_text())
    for r in mf["descendants"]:
        r["top1_data"] = "synthetic"
    (pool_dir / "pool.json").write_text(json.dumps(mf))
    with pytest.raises(UsageError, match="measured on synthetic data"):
        api.select(*api.load_pool(pool_dir), "jetson-nano", store=tmp_path / "m.sqlite")


def test_export_arguments_of_the_wrong_type_are_refused_before_any_work(tiny_pool: Path, tmp_path: Path) -> None:
    """val_images=nan or 2.5 ended in a TypeError after the pool had loaded, val_images=True validated on one
    image, and force="no" (truthy) replaced an earlier export."""
    import pytest

    from lgp_edge import api
    from lgp_edge.errors import UsageError

    out = tmp_path / "out"
    for bad in (float("nan"), 2.5, "64", True, 0):
        with pytest.raises(UsageError, match="val_images must be an integer >= 1"):
            api.export("cpu", out, pool=tiny_pool, store=tmp_path / "m.sqlite", val_images=bad)
    with pytest.raises(UsageError, match="force must be True or False"):
        api.export("cpu", out, pool=tiny_pool, store=tmp_path / "m.sqlite", force="no")
    assert not out.exists() and not (tmp_path / "m.sqlite").exists()


def test_the_library_prints_nothing_where_the_application_set_up_no_logging() -> None:
    """An app that had not configured logging got lgp-edge's warnings on stderr through Python's last-resort
    handler (the busy-machine warning twice per call)."""
    code = ("import logging, lgp_edge.api\n"
            "logging.getLogger('lgp_edge.select').warning('a warning for the application to route')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stderr == "" and res.stdout == ""


def test_select_and_export_take_the_cli_overrides_checked_as_the_flags_are(tiny_pool: Path, tmp_path: Path) -> None:
    """The API had no way to change a profile's budgets or threads (a dataclasses.replace copy was neither taken
    nor checked): select and export take budget_ms, memory_mb and threads, refused out of range as the flags."""
    import math

    import pytest

    from lgp_edge import api
    from lgp_edge.errors import NothingFits, UsageError

    pool, manifest = api.load_pool(tiny_pool)
    store = tmp_path / "m.sqlite"
    sel = api.select(pool, manifest, "raspberry-pi-5", store=store, budget_ms=1000.0, threads=2)
    assert sel.chosen.threads == 2 and sel.profile.latency_budget_ms == 1000.0
    with pytest.raises(NothingFits) as nothing:
        api.select(pool, manifest, "raspberry-pi-5", store=store, memory_mb=0.001)
    # its selection is select --json's shape, key for key (docs/API.md says so; 5 of its 16 keys were missing)
    import json

    done = subprocess.run([sys.executable, "-m", "lgp_edge", "select", "--target", "raspberry-pi-5", "--pool",
                           str(tiny_pool), "--store", str(store), "--memory-mb", "0.001", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    cli = json.loads(done.stdout)
    got = nothing.value.selection
    assert sorted(got) == sorted(cli)
    assert {k: got[k] for k in ("target", "top1_data", "top1_images", "top1_synthetic")} == \
        {k: cli[k] for k in ("target", "top1_data", "top1_images", "top1_synthetic")}
    assert got["pool"] is None and cli["pool"] == str(tiny_pool)  # the API is given the loaded pool, not a folder
    with pytest.raises(NothingFits) as nothing:  # export's too, with the pool's folder it was given
        api.export("raspberry-pi-5", tmp_path / "nf", pool=tiny_pool, store=store, memory_mb=0.001)
    assert sorted(nothing.value.selection) == sorted(cli) and nothing.value.selection["pool"] == str(tiny_pool)
    for bad in ({"budget_ms": math.nan}, {"budget_ms": -1.0}, {"threads": 0}, {"memory_mb": math.inf}):
        with pytest.raises(UsageError):
            api.select(pool, manifest, "raspberry-pi-5", store=store, **bad)
        with pytest.raises(UsageError):
            api.export("cpu", tmp_path / "out", pool=tiny_pool, store=store, **bad)
    assert not (tmp_path / "out").exists()


def test_arguments_of_the_wrong_type_are_usage_errors_naming_the_argument(tmp_path: Path) -> None:
    """api.target(None) ended in difflib's TypeError, api.profile(["cpu"]) in 'unhashable type', api.descendants and
    api.select on a wrong manifest in an AttributeError deep inside, api.read_manifest(None) in pathlib's TypeError."""
    import pytest

    from lgp_edge import api
    from lgp_edge.errors import UsageError

    pool, manifest = api.load_pool()
    calls = [
        ("name", lambda: api.target(None)), ("name", lambda: api.target(3)), ("name", lambda: api.profile(["cpu"])),
        ("manifest", lambda: api.descendants(None)), ("manifest", lambda: api.descendants("pool.json")),
        ("manifest", lambda: api.select(pool, None, "cpu")), ("pool", lambda: api.predict_latencies(None, manifest,
                                                                                                      "cpu")),
        ("out", lambda: api.read_manifest(None)), ("out", lambda: api.export("cpu", None)),
        ("store", lambda: api.export("cpu", tmp_path / "o", store=[tmp_path / "m.sqlite"])),
        ("path", lambda: api.load_pool(7)),
    ]
    for what, call in calls:
        with pytest.raises(UsageError, match=f"^{what} must be"):
            call()
    assert not (tmp_path / "o").exists()


def test_an_empty_path_or_name_is_refused_not_taken_for_the_default(tmp_path: Path) -> None:
    """api.export(pool="") exported the bundled demo pool (a service passing os.environ.get("POOL", "") shipped the
    demo model), store="" used the default store, where the CLI refuses an empty --pool or --store; budgets of the
    wrong type ended in a TypeError or ValueError, and budget_ms=True was taken as 1 ms."""
    import pytest

    from lgp_edge import api
    from lgp_edge.errors import UsageError

    pool, manifest = api.load_pool()
    out = tmp_path / "out"
    for kw in ({"pool": ""}, {"store": ""}, {"pool": "  "}, {"data": ""}, {"descendant": ""}):
        with pytest.raises(UsageError, match=f"^{next(iter(kw))} is empty"):
            api.export("raspberry-pi-5", out, val_images=2, **kw)
    with pytest.raises(UsageError, match="^store is empty"):
        api.select(pool, manifest, "raspberry-pi-5", store="")
    for kw in ({"budget_ms": "10"}, {"budget_ms": "abc"}, {"memory_mb": [5]}, {"budget_ms": True}):
        with pytest.raises(UsageError, match=f"^{next(iter(kw))} must be a number"):
            api.select(pool, manifest, "raspberry-pi-5", store=tmp_path / "m.sqlite", **kw)
        with pytest.raises(UsageError, match=f"^{next(iter(kw))} must be a number"):
            api.export("raspberry-pi-5", out, store=tmp_path / "m.sqlite", **kw)
    assert not out.exists()


def test_converting_to_ort_leaves_the_applications_root_logger_as_it_was(tmp_path: Path) -> None:
    """Importing ONNX Runtime's .ort tools runs logging.basicConfig: an android-arm64 export left a handler on the
    application's root logger (its own basicConfig then did nothing, its records came out in ONNX Runtime's format,
    and lgp-edge's warnings reached stderr)."""
    code = f"""
import logging
import onnx
from onnx import TensorProto, helper
from pathlib import Path
from lgp_edge.export.ort import convert_to_ort, ort_format_version
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, {str(tmp_path / 'm.onnx')!r})
out = Path({str(tmp_path / 'out')!r})
out.mkdir()
ort_file, _ = convert_to_ort(Path({str(tmp_path / 'm.onnx')!r}), out)
assert ort_format_version(ort_file) > 0
print(logging.getLogger().handlers)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_the_library_leaves_the_applications_torch_random_numbers_as_they_were(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """An application that seeds torch got other random numbers after api.load_pool (the pool was built with random
    weights, then loaded) or a first selection on this host (the host calibration's matrices)."""
    import torch

    from lgp_edge import api
    from lgp_edge.profiling import roofline

    monkeypatch.setattr(roofline, "_IN_PROCESS", {})  # this host is calibrated here, whatever ran before

    def draws(call) -> list[float]:  # noqa: ANN001
        torch.manual_seed(0)
        call()
        return torch.rand(3).tolist()

    untouched = draws(lambda: None)
    assert draws(lambda: api.load_pool()) == untouched
    pool, manifest = api.load_pool()
    assert draws(lambda: api.select(pool, manifest, "cpu", store=tmp_path / "m.sqlite")) == untouched



def test_export_on_windows_is_the_clis_one_line_refusal_not_an_import_error(tmp_path: Path) -> None:
    """api.export on Windows (no fcntl) ended in ModuleNotFoundError from the output directory's writer lock,
    where `lgp-edge export` refuses at the start saying what to use."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; sys.modules['fcntl'] = None; from lgp_edge import api; from lgp_edge.errors import "
            "UsageError; os.name = 'nt'\ntry:\n    api.export('cpu', 'out', val_images=8)\nexcept UsageError as e:\n"
            "    print('refused:', e)")
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "refused: lgp-edge runs on Linux and macOS; on Windows use WSL2\n"
    assert list(tmp_path.iterdir()) == []
