"""Batch normalisation written from mean and variance.

Meta-learning normalises with the statistics of the batch at hand, at training and at test
time (what MAML's code does; it is transductive at test time). Writing it from ``mean`` and
``var`` rather than calling ``F.batch_norm`` keeps second-order gradients exact under
``torch.func.vmap``: in torch 2.13 the native kernel's batching rule gets them wrong
(see ``shared/notes/vmap_batchnorm_repro.py``).
"""

from __future__ import annotations

import torch
from torch import nn


class BatchStatNorm(nn.Module):
    """Per-channel normalisation with the current batch's statistics, plus an affine map."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(
            shape
        )
