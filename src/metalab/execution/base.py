"""Strategy: the interface every way of running a meta-batch's tasks implements."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from metalab.data.tasks import TaskBatch
from metalab.inner_loop import Params

log = logging.getLogger(__name__)

TaskFn = Callable[..., object]
Backward = Callable[[torch.Tensor], None]


def task_args(batch: TaskBatch) -> tuple[torch.Tensor, ...]:
    return batch.support_x, batch.support_y, batch.query_x, batch.query_y


class Strategy:
    """What every strategy offers; only ``auto`` has state worth a checkpoint (its choice)."""

    name = "strategy"

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Back-propagate the mean of ``fn``'s per-task losses; per-task losses and metrics."""
        raise NotImplementedError

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """``fn`` per task (it returns a dict of tensors), stacked over the tasks."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Nothing to restore."""
