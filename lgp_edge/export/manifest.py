"""``OUT/manifest.json``: what was exported, for which profile, from which descendant, and how it validated.

One builder for both kinds of export: ``manifest_head`` (schema, kind, status, profile, target, pool,
preprocessing, tool versions) is shared; ``build_manifest`` adds the single descendant, its selection and
its artifacts, ``build_switchable_manifest`` the table of descendants and the switchable artifacts. An
``export --model`` manifest has ``"pool": null`` and ``"descendant": null`` and describes the timm model
under ``"model"`` (the same size and latency fields, plus its checkpoint); ``exported`` returns whichever.
The manifest is written last, into the temporary output directory that is then renamed to OUT, so a
reader that finds OUT finds a complete manifest (``lgp_edge.export.publish``). ``status`` is ``passed``
only when every artifact's validation passed. Non-finite numbers (an artifact that produced NaN) are
written as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lgp_edge.fileio import finite_json, sha256_file, write_json_atomic
from lgp_edge.specs import SCHEMA_VERSION, ExportArtifact, latency_note

MANIFEST = "manifest.json"
KIND = "lgp-edge export"  # manifest "kind" of a single-descendant export; a switchable one adds " --switchable"


def tree_bytes(p: Path) -> int:
    """Size of a file, or of every file under a directory."""
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def file_entries(out_dir: Path, paths: Sequence[str]) -> list[dict[str, Any]]:
    """``{path, bytes, sha256}`` for companion files (directories: summed size, no hash)."""
    entries = []
    for rel in paths:
        p = out_dir / rel
        if p.is_dir():
            entries.append({"path": rel, "bytes": tree_bytes(p), "sha256": None})
        elif p.is_file():
            entries.append({"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return entries


def artifact_entry(out_dir: Path, art: ExportArtifact) -> dict[str, Any]:
    d = art.to_dict()
    d["bytes"] = tree_bytes(out_dir / art.path)
    d["files"] = file_entries(out_dir, list(art.files))
    # the model's own bytes plus its weight files (OpenVINO's .bin), not scripts or validation data
    d["model_bytes"] = d["bytes"] + sum(f["bytes"] for f in d["files"] if f["path"].endswith((".bin", ".data")))
    return d


def preprocess_entry(pre: Any) -> dict[str, Any]:
    """The pool's preprocessing with what an app needs beside it: the pixel range and the formula a tensor
    input takes (an image input marked ``normalized_in_model``, Core ML's, takes the 8-bit image as it is)."""
    d = pre.to_dict()
    d["pixel_range"] = [0, 255]
    d["tensor_input"] = "(pixel / 255 - mean[c]) / std[c]"
    if pre.in_chans == 1:
        d["grayscale"] = "mean of R, G and B, as the training loader made it"
    return d


def _mac_check(package: str) -> str:
    """The bundled script that runs ``package`` in Core ML on a Mac, as a command."""
    return ("'python validate_coreml_switchable.py'" if package.endswith(".switchable.mlpackage")
            else "'python validate_coreml.py'")


def validation_entry(validation: dict[str, Any], kinds: Sequence[tuple[str, str]], passed: bool) -> dict[str, Any]:
    """The export's validation summary, naming which artifacts were run on the images here and which only
    had a structural check (lgp-edge runs no Core ML prediction): ``passed`` covers both. ``kinds``: (artifact path,
    its check's kind) for each checked artifact."""
    numeric = [path for path, kind in kinds if kind != "structural"]
    structural = [path for path, kind in kinds if kind == "structural"]
    note = validation.get("note") or ""
    if structural:
        note += ("; " if note else "") + (
            f"{', '.join(structural)}: structural check only here (lgp-edge runs no Core ML prediction), "
            f"numerical check with {' and '.join(sorted({_mac_check(p) for p in structural}))} and the files beside "
            f"{'it' if len(structural) == 1 else 'them'}, on a Mac")
    return {**validation, "note": note, "numeric": numeric, "structural": structural, "passed": passed}


def manifest_head(*, kind: str, passed: bool, profile: Any, target: Any, pool_dir: Path | None,
                  pool_manifest: Any) -> dict[str, Any]:
    """The fields every export manifest starts with (``"pool": null`` without a pool, for --model)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "status": "passed" if passed else "failed",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile.to_dict(),
        "target": {"name": target.name, "runtime": target.runtime, "runtime_version": target.runtime_version,
                   "max_opset": target.max_opset},
        "pool": None if pool_manifest is None else {
            "pool_id": pool_manifest.spec.pool_id, "path": os.path.abspath(pool_dir), "data": pool_manifest.data,
            "synthetic_data": pool_manifest.synthetic, "stage": pool_manifest.stage,
            "ancestry": pool_manifest.spec.ancestry.name,
            "files": dict(pool_manifest.files)},  # sha256 of the pool's weights: pool_id names the architecture only
    }


def descendant_entry(record: Any, latency: dict[str, Any] | None, pool_top1_data: Any,
                     memory_mb: float | None = None, pool_top1_images: int | None = None) -> dict[str, Any]:
    """The exported descendant: its numbers (``top1`` is the pool's: torch fp32 on ``top1_images`` images of
    ``top1_data``, whatever the export's precision; each artifact's own top-1 is in its validation), the memory
    select charges it (weights + activation estimate at the profile's precision and batch; the runtime's own
    memory not included) and the latency expected on the target."""
    return {"key": record.key, "blocks": record.blocks, "params": record.params, "flops": record.flops,
            "top1": record.top1, "top1_of": "torch fp32", "top1_data": record.top1_data or pool_top1_data,
            "top1_images": pool_top1_images if record.top1 is not None else None, "spec": record.spec.to_dict(),
            "memory_mb": memory_mb, **latency_entry(latency)}


def latency_entry(latency: dict[str, Any] | None) -> dict[str, Any]:
    """The latency expected on the target (all None when unknown)."""
    lat = latency or {}
    notes = lat.get("tool_versions") or {}
    return {"expected_latency_ms": lat.get("p90_ms") if latency else None,
            "expected_median_ms": lat.get("median_ms") if latency else None,
            "latency_source": lat.get("source") if latency else None,
            "latency_runtime": lat.get("runtime") if latency else None,
            "latency_precision": lat.get("precision") if latency else None,
            "expected_p99_ms": lat.get("p99_ms") if latency else None,
            "latency_noisy": bool(lat.get("noisy")) if latency else None,
            "latency_calibration": lat.get("calibration") if latency else None,
            "latency_note": (latency_note(lat.get("source"), notes, lat.get("n"), bool(lat.get("noisy")))
                             if latency else None)}


def build_manifest(*, out_dir: Path, profile: Any, target: Any, pool_dir: Path, pool_manifest: Any, record: Any,
                   latency: dict[str, Any] | None, selection: dict[str, Any] | None, preprocess: Any,
                   artifacts: list[ExportArtifact], validation: dict[str, Any], extra_files: list[str],
                   versions: dict[str, str], model_info: dict[str, Any] | None = None,
                   memory_mb: float | None = None) -> dict[str, Any]:
    """The manifest of a single-descendant export, or with ``model_info`` of an ``export --model``."""
    passed = bool(artifacts) and all(a.validation is not None and a.validation.passed for a in artifacts)
    head = manifest_head(kind=KIND, passed=passed, profile=profile, target=target, pool_dir=pool_dir,
                         pool_manifest=pool_manifest)
    subject = ({"descendant": descendant_entry(record, latency, pool_manifest.top1_data, memory_mb,
                                               pool_manifest.top1_images)}
               if model_info is None
               else {"descendant": None, "model": {**record.to_dict(), **model_info, "memory_mb": memory_mb,
                                                   **latency_entry(latency)}})
    return finite_json({
        **head,
        **subject,
        "selection": selection,
        "preprocess": preprocess_entry(preprocess),
        "validation": validation_entry(validation, [(a.path, a.validation.kind) for a in artifacts
                                                    if a.validation is not None], passed),
        "artifacts": [artifact_entry(out_dir, a) for a in artifacts],
        "files": file_entries(out_dir, extra_files),
        "versions": versions,
    })


def build_switchable_manifest(*, out_dir: Path, profile: Any, target: Any, pool_dir: Path, pool_manifest: Any,
                              selection: str, entries: Sequence[Any], artifacts: Sequence[Any],
                              validation: dict[str, Any], extra_files: list[str],
                              versions: dict[str, str]) -> dict[str, Any]:
    """The manifest of a switchable export: ``artifacts`` have ``passed`` and ``to_dict()``."""
    passed = bool(artifacts) and all(a.passed for a in artifacts)
    head = manifest_head(kind=f"{KIND} --switchable", passed=passed, profile=profile, target=target,
                         pool_dir=pool_dir, pool_manifest=pool_manifest)
    return finite_json({
        **head,
        "selection": selection,
        "descendants": [e.to_dict() for e in entries],
        "preprocess": preprocess_entry(pool_manifest.preprocess),
        "validation": validation_entry(validation, [(a.path, a.kind) for a in artifacts], passed),
        "artifacts": [a.to_dict() for a in artifacts],
        "files": file_entries(out_dir, extra_files),
        "versions": versions,
    })


def selection_threads(manifest: dict[str, Any]) -> int | None:
    """The thread count an export's latency is for (its selection's, also for ``--descendant``), else None."""
    sel = manifest.get("selection")
    return sel.get("threads") if isinstance(sel, dict) else None


def threads_words(manifest: dict[str, Any]) -> str:
    """", N thread(s)" where the manifest's latency is a CPU runtime's at a known thread count, else ""."""
    from lgp_edge.specs import cpu_threads_words

    return cpu_threads_words(selection_threads(manifest), exported(manifest).get("latency_runtime"))


def exported(manifest: dict[str, Any]) -> dict[str, Any]:
    """The exported model's entry: ``descendant``, or ``model`` for an ``export --model``."""
    return manifest.get("descendant") or manifest["model"]


