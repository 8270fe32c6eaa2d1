"""Every exporter over every built-in target: the tiny pool exported in every format the target file lists.

Each target's own profile (its precision), with the formats widened to all those the target takes, goes
through the export pipeline; every artifact must be written, validated for real where it runs here, and
described by a manifest whose hashes match the files. TensorRT is not installed here, so a TensorRT target
gets what a machine without it writes: the ONNX at the target's opset, checked against that TensorRT's
parser, with build_engine.sh, build_engine.py, fp32_layers.txt and the board's bench script, and no
model.plan.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import onnx
import pytest

from lgp_edge.export.onnx_export import onnx_opset
from lgp_edge.export.pipeline import ExportRequest, export_profile
from lgp_edge.export.registry import EXPORTERS, get_exporter
from lgp_edge.fileio import sha256_file, tree_sha256
from lgp_edge.outdir import recognise_output
from lgp_edge.profiles import load_profile, with_overrides
from lgp_edge.specs import FORMATS
from lgp_edge.targets import load_target, targets_root

TARGETS = sorted(p.stem for p in targets_root().glob("*.toml"))
NUMERIC = {"onnx", "ort", "openvino", "tensorrt"}  # formats whose artifact runs here (TensorRT: its ONNX)


def test_the_registry_has_one_exporter_per_format() -> None:
    assert set(EXPORTERS) == set(FORMATS)
    for fmt in FORMATS:
        exporter = get_exporter(fmt)
        assert exporter.format == fmt and exporter.extra in ("export", "coreml")


def test_every_builtin_target_is_covered() -> None:
    assert {"cpu", "jetson-nano", "jetson-orin-nano", "raspberry-pi-5", "android-arm64", "iphone"} <= set(TARGETS)


def _check_artifact(out: Path, art: dict) -> None:
    path = out / art["path"]
    assert path.exists(), art["path"]
    assert art["sha256"] == (tree_sha256(path) if path.is_dir() else sha256_file(path))
    v = art["validation"]
    assert v["passed"] is True, v
    if art["format"] in NUMERIC:
        assert v["kind"] == "numeric" and v["max_abs_diff"] <= v["atol"] and v["top1_agreement"] >= 0.99
    else:
        assert v["kind"] == "structural"
    for f in art["files"]:
        assert (out / f["path"]).exists()
        if f["sha256"]:
            assert sha256_file(out / f["path"]) == f["sha256"]


def _check_tensorrt(out: Path, art: dict, target_name: str) -> None:
    from lgp_edge.export.tensorrt import check_operators, trt_version
    from lgp_edge.export.trt_ops import max_opset

    target = load_target(target_name)
    assert art["path"] == "model.onnx" and not (out / "model.plan").exists()
    assert onnx_opset(onnx.load(str(out / "model.onnx"))) <= max_opset(trt_version(target))
    check_operators(out / "model.onnx", target)  # raises for an operator that TensorRT cannot parse
    files = {f["path"] for f in art["files"]}
    assert {"build_engine.sh", "build_engine.py", "fp32_layers.txt", "bench.sh"} <= files
    for f in ("build_engine.sh", "build_engine.py", "bench.sh"):
        assert os.access(out / f, os.X_OK), f
    subprocess.run(["sh", "-n", str(out / "build_engine.sh")], check=True)
    layers = [s for s in (out / "fp32_layers.txt").read_text().splitlines() if s and not s.startswith("#")]
    assert layers if art["precision"] == "fp16" else not layers


@pytest.mark.parametrize("name", TARGETS)
def test_every_target_exports_every_format_it_lists(name: str, tiny_pool: Path, tmp_path: Path) -> None:
    target = load_target(name)
    # The cpu target's latencies are predicted from this host's calibration, measured in the test: on a loaded
    # machine even the tiny pool can miss the profile's 10 ms, and the budget is not what this test is about.
    profile = with_overrides(load_profile(name), formats=target.formats, budget_ms=1e4 if name == "cpu" else None)
    out = tmp_path / "out"
    result = export_profile(ExportRequest(profile=profile, target=target, out=out, pool=tiny_pool, val_images=8))
    mf = json.loads((out / "manifest.json").read_text())
    assert mf == json.loads(json.dumps(result.manifest))
    assert mf["kind"] == "lgp-edge export" and mf["status"] == "passed" and mf["validation"]["passed"] is True
    assert mf["target"]["name"] == name and mf["profile"]["precision"] == profile.precision
    assert {a["format"] for a in mf["artifacts"]} == set(target.formats)
    for art in mf["artifacts"]:
        _check_artifact(out, art)
    if "tensorrt" in target.formats:
        _check_tensorrt(out, next(a for a in mf["artifacts"] if a["format"] == "tensorrt"), name)
    if "coreml" in target.formats:
        assert {"validate_coreml.py", "coreml_validation.npz"} <= {p.name for p in out.iterdir()}
    for f in mf["files"]:
        if f["sha256"]:
            assert sha256_file(out / f["path"]) == f["sha256"]
    assert (out / "EMBEDDING.md").is_file()
    assert recognise_output(out) == ("export", [])  # every file in OUT is named by the manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no OUT.failed, no temporary directory


def test_switchable_export_that_fails_validation_is_kept_in_out_failed(tiny_pool: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from lgp_edge.errors import ValidationFailed
    from lgp_edge.export import validate
    from lgp_edge.export.switchable_export import SwitchableRequest, export_switchable

    monkeypatch.setitem(validate.TOLERANCES, "fp32", validate.Tolerance(atol=0.0, rtol=0.0, min_agreement=1.0))
    profile = with_overrides(load_profile("cpu"), formats=("onnx",))
    out = tmp_path / "out"
    req = SwitchableRequest(profile=profile, target=load_target("cpu"), out=out, pool=tiny_pool,
                            keys=("ti6.0-5", "b6.0-5"), val_images=4)
    with pytest.raises(ValidationFailed, match="nothing written to"):
        export_switchable(req)
    assert not out.exists()
    failed = json.loads((tmp_path / "out.failed" / "manifest.json").read_text())
    assert failed["kind"] == "lgp-edge export --switchable" and failed["status"] == "failed"
    assert failed["validation"]["passed"] is False and failed["artifacts"][0]["passed"] is False
    assert (tmp_path / "out.failed" / "model.switchable.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.failed"]


def test_every_target_the_embedding_guides_name_exists() -> None:
    """The x86 ONNX Runtime guide said "export for a phone target (--target android)", which is refused as an
    unknown target (the phone target is android-arm64)."""
    import re

    from lgp_edge.targets import known_targets

    templates = Path(__file__).resolve().parent.parent / "lgp_edge" / "data" / "templates"
    named = {m for f in templates.rglob("*") if f.is_file()
             for m in re.findall(r"--target[ =]([a-z0-9][a-z0-9-]*)", f.read_text(errors="replace"))}
    assert named and named <= set(known_targets()), named - set(known_targets())


def test_an_installed_backend_that_cannot_be_imported_is_refused_in_one_line_before_the_work(tmp_path, monkeypatch):
    """A broken OpenVINO (its library missing: the import raises) passed the presence check, which never imports:
    `export --target cpu` selected, exported and validated the ONNX file for 20 s, then ended in a traceback
    and exit 1, the code of a failed validation. A missing one was refused in one line; a broken one is too,
    saying it is installed, why it does not import, and how to reinstall it."""
    import subprocess
    import sys

    shadow = tmp_path / "shadow"
    (shadow / "openvino").mkdir(parents=True)
    (shadow / "openvino" / "__init__.py").write_text(
        'raise RuntimeError("libopenvino.so.2600: cannot open shared object file")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(Path(__file__).resolve().parent.parent)]),
           "LGP_EDGE_STORE": str(tmp_path / "s.sqlite")}
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "lgp_edge", "export", "--target", "cpu", "--out", str(out), "-q"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    assert "'openvino'" in line and "cannot be imported" in line and "libopenvino.so" in line, line
    assert "pip install" in line and not out.exists()
    from lgp_edge.backends import require_importable
    from lgp_edge.errors import BackendMissing

    monkeypatch.syspath_prepend(str(shadow))
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    with pytest.raises(BackendMissing, match="installed but cannot be imported"):
        require_importable("openvino", "export", "OpenVINO export")


def test_importing_a_backend_to_check_it_keeps_its_import_time_notes_off_the_terminal() -> None:
    """Checking Core ML's package by importing it let its ten import-time warnings (scikit-learn and torch
    versions, the macOS-only proxies) reach every iPhone export's terminal, where its first import inside the
    conversion's quiet() had kept them off."""
    import sys

    code = ("import logging; logging.basicConfig(); from lgp_edge.backends import import_failure; "
            "assert import_failure('coremltools') is None")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stderr == "", res.stderr[-1500:]
