"""Stitch layers: ``Linear(d_in -> d_out)`` on every token, and their two initialisations.

- ``learned`` (Learngene Pool): the distillation's transformation matrices W_i (D -> d) map the ancestry's
  features into a student's width; their mean, transposed, maps a Ti feature back to width D, which is
  B's width. Every Ti->B stitch starts from it (docs/METHOD.md §2).
- ``lstsq`` (SN-Net): ``[A, 1] X = B`` solved by least squares on features of ~100 training images at the
  stitch position (A: the front model's output of block j; B: the back model's input to block k, i.e. its
  block k-1 output, or its embedding for k = 0); configurations sharing one layer average their solutions.
"""

from __future__ import annotations

import torch
from torch import nn


def make_stitch(d_in: int, d_out: int) -> nn.Linear:
    return nn.Linear(d_in, d_out)


def learned_init(stitch: nn.Linear, front_mats: list[torch.Tensor], back_mats: list[torch.Tensor] | None) -> None:
    """Initialise ``stitch`` from transformation matrices (each ``(d, D)``, i.e. ``Linear(D -> d).weight``).

    front -> back = mean(W_back) @ mean(W_front)^T; when the back model has the ancestry's width (B),
    W_back is the identity, which is the paper's rule (averaged, transposed Ti matrices).
    """
    w_front = torch.stack(front_mats).mean(0)  # (d_in, D)
    w = w_front.t()  # (D, d_in)
    if back_mats:
        w = torch.stack(back_mats).mean(0) @ w  # (d_out, d_in)
    with torch.no_grad():
        stitch.weight.copy_(w)
        stitch.bias.zero_()


def lstsq_solution(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (weight, bias) with ``a @ weight.T + bias ~= b``; a: (N, d_in), b: (N, d_out)."""
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        from lgp_edge.errors import UsageError

        raise UsageError("the models give non-finite features (NaN or infinite: their training diverged), so no "
                         "stitch can be fitted to them; train them again with a lower --lr")
    a64 = torch.cat([a.double(), torch.ones(a.shape[0], 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.pinv(a64) @ b.double()  # (d_in + 1, d_out)
    return sol[:-1].t().float(), sol[-1].float()


def lstsq_init(stitch: nn.Linear, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Initialise ``stitch`` with the mean of the least-squares solutions of each (front, back) feature pair."""
    sols = [lstsq_solution(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])) for a, b in pairs]
    with torch.no_grad():
        stitch.weight.copy_(torch.stack([w for w, _ in sols]).mean(0))
        stitch.bias.copy_(torch.stack([c for _, c in sols]).mean(0))
