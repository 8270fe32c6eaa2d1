"""What lgp-edge records of the machine it runs on, on a macOS host: no /proc or /sys, no CPU affinity, the CPU
described by ``sysctl`` (simulated on Linux: a fake ``sysctl`` on PATH, platform.system() "Darwin", reads
under /proc and /sys refused)."""

from __future__ import annotations

import os
import pathlib
import platform
import stat
from pathlib import Path

import pytest

from lgp_edge.profiling import host

APPLE_M2 = {"machdep.cpu.brand_string": "Apple M2 Pro", "hw.perflevel0.l2cachesize": "16777216",
            "hw.l2cachesize": "4194304", "hw.optional.neon": "1", "hw.optional.arm.FEAT_DotProd": "1",
            "hw.optional.arm.FEAT_I8MM": "1"}
APPLE_M1 = {**APPLE_M2, "machdep.cpu.brand_string": "Apple M1 Pro", "hw.perflevel0.l2cachesize": "12582912",
            "hw.optional.arm.FEAT_I8MM": "0"}
INTEL_MAC = {"machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz", "hw.l2cachesize": "262144",
             "hw.l3cachesize": "16777216", "hw.optional.avx2_0": "1", "hw.optional.fma": "1",
             "hw.optional.avx512f": "0"}


def fake_sysctl(folder: Path, values: dict[str, str]) -> None:
    """A ``sysctl`` in ``folder`` answering ``sysctl -n NAME`` from ``values``; any other name is an unknown oid
    (exit 1), as macOS's is."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = "".join(f"    {name}) echo '{value}' ;;\n" for name, value in values.items())
    script = folder / "sysctl"
    script.write_text(f'#!/bin/sh\n[ "$1" = "-n" ] || exit 2\ncase "$2" in\n{cases}'
                      '    *) echo "sysctl: unknown oid \'$2\'" >&2; exit 1 ;;\nesac\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def macos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """This process as on a Mac: Darwin/arm64, no /proc or /sys, no affinity calls; returns a function that installs
    a ``sysctl`` answering from the values given."""
    for name in ("sched_getaffinity", "sched_setaffinity"):
        monkeypatch.delattr(os, name, raising=False)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(platform, "processor", lambda: "arm")

    def linux_only(p: object) -> bool:
        return str(p).startswith(("/proc", "/sys"))

    for name in ("read_text", "read_bytes", "open"):
        orig = getattr(pathlib.Path, name)

        def refuse(self: Path, *a: object, _orig=orig, **k: object) -> object:
            if linux_only(self):
                raise FileNotFoundError(2, "No such file or directory (simulated macOS)", str(self))
            return _orig(self, *a, **k)
        monkeypatch.setattr(pathlib.Path, name, refuse)
    glob = pathlib.Path.glob
    monkeypatch.setattr(pathlib.Path, "glob",
                        lambda self, *a, **k: iter(()) if linux_only(self) else glob(self, *a, **k))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return lambda values: fake_sysctl(bin_dir, values)


def test_apple_silicon_is_named_by_its_brand_string(macos) -> None:
    macos(APPLE_M2)
    assert host.cpu_model() == "Apple M2 Pro"
    assert host.host_versions()["host_cpu"] == "Apple M2 Pro"
    assert host.int8_instructions() == ["asimddot", "i8mm"]
    assert host.last_level_cache_bytes() == 16777216  # the performance cores' L2
    facts = host.cpu_facts()
    assert facts["model"] == "Apple M2 Pro" and facts["features"] == ["asimd", "asimddot", "i8mm"]
    # no affinity calls on macOS: every CPU is usable, as usable_cpus() (threads, --jobs lanes) counts them
    assert facts["affinity_cpus"] == host.usable_cpus() == os.cpu_count() == facts["logical_cpus"]
    fp = host.host_fingerprint("onnxruntime", 1)
    assert fp["cpu"] == "Apple M2 Pro" and fp["llc_bytes"] == 16777216


def test_two_macs_with_the_same_core_count_do_not_share_a_calibration(macos) -> None:
    macos(APPLE_M2)
    m2 = host.fingerprint_key(host.host_fingerprint("onnxruntime", 4))
    macos(APPLE_M1)
    m1 = host.fingerprint_key(host.host_fingerprint("onnxruntime", 4))
    assert m1 != m2
    assert host.int8_instructions() == ["asimddot"]  # "0": the M1 has no int8 matrix multiply


def test_intel_mac_cache_and_instructions(macos) -> None:
    macos(INTEL_MAC)
    assert host.cpu_model().startswith("Intel(R) Core(TM) i9-9880H")
    assert host.last_level_cache_bytes() == 16777216  # L3 over L2
    assert host.int8_instructions() == ["avx2"]
    assert host.cpu_facts()["features"] == ["avx2", "fma"]


def test_mac_without_a_working_sysctl_falls_back(macos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No sysctl answer at all (not installed, or failing): the platform's name, nothing claimed about the CPU."""
    macos({})
    assert host.cpu_model() == "arm"
    assert host.int8_instructions() is None
    assert host.last_level_cache_bytes() == 0
    assert host.cpu_facts()["features"] is None
    broken = tmp_path / "bin" / "sysctl"
    broken.write_text("#!/bin/sh\nexec sleep 60\n")  # hangs: bounded by the timeout, then the fallback
    monkeypatch.setattr(host, "SYSCTL_TIMEOUT_S", 0.5)
    assert host.cpu_model() == "arm"


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux only")
def test_linux_hosts_never_ask_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Linux everything comes from /proc and /sys (Linux's sysctl knows none of these names)."""
    def no_sysctl(name: str) -> None:
        raise AssertionError(f"sysctl {name} asked on Linux")
    monkeypatch.setattr(host, "_sysctl", no_sysctl, raising=False)
    host.cpu_model(), host.int8_instructions(), host.last_level_cache_bytes(), host.cpu_facts()
