"""Switchable ONNX + Core ML multifunction package, on the tiny random pool."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lgp_edge.cli import main
from lgp_edge.errors import UsageError
from lgp_edge.pool.pool import load_pool

KEYS = ("ti6.0-5", "ti6.0-2+b6.3-5", "b6.0-5")  # an instance alone, a stitched one, the other instance


@pytest.fixture(scope="module")
def pool_and_manifest(tiny_pool: Path):
    return load_pool(tiny_pool)


@pytest.fixture(scope="module")
def switchable(pool_and_manifest, tmp_path_factory: pytest.TempPathFactory):
    from lgp_edge.export.switchable import build_switchable_onnx
    from lgp_edge.export.switchable_table import switch_entries

    pool, manifest = pool_and_manifest
    d = tmp_path_factory.mktemp("switch")
    entries = switch_entries(manifest, KEYS)
    return build_switchable_onnx(pool, entries, d / "sw.onnx", input_shape=(1, 1, 16, 16),
                                 metadata={"pool_id": manifest.spec.pool_id}, singles_dir=d / "singles")


def test_switchable_onnx_matches_torch_and_single_exports(switchable, pool_and_manifest):
    from lgp_edge.export.switchable_check import validate_switchable_onnx

    pool, _ = pool_and_manifest
    x = np.random.default_rng(0).standard_normal((3, 1, 16, 16)).astype(np.float32)
    checks = validate_switchable_onnx(switchable, pool, x, np.zeros(3, np.int64), data="synthetic", synthetic=True)
    assert [(c.runtime, c.key) for c in checks] == [(rt, k) for rt in ("onnxruntime", "openvino") for k in KEYS]
    for c in checks:
        assert c.passed, c.to_dict()
        assert c.vs_torch.max_abs_diff <= c.vs_torch.atol
        assert c.vs_single_max_abs_diff is not None and c.vs_single_max_abs_diff <= c.vs_torch.atol


def test_a_switchable_onnx_whose_preprocessing_metadata_is_not_the_pools_fails(switchable, pool_and_manifest):
    """The switchable file's metadata (mean, std, labels, which its EMBEDDING.md tells an app to read) was never
    read back: a file without them, or with others, passed every check."""
    from lgp_edge.export.switchable_check import validate_switchable_onnx

    pool, manifest = pool_and_manifest
    x = np.random.default_rng(0).standard_normal((3, 1, 16, 16)).astype(np.float32)
    checks = validate_switchable_onnx(switchable, pool, x, np.zeros(3, np.int64), data="synthetic", synthetic=True,
                                      runtimes=("onnxruntime",), preprocess=manifest.preprocess)
    assert checks and all(not c.passed and "metadata 'mean'" in c.vs_torch.note for c in checks), checks


def test_the_switchable_branches_are_compared_with_their_single_exports_on_a_bounded_subset(switchable,
                                                                                            pool_and_manifest):
    """Each branch was run against its single-descendant ONNX on every validation image in both runtimes: about a
    third of `export --switchable` (1,000 images x 2 runtimes x each descendant), for a wiring check that the
    branch's comparison with torch on all of them already makes. The subset's size is recorded."""
    from lgp_edge.export.switchable_check import SINGLE_CHECK_IMAGES, validate_switchable_onnx

    pool, _ = pool_and_manifest
    n = SINGLE_CHECK_IMAGES + 37
    x = np.random.default_rng(1).standard_normal((n, 1, 16, 16)).astype(np.float32)
    checks = validate_switchable_onnx(switchable, pool, x, np.zeros(n, np.int64), data="synthetic", synthetic=True,
                                      runtimes=("onnxruntime",))
    for c in checks:
        d = c.to_dict()
        assert c.passed and d["vs_torch"]["images"] == n and d["vs_single_images"] == SINGLE_CHECK_IMAGES, d


def test_each_weight_stored_once_under_its_pool_name(switchable, pool_and_manifest):
    import onnx

    pool, _ = pool_and_manifest
    m = onnx.load(str(switchable.path))
    names = [t.name for t in m.graph.initializer]
    assert len(names) == len(set(names))
    pool_names = dict(pool.named_parameters())
    # no tensor appears twice (by content), and every stored tensor is a pool parameter under its own name
    contents = [(t.data_type, tuple(t.dims), t.raw_data) for t in m.graph.initializer]
    assert len(contents) == len(set(contents))
    # each stored tensor holds the pool parameter it is named after (NAME.T: a transpose folded at export)
    from onnx import numpy_helper

    for t in m.graph.initializer:
        base = t.name.removesuffix(".T")
        assert base in pool_names, t.name
        want = pool_names[base].detach().numpy()
        np.testing.assert_array_equal(numpy_helper.to_array(t), want.T if t.name.endswith(".T") else want)
    used = {id(p): p for k in KEYS for p in pool.descendant(k).parameters()}
    assert switchable.initializer_bytes <= sum(p.numel() * 4 for p in used.values()) + 1024
    # what sharing must save: every parameter used by k > 1 of the descendants, (k - 1) times
    uses: dict[int, int] = {}
    for k in KEYS:
        for p in pool.descendant(k).parameters():
            uses[id(p)] = uses.get(id(p), 0) + 1
    shared = sum((uses[i] - 1) * p.numel() * 4 for i, p in used.items())
    assert shared > 100_000
    assert switchable.branch_initializer_bytes - switchable.initializer_bytes >= 0.9 * shared
    assert not any(n.op_type == "If" and n.input[0] == "" for n in m.graph.node)


def test_selector_input_table_and_out_of_range(switchable):
    from lgp_edge.export.switchable_check import open_switchable, read_table

    table = read_table(switchable.path)
    assert [(r["index"], r["key"]) for r in table] == list(enumerate(KEYS))
    assert all(r["params"] > 0 and r["flops"] > 0 for r in table)
    run = open_switchable(switchable.path, "onnxruntime")
    x = np.zeros((1, 1, 16, 16), np.float32)
    outs = [run(x, i) for i in range(len(KEYS))]
    assert not np.allclose(outs[0], outs[2])  # different descendants really run
    # an index outside 0..n-1 is an error in the app, never NaN logits (argmax of NaN would be class 0)
    for bad in (len(KEYS), -1, 1 << 40):
        with pytest.raises(Exception, match="descendant index out of range"):
            run(x, bad)
    assert np.isfinite(run(x, len(KEYS) - 1)).all()  # the session still works after the error


def test_out_of_range_descendant_in_openvino_is_nan_or_an_error(switchable):
    """OpenVINO's CPU plugin raises or returns NaN logits of the declared shape: never another class's answer, and
    never an empty array (a fresh request's first call with a bad index returned shape (0, 0), which passes an
    isnan check and crashes argmax, or lets a C app read ten floats that are not there)."""
    from lgp_edge.export.switchable_check import open_switchable

    x = np.zeros((1, 1, 16, 16), np.float32)
    for bad in (len(KEYS), -1, 100, (1 << 31) - 1):  # the CPU plugin reads the index as int32 (docs/SWITCHABLE.md)
        run = open_switchable(switchable.path, "openvino")  # a fresh request: the bad index is its first call
        for _ in range(2):
            try:
                out = run(x, bad)
            except RuntimeError as exc:
                assert "out of range" in str(exc) or "Gather" in str(exc)
            else:
                assert out.shape == (1, 10) and np.isnan(out).all(), out
        assert np.isfinite(run(x, 1)).all()  # the compiled model still answers in range
        try:
            out = run(x, bad)  # after a good call
        except RuntimeError:
            pass
        else:
            assert out.shape == (1, 10) and np.isnan(out).all(), out


def test_out_of_range_descendant_in_openvino_keeps_the_declared_shape_on_the_demo_pool(tmp_path: Path):
    """The demo pool's switchable model (what `export --switchable` ships): a fresh OpenVINO request's first call
    with a bad index returned logits of shape (0, 0)."""
    from lgp_edge.export.switchable import build_switchable_onnx
    from lgp_edge.export.switchable_check import open_switchable
    from lgp_edge.export.switchable_table import switch_entries
    from lgp_edge.pool.manifest import demo_pool_dir

    pool, manifest = load_pool(demo_pool_dir())
    keys = [d.key for d in manifest.descendants][:3]
    sw = build_switchable_onnx(pool, switch_entries(manifest, keys), tmp_path / "sw.onnx",
                               input_shape=(1, 1, 28, 28))
    x = np.zeros((1, 1, 28, 28), np.float32)
    for bad in (3, -1):
        out = open_switchable(sw.path, "openvino")(x, bad)
        assert out.shape == (1, 10) and np.isnan(out).all(), out


def test_one_descendant_needs_no_if(pool_and_manifest, tmp_path: Path):
    import onnx

    from lgp_edge.export.switchable import build_switchable_onnx
    from lgp_edge.export.switchable_check import open_switchable
    from lgp_edge.export.switchable_table import switch_entries

    pool, manifest = pool_and_manifest
    sw = build_switchable_onnx(pool, switch_entries(manifest, ["ti6.0-5"]), tmp_path / "one.onnx",
                               input_shape=(1, 1, 16, 16))
    assert "If" not in {n.op_type for n in onnx.load(str(sw.path)).graph.node}
    run = open_switchable(sw.path, "onnxruntime")
    x = np.random.default_rng(1).standard_normal((1, 1, 16, 16)).astype(np.float32)
    import torch

    with torch.no_grad():
        ref = pool.descendant("ti6.0-5")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(x, 0), ref, atol=1e-5)
    with pytest.raises(Exception, match="descendant index out of range"):
        run(x, 1)


def test_switch_entries_refuse_bad_selections(pool_and_manifest):
    from lgp_edge.export.switchable_table import switch_entries

    pool, manifest = pool_and_manifest
    bad = (((), "empty"), ((" ",), "empty"), (("b6.0-5", "b6.0-5"), "twice"), (("b6.9-9",), "no descendant"))
    for keys, msg in bad:
        with pytest.raises(UsageError, match=msg):
            switch_entries(manifest, keys)


def test_function_names_are_valid_unique_and_recorded(pool_and_manifest):
    from lgp_edge.export.coreml_multifunction import function_names, multifunction_target

    pool, _ = pool_and_manifest
    keys = [d.key for d in pool.descendants()]
    names = function_names(keys)
    assert len(set(names.values())) == len(keys) == 18
    assert names["ti6.0-4+b6.5-5"] == "ti6_0to4__b6_5to5" and names["ti6.0-5+b6.5-5"] == "ti6_0to5__b6_5to5"
    assert all(n.replace("_", "a").isalnum() and not n[0].isdigit() for n in names.values())
    assert multifunction_target("iOS17") == "iOS18" and multifunction_target("macOS16") == "macOS16"


def test_coreml_multifunction_package(pool_and_manifest, tmp_path: Path):
    import coremltools as ct  # never skipped (as in test_export): scripts/install.sh installs lgp-edge[coreml]

    from lgp_edge.export.coreml_multifunction import build_multifunction_mlpackage
    from lgp_edge.export.switchable_table import switch_entries

    pool, manifest = pool_and_manifest
    keys = ("b6.0-5", "ti6.0-2+b6.3-5")
    entries = switch_entries(manifest, keys)
    pkg = build_multifunction_mlpackage(pool, entries, tmp_path / "m.mlpackage", preprocess=manifest.preprocess,
                                        input_shape=(1, 1, 16, 16), precision="fp16", deployment="iOS17")
    assert pkg.passed, pkg.problems
    assert dict(pkg.functions) == {"b6.0-5": "b6_0to5", "ti6.0-2+b6.3-5": "ti6_0to2__b6_3to5"}
    assert pkg.deployment == "iOS18" and pkg.default_function == "b6_0to5"
    # b6's blocks 3-5, norm and head are in both functions: stored once (fp16)
    first = {id(p) for p in pool.descendant(keys[0]).parameters()}
    shared = sum(p.numel() * 2 for p in pool.descendant(keys[1]).parameters() if id(p) in first)
    assert pkg.singles_weight_bytes - pkg.weight_bytes >= 0.8 * shared > 0
    used = {id(p): p for k in keys for p in pool.descendant(k).parameters()}
    assert pkg.weight_bytes <= 1.1 * sum(p.numel() * 2 for p in used.values()) + 4096
    spec = ct.utils.load_spec(str(tmp_path / "m.mlpackage"))
    table = json.loads(spec.description.metadata.userDefined["descendants"])
    assert [(r["key"], r["function"]) for r in table] == list(pkg.functions)
    # each function is checked as a single package is: its normalisation, colour space, labels and weights'
    # precision (none of them was: a package normalising with other constants passed)
    from lgp_edge.export.coreml_multifunction import check_multifunction

    names, meta = dict(pkg.functions), json.loads(json.dumps(dict(spec.description.metadata.userDefined)))
    pre = manifest.preprocess

    def problems(preprocess=pre, precision="fp16"):
        return check_multifunction(tmp_path / "m.mlpackage", names, "b6_0to5", preprocess, (1, 1, 16, 16), meta,
                                   precision=precision)

    assert problems() == []
    other_std = dataclasses.replace(pre, std=tuple(v * 2 for v in pre.std))
    assert sum("input scale" in m for m in problems(other_std)) == 2  # in each function, named
    assert any(m.startswith("ti6_0to2__b6_3to5: ") and "input scale" in m for m in problems(other_std))
    other_mean = dataclasses.replace(pre, mean=tuple(v + 0.25 for v in pre.mean))
    assert sum("input bias" in m for m in problems(other_mean)) == 2
    swapped = dataclasses.replace(pre, labels=tuple(reversed(pre.labels)))
    assert sum("class labels" in m for m in problems(swapped)) == 2
    assert sum("FLOAT16" in m for m in problems(precision="fp32")) == 2
    rgb = dataclasses.replace(pre, in_chans=3, mean=pre.mean * 3, std=pre.std * 3)
    assert any("colour space" in m for m in problems(rgb))


@pytest.fixture()
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "store" / "store.sqlite"))  # never the user's store


@pytest.mark.parametrize("args, msg", [
    (["--target", "jetson-nano", "--switchable"], "cannot hold a switchable model"),
    (["--target", "cpu", "--switchable", "--descendants", ","], "names no descendant"),
    (["--target", "cpu", "--switchable", "--descendants", "ti6.0-5,nope"], "no descendant 'nope'"),
    (["--target", "cpu", "--front"], "add --switchable"),
    (["--target", "cpu", "--switchable", "--format", "openvino"], "switchable model on onnxruntime is onnx"),
    # accepted and ignored before: a batch-1 input, an fp32 artifact under an int8 profile
    (["--target", "cpu", "--switchable", "--dynamic-batch"], "--dynamic-batch is not available with --switchable"),
    # it said "its input is batch 1", which a batch-8 profile's switchable model is not
    (["--target", "cpu", "--switchable", "--dynamic-batch"], "its input has the profile's static batch"),
    (["--target", "cpu", "--switchable", "--precision", "int8"], "which --switchable does not export"),
])
def test_cli_bad_input_exit_2_nothing_written(tiny_pool, tmp_path, store, capsys, args, msg):
    work = tmp_path / "work"
    work.mkdir()
    assert main(["export", "--pool", str(tiny_pool), "--out", str(work / "out"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
    assert list(work.iterdir()) == []  # no OUT, no temporary directory


def test_cli_switchable_onnx(tiny_pool, tmp_path, store, capsys):
    out = tmp_path / "out"
    rc = main(["export", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--target", "cpu", "--switchable",
               "--descendants", "ti6.0-5,ti6.0-4+b6.5-5", "--val-images", "4", "--data", "synthetic", "--json"])
    assert rc == 0
    mf = json.loads(capsys.readouterr().out)
    assert mf == json.loads((out / "manifest.json").read_text())
    assert mf["status"] == "passed" and [d["key"] for d in mf["descendants"]] == ["ti6.0-5", "ti6.0-4+b6.5-5"]
    (art,) = mf["artifacts"]
    assert art["path"] == "model.switchable.onnx" and (out / art["path"]).is_file()
    assert {v["runtime"] for v in art["validation"]} == {"onnxruntime", "openvino"}
    # the size it is compared with is said to be the unsimplified singles, not the shipped single exports
    assert "before simplification" in art["size"]["singles"] and art["size"]["single_onnx_sum_bytes"] > 0
    assert all(d["latency_ms"] > 0 and d["latency_source"] == "predicted" for d in mf["descendants"])
    emb = (out / "EMBEDDING.md").read_text()
    assert "descendant" in emb and "ti6.0-4+b6.5-5" in emb and "LongBuffer" in emb
    # its Python sample runs as written beside the file (it named an `x` and an `index` it never made)
    import re
    import subprocess
    import sys

    from PIL import Image

    (code,) = re.findall(r"```python\n(.*?)```", emb, re.S)
    assert 'providers=["CPUExecutionProvider"]' in code, code  # ONNX Runtime 1.9-1.15 GPU builds require it
    Image.new("L", (40, 30), 128).save(out / "photo.png")
    run = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=120)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out / art["path"]), load_external_data=False).metadata_props}
    assert run.returncode == 0, run.stderr[-1500:]
    key, label = run.stdout.split()
    assert key in {"ti6.0-5", "ti6.0-4+b6.5-5"} and label in json.loads(props["labels"])


def test_docs_snippets_match_the_generated_embedding():
    from lgp_edge.export.switchable_docs import kotlin_sample, swift_sample

    doc = (Path(__file__).resolve().parent.parent / "docs" / "SWITCHABLE.md").read_text()
    assert kotlin_sample() in doc and swift_sample() in doc


def test_a_phones_switchable_export_says_the_ort_file_is_not_written(tiny_pool, tmp_path, store, capsys, caplog):
    """android-arm64's profile asks for onnx and ort: a switchable export wrote the ONNX only and said nothing, and
    `--format ort` was refused with advice about OpenVINO, which a phone does not run."""
    out = tmp_path / "out"
    assert main(["export", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--target", "android-arm64",
                 "--switchable", "--descendants", "ti6.0-5,b6.0-5", "--val-images", "4", "--data", "synthetic"]) == 0
    said = caplog.text + capsys.readouterr().err
    assert "model.switchable.onnx" in said and "ort" in said and caplog.text.count("not written") == 1, said
    assert main(["export", "--pool", str(tiny_pool), "--out", str(tmp_path / "o2"), "--quiet", "--target",
                 "android-arm64", "--switchable", "--format", "ort"]) == 2
    err = capsys.readouterr().err
    assert "OpenVINO" not in err and "--format onnx" in err, err


def test_a_switchable_export_carries_the_thread_count_of_its_latencies(tiny_pool, tmp_path, store, capsys):
    """The table's latencies were the 2-thread ones, but no thread count was in the manifest, the model's table,
    EMBEDDING.md's table or its Python sample (which left ONNX Runtime at one thread per core)."""
    import onnx

    out = tmp_path / "out"
    assert main(["export", "--pool", str(tiny_pool), "--out", str(out), "--quiet", "--target", "cpu", "--threads", "1",
                 "--switchable", "--descendants", "ti6.0-5,b6.0-5", "--val-images", "4", "--data", "synthetic"]) == 0
    mf = json.loads((out / "manifest.json").read_text())
    assert [d["threads"] for d in mf["descendants"]] == [1, 1]
    props = {p.key: p.value for p in onnx.load(str(out / "model.switchable.onnx"), load_external_data=False)
             .metadata_props}
    assert [r["threads"] for r in json.loads(props["descendants"])] == [1, 1]
    emb = (out / "EMBEDDING.md").read_text()
    assert "p90 ms on target, 1 thread |" in emb and "so.intra_op_num_threads = 1" in emb
    assert "SwitchableClassifier(context, bytes, threads = 1)" in emb and "setIntraOpNumThreads(threads)" in emb


