"""Core ML exports (single and --switchable) refuse what the package cannot be, in one line with exit 2 and
nothing written: a batch other than 1, a deployment target Core ML does not know, an ONNX opset for an export
that writes no ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGP_EDGE_STORE", str(tmp_path / "store.sqlite"))


def _copy(src: Path, dst: Path, **replace: str) -> None:
    lines = src.read_text(encoding="utf-8").splitlines()
    for key, value in replace.items():
        lines = [f"{key} = {value}" if ln.split("=")[0].strip() == key else ln for ln in lines]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """A batch-4 iPhone profile, and the iphone target with a minimum iOS Core ML does not know (one each)."""
    _copy(ROOT / "profiles" / "iphone.toml", tmp_path / "profiles" / "iphone-b4.toml", name='"iphone-b4"', batch="4")
    out = {"profiles": tmp_path / "profiles"}
    for bad in ("abc", "19.0", "-3"):
        out[bad] = tmp_path / f"targets-{bad}"
        _copy(ROOT / "targets" / "iphone.toml", out[bad] / "iphone.toml", minimum_ios=f'"{bad}"')
    return out


CASES = [
    ("", ["--profile", "iphone-b4"], "one image per prediction"),
    ("abc", ["--target", "iphone"], "Core ML deployment target 'iOSabc'"),
    ("19.0", ["--target", "iphone"], "Core ML deployment target 'iOS19'"),
    ("-3", ["--target", "iphone"], "Core ML deployment target"),
    ("", ["--target", "iphone", "--opset", "15"], "--opset"),
]


@pytest.mark.parametrize("switchable", [False, True], ids=["single", "switchable"])
@pytest.mark.parametrize("targets, args, msg", CASES, ids=["batch4", "ios-abc", "ios19", "ios-minus3", "opset"])
def test_core_ml_refusals(tiny_pool: Path, tmp_path: Path, dirs: dict[str, Path], capsys: pytest.CaptureFixture[str],
                          switchable: bool, targets: str, args: list[str], msg: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    extra = ["--switchable", "--descendants", "ti6.0-5,b6.0-5"] if switchable else []
    tdir = ["--targets-dir", str(dirs[targets])] if targets else []
    rc, err = run_cli(["-q", "export", "--pool", str(tiny_pool), "--profiles-dir", str(dirs["profiles"]), *tdir,
                       "--data", "synthetic", "--val-images", "4", "--out", str(work / "out"), *args, *extra],
                      capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], err
    assert list(work.iterdir()) == []


def test_opset_is_taken_where_an_onnx_file_is_written(tiny_pool: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run_cli(["-q", "export", "--pool", str(tiny_pool), "--target", "iphone", "--format", "onnx",
                       "--opset", "15", "--data", "synthetic", "--val-images", "4", "--out", str(tmp_path / "o")],
                      capsys)
    assert rc == 0, err
    import onnx

    model = onnx.load(str(tmp_path / "o" / "model.fp16.onnx"))
    (op,) = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert op == 15


def test_an_fp16_onnx_beside_core_ml_names_no_fp32_file_it_lacks(tiny_pool: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """EMBEDDING.md compared model.fp16.onnx with a `model.onnx` the export does not hold."""
    from helpers import named_files_missing

    out = tmp_path / "o"
    rc, err = run_cli(["-q", "export", "--pool", str(tiny_pool), "--target", "iphone", "--format", "coreml,onnx",
                       "--data", "synthetic", "--val-images", "4", "--out", str(out)], capsys)
    assert rc == 0, err
    assert (out / "model.fp16.onnx").is_file() and named_files_missing(out) == []
