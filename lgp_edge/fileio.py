"""File I/O shared by every stage: atomic single-file writes and content hashes.

A file is written under a temporary name in its own directory, flushed and fsync'ed, then renamed over
the destination: a reader sees the old file or the new one, never a torn one. Whole output directories
(pools, exports, reports) are published by :mod:`lgp_edge.outdir` instead.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lgp_edge.errors import WRITE_ERRNOS, CheckpointError, UsageError, write_failed


def default_mode(directory: bool) -> int:
    """Permissions a plain ``mkdir`` / ``open`` would give under the current umask (mkdtemp uses 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def plain_modes(path: Path) -> None:
    """Give every file and folder under ``path`` the permissions a plain ``open`` / ``mkdir`` would (a tool that
    wrote some of them 0600, as coremltools does a package's model.mlmodel)."""
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, default_mode(directory=p.is_dir()))


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, fsync it, rename it to ``path``.

    A write the environment refuses (a full disk, a read-only file system, ...: ``WRITE_ERRNOS``) is a
    WriteFailed naming ``path``, which is left as it was."""
    return write_atomic_all([(path, write)])[0]


def write_atomic_all(files: list[tuple[str | Path, Callable[[str], None]]]) -> list[Path]:
    """``write_atomic`` for files that belong together: each is written to its temporary file first, then all
    are renamed in order (the last one is the commit point). A failed write leaves every file as it was and no
    temporary file; a WriteFailed names the file it was for."""
    staged: list[tuple[str, Path]] = []
    current: Path | None = None
    try:
        for path, write in files:
            current = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{current.name}.", suffix=".tmp", dir=current.parent)
            os.close(fd)
            staged.append((tmp, current))
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, default_mode(directory=False))
        for tmp, current in staged:
            os.replace(tmp, current)
    except BaseException as exc:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise write_failed(exc, current) from None
        raise
    return [path for _, path in staged]


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Replace ``path`` with ``obj`` as indented JSON atomically; NaN and infinity are refused."""
    return write_text_atomic(path, _json_text(obj))


def write_json_atomic_all(files: list[tuple[str | Path, Any]]) -> list[Path]:
    """``write_json_atomic`` for files that belong together (``write_atomic_all``): all are replaced or none."""
    texts = [(path, _json_text(obj)) for path, obj in files]
    return write_atomic_all([(path, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
                             for path, text in texts])


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON in ``path`` (a file inside a folder written atomically), each NaN or infinity as
    null (``finite_json``)."""
    Path(path).write_text(_json_text(finite_json(obj)), encoding="utf-8")


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def save_safetensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` with the umask's permissions (it creates its files 0600)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as exc:  # a failed write is its own error type, the errno only in the text
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from exc
    os.chmod(path, default_mode(directory=False))


#: The size a failed write is taken to have needed when its caller cannot tell (``write_problem``)
UNKNOWN_NEED = 4 << 20


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove the folders a failed or refused write made, innermost first, as far as they are empty (the first
    one that is not, or cannot be removed, ends it: its parents hold it)."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


@contextmanager
def tool_write(path: str | Path, need: int = 0) -> Iterator[None]:
    """Run a tool's write of ``path`` whose failure names no cause (OpenVINO: "iostream error", Core ML's MIL
    FileWriter: "Unknown error occurred while writing data to the file"): a RuntimeError that ``write_problem``
    explains (a full disk, a file-size limit, a read-only folder) becomes the OSError naming ``path`` that every
    command reports in one line; any other is raised as it is."""
    try:
        yield
    except RuntimeError as exc:
        found = write_problem(Path(path).parent, need=need)
        if found is None:
            raise
        raise OSError(found, os.strerror(found), str(path)) from exc


def write_problem(folder: str | Path, need: int = 0) -> int | None:
    """Why a tool that reports a failed write without its cause (OpenVINO: "iostream error", SQLite: "disk I/O
    error") could not write into ``folder``, found after the fact: ENOSPC when fewer than ``need`` bytes are
    free there, the errno of a probe file written there (a full disk, ENOSPC too where only part of the probe
    fits, a read-only file system, no permission), else EFBIG when a file-size limit (``ulimit -f``) is below
    ``need`` bytes (below ``UNKNOWN_NEED`` when ``need`` is 0), the one cause left that no probe finds (the
    file that hit it is gone: OpenVINO removes what it wrote); None when nothing explains it."""
    import resource  # POSIX only; importing lgp-edge must not need it

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    limited = soft != resource.RLIM_INFINITY
    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < need:
            return errno.ENOSPC
        fd, probe = tempfile.mkstemp(prefix=".lgp-edge-probe-", dir=folder)
    except OSError as exc:
        return exc.errno
    size = min(1 << 16, max(0, soft - 1)) if limited else 1 << 16
    try:
        if os.write(fd, bytes(size)) < size:
            return errno.ENOSPC  # the kernel wrote what fits, without an error: a nearly full disk
        os.fsync(fd)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
        os.unlink(probe)
    return errno.EFBIG if limited and soft < (need or UNKNOWN_NEED) else None


#: The largest settings file (target, profile TOML) read: they are a few hundred bytes.
MAX_SETTINGS_BYTES = 1 << 20


def json_loads(text: str | bytes) -> Any:
    """``json.loads`` for files lgp-edge did not necessarily write: JSON nested deeper than Python's recursion
    limit (a 2 KB file of brackets) is a ``json.JSONDecodeError`` ("nested too deeply") like any other
    malformed JSON, not a ``RecursionError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; invalid TOML, a file that is not UTF-8, not a regular file (a FIFO would wait for
    a writer, a device never end), larger than ``MAX_SETTINGS_BYTES`` or unreadable is a UsageError naming
    ``what``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        if not path.is_file():
            raise UsageError(f"{what} file '{path}' is not a regular file; move it out of the directory")
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            raise UsageError(f"{what} file '{path}' is larger than {MAX_SETTINGS_BYTES >> 20} MB; a {what} file "
                             "is a few hundred bytes of TOML")
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} file '{path}' is not valid TOML: {exc}") from None
    except RecursionError:
        raise UsageError(f"{what} file '{path}' is not valid TOML: nested too deeply") from None
    except UnicodeDecodeError as exc:  # TOML files are UTF-8
        raise UsageError(f"cannot read {what} file '{path}' (not UTF-8 TOML: byte 0x{exc.object[exc.start]:02x} at "
                         f"offset {exc.start}); save it as UTF-8 or move it out of the directory") from None
    except OSError as exc:
        raise UsageError(f"{what} file '{path}' cannot be read: {exc.strerror}") from None


