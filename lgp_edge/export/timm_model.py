"""``lgp-edge export --model NAME --checkpoint FILE``: a timm ViT through the same validated export.

Any timm ViT (``vit_*``, ``deit_*``, the small variants lgp-edge registers): the ancestry of a pool, or a
user's own fine-tuned model. The weights come from a safetensors file or a timm/torch checkpoint read with
``weights_only=True`` (never a pickle of arbitrary objects), an ``ancestry train`` output directory, or a
Hugging Face snapshot folder. The classifier size, input channels and image size are read off the checkpoint's
tensors, so a model fine-tuned with another head or resolution loads as it was trained.

Preprocessing (mean/std, labels), first match wins: ``--data`` (its class names; an image folder normalised
as the model was trained, below), the ``ancestry.json`` that ``ancestry train`` writes beside its checkpoint,
a snapshot's ``config.json`` (its mean/std), the model's timm ``pretrained_cfg`` (ImageNet class names for a
1000-class head). Validation and int8 calibration images
come from ``--data``, else the dataset named in ``ancestry.json``; with neither, validation runs on
synthetic images (a numerical check only, and the manifest says so) and int8 is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lgp_edge.errors import CheckpointError, UsageError
from lgp_edge.models.ancestry import shape_overrides as _shape_overrides
from lgp_edge.progress import counted
from lgp_edge.specs import ModelRecord, PreprocessSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A timm model with its weights, and what the export needs to know about it."""

    model: nn.Module  # eval mode, fp32
    record: ModelRecord
    preprocess: PreprocessSpec
    data: str  # validation and calibration dataset ("synthetic" when none is known)
    info: dict[str, Any]  # the manifest's "model" entry beyond the record: preprocessing source, timm config


def check_model_name(name: str) -> None:
    from lgp_edge.models.ancestry import check_name

    check_name(name, unknown="--model '{name}' is not a timm ViT lgp-edge knows")


def build_model(name: str, checkpoint: Path) -> nn.Module:
    """The timm model ``name`` shaped like ``checkpoint`` and loaded from it (strict), eval mode."""
    import timm

    from lgp_edge.models.ancestry import (
        _register_small_variants,
        model_args_refusal,
        read_ancestry_dir,
        read_state_dict,
        snapshot_model_args,
    )

    _register_small_variants()
    check_model_name(name)
    checkpoint = Path(checkpoint)
    meta = read_ancestry_dir(checkpoint) if (checkpoint.is_dir() or checkpoint.suffix == ".safetensors") else None
    args = snapshot_model_args(name, meta)  # a snapshot's: its pooling, tokens, LayerScale... as trained
    state = read_state_dict(checkpoint)
    try:
        model = timm.create_model(name, pretrained=False, **args)
        _check_exportable(model, name)
        kwargs = _shape_overrides(model, state)
        if kwargs:
            model = timm.create_model(name, pretrained=False, **{**args, **kwargs})
    except (TypeError, ValueError, AssertionError) as exc:  # arguments the model refuses together
        if args:
            raise model_args_refusal(name, checkpoint, exc) from None
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"timm model '{name}' cannot be built as checkpoint '{checkpoint}' is shaped ({why}); "
                              "export a checkpoint of that model") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in lines if "size mismatch" in ln or "Missing" in ln or "Unexpected" in ln),
                      lines[0] if lines else "")
        raise CheckpointError(f"checkpoint '{checkpoint}' does not fit timm model '{name}': {detail[:200]}") from None
    return model.eval()


def _check_exportable(model: nn.Module, name: str) -> None:
    """UsageError for a ``vit_*`` name that is no timm VisionTransformer (Eva: rotary embeddings, which the ONNX
    exporter stops on mid-export) or one with a CNN stem (its image channels and size are not the patch
    embedding's, which the checkpoint's shape and the preprocessing are read from)."""
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise UsageError(f"--model '{name}' is a timm {type(model).__name__}, not a VisionTransformer; export --model "
                         "takes timm VisionTransformers (vit_*/deit_* such as deit_small_patch16_224)")
    if type(model.patch_embed) is not PatchEmbed:
        raise UsageError(f"--model '{name}' embeds patches with a {type(model.patch_embed).__name__} (a CNN stem), "
                         "which export --model does not take; pick a plain patch-embedding ViT such as "
                         "vit_small_patch16_224")


