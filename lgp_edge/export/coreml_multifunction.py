"""Core ML multifunction package: every chosen descendant as one function of one ``.mlpackage``.

Each descendant is converted exactly like the single Core ML export (``lgp_edge.export.coreml``: image
input ``image`` with the normalisation in the ImageType scale/bias, softmax, classifier outputs
``classLabel`` / ``classLabel_probs``), then coremltools' ``MultiFunctionDescriptor`` +
``save_multifunction`` join them; ``save_multifunction`` deduplicates identical constants across
functions, so each instance's and stitch's weights are stored once. An app selects the descendant with
``MLModelConfiguration.functionName`` (iOS 18 / macOS 15 and later, which multifunction models require).

Descendant keys contain '.', '-' and '+', which are not valid in function names; ``function_name``
maps them (``ti6.0-4+b6.5-5`` -> ``ti6_0to4__b6_5to5``), and the package's user metadata
``functions`` records the mapping with the same table as the switchable ONNX.

Core ML predicts on macOS only; here the package gets a structural check (spec loads, one function per
descendant with the expected name, input and outputs, default function, one shared weight file).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lgp_edge.export.switchable import SwitchEntry
from lgp_edge.specs import MB

log = logging.getLogger(__name__)

MULTIFUNCTION_MIN = {"iOS": 18, "macOS": 15}  # coremltools: multifunction models need iOS18 / macOS15
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def function_name(key: str) -> str:
    """A valid Core ML function name for a descendant key: '.' -> '_', '-' -> 'to', '+' -> '__'."""
    name = key.replace("+", "__").replace(".", "_").replace("-", "to")
    if not name or not name[0].isalpha() and name[0] != "_":
        name = "d_" + name
    if not _NAME.match(name):
        raise ValueError(f"descendant key '{key}' does not map to a valid function name ('{name}')")
    return name


def function_names(keys: Sequence[str]) -> dict[str, str]:
    """key -> function name for every key; refuses a mapping that would merge two keys."""
    names = {k: function_name(k) for k in keys}
    if len(set(names.values())) != len(names):
        raise ValueError("two descendant keys map to the same Core ML function name")
    return names


def multifunction_target(deployment: str) -> str:
    """The deployment target raised to what multifunction models need (iOS17 -> iOS18)."""
    m = re.match(r"^(iOS|macOS)(\d+)$", deployment)
    if m is None:
        raise ValueError(f"unknown Core ML deployment target '{deployment}'")
    return f"{m.group(1)}{max(int(m.group(2)), MULTIFUNCTION_MIN[m.group(1)])}"


@dataclass(frozen=True)
class MultifunctionPackage:
    """A written multifunction .mlpackage and what it holds."""

    path: Path  # the .mlpackage directory
    entries: tuple[SwitchEntry, ...]  # descendants, in table order
    functions: tuple[tuple[str, str], ...]  # (descendant key, function name)
    default_function: str  # function Core ML runs when none is named
    deployment: str  # minimum deployment target (iOS18 or later)
    precision: str  # fp16 / fp32
    weight_bytes: int  # bytes of the shared weight file(s)
    singles_weight_bytes: int  # sum of the single-function packages' weight files
    problems: tuple[str, ...]  # structural check findings (empty: passed)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path.name, "functions": [{"key": k, "function": f} for k, f in self.functions],
                "default_function": self.default_function, "deployment": self.deployment,
                "precision": self.precision, "weight_bytes": self.weight_bytes,
                "singles_weight_bytes": self.singles_weight_bytes, "problems": list(self.problems),
                "passed": self.passed}


def _weight_bytes(package: Path) -> int:
    d = package / "Data" / "com.apple.CoreML" / "weights"
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) if d.is_dir() else 0


def _convert_one(model: torch.nn.Module, path: Path, *, pre: Any, input_shape: tuple[int, ...], precision: str,
                 deployment: str) -> None:
    """One descendant as a single-function ML program (the same conversion as the single Core ML export)."""
    from lgp_edge.export.coreml import convert_mlprogram
    from lgp_edge.fileio import tool_write

    need = 4 * sum(p.numel() for p in model.parameters()) + (1 << 20)  # as the single export's
    with tool_write(path, need=need):  # MIL FileWriter: "Unknown error occurred while writing data to the file"
        ml = convert_mlprogram(model, pre=pre, input_shape=input_shape, precision=precision, deployment=deployment)
        ml.save(str(path))


def _save_joined(desc: Any, path: Path, tmp: Path, meta: Mapping[str, str], count: int, need: int) -> None:
    """Join the functions of ``desc`` (shared weights) and write the package with ``meta`` to ``path``; ``need``:
    the bytes its writes may take (a file-size limit or free space below it explains a tool's failed write)."""
    import coremltools as ct
    from coremltools.models.utils import save_multifunction

    from lgp_edge.fileio import plain_modes, tool_write

    joined = tmp / "joined.mlpackage"
    with tool_write(joined, need=need):
        save_multifunction(desc, str(joined))
    spec = ct.utils.load_spec(str(joined))
    for k, v in meta.items():
        spec.description.metadata.userDefined[k] = v
    spec.description.metadata.author = "lgp-edge"
    spec.description.metadata.shortDescription = (f"Learngene Pool: {count} descendants, one function "
                                                  "each; select with MLModelConfiguration.functionName")
    with tool_write(path, need=need):
        ct.utils.save_spec(spec, str(path), weights_dir=str(joined / "Data" / "com.apple.CoreML" / "weights"))
    plain_modes(path)  # coremltools writes model.mlmodel 0600


def build_multifunction_mlpackage(pool: Any, entries: Sequence[SwitchEntry], path: str | Path, *, preprocess: Any,
                                  input_shape: tuple[int, ...], precision: str = "fp16",
                                  deployment: str = "iOS18", metadata: Mapping[str, str] | None = None,
                                  default_key: str | None = None, reporter: Any = None) -> MultifunctionPackage:
    """Convert each descendant, join them as functions of one package (shared weights), check it."""
    from lgp_edge.export.coreml import quiet
    from lgp_edge.progress import NULL

    if not entries:
        raise ValueError("a multifunction package needs at least one descendant")
    if preprocess.in_chans not in (1, 3):
        raise ValueError(f"Core ML image input needs 1 or 3 channels, not {preprocess.in_chans}")
    path, reporter = Path(path), reporter or NULL
    deployment = multifunction_target(deployment)
    names = function_names([e.key for e in entries])
    default = names[default_key or entries[0].key]
    meta = {**(metadata or {}), "descendants": json.dumps([{**e.to_dict(), "function": names[e.key]} for e in entries]),
            "functions": json.dumps(names), "default_function": default}
    singles_bytes = 0
    with tempfile.TemporaryDirectory(prefix="lgp-mf-") as tmp, \
            reporter.task(f"coreml multifunction: convert {len(entries)} descendants ({precision}, {deployment})",
                          total=len(entries) + 1) as task, quiet():
        from coremltools.models.utils import MultiFunctionDescriptor

        desc = MultiFunctionDescriptor()
        for e in entries:
            single = Path(tmp) / f"{e.index}.mlpackage"
            _convert_one(pool.descendant(e.key).eval(), single, pre=preprocess, input_shape=input_shape,
                         precision=precision, deployment=deployment)
            singles_bytes += _weight_bytes(single)
            desc.add_function(str(single), src_function_name="main", target_function_name=names[e.key])
            task.advance()
        desc.default_function_name = default
        used = {id(p): p.numel() for e in entries for p in pool.descendant(e.key).parameters()}
        _save_joined(desc, path, Path(tmp), meta, len(entries), need=4 * sum(used.values()) + (1 << 20))
        task.advance()
    problems = check_multifunction(path, names, default, preprocess, input_shape, meta, precision=precision)
    pkg = MultifunctionPackage(path=path, entries=tuple(entries), functions=tuple(names.items()),
                               default_function=default, deployment=deployment, precision=precision,
                               weight_bytes=_weight_bytes(path), singles_weight_bytes=singles_bytes,
                               problems=tuple(problems))
    log.info("multifunction %s: %d functions, weights %.2f MB (single packages: %.2f MB)%s", path, len(entries),
             pkg.weight_bytes / MB, singles_bytes / MB, "" if pkg.passed else f"; problems: {problems}")
    return pkg


def check_multifunction(path: str | Path, names: Mapping[str, str], default: str, preprocess: Any,
                        input_shape: tuple[int, ...], metadata: Mapping[str, str], *, precision: str) -> list[str]:
    """Problems in a saved multifunction package (empty list: it is what we meant to write): its functions, and in
    each the checks of a single package (``coreml.structural_check``): the image input, the normalisation and
    labels the program computes with, the weights' precision, the classifier outputs."""
    from lgp_edge.export.coreml import (
        INPUT,
        classifier_output_problems,
        image_input_problems,
        metadata_problems,
        program_problems,
        quiet,
    )

    path = Path(path)
    with quiet():
        import coremltools as ct

        try:
            spec = ct.utils.load_spec(str(path))
        except Exception as exc:  # a package coremltools cannot read is the finding itself
            return [f"spec does not load: {type(exc).__name__}: {exc}"]
    problems = []
    if spec.WhichOneof("Type") != "mlProgram":
        problems.append(f"model type is {spec.WhichOneof('Type')}, not mlProgram")
    d = spec.description
    got = {f.name: f for f in d.functions}
    if set(got) != set(names.values()):
        problems.append(f"functions are {sorted(got)}, expected {sorted(names.values())}")
    if d.defaultFunctionName != default:
        problems.append(f"default function is '{d.defaultFunctionName}', expected '{default}'")
    program_funcs = set(spec.mlProgram.functions.keys())
    if program_funcs != set(names.values()):
        problems.append(f"ML program functions are {sorted(program_funcs)}")
    for name, f in got.items():
        if len(f.input) != 1 or f.input[0].name != INPUT:
            problems.append(f"{name}: inputs {[i.name for i in f.input]}, expected ['{INPUT}']")
            continue
        it = f.input[0].type.imageType
        if (it.height, it.width) != tuple(input_shape[2:]):
            problems.append(f"{name}: input image {it.width}x{it.height}, expected {input_shape[3]}x{input_shape[2]}")
        problems += [f"{name}: {m}" for m in image_input_problems(it, preprocess, ct)
                     if not m.startswith("input image is")]  # the size: checked against input_shape above
        if name in program_funcs:
            problems += [f"{name}: {m}" for m in program_problems(spec, preprocess, precision, ct, name)]
        problems += classifier_output_problems(f, f"{name}: ")
    problems += metadata_problems(d, metadata, values=False)
    if _weight_bytes(path) == 0:
        problems.append("no weight file in Data/com.apple.CoreML/weights")
    return problems
