"""What an int8 export claims and on how much: enough validation images for its gates, calibration in whole
batches (the count recorded is the count used), --calib-images checked before any work, the headline top-1
labelled as torch fp32 beside the int8 files' own, the CPU the int8 check ran on, and the same OpenVINO int8
IR bytes from the same export."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from helpers import error_lines, manifest, run_cli

INT8_VAL = "300"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> object:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LGP_EDGE_STORE", str(tmp_path_factory.mktemp("store") / "store.sqlite"))
        yield mp


def _profiles(root: Path, batch: int) -> Path:
    """A profiles directory holding ``b<batch>``: cpu, int8, ONNX and OpenVINO, at ``batch``, no budget."""
    d = root / "profiles"
    d.mkdir(exist_ok=True)
    (d / f"b{batch}.toml").write_text(f'name = "b{batch}"\ndescription = "int8 at batch {batch}"\ntarget = "cpu"\n'
                                      'latency_budget_ms = 1e6\nmemory_budget_mb = 1e6\nprecision = "int8"\n'
                                      f'formats = ["onnx", "openvino"]\nbatch = {batch}\n')
    return d


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], out: Path) -> str:
    rc, err = run_cli(argv, capsys)
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists() and not list(out.parent.glob(f"{out.name}*"))
    return lines[0]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals come before the selection (host calibration) and the images are loaded."""
    import lgp_edge.export.pipeline as pipeline

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr(pipeline, "choose", boom)
    monkeypatch.setattr(pipeline, "load_images", boom)


