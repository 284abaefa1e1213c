"""MAML++ (Antoniou et al. 2019): MAML with the tricks that make it train stably.

Each trick is a switch; with all of them off this is MAML, gradient for gradient:
- ``multi_step_loss``: the meta-objective is a weighted sum of the query losses after
  every inner step; the weights start uniform and, over ``msl_anneal_steps`` outer steps,
  move to the final step (the schedule of the paper's code, counted in steps, not epochs).
  From outer step ``msl_anneal_steps`` on, the objective is the final step's query loss
  alone, MAML's, as in the authors' code (``multi_step_loss_num_epochs``): one query pass
  per task instead of one per step, and the hybrid strategy can run it.
- ``learnable_lr``: one learnable learning rate per parameter tensor (layer) and per step.
- ``per_step_bn``: a batch-norm weight and bias per inner step, meta-learned and not
  adapted in the inner loop. The statistics are per step by construction here: the norm
  layer always uses the statistics of the batch at hand, so there are no running averages
  to keep per step (and evaluation is transductive, as for MAML).
- ``first_order_steps``: derivative-order annealing, first order for the first outer steps.
Cosine annealing of the outer learning rate is ``optimizer.scheduler=cosine``.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.algorithms.maml import MAML
from metalab.algorithms.metasgd import escape
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params
from metalab.models.norm import BatchStatNorm


def multi_step_loss_weights(steps: int, outer_step: int, anneal_steps: int) -> list[float]:
    """Uniform at first; the non-final weights fall linearly to 0.03/steps, the last rises."""
    decay = 1.0 / steps / max(1, anneal_steps)
    floor = 0.03 / steps
    weights = [max(1.0 / steps - outer_step * decay, floor) for _ in range(steps - 1)]
    last = min(1.0 / steps + outer_step * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return [*weights, last]


def batch_norm_parameter_names(model: nn.Module) -> list[str]:
    return [
        f"{module_name}.{name}"
        for module_name, module in model.named_modules()
        if isinstance(module, BatchStatNorm)
        for name, _ in module.named_parameters()
    ]


class MAMLPlusPlus(MAML):
    def __init__(
        self,
        inner_loop: InnerLoop,
        *args,
        multi_step_loss: bool = True,
        msl_anneal_steps: int = 5000,
        learnable_lr: bool = True,
        per_step_bn: bool = True,
        first_order_steps: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(inner_loop, *args, **kwargs)
        if msl_anneal_steps < 0 or first_order_steps < 0:
            raise ConfigError(
                f"algorithm.msl_anneal_steps={msl_anneal_steps} and algorithm.first_order_steps="
                f"{first_order_steps}: both count outer steps and must be >= 0."
            )
        model = inner_loop.model
        self.multi_step_loss, self.msl_anneal_steps = multi_step_loss, msl_anneal_steps
        self.learnable_lr, self.per_step_bn = learnable_lr, per_step_bn
        self.first_order_steps = first_order_steps
        self.outer_step_index = 0  # the outer step the schedules are at
        names = [name for name, _ in model.named_parameters()]
        bn_names = batch_norm_parameter_names(model) if per_step_bn else []
        if per_step_bn and not bn_names:
            raise ConfigError(
                "algorithm.per_step_bn=true but the model has no batch norm: set "
                "algorithm.per_step_bn=false, or use model=conv4 with model.norm=batch."
            )
        self.bn_names = bn_names
        # None: every parameter adapts (MAML); else batch norm's per-step copies do not.
        self.adapt_keys = [n for n in names if n not in bn_names] if per_step_bn else None
        values = dict(model.named_parameters())
        self.step_bn = nn.ParameterDict(
            {
                escape(n): nn.Parameter(values[n].detach().repeat(self.inner_steps, 1))
                for n in bn_names
            }
        )
        adapted = self.adapt_keys if self.adapt_keys is not None else names
        self.step_rates = nn.ParameterDict(
            {
                escape(n): nn.Parameter(torch.full((self.inner_steps,), float(self.inner_lr)))
                for n in (adapted if learnable_lr else [])
            }
        )

    def on_outer_step(self, step: int, total_steps: int) -> None:
        self.outer_step_index = step

    @property
    def current_first_order(self) -> bool:
        return self.first_order or self.outer_step_index < self.first_order_steps

    @property
    def multi_step_loss_active(self) -> bool:
        return self.multi_step_loss and self.outer_step_index < self.msl_anneal_steps

    def scores_once(self) -> bool:
        """Adapt-then-score (MAML's objective) whenever the multi-step loss is not on."""
        return not self.multi_step_loss_active

    def loss_weights(self) -> list[float]:
        return multi_step_loss_weights(
            self.inner_steps, self.outer_step_index, self.msl_anneal_steps
        )

    def at_step(self, params: Params, index: int) -> Params:
        """``params`` with the batch-norm weight and bias of inner step ``index``."""
        if not self.bn_names:
            return params
        index = min(index, self.inner_steps - 1)
        return {**params, **{n: self.step_bn[escape(n)][index] for n in self.bn_names}}

    def update(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        index: int,
        first_order: bool,
        fixed_lr: float,
    ) -> Params:
        """Inner step ``index``: its batch-norm parameters, its learning rates, one SGD step."""
        params = self.at_step(params, index)
        if self.learnable_lr:
            index = min(index, self.inner_steps - 1)
            lr = {n: self.step_rates[escape(n)][index] for n in self.adapt_keys or params}
        else:
            lr = fixed_lr
        return self.inner_loop.step(params, x, y, lr, first_order, self.adapt_keys)

    def inner_update(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int, first_order: bool
    ) -> Params:
        return self.update(params, x, y, index, first_order, self.inner_lr)

    def meta_objective(self, params, support_x, support_y, query_x, query_y):
        """Adapt, then score (MAML's), or while the multi-step loss is on the weighted query
        losses after every inner step."""
        if not self.multi_step_loss_active:
            return super().meta_objective(params, support_x, support_y, query_x, query_y)
        first_order = self.current_first_order
        loss = None
        for index, weight in enumerate(self.loss_weights()):
            params = self.inner_update(params, support_x, support_y, index, first_order)
            step_loss, metric = self.query_objective(params, query_x, query_y)
            loss = weight * step_loss if loss is None else loss + weight * step_loss
        return loss, metric

    def evaluate(self, params, support_x, support_y, query_x, query_y, score_at=None):
        """MAML's evaluation from the step-0 batch-norm parameters, with the learnt rates."""
        return super().evaluate(
            self.at_step(params, 0), support_x, support_y, query_x, query_y, score_at
        )

    def eval_options(self) -> dict:
        def update(p: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
            return self.update(p, x, y, index, True, self.eval_inner_lr)

        return {"update": update}
