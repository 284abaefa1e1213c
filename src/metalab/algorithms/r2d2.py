"""R2-D2 (Bertinetto et al. 2019): a ridge-regression head solved in closed form per task.

The support embeddings, with a column of ones for the bias, are regressed onto the one-hot
labels by ridge regression; as in the authors' code both sides are divided by sqrt(n), n
the number of support examples, so that lam weighs the mean squared error:

    W = argmin_W (1/n) ||X W - Y||^2 + lam ||W||^2
      = X^T (X X^T + n lam I_n)^-1 Y          (Woodbury: an n x n system, n <= d + 1)
      = (X^T X + n lam I_{d+1})^-1 X^T Y      (otherwise: a (d + 1) x (d + 1) system)

(written with the scaled X/sqrt(n) and Y/sqrt(n), as the code does). A query's logits are
``scale * [z, 1] W + bias`` with a learnable scale and bias (the paper's alpha and beta;
under the softmax a bias shared by all classes cancels, so its gradient is 0, kept because
the paper has it); ``learn_lambda`` also meta-learns lam (through its logarithm, so it stays
positive; the authors' code keeps lam fixed by default). The embedding is trained through
the solve by the query cross-entropy.

Nothing depends on the number of ways (``fixed_head = False``): classes are columns of the
one-hot targets, one per support example, absent ones masked (``metalab.algorithms.metric``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metalab.algorithms.metric import MetricAlgorithm, class_onehot, mask_absent
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop


def ridge_regression(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """W minimising ||x W - y||^2 + lam ||W||^2, by the smaller of the two linear systems:
    the Woodbury form x^T (x x^T + lam I)^-1 y when x has no more rows than columns."""
    n, d = x.shape
    if n <= d:
        gram = x @ x.T + lam * torch.eye(n, dtype=x.dtype, device=x.device)
        return x.T @ torch.linalg.solve(gram, y)
    gram = x.T @ x + lam * torch.eye(d, dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.T @ y)


def with_bias_column(features: torch.Tensor) -> torch.Tensor:
    return torch.cat([features, features.new_ones(features.shape[0], 1)], 1)


class R2D2(MetricAlgorithm):
    def __init__(
        self,
        inner_loop: InnerLoop,
        lam: float = 50.0,
        learn_lambda: bool = False,
        scale: float = 1e-4,
        bias: float = 0.0,
    ) -> None:
        super().__init__(inner_loop)
        if not lam > 0:
            raise ConfigError(
                f"algorithm.lam={lam}: the ridge penalty must be positive (the authors' code: 50)."
            )
        self.learn_lambda = learn_lambda
        log_lam = torch.tensor(math.log(lam))
        if learn_lambda:
            self.log_lam = nn.Parameter(log_lam)
        else:
            self.register_buffer("log_lam", log_lam)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lam.exp()

    def head(self, support: torch.Tensor, support_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The task's ridge weights [features + 1, support examples] (column c: class c)
        and the support count of each class."""
        n = support.shape[0]
        onehot = class_onehot(support_y, support.dtype)
        root = math.sqrt(n)
        weights = ridge_regression(with_bias_column(support) / root, onehot / root, self.lam)
        return weights, onehot.sum(0)

    def class_scores(self, params, support_x, support_y, query_x):
        support, query = self.embed_episode(params, support_x, query_x)
        weights, counts = self.head(support, support_y)
        scores = self.scale * (with_bias_column(query) @ weights) + self.bias
        return mask_absent(scores, counts)
