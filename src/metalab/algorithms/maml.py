"""MAML (Finn et al. 2017): learn an initialisation from which a few gradient steps fit a task.

The meta-objective of a task is its query loss after adapting on its support set; its
gradient flows back through the adaptation (second order) unless ``first_order`` is set.

MAML is also the base of the family: an algorithm is an ``nn.Module`` so that whatever it
meta-learns besides the model (Meta-SGD's rates, MAML++'s per-step parameters) is a
parameter of the LightningModule, optimised by the outer optimiser and checkpointed.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from metalab import fast_eval
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, LearningRate, Params
from metalab.objectives import AdaptThenScore


class MAML(nn.Module, AdaptThenScore):
    def __init__(
        self,
        inner_loop: InnerLoop,
        inner_steps: int,
        inner_lr: float,
        eval_inner_steps: int,
        eval_inner_lr: float,
        first_order: bool = False,
    ) -> None:
        super().__init__()
        for key, value in [("inner_steps", inner_steps), ("eval_inner_steps", eval_inner_steps)]:
            if value < 1:
                raise ConfigError(f"algorithm.{key}={value}: set it to at least 1.")
        for key, value in [("inner_lr", inner_lr), ("eval_inner_lr", eval_inner_lr)]:
            if not value > 0:
                raise ConfigError(f"algorithm.{key}={value}: the learning rate must be positive.")
        self.inner_loop = inner_loop  # a plain object: the model is registered by the caller
        self.inner_steps, self.inner_lr = inner_steps, inner_lr
        self.eval_inner_steps, self.eval_inner_lr = eval_inner_steps, eval_inner_lr
        self.first_order = first_order

    def on_outer_step(self, step: int, total_steps: int) -> None:
        """Called before each outer step; annealed algorithms (MAML++, Reptile) use it."""

    def adapt_task(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params:
        """The inner loop with the training settings (the first half of the objective)."""
        return self.inner_loop.adapt(
            params, support_x, support_y, self.inner_steps, self.inner_lr, self.first_order
        )

    def query_objective(
        self, adapted: Params, query_x: torch.Tensor, query_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query loss at the adapted parameters and its metric (the second half)."""
        prediction = self.inner_loop.predict(adapted, query_x)
        kind = self.inner_loop.kind
        return kind.loss(prediction, query_y), kind.metric(prediction.detach(), query_y)

    def evaluate(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Adapt on the support set with the test-time steps, score the query set after each
        (or after those in ``score_at``); subclasses change where adaptation starts, its rates
        or its rule via ``eval_options``. A plain first-order rule (SGD with a number as the
        rate, Reptile's) runs without graphs (``fast_eval``), the others per task as before."""
        rule = fast_eval.rule_for(self)
        if rule is None:
            return self.evaluate_per_task(
                params, support_x, support_y, query_x, query_y, score_at=score_at
            )
        return fast_eval.adapt_and_score(
            self.inner_loop,
            params,
            (support_x, support_y),
            (query_x, query_y),
            self.eval_inner_steps,
            rule,
            self.eval_options().get("transductive", True),
            score_at,
        )

    def evaluate_per_task(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``InnerLoop.evaluate`` with this algorithm's rule: the general path, and the
        reference ``tests/test_eval_speed.py`` compares the fast one with."""
        return self.inner_loop.evaluate(
            params,
            support_x,
            support_y,
            query_x,
            query_y,
            self.eval_inner_steps,
            self.eval_learning_rate(),
            score_at=score_at,
            **self.eval_options(),
        )

    def eval_learning_rate(self) -> LearningRate:
        """The inner learning rate at test time (Meta-SGD: its learned rates)."""
        return self.eval_inner_lr

    def eval_options(self) -> dict:
        """Extra arguments of ``InnerLoop.evaluate`` (update rule, transductive); none here."""
        return {}
