"""The ancestry: a timm VisionTransformer, stock (DeiT, ViT) or one of the small variants registered here.

No pretrained ViT is reachable offline, so the small variants are trained by ``lgp-edge ancestry train``.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgp_edge.errors import CheckpointError, UsageError
from lgp_edge.fileio import json_loads
from lgp_edge.models.variants import SMALL_VARIANTS, close_names, variant_spec
from lgp_edge.specs import NORM_RANGES, AncestrySpec, is_integer, is_number, norm_value_ok

log = logging.getLogger(__name__)


# The small variants (SMALL_VARIANTS) are defined in variants.py, as numbers that need no torch.
def _register_small_variants() -> None:
    """Register the small variants with timm's registry (idempotent)."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    for name, cfg in SMALL_VARIANTS.items():
        if timm.is_model(name):
            continue

        def _factory(pretrained: bool = False, _cfg: dict = cfg, **kwargs: Any) -> VisionTransformer:
            if pretrained:
                raise UsageError("small lgp-edge variants have no pretrained weights: use 'lgp-edge ancestry train'")
            kwargs = {**_cfg, **{k: v for k, v in kwargs.items() if v is not None}}
            return VisionTransformer(**kwargs)

        _factory.__name__ = name
        _factory.__module__ = __name__
        register_model(_factory)


def known_names() -> list[str]:
    import timm

    _register_small_variants()
    return sorted(set(timm.list_models("vit_*") + timm.list_models("deit_*") + list(SMALL_VARIANTS)))


def check_name(name: str, unknown: str = "unknown ancestry '{name}'") -> None:
    """UsageError ``unknown`` (formatted with ``name``) plus close matches when timm has no such ViT."""
    names = known_names()
    if name not in names:
        raise UsageError(unknown.format(name=name) + close_names(name, names, "; see timm.list_models('vit_*')"))


def spec_of(model: nn.Module, name: str, checkpoint: str | None) -> AncestrySpec:
    """Read an AncestrySpec off a timm VisionTransformer."""
    pe = model.patch_embed
    img = pe.img_size[0] if isinstance(pe.img_size, (tuple, list)) else pe.img_size
    patch = pe.patch_size[0] if isinstance(pe.patch_size, (tuple, list)) else pe.patch_size
    blk = model.blocks[0]
    return AncestrySpec(
        name=name,
        checkpoint=checkpoint,
        img_size=int(img),
        in_chans=int(pe.proj.in_channels),
        num_classes=int(model.num_classes),
        embed_dim=int(model.embed_dim),
        depth=len(model.blocks),
        num_heads=int(blk.attn.num_heads),
        patch_size=int(patch),
        mlp_ratio=blk.mlp.fc1.out_features / model.embed_dim,
    )


def _check_supported(model: nn.Module, name: str, role: str = "ancestry") -> None:
    """UsageError for a timm ViT whose layout the distillation, weight selection or stitching cannot take
    (``role`` "--model": the per-block latency model of ``profile --model``)."""
    from timm.layers import Mlp, PatchEmbed
    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise UsageError(f"{role} '{name}' is not a timm VisionTransformer; pick a vit_* or deit_* model")
    if getattr(model, "dist_token", None) is not None:  # its 2 prefix tokens: the features have one token more
        plain = name.replace("_distilled", "")
        if role == "--model":
            raise UsageError(f"--model '{name}' has a distillation token, which the per-block latency model of "
                             f"profile --model does not take: profile {plain if plain != name else 'a DeiT'} (the "
                             "same blocks); 'lgp-edge export --model' exports it, without a measured latency")
        raise UsageError(f"{role} '{name}' has a distillation token, which lgp-edge does not distil or stitch; "
                         f"use the non-distilled {plain if plain != name else 'DeiT'}")
    if getattr(model, "cls_token", None) is None or model.reg_token is not None or model.global_pool != "token" \
            or model.num_prefix_tokens != 1:
        raise UsageError(f"{role} '{name}' must use a class token and token pooling (DeiT/ViT style)")
    if model.no_embed_class or model.dynamic_img_size or getattr(model, "has_class_token", True) is False:
        raise UsageError(f"{role} '{name}' uses an embedding layout lgp-edge does not stitch")
    if type(model.patch_embed) is not PatchEmbed:  # a CNN stem (R50+ViT hybrids): the auxiliary models have none
        raise UsageError(f"{role} '{name}' embeds patches with a {type(model.patch_embed).__name__} (a CNN stem); "
                         "pick a plain patch-embedding ViT such as vit_base_patch16_224")
    odd = next((b for b in model.blocks if type(b) is not Block or type(b.mlp) is not Mlp), None)
    if odd is not None:  # parallel blocks, gated (SwiGLU) MLPs: no per-block attention/MLP taps or MLP selection
        part = type(odd).__name__ if type(odd) is not Block else f"{type(odd.mlp).__name__} MLP"
        raise UsageError(f"{role} '{name}' has {part} blocks; lgp-edge distils ViTs of plain attention + MLP "
                         "blocks (vit_*/deit_* such as vit_base_patch16_224)")
    for b in model.blocks if role != "--model" else ():  # a LayerNorm inside attention or the MLP: the
        # auxiliary models' blocks have none (profile --model times the blocks as they are)
        for part, m in (("QK-norm", getattr(b.attn, "q_norm", None)),
                        ("a normalised attention output", getattr(b.attn, "norm", None)),
                        ("a normalised MLP hidden layer", getattr(b.mlp, "norm", None))):
            if m is not None and not isinstance(m, nn.Identity):
                raise UsageError(f"{role} '{name}' has blocks with {part}, which lgp-edge's auxiliary models do not "
                                 "have; pick a ViT of plain attention + MLP blocks (vit_*/deit_* such as "
                                 "vit_base_patch16_224)")


