"""Reptile (Nichol et al. 2018): move the initialisation towards the task-adapted weights.

Each task of a meta-batch is trained for ``inner_steps`` steps of SGD or Adam (beta1 = 0, as
in the paper) on all of its examples (support and query: Reptile has no query loss), in
mini-batches of ``inner_batch`` drawn without replacement. The outer update

    theta <- theta + eps * (mean_i adapted_i - theta)

is written as the pseudo-gradient ``eps * (theta - mean_i adapted_i)`` into ``.grad`` and
applied by the outer optimiser, so learning-rate schedules, gradient clipping and logging
keep working; with ``optimizer.name=sgd optimizer.lr=1`` the update is exactly the formula
(with Adam it is the Adam-on-pseudo-gradient variant the paper also mentions). ``eps``
(``outer_step_size``) anneals linearly to 0 over ``trainer.max_steps`` unless ``anneal=none``.

Evaluation fine-tunes with the same inner optimiser on the full support set, either
transductively (the query set in one batch: it shares batch-norm statistics) or not (each
query example predicted in a batch with the support set, as in the paper's code).
"""

from __future__ import annotations

import torch

from metalab import fast_eval
from metalab.algorithms.base import Backward, FineTuning, Replay, Scores
from metalab.data.episodes import derive_seed
from metalab.data.tasks import Task, TaskBatch
from metalab.distributed import average_gradients, rank_and_world
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params, recording

INNER_OPTIMIZERS = ("sgd", "adam")
ANNEALING = ("linear", "none")
ADAM_STATES = ("carried", "fresh")


def _fields(task: Task) -> tuple[torch.Tensor, ...]:
    """A task's (steps_x, steps_y, all_x, all_y) as ``task_data`` lays them out."""
    return task.support_x, task.support_y, task.query_x, task.query_y


