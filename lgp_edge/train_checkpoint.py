"""Training checkpoints: the on-disk format, atomic saving, checking and loading, and the RNG states.

A checkpoint is a directory: ``state-<step>.safetensors`` (weights, optimizer moments, RNG states) and
``state.json`` (counters, fingerprint, world size, optimizer hyper-parameters, Python/NumPy RNG states and
the name of its safetensors file). The tensors are written and fsync'ed first under a new name; then
``state.json`` is replaced by one rename, the commit point; only then are older tensor files deleted.
A kill at any moment leaves the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgp_edge.errors import CheckpointError
from lgp_edge.fileio import (
    check_sha256,
    json_loads,
    remove_empty_dirs,
    sha256_file,
    write_atomic,
    write_text_atomic,
)

CKPT_STATE = "state.safetensors"
CKPT_META = "state.json"


def legacy_groups(ckpt: Path) -> bool:
    """True for a checkpoint whose optimizer groups predate ``lr_scale`` (see ``train_optim.legacy_optimizer``)."""
    try:
        meta = json_loads((ckpt / CKPT_META).read_text(encoding="utf-8"))
        groups = meta.get("param_groups") or [] if isinstance(meta, dict) else []
    except (OSError, ValueError):
        return False  # load_checkpoint reports the damage
    return bool(groups) and all(isinstance(g, dict) and "lr_scale" not in g for g in groups)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process' RNG states: torch CPU (+ CUDA), Python ``random`` and NumPy."""
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    try:
        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        out["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
    except ImportError:  # pragma: no cover - numpy ships with torch wheels
        pass
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    v, st, gauss = state["python"]
    random.setstate((v, tuple(st), gauss))
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def save_checkpoint(path: Path, objective: nn.Module, opt: torch.optim.Optimizer, *, epoch: int, step: int,
                    step_in_epoch: int, fingerprint: str, world: int, extra: dict[str, Any],
                    rng: list[dict[str, Any]] | None = None) -> None:
    """Atomically write model + optimizer + RNG (one entry per rank) + counters to directory ``path`` (created
    here; when its first checkpoint fails, removed again with the folders made for it)."""
    from lgp_edge.fileio import save_safetensors

    if rng is None:
        rng = [rng_state(torch.device("cpu"))]
    tensors: dict[str, torch.Tensor] = {}
    for k, v in objective.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for name, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"opt.{idx}.{name}"] = t.detach().cpu().contiguous()
    py_rng = []
    for r, st in enumerate(rng):
        tensors[f"rng.torch.{r}"] = st["torch"].cpu()
        if "cuda" in st:
            tensors[f"rng.cuda.{r}"] = st["cuda"].cpu()
        py_rng.append({k: st[k] for k in ("python", "numpy") if k in st})
    state_file = f"state-{step:09d}.safetensors"
    meta = {"epoch": epoch, "step": step, "step_in_epoch": step_in_epoch, "fingerprint": fingerprint,
            "world_size": world, "param_groups": osd["param_groups"], "rng": py_rng, "state_file": state_file,
            "extra": extra, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    created = [d for d in (path, *path.parents) if not d.exists()]  # innermost first
    path.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(path / state_file, lambda tmp: save_safetensors(tensors, tmp))
        meta["state_sha256"] = sha256_file(path / state_file)  # a damaged file is refused at --resume
        write_text_atomic(path / CKPT_META, json.dumps(meta))  # the commit point
    except BaseException:
        if path in created:  # a first checkpoint that failed leaves neither its files nor its folder
            for f in (state_file, CKPT_META):
                try:
                    (path / f).unlink(missing_ok=True)
                except OSError:
                    pass
        remove_empty_dirs(created)  # nor an OUT made for it
        raise
    _fsync_dir(path)
    for old in path.iterdir():  # older tensor files and leftovers of killed writes
        if old.name != state_file and old.name != CKPT_META and \
                old.name.startswith(("state-", ".state-", f".{CKPT_META}.", f"{CKPT_META}.tmp")):
            old.unlink(missing_ok=True)


def _py_state() -> list[Any]:
    v, state, gauss = random.getstate()
    return [v, list(state), gauss]


def read_checkpoint_meta(path: Path, fingerprint: str, world: int) -> dict[str, Any]:
    """The checkpoint's ``state.json`` after checking it belongs to this run (CheckpointError if not)."""
    meta_f = path / CKPT_META
    if not meta_f.is_file():
        raise CheckpointError(f"no checkpoint to resume in '{path}'; run without --resume to start")
    try:
        meta = json_loads(meta_f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint '{meta_f}' is damaged ({exc.msg}); delete '{path}' and start "
                              "again without --resume") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint '{meta_f}' is damaged (a JSON {type(meta).__name__}, not an object); "
                              f"delete '{path}' and start again without --resume")
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"checkpoint '{path}' belongs to another run (different pool, ancestry, data or "
                              "training settings); resume with the original arguments, or delete it and start "
                              "without --resume")
    if meta.get("world_size", 1) != world:
        raise CheckpointError(f"checkpoint '{path}' was written by {meta.get('world_size')} process(es), this run "
                              f"has {world}: the data order cannot be continued; resume with the same number "
                              f"of processes (torchrun --nnodes x --nproc_per_node = {meta.get('world_size')})")
    name = meta.get("state_file", CKPT_STATE)
    if not (isinstance(name, str) and (name == CKPT_STATE or re.fullmatch(r"state-\d{9,}\.safetensors", name))):
        raise CheckpointError(f"checkpoint '{path}' is damaged: its {CKPT_META} names state_file {repr(name)[:60]} "
                              "(state-NNNNNNNNN.safetensors in the checkpoint folder expected); delete it and start "
                              "again without --resume")
    state_f = path / name
    if not state_f.is_file():
        raise CheckpointError(f"checkpoint '{path}' is incomplete ({state_f.name} is missing); delete it and "
                              "start again without --resume")
    return meta


def load_checkpoint(path: Path, objective: nn.Module, opt: torch.optim.Optimizer, fingerprint: str,
                    world: int, rank: int = 0, device: torch.device | None = None) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG states; returns the metadata (epoch, step, ...)."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path, fingerprint, world)
    state_f = path / meta.get("state_file", CKPT_STATE)
    want = meta.get("state_sha256")  # absent in checkpoints written before it was recorded
    if want is not None:
        check_sha256(state_f, want, recorded_in="its state.json", fix="resuming from it would continue from other "
                     "weights; delete it and start again without --resume")
    try:
        tensors = load_file(str(state_f))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({str(exc)[:120]}); delete it and start "
                              "again without --resume") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        objective.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint '{path}' does not fit this model: {str(exc)[:160]}") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint '{path}' holds optimizer state of another parameter grouping ({exc}); "
                              "resume it with the lgp-edge version that wrote it, or delete it and start again "
                              "without --resume") from None
    try:
        rng: dict[str, Any] = {"torch": tensors[f"rng.torch.{rank}"], **meta["rng"][rank]}
    except (KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(f"checkpoint '{path}' has no random-number state for rank {rank} ({exc}); delete it "
                              "and start again without --resume") from None
    if f"rng.cuda.{rank}" in tensors:
        rng["cuda"] = tensors[f"rng.cuda.{rank}"]
    try:
        set_rng_state(rng, device or torch.device("cpu"))
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as exc:
        raise CheckpointError(f"checkpoint '{path}' has a damaged random-number state for rank {rank} "
                              f"({str(exc)[:120]}); delete it and start again without --resume") from None
    return meta