def weights_file(path: str | Path) -> Path:
    """The weights file of ``path``: the file itself, or in a directory its ``ancestry.safetensors`` (``ancestry
    train``) else ``model.safetensors`` (a Hugging Face snapshot of a timm model)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("ancestry.safetensors", "model.safetensors"):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"folder '{path}' holds neither ancestry.safetensors ('lgp-edge ancestry train') nor "
                          "model.safetensors (a Hugging Face snapshot); give the weights file")


def is_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file (a zip, or a pickle)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` that also lets ``argparse.Namespace`` through: the ``args`` that timm's
    CheckpointSaver writes into ``model_best.pth.tar``. torch's warnings about the file (a raw pickle's protocol)
    are not the user's business: the file loads, or the refusal says why."""
    import argparse
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
        with torch.serialization.safe_globals([argparse.Namespace]):  # allowed for this load only
            return torch.load(str(path), map_location="cpu", weights_only=True)


# what a weights-only torch checkpoint's pickle names (torch's tensor rebuilders, storages and dtypes, and these)
_WEIGHT_GLOBALS = ("collections.OrderedDict", "collections.Counter", "builtins.set", "builtins.frozenset",
                   "builtins.bytearray", "builtins.complex", "_codecs.encode", "argparse.Namespace")


def _pickled_globals(path: Path) -> list[str]:
    """The classes and functions (``module.name``) the pickle of ``path`` names, a raw pickle's or a torch zip's
    ``data.pkl``, read with ``pickletools``: nothing is imported or run. For naming what torch refused when its
    message does not (a raw pickle of protocol 4 is refused at its first frame)."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(member) if member else b""
        else:
            with open(path, "rb") as f:
                data = f.read(64 << 20)
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return []
    names: list[str] = []
    strings: list[str] = []  # the strings pushed so far: STACK_GLOBAL takes the last two
    memo: dict[int, str | None] = {}
    top: str | None = None  # the string on top of the stack, if the last push was one
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):  # a legacy torch file holds several pickles, then raw storage bytes
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):  # the stack is unchanged
                    memo[len(memo) if op.name == "MEMOIZE" else int(arg)] = top
                    continue
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                top = (arg if isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name) else
                       memo.get(int(arg)) if op.name in ("GET", "BINGET", "LONG_BINGET") else None)
                if top is not None:
                    strings.append(top)
    except Exception:  # noqa: BLE001 (the end of what can be read; what was found is the answer)
        pass
    return names


def _refused_global(path: Path, message: str) -> str | None:
    """The Python object of ``path`` that a weights-only load refuses: the first its pickle names that is none of
    torch's and no weights-only checkpoint holds (``posix.system`` rather than the ``torch.storage`` function a raw
    pickle of tensors also names), else the one torch's message names (its wording changes: "Unsupported global:
    GLOBAL x.y", "Trying to load unsupported GLOBAL x.y whose module x is blocked")."""
    found = next((n for n in _pickled_globals(path) if not n.startswith("torch.") and n not in _WEIGHT_GLOBALS), None)
    m = re.search(r"GLOBAL ([\w.]+)", message)
    return found or (m.group(1) if m else None)