class InnerAdam:
    """Adam with beta1 = 0 on a task, functional (vmap-safe).

    PyTorch's form: p <- p - lr * g / (sqrt(v / (1 - beta2^t)) + eps). It starts from the
    state (v, t) it is given: none for a fresh state per task, or the state the previous task
    left (``adam_state=carried``, the authors' code: one TensorFlow Adam whose slots are never
    reset, so v is a running average of g^2 over recent tasks and t counts every step).
    """

    def __init__(
        self,
        inner_loop: InnerLoop,
        lr: float,
        beta2: float,
        eps: float,
        v: Params | None = None,
        t: int = 0,
    ) -> None:
        self.inner_loop, self.lr, self.beta2, self.eps = inner_loop, lr, beta2, eps
        self.v, self.t = v, t

    def __call__(self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
        grads = self.inner_loop.gradients(params, x, y, first_order=True)
        self.t += 1
        b2 = self.beta2
        if self.v is None:
            self.v = {k: (1 - b2) * g * g for k, g in grads.items()}
        else:
            self.v = {k: b2 * self.v[k] + (1 - b2) * g * g for k, g in grads.items()}
        correction = 1 - b2**self.t
        return {
            k: p - self.lr * grads[k] / ((self.v[k] / correction).sqrt() + self.eps)
            for k, p in params.items()
        }


class Reptile(FineTuning):
    def __init__(
        self,
        inner_loop: InnerLoop,
        *args,
        inner_optimizer: str = "adam",
        adam_beta2: float = 0.999,
        adam_eps: float = 1e-8,
        inner_batch: int | None = None,
        outer_step_size: float = 1.0,
        anneal: str = "linear",
        transductive: bool = True,
        shuffle_seed: int = 0,
        adam_state: str = "carried",
        **kwargs,
    ) -> None:
        super().__init__(inner_loop, *args, **kwargs)
        if adam_state not in ADAM_STATES:
            raise ConfigError(
                f"algorithm.adam_state={adam_state!r} is not known: choose carried (the "
                "authors' code: the inner Adam's state runs on across tasks) or fresh (a new "
                "state per task)."
            )
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ConfigError(
                f"algorithm.inner_optimizer={inner_optimizer!r} is not known: choose sgd or adam."
            )
        if anneal not in ANNEALING:
            raise ConfigError(f"algorithm.anneal={anneal!r} is not known: choose linear or none.")
        if inner_batch is not None and inner_batch < 1:
            raise ConfigError(
                f"algorithm.inner_batch={inner_batch}: set it to at least 1, or null for all."
            )
        if not outer_step_size > 0:
            raise ConfigError(f"algorithm.outer_step_size={outer_step_size}: it must be > 0.")
        self.inner_optimizer, self.adam_beta2, self.adam_eps = inner_optimizer, adam_beta2, adam_eps
        self.inner_batch, self.transductive = inner_batch, transductive
        self.outer_step_size, self.anneal = outer_step_size, anneal
        self.epsilon = outer_step_size
        self.shuffle_seed, self.step = shuffle_seed, 0
        self.adam_state = adam_state
        self.carried_v: Params | None = None  # the running inner Adam state (carried)
        self.carried_t = 0
        # (v, t) before the last outer step's first task, for ``replay``
        self.step_start_state: tuple[Params | None, int] = (None, 0)

    @property
    def carries_state(self) -> bool:
        return self.inner_optimizer == "adam" and self.adam_state == "carried"

    def checkpoint_state(self) -> dict:
        """The carried inner Adam state, for checkpoints: a resumed run continues it and a
        tested checkpoint is evaluated from the state it was saved with."""
        return {"carried_v": self.carried_v, "carried_t": self.carried_t}

    def load_checkpoint_state(self, state: dict) -> None:
        self.carried_v, self.carried_t = state.get("carried_v"), int(state.get("carried_t", 0))

    def on_outer_step(self, step: int, total_steps: int) -> None:
        self.step = step
        if self.anneal == "linear":
            self.epsilon = self.outer_step_size * max(0.0, 1.0 - step / max(1, total_steps))

    def rule(self, lr: float, v: Params | None = None, t: int = 0):
        """The inner update rule, called as (params, x, y, step index) -> params; Adam starts
        from the state (v, t) (none: fresh)."""
        if self.inner_optimizer == "adam":
            return InnerAdam(self.inner_loop, lr, self.adam_beta2, self.adam_eps, v, t)
        return lambda p, x, y, index: self.inner_loop.step(p, x, y, lr, first_order=True)

    def minibatch_order(self, tasks: int, examples: int) -> torch.Tensor:
        """Per task, ``inner_steps * inner_batch`` example indices: shuffled passes, cycled.

        Drawn from (shuffle_seed, outer step) for the whole meta-batch of all ranks, of which
        this rank takes its slice: N devices and a resumed run shuffle as one process would.
        """
        rank, world = rank_and_world()
        generator = torch.Generator().manual_seed(derive_seed(self.shuffle_seed, self.step))
        need = self.inner_steps * self.inner_batch
        rows = []
        for _ in range(tasks * world):
            passes = [torch.randperm(examples, generator=generator)]
            while sum(len(p) for p in passes) < need:
                passes.append(torch.randperm(examples, generator=generator))
            rows.append(torch.cat(passes)[:need])
        return torch.stack(rows[rank * tasks : (rank + 1) * tasks])

    def adapt(self, params: Params, x: torch.Tensor, y: torch.Tensor, update=None) -> Params:
        """``inner_steps`` steps; step i uses the i-th slice of ``inner_batch`` examples of x."""
        update = update or self.rule(self.inner_lr)
        size = self.inner_batch
        for i in range(self.inner_steps):
            xb, yb = (
                (x, y)
                if size is None
                else (x[i * size : (i + 1) * size], y[i * size : (i + 1) * size])
            )
            params = update(params, xb, yb, i)
        return params

    def task_data(self, batch: TaskBatch) -> TaskBatch:
        """All examples of each task (support then query), in the order the steps use them."""
        x = torch.cat([batch.support_x, batch.query_x], 1)
        y = torch.cat([batch.support_y, batch.query_y], 1)
        if self.inner_batch is None:
            return TaskBatch(x, y, x, y)
        order = self.minibatch_order(len(batch), x.shape[1]).to(x.device)
        rows = torch.arange(len(batch), device=x.device).unsqueeze(1)
        return TaskBatch(x[rows, order], y[rows, order], x, y)

    def outer_step(self, params: Params, batch: TaskBatch, strategy, backward: Backward) -> Scores:
        """Write eps * (theta - mean adapted) into each parameter's ``.grad`` (there is no
        loss to differentiate, so ``backward`` is not called).

        Returns per-task loss and metric on the task's own examples after adaptation (a
        training fit, not a query score: Reptile's tasks have no held-out part).
        """
        theta = {k: p.detach() for k, p in params.items()}
        with torch.enable_grad():
            if self.carries_state:
                out = self._carried_tasks(theta, self.task_data(batch))
            else:
                out = strategy.map(self._adapt_and_fit, theta, self.task_data(batch))
        grads = [self.epsilon * (theta[k] - out["param:" + k].mean(0)) for k in params]
        for p, g in zip(params.values(), grads, strict=True):
            p.grad = g.to(p.dtype)
        # DDP averages gradients in backward hooks, which a hand-written .grad bypasses.
        average_gradients(params.values())
        return out["loss"], out["metric"]

    def _adapt_and_fit(
        self,
        params: Params,
        steps_x: torch.Tensor,
        steps_y: torch.Tensor,
        all_x: torch.Tensor,
        all_y: torch.Tensor,
        update=None,
    ) -> dict[str, torch.Tensor]:
        """One task: adapted parameters (``param:<name>``) and their fit on all examples."""
        adapted = self.adapt(params, steps_x, steps_y, update)
        kind = self.inner_loop.kind
        with torch.no_grad():
            prediction = self.inner_loop.predict(adapted, all_x)
            out = {"loss": kind.loss(prediction, all_y), "metric": kind.metric(prediction, all_y)}
        return {**out, **{"param:" + k: v.detach() for k, v in adapted.items()}}

    def _carried_tasks(self, theta: Params, data: TaskBatch) -> dict[str, torch.Tensor]:
        """Tasks one after another, each starting from the Adam state the previous one left
        (so no strategy can batch them: the state makes them sequential)."""
        self.step_start_state = (self.carried_v, self.carried_t)
        outs = []
        for i in range(len(data)):
            update = self.rule(self.inner_lr, self.carried_v, self.carried_t)
            outs.append(self._adapt_and_fit(theta, *_fields(data.task(i)), update))
            self.carried_v = {k: v.detach() for k, v in update.v.items()}
            self.carried_t = update.t
        return {key: torch.stack([o[key] for o in outs]) for key in outs[0]}

    def replay(self, params: Params, batch: TaskBatch, task: int) -> Replay:
        """Task ``task`` as the last ``outer_step`` ran it: the same mini-batches, and with a
        carried Adam state the state the tasks before it left (the run's state is left as
        it is)."""
        theta = {k: p.detach() for k, p in params.items()}
        data = self.task_data(batch)
        v, t = self.step_start_state if self.carries_state else (None, 0)
        with torch.enable_grad():
            for i in range(task if self.carries_state else 0):
                update = self.rule(self.inner_lr, v, t)
                self.adapt(theta, data.support_x[i], data.support_y[i], update)
                v, t = update.v, update.t
            with recording() as steps:
                update = self.rule(self.inner_lr, v, t)
                out = self._adapt_and_fit(theta, *_fields(data.task(task)), update)
        return Replay(float(out["loss"]), steps)

    def _eval_state(self) -> tuple[Params | None, int]:
        """Evaluation starts each task from the training run's Adam state and leaves it as
        it was (the authors' code saves and restores the whole state around each test task)."""
        return (self.carried_v, self.carried_t) if self.carries_state else (None, 0)

    def eval_options(self) -> dict:
        return {
            "update": self.rule(self.eval_inner_lr, *self._eval_state()),
            "transductive": self.transductive,
        }

    def eval_rule(self):
        """The test-time rule for ``fast_eval`` (the same update as ``rule``, no graph)."""
        if self.inner_optimizer == "adam":
            v, t = self._eval_state()
            return fast_eval.adam_rule(self.eval_inner_lr, self.adam_beta2, self.adam_eps, v, t)
        return fast_eval.sgd_rule(self.eval_inner_lr)