def _model_size(model: nn.Module) -> tuple[int, int | None, int]:
    """(params, fvcore FLOPs for a plain class-token ViT else None, blocks)."""
    from lgp_edge.models.descendant import count_params
    from lgp_edge.models.plan import vit_flops

    pe, blocks = model.patch_embed, len(getattr(model, "blocks", ()))
    plain = (getattr(model, "cls_token", None) is not None and getattr(model, "global_pool", "") == "token"
             and getattr(model, "reg_token", None) is None and getattr(model, "num_prefix_tokens", 1) == 1
             and getattr(model, "dist_token", None) is None and blocks > 0)  # one class token, one head
    flops = vit_flops(img_size=int(pe.img_size[0]), patch_size=int(pe.patch_size[0]), in_chans=pe.proj.in_channels,
                      embed_dim=int(model.embed_dim), depth=blocks, num_classes=int(model.num_classes),
                      mlp_ratio=model.blocks[0].mlp.fc1.out_features / model.embed_dim) if plain else None
    return count_params(model), flops, blocks


def _timm_preprocess(model: nn.Module, name: str, own: dict[str, Any] | None = None) -> PreprocessSpec:
    """Mean/std from ``own`` (a snapshot's config.json) or the model's pretrained_cfg; ImageNet names for a
    1000-class head, else class_<i>."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, n = int(model.patch_embed.proj.in_channels), int(model.num_classes)
    mean, std = tuple((own or cfg).get("mean", ())), tuple((own or cfg).get("std", ()))
    if len(mean) != chans or len(std) != chans:
        raise UsageError(f"timm model '{name}' takes {counted(chans, 'channel')} but its "
                         f"{'config.json' if own else 'pretrained_cfg'} normalises {len(mean)}; pass --data to give "
                         "the dataset it was trained on")
    if n == 1000 and cfg.get("num_classes") == 1000:
        from timm.data import ImageNetInfo

        labels = tuple(ImageNetInfo().index_to_description(i) for i in range(n))
    else:
        labels = tuple(f"class_{i}" for i in range(n))
    return PreprocessSpec(img_size=int(model.patch_embed.img_size[0]), in_chans=chans, mean=mean, std=std,
                          labels=labels)


def _resolve_preprocess(model: nn.Module, name: str, data: str | None,
                        meta: dict[str, Any] | None) -> tuple[PreprocessSpec, str, str]:
    """(preprocessing, where it came from, validation dataset); see the module docstring for the order."""
    from lgp_edge.datasets import check_data_name, check_recorded_labels, model_norm, open_data

    size, chans, n = int(model.patch_embed.img_size[0]), int(model.patch_embed.proj.in_channels), model.num_classes
    data = data or (meta or {}).get("data")
    if data is not None and data != "synthetic":
        check_data_name(data)
        norm = model_norm(model, name, meta) if data.startswith("imagefolder:") else None  # as it was trained
        info = open_data(data, img_size=size, in_chans=chans, num_classes=n, norm=norm).info
        if info.num_classes != n:
            raise UsageError(f"--data {data} has {info.num_classes} classes; the checkpoint's head has {n}")
        check_recorded_labels(info, meta)  # the head's own order
        return PreprocessSpec(img_size=size, in_chans=chans, mean=info.preprocess.mean, std=info.preprocess.std,
                              labels=info.preprocess.labels), f"dataset {data}", data
    pre = (meta or {}).get("preprocess") or {}
    if "labels" in pre:  # an ancestry train run's
        norm = counted(len(pre.get("mean", ())), "input channel")
        found = (f"names {len(pre['labels'])} classes but the checkpoint's head has {n}" if len(pre["labels"]) != n
                 else f"normalises {norm} but the checkpoint takes {chans}"
                 if len(pre.get("mean", ())) != chans or len(pre.get("std", ())) != chans else "")
        if found:
            raise CheckpointError(f"the ancestry.json beside the checkpoint {found}: it was written for other weights; "
                                  "restore it or delete it")
        return PreprocessSpec(img_size=size, in_chans=chans, mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                              labels=tuple(pre["labels"])), "ancestry.json beside the checkpoint", "synthetic"
    if "mean" in pre:  # a Hugging Face snapshot's config.json: the normalisation it was trained with
        return _timm_preprocess(model, name, pre), "config.json beside the checkpoint", "synthetic"
    return _timm_preprocess(model, name), "timm pretrained_cfg", "synthetic"


def load_model(name: str, checkpoint: Path, data: str | None) -> LoadedModel:
    """``name`` with the weights of ``checkpoint``, its preprocessing and record (see the module docstring)."""
    from lgp_edge.fileio import sha256_file
    from lgp_edge.models.ancestry import read_ancestry_dir, weights_file

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise CheckpointError(f"checkpoint '{checkpoint}' does not exist")
    model = build_model(name, checkpoint)
    meta = read_ancestry_dir(checkpoint) if (checkpoint.is_dir() or checkpoint.suffix == ".safetensors") else None
    pre, source, data_name = _resolve_preprocess(model, name, data, meta)
    weights = weights_file(checkpoint)
    params, flops, blocks = _model_size(model)
    same_data = meta is not None and meta.get("data") == data_name and data_name != "synthetic"
    record = ModelRecord(key=f"timm:{name}", name=name, checkpoint=str(checkpoint.resolve()),
                         checkpoint_sha256=sha256_file(weights), params=params, flops=flops, blocks=blocks,
                         top1=meta.get("top1") if same_data else None,
                         top1_data=data_name if same_data else None)
    # a snapshot's own (its config.json: the evaluation transform it was fine-tuned with), else the stock model's
    # (its input_size is the stock one, not this checkpoint's: left out)
    cfg = (meta or {}).get("pretrained_cfg") or getattr(model, "pretrained_cfg", None) or {}
    info = {"source": "timm", "data": data_name, "synthetic_data": data_name == "synthetic",
            "preprocess_from": source,
            "timm_pretrained_cfg": {k: cfg[k] for k in ("architecture", "tag", "interpolation", "crop_pct",
                                                        "crop_mode", "mean", "std") if k in cfg}}
    return LoadedModel(model=model, record=record, preprocess=pre, data=data_name, info=info)


def model_memory_mb(model: nn.Module, params: int, precision: str, batch: int) -> float | None:
    """What ``select`` would charge the model (``memory_mb`` of a descendant): its weights plus the widest block's
    live activations at the precision's bytes per value (int8: the blocks' linear weights at 1 byte, the rest and
    every activation fp32). None for a block layout that estimate does not know (no ``attn.qkv`` / ``mlp.fc1``)."""
    from lgp_edge.models.plan import block_live_values
    from lgp_edge.specs import BYTES_PER_VALUE, MB

    blocks = list(getattr(model, "blocks", ()))
    try:
        tokens = int(model.patch_embed.num_patches) + int(getattr(model, "num_prefix_tokens", 1))
        live = max(block_live_values(tokens, b.attn.qkv.in_features, int(b.attn.num_heads), b.mlp.fc1.out_features)
                   for b in blocks)
    except (AttributeError, TypeError, ValueError):  # another block layout, or no blocks
        return None
    if precision == "int8":  # as the int8 exports quantize: the blocks' linear layers
        q = sum(m.weight.numel() for b in blocks for m in b.modules() if isinstance(m, nn.Linear))
        return (q + (params - q) * 4 + live * batch * 4) / MB
    b = BYTES_PER_VALUE[precision]  # type: ignore[index]
    return (params * b + live * batch * b) / MB


def measured_latency(key: str, req: Any, params: int) -> Any:
    """The measured latency of ``key`` (``profile --model``) for the profile, or None: by the rules a pool's
    descendants are read by (the recent runs of this machine for target 'cpu', at the profile's threads, else the
    count most runs have; noisy ones left out; their median). The store's ``timm:NAME`` is the stock model (its
    default input size, channels and head); a checkpoint of the same name with ``params`` parameters that differ is
    another network, whose latency that is not (a 112-px 10-class checkpoint got the 224-px 1000-class model's
    57.9 ms, 8x what it takes)."""
    from lgp_edge.models.ancestry import create_ancestry
    from lgp_edge.models.descendant import count_params
    from lgp_edge.profiling.predict import RECENT_RUNS, compared_runs, this_host
    from lgp_edge.select import open_store, profile_runtime

    target, runtime = req.target, profile_runtime(req.profile, req.target)
    store = open_store(req.store, "the model's latency is unknown (measure it with 'lgp-edge profile --model')")
    try:
        rows = store.records(target=target.name, runtime=runtime, precision=req.profile.precision,
                             source="measured", batch=req.profile.batch, recent=RECENT_RUNS, descendant_key=key)
    finally:
        store.close()
    if target.connection.kind == "local":
        rows = this_host(rows)
    _, found = compared_runs(rows, target, runtime, req.profile.threads)
    if not found:
        return None
    stock = count_params(create_ancestry(key.removeprefix("timm:"))[0])
    if stock != params:
        log.info("the stored latency of %s is the stock model's (%s params); this checkpoint's has %s: not used",
                 key, f"{stock:,}", f"{params:,}")
        return None
    return next(iter(found.values()))
