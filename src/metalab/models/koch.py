"""Koch et al.'s (2015) Siamese convolutional network for 105x105 Omniglot drawings.

Four convolutions (64@10x10, 128@7x7, 128@4x4, 256@4x4; ReLU; 2x2 max-pooling after the
first three) and a 4096-unit sigmoid layer: 38,947,648 parameters, plus 4,097 in the
Siamese pair head (``algorithms/siamese.py``) = 38,951,745, the paper's network. A linear
head follows, as for every model here, so that ``without_head`` can leave it out.
"""

from __future__ import annotations

from torch import nn

from metalab.errors import ConfigError

KOCH_IMAGE_SIZE = 105


def koch_feature_side(image_size: int) -> int:
    side = image_size
    for kernel, pool in ((10, True), (7, True), (4, True), (4, False)):
        side = side - kernel + 1
        side = side // 2 if pool else side
    return side


class KochNet(nn.Module):
    def __init__(self, in_channels: int, out_features: int, image_size: int) -> None:
        super().__init__()
        side = koch_feature_side(image_size)
        if side < 1:
            raise ConfigError(
                f"model=koch needs images of at least 105x105 (Koch et al.'s size) but gets "
                f"{image_size}x{image_size}: set dataset.image_size=105, or use model=conv4."
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 10), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 7), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 128, 4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 4), nn.ReLU(),
        )  # fmt: skip
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(256 * side * side, 4096), nn.Sigmoid())
        self.head = nn.Linear(4096, out_features)

    def forward(self, x):
        return self.head(self.embed(self.features(x)))
