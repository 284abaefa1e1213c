"""Meta-SGD (Li et al. 2017): MAML with a learnable inner learning rate per parameter element.

The rates have the shapes of the parameters, start at ``inner_lr`` (so Meta-SGD's first
outer step is MAML's) and are meta-learned with the initialisation through the same
second-order meta-gradient; being parameters of this module they are in the optimiser and
the checkpoints. Evaluation adapts with the learned rates; ``eval_inner_lr`` is unused.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.algorithms.maml import MAML
from metalab.inner_loop import InnerLoop, Params


def escape(name: str) -> str:
    """A parameter name as a key of an ``nn.ParameterDict`` (which refuses dots)."""
    return name.replace(".", "__")


class MetaSGD(MAML):
    def __init__(self, inner_loop: InnerLoop, *args, **kwargs) -> None:
        super().__init__(inner_loop, *args, **kwargs)
        self.rates = nn.ParameterDict(
            {
                escape(name): nn.Parameter(torch.full_like(p.detach(), self.inner_lr))
                for name, p in inner_loop.model.named_parameters()
            }
        )

    def learning_rates(self) -> Params:
        return {
            name: self.rates[escape(name)] for name, _ in self.inner_loop.model.named_parameters()
        }

    def meta_objective(self, params, support_x, support_y, query_x, query_y):
        adapted = self.inner_loop.adapt(
            params, support_x, support_y, self.inner_steps, self.learning_rates(), self.first_order
        )
        prediction = self.inner_loop.predict(adapted, query_x)
        kind = self.inner_loop.kind
        return kind.loss(prediction, query_y), kind.metric(prediction.detach(), query_y)

    def eval_learning_rate(self) -> Params:
        return {k: r.detach() for k, r in self.learning_rates().items()}