def _strip_prefixes(key: str) -> str:
    """``key`` without the wrappers' prefixes: ``module.`` (DistributedDataParallel), ``_orig_mod.`` (torch.compile)."""
    while key.startswith(("module.", "_orig_mod.")):
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
    return key


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file, or a timm/torch checkpoint loaded with ``weights_only=True``."""
    path = weights_file(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; train one with 'lgp-edge ancestry train'")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"checkpoint '{path}' is not a readable safetensors file ({exc})") from None
        return {_strip_prefixes(k): v for k, v in state.items()}
    if not is_torch_file(path):
        raise CheckpointError(f"checkpoint '{path}' is neither a safetensors file nor a torch checkpoint (a zip "
                              "or pickle file); give the weights file")
    try:
        obj = _torch_load(path)
    except Exception as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        refused = _refused_global(path, text)
        detail = re.search(r"Unsupported [^\n.]*", text)  # torch's reason; its advice (weights_only=False) is not ours
        what = (f"it holds a Python object ({refused}), not only tensors" if refused else
                f"torch cannot read it as weights only ({detail.group(0)[:120] if detail else type(exc).__name__})")
        raise CheckpointError(f"checkpoint '{path}' cannot be loaded safely (weights_only=True; a pickle of "
                              f"arbitrary objects is never loaded): {what}; lgp-edge loads only weights: save the "
                              "state dict alone (torch.save(model.state_dict(), FILE)) or as safetensors") from None
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            if key in ("state_dict_ema", "model_ema"):
                log.info("checkpoint %s: using its EMA weights ('%s'), not the raw training weights", path, key)
            obj = obj[key]
            break
    state = {_strip_prefixes(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} \
        if isinstance(obj, dict) else {}
    if not state:
        raise CheckpointError(f"checkpoint '{path}' holds no state dict (no tensors under state_dict_ema, "
                              "model_ema, state_dict, model or at the top); give the weights file")
    return state


def shape_overrides(model: nn.Module, state: dict[str, Any]) -> dict[str, int]:
    """num_classes, in_chans and img_size of the checkpoint ``state`` where they differ from ``model``'s."""
    out: dict[str, int] = {}
    head = state.get("head.weight")
    if head is not None and head.ndim == 2 and head.shape[0] != getattr(model, "num_classes", None):
        out["num_classes"] = int(head.shape[0])
    proj = state.get("patch_embed.proj.weight")
    pe = getattr(model, "patch_embed", None)
    if proj is not None and proj.ndim == 4 and pe is not None and proj.shape[1] != pe.proj.in_channels:
        out["in_chans"] = int(proj.shape[1])
    pos = state.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if pos is not None and pos.ndim == 3 and own is not None and pe is not None and pos.shape[1] != own.shape[1]:
        prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
        grid = math.isqrt(int(pos.shape[1]) - prefix)
        if grid * grid == int(pos.shape[1]) - prefix:
            out["img_size"] = grid * int(pe.patch_size[0])
    return out


def recorded_shapes(name: str, meta: dict[str, Any] | None) -> dict[str, int]:
    """num_classes, in_chans, img_size of the model ``ancestry train`` built (its ``ancestry.json``, ``meta``, when
    written for ``name``); empty when there is none."""
    meta = meta or {}
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) and meta.get("name") == name else {}
    return {k: v for k, v in spec.items()
            if k in ("num_classes", "in_chans", "img_size") and type(v) is int and 0 < v <= 100_000}


def load_error(exc: RuntimeError) -> str:
    """The line of a ``load_state_dict`` error that says what does not fit."""
    lines = str(exc).strip().splitlines()
    detail = next((ln.strip() for ln in lines if "size mismatch" in ln or "Missing" in ln or "Unexpected" in ln),
                  lines[0] if lines else "")
    return detail[:200]


