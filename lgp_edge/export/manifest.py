"""``OUT/manifest.json``: what was exported, for which profile, from which descendant, and how it validated.

The manifest is written last, into the temporary output directory that is then renamed to OUT, so a
reader that finds OUT finds a complete manifest. ``status`` is ``passed`` only when every artifact's
validation passed; a failed export is never renamed to OUT (see ``lgp_edge.export.pipeline``).
Non-finite numbers (an artifact that produced NaN) are written as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lgp_edge.fileio import sha256_file, write_json_atomic
from lgp_edge.specs import SCHEMA_VERSION, ExportArtifact

MANIFEST = "manifest.json"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def file_entries(out_dir: Path, paths: list[str]) -> list[dict[str, Any]]:
    """``{path, bytes, sha256}`` for companion files (directories: summed size, no hash)."""

    entries = []
    for rel in paths:
        p = out_dir / rel
        if p.is_dir():
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            entries.append({"path": rel, "bytes": size, "sha256": None})
        elif p.is_file():
            entries.append({"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return entries


def artifact_entry(out_dir: Path, art: ExportArtifact) -> dict[str, Any]:
    d = art.to_dict()
    p = out_dir / art.path
    d["bytes"] = (sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size)
    d["files"] = file_entries(out_dir, list(art.files))
    # the model's own bytes plus its weight files (OpenVINO's .bin), not scripts or validation data
    d["model_bytes"] = d["bytes"] + sum(f["bytes"] for f in d["files"] if f["path"].endswith((".bin", ".data")))
    return d


def build_manifest(*, out_dir: Path, profile: Any, target: Any, pool_dir: Path, pool_manifest: Any, record: Any,
                   latency: dict[str, Any] | None, selection: dict[str, Any] | None, preprocess: Any,
                   artifacts: list[ExportArtifact], validation: dict[str, Any], extra_files: list[str],
                   versions: dict[str, str]) -> dict[str, Any]:
    passed = bool(artifacts) and all(a.validation is not None and a.validation.passed for a in artifacts)
    return _finite({
        "schema_version": SCHEMA_VERSION,
        "kind": "lgp-edge export",
        "status": "passed" if passed else "failed",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile.to_dict(),
        "target": {"name": target.name, "runtime": target.runtime, "runtime_version": target.runtime_version,
                   "max_opset": target.max_opset},
        "pool": {"pool_id": pool_manifest.spec.pool_id, "path": str(pool_dir), "data": pool_manifest.data,
                 "synthetic_data": pool_manifest.synthetic, "stage": pool_manifest.stage,
                 "ancestry": pool_manifest.spec.ancestry.name},
        "descendant": {"key": record.key, "blocks": record.blocks, "params": record.params, "flops": record.flops,
                       "top1": record.top1, "top1_data": record.top1_data or pool_manifest.top1_data,
                       "spec": record.spec.to_dict(),
                       "expected_latency_ms": latency.get("p90_ms") if latency else None,
                       "expected_median_ms": latency.get("median_ms") if latency else None,
                       "latency_source": latency.get("source") if latency else None,
                       "latency_runtime": latency.get("runtime") if latency else None,
                       "latency_precision": latency.get("precision") if latency else None,
                       "expected_p99_ms": latency.get("p99_ms") if latency else None,
                       "latency_noisy": bool(latency.get("noisy")) if latency else None,
                       "latency_calibration": latency.get("calibration") if latency else None,
                       "latency_note": (latency.get("tool_versions") or {}).get("noisy_measurement") or
                       (latency.get("tool_versions") or {}).get("aggregate") or
                       (latency.get("tool_versions") or {}).get("spread") if latency else None},
        "selection": selection,
        "preprocess": preprocess.to_dict(),
        "validation": {**validation, "passed": passed},
        "artifacts": [artifact_entry(out_dir, a) for a in artifacts],
        "files": file_entries(out_dir, extra_files),
        "versions": versions,
    })


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` via a temporary file and an atomic rename."""
    return write_json_atomic(out_dir / MANIFEST, manifest)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / MANIFEST).read_text())
