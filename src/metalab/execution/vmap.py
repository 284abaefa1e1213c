"""vmap: torch.func.vmap over chunks of tasks, sized to a memory budget."""

from __future__ import annotations

import logging

import torch
from torch.func import vmap

from metalab.data.tasks import TaskBatch
from metalab.errors import ConfigError
from metalab.execution.base import Backward, Strategy, TaskFn, task_args
from metalab.execution.memory import fit_chunk
from metalab.inner_loop import Params
from metalab.models.vectorised import vectorised

log = logging.getLogger(__name__)


class VmapStrategy(Strategy):
    """``torch.func.vmap`` over chunks of tasks; one backward per chunk.

    ``chunk`` tasks per call; with ``chunk=None`` and a ``memory_budget_mib``, the chunk is
    sized on the first batch from the memory one vmapped task keeps alive, so that a chunk's
    graph stays within the budget (a vmap over a whole Conv-4 meta-batch takes ~9x the loop's
    memory); with neither, the whole meta-batch is one call.
    """

    def __init__(self, chunk: int | None = None, memory_budget_mib: float | None = None) -> None:
        if chunk is not None and chunk < 1:
            raise ConfigError(f"vmap_chunk={chunk}: set it to at least 1 task, or null for auto.")
        if memory_budget_mib is not None and not memory_budget_mib > 0:
            raise ConfigError(
                f"vmap_memory_mib={memory_budget_mib}: it must be positive, or null for the "
                "device's default."
            )
        self.chunk, self.memory_budget_mib = chunk, memory_budget_mib
        self.task_mib: float | None = None

    @property
    def name(self) -> str:
        if self.chunk is None and self.memory_budget_mib is not None:
            return f"vmap(chunk=auto, {self.memory_budget_mib:.0f} MiB)"
        return f"vmap(chunk={self.chunk or 'all'})"

    def size_chunk(self, fn: TaskFn, params: Params, batch: TaskBatch) -> int:
        """The chunk for this batch: configured, or what fits the memory budget."""
        if self.chunk is None and self.memory_budget_mib is not None:
            one = task_args(batch.slice(0, 1))
            self.chunk, self.task_mib = fit_chunk(
                self.memory_budget_mib,
                lambda: self._run(fn, params, one),
                batch.support_x.device,
                len(batch),
            )
            log.info("vmap: %d tasks per call (%.1f MiB per task)", self.chunk, self.task_mib)
        return self.chunk or len(batch)

    @staticmethod
    def _run(fn: TaskFn, params: Params, args) -> object:
        with vectorised():
            return vmap(fn, in_dims=(None, 0, 0, 0, 0))(params, *args)

    def _chunks(self, batch: TaskBatch, size: int):
        for start in range(0, len(batch), size):
            yield task_args(batch.slice(start, start + size))

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.size_chunk(fn, params, batch)
        losses, metrics = [], []
        for args in self._chunks(batch, size):
            loss, metric = self._run(fn, params, args)
            backward(loss.sum() / len(batch))
            losses.append(loss.detach())
            metrics.append(metric.detach())
        return torch.cat(losses), torch.cat(metrics)

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        size = self.chunk or len(batch)
        outputs = [self._run(fn, params, args) for args in self._chunks(batch, size)]
        return {key: torch.cat([o[key] for o in outputs]) for key in outputs[0]}