def create_ancestry(name: str, *, checkpoint: str | Path | None = None, pretrained: bool = False,
                    num_classes: int | None = None, in_chans: int | None = None,
                    img_size: int | None = None, role: str = "ancestry") -> tuple[nn.Module, AncestrySpec]:
    """Build the ancestry ViT and its spec; load weights from ``checkpoint`` when given. The classes, channels
    and image size not given here are those of the checkpoint (its ``ancestry.json``, else its tensors).
    ``role``: what the refusals call the model ("--model" for ``profile --model``)."""
    import timm

    _register_small_variants()
    check_name(name)
    given = {k: v for k, v in dict(num_classes=num_classes, in_chans=in_chans, img_size=img_size).items()
             if v is not None}
    meta = read_ancestry_dir(checkpoint) if checkpoint is not None else None
    if meta is not None and checkpoint is not None:
        check_recorded_weights(checkpoint, meta)
    state = read_state_dict(checkpoint) if checkpoint is not None else None
    args = snapshot_model_args(name, meta)
    kwargs = {**args, **recorded_shapes(name, meta), **given}
    try:
        model = timm.create_model(name, pretrained=pretrained and checkpoint is None, **kwargs)
    except (RuntimeError, OSError) as exc:
        raise UsageError(f"could not fetch pretrained weights for '{name}' ({exc}); "
                         "pass --ancestry-checkpoint FILE") from None
    except (TypeError, ValueError, AssertionError) as exc:
        if not args:
            raise
        raise model_args_refusal(name, checkpoint, exc) from None
    _check_supported(model, name, role)
    if state is None:
        return model, spec_of(model, name, None)
    found = shape_overrides(model, state)
    if "num_classes" in found and "num_classes" in given:
        raise CheckpointError(
            f"checkpoint '{checkpoint}' has a {found['num_classes']}-class head but the data has {num_classes} "
            f"classes; fine-tune it on the data first ('lgp-edge ancestry train --ancestry {name} "
            f"--initial-checkpoint {checkpoint} --data DATA --out DIR') and use DIR")
    found = {k: v for k, v in found.items() if k not in given}
    if found:  # a checkpoint fine-tuned with its own classes, channels or image size
        log.info("ancestry %s: built as the checkpoint's tensors say (%s)", name,
                 ", ".join(f"{k} {v}" for k, v in found.items()))
        model = timm.create_model(name, pretrained=False, **{**kwargs, **found})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        other = (meta or {}).get("name")
        hint = (f"; its ancestry.json (or config.json) says it is a '{other}': pass --ancestry {other}"
                if isinstance(other, str) and other != name else "")
        raise CheckpointError(f"checkpoint '{checkpoint}' does not fit ancestry '{name}': {load_error(exc)}{hint}") \
            from None
    return model, spec_of(model, name, str(checkpoint))


def ancestry_spec(name: str) -> AncestrySpec:
    """The spec ``create_ancestry(name)`` gives (no checkpoint), for planning: nothing is allocated or initialised
    (a small variant's from its numbers, a timm model's built on the meta device), with the same refusals (an
    unknown name, a ViT lgp-edge does not distil)."""
    small = variant_spec(name)
    if small is not None:
        return small
    import timm

    _register_small_variants()
    check_name(name)
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception as exc:  # noqa: BLE001 (a model that cannot be built on the meta device: built for real)
        log.debug("%s cannot be built on the meta device (%s); building it to read its sizes", name, exc)
        return create_ancestry(name)[1]
    _check_supported(model, name)
    return spec_of(model, name, None)


