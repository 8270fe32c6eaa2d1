"""Text files lgp-edge writes or reads are UTF-8 whatever the locale: a target's or profile's text may hold any
character, and a host whose locale is not UTF-8 (Latin-1, or C with UTF-8 mode off) must not crash on it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import lgp_edge

PACKAGE = Path(lgp_edge.__file__).parent
TEXT_CALLS = {"read_text", "write_text"}


def _text_mode(call: ast.Call) -> bool:
    """``open(...)`` without a mode or with a mode that has no "b"."""
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return True
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" not in mode.value


def _unspecified(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        f = node.func
        if any(k.arg in ("text", "universal_newlines") and isinstance(k.value, ast.Constant) and k.value.value
               for k in node.keywords):  # a subprocess's text output (ssh's, adb's) decoded in the locale's encoding
            lines.append(node.lineno)
        elif isinstance(f, ast.Attribute) and f.attr in TEXT_CALLS:
            lines.append(node.lineno)
        elif isinstance(f, ast.Name) and f.id == "open" and _text_mode(node):
            lines.append(node.lineno)
    return lines


def test_every_text_read_and_write_names_its_encoding() -> None:
    found = []
    for py in sorted(PACKAGE.rglob("*.py")):
        for line in _unspecified(ast.parse(py.read_text(encoding="utf-8"))):
            found.append(f"{py.relative_to(PACKAGE.parent)}:{line}")
    assert found == []


def test_report_of_a_non_ascii_profile_under_a_non_utf8_locale(tiny_pool: Path, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "pi5-loop.toml").write_text(
        'name = "pi5-loop"\ntarget = "raspberry-pi-5"\nlatency_budget_ms = 50.0\nmemory_budget_mb = 256.0\n'
        'precision = "fp32"\nformats = ["onnx"]\ndescription = "Raspberry Pi 5 \u2014 20 FPS (\u2264 50 ms)"\n',
        encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "LGP_EDGE_STORE": str(tmp_path / "store.sqlite")}
    out = tmp_path / "rep"
    r = subprocess.run([sys.executable, "-m", "lgp_edge", "report", "--pool", str(tiny_pool), "--out", str(out),
                        "--profiles-dir", str(profiles), "--profile", "pi5-loop", "--quiet"],
                       env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Raspberry Pi 5 \u2014 20 FPS" in (out / "report.md").read_text(encoding="utf-8")
