"""loop: one task after another; the smallest memory, and always runnable."""

from __future__ import annotations

import logging

import torch

from metalab.data.tasks import TaskBatch
from metalab.execution.base import Backward, Strategy, TaskFn, task_args
from metalab.inner_loop import Params

log = logging.getLogger(__name__)


class LoopStrategy(Strategy):
    """Per task: the smallest memory footprint; the graph of each task is freed at once."""

    name = "loop"

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        losses, metrics = [], []
        for task in zip(*task_args(batch), strict=True):
            loss, metric = fn(params, *task)
            backward(loss / len(batch))
            losses.append(loss.detach())
            metrics.append(metric.detach())
        return torch.stack(losses), torch.stack(metrics)

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        outputs = [fn(params, *task) for task in zip(*task_args(batch), strict=True)]
        return {key: torch.stack([o[key] for o in outputs]) for key in outputs[0]}
