"""Remote boards: an SSH transport (system ``ssh``/``scp``) and an adb transport (Android).

Commands are argument lists, never shell strings; ``--`` ends the options before the destination. Host and
user are plain names (no leading ``-``), ``extra.ssh_options`` may only set ``-o Key=Value`` pairs from an
allow-list of connection settings (nothing that runs or loads local code, forwards, tunnels or reads other
configuration; see ``targets.ssh_options_problem``), and every remote path is made only of characters no shell
reads specially, so a target file can neither add ssh behaviour nor have the board's shell run anything.
The remote side of ``ssh`` takes one command string,
so the argv of a fixed device-side script is passed through ``shlex.join`` as that single argument;
``adb shell`` likewise gets one ``shlex.join``-quoted string. Each run copies the artifact and the
script into a fresh directory on the device, runs, parses, and removes the directory. What runs there runs
under the board's own ``timeout`` (coreutils, busybox and toybox have one), so a run past its time is stopped
on the board, not only abandoned here with the board still busy.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lgp_edge.errors import DeviceTimeout, LgpEdgeError, TargetUnreachable, UsageError
from lgp_edge.profiling.latency_file import MAX_MS
from lgp_edge.profiling.measure import MeasureSettings, Timing
from lgp_edge.specs import ConnectionSpec, is_number
from lgp_edge.targets import ssh_options_problem, workdir_problem

log = logging.getLogger(__name__)

BENCH_TIMEOUT_S = 900.0  # one device-side benchmark run (TensorRT engine builds on a Nano take minutes); a target
#                          file may set its own (extra.bench_timeout_s)
KILL_GRACE_S = 10  # the board's timeout sends TERM at the limit and KILL this much later
_TIMED_OUT = (124, 137, 143)  # timeout's status: coreutils/toybox 124 (137 after KILL), busybox 143 (TERM)

# Remote paths reach scp as "host:PATH". SFTP-mode scp (the OpenSSH >= 9.0 default) takes PATH literally; legacy scp
# (-O, older OpenSSH, dropbear boards) passes it to the board's shell, which expands and runs what it can. No quoting
# means the same to both (quotes would be part of the name under SFTP), so instead remote paths are built only
# from characters no shell reads specially and need no quoting at all: the checked ``connection.workdir``, the
# board's ``mktemp`` name (checked), and file names passed through ``remote_name``. ``scp_argv`` refuses anything else.
_SAFE_REMOTE_PATH = re.compile(r"[A-Za-z0-9_.+/][A-Za-z0-9_.+/-]*")


def remote_name(name: str) -> str:
    """A local file's name as it is written on the device: shell-special characters become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
    safe = "_" + safe[1:] if safe.startswith("-") else safe
    if safe in ("", ".", ".."):
        raise UsageError(f"cannot copy a file named {name!r} to the device")
    return safe


def bounded(argv: Sequence[str], limit: float) -> list[str]:
    """``argv`` under the board's ``timeout``: TERM after ``limit`` seconds, KILL ``KILL_GRACE_S`` later."""
    return ["timeout", "-k", str(KILL_GRACE_S), str(math.ceil(limit)), *argv]


def _check_bounded(proc: subprocess.CompletedProcess[str], elapsed: float, limit: float, what: str,
                   where: str) -> None:
    """Raise for a ``bounded`` command that the board stopped at its limit or could not start."""
    if proc.returncode in _TIMED_OUT and elapsed >= limit:
        raise DeviceTimeout(f"{what} ran longer than {limit:g} s on {where} and was stopped there; if the board "
                            "needs longer, raise extra.bench_timeout_s in the target file")
    if proc.returncode == 127 and "timeout" in (proc.stderr + proc.stdout):
        raise UsageError(f"{where} has no 'timeout' command (coreutils, busybox or toybox), which bounds every "
                         "benchmark there; install coreutils on the board")


