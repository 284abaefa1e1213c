"""The contract between an algorithm and the rest of metalab.

``MetaLearner`` (``metalab.module``), the NaN diagnosis (``metalab.numerics``) and the
benchmarks call these methods and nothing else, so a new algorithm is one class that fills
them in, found without reading the trainer:

- ``Algorithm``: what every algorithm provides. ``outer_step`` leaves the meta-gradient of
  a meta-batch in ``.grad``; ``evaluate`` adapts to one test task and scores its query set;
  ``replay`` recomputes one task's training loss with the algorithm's own code (for the
  diagnosis); plus the settings the trainer reads (``fixed_head``, ``eval_inner_steps``),
  the per-step hook ``on_outer_step`` and the state a checkpoint carries.
- ``TaskObjective``: the meta-gradient is that of a per-task objective (``meta_objective``),
  run over the meta-batch by the execution strategy (the MAML family, Meta-LSTM, the metric
  methods). Reptile, whose outer step is not a gradient, is an ``Algorithm`` only.
- ``AdaptingAlgorithm``: adapt, then score. An algorithm's idea is its adaptation rule
  (``adapt_task``); the query set is scored by one function for all (``query_objective``).
  Strategies may exploit the split (``strategy=hybrid``: ``metalab.objectives``).
- ``FineTuning``: what the MAML family and Reptile share: the inner-loop settings and the
  test-time fine-tuning on the support set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from metalab import fast_eval, objectives
from metalab.data.tasks import TaskBatch
from metalab.errors import ConfigError
from metalab.execution.threads import with_own_model
from metalab.inner_loop import InnerLoop, InnerStep, LearningRate, Params, recording
from metalab.models.vectorised import is_vectorised

Backward = Callable[[torch.Tensor], None]
Scores = tuple[torch.Tensor, torch.Tensor]  # (loss, metric)


@dataclass
class Replay:
    """One task of a meta-batch recomputed with the algorithm's own code: each inner step's
    support loss and gradient norm, in order, and the task's training loss at the end."""

    loss: float
    inner_steps: list[InnerStep] = field(default_factory=list)


