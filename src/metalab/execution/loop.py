"""loop: one task after another; the smallest memory, and always runnable."""

from __future__ import annotations

import logging

import torch

from metalab.data.tasks import TaskBatch
from metalab.execution import threads as task_threads
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
        """Task after task; a ``Replicable`` function (test-time adaptation) runs its tasks
        on one worker thread per intra-op thread, each worker on its own copy of the model:
        a test's many small support steps then keep both cores busy, where two intra-op
        threads share each small operation (benchmarks/NOTES.md)."""
        tasks = list(zip(*task_args(batch), strict=True))
        workers = 1
        if isinstance(fn, task_threads.Replicable):
            workers = task_threads.workers_for(len(tasks), batch.query_x.device)
        fns = [fn] + [fn.replicate() for _ in range(workers - 1)]  # type: ignore[union-attr]
        outputs = task_threads.map_tasks(lambda i, f: f(params, *tasks[i]), len(tasks), fns)
        return {key: torch.stack([o[key] for o in outputs]) for key in outputs[0]}
