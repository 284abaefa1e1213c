"""How the tasks of a meta-batch are run: one after another, or vectorised with vmap.

A strategy takes a pure per-task function ``fn(params, support_x, support_y, query_x,
query_y)`` and runs it over a ``TaskBatch``. ``meta_gradient`` also back-propagates the
mean of the per-task losses into ``params`` (through ``backward``, so Lightning's
``manual_backward`` and DDP see every call). ``auto`` times the candidates on the first
batch it sees and keeps the fastest: on a CPU a vmap over many tasks is often slower and
always larger than a loop, on a GPU the reverse, so only a measurement can tell.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch.func import vmap

from metalab.data.tasks import TaskBatch
from metalab.errors import ConfigError
from metalab.inner_loop import Params
from metalab.models.norm import decomposed_batch_norm

log = logging.getLogger(__name__)

TaskFn = Callable[..., object]
Backward = Callable[[torch.Tensor], None]


def _task_args(batch: TaskBatch) -> tuple[torch.Tensor, ...]:
    return batch.support_x, batch.support_y, batch.query_x, batch.query_y


class LoopStrategy:
    """Per task: the smallest memory footprint; the graph of each task is freed at once."""

    name = "loop"

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        losses, metrics = [], []
        for task in zip(*_task_args(batch), strict=True):
            loss, metric = fn(params, *task)
            backward(loss / len(batch))
            losses.append(loss.detach())
            metrics.append(metric.detach())
        return torch.stack(losses), torch.stack(metrics)

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        outputs = [fn(params, *task) for task in zip(*_task_args(batch), strict=True)]
        return {key: torch.stack([o[key] for o in outputs]) for key in outputs[0]}


class VmapStrategy:
    """``torch.func.vmap`` over chunks of ``chunk`` tasks (None: all); one backward per chunk."""

    def __init__(self, chunk: int | None = None) -> None:
        if chunk is not None and chunk < 1:
            raise ConfigError(f"vmap_chunk={chunk}: set it to at least 1 task, or null for all.")
        self.chunk = chunk
        self.name = f"vmap(chunk={chunk or 'all'})"

    def _chunks(self, batch: TaskBatch):
        size = self.chunk or len(batch)
        for start in range(0, len(batch), size):
            yield _task_args(batch.slice(start, start + size))

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batched = vmap(fn, in_dims=(None, 0, 0, 0, 0))
        losses, metrics = [], []
        for args in self._chunks(batch):
            with decomposed_batch_norm():
                loss, metric = batched(params, *args)
            backward(loss.sum() / len(batch))
            losses.append(loss.detach())
            metrics.append(metric.detach())
        return torch.cat(losses), torch.cat(metrics)

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        batched = vmap(fn, in_dims=(None, 0, 0, 0, 0))
        with decomposed_batch_norm():
            outputs = [batched(params, *args) for args in self._chunks(batch)]
        return {key: torch.cat([o[key] for o in outputs]) for key in outputs[0]}


class AutoStrategy:
    """Measures each candidate on the first meta-batch and delegates to the fastest.

    Timing uses the real meta-batch (small trial batches mislead: vmap's cost per task
    falls with the batch). After a warm-up (vmap's first call alone can take seconds),
    each candidate runs until ``min_seconds`` have passed or ``max_repeats`` runs, at least
    ``min_repeats``; the fastest run counts, since on a shared machine noise only adds time.
    """

    def __init__(
        self,
        candidates: list,
        min_repeats: int = 2,
        max_repeats: int = 8,
        min_seconds: float = 1.0,
    ) -> None:
        self.candidates = candidates
        self.min_repeats, self.max_repeats, self.min_seconds = min_repeats, max_repeats, min_seconds
        self.chosen = None
        self.timings: dict[str, float] = {}

    @property
    def name(self) -> str:
        return f"auto -> {self.chosen.name}" if self.chosen else "auto (not yet measured)"

    def _fastest_run(self, run: Callable[[], object], on_cuda: bool) -> float:
        run()  # warm-up
        runs: list[float] = []
        while len(runs) < self.max_repeats and (
            len(runs) < self.min_repeats or sum(runs) < self.min_seconds
        ):
            if on_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if on_cuda:
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - start)
        return min(runs)

    def _measure(self, fn: TaskFn, params: Params, batch: TaskBatch) -> None:
        leaves = list(params.values())

        def discard(loss: torch.Tensor) -> None:
            torch.autograd.grad(loss, leaves, allow_unused=True)

        for strategy in self.candidates:
            seconds = self._fastest_run(
                lambda s=strategy: s.meta_gradient(fn, params, batch, discard),
                batch.support_x.is_cuda,
            )
            self.timings[strategy.name] = len(batch) / seconds
        self.chosen = max(self.candidates, key=lambda s: self.timings[s.name])
        rates = ", ".join(f"{name} {rate:.1f} tasks/s" for name, rate in self.timings.items())
        log.info("strategy=auto measured %s; chose %s", rates, self.chosen.name)

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.chosen is None:
            self._measure(fn, params, batch)
        return self.chosen.meta_gradient(fn, params, batch, backward)

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        return (self.chosen or self.candidates[0]).map(fn, params, batch)


STRATEGIES = ("loop", "vmap", "auto")


def build_strategy(name: str, vmap_chunk: int | None):
    if name == "loop":
        return LoopStrategy()
    if name == "vmap":
        return VmapStrategy(vmap_chunk)
    if name == "auto":
        return AutoStrategy([LoopStrategy(), VmapStrategy(vmap_chunk)])
    raise ConfigError(f"strategy={name!r} is not known: choose one of {', '.join(STRATEGIES)}.")
