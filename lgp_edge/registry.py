"""Named TOML files (targets, profiles): built-in ones shipped in the package, plus a user directory."""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

from lgp_edge.errors import UsageError

NAME_START, NAME_CHAR = "[A-Za-z0-9]", r"[A-Za-z0-9_.\-]"  # a target's or profile's name
NAME_RULE = re.compile(f"{NAME_START}{NAME_CHAR}{{0,127}}")


def check_name(kind: str, path: Path, name: str) -> None:
    """A target's or profile's name becomes part of file names (``pareto-NAME.png``) and of Markdown and CSV
    cells: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not NAME_RULE.fullmatch(name):
        raise UsageError(f"{kind} file '{path}': field 'name' {name[:80]!r}{'...' if len(name) > 80 else ''} must "
                         "be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (rename the "
                         "file too)")


def search_dirs(builtin: Path, user_dir: str | Path | None, flag: str) -> list[Path]:
    """The user directory first (``flag`` names its option in errors), then the built-in one."""
    dirs = []
    if user_dir is not None:
        d = Path(user_dir)
        if not d.is_dir():
            raise UsageError(f"{flag} '{d}' is not a directory")
        dirs.append(d)
    dirs.append(builtin)
    return dirs


def named_files(dirs: list[Path]) -> dict[str, Path]:
    """Name (file stem) -> file; earlier directories win."""
    found: dict[str, Path] = {}
    for d in dirs:
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def pick(kind: str, name: str, files: dict[str, Path]) -> Path:
    """The file of ``name``, or a UsageError suggesting close names and listing the known ones."""
    if name not in files:
        close = difflib.get_close_matches(name, list(files), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown {kind} '{name}'{hint}; known {kind}s: {', '.join(sorted(files))}")
    return files[name]


INT64 = (-(1 << 63), (1 << 63) - 1)  # TOML integers are 64-bit (tomllib reads longer ones anyway)


def control_character(text: str) -> str | None:
    """The first C0 or C1 control character in ``text`` (terminal escapes, carriage returns, bells), or None."""
    return next((c for c in text if ord(c) < 32 or 127 <= ord(c) < 160), None)


def check_text(kind: str, path: Path, field: str, value: str) -> None:
    """One line without control characters: a string of a target or profile file (``kind``) reaches generated
    scripts, remote commands, manifests and the terminal."""
    bad = control_character(value)
    if bad is not None:
        raise UsageError(f"{kind} file '{path}': field '{field}' contains the control character {bad!r}; "
                         "write it on one line without control characters")


def non_finite(obj: Any, prefix: str = "") -> tuple[str, float] | None:
    """(field, value) of the first NaN or infinite float (``1e400`` reads as inf) or beyond-64-bit integer in a
    parsed TOML document."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix, obj
    if isinstance(obj, int) and not isinstance(obj, bool) and not INT64[0] <= obj <= INT64[1]:
        return prefix, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = non_finite(v, f"{prefix}[{k}]" if isinstance(k, int) else f"{prefix}.{k}" if prefix else str(k))
        if found:
            return found
    return None
