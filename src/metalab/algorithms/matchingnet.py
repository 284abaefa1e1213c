"""Matching Networks (Vinyals et al. 2016): a query's label distribution is an attention-
weighted sum of the support labels, P(y | x, S) = sum_i a(x, x_i) y_i, with
a = softmax over the support set of the cosine similarity of the embeddings.

``fce=true`` turns on the full-context embeddings: each support embedding is re-read by a
bidirectional LSTM over the support set, g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i), and each
query embedding by an attention LSTM run for ``processing_steps`` (K) steps over g(S):
h_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1}) + (f'(x), 0),
r_{k-1} = sum_i softmax(h_{k-1} . g(x_i)) g(x_i), starting from h_0 = c_0 = 0.
``scale`` multiplies the cosine before the softmax (1 in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms.lstm_cell import LSTMCell
from metalab.algorithms.metric import MetricAlgorithm, class_onehot
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop


def cosine_attention(query: torch.Tensor, support: torch.Tensor, scale: float) -> torch.Tensor:
    """[queries, support]: softmax over the support set of scale * cos(query, support)."""
    cosine = F.cosine_similarity(query.unsqueeze(1), support.unsqueeze(0), dim=-1, eps=1e-8)
    return torch.softmax(scale * cosine, dim=-1)


def label_log_probs(attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log sum_i a_i y_i per class; -inf (with a zero gradient) for absent classes."""
    onehot = class_onehot(labels, attention.dtype)
    probs = attention @ onehot
    present = onehot.sum(0) > 0
    safe = torch.where(present, probs, torch.ones_like(probs))
    return torch.where(present, safe.log(), torch.full_like(probs, float("-inf")))


class SupportContext(nn.Module):
    """g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i): a bidirectional LSTM over the support set."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.forward_cell, self.backward_cell = LSTMCell(dim, dim), LSTMCell(dim, dim)

    def run(self, cell: LSTMCell, sequence: list[torch.Tensor]) -> list[torch.Tensor]:
        h = c = torch.zeros_like(sequence[0])
        out = []
        for x in sequence:
            h, c = cell(x, h, c)
            out.append(h)
        return out

    def forward(self, support: torch.Tensor) -> torch.Tensor:
        rows = list(support.unsqueeze(1).unbind(0))  # each [1, dim]
        ahead = self.run(self.forward_cell, rows)
        back = self.run(self.backward_cell, rows[::-1])[::-1]
        return torch.cat(ahead) + torch.cat(back) + support


class QueryContext(nn.Module):
    """f(x, S): K steps of an LSTM that attends over the contextual support embeddings."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.cell, self.steps = LSTMCell(dim, dim, recurrent_size=2 * dim), steps

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        h = c = torch.zeros_like(query)
        for _ in range(self.steps):
            readout = torch.softmax(h @ support.T, dim=-1) @ support
            h, c = self.cell(query, torch.cat([h, readout], -1), c)
            h = h + query
        return h


class MatchingNet(MetricAlgorithm):
    def __init__(
        self,
        inner_loop: InnerLoop,
        fce: bool = False,
        processing_steps: int = 10,
        scale: float = 1.0,
    ) -> None:
        super().__init__(inner_loop)
        if processing_steps < 1 or not scale > 0:
            raise ConfigError(
                f"algorithm.processing_steps={processing_steps}, algorithm.scale={scale}: the "
                "steps must be at least 1 and the scale positive."
            )
        self.fce, self.scale = fce, scale
        if fce:
            dim = int(inner_loop.model.out_features)
            self.support_context = SupportContext(dim)
            self.query_context = QueryContext(dim, processing_steps)

    def attention(self, params, support_x, query_x) -> torch.Tensor:
        support, query = self.embed_episode(params, support_x, query_x)
        if self.fce:
            support = self.support_context(support)
            query = self.query_context(query, support)
        return cosine_attention(query, support, self.scale)

    def class_scores(self, params, support_x, support_y, query_x):
        # Log-probabilities: cross-entropy's log-softmax leaves them as they are, so the loss
        # is the paper's negative log-likelihood.
        return label_log_probs(self.attention(params, support_x, query_x), support_y)
