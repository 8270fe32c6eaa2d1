"""The exported-graph cache: a shipped ONNX graph, exported once per model, options and tool versions.

``lgp-edge profile`` exports every descendant and calibration probe it times, and ``lgp-edge export`` exports the
chosen descendant again, each through the dynamo exporter and onnxslim (seconds for a small model, minutes for a
DeiT-B-scale descendant). The simplified graph (before the metadata of one export is attached) is kept in
``$LGP_EDGE_CACHE/onnx`` (default ``$XDG_CACHE_HOME/lgp-edge/onnx``, ``~/.cache/lgp-edge/onnx``) under a key
that is the sha256 of everything the graph depends on:

- every parameter and buffer of the model (name, dtype, shape, bytes);
- every submodule's class, all its other attributes (``fused_attn``, ``eps``, ``num_heads``...: containers
  walked, tensors by their bytes, anything else by its repr) and its train/eval mode;
- the example input's shape and dtype, the opset, a dynamic batch;
- the versions of torch, onnx, onnxscript, onnx-ir, onnxslim and timm, and the source of lgp-edge itself (any
  change to lgp-edge's code is another key).

Only models made of torch, timm and lgp-edge classes are cached (their code is what the versions and the source
cover); a model of another class, one with a ``forward`` replaced on an instance, or with forward hooks is
exported every time. Each entry is ``KEY.onnx`` beside
``KEY.json`` (its size and sha256, written last): an entry whose bytes do not match is removed and exported again.
The cache holds at most ``$LGP_EDGE_CACHE_MB`` megabytes (default 2048), the least recently used entries going
first; ``LGP_EDGE_CACHE_MB=0`` turns it off. Only regular files named exactly as its entries are ever removed
from the folder. Entries follow the user's umask. A
cache that cannot be read or written is skipped (said once per process in the log): an export never fails for it.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lgp_edge.errors import UsageError, WriteFailed

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

FORMAT = 1  # the entry layout; bumped when the key or the stored graph changes meaning
DEFAULT_MB = 2048
ENTRY = re.compile(r"[0-9a-f]{64}\.(onnx|json)")  # matched whole (fullmatch)
PARTIAL = re.compile(r"\.[0-9a-f]{64}\.(onnx|json)\.[A-Za-z0-9_]+\.tmp")  # an entry a stopped process was writing
TRUSTED = ("torch", "timm", "lgp_edge")  # packages whose code the key covers (their versions, lgp-edge's source)
PARTIAL_AGE_S = 24 * 3600
_warned: set[str] = set()


def cache_root() -> Path:
    """``$LGP_EDGE_CACHE``, else ``$XDG_CACHE_HOME/lgp-edge`` (``~/.cache/lgp-edge`` by default)."""
    env = os.environ.get("LGP_EDGE_CACHE")
    if env:
        return Path(env).expanduser()
    from lgp_edge.fileio import user_dir

    return user_dir("XDG_CACHE_HOME", ".cache", "set LGP_EDGE_CACHE to a folder (or LGP_EDGE_CACHE_MB=0)") / "lgp-edge"


def limit_bytes() -> int:
    """``$LGP_EDGE_CACHE_MB`` in bytes (0: the cache is off); a bad value is a UsageError (the command line checks it
    before any work)."""
    raw = os.environ.get("LGP_EDGE_CACHE_MB", "").strip()
    if not raw:
        return DEFAULT_MB * 2 ** 20
    try:
        mb = int(raw)
    except ValueError:
        mb = -1
    if mb < 0:
        raise UsageError(f"LGP_EDGE_CACHE_MB must be a whole number of megabytes, 0 or more (0 turns the exported-"
                         f"graph cache off), got '{raw}'")
    return mb * 2 ** 20


def graph_dir() -> Path:
    return cache_root() / "onnx"


@functools.cache
def _code_and_versions() -> str:
    """The tool versions the graph depends on and a digest of lgp-edge's own source, once per process."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {"torch": torch.__version__}
    for dist in ("onnx", "onnxscript", "onnx-ir", "onnxslim", "timm"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "absent"
    h = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for f in sorted(package.rglob("*.py")):
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return json.dumps({"versions": versions, "lgp_edge_source": h.hexdigest()}, sort_keys=True)


def _described(v: Any) -> Any:
    """An attribute's value as the key sees it: containers walked, a tensor by its bytes, anything else by repr
    (a repr that changes between processes only misses the cache)."""
    import torch

    if isinstance(v, (bool, int, float, str, type(None))):
        return v
    if isinstance(v, (tuple, list)):
        return [type(v).__name__, [_described(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", sorted(([repr(k), _described(x)] for k, x in v.items()), key=lambda kv: kv[0])]
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        return ["tensor", str(t.dtype), list(t.shape), hashlib.sha256(data).hexdigest()]
    return ["repr", type(v).__qualname__, repr(v)]


def _attributes(m: nn.Module) -> dict[str, Any]:
    """Every attribute of a module but its parameters, buffers and submodules (held in ``_``-named dicts)."""
    return {k: _described(v) for k, v in vars(m).items() if not k.startswith("_")}


def _trusted(module_name: Any) -> bool:
    return isinstance(module_name, str) and module_name.split(".")[0] in TRUSTED


def _package_dirs() -> tuple[str, ...]:
    """The folders of the trusted packages' code (imported already: a model of them exists)."""
    dirs = []
    for name in TRUSTED:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            dirs.append(os.path.join(os.path.dirname(os.path.realpath(file)), ""))
    return tuple(dirs)


def _class_trusted(cls: type, dirs: tuple[str, ...], seen: dict[str, bool]) -> bool:
    """``cls`` and its bases are torch, timm or lgp-edge classes whose methods are still their packages' own code
    (a ``timm.layers.Mlp.forward = ...`` patch by other code changes the graph and nothing the key covers; a patch
    made with ``functools.wraps`` carries timm's module name, so the code's file is what counts)."""
    for c in cls.__mro__[:-1]:  # object's slots are not functions
        if not _trusted(c.__module__):
            return False
        for v in vars(c).values():
            f = getattr(v, "__func__", v)  # classmethod / staticmethod
            if not inspect.isfunction(f):
                continue
            file = f.__code__.co_filename
            if file not in seen:
                seen[file] = os.path.realpath(file).startswith(dirs)
            if not (seen[file] and _trusted(f.__module__)):
                return False
    return True


def _cacheable(model: nn.Module) -> bool:
    """Only models made of torch, timm and lgp-edge classes, none with a forward replaced on the instance nor a
    method of its classes by other code: the key covers their code by versions and source; a user's class (or a
    patch) can change the graph with nothing else changing."""
    classes = {type(m) for m in model.modules()}
    dirs, seen = _package_dirs(), {}
    return all("forward" not in vars(m) for m in model.modules()) and all(_class_trusted(c, dirs, seen)
                                                                          for c in classes)


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    if any(getattr(torch_module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def graph_key(model: nn.Module, example: torch.Tensor, *, opset: int, dynamic_batch: bool) -> str | None:
    """The cache key of the shipped graph of ``model`` traced on ``example``; None when it must not be cached
    (the cache is off, the model has forward hooks, or code the key does not cover: ``_cacheable``)."""
    if limit_bytes() == 0 or _has_hooks(model) or not _cacheable(model):
        return None
    try:
        graph_dir()
    except UsageError as exc:  # no home directory to put it in: exported every time, said once
        _skip("has no folder", exc)
        return None
    try:
        return _digest(model, example, opset=opset, dynamic_batch=dynamic_batch)
    except Exception as exc:  # a module attribute the key cannot describe: exported every time, said once
        _skip("key cannot be computed for this model", exc)
        return None


def _digest(model: nn.Module, example: torch.Tensor, *, opset: int, dynamic_batch: bool) -> str:
    import torch

    h = hashlib.sha256()
    head = {"format": FORMAT, "opset": opset, "dynamic_batch": dynamic_batch, "input_shape": list(example.shape),
            "input_dtype": str(example.dtype)}
    h.update(json.dumps(head, sort_keys=True).encode() + _code_and_versions().encode())
    for name, m in model.named_modules():
        cls = type(m)
        desc = {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}", "training": m.training,
                "attributes": _attributes(m)}
        h.update(json.dumps(desc, sort_keys=True, default=repr).encode())
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def _skip(what: str, exc: BaseException) -> None:
    """A cache that cannot be used is said once per process; the export goes on without it."""
    if what not in _warned:
        _warned.add(what)
        log.warning("exported-graph cache %s (%s): exporting without it (set LGP_EDGE_CACHE to a writable folder, "
                    "or LGP_EDGE_CACHE_MB=0)", what, exc)


def load(key: str) -> Any | None:
    """The cached ONNX ModelProto of ``key``, or None (absent, damaged: then removed, unreadable)."""
    import onnx

    d = graph_dir()
    graph, sidecar = d / f"{key}.onnx", d / f"{key}.json"
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        data = graph.read_bytes()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.debug("exported-graph cache entry %s unreadable: %s", key, exc)
        return None
    if not isinstance(meta, dict) or meta.get("bytes") != len(data) or \
            meta.get("sha256") != hashlib.sha256(data).hexdigest():
        log.info("exported-graph cache entry %s does not match its record: exporting again", key)
        for p in (sidecar, graph):
            try:
                p.unlink(missing_ok=True)
            except OSError as exc:
                _skip(f"entry '{p}' cannot be removed", exc)
        return None
    try:
        os.utime(sidecar)  # recently used: evicted last
        _evict(d, limit_bytes())  # a limit lowered since the entries were stored holds from the next use on
    except OSError:
        pass
    log.debug("ONNX graph %s from the exported-graph cache", key)
    return onnx.load_from_string(data)


def store(key: str, proto: Any) -> None:
    """Keep ``proto`` under ``key`` (the graph, then its record), then evict down to the size limit."""
    limit = limit_bytes()
    try:
        data = proto.SerializeToString()
    except ValueError:  # over protobuf's 2 GB: not kept
        return
    if not limit or len(data) > limit:
        return
    from lgp_edge.fileio import write_atomic_all

    d = graph_dir()
    record = json.dumps({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "format": FORMAT})
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. HOME=/proc: ENOENT here is no folder to write in, not an entry removed meanwhile
        _skip(f"at '{d}' cannot be written", exc)
        return
    try:
        # the record renamed last: a graph without one is never read; both with the permissions of the user's umask
        write_atomic_all([(d / f"{key}.onnx", lambda tmp: Path(tmp).write_bytes(data)),
                          (d / f"{key}.json", lambda tmp: Path(tmp).write_text(record, encoding="utf-8"))])
        _evict(d, limit)
    except FileNotFoundError as exc:  # the folder or a file removed meanwhile (a 'cache clear', rm -r): not kept
        log.debug("exported-graph cache entry %s not kept: %s", key, exc)
    except (OSError, WriteFailed) as exc:
        _skip(f"at '{d}' cannot be written", exc)


def _evict(d: Path, limit: int) -> None:
    """Remove the least recently used entries (and any graph without its record) until the folder's entries fit,
    and what processes stopped a day ago or more left half-written."""
    now = time.time()
    for p in d.iterdir():
        if PARTIAL.fullmatch(p.name):
            try:
                st = p.lstat()
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > PARTIAL_AGE_S:
                    p.unlink()
            except FileNotFoundError:
                pass
    sized = _entry_sizes(d)
    total = sum(s.size for s in sized)
    for _, key, size, _ in sorted(sized):
        if total <= limit:
            break
        for suffix in (".json", ".onnx"):
            (d / f"{key}{suffix}").unlink(missing_ok=True)
        total -= size


def _regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(p.lstat().st_mode)
    except OSError:
        return False


def _entries(d: Path) -> dict[str, list[Path]]:
    """The cache's entries in ``d``: regular files named exactly as its graphs and records."""
    out: dict[str, list[Path]] = {}
    if d.is_dir():
        for p in d.iterdir():
            if ENTRY.fullmatch(p.name) and _regular(p):
                out.setdefault(p.name[:64], []).append(p)
    return out


class _Sized(NamedTuple):
    used: float  # its record's mtime (touched on every read); 0 for a graph whose record was never written
    key: str
    size: int  # bytes of its graph and record
    graph: bool  # its graph is there (a record can outlive it)


def _entry_sizes(d: Path) -> list[_Sized]:
    out = []
    for key, files in _entries(d).items():
        try:
            stats = {p.suffix: p.stat() for p in files}
        except FileNotFoundError:  # removed meanwhile (another process's eviction)
            continue
        used = stats[".json"].st_mtime if ".json" in stats else 0.0
        out.append(_Sized(used, key, sum(s.st_size for s in stats.values()), ".onnx" in stats))
    return out


def summary() -> dict[str, Any]:
    """Where the cache is, how many graphs it holds, their size and the limit (``lgp-edge cache info``)."""
    d = graph_dir()
    sized = _entry_sizes(d)
    limit = limit_bytes()
    return {"path": str(d), "graphs": sum(s.graph for s in sized), "bytes": sum(s.size for s in sized),
            "limit_bytes": limit, "enabled": limit > 0}


def clear() -> tuple[int, int]:
    """Remove every entry (and entry a stopped process left half-written: older than ``PARTIAL_AGE_S``, as a
    younger one may be another export's write in progress); nothing else in the folder. Returns (graphs removed,
    bytes freed)."""
    d = graph_dir()
    graphs = freed = 0
    if not d.is_dir():
        return 0, 0
    now = time.time()
    for p in d.iterdir():
        if (ENTRY.fullmatch(p.name) or PARTIAL.fullmatch(p.name)) and _regular(p):
            try:
                st = p.lstat()
                if PARTIAL.fullmatch(p.name) and now - st.st_mtime <= PARTIAL_AGE_S:
                    continue
                size = st.st_size
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot remove '{p}' from the exported-graph cache ({exc.strerror}): check that "
                                 f"folder's permissions and file system") from None
            freed += size
            graphs += p.name.endswith(".onnx") and not p.name.startswith(".")
    return graphs, freed
