"""The exceptions the CLI turns into one-line messages and exit codes.

Library code raises these (never ``SystemExit``); ``lgp_edge.cli`` maps them to exit codes:
``UsageError`` and its kin -> 2, ``TargetUnreachable`` -> 3, ``ValidationFailed`` -> 1; an ``OSError`` of
``WRITE_ERRNOS`` that no write point turned into a ``WriteFailed`` -> 2 as well (one line naming its path), any
other exception is a bug.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# what lgp-edge says on Windows, where its writer locks (fcntl) and atomic swaps of directories do not exist
UNSUPPORTED_OS = "lgp-edge runs on Linux and macOS; on Windows use WSL2"


class LgpEdgeError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""

    exit_code = 2


class UsageError(LgpEdgeError):
    """Bad arguments or bad input files."""


class OutputBusy(UsageError):
    """Another lgp-edge process is writing the same output directory."""


class LockIsLink(UsageError):
    """OUT's lock file is a symbolic link (lgp-edge never makes one): nothing is opened through it."""


class StoreWriteFailed(UsageError):
    """Records could not be written to the measurement store; they were saved to ``saved_to`` instead."""

    def __init__(self, message: str, saved_to: Path) -> None:
        super().__init__(message)
        self.saved_to = saved_to


class UnsupportedOperator(UsageError):
    """The ONNX graph uses an operator the target's TensorRT cannot parse."""


class DataError(LgpEdgeError):
    """A dataset that is missing or malformed."""


class CheckpointError(LgpEdgeError):
    """Weights that cannot be loaded: missing, tampered, wrong schema or wrong shapes."""


# pathlib's message when no home directory is known (HOME unset for a user the system does not know), raised
# inside a library (OpenVINO's telemetry, on import): the CLI says it in one line of its own
NO_HOME_MESSAGE = "Could not determine home directory."


class BackendMissing(LgpEdgeError):
    """An optional backend (onnxruntime, openvino, coremltools, tensorrt) is not installed."""

    def __init__(self, package: str, extra: str, what: str = "", cause: str | None = None) -> None:
        hint = f"pip install 'lgp-edge[{extra}]'"
        if cause:  # installed, and its import fails
            super().__init__(f"{what or package} needs the Python package '{package}', which is installed but cannot "
                             f"be imported ({cause}): reinstall it, e.g. pip install --force-reinstall {package}, "
                             f"or {hint}")
        else:
            super().__init__(f"{what or package} needs the Python package '{package}', which is not installed: "
                             f"{hint}")
        self.package = package
        self.extra = extra


class TargetUnreachable(LgpEdgeError):
    """A board that does not answer over SSH or adb: exit 3, which a pipeline may retry later (2, bad input, it
    should not)."""

    exit_code = 3


class DeviceTimeout(LgpEdgeError):
    """A command that ran past its time on a board (and was stopped there)."""


class NothingFits(LgpEdgeError):
    """No descendant meets a profile's budgets; ``selection``: what was compared (``select --json``'s shape)."""

    selection: dict | None = None


class ExportError(LgpEdgeError):
    """The ONNX exporter produced something other than what was asked (wrong opset, failed check)."""


class ValidationFailed(LgpEdgeError):
    """An exported artifact disagrees with the torch descendant beyond tolerance."""

    exit_code = 1


class WriteFailed(LgpEdgeError):
    """A write the environment refused: a full disk or quota, a read-only file system, no permission, the
    file-size limit, an I/O error. Nothing half-written is left; the message names the path. ``error`` and
    ``path``: the OSError and the path it was made from (``write_failed``), for a caller that shows the path
    otherwise (``outdir.atomic_dir``: the file as it will be in OUT, not in the temporary folder)."""

    def __init__(self, message: str, error: OSError | None = None, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.path = path


#: errnos of a write (or an access) the environment refused, not of a bug: reported in one line, exit code 2
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG, errno.EIO})

_WRITE_FIXES = {
    errno.ENOSPC: ("no space left on device", "free space there"),
    errno.EDQUOT: ("disk quota exceeded", "free space there"),
    errno.EROFS: ("read-only file system", "make it writable"),
    errno.EACCES: ("permission denied", "give this user access to it"),
    errno.EFBIG: ("file too large", "raise the file-size limit (ulimit -f)"),
    errno.EIO: ("input/output error", "check the device (dmesg)"),
}


def environment_error(exc: BaseException | None) -> OSError | None:
    """The OSError of ``WRITE_ERRNOS`` that ``exc`` is or was raised from (a tool may wrap it in its own)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


#: The name a failed write to the process's standard output carries (``cli``: ``lgp-edge ... > file`` on a full
#: disk says what it could not write).
STDOUT = "the standard output"


def write_failed(exc: OSError, path: str | Path | None = None, elsewhere: str = "write elsewhere") -> WriteFailed:
    """The one-line error for ``exc`` (an errno of ``WRITE_ERRNOS``) writing ``path``: what went wrong, where,
    and what to do (``elsewhere``: the other way out, none when empty). Without ``path``, the path ``exc``
    names, if any, which may have been read as well as written."""
    what, fix = _WRITE_FIXES.get(exc.errno or 0, (exc.strerror or str(exc), "check it"))
    if path is not None:
        what += f" writing '{os.fsdecode(path)}'"
    elif exc.filename == STDOUT:
        what += f" writing {STDOUT}"
    elif exc.filename is not None:
        what += f" at '{os.fsdecode(exc.filename)}'"
    return WriteFailed(f"{what}: {fix}" + (f", or {elsewhere}" if elsewhere else ""), exc, path)