def hub_config(folder: Path) -> dict[str, Any] | None:
    """A Hugging Face snapshot of a timm model (``config.json`` beside ``model.safetensors``) as the parts of an
    ``ancestry.json`` it holds: the architecture's name and the mean/std its ``pretrained_cfg`` says the model
    was trained with (a fine-tuned model's own); None when the folder is no such snapshot."""
    f = folder / "config.json"
    if not (f.is_file() and (folder / "model.safetensors").is_file()):
        return None
    try:
        cfg = json_loads(f.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"'{f}' is damaged ({str(exc)[:120]}); restore it or delete it") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        return None
    out: dict[str, Any] = {"name": cfg["architecture"], "source": str(f)}
    if cfg.get("model_args") is not None:  # what timm's save_for_hf records the model was created with
        out["model_args"] = _model_args(cfg["model_args"], f)
    pre = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    transform = {k: pre[k] for k in ("architecture", "tag", "interpolation", "crop_mode")
                 if isinstance(pre.get(k), str)}
    pct = pre.get("crop_pct")
    if isinstance(pct, (int, float)) and not isinstance(pct, bool) and 0 < pct <= 1:
        transform["crop_pct"] = float(pct)
    if transform:  # the evaluation transform it records (an export describes it to the app)
        out["pretrained_cfg"] = transform
    mean, std = pre.get("mean"), pre.get("std")
    if mean is None and std is None:
        return out
    if not (isinstance(mean, list) and isinstance(std, list) and 0 < len(mean) == len(std)
            and all(norm_value_ok("mean", v) for v in mean) and all(norm_value_ok("std", v) for v in std)):
        raise CheckpointError(f"'{f}' has pretrained_cfg mean {_json_value(mean)} and std {_json_value(std)}: one "
                              f"number per input channel each expected, mean in {NORM_RANGES['mean']} and std in "
                              f"{NORM_RANGES['std']} (of pixel values scaled to 0..1); correct it")
    out["preprocess"] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return out


def _model_args(args: Any, f: Path) -> dict[str, Any]:
    """A snapshot's ``model_args`` (what its model was built with beyond the stock one, e.g. ``global_pool``,
    ``reg_tokens``, ``init_values``): a JSON object of named arguments. Whether the model takes them is timm's to
    say when it is built (a refusal names them)."""
    if not isinstance(args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in args):
        raise CheckpointError(f"'{f}' has model_args {_json_value(args)}: a JSON object of argument names expected; "
                              "correct it")
    return dict(args)


def snapshot_model_args(name: str, meta: dict[str, Any] | None) -> dict[str, Any]:
    """The ``model_args`` of a Hugging Face snapshot of ``name`` (its config.json, read into ``meta``), else {}:
    the model is built with them, so that its weights mean what they were trained as (its pooling, tokens...)."""
    return dict(meta.get("model_args") or {}) if meta is not None and meta.get("name") == name else {}


def model_args_refusal(name: str, checkpoint: Any, exc: BaseException) -> CheckpointError:
    """The one line for a snapshot whose ``model_args`` timm refuses to build ``name`` with."""
    why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return CheckpointError(f"timm model '{name}' cannot be built with the model_args of {checkpoint}'s config.json: "
                           f"{why}")


def shipped_ancestry_dir(name: str) -> Path | None:
    """The trained weights of a small variant that ship inside the package (``lgp_edge/data/ancestry/NAME``),
    written by ``benchmarks/ship_ancestry.py`` from an ``ancestry train`` run; None when there are none."""
    d = Path(__file__).resolve().parent.parent / "data" / "ancestry" / name
    return d if (d / "ancestry.safetensors").is_file() and (d / "ancestry.json").is_file() else None


def default_checkpoint(name: str, checkpoint: str | None, *, pretrained: bool = False,
                       allow_random: bool = False) -> str | None:
    """``checkpoint`` as given, else the shipped weights of ``name`` when they exist (not with ``pretrained``
    or ``allow_random``, which ask for other weights)."""
    if checkpoint is not None or pretrained or allow_random:
        return checkpoint
    shipped = shipped_ancestry_dir(name)
    if shipped is not None:
        log.info("ancestry %s: using the weights shipped with lgp-edge (%s)", name, shipped)
        return str(shipped)
    return None


def check_recorded_weights(checkpoint: str | Path, meta: dict[str, Any]) -> None:
    """The weights beside an ``ancestry.json`` that records their sha256 (``ancestry train`` does) must be those:
    a changed or damaged file was loaded, and a pool built from it recorded the json's top-1."""
    want = meta.get("weights_sha256")
    if want is None:
        return
    from lgp_edge.fileio import check_sha256

    f = weights_file(checkpoint)
    if f.name == "ancestry.safetensors":
        check_sha256(f, want, recorded_in="the ancestry.json beside it", fix="restore it or train the ancestry again")


