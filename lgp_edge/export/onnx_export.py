"""The one ONNX export of lgp-edge: a torch module to an ONNX file, for an app or for the profiler.

``export_onnx(model, example, path, opset=...)`` writes one of two kinds of file:

- the plain one (the default: the source of a switchable model's branches, which it rewires): the
  TorchScript exporter's graph as it is, constant-folded, with timm's fused attention (scaled dot-product
  attention) on from opset 17 and off below it; no simplification, no metadata.
- the shipped one (``ship=True``, what ``lgp-edge export`` writes and what the profiler times, so that a
  stored latency is the shipped model's; the TorchScript graph ran 5-12% faster in ONNX Runtime): opset 17 and
  above through the dynamo exporter (``torch.export``); below 17 the dynamo exporter cannot lower
  LayerNormalization and silently keeps opset 18, so older opsets (TensorRT 8.2: <= 13) use the TorchScript
  exporter with fused attention off, which decomposes LayerNorm into ReduceMean/Sub/Pow/Sqrt/Div; where dynamo
  keeps a newer opset than asked at 17 and above too (a GAP ViT's ReduceMean), the TorchScript exporter. The result
  is checked to carry exactly the requested opset, simplified (onnxslim), given ``metadata`` as
  ``metadata_props`` (so an app reads its preprocessing from the file), and checked in full by
  ``onnx.checker``.

The input is static (the example's batch) unless ``dynamic_batch``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgp_edge.errors import ExportError, UsageError, environment_error, write_failed
from lgp_edge.export.quiet import quiet_loggers

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"
MIN_OPSET = 13  # below it a ViT does not export
DYNAMO_MIN_OPSET = 17  # the dynamo exporter lowers LayerNormalization from here on
FUSED_ATTN_MIN_OPSET = 17  # below it timm's fused attention does not export through TorchScript
_EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "torch.export")


@contextlib.contextmanager
def fused_attention(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Set timm's ``fused_attn`` on every attention module for the duration, then restore it.

    Blocks are shared with the pool, so the previous values are put back even on error.
    """
    saved = [(m, m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    try:
        for m, _ in saved:
            m.fused_attn = enabled
        yield
    finally:
        for m, old in saved:
            m.fused_attn = old


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Warnings off and the exporters' loggers at ERROR; their progress prints are off by ``verbose=False``. The
    process's stdout and stderr are left alone: swapping them for a buffer took other threads' output too."""
    with warnings.catch_warnings(), quiet_loggers(*_EXPORTER_LOGGERS):
        warnings.simplefilter("ignore")
        yield


def onnx_opset(model: Any) -> int:
    """The default-domain opset of an ONNX ModelProto."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _torchscript(model: nn.Module, example: torch.Tensor, path: Path, *, opset: int, dynamic_batch: bool) -> None:
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    with fused_attention(model, opset >= FUSED_ATTN_MIN_OPSET), torch.no_grad():
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True,
                          keep_initializers_as_inputs=False, verbose=False)


def _dynamo(model: nn.Module, example: torch.Tensor, path: Path, *, opset: int, dynamic_batch: bool) -> None:
    dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    torch.onnx.export(model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                      opset_version=opset, dynamo=True, dynamic_shapes=dyn, verbose=False, report=False,
                      optimize=True, external_data=False)


def _slim(proto: Any, opset: int) -> Any:
    """Opset checked, onnxslim applied: the graph the exported-graph cache keeps."""
    import onnxslim

    got = onnx_opset(proto)
    if got != opset:
        raise ExportError(f"the ONNX exporter produced opset {got}, not the requested {opset}")
    slim = onnxslim.slim(proto)  # prints nothing (its summary is its command line's)
    if slim is not None and onnx_opset(slim) == opset:
        return slim
    log.warning("onnxslim did not return a model at opset %d; keeping the unsimplified graph", opset)
    return proto


def _finish(proto: Any, opset: int, metadata: Mapping[str, str]) -> Any:
    """``metadata`` attached, full checker passed."""
    import onnx

    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "lgp-edge"
    proto.producer_version = metadata.get("lgp_edge_version", "")
    proto.doc_string = (f"timm {metadata['model']}" if "model" in metadata
                        else f"Learngene Pool descendant {metadata.get('descendant_key', '')}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {str(exc).splitlines()[0][:300]}") from exc
    return proto


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    """A temporary folder in $TMPDIR for the exporter's raw graph; a write refused there (a nearly full
    $TMPDIR: making the folder, or a file in it) is a WriteFailed naming the folder and saying to point TMPDIR
    elsewhere, not an exporter error. One refused elsewhere (a cache folder) is a WriteFailed naming its own
    path."""
    tmp = None
    try:
        with tempfile.TemporaryDirectory(prefix="lgp-onnx-") as tmp:
            yield tmp
    except Exception as exc:
        env = environment_error(exc)
        if env is None:
            raise
        if not _in_scratch(env, tmp):
            raise write_failed(env, None, "") from None
        raise write_failed(env, tempfile.gettempdir(), "set TMPDIR to a folder with room (the ONNX exporter "
                                                       "writes its graph there first)") from None


def _in_scratch(exc: OSError, tmp: str | None) -> bool:
    """Whether ``exc`` is about the scratch folder ``tmp``: making it (``tmp`` is None), a file in it, or a write
    that names no file (the exporter's own writes go there)."""
    if tmp is None or exc.filename is None:
        return True
    f = Path(os.path.abspath(os.fsdecode(exc.filename)))
    return f == Path(tmp) or Path(tmp) in f.parents


def _shipped(model: nn.Module, example: torch.Tensor, path: Path, *, opset: int, dynamic_batch: bool,
             metadata: Mapping[str, str], cache: bool) -> None:
    import onnx

    from lgp_edge.export import graph_cache

    key = graph_cache.graph_key(model, example, opset=opset, dynamic_batch=dynamic_batch) if cache else None
    proto = graph_cache.load(key) if key else None
    if proto is None:
        proto = _slim(_exported(model, example, opset=opset, dynamic_batch=dynamic_batch), opset)
        if key:
            graph_cache.store(key, proto)
    onnx.save(_finish(proto, opset, metadata), str(path))


def _exported(model: nn.Module, example: torch.Tensor, *, opset: int, dynamic_batch: bool) -> Any:
    """The exporter's raw graph (dynamo from opset 17, TorchScript below; TorchScript too where dynamo could not
    lower the graph to ``opset`` and kept a newer one), via a scratch folder in $TMPDIR."""
    if opset < DYNAMO_MIN_OPSET:
        return _raw(_torchscript, model, example, opset=opset, dynamic_batch=dynamic_batch)
    proto = _raw(_dynamo, model, example, opset=opset, dynamic_batch=dynamic_batch)
    if onnx_opset(proto) == opset:
        return proto
    # e.g. a GAP ViT's ReduceMean (axes as an input from opset 18): dynamo's version converter cannot take it
    # down and keeps opset 18 without an error
    log.info("the dynamo exporter kept opset %d for a requested %d; exporting with the TorchScript exporter",
             onnx_opset(proto), opset)
    return _raw(_torchscript, model, example, opset=opset, dynamic_batch=dynamic_batch)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def exporter_message(exc: BaseException) -> str:
    """The first line of an exporter's error, plain: without its colour codes, and without a trailing "Next
    steps:" whose steps are on the lines left out; at most 300 characters."""
    line = _ANSI.sub("", str(exc)).strip().split("\n", 1)[0].strip()
    return line.removesuffix("Next steps:").rstrip()[:300]


def _raw(exporter: Callable[..., None], model: nn.Module, example: torch.Tensor, *, opset: int,
         dynamic_batch: bool) -> Any:
    """One exporter's graph of ``model``, written to and read back from a scratch folder."""
    import onnx

    with _scratch() as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with _silenced():
                exporter(model, example, raw, opset=opset, dynamic_batch=dynamic_batch)
        except Exception as exc:  # the exporters raise many types; say which step failed
            if environment_error(exc) is not None:
                raise  # the scratch folder's, said by _scratch
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {type(exc).__name__}: "
                              f"{exporter_message(exc)}") from exc
        return onnx.load(str(raw))  # also pulls in any external data file


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *, opset: int = 17,
                dynamic_batch: bool = False, ship: bool = False, metadata: Mapping[str, str] | None = None,
                cache: bool = True) -> Path:
    """Export ``model`` (eval mode) traced on ``example`` to ``path``; see the module docstring for ``ship``.
    ``cache=False``: the shipped graph is exported, not read from or kept in the exported-graph cache."""
    if opset < MIN_OPSET:
        raise UsageError(f"ONNX opset {opset} is too old for ViT export; lgp-edge needs opset >= {MIN_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if dynamic_batch and example.shape[0] == 1:
        example = torch.zeros((2, *example.shape[1:]), dtype=example.dtype)  # batch 1 would be specialised away
    if ship:
        _shipped(model, example, path, opset=opset, dynamic_batch=dynamic_batch, metadata=metadata or {}, cache=cache)
    else:
        with _silenced():
            _torchscript(model, example, path, opset=opset, dynamic_batch=dynamic_batch)
        log.debug("exported %s (opset %d)", path, opset)
    return path
