"""Numerical blow-ups: watch the inner gradient, and explain a NaN/Inf loss when one appears.

The inner loop runs inside ``torch.func`` transforms (and vmap), where a data-dependent check
cannot run per step; so the outer loss is checked once per meta-batch, and only when it is
not finite is the first failing task replayed, by the algorithm's own code
(``Algorithm.replay``: ANIL's head-only steps, Meta-SGD's and MAML++'s learned rates,
Reptile's inner Adam and mini-batches, Meta-LSTM's learned update) with each inner step
recorded, to say whether the inner (support) or the outer (query) loss blew up, at which
inner step, and how large the inner gradient was.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
import torch

from metalab.algorithms.base import Algorithm
from metalab.errors import MetalabError
from metalab.inner_loop import gradient_norm

log = logging.getLogger("metalab")


class NonFiniteLossError(MetalabError):
    """The meta-training loss became NaN or infinite."""


def inner_gradient_norm(algorithm: Algorithm, params: dict, batch: Any) -> float | None:
    """The support-loss gradient norm of the batch's first task at ``params`` (None if the
    algorithm has no inner loop)."""
    grads = algorithm.inner_gradient(params, batch.support_x[0], batch.support_y[0])
    return None if grads is None else gradient_norm(grads)


def replay_task(algorithm: Algorithm, params: dict, batch: Any, task: int) -> dict[str, Any]:
    """Replay one task with the algorithm's own update and say where it first went
    non-finite: ``where`` is "inner" (with ``inner_step``, the number of inner steps taken
    before the support loss was not finite) or "outer" (every inner loss finite); ``loss``
    is that loss, ``grad_norm`` the largest inner gradient norm before it, ``inner_steps``
    how many inner steps the replay recorded (0: a method with no inner loop)."""
    replay = algorithm.replay(params, batch, task)
    norms = [0.0]
    for index, step in enumerate(replay.inner_steps):
        if not math.isfinite(step.loss):
            return {
                "where": "inner",
                "inner_step": index,
                "loss": step.loss,
                "grad_norm": max(norms),
                "inner_steps": len(replay.inner_steps),
            }
        norms.append(step.grad_norm)
    return {
        "where": "outer",
        "loss": replay.loss,
        "grad_norm": max(norms),
        "inner_steps": len(replay.inner_steps),
    }


# |w| no trained few-shot network reaches; beyond it the outer update, not the inner loop, failed
WEIGHT_BLOWUP = 1e3


def _diagnose(module: Any, batch: Any, losses: torch.Tensor) -> tuple[str, str]:
    """Which loss blew up and what to lower."""
    cfg = module.cfg
    outer_lr = f"optimizer.lr={cfg.optimizer.lr}"
    outer_fix = f"the outer learning rate is probably too high ({outer_lr}): lower it, or set "
    outer_fix += "optimizer.grad_clip"
    if cfg.algorithm.get("inner_lr") is None:  # Meta-LSTM: the outer step shapes its update
        inner_fix = either_fix = outer_fix
    else:
        inner_lr = f"algorithm.inner_lr={cfg.algorithm.inner_lr}"
        inner_fix = f"the inner learning rate is probably too high ({inner_lr}): lower it"
        either_fix = f"{inner_fix}, or {outer_fix}"
    bad = (~torch.isfinite(losses)).nonzero()
    task = int(bad[0]) if len(bad) else 0
    params = {k: p.detach() for k, p in module.model.named_parameters()}
    learned = [*params.values(), *module.algorithm.parameters()]  # and Meta-SGD's rates...
    if not all(bool(torch.isfinite(p).all()) for p in learned):
        return "the meta-parameters themselves are not finite", outer_fix
    largest = max(float(p.abs().max()) for p in params.values() if p.numel())
    if largest > WEIGHT_BLOWUP:  # an outer step threw the meta-parameters out of range
        return (
            f"the meta-parameters have grown to |w| = {largest:.3g} (the outer update diverged)",
            outer_fix,
        )
    info = replay_task(module.algorithm, params, batch, task)
    norm = info["grad_norm"]
    gradient = f" (inner gradient norm up to {norm:.3g})" if norm else ""
    if info["where"] == "inner" and info["inner_step"] == 0:
        return (
            f"the inner (support) loss of task {task} is {info['loss']} at the meta-parameters, "
            "before any inner step",
            outer_fix,
        )
    if info["where"] == "inner":
        return (
            f"the inner (support) loss of task {task} is {info['loss']} after "
            f"{info['inner_step']} inner steps{gradient}",
            inner_fix,
        )
    if info["inner_steps"] == 0:  # a metric method: one loss, no inner loop to blame
        return f"the loss of task {task} is {float(losses[task])}", outer_fix
    return (
        f"the outer (query) loss of task {task} is {float(losses[task])} after adaptation"
        f"{gradient}",
        inner_fix if norm and norm > 1e3 else either_fix,
    )


def non_finite_error(module: Any, batch: Any, losses: torch.Tensor) -> NonFiniteLossError:
    """One sentence: the step, which loss, how large the inner gradient was, what to lower."""
    where, cause = _diagnose(module, batch, losses)
    error = NonFiniteLossError(
        f"the meta-training loss is not finite at step {module.global_step}: {where}; {cause}. "
        "The checkpoints written before this step are kept."
    )
    error.step = module.global_step
    return error


class InnerGradientMonitor(pl.Callback):
    """Every ``every_n_steps`` outer steps, log the inner gradient norm of one task and warn
    when it exceeds ``threshold``: an exploding inner loop is named before it turns into NaN."""

    def __init__(self, every_n_steps: int, threshold: float) -> None:
        self.every_n_steps, self.threshold = max(1, int(every_n_steps)), float(threshold)
        self.warned = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        params = dict(pl_module.model.named_parameters())
        norm = inner_gradient_norm(pl_module.algorithm, params, batch)
        if norm is None:
            return
        # Straight to the loggers, at the step it was measured: self.log would repeat this
        # value on every logged step until the next measurement, as if measured there.
        for logger in trainer.loggers:
            logger.log_metrics({"train/inner_grad_norm": norm}, step=trainer.global_step)
        if (norm > self.threshold or not math.isfinite(norm)) and not self.warned:
            self.warned = True
            log.warning(
                "the inner gradient norm is %.3g at step %d (warning threshold "
                "numerics.inner_grad_warn=%g): "
                "the inner loop may diverge; lower algorithm.inner_lr (now %s).",
                norm,
                trainer.global_step,
                self.threshold,
                pl_module.cfg.algorithm.get("inner_lr"),
            )
