"""Memory layout of convolutional activations: channels-last where it measures faster.

On a CPU, oneDNN convolutions, batch norm and max-pooling run much faster on NHWC
(channels-last) tensors than on NCHW ones: max-pooling a 75x64x28x28 batch alone is about 10x
faster (benchmarks/NOTES.md). Setting the convolution weights to channels-last makes every
convolution produce channels-last output, except where the input has one channel (its NCHW and
NHWC strides coincide, so the first convolution of an Omniglot model keeps NCHW): models use
``LayoutConv2d``, whose output is converted when the layout is switched on (a no-op for
tensors already in that layout). The arithmetic is the same either way.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.errors import ConfigError
from metalab.models.vectorised import is_vectorised

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


class LayoutConv2d(nn.Conv2d):
    """A ``Conv2d`` whose output is channels-last when enabled (never under vmap)."""

    channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.channels_last and y.dim() == 4 and not is_vectorised():
            return y.contiguous(memory_format=torch.channels_last)
        return y


def resolve_memory_format(name: str, accelerator: str) -> str:
    """``auto``: channels-last on the CPU, where it measures faster; contiguous elsewhere."""
    if name not in MEMORY_FORMATS:
        raise ConfigError(
            f"memory_format={name!r} is not known: choose one of {', '.join(MEMORY_FORMATS)}."
        )
    if name == "auto":
        return "channels_last" if accelerator == "cpu" else "contiguous"
    return name


def apply_memory_format(model: nn.Module, name: str) -> bool:
    """Put ``model``'s 4-D weights and activations in the layout ``name``; True if it has any."""
    convolutions = [m for m in model.modules() if isinstance(m, LayoutConv2d)]
    channels_last = name == "channels_last"
    for module in convolutions:
        module.channels_last = channels_last
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return bool(convolutions)
