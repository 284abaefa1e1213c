"""Meta-SGD (Li et al. 2017): MAML with a learnable inner learning rate per parameter element.

The rates have the shapes of the parameters, start at ``inner_lr`` (so Meta-SGD's first
outer step is MAML's) and are meta-learned with the initialisation through the same
second-order meta-gradient; being parameters of this module they are in the optimiser and
the checkpoints. Evaluation adapts with the learned rates; ``eval_inner_lr`` is unused.
Only the inner step differs from MAML's, so the objective stays adapt-then-score (and
``strategy=hybrid`` applies).
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

    def inner_update(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int, first_order: bool
    ) -> Params:
        """MAML's SGD step with the learned rate of each parameter element."""
        return self.inner_loop.step(params, x, y, self.learning_rates(), first_order)

    def eval_learning_rate(self) -> Params:
        return {k: r.detach() for k, r in self.learning_rates().items()}
