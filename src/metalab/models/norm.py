"""Batch normalisation with the statistics of the batch at hand, exact under ``vmap``.

Meta-learning normalises with the statistics of the batch at hand, at training and at test
time (what MAML's code does; it is transductive at test time). Per task, the native
``F.batch_norm`` kernel is exact and about 1.6x faster; but under ``torch.func.vmap`` its
batching rule gives wrong second-order gradients in torch 2.13
(``shared/notes/vmap_batchnorm_repro.py``), so vectorised strategies switch to a version
written from ``mean`` and ``var`` inside ``metalab.models.vectorised.vectorised()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalab.models.vectorised import is_vectorised, vectorised

# Within this block batch norm avoids the native kernel (what vmap needs); kept by this name
# for the benchmark's "mean/var batch norm" row.
decomposed_batch_norm = vectorised


def batch_stat_norm(x: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) * torch.rsqrt(var + eps) * weight.view(shape) + bias.view(shape)


class BatchStatNorm(nn.Module):
    """Per-channel normalisation with the current batch's statistics, plus an affine map."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_vectorised():
            return batch_stat_norm(x, self.weight, self.bias, self.eps)
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
