"""A backbone without its classification head: what metric-based methods compare.

Prototypical, Matching and Siamese networks never score a fixed set of classes; they map
images to vectors and compare the vectors. ``Embedding`` keeps every child module of a model
except the last one (the head, by the convention ANIL also relies on: true of Conv-4, the
MLP and Koch's network), so the parameter names stay those of the full model.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.errors import ConfigError


class Embedding(nn.Module):
    def __init__(self, model: nn.Module, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        children = list(model.named_children())
        if len(children) < 2:
            raise ConfigError(
                f"{type(model).__name__} has no separate head to leave out (children "
                f"{[n for n, _ in children]}): use model=conv4, model=koch or model=mlp."
            )
        for name, child in children[:-1]:
            self.add_module(name, child)
        with torch.no_grad():  # two examples: batch-statistics norm needs more than one
            probe = self(torch.zeros(2, *in_shape))
        self.out_features = int(probe.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = child(x)
        return x.flatten(1)