# ------------------------------------------------------------------------------------- 1: validation images
def test_int8_needs_300_validation_images(env: object, tiny_pool: Path, tmp_path: Path, no_work: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--val-images 1 passed the int8 gates (agreement >= 0.90, top-1 change <= 2 points) on one image."""
    out = tmp_path / "out"
    line = _refused(["export", "--pool", str(tiny_pool), "--target", "cpu", "--precision", "int8", "--format",
                     "onnx", "--val-images", "1", "--out", str(out), "--quiet"], capsys, out)
    assert "--val-images" in line and "300" in line and "int8" in line


def test_int8_gates_fail_on_too_few_real_images() -> None:
    """A library caller's int8 check on too few labelled images fails (never passes on a handful)."""
    import numpy as np

    from lgp_edge.export.base import ValidationSet
    from lgp_edge.export.validate import TOLERANCES, compare

    logits = np.eye(10, dtype=np.float32)[np.arange(20) % 10]
    labels = np.arange(20) % 10
    vset = ValidationSet(images=np.zeros((20, 1, 2, 2), np.float32), labels=labels, reference=logits,
                         data="fashion-mnist", synthetic=False)
    report = compare(logits, vset, TOLERANCES["int8"])
    assert not report.passed and "20 validation images" in report.note
    assert compare(logits, vset, TOLERANCES["fp32"]).passed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("precision", ["int8", "fp16", "fp32", "synthetic int8"])
def test_non_finite_logits_fail_every_check(bad: float, precision: str) -> None:
    """int8 has no logit tolerance: 15 of 1,000 images with NaN or inf logits (argmax reads a NaN row as class
    0) stayed inside its agreement and top-1 gates, and the export passed with max |diff| null."""
    import numpy as np

    from lgp_edge.export.base import ValidationSet
    from lgp_edge.export.validate import TOLERANCES, compare

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    logits = (np.eye(10, dtype=np.float32)[labels] * 5 + rng.normal(0, 0.1, (1000, 10))).astype(np.float32)
    vset = ValidationSet(images=np.zeros((1000, 1, 2, 2), np.float32), labels=labels, reference=logits,
                         data="synthetic" if "synthetic" in precision else "fashion-mnist",
                         synthetic="synthetic" in precision)
    tol = TOLERANCES[precision.split()[-1]]
    assert compare(logits, vset, tol).passed
    broken = logits.copy()
    broken[:15, 3] = bad
    report = compare(broken, vset, tol)
    assert not report.passed and "15 of 1000 images" in report.note and "non-finite" in report.note


# ---------------------------------------------------------------------------------- 2: calibration batches
def test_calibration_is_whole_batches_refused_below_300(env: object, tiny_pool: Path, tmp_path: Path,
                                                        no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Batch 200, 300 images: 200 were used and 300 recorded; batch 400 crashed in NNCF."""
    out = tmp_path / "out"
    line = _refused(["export", "--pool", str(tiny_pool), "--profiles-dir", str(_profiles(tmp_path, 200)),
                     "--profile", "b200", "--calib-images", "300", "--val-images", INT8_VAL, "--out", str(out),
                     "--quiet"], capsys, out)
    assert "200" in line and "--calib-images 400" in line
    line = _refused(["export", "--pool", str(tiny_pool), "--profiles-dir", str(_profiles(tmp_path, 400)),
                     "--profile", "b400", "--format", "openvino", "--calib-images", "300", "--val-images", INT8_VAL,
                     "--out", str(out), "--quiet"], capsys, out)
    assert "0 images" in line and "--calib-images 400" in line
    # the default is whole batches (300 at batch 8 made 296: every batch-8 int8 export was refused until
    # --calib-images 304 was passed): no refusal, the export goes on to its work
    for batch in (8, 200):
        with pytest.raises(AssertionError, match="work started before the refusal"):
            run_cli(["export", "--pool", str(tiny_pool), "--profiles-dir", str(_profiles(tmp_path, batch)),
                     "--profile", f"b{batch}", "--val-images", INT8_VAL, "--out", str(out), "--quiet"], capsys)


def test_calibration_count_recorded_is_the_count_used(env: object, tiny_pool: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Batch 8, --calib-images 307: both calibration loops feed 38 whole batches (304 images); 307 was recorded."""
    out = tmp_path / "out"
    rc, err = run_cli(["export", "--pool", str(tiny_pool), "--profiles-dir", str(_profiles(tmp_path, 8)),
                       "--profile", "b8", "--calib-images", "307", "--val-images", INT8_VAL, "--out", str(out),
                       "--quiet"], capsys)
    assert rc == 0, err
    assert any("304 of the 307" in r.getMessage() for r in caplog.records)  # the leftover images are said
    mf = manifest(out)
    assert mf["validation"]["calibration_images"] == 304
    for a in mf["artifacts"]:
        assert a["quantization"]["calibration_images"] == 304
        assert "304" in a["note"] and "307" not in a["note"]
    text = (out / "EMBEDDING.md").read_text()
    assert "calibrated on 304" in text and "307" not in text


# --------------------------------------------------------------------------------------- 5: --calib-images
def test_calib_images_parser_states_the_real_minimum(env: object, tiny_pool: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    line = _refused(["export", "--pool", str(tiny_pool), "--profile", "cpu-int8", "--calib-images", "0", "--out",
                     str(out), "--quiet"], capsys, out)
    assert "--calib-images" in line and ">= 300" in line and ">= 1" not in line


def test_calib_images_refused_for_a_non_int8_export(env: object, tiny_pool: Path, tmp_path: Path, no_work: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """--calib-images with an fp32 export was accepted and recorded as 0 calibration images."""
    out = tmp_path / "out"
    line = _refused(["export", "--pool", str(tiny_pool), "--target", "cpu", "--format", "onnx", "--calib-images",
                     "500", "--out", str(out), "--quiet"], capsys, out)
    assert "--calib-images" in line and "int8" in line and "fp32" in line
    line = _refused(["export", "--pool", str(tiny_pool), "--target", "cpu", "--switchable", "--calib-images", "500",
                     "--out", str(out), "--quiet"], capsys, out)
    assert "--calib-images" in line and "int8" in line


def test_calib_images_over_the_training_split_refused_before_loading(env: object, tiny_pool: Path, tmp_path: Path,
                                                                     no_work: None,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """More than Fashion-MNIST's 60,000 training images was refused only after the images were loaded."""
    out = tmp_path / "out"
    line = _refused(["export", "--pool", str(tiny_pool), "--target", "cpu", "--precision", "int8", "--format",
                     "onnx", "--data", "fashion-mnist", "--calib-images", "70000", "--out", str(out), "--quiet"],
                    capsys, out)
    assert "70000" in line and "60000" in line


def test_a_dataset_too_small_to_calibrate_is_refused_without_impossible_advice(
        env: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """36 training images: the refusal advised '--calib-images 36 or fewer', which is refused (>= 300)."""
    from PIL import Image

    for split, n in (("train", 18), ("val", 6)):
        for c in ("cat", "dog"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / split / c / f"{i}.png")
    out = tmp_path / "out"
    line = _refused(["export", "--target", "cpu", "--precision", "int8", "--format", "onnx", "--data",
                     f"imagefolder:{tmp_path / 'imgs'}", "--out", str(out), "--quiet"], capsys, out)
    assert "36 training images" in line and "at least 300" in line and "or fewer" not in line, line


def test_whole_calibration_batches_the_dataset_cannot_fill_are_refused_without_a_loop(
        env: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """302 training images at batch 8: the default 300 made 296 ('pass --calib-images 304'), 304 was more than the
    302 there ('pass 302 or fewer'), 302 made 296 again: the advice went round in a circle."""
    from PIL import Image

    for split, n in (("train", 151), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / split / c / f"{i}.png")
    _profiles(tmp_path, 8)
    out = tmp_path / "out"
    base = ["export", "--profiles-dir", str(tmp_path / "profiles"), "--profile", "b8", "--format", "onnx", "--data",
            f"imagefolder:{tmp_path / 'imgs'}", "--out", str(out), "--quiet"]
    for argv in (base, [*base, "--calib-images", "304"], [*base, "--calib-images", "303"]):  # only --dynamic-batch
        line = _refused(argv, capsys, out)
        assert "302 training images" in line and "--dynamic-batch" in line and "--calib-images" not in line, line


def test_calibration_advice_is_a_count_the_dataset_can_give(env: object, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """80 training images at batch 8 with --calib-images 303 were advised '--calib-images 304', then refused for
    the dataset's size; 310 with --calib-images 400 were advised '304 or fewer', of which all but 304 are refused."""
    from PIL import Image

    _profiles(tmp_path, 8)
    for name, n in (("small", 40), ("mid", 155)):
        for split, k in (("train", n), ("val", 2)):
            for c in ("cat", "dog"):
                (tmp_path / name / split / c).mkdir(parents=True)
                for i in range(k):
                    Image.new("RGB", (4, 4)).save(tmp_path / name / split / c / f"{i}.png")
    out = tmp_path / "out"
    base = ["export", "--profiles-dir", str(tmp_path / "profiles"), "--profile", "b8", "--format", "onnx", "--out",
            str(out), "--quiet"]
    line = _refused([*base, "--data", f"imagefolder:{tmp_path / 'small'}", "--calib-images", "303"], capsys, out)
    assert "at least 300 training images" in line and "80 training images" in line, line
    assert "--calib-images 304" not in line, line
    line = _refused([*base, "--data", f"imagefolder:{tmp_path / 'mid'}", "--calib-images", "400"], capsys, out)
    assert "310 training images" in line and "--calib-images 304 (its whole batches of 8)" in line, line
    assert "or fewer" not in line, line


def test_training_split_size_from_the_idx_header() -> None:
    from lgp_edge.datasets import training_images

    assert training_images("fashion-mnist") == 60000
    assert training_images("imagefolder:/nowhere") is None


def test_image_folder_training_split_counted_as_it_is_loaded(tmp_path: Path) -> None:
    """An image folder's training images are counted before an int8 export loads them (a too-large
    --calib-images was found only once the export loaded the folder): the count the loader gets, files of other
    kinds left out."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    from lgp_edge.datasets import training_images

    for split, n in (("train", 5), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8)).save(tmp_path / split / c / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "dog" / "x.JPEG").write_bytes((tmp_path / "train" / "dog" / "0.png").read_bytes())
    assert training_images(f"imagefolder:{tmp_path}") == len(ImageFolder(str(tmp_path / "train"))) == 11


def test_int8_instructions_from_cpuinfo() -> None:
    from lgp_edge.profiling.host import int8_instructions

    x86 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\nprocessor\t: 1\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddot i8mm sve\n"
    assert int8_instructions(x86) == ["avx2", "avx512_vnni"]
    assert int8_instructions(arm) == ["asimddot", "i8mm"]
    assert int8_instructions("") == []


def test_an_intel_mac_with_vnni_keeps_8_bit_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS's sysctl was never asked for AVX-512 VNNI: every Intel Mac read as a CPU whose int8 kernels saturate,
    and a Cascade Lake Mac Pro got 7-bit weights it does not need."""
    from lgp_edge.export.quantize import u8s8_saturates
    from lgp_edge.profiling import host

    answers = {"hw.optional.avx2_0": 1, "hw.optional.avx512f": 1, "hw.optional.avx512vnni": 1}
    monkeypatch.setattr(host, "_darwin", lambda: True)
    monkeypatch.setattr(host, "_sysctl_int", lambda name: answers.get(name, 0))
    isa = host.int8_instructions()
    assert "avx512_vnni" in isa and not u8s8_saturates(isa, "x86_64")
    answers["hw.optional.avx512vnni"] = 0  # a Kaby Lake MacBook: saturates
    assert u8s8_saturates(host.int8_instructions(), "x86_64")


# ------------------------------------------------------------------------------------- 6: OpenVINO bytes
def test_openvino_int8_ir_bytes_are_the_same_for_the_same_export(tiny_pool: Path, tmp_path: Path) -> None:
    """Nodes OpenVINO named from a process-wide counter (Constant_186669) gave other model.xml bytes on each run."""
    import dataclasses

    import numpy as np
    from helpers import fresh_inputs

    from lgp_edge.export.base import ExportContext, ValidationSet
    from lgp_edge.export.openvino import OpenVINOExporter
    from lgp_edge.export.validate import reference_logits
    from lgp_edge.pool.pool import load_pool
    from lgp_edge.profiles import load_profile
    from lgp_edge.progress import NULL
    from lgp_edge.targets import load_target

    pool, mf = load_pool(tiny_pool)
    rec = mf.descendants[-1]
    model = pool.descendant(rec.key).eval()
    x = fresh_inputs(32, 1)
    vset = ValidationSet(images=x, labels=np.zeros(32, np.int64), reference=reference_logits(model, x),
                         data="synthetic", synthetic=True)
    profile = dataclasses.replace(load_profile("cpu-int8"), formats=("openvino",))
    onnx_cache: dict = {}  # both convert from one ONNX file
    for name in ("a", "b"):  # in one process: the counter has moved on for the second export
        (tmp_path / name).mkdir()
        ctx = ExportContext(out_dir=tmp_path / name, model=model, record=rec, pool_id=mf.spec.pool_id,
                            preprocess=mf.preprocess, profile=profile, target=load_target("cpu"), opset=None,
                            dynamic_batch=False, validation=vset, calibration=fresh_inputs(300, 2), reporter=NULL,
                            onnx_cache=onnx_cache)
        (art,) = OpenVINOExporter().export(ctx)
        assert art.precision == "int8" and art.validation.passed
    assert filecmp.cmp(tmp_path / "a" / "model.bin", tmp_path / "b" / "model.bin", shallow=False)
    assert filecmp.cmp(tmp_path / "a" / "model.xml", tmp_path / "b" / "model.xml", shallow=False)


def test_a_report_that_fails_twice_says_failed_once() -> None:
    """An ONNX file with wrong logits and wrong metadata got a note with two 'FAILED:' parts ('...| FAILED: max
    |diff| ...; FAILED: metadata ...'): the metadata's failures are the comparison's, in one list."""
    import numpy as np

    from lgp_edge.export.base import ValidationSet
    from lgp_edge.export.validate import TOLERANCES, compare

    labels = np.arange(200) % 10
    logits = np.eye(10, dtype=np.float32)[labels] * 5
    vset = ValidationSet(images=np.zeros((200, 1, 2, 2), np.float32), labels=labels, reference=logits,
                         data="fashion-mnist", synthetic=False)
    report = compare(logits + 1.0, vset, TOLERANCES["fp32"], note="ONNX Runtime CPU, fp32",
                     failures=["metadata 'mean' of the file is '[0.0]', the model takes [0.286]"])
    assert not report.passed
    assert report.note.count("FAILED") == 1, report.note
    assert "max |diff|" in report.note and "metadata 'mean'" in report.note, report.note
    alone = compare(logits, vset, TOLERANCES["fp32"], failures=["metadata 'labels' of the file is None"])
    assert not alone.passed and alone.note == "FAILED: metadata 'labels' of the file is None", alone.note


def _labelled(n: int = 1000):  # noqa: ANN202
    import numpy as np

    from lgp_edge.export.base import ValidationSet

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    logits = (np.eye(10, dtype=np.float32)[labels] * 5 + rng.normal(0, 0.1, (n, 10))).astype(np.float32)
    return labels, logits, ValidationSet(images=np.zeros((n, 1, 2, 2), np.float32), labels=labels, reference=logits,
                                         data="fashion-mnist", synthetic=False)


def _relabel(logits, rows, cls):  # noqa: ANN001, ANN202
    """``logits`` with the given rows' class moved to ``cls``."""
    out = logits.copy()
    out[rows] = 0.0
    out[rows, cls] = 5.0
    return out


def test_int8_fails_on_a_top1_drop_past_its_limit_and_passes_within_it() -> None:
    """No test made the int8 top-1 drop gate fire: turned into a gate on gains, every int8 test still passed."""
    from lgp_edge.export.validate import TOLERANCES, compare

    labels, logits, vset = _labelled()
    tol = TOLERANCES["int8"]
    assert tol.max_top1_drop == 2.0 and tol.min_agreement == 0.90
    # 50 correct images (5 points of top-1) moved to a wrong class: agreement 0.95 passes, the drop does not
    wrong = _relabel(logits, np.arange(50), (labels[:50] + 1) % 10)
    report = compare(wrong, vset, tol)
    assert report.top1_agreement == 0.95 and not report.passed and "top-1 drops 5.00 points" in report.note
    within = compare(_relabel(logits, np.arange(15), (labels[:15] + 1) % 10), vset, tol)  # 1.5 points
    assert within.passed and within.top1_change == -1.5, within.note
    gain = _relabel(logits, np.arange(50), labels[:50])  # the same classes as torch: no change at all
    assert compare(gain, vset, tol).passed


def test_int8_fails_below_its_agreement_floor_even_with_top1_unchanged() -> None:
    """No test made the int8 agreement gate fire: switched off for int8, every int8 test still passed. Here 120
    images change class, 60 right -> wrong and 60 wrong -> right: top-1 unchanged, agreement 0.88."""
    from lgp_edge.export.base import ValidationSet
    from lgp_edge.export.validate import TOLERANCES, compare

    labels, logits, vset = _labelled()
    ref = _relabel(logits, np.arange(900, 960), (labels[900:960] + 1) % 10)  # torch wrong on these 60
    vset = ValidationSet(images=vset.images, labels=labels, reference=ref, data="fashion-mnist", synthetic=False)
    out = _relabel(ref, np.arange(60), (labels[:60] + 1) % 10)  # 60 right -> wrong
    out = _relabel(out, np.arange(900, 960), labels[900:960])  # 60 wrong -> right
    report = compare(out, vset, TOLERANCES["int8"])
    assert report.top1_change == 0.0 and report.top1_agreement == 0.88
    assert not report.passed and "top-1 agreement 0.880 < 0.9" in report.note, report.note


def test_the_fp32_tolerance_is_the_one_stated_and_no_looser() -> None:
    """Every failing-validation test set the fp32 tolerance to zero, so a tolerance loosened 10,000 times passed
    them all: the real one is atol 1e-4 + rtol 1e-5 of the largest |logit|."""
    from lgp_edge.export.validate import TOLERANCES, compare

    _, logits, vset = _labelled()
    tol = TOLERANCES["fp32"]
    limit = tol.limit(logits)
    assert limit == pytest.approx(1e-4 + 1e-5 * float(np.abs(logits).max()))
    near = logits.copy()
    near[0, 0] += 0.9 * limit
    assert compare(near, vset, tol).passed
    past = logits.copy()
    past[0, 0] += 2 * limit
    report = compare(past, vset, tol)
    assert not report.passed and "max |diff|" in report.note and report.top1_agreement == 1.0


def test_an_int8_export_for_this_host_warns_where_its_cpu_has_no_fast_int8() -> None:
    """`export --profile cpu-int8` on an AVX2-only CPU shipped an IR 2.1-2.7x slower than fp32 without a word,
    where README says int8 does not pay there."""
    from lgp_edge.export.pipeline import slow_int8_cpu

    assert slow_int8_cpu(["avx2"], "x86_64") and slow_int8_cpu([], "AMD64")
    assert not slow_int8_cpu(["avx2", "avx512_vnni"], "x86_64") and not slow_int8_cpu(["avx2", "avx_vnni"], "x86_64")
    assert not slow_int8_cpu(["avx2", "amx_int8"], "x86_64")
    assert not slow_int8_cpu(["asimddot"], "aarch64") and not slow_int8_cpu(None, "x86_64")


def test_the_slow_int8_warning_is_for_int8_run_on_this_hosts_cpu(monkeypatch, caplog) -> None:
    """The warning fired for a local TensorRT target (its int8 runs on the GPU), and named profile 'cpu' the
    wrong one when --precision int8 overrode that fp32 profile."""
    import dataclasses
    import logging
    import types

    from lgp_edge.export import pipeline
    from lgp_edge.profiling import host
    from lgp_edge.targets import load_target

    monkeypatch.setattr(host, "int8_instructions", lambda: ["avx2"])
    monkeypatch.setattr(pipeline.platform, "machine", lambda: "x86_64")
    cpu = load_target("cpu")
    gpu = dataclasses.replace(load_target("jetson-orin-nano"), connection=cpu.connection)
    with caplog.at_level(logging.WARNING, logger="lgp_edge"):
        pipeline._warn_int8_without_fast_kernels(types.SimpleNamespace(target=gpu))
        assert "VNNI" not in caplog.text
        pipeline._warn_int8_without_fast_kernels(types.SimpleNamespace(target=cpu))
    assert "int8 is the wrong precision for target 'cpu'" in caplog.text and "profile" not in caplog.text
