"""Which ONNX Runtime files are a phone's: the ``.ort`` converter's platform for a target, and the note that marks a
phone's plain ``.onnx`` (its Android section and Kotlin sample go with it)."""

from __future__ import annotations

import platform

from lgp_edge.specs import TargetSpec


def ort_platform(target: TargetSpec) -> str:
    """The converter's ``target_platform``: ``extra.ort_platform`` when the target file sets it, else the CPU the
    target runs on (this machine for a local target, its ``extra.machine`` for a board), else ``arm`` (phones)."""
    if "ort_platform" in target.extra:
        return str(target.extra["ort_platform"])
    machine = platform.machine() if target.connection.kind == "local" else str(target.extra.get("machine", ""))
    return "amd64" if machine.lower() in ("x86_64", "amd64", "x64") else "arm"


def ort_for_phone(target: TargetSpec) -> bool:
    """A ``.ort`` for a phone (an ARM target reached with adb, or not reached at: an app's), not for a Linux board
    over ssh or this machine, which load an ARM ``.ort`` in the onnxruntime package."""
    return ort_platform(target) == "arm" and target.connection.kind not in ("local", "ssh")


PHONE_ONNX_NOTE = ("for an Android app: the onnxruntime-android package loads this .onnx as it is (`--format ort` "
                   "writes its pre-optimised .ort)")


def onnx_phone(note: str) -> bool:
    """Whether an ``.onnx`` artifact's note (as ``export`` wrote it) is a phone's: its Android app section and
    sample go with it where no ``.ort`` was exported beside it."""
    return PHONE_ONNX_NOTE in note
