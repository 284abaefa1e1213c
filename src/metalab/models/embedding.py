"""A backbone without its classification head: what metric-based methods compare.

Prototypical, Matching and Siamese networks never score a fixed set of classes; they map
images to vectors and compare the vectors. ``without_head`` replaces a model's last child
module (its head, by the convention ANIL also relies on: true of Conv-4, the MLP, Koch's
network and ResNet-12) with the identity, so the model's own forward (its flattening or
pooling) is kept, and so are the names of the remaining parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.errors import ConfigError


def without_head(model: nn.Module, in_shape: tuple[int, ...]) -> nn.Module:
    """``model`` with its last child replaced by ``nn.Identity``; ``out_features`` is set to
    the embedding's size."""
    children = list(model.named_children())
    if len(children) < 2 or not isinstance(children[-1][1], nn.Linear):
        raise ConfigError(
            f"{type(model).__name__} does not end in a linear head that could be left out "
            f"(children {[n for n, _ in children]}): use model=conv4, model=koch or model=mlp."
        )
    setattr(model, children[-1][0], nn.Identity())
    with torch.no_grad():  # two examples: batch-statistics norm needs more than one
        probe = model(torch.zeros(2, *in_shape))
    model.out_features = int(probe.flatten(1).shape[-1])
    return model
