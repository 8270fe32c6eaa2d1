"""The exceptions the CLI turns into one-line messages and exit codes.

Library code raises these (never ``SystemExit``); ``lgp_edge.cli`` maps them to exit codes:
``UsageError`` and its kin -> 2, ``ValidationFailed`` -> 1.
"""

from __future__ import annotations

from pathlib import Path


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


class BackendMissing(LgpEdgeError):
    """An optional backend (onnxruntime, openvino, coremltools, tensorrt) is not installed."""

    def __init__(self, package: str, extra: str, what: str = "") -> None:
        hint = f"pip install 'lgp-edge[{extra}]'"
        super().__init__(f"{what or package} needs the Python package '{package}', which is not installed: {hint}")
        self.package = package
        self.extra = extra


class TargetUnreachable(LgpEdgeError):
    """A board that does not answer over SSH or adb."""


class DeviceTimeout(LgpEdgeError):
    """A command that ran past its time on a board (and was stopped there)."""


class NothingFits(LgpEdgeError):
    """No descendant meets a profile's budgets."""


class ExportError(LgpEdgeError):
    """The ONNX exporter produced something other than what was asked (wrong opset, failed check)."""


class ValidationFailed(LgpEdgeError):
    """An exported artifact disagrees with the torch descendant beyond tolerance."""

    exit_code = 1
