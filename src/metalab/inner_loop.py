"""The inner loop, written once: functional gradient descent on a task's support set.

Parameters are plain dicts of tensors applied with ``torch.func.functional_call`` and
differentiated with ``torch.func.grad``, so the same code runs per task and under
``torch.func.vmap`` over a batch of tasks, and the outer loss differentiates through it
(second order) unless ``first_order`` cuts the graph.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad

from metalab.losses import TaskKind

Params = dict[str, torch.Tensor]


class InnerLoop:
    def __init__(self, model: nn.Module, kind: TaskKind) -> None:
        self.model, self.kind = model, kind

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.kind.loss(self.predict(params, x), y)

    def step(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float, first_order: bool
    ) -> Params:
        """One SGD step on the support loss.

        First order differentiates at detached parameters: the update keeps an identity
        path back to the initial parameters but no graph through the gradient itself.
        """
        at = {k: p.detach() for k, p in params.items()} if first_order else params
        grads = grad(self.loss)(at, x, y)
        return {k: p - lr * grads[k] for k, p in params.items()}

    def adapt(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int,
        lr: float,
        first_order: bool = False,
    ) -> Params:
        for _ in range(steps):
            params = self.step(params, x, y, lr, first_order)
        return params

    def evaluate(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        steps: int,
        lr: float,
    ) -> dict[str, torch.Tensor]:
        """Query loss and metric before adaptation and after each of ``steps`` inner steps."""
        params = {k: p.detach() for k, p in params.items()}
        losses, metrics = [], []
        for step in range(steps + 1):
            if step:
                params = self.step(params, support_x, support_y, lr, first_order=True)
            with torch.no_grad():
                prediction = self.predict(params, query_x)
                losses.append(self.kind.loss(prediction, query_y))
                metrics.append(self.kind.metric(prediction, query_y))
        return {"loss": torch.stack(losses), "metric": torch.stack(metrics)}