def test_a_switchable_front_keeps_the_profiles_budgets(tiny_pool, tmp_path, store, capsys, caplog):
    """`--memory-mb` (like a profile's own budgets) was accepted and ignored: the default front held descendants
    over it, and the manifest gave the budget as if applied."""
    from lgp_edge.pool.manifest import read_manifest
    from lgp_edge.select import memory_mb

    m = read_manifest(tiny_pool)
    mems = {r.key: memory_mb(m.spec, r, "fp32", 1) for r in m.descendants if r.top1 is not None}
    cap = sorted(mems.values())[len(mems) // 2]
    base = ["export", "--pool", str(tiny_pool), "--quiet", "--target", "cpu", "--switchable", "--val-images", "4",
            "--data", "synthetic"]
    out = tmp_path / "out"
    assert main([*base, "--out", str(out), "--memory-mb", str(cap)]) == 0
    mf = json.loads((out / "manifest.json").read_text())
    keys = [d["key"] for d in mf["descendants"]]
    assert keys and all(mems[k] <= cap for k in keys), (keys, cap)
    assert "within" in mf["selection"] and "MB" in mf["selection"]
    # nothing within the budget: select's one line, exit 2, nothing written
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "none"), "--memory-mb", str(min(mems.values()) / 2)]) == 2
    assert "no descendant" in capsys.readouterr().err and not (tmp_path / "none").exists()
    # a descendant named outside the budget is exported as asked, and said so
    big = max(mems, key=mems.get)
    assert main([*base, "--out", str(tmp_path / "named"), "--memory-mb", str(cap), "--descendants", big]) == 0
    assert f"{big} does not fit profile cpu" in caplog.text and "(--descendants)" in caplog.text
