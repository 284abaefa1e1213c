"""Conv-4: the four-block convolutional backbone of MAML, ProtoNets and most few-shot work.

Each block is a 3x3 convolution, normalisation, ReLU and a halving of the image: 2x2
max-pooling (ProtoNets, Matching Networks, MAML on mini-ImageNet) or a stride-2 convolution
(MAML's Omniglot network, ``downsample="stride"``: about 3.7x fewer FLOPs per image). A linear
head maps the features to the classes of a task: all of them flattened, or, with
``global_pool``, their mean over positions (what MAML's Omniglot code does, ``reduce_mean``).
The blocks compute exactly that function, in an order that costs less (``ConvBlock``).

Initialisation: PyTorch's layer defaults (``init="torch"``), or MAML's code's (``"glorot"``:
Glorot-uniform weights, zero biases, ``xavier_initializer`` in cbfinn/maml's
``construct_conv_weights``); ``head_init_std`` draws the head from N(0, std^2) instead, as
that code's Omniglot head (``tf.random_normal``, std 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalab import native  # a module, not its names: native's kernel imports models' leaves
from metalab.errors import ConfigError
from metalab.models.folded_norm import conv_batch_stat_norm, folds
from metalab.models.layout import LayoutConv2d
from metalab.models.norm import BatchStatNorm
from metalab.models.pooling import GlobalAvgPool

NORMS = ("batch", "none")
DOWNSAMPLES = ("maxpool", "stride")
INITS = ("torch", "glorot")


class ConvBlock(nn.Sequential):
    """3x3 convolution, normalisation, ReLU and 2x2 max-pooling, children 0-3 as checkpoints
    name them, run with two exact rewrites that cost less than the layers in turn; with
    ``downsample="stride"`` a stride-2 convolution (padding 1), normalisation and ReLU instead.

    Max-pooling comes before the ReLU, on a 4x smaller tensor: both are monotone, so
    ``relu(max(z)) == max(relu(z))``, and the gradient reaches the same element (or none). A first
    convolution with short patches absorbs its batch norm (``folded_norm``), and where its graph
    gets one backward or none, its pooling too: ``metalab.native.first_block_path`` says
    whether this pass runs as the native kernel.
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm: str, downsample: str = "maxpool"
    ) -> None:
        pools = downsample == "maxpool"
        stride = 1 if pools else 2
        layers: list[nn.Module] = [
            LayoutConv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        ]
        if norm == "batch":
            layers.append(BatchStatNorm(out_channels))
        layers.append(nn.ReLU())
        if pools:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)
        self.pools = pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self[0], self[1] if isinstance(self[1], BatchStatNorm) else None
        if norm is not None and folds(conv):
            if self.pools and native.first_block_path(x, conv) == "native":
                return F.relu(native.fused_first_block.folded_conv_pool(x, conv, norm))
            z = conv_batch_stat_norm(x, conv, norm)
        else:
            z = conv(x) if norm is None else norm(conv(x))
        return F.relu(F.max_pool2d(z, 2) if self.pools else z)


def feature_size(image_size: int, blocks: int, downsample: str = "maxpool") -> int:
    """The side of the last feature map: max-pooling floors odd sides, a stride-2 3x3
    convolution with padding 1 rounds them up."""
    for _ in range(blocks):
        image_size = image_size // 2 if downsample == "maxpool" else (image_size + 1) // 2
    return image_size


class Conv4(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_features: int,
        image_size: int,
        channels: int = 64,
        blocks: int = 4,
        norm: str = "batch",
        downsample: str = "maxpool",
        global_pool: bool = False,
        init: str = "torch",
        head_init_std: float | None = None,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ConfigError(
                f"model.init={init!r} is not known: choose one of {', '.join(INITS)}."
            )
        if norm not in NORMS:
            raise ConfigError(
                f"model.norm={norm!r} is not known: choose one of {', '.join(NORMS)}."
            )
        if downsample not in DOWNSAMPLES:
            raise ConfigError(
                f"model.downsample={downsample!r} is not known: choose one of "
                f"{', '.join(DOWNSAMPLES)}."
            )
        side = feature_size(image_size, blocks, downsample)
        if side < 1:
            raise ConfigError(
                f"{image_size}x{image_size} images are too small for {blocks} pooling blocks: "
                "use larger images or fewer model.blocks."
            )
        self.global_pool = bool(global_pool)
        widths = [in_channels] + [channels] * blocks
        self.features = nn.Sequential(
            *(
                ConvBlock(a, b, norm, downsample)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
        )
        self.pool = GlobalAvgPool() if self.global_pool else nn.Flatten()
        self.head = nn.Linear(channels * (1 if self.global_pool else side * side), out_features)
        initialise(self, init, head_init_std)

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


def initialise(model: nn.Module, init: str, head_init_std: float | None) -> None:
    """Re-draw the weights of ``model``'s convolutions and linear layers as ``init`` says
    ("torch" keeps the layers' own draws), then its ``head`` from N(0, head_init_std^2)."""
    if init == "glorot":
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
    if head_init_std is not None:
        nn.init.normal_(model.head.weight, 0.0, float(head_init_std))
        nn.init.zeros_(model.head.bias)
