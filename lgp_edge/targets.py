"""Device targets as data: one TOML file per target (hardware facts, runtime, opset, precisions, connection).

Built-in targets ship in ``lgp_edge/data/targets`` (also visible as ``targets/`` at the repository root);
``--targets-dir DIR`` adds user targets, which win over a built-in target of the same name.
Every file is checked field by field; a problem names the file and the field.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from lgp_edge.errors import UsageError
from lgp_edge.fileio import read_toml
from lgp_edge.profiling.measure import MAX_THREADS
from lgp_edge.registry import check_name, check_text, named_files, non_finite, pick, search_dirs
from lgp_edge.specs import (
    FORMATS,
    PRECISIONS,
    RUNTIMES,
    ConnectionSpec,
    Efficiency,
    HardwareSpec,
    TargetSpec,
    read_only,
)

log = logging.getLogger(__name__)

CONNECTIONS = ("local", "ssh", "adb", "none")

_TOP = {"name": str, "description": str, "runtime": str, "runtime_version": str, "max_opset": int,
        "precisions": list, "formats": list, "hardware": dict, "connection": dict}
_OPTIONAL_TOP = {"extra": dict}
_EFFICIENCY = ("compute", "memory", "overhead_us")  # roofline factors each target declares (predict.py)
_CONNECTION_FIELDS = {"kind": str, "host": str, "user": str, "port": int, "key": str, "serial": str,
                      "workdir": str, "timeout_s": (int, float)}


def targets_root() -> Path:
    """Directory of the built-in target files (inside the installed package)."""
    return Path(__file__).resolve().parent / "data" / "targets"




def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_type(path: Path, field: str, value: Any, kind: Any) -> None:
    ok = _is_number(value) if kind in ((int, float), float) else isinstance(value, kind)
    if kind is int and isinstance(value, bool):
        ok = False
    if not ok:
        want = "number" if kind in ((int, float), float) else getattr(kind, "__name__", str(kind))
        raise UsageError(f"target file '{path}': field '{field}' must be a {want}, got {value!r}")


_HOST_RE = re.compile(r"^[A-Za-z0-9_.:%\[\]](?:[A-Za-z0-9_.:%\[\]-]{0,252})$")  # name, IPv4, [IPv6]
_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")
# connection.workdir reaches scp as "host:DIR/file", and legacy scp (-O, old OpenSSH, dropbear) hands that path to
# the board's shell: only characters no shell reads specially, in an absolute path or one under the login's home
_WORKDIR_RE = re.compile(r"(?:/|~/|~$)[A-Za-z0-9_./-]*")


def workdir_problem(workdir: str, kind: str) -> str | None:
    """Why ``connection.workdir`` is not a plain directory path for a ``kind`` connection; None when it is."""
    if not _WORKDIR_RE.fullmatch(workdir):
        return ("write an absolute path ('/tmp') or one under the login's home ('~/bench') made of letters, "
                "digits, '/', '.', '_' and '-' only")
    if workdir.startswith("~") and kind != "ssh":
        return f"a path under '~' is only for ssh; write an absolute path for {kind}"
    return None


# extra.ssh_options: an allow-list of "-o Key=Value" settings that only tune the connection. Everything else is
# refused, above all what runs local commands or loads local code (ProxyCommand, LocalCommand, KnownHostsCommand,
# PKCS11Provider, SecurityKeyProvider), opens channels (forwardings, Tunnel, agent or X11 forwarding), reaches
# other hosts or configuration (ProxyJump, Match, Include, Hostname), or passes environment (SetEnv, SendEnv).
_YES_NO = (r"yes|no", "'yes' or 'no'")
_COUNT = (r"[0-9]{1,6}", "a whole number")
_FILE = (r"[A-Za-z0-9_./~%+-]+", "one path of letters, digits and '_./~%+-'")
_ALGOS = (r"[+^]?[A-Za-z0-9_.@*+,-]+", "a comma-separated list of algorithm names")
_SSH_ALLOWED: dict[str, tuple[str, str]] = {
    "Port": (r"[0-9]{1,5}", "a port number"),
    "ConnectTimeout": _COUNT, "ConnectionAttempts": _COUNT, "ServerAliveInterval": _COUNT,
    "ServerAliveCountMax": _COUNT,
    "BatchMode": _YES_NO, "Compression": _YES_NO, "IdentitiesOnly": _YES_NO, "TCPKeepAlive": _YES_NO,
    "CheckHostIP": _YES_NO,
    "StrictHostKeyChecking": (r"yes|no|ask|accept-new|off", "'yes', 'no', 'ask', 'accept-new' or 'off'"),
    "LogLevel": (r"QUIET|FATAL|ERROR|INFO|VERBOSE|DEBUG[123]?", "QUIET, FATAL, ERROR, INFO, VERBOSE or DEBUG1-3"),
    "AddressFamily": (r"any|inet|inet6", "'any', 'inet' or 'inet6'"),
    "UserKnownHostsFile": _FILE, "IdentityFile": _FILE,
    "HostKeyAlias": (r"[A-Za-z0-9_.:-]+", "a host name"),
    "HostKeyAlgorithms": _ALGOS, "PubkeyAcceptedAlgorithms": _ALGOS, "PubkeyAcceptedKeyTypes": _ALGOS,
    "Ciphers": _ALGOS, "MACs": _ALGOS, "KexAlgorithms": _ALGOS,
}
_SSH_CANONICAL = {k.lower(): k for k in _SSH_ALLOWED}


def _ssh_option_problem(opt: str) -> str | None:
    if not opt.strip():
        return 'has an empty option; write "Key=Value"'
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(.*)", opt, re.DOTALL)
    if m is None:
        return f'has {opt!r}; write each option as "Key=Value" (no spaces around \'=\')'
    key, value = m.groups()
    name = _SSH_CANONICAL.get(key.lower())
    if name is None:
        return (f"sets {key!r}, which a target file may not set (allowed: {', '.join(_SSH_ALLOWED)}); options that "
                "run local commands, load libraries, forward or tunnel are never allowed")
    pattern, want = _SSH_ALLOWED[name]
    if value.startswith("-") or not re.fullmatch(pattern, value, re.IGNORECASE | re.ASCII):
        return f"sets {name} to {value!r}; write {want} (not starting with '-')"
    if name == "Port" and not 1 <= int(value) <= 65535:
        return f"sets Port to {value}; write a port between 1 and 65535"
    return None


def ssh_options_problem(options: Any) -> str | None:
    """Why ``extra.ssh_options`` is not a list of allowed ``"-o", "Key=Value"`` pairs; None when it is."""
    if not isinstance(options, (list, tuple)):
        return f"must be a list of \"-o\", \"Key=Value\" pairs, got {options!r}"
    for i, opt in enumerate(options):
        if not isinstance(opt, str):
            return f"item {i} must be a string, got {opt!r}"
        if i % 2 == 0 and opt != "-o":
            return f'must be pairs "-o", "Key=Value"; item {i} is {opt!r}'
        problem = _ssh_option_problem(opt) if i % 2 else None
        if problem:
            return problem
    if len(options) % 2:
        return "ends with '-o' and no value"
    return None


# extra.* fields that are numbers: name -> (lowest, highest, kind)
_EXTRA_NUMBERS: dict[str, tuple[float, float, Any]] = {
    "threads": (0, MAX_THREADS, int),  # as profile --threads
    "bench_timeout_s": (1, 86400, (int, float)),  # one benchmark run on the board, in seconds
}
_EXTRA_STRINGS = ("bench_script", "big_cores", "perf_test_binary", "remote_python", "trtexec", "minimum_ios",
                  "minimum_macos", "tensorrt_version", "ort_platform", "machine")


MAX_CORES = 4096  # core ids taskset may pin to: 0 .. MAX_CORES - 1 (Linux's largest NR_CPUS default)
_CORE_LIST = re.compile(r" *\d{1,9}(?: *- *\d{1,9})?(?: *, *\d{1,9}(?: *- *\d{1,9})?)* *")


def core_list_problem(cores: str) -> str | None:
    """Why ``extra.big_cores`` is not a CPU list such as ``"3-7"`` or ``"0,2,4-5"``; None when it is."""
    if not _CORE_LIST.fullmatch(cores):
        return "write core ids and ranges separated by commas, such as \"3-7\" or \"0,2,4-5\""
    for part in cores.split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if not first <= last < MAX_CORES:
            return f"'{part.strip()}' must name core ids from 0 to {MAX_CORES - 1}, the lower first"
    return None


def _check_strings(path: Path, prefix: str, obj: Any) -> None:
    if isinstance(obj, str):
        check_text("target", path, prefix, obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_strings(path, f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_strings(path, f"{prefix}[{i}]", v)


def _check_connection(path: Path, conn: dict[str, Any]) -> None:
    host, user = conn.get("host"), conn.get("user")
    if host is not None and not _HOST_RE.match(host):
        raise UsageError(f"target file '{path}': field 'connection.host' is {host!r}; write a host name or "
                         "address (letters, digits, '.', '-', ':'; not starting with '-')")
    if user is not None and not _USER_RE.match(user):
        raise UsageError(f"target file '{path}': field 'connection.user' is {user!r}; write a login name "
                         "(letters, digits, '.', '_', '-'; not starting with '-')")
    port = conn.get("port")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"target file '{path}': field 'connection.port' must be between 1 and 65535, got {port}")
    timeout = conn.get("timeout_s")
    if timeout is not None and not 0 < timeout <= 3600:
        raise UsageError(f"target file '{path}': field 'connection.timeout_s' must be in (0, 3600], got {timeout}")
    for name in ("serial", "key"):
        if str(conn.get(name, "")).startswith("-"):
            raise UsageError(f"target file '{path}': field 'connection.{name}' must not start with '-'")
    workdir = conn.get("workdir")
    problem = None if workdir is None else workdir_problem(workdir, conn["kind"])
    if problem:
        raise UsageError(f"target file '{path}': field 'connection.workdir' is {workdir!r}; {problem}")


def _check_ssh_options(path: Path, options: Any) -> None:
    _check_type(path, "extra.ssh_options", options, list)
    problem = ssh_options_problem(options)
    if problem:
        raise UsageError(f"target file '{path}': field 'extra.ssh_options' {problem}")


def _check_bench_script(path: Path, rel: Any) -> None:
    """``extra.bench_script``: a relative path to a file inside the targets directories, no ``..``."""
    _check_type(path, "extra.bench_script", rel, str)
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "~" in rel:
        raise UsageError(f"target file '{path}': field 'extra.bench_script' is '{rel}'; it must be a path relative "
                         "to the targets directory, without '..'")
    for base in (targets_root(), path.parent):
        f = base / rel
        if f.is_file() and f.resolve().is_relative_to(base.resolve()):
            return
    raise UsageError(f"target file '{path}': field 'extra.bench_script' names '{rel}', which is not a file inside "
                     "the targets directory")


def _check_extra(path: Path, extra: dict[str, Any]) -> None:
    _check_strings(path, "extra", extra)
    known = {*_EXTRA_NUMBERS, *_EXTRA_STRINGS, "ssh_options"}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise UsageError(f"target file '{path}' has unknown field 'extra.{unknown[0]}' (extra fields: "
                         f"{', '.join(sorted(known))}; a key written below a [table] header belongs to that table)")
    for name, (low, high, kind) in _EXTRA_NUMBERS.items():
        if name in extra:
            _check_type(path, f"extra.{name}", extra[name], kind)
            if not low <= extra[name] <= high:
                raise UsageError(f"target file '{path}': field 'extra.{name}' must be between {low} and {high}, "
                                 f"got {extra[name]}")
    for name in _EXTRA_STRINGS:
        if name in extra:
            _check_type(path, f"extra.{name}", extra[name], str)
    problem = core_list_problem(extra["big_cores"]) if "big_cores" in extra else None
    if problem:
        raise UsageError(f"target file '{path}': field 'extra.big_cores' is {extra['big_cores']!r}; {problem}")
    if "bench_script" in extra:
        _check_bench_script(path, extra["bench_script"])
    if "ssh_options" in extra:
        _check_ssh_options(path, extra["ssh_options"])
    if extra.get("ort_platform", "arm") not in ("arm", "amd64"):  # onnxruntime's convert_onnx_models_to_ort's
        raise UsageError(f"target file '{path}': field 'extra.ort_platform' is {extra['ort_platform']!r}, not 'arm' "
                         "or 'amd64' (the .ort file's kernels: ARM or x86-64)")


# What hardware can have, a microcontroller to a datacenter accelerator, with room either side (a typing or unit
# mistake falls outside): every prediction divides by these, so 1e-300 GB/s predicted 5.5e299 ms.
_HARDWARE_RANGES: dict[str, tuple[float, float, str]] = {
    "peak_gflops": (0.01, 1e8, "GFLOP/s"),
    "mem_gbps": (0.01, 1e5, "GB/s"),
    "memory_mb": (1, 1e9, "MB"),
    "llc_mb": (0.001, 1e6, "MB"),
    "cache_gbps": (0.01, 1e6, "GB/s"),
}
EFFICIENCY_MIN = 0.001  # hardware.efficiency.compute / memory: the fraction of the peak a runtime reaches


def _check_range(path: Path, field: str, value: Any, limits: tuple[float, float, str]) -> None:
    _check_type(path, field, value, (int, float))
    low, high, unit = limits
    if not low <= value <= high:
        raise UsageError(f"target file '{path}': field '{field}' must be between {low:g} and {high:g} {unit}, "
                         f"got {value}")


def _check_hardware(path: Path, hw: dict[str, Any], precisions: list[str], detect_ok: bool) -> None:
    unknown = sorted(set(hw) - set(_HARDWARE_RANGES) - {"detect", "efficiency"})
    if unknown:
        raise UsageError(f"target file '{path}' has unknown field 'hardware.{unknown[0]}' (hardware fields: "
                         f"{', '.join(sorted({*_HARDWARE_RANGES, 'detect', 'efficiency'}))})")
    if "detect" in hw:
        _check_type(path, "hardware.detect", hw["detect"], bool)
    if hw.get("detect") is True:
        if not detect_ok:
            raise UsageError(f"target file '{path}': field 'hardware.detect' is only allowed with "
                             "connection kind 'local' (the host measures itself)")
        required: tuple[str, ...] = ("efficiency",)
    else:
        required = ("peak_gflops", "mem_gbps", "memory_mb", "efficiency")
    for name in required:
        if name not in hw:
            raise UsageError(f"target file '{path}' is missing field 'hardware.{name}'")
    if "peak_gflops" in hw:
        peaks = hw["peak_gflops"]
        _check_type(path, "hardware.peak_gflops", peaks, dict)
        for p in precisions:
            if p not in peaks:
                raise UsageError(f"target file '{path}' is missing field 'hardware.peak_gflops.{p}' "
                                 f"(precision '{p}' is listed in 'precisions')")
        for p, v in peaks.items():
            if p not in PRECISIONS:
                raise UsageError(f"target file '{path}': field 'hardware.peak_gflops.{p}' is not a precision "
                                 f"({', '.join(PRECISIONS)})")
            _check_range(path, f"hardware.peak_gflops.{p}", v, _HARDWARE_RANGES["peak_gflops"])
    for name in ("mem_gbps", "memory_mb"):
        if name in hw:
            _check_range(path, f"hardware.{name}", hw[name], _HARDWARE_RANGES[name])
    eff = hw["efficiency"]
    _check_type(path, "hardware.efficiency", eff, dict)
    unknown = sorted(set(eff) - set(_EFFICIENCY))
    if unknown:
        raise UsageError(f"target file '{path}' has unknown field 'hardware.efficiency.{unknown[0]}' (efficiency "
                         f"fields: {', '.join(_EFFICIENCY)})")
    for name in _EFFICIENCY:
        if name not in eff:
            raise UsageError(f"target file '{path}' is missing field 'hardware.efficiency.{name}'")
        _check_type(path, f"hardware.efficiency.{name}", eff[name], (int, float))
    for name in ("compute", "memory"):
        if not EFFICIENCY_MIN <= eff[name] <= 1:
            raise UsageError(f"target file '{path}': field 'hardware.efficiency.{name}' must be between "
                             f"{EFFICIENCY_MIN} and 1 (the fraction of the peak reached), got {eff[name]}")
    if not 0 <= eff["overhead_us"] <= 1e6:
        raise UsageError(f"target file '{path}': field 'hardware.efficiency.overhead_us' must be between 0 and "
                         f"1e6 (microseconds per operator), got {eff['overhead_us']}")
    for name in ("llc_mb", "cache_gbps"):
        if name in hw:
            _check_range(path, f"hardware.{name}", hw[name], _HARDWARE_RANGES[name])
    if 0 < hw.get("cache_gbps", 0) < hw.get("mem_gbps", 0):  # the roofline would charge a cached model more
        raise UsageError(f"target file '{path}': field 'hardware.cache_gbps' {hw['cache_gbps']} is below "
                         f"hardware.mem_gbps {hw['mem_gbps']}: a last-level cache is faster than the memory behind "
                         "it; give its copy bandwidth, or leave cache_gbps out")


def parse_target(raw: dict[str, Any], path: Path) -> TargetSpec:
    """Validate one target file's contents; every error names the file and the field."""
    bad = non_finite(raw)
    if bad is not None:
        raise UsageError(f"target file '{path}': field '{bad[0]}' must be a finite number (64-bit for integers), "
                         f"got {bad[1]!r}")
    for name, kind in _TOP.items():
        if name not in raw:
            raise UsageError(f"target file '{path}' is missing field '{name}'")
        _check_type(path, name, raw[name], kind)
    unknown = sorted(set(raw) - set(_TOP) - set(_OPTIONAL_TOP))
    if unknown:
        raise UsageError(f"target file '{path}' has unknown field '{unknown[0]}'")
    check_name("target", path, raw["name"])
    if raw["name"] != path.stem:
        raise UsageError(f"target file '{path}': field 'name' is '{raw['name']}' but the file is named "
                         f"'{path.stem}.toml'; they must match")
    if raw["runtime"] not in RUNTIMES:
        raise UsageError(f"target file '{path}': field 'runtime' is '{raw['runtime']}', not one of "
                         f"{', '.join(RUNTIMES)}")
    for field_name, allowed in (("precisions", PRECISIONS), ("formats", FORMATS)):
        values = raw[field_name]
        if not values:
            raise UsageError(f"target file '{path}': field '{field_name}' is empty")
        for v in values:
            if v not in allowed:
                raise UsageError(f"target file '{path}': field '{field_name}' has '{v}', not one of "
                                 f"{', '.join(allowed)}")
    if not 7 <= raw["max_opset"] <= 23:
        raise UsageError(f"target file '{path}': field 'max_opset' must be between 7 and 23")
    conn = raw["connection"]
    if "kind" not in conn:
        raise UsageError(f"target file '{path}' is missing field 'connection.kind'")
    for k, v in conn.items():
        if k not in _CONNECTION_FIELDS:
            raise UsageError(f"target file '{path}' has unknown field 'connection.{k}'")
        _check_type(path, f"connection.{k}", v, _CONNECTION_FIELDS[k])
    if conn["kind"] not in CONNECTIONS:
        raise UsageError(f"target file '{path}': field 'connection.kind' is '{conn['kind']}', not one of "
                         f"{', '.join(CONNECTIONS)}")
    if conn["kind"] == "ssh" and "host" not in conn:
        raise UsageError(f"target file '{path}' is missing field 'connection.host' (needed for ssh)")
    _check_strings(path, "", {k: raw[k] for k in ("name", "description", "runtime_version")})
    _check_strings(path, "connection", conn)
    _check_connection(path, conn)
    _check_hardware(path, raw["hardware"], raw["precisions"], detect_ok=conn["kind"] == "local")
    extra = raw.get("extra", {})
    _check_type(path, "extra", extra, dict)
    _check_extra(path, extra)
    if conn["kind"] != "local" and extra.get("threads") == 0:  # (this host's: every core it may use)
        raise UsageError(f"target file '{path}': field 'extra.threads' is 0, which means all cores of this machine; "
                         "a device's thread count is its own: give its cores (or leave it out for 1)")
    hw = raw["hardware"]
    detect = hw.get("detect", False)
    numbers = {k: float(hw[k]) for k in _HARDWARE_RANGES if k in hw and k != "peak_gflops"}
    if detect:  # this host: memory now (cheap); peak and bandwidth measured when needed
        numbers.setdefault("memory_mb", float(host_memory_mb()))
    hardware = HardwareSpec(efficiency=Efficiency(**{k: float(v) for k, v in hw["efficiency"].items()}),
                            detect=detect, peak_gflops=read_only({p: float(v) for p, v in
                                                                  hw.get("peak_gflops", {}).items()}), **numbers)
    return TargetSpec(name=raw["name"], description=raw["description"], runtime=raw["runtime"],
                      runtime_version=raw["runtime_version"], max_opset=raw["max_opset"],
                      precisions=tuple(raw["precisions"]), formats=tuple(raw["formats"]),
                      hardware=hardware, connection=ConnectionSpec(**conn), extra=read_only(extra))


