"""Remote boards. SSH for real: a throwaway sshd on 127.0.0.1 plays the board. adb: the exact commands,
through a stand-in ``adb`` on PATH, and for real when ``adb devices`` lists a device."""

from __future__ import annotations

import getpass
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lgp_edge.cli import main
from lgp_edge.errors import DeviceTimeout, TargetUnreachable, UsageError
from lgp_edge.profiling import remote
from lgp_edge.profiling.measure import MeasureSettings
from lgp_edge.profiling.store import MeasurementStore
from lgp_edge.specs import ConnectionSpec

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
KEYS = ["ti6.0-5", "ti6.0-2+b6.3-5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    missing = [p for p, ok in ((SSHD, os.path.exists(SSHD)), ("ssh", shutil.which("ssh") is not None),
                               ("ssh-keygen", shutil.which("ssh-keygen") is not None)) if not ok]
    # Skipped only outside CI: there (.ci/run sets CI) a missing SSH server fails the tests instead of hiding them.
    if missing and not os.environ.get("CI"):
        pytest.skip("openssh-server / openssh-client is not installed (apt-get install openssh-server)")
    assert not missing, f"{', '.join(missing)} missing: scripts/install.sh installs openssh-server / openssh-client"
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
                   f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
                   "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                   "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
                   "Subsystem sftp internal-sftp\n")  # scp speaks SFTP, as on any stock board
    if os.geteuid() == 0:  # sshd insists on its privilege separation directory
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    check = subprocess.run([SSHD, "-t", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    log = open(d / "sshd.log", "w")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=log)
    deadline = time.time() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None, (d / "sshd.log").read_text()
            assert time.time() < deadline, "sshd did not start listening"
            time.sleep(0.1)
    yield {"port": port, "key": d / "client_key", "known_hosts": d / "known_hosts", "log": d / "sshd.log",
           "dir": d, "user": getpass.getuser()}
    proc.terminate()
    proc.wait(10)
    log.close()


def _board_toml(tdir: Path, name: str, sshd: dict, workdir: Path, *, port: int | None = None,
                runtime: str = "onnxruntime", script: str = "linux/ort_bench.py", extra: str = "",
                python: str = sys.executable) -> None:
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / f"{name}.toml").write_text(f"""
name = "{name}"
description = "this machine seen as a board through a loopback sshd"
runtime = "{runtime}"
runtime_version = "whatever the board has"
max_opset = 17
precisions = ["fp32", "fp16", "int8"]
formats = ["onnx"]
[hardware]
peak_gflops = {{ fp32 = 100.0, fp16 = 200.0, int8 = 400.0 }}  # made-up: never used by a measurement
mem_gbps = 10.0
memory_mb = 1024
[hardware.efficiency]
compute = 0.5
memory = 0.5
overhead_us = 5.0
[connection]
kind = "ssh"
host = "127.0.0.1"
user = "{sshd['user']}"
port = {port or sshd['port']}
key = "{sshd['key']}"
workdir = "{workdir}"
timeout_s = 5.0
[extra]
bench_script = "{script}"
remote_python = "{python}"
threads = 1
ssh_options = ["-o", "UserKnownHostsFile={sshd['known_hosts']}"]
{extra}
""")


BOARD_PYTHON = """#!{python}
import hashlib, json, os, sys
with open({log!r}, "a") as f:  # what the board ran, and a digest of the model file it ran on
    f.write(json.dumps({{"argv": sys.argv[1:], "sha256": hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()}})
            + "\\n")
os.execv({python!r}, [{python!r}, *sys.argv[1:]])
"""


