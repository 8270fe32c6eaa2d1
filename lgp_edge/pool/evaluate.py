"""``pool eval``: top-1, params and FLOPs of every descendant; written to pool.json and descendants.json."""

from __future__ import annotations

import dataclasses
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from lgp_edge.datasets import ImageData, check_data_name, open_for_pool, refuse_synthetic_in_place
from lgp_edge.errors import DataError, UsageError
from lgp_edge.fileio import write_json_atomic_all
from lgp_edge.outdir import IN_PLACE_BUSY, check_in_place, output_lock, real_out
from lgp_edge.pool.manifest import read_manifest
from lgp_edge.pool.pool import MANIFEST, LearngenePool, PoolManifest, load_pool
from lgp_edge.progress import NULL, Reporter
from lgp_edge.specs import DescendantRecord
from lgp_edge.train import evaluate

DESCENDANTS = "descendants.json"


def evaluate_descendants(pool: LearngenePool, dataset, *, batch_size: int = 256, max_images: int | None = None,
                         reporter: Reporter = NULL, data_name: str | None = None,
                         device: str = "cpu") -> list[DescendantRecord]:
    """Top-1 of every descendant on ``dataset`` (named ``data_name`` in each record), computed on ``device``."""
    if max_images is not None and max_images < 1:
        raise UsageError(f"max_images must be >= 1, got {max_images}")
    records = []
    specs = pool.descendants()
    with reporter.task("evaluate descendants", total=len(specs)) as task:
        for spec in specs:
            top1 = evaluate(pool.descendant(spec), dataset, batch_size=batch_size, max_images=max_images,
                            device=device)
            records.append(dataclasses.replace(pool.record(spec, top1=round(top1, 3)), top1_data=data_name))
            task.advance(1, last=f"{spec.key} {top1:.2f}%")
    return records


def _pool_and_data(path: str | Path, data: str) -> tuple[LearngenePool, PoolManifest, ImageData]:
    """The pool at ``path`` and ``data`` opened for it: at its input size and channels, with its classes."""
    check_data_name(data)
    pool, manifest = load_pool(path)
    return pool, manifest, open_for_pool(data, manifest)


def instance_top1(path: str | Path, data: str, *, max_images: int | None = None,
                  device: str = "cpu") -> dict[str, float]:
    """Top-1 of each instance model alone (Ti alone, B alone) of the pool at ``path``; nothing is written."""
    pool, manifest, ds = _pool_and_data(path, data)
    return {d.key: round(evaluate(pool.descendant(d), ds.val, max_images=max_images, device=device), 3)
            for d in pool.descendants() if not d.stitches}


def _writer_lock(path: str | Path) -> AbstractContextManager[None]:
    """The pool's writer lock (the one ``pool finetune`` and ``pool stitch`` hold while they replace it), so an
    evaluation is refused while another lgp-edge writes the pool, and the reverse, instead of writing the old
    manifest beside new weights. A pool whose folder's parent cannot be written needs none: no lgp-edge can
    replace it."""
    real = real_out(path)
    return output_lock(real, IN_PLACE_BUSY) if os.access(real.parent, os.W_OK) else nullcontext()


def evaluate_pool(path: str | Path, data: str, *, batch_size: int = 256, max_images: int | None = None,
                  reporter: Reporter = NULL, device: str = "cpu") -> PoolManifest:
    with _writer_lock(path):
        return _evaluate_pool(path, data, batch_size=batch_size, max_images=max_images, reporter=reporter,
                              device=device)


def _evaluate_pool(path: str | Path, data: str, *, batch_size: int, max_images: int | None, reporter: Reporter,
                   device: str) -> PoolManifest:
    check_data_name(data)
    # pool.json alone, before the weights load (the writer lock held: no other lgp-edge rewrites it meanwhile)
    refuse_synthetic_in_place(data, read_manifest(path), "pool eval writes the top-1 into the pool",
                              "would replace its measured top-1 with a score on noise")
    pool, manifest = load_pool(path)
    ds = open_for_pool(data, manifest)
    check_in_place(path, swapped=False)  # the results are written into the pool: find out before evaluating
    if len(ds.val) == 0:
        raise DataError(f"--data {data} has no validation images")
    records = evaluate_descendants(pool, ds.val, batch_size=batch_size, max_images=max_images, reporter=reporter,
                                   data_name=ds.info.name, device=device)
    n = len(ds.val) if max_images is None else min(max_images, len(ds.val))
    manifest = manifest.replace(descendants=tuple(records),
                                history=manifest.history + ({"stage": "eval", "data": ds.info.name, "images": n},))
    path = Path(path)
    results = {"pool_id": manifest.spec.pool_id, "data": ds.info.name, "synthetic_data": ds.info.synthetic,
               "images": n, "descendants": [r.to_dict() for r in records]}
    # both or neither: pool.json, renamed last, is the commit point
    write_json_atomic_all([(path / DESCENDANTS, results), (path / MANIFEST, manifest.to_dict())])
    return manifest
