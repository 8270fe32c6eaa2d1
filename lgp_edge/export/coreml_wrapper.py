"""The module a Core ML export traces: image pixels in, class probabilities out (``lgp_edge.export.coreml``)."""

from __future__ import annotations

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """pixels / 255 (done by the ImageType scale) -> optional per-channel normalisation -> descendant -> softmax."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], normalise: bool) -> None:
        super().__init__()
        self.model, self.normalise = model, normalise
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) / self.std
        return torch.softmax(self.model(x), dim=-1)
