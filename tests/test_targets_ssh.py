"""What a target file may say about reaching a board: ``connection.workdir`` and ``extra.ssh_options``.

Both reach ``ssh``/``scp`` command lines, so a target file (which may come from someone else) is held to
plain paths and an allow-list of harmless ``-o`` settings; anything else is a one-line error (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lgp_edge.cli import main
from lgp_edge.errors import UsageError
from lgp_edge.targets import load_target, targets_root


def _pi(tmp_path: Path, *, workdir: str = "/tmp", options: list[str] | None = None) -> Path:
    src = (targets_root() / "raspberry-pi-5.toml").read_text()
    src = src.replace('workdir = "/tmp"', f"workdir = {_toml(workdir)}")
    if options is not None:
        src = src.replace("threads = 4", "threads = 4\nssh_options = [" + ", ".join(map(_toml, options)) + "]")
    p = tmp_path / "raspberry-pi-5.toml"
    p.write_text(src)
    return p


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rejected(tmp_path: Path, match: str) -> str:
    with pytest.raises(UsageError) as e:
        load_target("raspberry-pi-5", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and match in msg, msg
    return msg


# ------------------------------------------------------------------------------------------ workdir
@pytest.mark.parametrize("workdir", ["/tmp", "/data/local/tmp", "/var/tmp/lgp_edge-1.2", "~", "~/", "~/bench",
                                     "~/.cache/lgp-edge", "/"])
def test_workdir_plain_paths_load(tmp_path, workdir):
    _pi(tmp_path, workdir=workdir)
    assert load_target("raspberry-pi-5", tmp_path).connection.workdir == workdir


@pytest.mark.parametrize("workdir", ["/tmp/$(touch pwned)", "/tmp/`id`", "/tmp/a;reboot", "/tmp/a b", "/tmp/*",
                                     "/tmp/a'b", '/tmp/a"b', "/tmp/a|b", "/tmp/a&b", "/tmp/a>b", "/tmp/$HOME",
                                     "/tmp/a\\b", "/tmp/{a,b}", "/tmp/a?", "/tmp/[ab]", "/tmp/é", "/tmp/~x",
                                     "tmp", "./tmp", "", "-oProxyCommand=x", "~root/x", "~x", "host:/tmp"])
def test_workdir_with_anything_but_a_plain_path_is_one_line_error(tmp_path, workdir):
    _pi(tmp_path, workdir=workdir)
    _rejected(tmp_path, "connection.workdir")


def test_workdir_under_home_is_ssh_only(tmp_path):
    src = (targets_root() / "android-arm64.toml").read_text()
    (tmp_path / "android-arm64.toml").write_text(src.replace('workdir = "/data/local/tmp"', 'workdir = "~/x"'))
    with pytest.raises(UsageError, match="connection.workdir"):
        load_target("android-arm64", tmp_path)


def test_bad_workdir_exits_2_with_one_line(tmp_path, capsys):
    _pi(tmp_path, workdir="/tmp/$(touch pwned)")
    assert main(["targets", "show", "raspberry-pi-5", "--targets-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "connection.workdir" in err


# -------------------------------------------------------------------------------------- ssh_options
ALLOWED = ["UserKnownHostsFile=/home/me/.ssh/known_hosts_boards", "ConnectTimeout=10", "Port=2222",
           "ServerAliveInterval=30", "ServerAliveCountMax=3", "StrictHostKeyChecking=yes",
           "StrictHostKeyChecking=accept-new", "IdentityFile=~/.ssh/id_ed25519", "IdentitiesOnly=yes",
           "BatchMode=yes", "Compression=no", "LogLevel=ERROR", "ConnectionAttempts=3",
           "HostKeyAlgorithms=ssh-ed25519,ecdsa-sha2-nistp256", "PubkeyAcceptedAlgorithms=+ssh-rsa",
           "PubkeyAcceptedKeyTypes=ssh-ed25519", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com",
           "MACs=hmac-sha2-256-etm@openssh.com", "KexAlgorithms=curve25519-sha256", "AddressFamily=inet",
           "userknownhostsfile=/tmp/kh", "CheckHostIP=no", "TCPKeepAlive=yes", "HostKeyAlias=pi5"]


@pytest.mark.parametrize("opt", ALLOWED)
def test_ssh_options_on_the_allow_list_load(tmp_path, opt):
    _pi(tmp_path, options=["-o", opt])
    assert load_target("raspberry-pi-5", tmp_path).extra["ssh_options"] == ("-o", opt)  # read-only: a tuple


@pytest.mark.parametrize("opt", [
    "PKCS11Provider=/tmp/evil.so", "SecurityKeyProvider=/tmp/evil.so", "ForwardAgent=yes", "ForwardX11=yes",
    "ForwardX11Trusted=yes", "Tunnel=yes", "TunnelDevice=any:any", "LocalForward=8080 localhost:80",
    "RemoteForward=9000 localhost:22", "DynamicForward=1080", "PermitLocalCommand=yes", "LocalCommand=touch x",
    "ProxyCommand=touch x", "proxycommand=touch x", "ProxyCommand touch x", "PROXYJUMP=evil", "ProxyJump=evil",
    "KnownHostsCommand=/bin/x", "Match=exec true", "Include=/tmp/evil_config", "SetEnv=LD_PRELOAD=/x.so",
    "SendEnv=*", "ControlPath=/tmp/c", "ControlMaster=auto", "ControlPersist=yes", "IdentityAgent=/tmp/agent",
    "RemoteCommand=reboot", "RequestTTY=force", "StdinNull=yes", "ForkAfterAuthentication=yes",
    "ExitOnForwardFailure=yes", "GatewayPorts=yes", "Hostname=elsewhere", "User=root", "AddKeysToAgent=yes",
    "CanonicalizeHostname=yes", "EscapeChar=~", "NoSuchOption=1"])
def test_ssh_options_off_the_allow_list_are_rejected(tmp_path, opt):
    _pi(tmp_path, options=["-o", opt])
    msg = _rejected(tmp_path, "extra.ssh_options")
    assert opt.replace("=", " ").split()[0] in msg  # names the option it refused


@pytest.mark.parametrize("opt", [
    "Port=-1", "Port=0", "Port=70000", "Port=22 -oProxyCommand=x", "ConnectTimeout=abc", "ConnectTimeout=-5",
    "ServerAliveInterval=1e3", "StrictHostKeyChecking=maybe", "BatchMode=-yes", "LogLevel=LOUD",
    "AddressFamily=unix", "UserKnownHostsFile=-x", "UserKnownHostsFile=/tmp/a b", "IdentityFile=/tmp/$(id)",
    'IdentityFile="/tmp/k"', "Ciphers=-aes128-ctr", "Ciphers=aes128-ctr evil", "MACs=", "Port", "Port=",
    "Port = 22", "=yes", "HostKeyAlias=a;b", "LogLevel=ERROR\u00a0"])
def test_ssh_option_values_are_checked(tmp_path, opt):
    _pi(tmp_path, options=["-o", opt])
    _rejected(tmp_path, "extra.ssh_options")


@pytest.mark.parametrize("opt", ["", " ", "\t"])
def test_empty_ssh_option_is_one_line_error_not_a_crash(tmp_path, opt):
    _pi(tmp_path, options=["-o", opt])
    _rejected(tmp_path, "extra.ssh_options")


@pytest.mark.parametrize("options", [["ConnectTimeout=5"], ["-o"], ["-F", "/tmp/cfg"], ["-oPort=22"],
                                     ["-o", "Port=22", "-o"]])
def test_ssh_options_must_be_o_pairs(tmp_path, options):
    _pi(tmp_path, options=options)
    _rejected(tmp_path, "extra.ssh_options")


def test_forbidden_ssh_option_exits_2_with_one_line(tmp_path, capsys):
    _pi(tmp_path, options=["-o", "PKCS11Provider=/tmp/evil.so"])
    assert main(["targets", "show", "raspberry-pi-5", "--targets-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PKCS11Provider" in err and "extra.ssh_options" in err
