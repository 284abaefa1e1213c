"""The inner loop, written once: functional gradient descent on a task's support set.

Parameters are plain dicts of tensors applied with ``torch.func.functional_call`` and
differentiated with ``torch.func.grad``, so the same code runs per task and under
``torch.func.vmap`` over a batch of tasks, and the outer loss differentiates through it
(second order) unless ``first_order`` cuts the graph.

Every algorithm of the MAML family adapts through ``step``; what differs between them is
said with its arguments: a learning rate that is a number or a tensor per parameter
(Meta-SGD's per-element rates, MAML++'s per-layer per-step rates, learnable and
differentiated through), and the subset of parameters that adapt (ANIL's head, MAML++
with per-step batch-norm parameters). ``evaluate`` takes the algorithm's own step rule.

Every support-loss gradient of the inner loop goes through ``loss_and_gradients``, so that
``recording`` can see each inner step of an algorithm's own rule: the NaN diagnosis
(``numerics.replay_task``) replays a task with it instead of re-coding the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from metalab.errors import ConfigError
from metalab.losses import TaskKind

Params = dict[str, torch.Tensor]
LearningRate = float | torch.Tensor | Params
# (params, support x, support y, index of the step) -> adapted params
Update = Callable[[Params, torch.Tensor, torch.Tensor, int], Params]


def scored_steps(steps: int, points: int | None) -> list[int]:
    """The inner steps after which the query set is scored for the test-time curve.

    Every step when ``points`` is None or covers them all, else at most ``points`` steps at a
    regular stride from 0, the last step always among them: scoring all 300 queries of a
    20-way task after each of Reptile's 50 steps cost more than the adaptation itself.
    """
    if points is not None and points < 1:
        raise ConfigError(
            f"eval.curve_points={points}: set it to at least 1 (the last step only), or null "
            "for every inner step."
        )
    if points is None or points >= steps + 1:
        return list(range(steps + 1))
    if points == 1:
        return [steps]
    stride = -(-steps // (points - 1))  # ceil
    return sorted({*range(0, steps, stride), steps})


@dataclass(frozen=True)
class InnerStep:
    """One recorded inner step: the support loss it differentiated and its gradient's norm."""

    loss: float
    grad_norm: float


_RECORDS: ContextVar[list[InnerStep] | None] = ContextVar("metalab_inner_steps", default=None)


@contextmanager
def recording() -> Iterator[list[InnerStep]]:
    """Within it, each inner step appends an ``InnerStep`` to the list it yields.

    For replaying one task outside any ``vmap`` (reading the loss syncs with the device);
    outside it, the inner loop pays one context-variable lookup per step.
    """
    records: list[InnerStep] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


def gradient_norm(grads: Params) -> float:
    """The Euclidean norm of all gradients together, summed in float64."""
    return math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads.values()))


def rate_for(lr: LearningRate, name: str) -> float | torch.Tensor:
    """The learning rate of one parameter: a shared number/tensor, or its entry in a dict."""
    return lr[name] if isinstance(lr, dict) else lr


class InnerLoop:
    def __init__(self, model: nn.Module, kind: TaskKind) -> None:
        self.model, self.kind = model, kind

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.kind.loss(self.predict(params, x), y)

    def predict_query(
        self, params: Params, support_x: torch.Tensor, query_x: torch.Tensor, transductive: bool
    ) -> torch.Tensor:
        """Query predictions. Transductive: the whole query set in one batch (its batch-norm
        statistics are shared across queries). Otherwise each query example is predicted in
        a batch with the support set, so no query sees another (Reptile's protocol)."""
        if transductive:
            return self.predict(params, query_x)

        def one(x: torch.Tensor) -> torch.Tensor:
            return self.predict(params, torch.cat([support_x, x.unsqueeze(0)]))[-1]

        from metalab.models.norm import decomposed_batch_norm  # vmap-safe batch norm

        with decomposed_batch_norm():
            return vmap(one)(query_x)

    def loss_and_gradients(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        first_order: bool,
        keys: Collection[str] | None = None,
    ) -> tuple[torch.Tensor, Params]:
        """The support loss and its gradients w.r.t. ``keys`` (all parameters when None);
        the others are held fixed. First order returns both with no graph behind them."""
        at = {k: p.detach() for k, p in params.items()} if first_order else params
        if keys is None:
            grads, loss = grad_and_value(self.loss)(at, x, y)
        else:
            fixed = {k: p for k, p in at.items() if k not in keys}

            def loss_of_subset(subset: Params) -> torch.Tensor:
                return self.loss({**fixed, **subset}, x, y)

            grads, loss = grad_and_value(loss_of_subset)({k: at[k] for k in keys})
        records = _RECORDS.get()
        if records is not None:
            records.append(InnerStep(float(loss.detach()), gradient_norm(grads)))
        if first_order:  # also cuts the path through the inputs (ANIL's body features)
            return loss.detach(), {k: g.detach() for k, g in grads.items()}
        return loss, grads

    def gradients(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        first_order: bool,
        keys: Collection[str] | None = None,
    ) -> Params:
        """``loss_and_gradients`` without the loss."""
        return self.loss_and_gradients(params, x, y, first_order, keys)[1]

    def step(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        lr: LearningRate,
        first_order: bool,
        keys: Collection[str] | None = None,
    ) -> Params:
        """One SGD step on the support loss, of ``keys`` only when given.

        First order differentiates at detached parameters: the update keeps an identity
        path back to the initial parameters (and to a learnable ``lr``) but no graph
        through the gradient itself.
        """
        grads = self.gradients(params, x, y, first_order, keys)
        return {k: p - rate_for(lr, k) * grads[k] if k in grads else p for k, p in params.items()}

    def adapt(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int,
        lr: LearningRate,
        first_order: bool = False,
        keys: Collection[str] | None = None,
    ) -> Params:
        for _ in range(steps):
            params = self.step(params, x, y, lr, first_order, keys)
        return params

    def evaluate(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        steps: int,
        lr: LearningRate,
        update: Update | None = None,
        transductive: bool = True,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Query loss and metric before adaptation and after each of ``steps`` inner steps,
        or only after the steps in ``score_at`` (see ``scored_steps``).

        ``update`` replaces the plain first-order SGD step (an algorithm's own rule: Adam,
        per-step rates or batch-norm parameters); it is called with the 0-based step index.
        """
        if update is None:

            def update(p: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
                return self.step(p, x, y, lr, first_order=True)

        params = {k: p.detach() for k, p in params.items()}
        losses, metrics = [], []
        for step in range(steps + 1):
            if step:
                adapted = update(params, support_x, support_y, step - 1)
                params = {k: p.detach() for k, p in adapted.items()}
            if score_at is not None and step not in score_at:
                continue
            with torch.no_grad():
                prediction = self.predict_query(params, support_x, query_x, transductive)
                losses.append(self.kind.loss(prediction, query_y))
                metrics.append(self.kind.metric(prediction, query_y))
        return {"loss": torch.stack(losses), "metric": torch.stack(metrics)}
