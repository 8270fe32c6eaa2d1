"""Deployment profiles: schema test over every shipped TOML, bad files, overrides, the profiles CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lgp_edge.cli import main
from lgp_edge.errors import UsageError
from lgp_edge.profiles import (
    FORMATS,
    PRECISIONS,
    known_profiles,
    list_profiles,
    load_profile,
    load_profile_file,
    profiles_root,
    with_overrides,
)
from lgp_edge.targets import known_targets, load_target

SHIPPED = sorted(profiles_root().glob("*.toml"))
GOOD = """name = "{name}"
target = "cpu"
latency_budget_ms = 20
memory_budget_mb = 64.5
precision = "fp32"
formats = ["onnx"]
"""


def test_profiles_are_shipped_one_per_builtin_target() -> None:
    names = {p.stem for p in SHIPPED}
    for target in ("cpu", "jetson-nano", "jetson-orin-nano", "raspberry-pi-5", "android-arm64", "iphone"):
        assert target in names, f"no profile named like target {target}"
        assert load_profile(target).target == target


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_schema_of_every_shipped_profile(path: Path) -> None:
    p = load_profile_file(path)
    assert p.name == path.stem
    assert p.latency_budget_ms > 0 and p.memory_budget_mb > 0 and p.batch >= 1
    assert p.precision in PRECISIONS
    assert p.formats and set(p.formats) <= set(FORMATS)
    assert p.description
    target = load_target(p.target)  # the target exists
    assert p.precision in target.precisions, f"{path.name}: {p.precision} not in {target.precisions}"
    assert set(p.formats) <= set(target.formats), f"{path.name}: {p.formats} not all in {target.formats}"
    assert p.target in known_targets()


@pytest.mark.parametrize(("text", "field"), [
    (GOOD.replace('precision = "fp32"\n', ""), "precision"),
    (GOOD + 'colour = "red"\n', "colour"),
    (GOOD.replace("latency_budget_ms = 20", 'latency_budget_ms = "fast"'), "latency_budget_ms"),
    (GOOD.replace("latency_budget_ms = 20", "latency_budget_ms = -1"), "latency_budget_ms"),
    (GOOD.replace('"fp32"', '"fp64"'), "precision"),
    (GOOD.replace('["onnx"]', '["onnx", "tflite"]'), "formats"),
    (GOOD.replace('["onnx"]', "[]"), "formats"),
    (GOOD + "batch = 0\n", "batch"),
    (GOOD + "threads = 0\n", "threads"),
    (GOOD + "threads = 1.5\n", "threads"),
    (GOOD + "threads = 100000\n", "threads"),
    # control characters (a terminal escape, a carriage return) in a string: printed by 'profiles show' as they are
    (GOOD + 'description = "ok\\u001b]0;title\\u0007\\u001b[2Jfake"\n', "description"),
    (GOOD + 'description = "line\\r\\nFAKE LINE"\n', "description"),
])
def test_bad_profile_files_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(text.format(name="mine"))
    with pytest.raises(UsageError) as e:
        load_profile_file(f)
    assert str(f) in str(e.value) and f"'{field}'" in str(e.value)


def test_name_must_match_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(GOOD.format(name="other"))
    with pytest.raises(UsageError, match="must match"):
        load_profile_file(f)


def test_user_dir_adds_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(GOOD.format(name="mine"))
    (tmp_path / "cpu.toml").write_text(GOOD.format(name="cpu").replace("20", "7"))
    assert "mine" in known_profiles(tmp_path)
    assert load_profile("cpu", tmp_path).latency_budget_ms == 7.0
    assert load_profile("cpu").latency_budget_ms != 7.0
    assert {p.name for p in list_profiles(tmp_path)} >= {"mine", "cpu", "iphone"}


def test_unknown_profile_suggests() -> None:
    with pytest.raises(UsageError, match="did you mean jetson-nano"):
        load_profile("jetson-nan")


def test_a_profile_names_the_threads_its_app_runs(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(GOOD.format(name="mine") + "threads = 1\n")
    assert load_profile_file(f).threads == 1
    assert load_profile("cpu").threads is None  # the target's default
    assert with_overrides(load_profile("cpu"), threads=3).threads == 3
    with pytest.raises(UsageError, match="--threads"):
        with_overrides(load_profile("cpu"), threads=0)


def test_overrides() -> None:
    p = load_profile("jetson-nano")
    q = with_overrides(p, budget_ms=5, memory_mb=10, precision="fp32", formats=("onnx", "onnx"))
    assert (q.latency_budget_ms, q.memory_budget_mb, q.precision, q.formats) == (5.0, 10.0, "fp32", ("onnx",))
    assert p.latency_budget_ms == 33.0  # frozen original untouched
    for kw in ({"budget_ms": 0}, {"memory_mb": -3}, {"precision": "fp8"}, {"formats": ("tflite",)}):
        with pytest.raises(UsageError):
            with_overrides(p, **kw)


def test_profiles_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["profiles"]
    assert {p["name"] for p in listed} == {p.stem for p in SHIPPED}
    assert main(["profiles", "show", "jetson-nano", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["formats"] == ["tensorrt"] and shown["file"].endswith("jetson-nano.toml")
    assert main(["profiles", "show", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