def test_ssh_profiles_descendants_on_the_loopback_board(sshd, tiny_pool, tmp_path, capsys):
    work = tmp_path / "board-tmp"
    work.mkdir()
    ran = tmp_path / "board-ran.jsonl"
    board_python = tmp_path / "board-python"  # the board's python3, logging each ort_bench.py run
    board_python.write_text(BOARD_PYTHON.format(python=sys.executable, log=str(ran)))
    board_python.chmod(0o755)
    _board_toml(tmp_path / "targets", "loopback", sshd, work, python=str(board_python))
    store = tmp_path / "m.sqlite"
    before = sshd["log"].read_text().count("Accepted publickey")
    argv = ["profile", "--target", "loopback", "--targets-dir", str(tmp_path / "targets"), "--pool", str(tiny_pool),
            "--store", str(store), "--warmup", "3", "--iters", "20", "--json", "--quiet"]
    for k in KEYS:
        argv += ["--descendant", k]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    recs = out["records"]
    assert [r["descendant_key"] for r in recs] == KEYS
    import onnxruntime

    for r in recs:
        assert r["source"] == "measured" and r["runtime"] == "onnxruntime" and r["target"] == "loopback"
        assert r["n"] == 20 and r["threads"] == 1 and 0 < r["median_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert math.isfinite(r["p99_ms"])
        assert r["tool_versions"]["onnxruntime"] == onnxruntime.__version__  # reported by the board's script
        assert r["tool_versions"]["device_machine"] == platform.machine()
    # the board ran ort_bench.py on each descendant's own model, copied into its scratch directory: two different
    # files (9-block stitched model vs 6 narrow blocks); a noisy one may have been measured again, never another
    digests: dict[str, set[str]] = {}
    for run in map(json.loads, ran.read_text().splitlines()):
        script, model = (Path(a) for a in run["argv"][:2])
        assert script.name == "ort_bench.py" and model.parent == script.parent
        assert model.parent.parent == work and model.parent.name.startswith("lgp-edge.")
        assert run["argv"][2:] == ["--warmup", "3", "--iters", "20", "--threads", "1"]
        digests.setdefault(model.name.removesuffix(".onnx"), set()).add(run["sha256"])
    assert set(digests) == set(KEYS) and all(len(d) == 1 for d in digests.values())
    assert digests[KEYS[0]] != digests[KEYS[1]]
    assert sshd["log"].read_text().count("Accepted publickey") > before  # it really went through sshd
    assert list(work.iterdir()) == []  # the scratch directory on the board was removed
    with MeasurementStore(store) as s:
        assert {r.descendant_key for r in s.records(target="loopback")} == set(KEYS)


def test_ssh_transport_commands_are_argument_lists(sshd, tmp_path):
    conn = ConnectionSpec(kind="ssh", host="127.0.0.1", user=sshd["user"], port=sshd["port"], key=str(sshd["key"]),
                          workdir=str(tmp_path), timeout_s=5)
    t = remote.SSHTransport(conn, options=["-o", f"UserKnownHostsFile={sshd['known_hosts']}"])
    argv = t.ssh_argv(["echo", "a b; rm -rf /", "$HOME"])
    assert argv[-1] == "echo 'a b; rm -rf /' '$HOME'"  # one quoted remote command
    assert argv[-3:-1] == ["--", t.destination]  # no option can follow '--': the destination is never one
    assert t.run(["echo", "a b; touch pwned", "$HOME"]).strip() == "a b; touch pwned $HOME"
    assert not (Path.cwd() / "pwned").exists() and not (Path.home() / "pwned").exists()
    with remote.RemoteSession(t) as sess:
        f = tmp_path / "x y.txt"
        f.write_text("hello")
        r = sess.put(f)
        assert sess.run(["cat", r]) == "hello"
        scratch = sess.dir
    assert not Path(scratch).exists()


LOGGING_WRAPPER = """#!/bin/sh
printf '%s\\n' "$*" >> {log}
exec {real} "$@"
"""


def test_unreachable_board_is_one_clear_line_and_writes_nothing(sshd, tiny_pool, tmp_path, capsys, monkeypatch):
    """One bounded connection attempt (ssh's ConnectTimeout, the target's timeout_s), no retries and nothing
    copied, then one line."""
    port = _free_port()
    _board_toml(tmp_path / "targets", "deadboard", sshd, tmp_path, port=port)
    bindir = tmp_path / "bin"  # ssh and scp that log each call and run the real ones
    bindir.mkdir()
    for tool in ("ssh", "scp"):
        (bindir / tool).write_text(LOGGING_WRAPPER.format(log=tmp_path / f"{tool}.log", real=shutil.which(tool)))
        (bindir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    store = tmp_path / "m.sqlite"
    rc = main(["profile", "--target", "deadboard", "--targets-dir", str(tmp_path / "targets"), "--pool",
               str(tiny_pool), "--store", str(store), "--descendant", KEYS[0], "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3  # a board that does not answer is worth retrying, a typo (2) is not: CI tells them apart
    assert err.count("\n") == 1 and "cannot reach" in err and "127.0.0.1" in err
    attempts = (tmp_path / "ssh.log").read_text().splitlines()
    assert len(attempts) == 1, attempts
    assert "ConnectTimeout=5" in attempts[0] and f"-p {port}" in attempts[0], attempts
    assert not (tmp_path / "scp.log").exists()
    with MeasurementStore(store) as s:
        assert s.count() == 0


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_jetson_bench_script_over_ssh_with_a_stand_in_trtexec(sshd, tiny_pool, tmp_path, capsys, precision):
    """Plumbing of the TensorRT path (bench.sh, its flags, parsing) on a machine without TensorRT: the stand-in
    trtexec records its arguments and prints a recorded real TensorRT 8 summary (helpers.TRT8_LOG). int8 engines
    pin LayerNorm/softmax to fp32 as build_engine.sh does (they were timed unpinned: another engine)."""
    from helpers import TRT8_LOG

    fake = tmp_path / "trtexec"
    args_file = tmp_path / "trtexec.args"
    fake.write_text("#!/bin/sh\n"
                    "if [ \"$1\" = --help ]; then echo '  --percentile=P  Report performance for the P "
                    "percentage'; echo '  --layerPrecisions=spec'; exit 0; fi\n"
                    f"echo \"$@\" > {args_file}\n"
                    f"cat <<'EOF'\n{TRT8_LOG}EOF\n")
    fake.chmod(0o755)
    work = tmp_path / "board-tmp"
    work.mkdir()
    _board_toml(tmp_path / "targets", "fakejetson", sshd, work, runtime="tensorrt", script="jetson/bench.sh",
                extra=f'trtexec = "{fake}"')
    assert main(["profile", "--target", "fakejetson", "--targets-dir", str(tmp_path / "targets"), "--pool",
                 str(tiny_pool), "--store", str(tmp_path / "m.sqlite"), "--descendant", KEYS[0], "--precision",
                 precision, "--iters", "30", "--warmup", "5", "--json", "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out)["records"][0]
    used = args_file.read_text().split()
    assert used[0].startswith("--onnx=") and used[0].endswith(f"{KEYS[0]}{'.int8' if precision == 'int8' else ''}.onnx")
    assert {"--fp16", "--percentile=90", "--iterations=30", "--warmUp=200", "--duration=0"} <= set(used)
    assert ("--int8" in used) == (precision == "int8")
    # the engine build_engine.sh deploys: LayerNorm/softmax pinned to fp32
    pinned = next(a for a in used if a.startswith("--layerPrecisions=")).split("=", 1)[1].split(",")
    assert "--precisionConstraints=obey" in used and pinned and all(x.endswith(":fp32") for x in pinned)
    assert any("Softmax" in x for x in pinned) and "pinned" in rec["tool_versions"]["note_precision"]
    assert rec["median_ms"] == 1755.81 and rec["runtime"] == "tensorrt" and rec["precision"] == precision
    assert list(work.iterdir()) == []



def test_a_benchmark_past_its_time_is_stopped_on_the_board(sshd, tmp_path):
    """A run past its time is stopped on the board too (ssh alone would leave it loading the board) and is
    reported as too slow, not as an unreachable board."""
    t = _transport(sshd, str(tmp_path))
    marker, nap = tmp_path / "finished", "30.123"
    with remote.RemoteSession(t) as sess:
        with pytest.raises(DeviceTimeout, match=r"ran longer than 2 s on .*stopped there.*extra.bench_timeout_s"):
            sess.run(["sh", "-c", f"sleep {nap}; touch {marker}"], timeout=2)
    assert subprocess.run(["pgrep", "-f", f"sleep {nap}"], capture_output=True, check=False).returncode == 1
    assert not marker.exists()


def test_bench_timeout_comes_from_the_target_file(sshd, tmp_path):
    from lgp_edge.targets import load_target

    _board_toml(tmp_path / "targets", "slowboard", sshd, tmp_path, extra="bench_timeout_s = 2400")
    target = load_target("slowboard", str(tmp_path / "targets"))
    assert remote.transport_for(target.connection, target.extra).bench_timeout_s == 2400
    assert remote.transport_for(ConnectionSpec(kind="ssh", host="h")).bench_timeout_s == remote.BENCH_TIMEOUT_S
    for bad in ("0", "-5", "100000", '"long"'):
        _board_toml(tmp_path / "targets", "badboard", sshd, tmp_path, extra=f"bench_timeout_s = {bad}")
        with pytest.raises(UsageError, match="extra.bench_timeout_s"):
            load_target("badboard", str(tmp_path / "targets"))


def test_a_board_of_another_machine_is_refused(sshd, tiny_pool, tmp_path, capsys):
    """A host name that reaches another computer must not fill the store with its timings."""
    other = "ppc64le" if platform.machine() != "ppc64le" else "aarch64"
    work = tmp_path / "board-tmp"
    work.mkdir()
    _board_toml(tmp_path / "targets", "wrongboard", sshd, work, extra=f'machine = "{other}"')
    store = tmp_path / "m.sqlite"
    rc = main(["profile", "--target", "wrongboard", "--targets-dir", str(tmp_path / "targets"), "--pool",
               str(tiny_pool), "--store", str(store), "--descendant", KEYS[0], "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"'{platform.machine()}'" in err and f"'{other}'" in err and "connection.host" in err
    if store.exists():
        with MeasurementStore(store) as s:
            assert s.count() == 0
    assert list(work.iterdir()) == []



IMPOSSIBLE_TIMINGS = [("[-1]", "-1"), ("[NaN]", "nan"), ("[0]", "0"), ("[1e30]", "1e+30"), ("5", "5"), ("[[1]]", "[1]"),
                      ('["x"]', "'x'"), ("[2.5, -3]", "-3"), ("[Infinity]", "inf")]


def _board_output(times: str) -> str:
    return f'{{"times_ms": {times}, "onnxruntime": "1.0"}}\n'


def test_a_board_that_returns_an_impossible_timing_is_one_line(sshd, tiny_pool, tmp_path, capsys):
    """The board's benchmark prints its per-run times; what it printed was converted with float() and stored: a
    negative, NaN, zero or absurd time, or a value of another type, ended in a ValueError or TypeError traceback.
    One such board end to end here; every kind of impossible value in the test below."""
    fake = tmp_path / "board-python"  # the board's python3, printing what a broken or hostile board could
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{_board_output('[2.5, -3]')}EOF\n")
    fake.chmod(0o755)
    work = tmp_path / "board-tmp"
    work.mkdir()
    _board_toml(tmp_path / "targets", "oddboard", sshd, work, python=str(fake))
    store = tmp_path / "m.sqlite"
    rc = main(["profile", "--target", "oddboard", "--targets-dir", str(tmp_path / "targets"), "--pool",
               str(tiny_pool), "--store", str(store), "--descendant", KEYS[0], "--warmup", "0", "--iters", "1",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "invalid timing" in err and "times_ms[1] -3" in err and "127.0.0.1" in err, err
    if store.exists():
        with MeasurementStore(store) as s:
            assert s.count() == 0
    assert list(work.iterdir()) == []  # the scratch directory on the board was removed


@pytest.mark.parametrize(("times", "what"), IMPOSSIBLE_TIMINGS,
                         ids=["negative", "nan", "zero", "huge", "not-a-list", "nested", "string", "one-negative",
                              "inf"])
def test_every_impossible_board_timing_is_refused_naming_it(times, what):
    with pytest.raises(UsageError) as e:
        remote.parse_ort_bench(_board_output(times), "board 'oddboard' (127.0.0.1)")
    msg = str(e.value)
    assert msg.startswith("board 'oddboard' (127.0.0.1) returned an invalid timing: ") and what in msg, msg
    assert "\n" not in msg
    assert remote.parse_ort_bench(_board_output("[2.5, 3]"))["times_ms"] == [2.5, 3.0]  # possible times pass as floats


def _legacy_scp(tmp_path: Path) -> str:
    """An ``scp`` that speaks the legacy SCP protocol (-O): the board's shell reads the remote path."""
    scp = shutil.which("scp")
    if scp is None or "O" not in subprocess.run([scp], capture_output=True, text=True, check=False).stderr:
        pytest.skip("this scp has no -O (legacy protocol) option")
    wrapper = tmp_path / "scp-legacy"
    wrapper.write_text(f'#!/bin/sh\nexec {scp} -O "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _transport(sshd: dict, workdir: str, **kw) -> remote.SSHTransport:
    conn = ConnectionSpec(kind="ssh", host="127.0.0.1", user=sshd["user"], port=sshd["port"], key=str(sshd["key"]),
                          workdir=workdir, timeout_s=5)
    return remote.SSHTransport(conn, options=["-o", f"UserKnownHostsFile={sshd['known_hosts']}"], **kw)


def test_legacy_scp_remote_path_cannot_run_a_command_on_the_board(sshd, tmp_path):
    mark = tmp_path / "pwned"
    f = tmp_path / "m.onnx"
    f.write_text("x")
    t = _transport(sshd, str(tmp_path), scp=_legacy_scp(tmp_path))
    with pytest.raises(UsageError, match="remote path"):
        t.put(f, f"{tmp_path}/m.onnx;touch {mark}")  # legacy scp hands this path to the board's shell
    with pytest.raises(UsageError, match="remote path"):
        t.put(f, f"{tmp_path}/$(touch {mark})")
    assert not mark.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp", "legacy-scp"])
def test_odd_local_file_names_reach_the_board_under_both_scp_protocols(sshd, tmp_path, legacy):
    mark = tmp_path / "pwned"
    t = _transport(sshd, str(tmp_path), **({"scp": _legacy_scp(tmp_path)} if legacy else {}))
    with remote.RemoteSession(t) as sess:
        for i, name in enumerate(["ti6.0-2+b6.3-5.onnx", "x y.txt", f"a;touch {mark.name}", "$(id)*?.onnx",
                                  "-rf.txt", "é.bin"]):
            f = tmp_path / "local" / str(i) / name
            f.parent.mkdir(parents=True)
            f.write_text(f"content {i}")
            r = sess.put(f)
            assert r.startswith(f"{sess.dir}/") and re.fullmatch(r"[A-Za-z0-9_.+/-]+", r), r
            assert sess.run(["cat", r]) == f"content {i}"
        assert sess.put(tmp_path / "local" / "0" / "ti6.0-2+b6.3-5.onnx").endswith("/ti6.0-2+b6.3-5.onnx")
        scratch = sess.dir
    assert not Path(scratch).exists() and not mark.exists() and not (Path.home() / mark.name).exists()


@pytest.mark.parametrize("workdir", ["/tmp/$(touch pwned)", "/tmp/a b", "tmp", "~root", "/tmp/*", "-o"])
def test_transport_refuses_a_workdir_that_is_not_a_plain_path(workdir):
    conn = ConnectionSpec(kind="ssh", host="127.0.0.1", workdir=workdir, timeout_s=5)
    with pytest.raises(UsageError, match="workdir"):
        remote.SSHTransport(conn)


@pytest.mark.parametrize("opt", ["ProxyCommand=touch /tmp/x", "PKCS11Provider=/tmp/x.so", "LocalForward=1 a:2", ""])
def test_transport_refuses_ssh_options_off_the_allow_list(opt):
    conn = ConnectionSpec(kind="ssh", host="127.0.0.1", timeout_s=5)
    with pytest.raises(UsageError, match="ssh_options"):
        remote.SSHTransport(conn, options=["-o", opt])


def test_workdir_under_home_on_the_loopback_board(sshd, tmp_path):
    import pwd

    home = Path(pwd.getpwuid(os.getuid()).pw_dir)  # the board's home (sshd's, not $HOME)
    if not os.access(home, os.W_OK):
        pytest.skip(f"{home} is not writable")
    t = _transport(sshd, "~")
    f = tmp_path / "m.onnx"
    f.write_text("model")
    scratch = ""
    try:
        with remote.RemoteSession(t) as sess:
            scratch = sess.dir
            assert re.fullmatch(r"lgp-edge\.[A-Za-z0-9]+", scratch)  # relative: ssh and scp start in the home
            assert (home / scratch).is_dir()
            r = sess.put(f)
            assert (home / r).read_text() == "model" and sess.run(["cat", r]) == "model"
        assert not (home / scratch).exists()
    finally:
        if scratch and (home / scratch).is_dir():
            shutil.rmtree(home / scratch)


def test_a_board_that_answers_a_strange_scratch_directory_is_refused(tmp_path):
    """The scratch directory comes from the board's ``mktemp``; every later remote path is built on it."""
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\necho '/tmp/lgp-edge.ab; touch /tmp/pwned'\n")
    fake.chmod(0o755)
    t = remote.SSHTransport(ConnectionSpec(kind="ssh", host="127.0.0.1", workdir="/tmp", timeout_s=5), ssh=str(fake))
    with pytest.raises(UsageError, match="scratch directory"):
        t.mkdtemp()


# ------------------------------------------------------------------------------------------------- adb
FAKE_ADB = r'''#!{python}
import json, sys
log, out = {log!r}, {out!r}
args = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:2] == ["-s", "R5CT0TEST"]:
    args = args[2:]
else:
    print("error: device not found", file=sys.stderr); sys.exit(1)
if args == ["get-state"]:
    print("device")
elif args[0] == "push":
    print("1 file pushed")
elif args[0] == "shell" and args[1].startswith("mktemp"):
    print("/data/local/tmp/lgp-edge.Ab12Cd34")
elif args[0] == "shell" and args[1] == "timeout -k 10 60 uname -m":
    print("aarch64")
elif args[0] == "shell" and args[1].startswith("timeout -k 10 900 taskset"):
    print(open(out).read())
'''


def fake_phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, perf_out: str | None = None) -> tuple[Path, Path, Path]:
    """A fake ``adb`` on PATH (it logs each call and prints ``perf_out``, default helpers.PERF_TEST_OUT), a stand-in
    onnxruntime_perf_test and an android-arm64 target naming its serial: (adb's log, perf_test, targets dir)."""
    from helpers import PERF_TEST_OUT

    from lgp_edge.targets import targets_root

    bindir = tmp_path / "bin"
    bindir.mkdir()
    log, out = tmp_path / "adb.log", tmp_path / "perf.out"
    out.write_text(PERF_TEST_OUT if perf_out is None else perf_out)
    (bindir / "adb").write_text(FAKE_ADB.format(python=sys.executable, log=str(log), out=str(out)))
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    perf = tmp_path / "onnxruntime_perf_test"
    perf.write_bytes(b"\x7fELF stand-in")
    perf.chmod(0o755)
    monkeypatch.setenv("LGP_EDGE_ORT_PERF_TEST", str(perf))
    tdir = tmp_path / "targets"
    tdir.mkdir()
    src = (targets_root() / "android-arm64.toml").read_text()
    (tdir / "android-arm64.toml").write_text(src.replace('# serial = "R5CT12345"', 'serial = "R5CT0TEST"'))
    return log, perf, tdir


def test_adb_transport_issues_exact_commands(tiny_pool, tmp_path, monkeypatch, capsys):
    log, perf, tdir = fake_phone(tmp_path, monkeypatch)
    key = KEYS[1]
    assert main(["profile", "--target", "android-arm64", "--targets-dir", str(tdir), "--pool", str(tiny_pool),
                 "--store", str(tmp_path / "m.sqlite"), "--descendant", key, "--iters", "100", "--json",
                 "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out)["records"][0]
    assert rec["median_ms"] == pytest.approx(2.65) and rec["p90_ms"] == pytest.approx(2.95) and rec["threads"] == 5
    d = "/data/local/tmp/lgp-edge.Ab12Cd34"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    s = ["-s", "R5CT0TEST"]
    assert calls[0] == s + ["get-state"]
    assert calls[1] == s + ["shell", "mktemp -d /data/local/tmp/lgp-edge.XXXXXXXX"]
    assert calls[2] == s + ["shell", "timeout -k 10 60 uname -m"]  # the target names its machine: aarch64
    assert calls[3] == s + ["push", str(perf), f"{d}/onnxruntime_perf_test"]
    assert calls[4] == s + ["shell", f"timeout -k 10 60 chmod 755 {d}/onnxruntime_perf_test"]
    assert calls[5][:3] == [*s, "push"] and calls[5][3].endswith(f"/{key}.onnx")
    assert calls[5][4] == f"{d}/{key}.onnx"
    # stopped on the phone after the target's bench_timeout_s (default 900 s), KILLed 10 s later
    bench = f"timeout -k 10 900 taskset f8 {d}/onnxruntime_perf_test -e cpu -m times -r 100 -x 5 -I -s {d}/{key}.onnx"
    assert calls[6] == [*s, "shell", bench]
    assert calls[7] == s + ["shell", f"rm -rf {d}"]
    assert len(calls) == 8
    assert rec["tool_versions"]["device_machine"] == "aarch64"


def test_a_phone_that_returns_an_impossible_timing_is_one_line(tiny_pool, tmp_path, monkeypatch, capsys):
    """onnxruntime_perf_test's statistics are stored as they are parsed: a negative P50 reached the store's record
    check, a ValueError traceback after the run."""
    from helpers import PERF_TEST_OUT

    _, _, tdir = fake_phone(tmp_path, monkeypatch,
                            PERF_TEST_OUT.replace("P50 Latency: 0.002650 s", "P50 Latency: -0.002650 s"))
    store = tmp_path / "m.sqlite"
    rc = main(["profile", "--target", "android-arm64", "--targets-dir", str(tdir), "--pool", str(tiny_pool),
               "--store", str(store), "--descendant", KEYS[1], "--iters", "100", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "invalid timing" in err and "P50 Latency '-0.002650'" in err and "R5CT0TEST" in err, err
    if store.exists():
        with MeasurementStore(store) as s:
            assert s.count() == 0


@pytest.mark.parametrize("what", ["not-executable", "not-a-program"])
def test_perf_test_binary_must_be_an_executable_program(what, tiny_pool, tmp_path, monkeypatch, capsys):
    """``extra.perf_test_binary`` is pushed to the phone and made executable there: a target naming any local file
    (``~/.bashrc``, a key) copied it to the phone. Only an executable ELF program is taken; nothing is contacted."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "adb.log"
    (bindir / "adb").write_text(FAKE_ADB.format(python=sys.executable, log=str(log), out="/dev/null"))
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("LGP_EDGE_ORT_PERF_TEST", raising=False)
    local = tmp_path / "home" / ".bashrc"
    local.parent.mkdir()
    local.write_text("export API_TOKEN=secret\n" if what == "not-executable" else "#!/bin/sh\necho hi\n")
    local.chmod(0o644 if what == "not-executable" else 0o755)
    tdir = tmp_path / "targets"
    tdir.mkdir()
    from lgp_edge.targets import targets_root

    src = (targets_root() / "android-arm64.toml").read_text()
    src = src.replace('# serial = "R5CT12345"', 'serial = "R5CT0TEST"')
    src = src.replace('"~/onnxruntime/build/Android/Release/onnxruntime_perf_test"', f'"{local}"')
    (tdir / "android-arm64.toml").write_text(src)
    rc = main(["profile", "--target", "android-arm64", "--targets-dir", str(tdir), "--pool", str(tiny_pool),
               "--store", str(tmp_path / "m.sqlite"), "--descendant", KEYS[0], "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(local) in err and "onnxruntime_perf_test" in err and "executable" in err, err
    assert not log.exists()  # the phone was never contacted, nothing pushed


def test_a_phone_that_answers_a_strange_scratch_directory_is_refused(tmp_path, monkeypatch):
    """As over ssh: every later path on the phone (pushes, the benchmark, ``rm -rf``) is built on it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "adb").write_text("#!/bin/sh\necho '/data/local/tmp/lgp-edge.ab /sdcard'\n")
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    t = remote.ADBTransport(ConnectionSpec(kind="adb", serial="R5CT0TEST", timeout_s=5))
    with pytest.raises(UsageError, match="scratch directory"):
        t.mkdtemp()


def test_adb_missing_device_is_unreachable(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "adb").write_text(FAKE_ADB.format(python=sys.executable, log=str(tmp_path / "l"), out="/dev/null"))
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    t = remote.ADBTransport(ConnectionSpec(kind="adb", serial="OTHER", timeout_s=5))
    with pytest.raises(TargetUnreachable, match="OTHER"):
        t.check()


def _adb_devices() -> list[str]:
    if shutil.which("adb") is None:
        return []
    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("device")]


@pytest.mark.skipif(not _adb_devices() or not os.environ.get("LGP_EDGE_ORT_PERF_TEST"),
                    reason="no Android device in 'adb devices' or LGP_EDGE_ORT_PERF_TEST unset")
def test_adb_real_device(tiny_pool, tmp_path, capsys):
    assert main(["profile", "--target", "android-arm64", "--pool", str(tiny_pool), "--store",
                 str(tmp_path / "m.sqlite"), "--descendant", KEYS[0], "--json", "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out)["records"][0]
    assert rec["source"] == "measured" and rec["median_ms"] > 0


def test_trtexec_argv_and_perf_test_argv():
    st = MeasureSettings(warmup=10, iters=40, threads=4)
    assert remote.trtexec_argv("/t/bench.sh", "/t/m.onnx", "fp16", st) == [
        "sh", "/t/bench.sh", "/t/m.onnx", "fp16", "40", "200"]
    assert remote.perf_test_argv("/t/pt", "/t/m.onnx", st, "4-7")[:2] == ["taskset", "f0"]


@pytest.mark.parametrize("said, code", [
    ("ssh: connect to host 10.0.0.9 port 22: Connection timed out", 3),
    ("ssh: connect to host 10.0.0.9 port 22: No route to host", 3),
    ("ssh: Could not resolve hostname raspberrypi.local: Name or service not known", 3),
    ("pi@10.0.0.9: Permission denied (publickey).", 2),
    ("Host key verification failed.", 2),
    ("Unable to negotiate with 10.0.0.9 port 22: no matching key exchange method found. Their offer: "
     "diffie-hellman-group14-sha1", 2),
    ("Bad owner or permissions on /root/.ssh/config", 2),
])
def test_ssh_failures_worth_retrying_exit_3_and_configuration_ones_2(said, code, tmp_path):
    """Every ssh failure (exit 255) was a TargetUnreachable (exit 3, "worth retrying"), a refused key or a changed
    host key too, which no retry mends: those are the target file's or the user's to fix (exit 2). A name that does
    not resolve stays 3: a board that is off does not answer its .local name either (the message says both)."""
    (tmp_path / "said").write_text(said + "\n")
    fake = tmp_path / "ssh"
    fake.write_text(f"#!/bin/sh\ncat '{tmp_path / 'said'}' >&2\nexit 255\n")
    fake.chmod(0o755)
    t = remote.SSHTransport(ConnectionSpec(kind="ssh", host="10.0.0.9", user="pi", workdir="/tmp", timeout_s=5),
                            ssh=str(fake))
    with pytest.raises(UsageError if code == 2 else TargetUnreachable) as e:
        t.check()
    assert e.value.exit_code == code and said.rstrip(".") in str(e.value)
    if "resolve" in said:
        assert "connection.host" in str(e.value)


@pytest.mark.parametrize("said, code", [
    ("adb: no devices/emulators found", 3), ("adb: device 'R58M' not found", 3), ("error: device offline", 3),
    ("error: device unauthorized.", 3), ("/system/bin/sh: mktemp: not found", 2),
    ("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\nTry 'adb kill-server' if that "
     "seems wrong.\nOtherwise check for a confirmation dialog on your device.", 3),  # adb's own four lines
    ("error: device still authorizing", 3), ("adb: device still connecting", 3),
])
def test_adb_failures_are_unreachable_only_when_adb_says_the_device_is(said, code, tmp_path):
    """Any "not found" in adb's output was "adb device (default) is not available" (exit 3), a shell error of a
    device that answered too."""
    (tmp_path / "said").write_text(said + "\n")
    fake = tmp_path / "adb"
    fake.write_text(f"#!/bin/sh\ncat '{tmp_path / 'said'}' >&2\nexit 1\n")
    fake.chmod(0o755)
    t = remote.ADBTransport(ConnectionSpec(kind="adb", workdir="/data/local/tmp", timeout_s=5), adb=str(fake))
    with pytest.raises(UsageError if code == 2 else TargetUnreachable) as e:
        t.mkdtemp()
    assert e.value.exit_code == code and ("not available" in str(e.value)) == (code == 3)
    assert said.splitlines()[0] in str(e.value)  # adb's first line, the one that says what is wrong


def test_a_noisy_phone_series_is_measured_again_and_flagged(tiny_pool, tmp_path, monkeypatch, capsys):
    """onnxruntime_perf_test's P50 1 ms and P90 5 ms were stored as a calm measurement after one series (noisy
    false), though the tail it implies is 3x the threshold: as over ssh, the series is measured again (at most
    three in all) and flagged noisy when every one is."""
    from helpers import PERF_TEST_OUT

    noisy = PERF_TEST_OUT.replace("P50 Latency: 0.002650 s", "P50 Latency: 0.001000 s").replace(
        "P90 Latency: 0.002950 s", "P90 Latency: 0.005000 s").replace("P99 Latency: 0.003900 s",
                                                                      "P99 Latency: 0.006000 s")
    log, _, tdir = fake_phone(tmp_path, monkeypatch, noisy)
    assert main(["profile", "--target", "android-arm64", "--targets-dir", str(tdir), "--pool", str(tiny_pool),
                 "--store", str(tmp_path / "m.sqlite"), "--descendant", KEYS[1], "--iters", "100", "--json",
                 "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out)["records"][0]
    assert rec["noisy"] is True
    benches = [c for c in map(json.loads, log.read_text().splitlines()) if "taskset" in " ".join(c)]
    assert len(benches) == 3


def test_warmup_is_refused_on_a_phone_which_takes_no_warm_up_count(tiny_pool, tmp_path, monkeypatch, capsys):
    """`--warmup 200` on android-arm64 was dropped without a word: onnxruntime_perf_test takes no warm-up count
    (it warms up with one run of its own, the record's warmup 1)."""
    log, _, tdir = fake_phone(tmp_path, monkeypatch)
    rc = main(["profile", "--target", "android-arm64", "--targets-dir", str(tdir), "--pool", str(tiny_pool),
               "--store", str(tmp_path / "m.sqlite"), "--descendant", KEYS[1], "--warmup", "200", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--warmup" in err and "onnxruntime_perf_test" in err, err
    assert not log.exists()


def test_warmup_is_taken_on_a_phone_when_nothing_is_timed(tiny_pool, tmp_path, capsys):
    """`profile --target android-arm64 --predict --warmup 5` was refused for onnxruntime_perf_test's sake, though a
    prediction times nothing."""
    assert main(["profile", "--target", "android-arm64", "--pool", str(tiny_pool), "--predict", "--warmup", "5",
                 "--store", str(tmp_path / "m.sqlite"), "--quiet"]) == 0
