"""Prototypical Networks (Snell et al. 2017): classify by the nearest class mean embedding.

A class's prototype is the mean embedding of its support examples; a query's logits are
the negative squared Euclidean distances to the prototypes, trained with cross-entropy.
Training with more ways than testing (the paper's 60-way Omniglot training) is
``dataset.ways=60 dataset.test_ways=5``.
"""

from __future__ import annotations

import torch

from metalab.algorithms.metric import MetricAlgorithm, class_onehot, mask_absent


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means [classes, dim] (column c = class c) and the support count of each class."""
    onehot = class_onehot(labels, embeddings.dtype)
    counts = onehot.sum(0)
    return onehot.T @ embeddings / counts.clamp(min=1).unsqueeze(-1), counts


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)]: ||a_i - b_j||^2, written directly (exact, no expansion trick)."""
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


class ProtoNet(MetricAlgorithm):
    def class_scores(self, params, support_x, support_y, query_x):
        support, query = self.embed_episode(params, support_x, query_x)
        centres, counts = prototypes(support, support_y)
        return mask_absent(-squared_euclidean(query, centres), counts)
