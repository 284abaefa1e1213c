"""hybrid: the inner loops of a chunk of tasks as one vmap, the query passes per task."""

from __future__ import annotations

import logging

import torch
from torch.func import vmap

from metalab.data.tasks import TaskBatch
from metalab.errors import ConfigError
from metalab.execution import threads as task_threads
from metalab.execution.base import Backward, Strategy, TaskFn
from metalab.execution.loop import LoopStrategy
from metalab.execution.memory import fit_chunk
from metalab.inner_loop import Params
from metalab.models.single_backward import backward_once
from metalab.models.vectorised import vectorised
from metalab.objectives import AdaptThenScore, split_objective

log = logging.getLogger(__name__)


class HybridStrategy(Strategy):
    """Inner loops vectorised over tasks, query passes per task, one backward to finish.

    Why: the inner loop works on the small support sets, where a per-task loop is dominated
    by per-operation overhead (and second order doubles it), so one vmap over all tasks is
    cheap; the query sets are 15x larger, where native per-task kernels (channels-last,
    native batch norm) beat vmap's batched ones and one task's graph at a time keeps memory
    at the loop's. By the chain rule the meta-gradient is ``sum_i v_i . d(phi_i)/d(theta)``
    with ``v_i`` the query-loss gradient at task i's adapted parameters ``phi_i``: each
    ``v_i`` comes from a detached copy of ``phi_i``, then the surrogate ``sum_i <phi_i, v_i>``
    is back-propagated through the vectorised inner loops (second order, or the identity
    path for first order). Tasks go in chunks whose adaptation graphs fit a memory budget.

    On a CPU the chunks run side by side on worker threads of one intra-op thread each
    (``task_threads``): every phase of a chunk (vectorised adaptation, query passes, the
    backward through the adaptation) then keeps a core busy, where one chunk at a time on
    two intra-op threads leaves them taking turns on the many small and memory-bound
    operations. A worker returns its chunk's gradient (``torch.autograd.grad``); the sum, in
    chunk order whichever thread ran a chunk, reaches ``params`` by one ``backward``.
    """

    name = "hybrid"

    def __init__(self, memory_budget_mib: float = 256.0) -> None:
        self.memory_budget_mib = memory_budget_mib
        self.chunk: int | None = None

    @staticmethod
    def _adapt(algorithm: AdaptThenScore, params: Params, support_x, support_y) -> Params:
        with vectorised():
            return vmap(algorithm.adapt_task, in_dims=(None, 0, 0))(params, support_x, support_y)

    def _chunk(self, algorithm: AdaptThenScore, params: Params, batch: TaskBatch) -> int:
        if self.chunk is None:
            one = batch.slice(0, 1)
            self.chunk, task_mib = fit_chunk(
                self.memory_budget_mib,
                lambda: self._adapt(algorithm, params, one.support_x, one.support_y),
                batch.support_x.device,
                len(batch),
            )
            log.info(
                "hybrid: adapting %d tasks per vmap call (%.1f MiB each)", self.chunk, task_mib
            )
        return self.chunk

    @staticmethod
    def _query_pass(scorer: AdaptThenScore, adapted: Params, chunk: TaskBatch, task: int):
        """Task ``task``'s query loss, metric and ``v`` (zeros where a parameter is unused)."""
        leaves = {k: phi[task].detach().requires_grad_() for k, phi in adapted.items()}
        with backward_once():  # differentiated once, at detached parameters
            loss, metric = scorer.query_objective(leaves, chunk.query_x[task], chunk.query_y[task])
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        zero_if_unused = [
            torch.zeros_like(leaf) if g is None else g
            for leaf, g in zip(leaves.values(), grads, strict=True)
        ]
        return loss.detach(), metric.detach(), zero_if_unused

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        algorithm = split_objective(fn)
        if algorithm is None:
            raise ConfigError(
                "strategy=hybrid needs an algorithm that adapts once and then scores the query "
                "set (MAML, FOMAML, ANIL, Meta-SGD, Meta-LSTM); use strategy=loop or "
                "strategy=auto for this one."
            )
        size = self._chunk(algorithm, params, batch)
        workers = task_threads.workers_for(len(batch), batch.query_x.device)
        if workers > 1:  # the chunks in flight together share the memory budget
            size = max(1, size // workers)
        scorers = [algorithm]
        if workers > 1:
            scorers = [task_threads.with_own_model(algorithm) for _ in range(workers)]
        # What a worker differentiates: the parameters and what the algorithm meta-learns
        # itself (Meta-SGD's rates, Meta-LSTM's gates).
        own = algorithm.parameters() if isinstance(algorithm, torch.nn.Module) else ()
        leaves = [p for p in [*params.values(), *own] if p.requires_grad]

        def run_chunk(index: int, scorer: AdaptThenScore):
            chunk = batch.slice(index * size, (index + 1) * size)
            adapted = self._adapt(scorer, params, chunk.support_x, chunk.support_y)
            passes = [self._query_pass(scorer, adapted, chunk, t) for t in range(len(chunk))]
            surrogate = sum(
                (phi * torch.stack([v[i] for _, _, v in passes])).sum()
                for i, phi in enumerate(adapted.values())
            ) / len(batch)
            if workers == 1:  # straight into params (and DDP's hooks, and AMP's loss scale)
                backward(surrogate)
                gradient = None
            else:
                gradient = torch.autograd.grad(surrogate, leaves, allow_unused=True)
            return [p[0] for p in passes], [p[1] for p in passes], gradient

        chunks = task_threads.map_tasks(run_chunk, -(-len(batch) // size), scorers)
        if workers > 1:
            backward(_inner_product(leaves, [gradient for _, _, gradient in chunks]))
        losses = [loss for chunk_losses, _, _ in chunks for loss in chunk_losses]
        metrics = [metric for _, chunk_metrics, _ in chunks for metric in chunk_metrics]
        return torch.stack(losses), torch.stack(metrics)

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        return LoopStrategy().map(fn, params, batch)


def _inner_product(leaves: list[torch.Tensor], gradients: list) -> torch.Tensor:
    """``sum_p <p, g_p>`` with ``g_p`` the sum of the chunks' gradients (in chunk order, so
    the same bits whichever thread ran which chunk): its backward adds exactly ``g_p`` to
    ``p.grad``."""
    total = torch.zeros((), dtype=leaves[0].dtype, device=leaves[0].device)
    for position, leaf in enumerate(leaves):
        parts = [g[position] for g in gradients if g[position] is not None]
        if parts:
            total = total + (leaf * torch.stack(parts).sum(0)).sum()
    return total
