"""Package data the exporters write beside an artifact: device-side scripts and text templates.

``lgp_edge/data/device/`` holds the scripts copied into an export to run on a board or a Mac
(``build_engine.py``, ``validate_coreml.py``, ``validate_coreml_switchable.py``); ``lgp_edge/data/templates/``
holds the text the exporters fill in (``build_engine.sh``, the sections of ``EMBEDDING.md``) and the app
sources quoted there. The scripts a target file names (``extra.bench_script``, e.g. ``jetson/bench.sh``)
live beside the target files in ``lgp_edge/data/targets/``, where the target file's relative path points.
"""

from __future__ import annotations

import importlib.util
import shutil
import stat
import string
from pathlib import Path
from types import ModuleType


def data_dir() -> Path:
    """``lgp_edge/data`` inside the installed package."""
    return Path(__file__).resolve().parent.parent / "data"


def device_script(name: str) -> Path:
    """A script that runs on the device (``lgp_edge/data/device/NAME``)."""
    return data_dir() / "device" / name


def copy_device_script(name: str, dest: Path, *, executable: bool = False) -> Path:
    """Copy ``device_script(name)`` to ``dest`` (made executable for everyone when asked)."""
    shutil.copyfile(device_script(name), dest)
    if executable:
        make_executable(dest)
    return dest


def make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def load_device_module(name: str) -> ModuleType:
    """A device script imported as a module (``build_engine.py`` also builds model.plan on this machine)."""
    path = device_script(name)
    spec = importlib.util.spec_from_file_location(f"lgp_edge_device_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the device script {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_span(text: str) -> str:
    """``text`` as a Markdown code span that shows it literally whatever backticks it holds (CommonMark: a fence
    longer than its longest run of backticks, padded with a space where it starts or ends with one)."""
    import re

    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_text(text: str) -> str:
    """Free text as Markdown that shows it literally: its inline syntax (``\\ ` * _ [ ] ! | ~``) backslash-escaped
    and ``& < >`` written as entities (a ``<script>`` or ``*dev*`` in a target's runtime_version stays text)."""
    import html
    import re

    return html.escape(re.sub(r"([\\`*_\[\]!|~])", r"\\\1", text), quote=False)


def template(name: str) -> str:
    """The text of ``lgp_edge/data/templates/NAME``."""
    return (data_dir() / "templates" / name).read_text(encoding="utf-8")


class ShellTemplate(string.Template):
    """``@{name}`` fields, so that a shell script's own ``$`` and braces are written as they are."""

    delimiter = "@"
