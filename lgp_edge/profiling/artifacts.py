"""Artifacts the profiler needs: an ONNX file of a module (export for profiling, not for shipping)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from lgp_edge.errors import UsageError

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


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


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *, opset: int = 17) -> Path:
    """Export ``model`` with a static input shape. Opset < 17 runs attention unfused (no SDPA, no LayerNorm op)."""
    if opset < 13:
        raise UsageError(f"ONNX opset {opset} is too old for ViT export; lgp-edge needs opset >= 13")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with fused_attention(model, opset >= 17), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)
    log.debug("exported %s (opset %d)", path, opset)
    return path
