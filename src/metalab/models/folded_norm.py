"""A first convolution and the batch norm after it, computed as one linear map of the patches.

Why: with the statistics of the batch at hand, batch norm after a convolution is an affine
map per channel whose statistics follow from the convolution's weights ``w_c`` and the mean
``m`` and covariance ``S`` of the input patches: mean ``w_c . m + b_c``, variance
``w_c^T S w_c``. For a first convolution the patches are short (9 numbers for a one-channel
3x3), so these statistics cost almost nothing and the normalisation folds into the weights:
one product writes the normalised 64-channel output, where the layers in turn write it,
read it twice for the statistics, write it normalised, and go back over it all in the
backward pass. On Omniglot's Conv-4 that output is the largest activation of the network
(benchmarks/NOTES.md). It is the same function, differentiated by autograd to any order and
under ``vmap``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metalab.models.vectorised import is_vectorised

# A 3x3 patch of up to three channels: beyond it the covariance stops being cheap.
MAX_PATCH = 27


def folds(conv: nn.Conv2d) -> bool:
    """Whether folding ``conv``'s batch norm measured faster: a plain convolution whose
    patches are short and at most half as long as its output channels (a 3-channel 3x3
    patch against 32 channels measured 0.78x: the patch matrix outweighs the passes saved)."""
    patch = conv.in_channels * math.prod(conv.kernel_size)
    return (
        conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and patch <= MAX_PATCH
        and 2 * patch <= conv.out_channels
    )


def _output_side(conv: nn.Conv2d, size: int, axis: int) -> int:
    span = conv.dilation[axis] * (conv.kernel_size[axis] - 1) + 1
    return (size + 2 * conv.padding[axis] - span) // conv.stride[axis] + 1


def normalising_map(
    mean: torch.Tensor, covariance: torch.Tensor, conv: nn.Conv2d, norm: nn.Module
) -> torch.Tensor:
    """The ``[patch + 1, channels]`` matrix that maps a patch, with a trailing 1, to the
    normalised output of every channel, from the mean and covariance of all patches.

    The convolution's bias cancels against the mean; it is kept in the expression so that
    its gradient is an exact zero rather than missing.
    """
    weight = conv.weight.reshape(conv.out_channels, mean.shape[-1])
    variance = ((weight @ covariance) * weight).sum(1)
    scale = norm.weight * torch.rsqrt(variance + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    shift = norm.bias + (bias - (weight @ mean + bias)) * scale
    return torch.cat([(weight * scale[:, None]).T, shift[None]])


def _moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = rows.mean(0)
    centred = rows - mean
    return mean, centred.T @ centred / rows.shape[0]


def conv_batch_stat_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
    """``norm(conv(x))`` for a ``BatchStatNorm`` ``norm``, from the patches of ``x``.

    The result has channels-last strides (its rows are ``(image, y, x)``), copied to NCHW
    only where the convolution's layout asks for it.
    """
    patches = F.unfold(
        x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride
    )
    images, patch, _ = patches.shape
    height, width = _output_side(conv, x.shape[-2], 0), _output_side(conv, x.shape[-1], 1)
    rows = patches.transpose(1, 2).reshape(-1, patch)
    with_ones = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    out = with_ones @ normalising_map(*_moments(rows), conv, norm)
    out = out.view(images, height, width, -1).permute(0, 3, 1, 2)
    if not getattr(conv, "channels_last", True) and not is_vectorised():
        out = out.contiguous()
    return out
