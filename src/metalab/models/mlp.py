"""The fully connected network of MAML's sinusoid experiment (two hidden layers of 40, ReLU)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (40, 40)):
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