def low_precision(manifest: dict[str, Any]) -> bool:
    """Whether the export is not fp32 (its profile's precision, or an artifact's): its top-1 is then not the
    pool's torch fp32 number."""
    return manifest["profile"].get("precision", "fp32") != "fp32" or any(
        a.get("precision", "fp32") != "fp32" for a in manifest["artifacts"])


def pool_top1_of(manifest: dict[str, Any]) -> str:
    """What the exported entry's top-1 was measured with, in words: torch fp32, on how many images of what."""
    d = exported(manifest)
    n, data = d.get("top1_images"), d.get("top1_data")
    return "torch fp32" + (f" on {n:,} {data} images" if n and data else f" on {data}" if data else "")


def own_top1(manifest: dict[str, Any]) -> list[tuple[str, str, float, str]]:
    """(path, precision, top-1, format) of each artifact below fp32 that ran on this export's real, labelled
    validation images (synthetic images have no meaningful top-1)."""
    if manifest["validation"].get("synthetic"):
        return []
    return [(a["path"], a["precision"], float(a["validation"]["top1_artifact"]), a.get("format", ""))
            for a in manifest["artifacts"]
            if a.get("precision", "fp32") != "fp32" and (a.get("validation") or {}).get("kind") == "numeric"
            and a["validation"].get("top1_artifact") is not None]


