"""The step from a backbone's last feature map to the vector its head reads, as a module.

It is a child of the model, between the backbone and the head, so that every consumer of
"the model without its head" (ANIL's body, the metric methods' embedding) gets the same
vector as the head does, whatever the model's pooling.
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    """The mean of each channel over the positions of its feature map: [N, C, H, W] -> [N, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))