def tree_sha256(path: Path) -> str:
    """sha256 over a directory's files (relative path with '/' separators + contents, sorted), e.g. an
    .mlpackage: the same on every OS."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def finite_json(obj: Any) -> Any:
    """``obj`` with every float that is not finite (NaN, inf) as None: JSON has no such numbers, and a reader's
    strict parser refuses Python's ``NaN``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def user_dir(xdg_var: str, fallback: str, instead: str) -> Path:
    """``$XDG_VAR`` when it is an absolute path (the XDG spec ignores a relative one, which would name a folder
    under wherever a command runs), else ``~/FALLBACK``. No home directory known (HOME unset for a user the
    system does not know: ``~`` stays ``~``): UsageError saying what to set ``instead``."""
    base = os.environ.get(xdg_var, "")
    if os.path.isabs(base):
        return Path(base)
    home = os.path.expanduser("~")
    if not os.path.isabs(home):
        raise UsageError(f"no home directory is known (HOME is not set and this user has none), so there is no "
                         f"default ${xdg_var}: set HOME, or {instead}")
    return Path(home) / fallback


def check_sha256(path: str | Path, expected: str, *, recorded_in: str, fix: str) -> None:
    """``path``'s bytes must have the SHA-256 ``recorded_in`` holds (``expected``): CheckpointError otherwise, in
    one line ending with ``fix``, and for a file that cannot be read."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise CheckpointError(f"'{path}' cannot be read ({exc.strerror or exc}); fix its permissions or restore "
                              "it") from None
    if actual != expected:
        raise CheckpointError(f"'{path}' is damaged or was modified: sha256 {actual[:12]}… does not match "
                              f"{recorded_in} ({expected[:12]}…); {fix}")


def imagefolder_path(name: str) -> str:
    """The PATH of an ``imagefolder:PATH`` data value; an empty or blank one is refused (it would name the
    current directory)."""
    root = name.split(":", 1)[1]
    if not root.strip():
        raise UsageError(f"'{name}' has an empty path; give imagefolder:PATH")
    return root


def canonical_data(name: str) -> str:
    """A --data value as lgp-edge records it: an image folder by its absolute path, ``~`` expanded (a relative
    one was resolved against the directory each later command ran in: another folder of the same classes
    validated an export silently)."""
    if name.startswith("imagefolder:"):
        return f"imagefolder:{Path(imagefolder_path(name)).expanduser().resolve()}"
    return name