def own_top1_words(manifest: dict[str, Any], code: bool = False) -> str | None:
    """``own_top1`` in words ("int8 PATH 89.40%, ...", each path in backticks when ``code``), or None when no file
    below fp32 has its own top-1. A TensorRT artifact is the fp32 ONNX its engine is built from: its top-1 is the
    engine's precision approximated in ONNX Runtime, and says so."""
    own = own_top1(manifest)
    if not own:
        return None
    q = "`" if code else ""

    def item(path: str, precision: str, top1: float, fmt: str) -> str:
        if fmt == "tensorrt":
            return f"the {precision} engine from {q}{path}{q} (approximated in ONNX Runtime) {top1:.2f}%"
        return f"{precision} {q}{path}{q} {top1:.2f}%"
    return ", ".join(item(*o) for o in own)


def source_data(manifest: dict[str, Any]) -> tuple[str, bool]:
    """(dataset, synthetic?) the exported model was trained on, as far as the manifest knows."""
    if manifest.get("pool"):
        return manifest["pool"]["data"], bool(manifest["pool"]["synthetic_data"])
    m = manifest["model"]
    return m.get("data") or "", bool(m.get("synthetic_data"))


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` via a temporary file and an atomic rename."""
    return write_json_atomic(out_dir / MANIFEST, manifest)
