"""MAML (Finn et al. 2017): learn an initialisation from which a few gradient steps fit a task.

The meta-objective of a task is its query loss after adapting on its support set; its
gradient flows back through the adaptation (second order) unless ``first_order`` is set.

MAML is also the base of the family: each member changes the rule of one inner step
(``inner_update``: Meta-SGD's learned rates, MAML++'s per-step rates and batch norm) or
the whole adaptation (``adapt_task``: ANIL's head-only loop), and keeps the query scoring
of ``AdaptingAlgorithm`` and the test-time fine-tuning of ``FineTuning``.
"""

from __future__ import annotations

import torch

from metalab.algorithms.base import AdaptingAlgorithm, FineTuning
from metalab.inner_loop import Params


class MAML(FineTuning, AdaptingAlgorithm):
    @property
    def current_first_order(self) -> bool:
        """Whether this outer step drops second derivatives (MAML++ anneals it)."""
        return self.first_order

    def inner_update(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int, first_order: bool
    ) -> Params:
        """Inner step ``index`` of meta-training: one SGD step of all parameters at
        ``inner_lr``."""
        return self.inner_loop.step(params, x, y, self.inner_lr, first_order)

    def adapt_task(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params:
        """``inner_steps`` applications of ``inner_update`` on the support set."""
        first_order = self.current_first_order
        for index in range(self.inner_steps):
            params = self.inner_update(params, support_x, support_y, index, first_order)
        return params
