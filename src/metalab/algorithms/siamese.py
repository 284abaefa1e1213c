"""Siamese Networks (Koch et al. 2015): learn whether two images show the same class.

Training pairs are all ordered pairs of distinct images of an episode (support and query
sets together), labelled same/different; the pair head is Koch's learned weighted L1
distance with a sigmoid output, p(same) = sigmoid(sum_j alpha_j |h1_j - h2_j| + b), trained
with binary cross-entropy in which the same-class and the different-class pairs weigh one
half each (an episode has far more different pairs, Koch sampled them balanced).
At test time a query takes the class of its most similar support image (one-shot
classification; with K shots, the most similar of all support images). The reported
loss is always the pair loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms.metric import MetricAlgorithm, class_onehot
from metalab.inner_loop import InnerLoop


class PairHead(nn.Module):
    """Logit of p(same) for every pair of rows of ``a`` and ``b``: [len(a), len(b)]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weighted_l1 = nn.Linear(dim, 1)  # alpha_j and b

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.weighted_l1((a.unsqueeze(1) - b.unsqueeze(0)).abs()).squeeze(-1)


def balanced_pair_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE over the ordered pairs (i != j); same and different pairs weigh 1/2 each."""
    same = (labels.unsqueeze(1) == labels.unsqueeze(0)).to(logits.dtype)
    off_diagonal = 1 - torch.eye(len(labels), dtype=logits.dtype, device=logits.device)
    positive, negative = same * off_diagonal, (1 - same) * off_diagonal
    halves = 0.5 / positive.sum().clamp(min=1), 0.5 / negative.sum().clamp(min=1)
    weights = positive * halves[0] + negative * halves[1]
    bce = F.binary_cross_entropy_with_logits(logits, same, reduction="none")
    return (weights * bce).sum()


def nearest_support_scores(pair_logits: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
    """[queries, classes]: per class, the best pair logit over its support images."""
    member = class_onehot(support_y, pair_logits.dtype).T.bool()  # [classes, support]
    masked = torch.where(
        member.unsqueeze(0),
        pair_logits.unsqueeze(1),
        torch.full_like(pair_logits, float("-inf")).unsqueeze(1),
    )
    return masked.amax(-1)


class Siamese(MetricAlgorithm):
    def __init__(self, inner_loop: InnerLoop) -> None:
        super().__init__(inner_loop)
        self.pair_head = PairHead(int(inner_loop.model.out_features))

    def meta_objective(self, params, support_x, support_y, query_x, query_y):
        support, query = self.embed_episode(params, support_x, query_x)
        embeddings = torch.cat([support, query])
        logits = self.pair_head(embeddings, embeddings)
        loss = balanced_pair_loss(logits, torch.cat([support_y, query_y]))
        with torch.no_grad():
            scores = nearest_support_scores(logits[len(support) :, : len(support)], support_y)
            metric = self.embedding.kind.metric(scores, query_y)
        return loss, metric
