"""ResNet-12: the residual backbone of TADAM, MetaOptNet and most later few-shot work.

Four residual blocks, each three 3x3 convolutions (no bias) with batch norm and leaky ReLU
(slope 0.1), a 1x1 convolution + batch norm on the shortcut, then 2x2 max-pooling and, in the
last two blocks, optional DropBlock (Ghiasi et al. 2018), as in MetaOptNet. Global average
pooling and a linear head follow, so the head does not depend on the image size.

Batch norm uses the statistics of the batch at hand (``BatchStatNorm``), like Conv-4, so the
model holds only parameters and works through ``torch.func.functional_call``: MAML and ANIL
can adapt it. DropBlock draws random masks: with ``model.dropblock > 0`` use ``strategy=loop``,
since ``torch.func.vmap`` refuses random operations by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metalab.errors import ConfigError
from metalab.models.layout import LayoutConv2d
from metalab.models.norm import BatchStatNorm
from metalab.models.pooling import GlobalAvgPool

SLOPE = 0.1
WIDTHS = (64, 160, 320, 640)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return LayoutConv2d(in_channels, out_channels, 3, padding=1, bias=False)


class DropBlock(nn.Module):
    """Zeroes square blocks of a feature map during training, rescaling what is kept."""

    def __init__(self, drop_rate: float, block_size: int) -> None:
        super().__init__()
        self.drop_rate, self.block_size = drop_rate, block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_rate == 0.0:
            return x
        size = min(self.block_size, x.shape[-1], x.shape[-2])
        valid = (x.shape[-2] - size + 1) * (x.shape[-1] - size + 1)
        gamma = self.drop_rate / size**2 * x.shape[-2] * x.shape[-1] / valid
        seeds_shape = (*x.shape[:2], x.shape[-2] - size + 1, x.shape[-1] - size + 1)
        seeds = (torch.rand(seeds_shape, device=x.device) < gamma).to(x.dtype)
        pad = size - 1
        blocks = F.max_pool2d(F.pad(seeds, (pad, pad, pad, pad)), size, stride=1)
        keep = 1.0 - blocks
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, drop: DropBlock | None) -> None:
        super().__init__()
        self.conv1, self.norm1 = conv3x3(in_channels, out_channels), BatchStatNorm(out_channels)
        self.conv2, self.norm2 = conv3x3(out_channels, out_channels), BatchStatNorm(out_channels)
        self.conv3, self.norm3 = conv3x3(out_channels, out_channels), BatchStatNorm(out_channels)
        self.shortcut = LayoutConv2d(in_channels, out_channels, 1, bias=False)
        self.shortcut_norm = BatchStatNorm(out_channels)
        self.drop = drop if drop is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.norm1(self.conv1(x)), SLOPE)
        out = F.leaky_relu(self.norm2(self.conv2(out)), SLOPE)
        out = self.norm3(self.conv3(out))
        out = F.leaky_relu(out + self.shortcut_norm(self.shortcut(x)), SLOPE)
        return self.drop(F.max_pool2d(out, 2))


class ResNet12(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_features: int,
        image_size: int,
        channels: Sequence[int] = WIDTHS,
        dropblock: float = 0.0,
        dropblock_size: int = 5,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) != 4 or min(channels) < 1:
            raise ConfigError(
                f"model.channels={channels}: ResNet-12 has 4 blocks, give 4 positive widths "
                f"(64, 160, 320, 640 is the usual)."
            )
        if image_size < 16:
            raise ConfigError(
                f"{image_size}x{image_size} images are too small for ResNet-12's four 2x2 "
                "poolings: use images of at least 16x16."
            )
        if not 0.0 <= dropblock < 1.0 or dropblock_size < 1:
            raise ConfigError(
                f"model.dropblock={dropblock}, model.dropblock_size={dropblock_size}: the rate "
                "must be in [0, 1) and the block size at least 1 (0.1 and 5 as in MetaOptNet)."
            )
        widths = [in_channels, *channels]
        self.features = nn.Sequential(
            *(
                ResidualBlock(a, b, DropBlock(dropblock, dropblock_size) if i >= 2 else None)
                for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
            )
        )
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(channels[-1], out_features)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))