class Algorithm(nn.Module, ABC):
    """What every algorithm provides. An ``nn.Module``, so that what it meta-learns besides
    the model (Meta-SGD's rates, Meta-LSTM's gates) is a parameter of the LightningModule:
    in the outer optimiser and in the checkpoints."""

    # Whether the model ends in a linear head with one output per training way (the MAML
    # family, Meta-LSTM); the metric methods embed only, so their test ways may differ.
    fixed_head: ClassVar[bool] = True
    # The kinds of task (``dataset.task``) it learns from: supervised episodes, or a
    # reinforcement-learning task family's rollouts (MAML-RL); checked before any data.
    task_kinds: ClassVar[tuple[str, ...]] = ("classification", "regression")
    # Inner steps at test time: the length of the test-time curve (0: no inner loop).
    eval_inner_steps: int = 0
    # The model and its task kind, run functionally; None for methods with no inner loop.
    inner_loop: InnerLoop | None = None
    # Whether ``outer_step`` writes a finished update (theta - theta_new) into ``.grad``
    # instead of a gradient (MAML-RL's TRPO step): the outer optimiser must then be plain
    # SGD with lr 1, no schedule and no clipping, which the module checks.
    writes_step: ClassVar[bool] = False
    # Whether test tasks may run side by side on worker threads (``for_worker``): those of
    # the MAML family, Reptile and Meta-LSTM (many small support steps each); not MAML-RL's
    # (its simulators are shared) nor the metric methods' (one cheap pass a task).
    parallel_eval: ClassVar[bool] = False

    def for_worker(self) -> Algorithm:
        """A copy whose ``evaluate`` a worker thread can run beside this one's: its own copy
        of the model (``functional_call`` swaps a module's parameters in place)."""
        return with_own_model(self)

    def on_outer_step(self, step: int, total_steps: int) -> None:
        """Called before each outer step; annealed algorithms (MAML++, Reptile) use it."""

    @abstractmethod
    def outer_step(
        self, params: Params, batch: TaskBatch, strategy: Any, backward: Backward
    ) -> Scores:
        """Leave the meta-gradient of ``batch`` in the ``.grad`` of ``params`` (and of this
        module's parameters), through ``backward`` where there is a loss to differentiate;
        return the per-task training losses and metrics, each of shape [tasks]."""

    @abstractmethod
    def evaluate(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One test task: adapt on the support set, score the query set before adaptation
        and after each test-time step (those in ``score_at`` when given); ``loss`` and
        ``metric``, one value per scored step."""

    @abstractmethod
    def replay(self, params: Params, batch: TaskBatch, task: int) -> Replay:
        """Task ``task`` of the meta-batch just trained on, recomputed from ``params`` by the
        same rule as ``outer_step``, its inner steps recorded (``inner_loop.recording``)."""

    def inner_gradient(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params | None:
        """The support-loss gradient at ``params`` (what the numerics monitor watches); None
        for methods with no inner loop."""
        if self.inner_loop is None:
            return None
        detached = {k: p.detach() for k, p in params.items()}
        with torch.enable_grad():
            return self.inner_loop.gradients(detached, support_x, support_y, first_order=True)

    def step_metrics(self) -> dict[str, float]:
        """Extra numbers of the last outer step, logged as ``train/<name>`` (MAML-RL's
        returns before and after adaptation); none here."""
        return {}

    def checkpoint_state(self) -> dict:
        """State kept outside the parameters that a resumed run needs (Reptile's carried
        inner Adam); saved in ``checkpoint["metalab"]["algorithm"]``."""
        return {}

    def load_checkpoint_state(self, state: dict) -> None:
        """Restore what ``checkpoint_state`` saved."""


class TaskObjective(Algorithm):
    """An algorithm whose meta-gradient is the mean gradient of a per-task objective."""

    @abstractmethod
    def meta_objective(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
    ) -> Scores:
        """The task's training loss (differentiable w.r.t. ``params`` and this module's
        parameters) and its metric, for logging."""

    def outer_step(
        self, params: Params, batch: TaskBatch, strategy: Any, backward: Backward
    ) -> Scores:
        return strategy.meta_gradient(self.meta_objective, params, batch, backward)

    def replay(self, params: Params, batch: TaskBatch, task: int) -> Replay:
        one = batch.task(task)
        with torch.enable_grad(), recording() as steps:
            loss, _ = self.meta_objective(
                params, one.support_x, one.support_y, one.query_x, one.query_y
            )
        return Replay(float(loss.detach()), steps)


class AdaptingAlgorithm(TaskObjective, objectives.AdaptThenScore):
    """Adapt, then score: ``meta_objective = query_objective(adapt_task(...))``.

    A subclass says its idea in ``adapt_task``; the query scoring is this class's. An
    algorithm that keeps this ``meta_objective`` can run with ``strategy=hybrid``.
    """

    inner_loop: InnerLoop

    @abstractmethod
    def adapt_task(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params:
        """The adaptation rule: all of the model's parameters after the inner loop on the
        support set (those it does not adapt unchanged), differentiable w.r.t. ``params``
        and this module's parameters as far as the algorithm's order says."""

    def query_objective(
        self, adapted: Params, query_x: torch.Tensor, query_y: torch.Tensor
    ) -> Scores:
        """The query loss at the adapted parameters, and its metric."""
        prediction = self.inner_loop.predict(adapted, query_x)
        kind = self.inner_loop.kind
        return kind.loss(prediction, query_y), kind.metric(prediction.detach(), query_y)

    parallel_eval: ClassVar[bool] = True

    # Stated, not inherited from TaskObjective: ``objectives.split_objective`` recognises
    # an adapt-then-score objective by this very function.
    meta_objective = objectives.AdaptThenScore.meta_objective


class FineTuning(Algorithm):
    """The inner-loop settings and the test-time fine-tuning of the MAML family and Reptile.

    Evaluation adapts on the support set with ``eval_inner_steps`` steps of the test-time
    rule and scores the query set after each; subclasses change where adaptation starts,
    its rates or its rule through ``eval_learning_rate`` and ``eval_options``.
    """

    parallel_eval: ClassVar[bool] = True

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

    def evaluate(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """A plain first-order rule (SGD with a number as the rate, Reptile's) runs without
        graphs (``fast_eval``), the others per task (``evaluate_per_task``), as does every
        rule under ``vmap`` (``strategy=vmap``'s per-task map), where the graph-free path's
        ``requires_grad_`` and multi-tensor (``_foreach``) updates cannot run."""
        rule = None if is_vectorised() else fast_eval.rule_for(self)
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
        reference ``tests/algorithms/test_eval_speed.py`` compares the fast one with."""
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
