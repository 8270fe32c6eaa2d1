"""LearngenePool: the auxiliary models' blocks (learngene instances) plus every stitch layer.

A pool directory holds ``pool.json`` (manifest: spec, schema_version, sha256 of every weight file,
training history, evaluated descendants) and ``weights.safetensors`` (instances + stitches), optionally
``ancestry.safetensors`` (the teacher for fine-tuning) and ``transforms.safetensors`` (the distillation's
transformation matrices, for the learned stitch init). Writes go to a temporary directory that is
renamed into place, so a crash never leaves a half-written pool.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgp_edge.errors import CheckpointError, UsageError
from lgp_edge.fileio import save_safetensors, sha256_file
from lgp_edge.models.descendant import (
    Descendant,
    build_descendant,
    count_params,
    descendant_flops,
    enumerate_descendants,
    stitch_specs,
)
from lgp_edge.models.instances import create_auxiliary
from lgp_edge.models.stitch import make_stitch
from lgp_edge.outdir import atomic_dir, recover_unlocked, replace_dir
from lgp_edge.specs import SCHEMA_VERSION, DescendantRecord, DescendantSpec, PoolSpec, PreprocessSpec

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
ANCESTRY = "ancestry.safetensors"
TRANSFORMS = "transforms.safetensors"
MANIFEST = "pool.json"


class LearngenePool(nn.Module):
    """Instances (the auxiliary models' blocks, with each model's embedding, norm and head) and stitches."""

    def __init__(self, spec: PoolSpec) -> None:
        super().__init__()
        self.spec = spec
        self.models = nn.ModuleDict({i.name: create_auxiliary(spec.ancestry, i) for i in spec.instances})
        self.stitches = nn.ModuleDict({s.name: make_stitch(s.d_in, s.d_out) for s in stitch_specs(spec)})
        self._descendants = enumerate_descendants(spec)

    @property
    def pool_id(self) -> str:
        return self.spec.pool_id

    def descendants(self) -> list[DescendantSpec]:
        return list(self._descendants)

    def find(self, key: str) -> DescendantSpec:
        for d in self._descendants:
            if d.key == key:
                return d
        raise UsageError(f"pool {self.pool_id} has no descendant '{key}'; see 'lgp-edge pool info'")

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


@dataclass(frozen=True)
class PoolManifest:
    """The contents of pool.json besides the weights."""

    spec: PoolSpec  # architecture; its hash is the pool id
    preprocess: PreprocessSpec  # what an app does to an image before the model
    data: str  # dataset the pool was trained on ("fashion-mnist", "imagefolder:…", "synthetic")
    stitch_init: str  # "learned" or "lstsq"
    stage: str  # "distilled" or "finetuned"
    files: dict[str, str] = field(default_factory=dict)  # weight file -> sha256
    history: tuple[dict[str, Any], ...] = ()  # one entry per stage: command, recipe, time, wall seconds
    descendants: tuple[DescendantRecord, ...] = ()  # filled by 'pool eval'
    storage_dtype: str = "float32"  # dtype of weights.safetensors
    provenance: dict[str, Any] = field(default_factory=dict)  # how this pool was made (demo pool: command…)

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic"

    @property
    def top1_data(self) -> str | None:
        """Dataset the descendants' top-1 were measured on (the records', else the last 'eval' stage's)."""
        named = {r.top1_data for r in self.descendants if r.top1 is not None and r.top1_data}
        if named:
            return "synthetic" if "synthetic" in named else sorted(named)[0]
        evals = [h for h in self.history if isinstance(h, dict) and h.get("stage") == "eval" and h.get("data")]
        if evals:
            return str(evals[-1]["data"])
        return self.data if any(r.top1 is not None for r in self.descendants) else None

    def check_top1(self, pool_dir: str | Path) -> str:
        """Refuse to choose by top-1 measured on synthetic data for a pool trained on real data.

        Returns a note for the output when the pool itself is synthetic ('' otherwise).
        """
        on = self.top1_data
        if on == "synthetic" and not self.synthetic:
            raise UsageError(f"the top-1 in '{pool_dir}' were measured on synthetic data, not {self.data}; choosing "
                             f"by them would be meaningless: run 'lgp-edge pool eval {pool_dir} --data {self.data}'")
        if on == "synthetic":
            return "top-1 measured on synthetic data: the choice demonstrates the tooling only"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "pool_id": self.spec.pool_id,
            "spec": self.spec.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "data": self.data,
            "synthetic_data": self.synthetic,
            "stitch_init": self.stitch_init,
            "stage": self.stage,
            "storage_dtype": self.storage_dtype,
            "files": dict(self.files),
            "history": list(self.history),
            "provenance": dict(self.provenance),
            "descendants": [r.to_dict() for r in self.descendants],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolManifest:
        return cls(spec=PoolSpec.from_dict(d["spec"]), preprocess=PreprocessSpec.from_dict(d["preprocess"]),
                   data=d["data"], stitch_init=d["stitch_init"], stage=d["stage"], files=dict(d["files"]),
                   history=tuple(d.get("history", ())),
                   descendants=tuple(DescendantRecord.from_dict(r) for r in d.get("descendants", ())),
                   storage_dtype=d.get("storage_dtype", "float32"), provenance=dict(d.get("provenance", {})))

    def replace(self, **changes: Any) -> PoolManifest:
        return dataclasses.replace(self, **changes)


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
    given here (fine-tuning rewrites the weights only); when it is ``path`` itself, its other files are
    carried over too, except those named in ``drop`` (e.g. results that the new weights make stale).
    """
    dtype = {"float32": None, "float16": torch.float16}[storage_dtype]
    with atomic_dir(path) as tmp:
        files: dict[str, str] = {}
        save_safetensors(_state(pool, dtype), os.path.join(tmp, WEIGHTS), metadata={"pool_id": pool.pool_id})
        if ancestry is not None:
            save_safetensors(_state(ancestry, dtype), os.path.join(tmp, ANCESTRY))
        elif keep_from is not None and (Path(keep_from) / ANCESTRY).is_file():
            shutil.copy2(Path(keep_from) / ANCESTRY, os.path.join(tmp, ANCESTRY))
        if transforms is not None:
            save_safetensors({k: v.detach().contiguous().cpu() for k, v in transforms.items()},
                             os.path.join(tmp, TRANSFORMS))
        elif keep_from is not None and (Path(keep_from) / TRANSFORMS).is_file():
            shutil.copy2(Path(keep_from) / TRANSFORMS, os.path.join(tmp, TRANSFORMS))
        for name in (WEIGHTS, ANCESTRY, TRANSFORMS):
            if os.path.exists(os.path.join(tmp, name)):
                files[name] = sha256_file(os.path.join(tmp, name))
        manifest = manifest.replace(files=files, storage_dtype=storage_dtype)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest.to_dict(), f, indent=1)
            f.write("\n")
        # Carry over user files (e.g. a fine-tuning checkpoint) from the directory being replaced.
        if keep_from is not None and Path(keep_from).resolve() == Path(path).resolve():
            for extra in Path(keep_from).iterdir():
                if extra.name not in (WEIGHTS, ANCESTRY, TRANSFORMS, MANIFEST, *drop):
                    dst = Path(tmp) / extra.name
                    (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, dst)
        replace_dir(tmp, path)
    log.info("saved pool %s to %s", pool.pool_id, path)
    return manifest


def read_manifest(path: str | Path) -> PoolManifest:
    p = Path(path)
    mf = p / MANIFEST
    recover_unlocked(p)  # a run killed while replacing the pool directory
    if not mf.is_file():
        raise UsageError(f"'{p}' is not a pool directory (no {MANIFEST}); build one with 'lgp-edge pool build'")
    try:
        raw = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{mf}' is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"'{mf}' cannot be read ({exc}); restore it or rebuild the pool") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"'{mf}' holds a JSON {type(raw).__name__}, not an object; the file is damaged")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(f"'{mf}' has schema_version {version}, this lgp-edge reads {SCHEMA_VERSION}; "
                              "rebuild the pool or use a matching lgp-edge version")
    try:
        return current_records(PoolManifest.from_dict(raw))
    except KeyError as exc:
        raise CheckpointError(f"'{mf}' is missing field {exc}; the file is damaged") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"'{mf}' has a field of the wrong type or value ({exc}); the file is damaged") \
            from None


def current_records(manifest: PoolManifest) -> PoolManifest:
    """The manifest without evaluated records whose descendant this version enumerates differently (other
    blocks or stitch layers under the same key, or a key it no longer has): their top-1 belongs to another
    model. Such a pool needs 'lgp-edge pool eval' again; a warning says so."""
    if not manifest.descendants:
        return manifest
    current = {d.key: d for d in enumerate_descendants(manifest.spec)}
    kept = tuple(r for r in manifest.descendants if current.get(r.key) == r.spec)
    if len(kept) != len(manifest.descendants):
        log.warning("pool %s: %d evaluated descendant(s) were defined differently by the lgp-edge that evaluated "
                    "them and are dropped; run 'lgp-edge pool eval' again", manifest.spec.pool_id,
                    len(manifest.descendants) - len(kept))
        manifest = manifest.replace(descendants=kept)
    return manifest


def verified_file(path: str | Path, manifest: PoolManifest, name: str) -> Path:
    """Path of a weight file after checking its sha256 against the manifest."""
    f = Path(path) / name
    expected = manifest.files.get(name)
    if expected is None or not f.is_file():
        raise CheckpointError(f"pool '{path}' has no {name}")
    actual = sha256_file(f)
    if actual != expected:
        raise CheckpointError(f"'{f}' is damaged or was modified: sha256 {actual[:12]}… does not match "
                              f"pool.json ({expected[:12]}…); restore it or rebuild the pool")
    return f


def safe_load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with damaged files (truncated, bad header) as a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({str(exc).splitlines()[0][:160]}); "
                              "restore it or rebuild the pool") from None


def load_pool(path: str | Path) -> tuple[LearngenePool, PoolManifest]:
    """Load and verify a pool directory (weights always as float32)."""
    manifest = read_manifest(path)
    weights = verified_file(path, manifest, WEIGHTS)
    try:
        pool = LearngenePool(manifest.spec)
    except (AssertionError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"'{Path(path) / MANIFEST}' describes a pool that cannot be built "
                              f"({str(exc) or type(exc).__name__}); the file is damaged") from None
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


def demo_pool_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "demo_pool"


def resolve_pool(path: str | Path | None) -> Path:
    """``--pool`` or, when absent, the demo pool bundled with the package."""
    if path is not None:
        return Path(path)
    demo = demo_pool_dir()
    if not (demo / MANIFEST).is_file():
        raise UsageError("no --pool given and this installation has no bundled demo pool; pass --pool POOL")
    return demo