def read_ancestry_dir(path: str | Path) -> dict[str, Any] | None:
    """The ``ancestry.json`` written beside an ancestry checkpoint by ``ancestry train``, if any; else what a
    Hugging Face snapshot's ``config.json`` says of the same things (``hub_config``)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    meta = folder / "ancestry.json"
    if not meta.is_file():
        return hub_config(folder)
    try:
        data = json_loads(meta.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"'{meta}' is damaged ({str(exc)[:120]}); restore it or delete it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"'{meta}' holds no JSON object; restore it or delete it")
    problem = ancestry_meta_problem(data)
    if problem:
        raise CheckpointError(f"'{meta}' is damaged: it has {problem}; restore it or delete it")
    return data




def _json_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _record_problem(d: dict[str, Any], prefix: str = "") -> str | None:
    """A top-1 outside 0..100 or a validation image count that is not a positive integer, in ``d`` or the runs it
    was warm-started from (``initial_checkpoint``)."""
    top1, n = d.get("top1"), d.get("val_images")
    if top1 is not None and not (is_number(top1) and 0 <= top1 <= 100):
        return f"{prefix}top1 {_json_value(top1)} (a percentage in 0..100 expected)"
    if n is not None and not (is_integer(n) and n > 0):
        return f"{prefix}val_images {_json_value(n)} (a positive integer expected)"
    before = d.get("initial_checkpoint")
    if before is not None and not isinstance(before, dict):
        return f"{prefix}initial_checkpoint {_json_value(before)} (an object expected)"
    return _record_problem(before, f"{prefix}initial_checkpoint.") if before else None


def _preprocess_problem(pre: Any, spec: dict[str, Any]) -> str | None:
    """Normalisation constants that are not finite (std > 0), one per input channel, and one unique class name per
    class of the head, as far as the file itself says how many channels and classes there are."""
    if not isinstance(pre, dict):
        return f"preprocess {_json_value(pre)} (an object expected)"
    for f in ("img_size", "in_chans"):
        if f in pre and not (is_integer(pre[f]) and 0 < pre[f] <= 100_000):
            return f"preprocess.{f} {_json_value(pre[f])} (a positive integer expected)"
    chans = pre.get("in_chans", spec.get("in_chans"))
    for f in ("mean", "std"):
        values = pre.get(f)
        if values is None:
            continue
        if not isinstance(values, list) or not values:
            return f"preprocess.{f} {_json_value(values)} (a list of one number per input channel expected)"
        if is_integer(chans) and len(values) != chans:
            return f"preprocess.{f} has {len(values)} values for {chans} input channel(s)"
        for i, v in enumerate(values):
            if not norm_value_ok(f, v):
                return (f"preprocess.{f}[{i}] {_json_value(v)} (a number in {NORM_RANGES[f]}, on pixel values "
                        "scaled to 0..1, expected)")
    mean, std = pre.get("mean"), pre.get("std")
    if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
        return "preprocess.mean and preprocess.std of different lengths (one value per input channel each expected)"
    labels = pre.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, list) or not labels:
        return f"preprocess.labels {_json_value(labels)} (a list of class names expected)"
    seen: set[str] = set()
    for i, name in enumerate(labels):
        if not isinstance(name, str) or not name.strip():
            return f"preprocess.labels[{i}] {_json_value(name)} (a class name expected)"
        if name in seen:
            return f"preprocess.labels names {name!r} twice (one name per class expected)"
        seen.add(name)
    classes = spec.get("num_classes")
    if is_integer(classes) and len(labels) != classes:
        return f"preprocess.labels has {len(labels)} names for {classes} classes (spec.num_classes)"
    return None


def ancestry_meta_problem(data: dict[str, Any]) -> str | None:
    """Why an ``ancestry.json`` cannot be taken as ``ancestry train`` wrote it (None when it can): what it says
    reaches the pool, the export manifest, EMBEDDING.md and an app's preprocessing."""
    for f in ("name", "data"):
        if data.get(f) is not None and not (isinstance(data[f], str) and data[f]):
            return f"{f} {_json_value(data[f])} (a name expected)"
    spec = data.get("spec")
    if spec is not None and not isinstance(spec, dict):
        return f"spec {_json_value(spec)} (an object expected)"
    sha = data.get("weights_sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        return f"weights_sha256 {_json_value(sha)} (a hex SHA-256 expected)"
    problem = _record_problem(data)
    if problem is None and "preprocess" in data:
        problem = _preprocess_problem(data["preprocess"], spec or {})
    return problem
