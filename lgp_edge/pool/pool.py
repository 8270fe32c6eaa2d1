"""LearngenePool: the auxiliary models' blocks (learngene instances) plus every stitch layer.

A pool directory holds ``pool.json`` (manifest: spec, schema_version, sha256 of every weight file,
training history, evaluated descendants) and ``weights.safetensors`` (instances + stitches), optionally
``ancestry.safetensors`` (the teacher for fine-tuning) and ``transforms.safetensors`` (the distillation's
transformation matrices, for the learned stitch init). Writes go to a temporary directory that is
renamed into place, so a crash never leaves a half-written pool.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from lgp_edge.errors import CheckpointError
from lgp_edge.fileio import save_safetensors, sha256_file, write_json
from lgp_edge.models.descendant import Descendant, build_descendant, count_params
from lgp_edge.models.instances import create_auxiliary
from lgp_edge.models.plan import descendant_flops, enumerate_descendants, stitch_specs
from lgp_edge.models.stitch import make_stitch
from lgp_edge.outdir import POOL_COPY, atomic_dir, foreign_entries, replace_dir
from lgp_edge.pool.manifest import (  # noqa: F401 (re-exported: pool.json is read through this module too)
    ANCESTRY,
    MANIFEST,
    TRANSFORMS,
    WEIGHTS,
    PoolManifest,
    current_records,
    demo_pool_dir,
    find_descendant,
    read_manifest,
    resolve_pool,
    verified_file,
    verified_weights,
)
from lgp_edge.specs import DescendantRecord, DescendantSpec, PoolSpec

log = logging.getLogger(__name__)


class LearngenePool(nn.Module):
    """Instances (the auxiliary models' blocks, with each model's embedding, norm and head) and stitches."""

    def __init__(self, spec: PoolSpec, *, init: bool = True) -> None:
        """``init`` False: the instances' weights are left as allocated (for shapes only, on the meta device)."""
        super().__init__()
        self.spec = spec
        self.models = nn.ModuleDict({i.name: create_auxiliary(spec.ancestry, i, init=init) for i in spec.instances})
        self.stitches = nn.ModuleDict({s.name: make_stitch(s.d_in, s.d_out) for s in stitch_specs(spec)})
        self._descendants = enumerate_descendants(spec)

    @property
    def pool_id(self) -> str:
        return self.spec.pool_id

    def descendants(self) -> list[DescendantSpec]:
        return list(self._descendants)

    def find(self, key: str) -> DescendantSpec:
        return find_descendant(self.spec, key)

    def descendant(self, spec: DescendantSpec | str) -> Descendant:
        if isinstance(spec, str):
            spec = self.find(spec)
        return build_descendant(spec, self.models, self.stitches)

    def forward(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Logits of descendant number ``index`` (the fine-tuning entry point)."""
        return self.descendant(self._descendants[index])(x)

    def stored_params(self) -> int:
        return count_params(self)

    def record(self, spec: DescendantSpec, top1: float | None = None) -> DescendantRecord:
        return DescendantRecord(key=spec.key, blocks=spec.num_blocks, params=count_params(self.descendant(spec)),
                                flops=descendant_flops(self.spec, spec), top1=top1, spec=spec)


def _state(module: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().contiguous().cpu()
        out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    return out


def save_pool(path: str | Path, pool: LearngenePool, manifest: PoolManifest, *,
              ancestry: nn.Module | None = None, transforms: dict[str, torch.Tensor] | None = None,
              storage_dtype: str = "float32", keep_from: str | Path | None = None,
              drop: tuple[str, ...] = ()) -> PoolManifest:
    """Write a pool directory atomically; returns the manifest with file hashes filled in.

    ``keep_from``: an existing pool directory whose ancestry/transforms files are carried over when not
    given here (fine-tuning rewrites the weights only), each only as its pool.json records it (a file that
    does not match its sha256 there is a CheckpointError); when it is ``path`` itself, its other files are
    carried over too, except those named in ``drop`` (e.g. results that the new weights make stale).
    """
    dtype = {"float32": None, "float16": torch.float16}[storage_dtype]
    in_place = keep_from is not None and Path(keep_from).resolve() == Path(path).resolve()
    kept = carried_files(keep_from, exclude=tuple(n for n, given in ((ANCESTRY, ancestry), (TRANSFORMS, transforms))
                                                  if given is not None)) if keep_from is not None else {}
    state = _state(pool, dtype)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # checked before anything is written
        raise CheckpointError(f"the pool's weights hold NaN or infinite values ({bad}: its training diverged); "
                              "nothing written: train it again with a lower --lr")
    with atomic_dir(path, POOL_COPY if in_place else "choose another --out") as tmp:
        files: dict[str, str] = {}
        save_safetensors(state, os.path.join(tmp, WEIGHTS), metadata={"pool_id": pool.pool_id})
        if ancestry is not None:
            save_safetensors(_state(ancestry, dtype), os.path.join(tmp, ANCESTRY))
        if transforms is not None:
            save_safetensors({k: v.detach().contiguous().cpu() for k, v in transforms.items()},
                             os.path.join(tmp, TRANSFORMS))
        for name, src in kept.items():
            shutil.copy2(src, os.path.join(tmp, name))
        for name in (WEIGHTS, ANCESTRY, TRANSFORMS):
            if os.path.exists(os.path.join(tmp, name)):
                files[name] = sha256_file(os.path.join(tmp, name))
        manifest = manifest.replace(files=files, storage_dtype=storage_dtype)
        write_json(os.path.join(tmp, MANIFEST), manifest.to_dict())  # a NaN R^2 as null
        # Carry over lgp-edge's other files (descendants.json, checkpoints) from the directory being replaced;
        # what lgp-edge did not write there, replace_dir carries over itself.
        if in_place:
            foreign = set(foreign_entries(path))
            for extra in Path(keep_from).iterdir():
                if extra.name not in (WEIGHTS, ANCESTRY, TRANSFORMS, MANIFEST, *drop) and extra.name not in foreign:
                    dst = Path(tmp) / extra.name
                    (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, dst)
        replace_dir(tmp, path)
    log.info("saved pool %s to %s", pool.pool_id, path)
    return manifest


def carried_files(pool_dir: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
    """The ancestry and transforms files of the pool at ``pool_dir`` that a rewrite of it carries over (not those
    in ``exclude``), each checked against the sha256 its pool.json records (CheckpointError when it does not
    match: a damaged file is never carried into a new pool under a new hash)."""
    manifest = read_manifest(pool_dir)
    return {name: verified_file(pool_dir, manifest, name) for name in (ANCESTRY, TRANSFORMS)
            if name in manifest.files and name not in exclude}


def safe_load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with damaged files (truncated, bad header) as a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({str(exc).splitlines()[0][:160]}); "
                              "restore it or rebuild the pool") from None


def _build(path: str | Path, manifest: PoolManifest) -> LearngenePool:
    """The pool ``manifest`` describes, with random weights (drawn from the global torch RNG, whose state is put
    back: the weights are replaced by the pool's, and the application's random numbers stay as they were)."""
    try:
        with torch.random.fork_rng(devices=[]):
            return LearngenePool(manifest.spec)
    except (AssertionError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"'{Path(path) / MANIFEST}' describes a pool that cannot be built "
                              f"({str(exc) or type(exc).__name__}); the file is damaged") from None


def _generation(path: str | Path) -> tuple[tuple[int, int, int] | None, ...]:
    """Which writing of the pool at ``path`` its pool.json and weights are: a rewrite replaces the directory
    (new files: new inodes and times), so a reader compares this before and after reading."""
    out = []
    for name in (MANIFEST, WEIGHTS):
        try:
            st = os.stat(Path(path) / name)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def load_pool(path: str | Path, attempts: int = 3) -> tuple[LearngenePool, PoolManifest]:
    """Load and verify a pool directory (weights always as float32).

    The tensor shapes the spec implies are first compared with the weights file's header (``verified_weights``,
    arithmetic), so that a pool.json whose architecture is not the weights' (a width of 6144 for 32 allocates
    11 GB) is refused before anything is built. pool.json and the weights are read at different moments: when
    another lgp-edge replaced the pool in between (``pool stitch``, ``finetune`` and ``eval`` rewrite it in
    place), the pool is read again, so the weights returned are those the manifest returned describes."""
    for attempt in range(attempts):
        before = _generation(path)
        try:
            loaded = _load_pool_once(path)
        except CheckpointError:
            if _generation(path) == before or attempt == attempts - 1:
                raise
            continue  # e.g. the new weights against the old pool.json's hash
        if _generation(path) == before:
            return loaded
        log.info("pool '%s' was replaced while it was read; reading it again", path)
    raise CheckpointError(f"pool '{path}' was replaced {attempts} times while it was read (another lgp-edge is "
                          "rewriting it); read it again when that run is done")


def _load_pool_once(path: str | Path) -> tuple[LearngenePool, PoolManifest]:
    manifest = read_manifest(path)
    weights = verified_weights(path, manifest)
    pool = _build(path, manifest)
    state = {k: v.float() if v.is_floating_point() else v for k, v in safe_load_file(weights).items()}
    try:
        pool.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"'{weights}' does not fit the pool spec in pool.json: {str(exc)[:200]}") from None
    pool.eval()
    return pool, manifest


def load_pool_ancestry(path: str | Path, manifest: PoolManifest) -> nn.Module:
    """The ancestry stored in the pool directory (the teacher for fine-tuning)."""
    from lgp_edge.models.ancestry import create_ancestry

    f = verified_file(path, manifest, ANCESTRY)
    a = manifest.spec.ancestry
    model, _ = create_ancestry(a.name, num_classes=a.num_classes, in_chans=a.in_chans, img_size=a.img_size)
    try:
        model.load_state_dict({k: v.float() for k, v in safe_load_file(f).items()})
    except RuntimeError as exc:
        raise CheckpointError(f"'{f}' does not fit the ancestry in pool.json: {str(exc)[:200]}") from None
    return model.eval()


def load_pool_transforms(path: str | Path, manifest: PoolManifest) -> dict[str, torch.Tensor]:
    return safe_load_file(verified_file(path, manifest, TRANSFORMS))


