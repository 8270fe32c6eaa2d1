"""Publishing an export directory: the one way OUT is written, for one descendant and for a switchable pool.

1. ``check_out`` before any work (and again under OUT's writer lock): OUT is writable, empty or (with
   ``--force``) an earlier export, not the current directory, and holds neither the pool nor the store.
2. ``publish`` writes everything into a temporary directory beside OUT (``stage``), then ``manifest.json``
   last. Every validation passed: the directory is swapped in as OUT (replacing it under ``--force``).
   Any validation failed: OUT is left untouched; the directory becomes ``OUT.failed`` (its manifest says
   ``"status": "failed"``) for inspection, and ``ValidationFailed`` (exit 1) is raised; a later passing export
   removes it (``drop_failed``). An exporter error
   (an operator TensorRT cannot parse, ...) removes the temporary directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgp_edge.errors import ValidationFailed
from lgp_edge.export.manifest import KIND, MANIFEST, write_manifest
from lgp_edge.fileio import json_loads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staged:
    """What a stage wrote into the temporary directory."""

    manifest: dict[str, Any]  # manifest.json's contents; "status" is "passed" or "failed"
    failures: tuple[str, ...] = ()  # one line per failed check, for the error message
    artifacts: tuple[Any, ...] = ()  # the artifact records, for the caller


def check_out(out: Path, force: bool, pool_dir: Path | None, store: Path | str | None,
              checkpoint: Path | None = None) -> None:
    """OUT is usable, empty or (with --force) an earlier export, and holds neither the pool, the store nor the
    checkpoint of ``--model``."""
    from lgp_edge.outdir import check_not_inside, check_output_dir

    check_output_dir(out, force, kind="export")
    if pool_dir is not None:
        check_not_inside(out, pool_dir, "the pool")
    if checkpoint is not None:
        check_not_inside(out, checkpoint, "the checkpoint")
    store = store or os.environ.get("LGP_EDGE_STORE")
    if store:
        check_not_inside(out, store, "the measurement store")


def _failed_dir(out: Path) -> Path:
    """OUT.failed, beside the directory a linked OUT names (the same file system as the work)."""
    from lgp_edge.outdir import real_out

    real = real_out(out)
    return real.with_name(real.name + ".failed")


def _is_failed_export(path: Path) -> bool:
    """``path`` holds lgp-edge's failed export (its manifest.json says so)."""
    try:
        earlier = json_loads((path / MANIFEST).read_text(encoding="utf-8"))
        return str(earlier.get("kind", "")).startswith(KIND) and earlier.get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return False


def keep_failed(tmp: Path, out: Path) -> Path | None:
    """Keep a failed export for inspection at OUT.failed (only replacing an earlier failed export)."""
    from lgp_edge.outdir import replace_dir

    failed = _failed_dir(out)
    if failed.exists() and not _is_failed_export(failed):
        log.warning("'%s' exists and is not an earlier failed export; the failed output is discarded", failed)
        return None
    replace_dir(tmp, failed)
    return failed


def publish(out: Path, stage: Callable[[Path], Staged], *, recheck: Callable[[], None],
            failure: str = "validation failed") -> Staged:
    """Run ``stage`` in a temporary directory beside OUT and publish the result (see the module docstring).

    ``recheck`` runs first, under OUT's writer lock (OUT may have been written since the preflight);
    ``failure`` starts the ValidationFailed message.
    """
    from lgp_edge.outdir import atomic_dir, replace_dir

    with atomic_dir(out) as tmp_name:  # holds OUT's writer lock: a second export exits 2
        recheck()
        tmp = Path(tmp_name)
        staged = stage(tmp)
        write_manifest(tmp, staged.manifest)
        if staged.manifest["status"] != "passed":
            where = keep_failed(tmp, out)
            raise ValidationFailed(f"{failure}, nothing written to '{out}'"
                                   + (f" (failed output kept in '{where}')" if where else "")
                                   + f": {'; '.join(staged.failures)}")
        replace_dir(tmp, out)
        drop_failed(out)
    return staged


def drop_failed(out: Path) -> None:
    """After a passing export: OUT.failed, kept by an earlier failed run, describes an attempt OUT has replaced.
    Removed when it is lgp-edge's failed export holding nothing else; anything else there is kept, with a warning."""
    import shutil

    from lgp_edge.outdir import recognise_output

    failed = _failed_dir(out)
    if not failed.is_dir() or failed.is_symlink():
        return
    ours = _is_failed_export(failed)
    foreign = recognise_output(failed)[1] if ours else []
    if ours and not foreign:
        shutil.rmtree(failed, ignore_errors=True)
        log.info("removed '%s', the failed output of an earlier export to '%s'", failed, out)
    else:
        log.warning("'%s' is kept: it holds %s; it is not the state of '%s'", failed,
                    f"'{foreign[0]}', which lgp-edge did not write there" if foreign else "no failed export", out)
