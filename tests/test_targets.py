"""Targets as data: every built-in TOML loads and is complete; bad files name file and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lgp_edge.cli import main
from lgp_edge.errors import UsageError
from lgp_edge.specs import Efficiency, HardwareSpec
from lgp_edge.targets import (
    CONNECTIONS,
    PRECISIONS,
    RUNTIMES,
    bench_script,
    known_targets,
    list_targets,
    load_target,
    targets_root,
)

REQUIRED = ("cpu", "jetson-nano", "jetson-orin-nano", "raspberry-pi-5", "android-arm64", "iphone")
REPO = Path(__file__).resolve().parent.parent


def test_required_targets_exist_and_root_symlink_points_at_package_data():
    assert set(REQUIRED) <= set(known_targets())
    link = REPO / "targets"
    assert link.is_symlink() and link.resolve() == targets_root().resolve()


@pytest.mark.parametrize("name", sorted(p.stem for p in targets_root().glob("*.toml")))
def test_schema_every_target_file(name):
    t = load_target(name)
    assert t.name == name and t.description
    assert t.runtime in RUNTIMES and t.connection.kind in CONNECTIONS
    assert set(t.precisions) <= set(PRECISIONS) and t.formats
    assert 13 <= t.max_opset <= 23
    hw = t.hardware
    eff = hw.efficiency
    assert 0 < eff.compute <= 1 and 0 < eff.memory <= 1 and eff.overhead_us >= 0
    assert hw.memory_mb is not None and hw.memory_mb > 0  # detect: read from the OS at load time
    if hw.detect:
        assert t.connection.kind == "local"
    else:
        assert set(t.precisions) <= set(hw.peak_gflops) and hw.mem_gbps is not None and hw.mem_gbps > 0
    if t.connection.kind == "ssh":
        assert t.connection.host and bench_script(t).is_file()
    text = (targets_root() / f"{name}.toml").read_text()
    if not hw.detect:  # every declared hardware number carries a comment with its source
        for key in ("peak_gflops", "mem_gbps", "memory_mb"):
            line = next(ln for ln in text.splitlines() if ln.startswith(key))
            block = text[:text.index(line)].rsplit("[hardware]", 1)[1] + line
            assert "#" in block, f"{name}: {key} has no source comment"


def test_target_spec_is_typed_and_read_only():
    """A loaded target is a frozen record all the way down: its hardware facts typed, its peaks and extra
    settings read-only (a dict inside a frozen spec could be changed by any stage that was handed it)."""
    nano = load_target("jetson-nano")
    assert isinstance(nano.hardware, HardwareSpec) and isinstance(nano.hardware.efficiency, Efficiency)
    assert nano.hardware.efficiency.compute == 0.35 and nano.hardware.peak("fp16") == 472.0
    with pytest.raises(TypeError):
        nano.extra["machine"] = "x86_64"  # type: ignore[index]
    with pytest.raises(TypeError):
        nano.hardware.peak_gflops["fp16"] = 1.0  # type: ignore[index]
    again = load_target("jetson-nano")
    assert nano == again and hash(nano) == hash(again)
    plain = json.loads(json.dumps(nano.to_dict()))
    assert plain["hardware"]["peak_gflops"] == {"fp32": 236.0, "fp16": 472.0}
    assert plain["hardware"]["efficiency"] == {"compute": 0.35, "memory": 0.6, "overhead_us": 15.0}
    assert plain["extra"]["machine"] == "aarch64"


def test_known_hardware_facts_from_datasheets():
    nano = load_target("jetson-nano")
    assert nano.hardware.peak("fp16") == 472.0  # NVIDIA datasheet
    assert nano.hardware.mem_gbps == 25.6 and nano.hardware.memory_mb == 4096
    assert nano.max_opset == 13 and "8.2" in nano.runtime_version
    assert "10" in load_target("jetson-orin-nano").runtime_version


def _write(d: Path, name: str, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.toml"
    p.write_text(text)
    return p


def test_missing_field_names_file_and_field(tmp_path):
    src = (targets_root() / "raspberry-pi-5.toml").read_text()
    bad = src.replace("mem_gbps = 17.1", "")
    path = _write(tmp_path, "raspberry-pi-5", bad)
    with pytest.raises(UsageError) as e:
        load_target("raspberry-pi-5", tmp_path)
    assert str(path) in str(e.value) and "hardware.mem_gbps" in str(e.value)
    _write(tmp_path, "raspberry-pi-5", src.replace('runtime_version = "onnxruntime', 'runtime_vers = "x'))
    with pytest.raises(UsageError, match="runtime_version"):
        load_target("raspberry-pi-5", tmp_path)


def test_unknown_target_lists_known_ones():
    with pytest.raises(UsageError) as e:
        load_target("jetson-nan")
    msg = str(e.value)
    assert "jetson-nano" in msg and "known targets" in msg and "iphone" in msg


def test_user_targets_dir_overrides_and_adds(tmp_path):
    src = (targets_root() / "jetson-nano.toml").read_text()
    _write(tmp_path, "jetson-nano", src.replace('host = "jetson-nano.local"', 'host = "10.0.0.7"'))
    _write(tmp_path, "my-nano", src.replace('name = "jetson-nano"', 'name = "my-nano"'))
    assert load_target("jetson-nano", tmp_path).connection.host == "10.0.0.7"
    assert load_target("jetson-nano").connection.host == "jetson-nano.local"
    names = [t.name for t in list_targets(tmp_path)]
    assert names.count("jetson-nano") == 1 and "my-nano" in names
    # the user file may ship its own device script beside it
    shutil.copytree(targets_root() / "jetson", tmp_path / "jetson")
    assert bench_script(load_target("my-nano", tmp_path), tmp_path).parent == tmp_path / "jetson"


def test_name_must_match_file(tmp_path):
    src = (targets_root() / "iphone.toml").read_text()
    _write(tmp_path, "phone", src)
    with pytest.raises(UsageError, match="must match"):
        load_target("phone", tmp_path)


def test_cli_targets_list_json_and_show(capsys):
    assert main(["targets", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {t["name"]: t for t in data["targets"]}
    assert set(REQUIRED) <= set(rows)
    assert rows["jetson-nano"]["runtime"] == "tensorrt" and rows["jetson-nano"]["connection"] == "ssh"
    assert rows["android-arm64"]["connection"] == "adb" and rows["iphone"]["connection"] == "none"
    assert main(["targets", "show", "jetson-nano", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["max_opset"] == 13 and shown["connection"]["kind"] == "ssh"
    assert main(["targets", "show", "raspberry-pi-5"]) == 0
    assert "153.6" in capsys.readouterr().out


def test_cli_bad_target_exit_2(capsys, tmp_path):
    assert main(["targets", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown target 'nope'" in err
    assert main(["targets", "list", "--targets-dir", str(tmp_path / "missing")]) == 2


def test_a_cache_slower_than_the_memory_is_refused(tmp_path):
    """A target file declaring a last-level cache slower than DRAM (cache_gbps 1.0 beside mem_gbps 25.6) made the
    roofline predict a descendant with one more block faster than its subset: no chip has such a cache, and the host
    calibration refuses the same facts."""
    src = (targets_root() / "raspberry-pi-5.toml").read_text()
    slow = src.replace("mem_gbps = 17.1", "mem_gbps = 17.1\nllc_mb = 2.0\ncache_gbps = 1.0")
    _write(tmp_path, "raspberry-pi-5", slow)
    with pytest.raises(UsageError, match="'hardware.cache_gbps' 1.0 is below hardware.mem_gbps 17.1"):
        load_target("raspberry-pi-5", tmp_path)
    _write(tmp_path, "raspberry-pi-5", src.replace("mem_gbps = 17.1", "mem_gbps = 17.1\nllc_mb = 2.0\ncache_gbps = 60"))
    assert load_target("raspberry-pi-5", tmp_path).hardware.cache_gbps == 60


def test_a_boards_threads_0_and_an_unknown_ort_platform_are_refused(tmp_path):
    """`threads = 0` ('all cores of this machine' in cpu.toml) on an ssh board quietly meant 1 thread; an
    `ort_platform` other than ONNX Runtime's two ('arm', 'amd64') was taken, and the export's note then told an
    aarch64 board that the .ort file needs an x86-64 CPU."""
    src = (targets_root() / "raspberry-pi-5.toml").read_text()
    assert "threads = 4" in src
    path = _write(tmp_path, "raspberry-pi-5", src.replace("threads = 4", "threads = 0"))
    with pytest.raises(UsageError) as e:
        load_target("raspberry-pi-5", tmp_path)
    assert str(path) in str(e.value) and "extra.threads" in str(e.value) and "cores" in str(e.value)
    _write(tmp_path, "raspberry-pi-5", src.replace("[extra]", '[extra]\nort_platform = "sparc"'))
    with pytest.raises(UsageError) as e:
        load_target("raspberry-pi-5", tmp_path)
    assert "extra.ort_platform" in str(e.value) and "'arm' or 'amd64'" in str(e.value)
    _write(tmp_path, "raspberry-pi-5", src.replace("[extra]", '[extra]\nort_platform = "arm"'))
    assert load_target("raspberry-pi-5", tmp_path).extra["ort_platform"] == "arm"
    cpu = (targets_root() / "cpu.toml").read_text()
    assert "threads = 0" in cpu  # this host: all its cores
    _write(tmp_path, "cpu", cpu)
    assert load_target("cpu", tmp_path).extra["threads"] == 0


def test_every_field_a_target_or_profile_file_may_set_is_described_in_docs_targets() -> None:
    """remote_python, minimum_ios, hardware.llc_mb and others were accepted in target files and described
    nowhere; a field the parsers take must have a row in docs/TARGETS.md."""
    import dataclasses
    import re

    from lgp_edge import profiles, targets
    from lgp_edge.specs import ConnectionSpec, TargetSpec

    doc = (Path(__file__).resolve().parent.parent / "docs" / "TARGETS.md").read_text()
    first_cells = re.findall(r"^\| ([^|]+) \|", doc, flags=re.M)  # each table row's field names
    described = {name for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)}
    fields = {
        "target": {f.name for f in dataclasses.fields(TargetSpec)} - {"hardware", "connection", "extra"},
        "hardware": {*targets._HARDWARE_RANGES, "detect"} | {f"efficiency.{e}" for e in targets._EFFICIENCY},
        "connection": {f.name for f in dataclasses.fields(ConnectionSpec)},
        "extra": {*targets._EXTRA_NUMBERS, *targets._EXTRA_STRINGS, "ssh_options"},
        "profile": set(profiles._FIELDS),
    }
    missing = {table: sorted(names - described) for table, names in fields.items() if names - described}
    assert not missing, missing