def _run(argv: Sequence[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    log.debug("run: %s", shlex.join(argv))
    try:
        # UTF-8 whatever the locale (a board's messages may hold any character); bytes that are not, replaced
        return subprocess.run(list(argv), capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise UsageError(f"'{argv[0]}' is not installed on this machine; it is needed to {what}") from None
    except subprocess.TimeoutExpired:
        raise TargetUnreachable(f"{what}: no answer within {timeout:g} s") from None


def _scratch_dir(made: str, prefix: str, where: str) -> str:
    """The board's ``mktemp -d`` answer, if it is ``PREFIX lgp-edge.`` and letters: every later remote path (copies,
    the benchmark, ``rm -rf``) is built on it."""
    if not re.fullmatch(re.escape(prefix) + r"lgp-edge\.[A-Za-z0-9]+", made, re.ASCII):
        raise UsageError(f"{where}: mktemp answered {made[-200:]!r} for the scratch directory, not '{prefix}lgp-edge.' "
                         "and letters; check the board's shell prints nothing else")
    return made


class Transport(ABC):
    """Copy files to a device, run an argv there, remove files."""

    name = "transport"
    bench_timeout_s = BENCH_TIMEOUT_S  # the longest one ``run`` may take on the device

    @property
    @abstractmethod
    def where(self) -> str:
        """The device, for messages."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``TargetUnreachable`` when the device does not answer."""

    @abstractmethod
    def mkdtemp(self) -> str:
        """A fresh directory on the device; its path."""

    @abstractmethod
    def put(self, local: Path, remote: str) -> None:
        """Copy one local file to ``remote`` on the device."""

    conn: ConnectionSpec

    def run(self, argv: Sequence[str], timeout: float | None = None) -> str:
        """Run ``argv`` on the device, stopped there after ``timeout`` seconds (default ``bench_timeout_s``);
        its stdout."""
        limit = self.bench_timeout_s if timeout is None else timeout
        # here: the board's limit, its KILL grace, and the connection's own time on top
        return self._call(bounded(argv, limit), limit + KILL_GRACE_S + self.conn.timeout_s + 30,
                          f"'{Path(argv[0]).name}'", limit)

    @abstractmethod
    def _call(self, argv: Sequence[str], timeout: float, what: str, limit: float | None = None) -> str:
        """Run ``argv`` on the device as it is, waiting ``timeout`` seconds here; its stdout. ``limit``: the bound
        ``bounded`` put on it, to tell a run stopped there from a failure."""

    @abstractmethod
    def remove(self, remote_dir: str) -> None:
        """Remove a directory ``mkdtemp`` made."""


# ssh's failures that the board's answer decided (a key refused, a host key that changed): no retry mends them
_SSH_REFUSED = re.compile(r"Permission denied|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
                          r"Too many authentication failures|Unable to negotiate|no matching .* found|"
                          r"no matching host key type|Bad owner or permissions|Bad configuration option")


class SSHTransport(Transport):
    """System OpenSSH in batch mode (keys only, never a password prompt)."""

    name = "ssh"

    def __init__(self, conn: ConnectionSpec, *, options: Sequence[str] = (), ssh: str = "ssh",
                 scp: str = "scp", bench_timeout_s: float = BENCH_TIMEOUT_S) -> None:
        if not conn.host:
            raise UsageError("ssh connection has no host")
        for what, value in (("host", conn.host), ("user", conn.user)):
            if value is not None and (value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value)
                                      or "@" in value):
                raise UsageError(f"ssh {what} {value!r} is not a plain {what} name (no leading '-', spaces or "
                                 "'@'); fix the target file")
        problem = None if conn.workdir is None else workdir_problem(conn.workdir, "ssh")
        if problem:
            raise UsageError(f"ssh connection.workdir {conn.workdir!r}: {problem}; fix the target file")
        problem = ssh_options_problem(list(options))
        if problem:
            raise UsageError(f"extra.ssh_options {problem}; fix the target file")
        self.conn, self.options, self.ssh, self.scp = conn, tuple(options), ssh, scp
        self.bench_timeout_s = float(bench_timeout_s)

    @property
    def destination(self) -> str:
        return f"{self.conn.user}@{self.conn.host}" if self.conn.user else str(self.conn.host)

    @property
    def where(self) -> str:
        return self.destination

    def _opts(self, port_flag: str) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(self.conn.timeout_s))}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4"]
        if self.conn.port:
            opts += [port_flag, str(self.conn.port)]
        if self.conn.key:
            opts += ["-i", str(Path(self.conn.key).expanduser()), "-o", "IdentitiesOnly=yes"]
        return opts + list(self.options)

    def ssh_argv(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs ``argv`` on the board (one quoted remote command, as ssh requires)."""
        return [self.ssh, *self._opts("-p"), "--", self.destination, shlex.join(argv)]

    def scp_argv(self, local: Path, remote: str) -> list[str]:
        if not _SAFE_REMOTE_PATH.fullmatch(remote):  # unquoted on purpose: see _SAFE_REMOTE_PATH
            raise UsageError(f"refusing to copy {local.name} to the remote path {remote!r}: a remote path may hold "
                             "only letters, digits and '_.+/-' (legacy scp hands it to the board's shell)")
        return [self.scp, "-q", *self._opts("-P"), "--", str(local), f"{self.destination}:{remote}"]

    def _call(self, argv: Sequence[str], timeout: float, what: str, limit: float | None = None) -> str:
        start = time.monotonic()
        proc = _run(self.ssh_argv(argv), timeout, what)
        if proc.returncode == 255:  # ssh's own failure: connection, authentication, host key
            msg = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            if _SSH_REFUSED.search(proc.stderr):  # no retry mends a refused key or a changed host key: exit 2
                raise UsageError(f"{self.destination} refused the ssh login: {msg}; check connection.user, "
                                 "connection.key and the board's host key in known_hosts")
            hint = (" (is connection.host right? a board that is off does not answer its name either)"
                    if "resolve hostname" in msg else "")
            raise TargetUnreachable(f"cannot reach {self.destination} over ssh: {msg}{hint}")
        if limit is not None:
            _check_bounded(proc, time.monotonic() - start, limit, what, self.destination)
        if proc.returncode != 0:
            msg = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:])[:400]
            raise UsageError(f"{what} failed on {self.destination} (exit {proc.returncode}): {msg}")
        return proc.stdout

    def check(self) -> None:
        self._call(["true"], self.conn.timeout_s + 5, f"connect to {self.destination}")

    def mkdtemp(self) -> str:
        parent = self.conn.workdir or "/tmp"
        if parent == "~" or parent.startswith("~/"):  # relative: ssh commands and scp both start in the home
            parent = parent[1:].strip("/")
            prefix = f"{parent}/" if parent else ""
        else:
            prefix = parent.rstrip("/") + "/"
        made = self._call(["mktemp", "-d", f"{prefix}lgp-edge.XXXXXXXX"], self.conn.timeout_s + 10,
                         "create a scratch directory").strip()
        return _scratch_dir(made, prefix, self.destination)

    def put(self, local: Path, remote: str) -> None:
        proc = _run(self.scp_argv(local, remote), self.conn.timeout_s + 120, f"copy {local.name}")
        if proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise TargetUnreachable(f"cannot copy {local.name} to {self.destination}: {msg}")

    def remove(self, remote_dir: str) -> None:
        if "lgp-edge." not in remote_dir:  # never remove anything we did not create
            raise ValueError(f"refusing to remove '{remote_dir}'")
        self._call(["rm", "-rf", "--", remote_dir], self.conn.timeout_s + 10, "clean up")


ANDROID_TMP = "/data/local/tmp"


def cpu_mask(cores: str) -> str:
    """Hex affinity mask for toybox ``taskset`` from a core list like ``"3-7"`` or ``"4,5,6,7"``."""
    mask = 0
    for part in cores.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        for c in range(int(lo), int(hi or lo) + 1):
            mask |= 1 << c
    if not mask:
        raise UsageError(f"empty core list '{cores}'")
    return format(mask, "x")


# what adb says of a device it cannot use (a shell error on a device that answered, "sh: x: not found", is not)
_ADB_UNAVAILABLE = re.compile(r"no devices|device (?:'[^']*' )?not found|device (?:is )?offline|unauthorized|"
                             r"device still (?:authorizing|connecting)")


class ADBTransport(Transport):
    """Android Debug Bridge: push to /data/local/tmp, run pinned to the big cores with ``taskset``."""

    name = "adb"

    def __init__(self, conn: ConnectionSpec, *, adb: str = "adb", bench_timeout_s: float = BENCH_TIMEOUT_S) -> None:
        self.conn, self.adb, self.bench_timeout_s = conn, adb, float(bench_timeout_s)

    @property
    def where(self) -> str:
        return f"adb device {self.conn.serial or '(default)'}"

    def base(self) -> list[str]:
        return [self.adb, "-s", self.conn.serial] if self.conn.serial else [self.adb]

    def _adb(self, args: Sequence[str], timeout: float, what: str, limit: float | None = None) -> str:
        start = time.monotonic()
        proc = _run([*self.base(), *args], timeout, what)
        if limit is not None:
            _check_bounded(proc, time.monotonic() - start, limit, what, self.where)
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            unavailable = next((ln for ln in said if _ADB_UNAVAILABLE.search(ln)), None)
            if unavailable is not None:  # adb's own word about the device (not a shell error on it), its first line
                msg = " | ".join([unavailable, *[ln for ln in said if ln != unavailable][:2]])[:400]
                raise TargetUnreachable(f"adb device {self.conn.serial or '(default)'} is not available: {msg}")
            msg = " | ".join(said[-3:])[:400]
            raise UsageError(f"{what} failed over adb (exit {proc.returncode}): {msg}")
        return proc.stdout

    def _call(self, argv: Sequence[str], timeout: float, what: str, limit: float | None = None) -> str:
        return self._adb(["shell", shlex.join(argv)], timeout, what, limit)

    def check(self) -> None:
        state = self._adb(["get-state"], self.conn.timeout_s, "query the adb device").strip()
        if state != "device":
            raise TargetUnreachable(f"adb device {self.conn.serial or '(default)'} is '{state}', not ready")

    def mkdtemp(self) -> str:
        prefix = f"{(self.conn.workdir or ANDROID_TMP).rstrip('/')}/"
        made = self._call(["mktemp", "-d", f"{prefix}lgp-edge.XXXXXXXX"], self.conn.timeout_s + 10, "'mktemp'").strip()
        return _scratch_dir(made, prefix, self.where)

    def put(self, local: Path, remote: str) -> None:
        self._adb(["push", str(local), remote], self.conn.timeout_s + 120, f"push {local.name}")

    def remove(self, remote_dir: str) -> None:
        if "lgp-edge." not in remote_dir:
            raise ValueError(f"refusing to remove '{remote_dir}'")
        self._call(["rm", "-rf", remote_dir], self.conn.timeout_s + 10, "'rm'")


def transport_for(conn: ConnectionSpec, extra: Mapping[str, Any] | None = None) -> Transport:
    extra = extra or {}
    limit = float(extra.get("bench_timeout_s", BENCH_TIMEOUT_S))
    if conn.kind == "ssh":
        return SSHTransport(conn, options=tuple(extra.get("ssh_options", ())), bench_timeout_s=limit)
    if conn.kind == "adb":
        if shutil.which("adb") is None:
            raise UsageError("target needs 'adb' (Android platform-tools), which is not on PATH")
        return ADBTransport(conn, bench_timeout_s=limit)
    raise UsageError(f"connection kind '{conn.kind}' has no transport")


# ------------------------------------------------------------------------------------- device-side benches
def parse_ort_bench(text: str, where: str = "the board") -> dict[str, Any]:
    """The JSON line printed by ``targets/linux/ort_bench.py``: ``times_ms`` (per run, each in (0, MAX_MS]) and
    versions. A board that printed anything else for its times is refused (``where`` names it)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and data.get("times_ms"):
                times = data["times_ms"]
                bad = (f"times_ms {repr(times)[:40]} (a list expected)" if not isinstance(times, list) else
                       next((f"times_ms[{i}] {repr(t)[:40]}" for i, t in enumerate(times)
                             if not (is_number(t) and 0 < t <= MAX_MS)), None))
                if bad:
                    raise UsageError(f"{where} returned an invalid timing: {bad} (milliseconds in (0, {MAX_MS:g}] "
                                     "expected); check the benchmark and its runtime on the board")
                data["times_ms"] = [float(t) for t in times]
                return data
    raise UsageError(f"the device-side benchmark printed no timings: {text.strip()[-300:]}")


def parse_perf_test(text: str, where: str = "the board") -> dict[str, float]:
    """ONNX Runtime's ``onnxruntime_perf_test -s`` statistics (seconds) -> milliseconds by name.

    Reads ``Average inference time cost: X ms``, ``Min/Max/P50/P90/P95/P99/P999 Latency: X s`` and
    ``Total inference requests: N``; a value that is no time (or no count) is refused (``where`` names the board).
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        parts = value.split()
        if not parts:
            continue
        latency = name.endswith(" Latency") and len(parts) > 1 and parts[1] == "s"
        if not (latency or name in ("Average inference time cost", "Total inference requests")):
            continue
        try:
            number = float(parts[0])
        except ValueError:
            number = math.nan
        count = name == "Total inference requests"
        if not (math.isfinite(number) and number >= 0) or (count and (number < 1 or number != int(number))):
            raise UsageError(f"{where} returned an invalid timing: onnxruntime_perf_test printed {name} "
                             f"{parts[0][:40]!r} (" + ("a count of runs" if count else "a time >= 0")
                             + " expected); check the benchmark on the board")
        if latency:
            out[name.removesuffix(" Latency").lower()] = number * 1e3
        elif count:
            out["n"] = number
        else:
            out["mean"] = number
    if "p50" not in out or "mean" not in out:
        raise UsageError(f"onnxruntime_perf_test printed no statistics: {text.strip()[-300:]}")
    return out


class RemoteSession:
    """A scratch directory on the device for one profiling run: created on entry, removed on exit.

    ``check`` runs first, so an unreachable board fails before anything is measured or written.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.dir = ""

    def __enter__(self) -> RemoteSession:  # noqa: PYI034
        self.transport.check()
        self.dir = self.transport.mkdtemp()
        return self

    def put(self, local: Path) -> str:
        remote = f"{self.dir}/{remote_name(Path(local).name)}"
        self.transport.put(Path(local), remote)
        return remote

    def run(self, argv: Sequence[str], timeout: float | None = None) -> str:
        return self.transport.run(argv, timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        if self.dir:
            try:
                self.transport.remove(self.dir)
            except (LgpEdgeError, OSError, ValueError) as err:  # cleanup must not hide the real error
                log.warning("could not remove %s on the device: %s", self.dir, err)


def ort_bench_argv(python: str, script: str, model: str, settings: MeasureSettings) -> list[str]:
    """``python3 ort_bench.py MODEL --warmup N --iters N --threads N`` (all paths on the device)."""
    return [python, script, model, "--warmup", str(settings.warmup), "--iters", str(settings.iters),
            "--threads", str(settings.threads)]


def trtexec_argv(script: str, model: str, precision: str, settings: MeasureSettings,
                 trtexec: str | None = None) -> list[str]:
    """``sh bench.sh MODEL PRECISION ITERATIONS WARMUP_MS [TRTEXEC]`` (paths on the device)."""
    warm_ms = max(200, settings.warmup * 20)  # trtexec warms up by time (ms), not by count
    argv = ["sh", script, model, precision, str(settings.iters), str(warm_ms)]
    return argv + [trtexec] if trtexec else argv


def perf_test_argv(binary: str, model: str, settings: MeasureSettings, big_cores: str) -> list[str]:
    """``taskset MASK onnxruntime_perf_test -e cpu -m times -r N -x T -I -s MODEL`` (paths on the device)."""
    return ["taskset", cpu_mask(big_cores), binary, "-e", "cpu", "-m", "times", "-r", str(settings.iters),
            "-x", str(settings.threads), "-I", "-s", model]


def perf_test_timing(stats: dict[str, float], settings: MeasureSettings) -> Timing:
    """A Timing from perf_test statistics (it prints no std: estimated from P90-P50; ``repeat_if_noisy`` flags it)."""
    p50, p90, p99 = stats["p50"], stats.get("p90", stats["p50"]), stats.get("p99", stats.get("max", stats["p50"]))
    std = max(0.0, (p90 - p50) / 1.2816)  # normal approximation: p90 = median + 1.2816 sd
    mean = stats["mean"]
    return Timing(median_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=mean, std_ms=std,
                  min_ms=stats.get("min", p50), cv=std / mean if mean > 0 else 0.0,
                  n=int(stats.get("n", settings.iters)), warmup=1)