def load_target_file(path: str | Path) -> TargetSpec:
    p = Path(path)
    return parse_target(read_toml(p, "target"), p)


def _dirs(targets_dir: str | Path | None) -> list[Path]:
    return search_dirs(targets_root(), targets_dir, "--targets-dir")


def _files(targets_dir: str | Path | None) -> dict[str, Path]:
    """Target name -> file; user files (first directory) win over built-in ones."""
    return named_files(_dirs(targets_dir))


def known_targets(targets_dir: str | Path | None = None) -> list[str]:
    return sorted(_files(targets_dir))


def load_target(name: str, targets_dir: str | Path | None = None) -> TargetSpec:
    """The target called ``name``: from ``targets_dir`` first, then the built-in ones."""
    return load_target_file(pick("target", name, _files(targets_dir)))


def list_targets(targets_dir: str | Path | None = None) -> list[TargetSpec]:
    return [load_target_file(f) for _, f in sorted(_files(targets_dir).items())]


def host_memory_mb() -> int:
    """Physical memory of this machine (for targets with ``hardware.detect = true``)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20))
    except (ValueError, OSError, AttributeError):
        return 0


def bench_script(target: TargetSpec, targets_dir: str | Path | None = None) -> Path:
    """The device-side script a remote target runs (``extra.bench_script``, relative to the targets dir)."""
    rel = target.extra.get("bench_script")
    if not rel:
        raise UsageError(f"target '{target.name}' declares no 'extra.bench_script' to run on the device")
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise UsageError(f"target '{target.name}': bench script '{rel}' must be relative to the targets directory")
    for d in _dirs(targets_dir):
        f = d / rel
        if f.is_file() and f.resolve().is_relative_to(d.resolve()):
            return f
    raise UsageError(f"target '{target.name}': bench script '{rel}' not found under the targets directories")
