"""How the tasks of a meta-batch are run: one after another, vectorised, or split.

A strategy takes a pure per-task function ``fn(params, support_x, support_y, query_x,
query_y)`` (an algorithm's bound ``meta_objective``) and runs it over a ``TaskBatch``.
``meta_gradient`` also back-propagates the mean of the per-task losses into ``params``
(through ``backward``, so Lightning's ``manual_backward`` and DDP see every call).

- ``loop``: one task after another; the smallest memory.
- ``vmap``: ``torch.func.vmap`` over chunks of tasks.
- ``hybrid``: for algorithms whose objective is "adapt on the support set, then score the
  query set once" (``metalab.objectives.AdaptThenScore``: MAML, FOMAML, ANIL, Meta-SGD,
  Meta-LSTM; not MAML++, which scores after every step): the inner loops of a chunk of
  tasks run as one vmap, the large query passes one task at a time with native kernels, and
  one backward through the vectorised inner loops finishes the chunk's meta-gradient; on a
  CPU, chunks run side by side on worker threads.
- ``auto``: times the candidates on the first batch and keeps the fastest; which one wins
  depends on the model, the workload and the device, so only a measurement can tell.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import logging
import os
import time
from collections.abc import Callable

import torch
from torch.func import vmap

from metalab import strategy_cache, task_threads
from metalab.data.tasks import TaskBatch
from metalab.distributed import agree_mean, agree_min, is_distributed
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params
from metalab.models.single_backward import backward_once
from metalab.models.vectorised import vectorised
from metalab.objectives import AdaptThenScore, split_objective

log = logging.getLogger(__name__)

TaskFn = Callable[..., object]
Backward = Callable[[torch.Tensor], None]


def _task_args(batch: TaskBatch) -> tuple[torch.Tensor, ...]:
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


class LoopStrategy(Strategy):
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
            one = _task_args(batch.slice(0, 1))
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
            yield _task_args(batch.slice(start, start + size))

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


def _resident_mib() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: no cheap reading, so no memory bound from it
        return 0.0


def _release_free_heap() -> None:
    """Hand the heap's free memory back to the OS (glibc ``malloc_trim``), so that what a
    measured call allocates shows up as growth of the resident set. Without it, a call made
    after other work (auto's trial of the loop) reuses freed heap pages, and one hybrid task
    read 1.1 MiB instead of 42: a chunk of 32 tasks and 3x the loop's peak memory."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: may read low after work
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def fit_chunk(
    budget_mib: float, run_one_task: Callable[[], object], device: torch.device, tasks: int
) -> tuple[int, float]:
    """How many tasks per vectorised call fit ``budget_mib``, from one task's graph memory.

    Under DDP all ranks take the smallest rank's answer, so that they run the same number of
    backward passes (each one is an all-reduce).
    """
    task_mib = graph_memory_mib(run_one_task, device)
    chunk = max(1, min(tasks, int(budget_mib // max(task_mib, 1e-3))))
    return agree_min(chunk), task_mib


def graph_memory_mib(run: Callable[[], object], device: torch.device) -> float:
    """Memory that ``run``'s result (with its autograd graph) keeps alive, in MiB.

    CUDA: the allocator's count. CPU: the growth of the resident set while the result is
    alive, measured from a trimmed heap (see ``_release_free_heap``).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        result = run()
        torch.cuda.synchronize(device)
        grown = (torch.cuda.memory_allocated(device) - before) / 2**20
    else:
        _release_free_heap()
        before = _resident_mib()
        result = run()
        grown = _resident_mib() - before
    del result
    return max(grown, 0.0)


def _with_own_model(algorithm: AdaptThenScore) -> AdaptThenScore:
    """A shallow copy of ``algorithm`` running a copy of its model, for a worker thread
    (``task_threads.map_tasks``); made once per outer step, not per chunk. What the
    algorithm meta-learns itself (Meta-SGD's rates) stays shared: it is read, never swapped."""
    own = copy.copy(algorithm)
    inner_loop = algorithm.inner_loop
    own.inner_loop = InnerLoop(copy.deepcopy(inner_loop.model), inner_loop.kind)
    return own


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
        scorers = (
            [algorithm] if workers == 1 else [_with_own_model(algorithm) for _ in range(workers)]
        )
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


class AutoStrategy(Strategy):
    """Measures each candidate on the first meta-batch and delegates to the fastest.

    Timing uses the real meta-batch (small trial batches mislead: vmap's cost per task
    falls with the batch). After a warm-up, each candidate runs until ``min_seconds`` have
    passed or ``max_repeats`` runs, at least ``min_repeats``, the candidates taking turns;
    the fastest run counts, since on a shared machine noise only adds time.

    ``meta_gradient`` and ``map`` are chosen apart, each on its first call: the first
    serves MAML-style training, the second Reptile's training and every algorithm's
    evaluation, and the fastest path for one is not always the fastest for the other.
    """

    def __init__(
        self,
        candidates: list,
        min_repeats: int = 2,
        max_repeats: int = 8,
        min_seconds: float = 1.0,
        cache: bool = False,
        retime: bool = False,
        settings: dict | None = None,
    ) -> None:
        self.candidates = candidates
        # strategy_cache: reuse the choice measured before for this machine and workload
        # (retime: measure again and replace it); never under DDP, where every rank must
        # take part in the same measurement.
        self.cache, self.retime = cache, retime
        self.settings = dict(settings or {})  # what built the candidates (vmap chunk, budget)
        self.min_repeats, self.max_repeats, self.min_seconds = min_repeats, max_repeats, min_seconds
        self.chosen = None
        self.timings: dict[str, float] = {}
        self.chosen_map = None
        self.map_timings: dict[str, float] = {}
        self._warm_outputs: dict[str, object] = {}  # each candidate's warm-up result

    @property
    def name(self) -> str:
        if self.chosen is None and self.chosen_map is None:
            return "auto (not yet measured)"
        if self.chosen is None or self.chosen_map is None or self.chosen is self.chosen_map:
            return f"auto -> {(self.chosen or self.chosen_map).name}"
        return f"auto -> {self.chosen.name} (per-task maps: {self.chosen_map.name})"

    def _wants_more(self, runs: list[float]) -> bool:
        return len(runs) < self.max_repeats and (
            len(runs) < self.min_repeats or sum(runs) < self.min_seconds
        )

    @staticmethod
    def _time(run: Callable[[], object], on_cuda: bool) -> float:
        if on_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def _skips_vmap(
        self, strategy, fn: TaskFn, params: Params, batch: TaskBatch, mapping: bool
    ) -> bool:
        if not isinstance(strategy, VmapStrategy) or len(self.candidates) == 1:
            return False
        if not batch.support_x.is_cuda and any(p.dim() >= 4 for p in params.values()):
            # vmap of per-task convolutions measured 0.5x the loop at 3.6-5x its memory on
            # a CPU (benchmarks/README.md); trying it would only raise auto's peak memory.
            log.info("strategy=auto: skipping vmap for a convolutional model on the CPU")
            return True
        # a map keeps no graph: it is not sized (its chunk is the meta-gradient's, or all tasks)
        if not mapping and strategy.size_chunk(fn, params, batch) == 1 < len(batch):
            log.info("strategy=auto: skipping vmap, one task per chunk is the loop")
            return True
        return False

    def _runnable(
        self, fn: TaskFn, params: Params, batch: TaskBatch, mapping: bool = False
    ) -> dict[str, tuple[object, Callable, float]]:
        """Each candidate that can run this function, warmed up: the strategy, a call of it,
        and the warm-up's seconds.

        The first candidate (the loop, always runnable) comes last: the heap its graph frees
        fits inside a hybrid graph's, the reverse grows it (auto's peak memory read 1.68x the
        textbook loop's with the loop first, 1.12x with it last; hybrid alone 1.18x).
        """
        leaves = list(params.values())

        def discard(loss: torch.Tensor) -> None:
            torch.autograd.grad(loss, leaves, allow_unused=True)

        runnable: dict[str, tuple[object, Callable, float]] = {}
        self._warm_outputs: dict[str, object] = {}
        on_cuda = batch.support_x.is_cuda
        for strategy in self.candidates[1:] + self.candidates[:1]:
            if isinstance(strategy, HybridStrategy) and (mapping or split_objective(fn) is None):
                continue  # hybrid maps with the loop, and needs an adapt-then-score objective
            if self._skips_vmap(strategy, fn, params, batch, mapping):
                continue

            def run(s=strategy) -> object:
                if mapping:
                    return s.map(fn, params, batch)
                return s.meta_gradient(fn, params, batch, discard)

            def keep(s=strategy, run=run) -> None:
                self._warm_outputs[s.name] = run()

            try:
                warm_up = self._time(keep, on_cuda)  # vmap's first call alone can take seconds
            except RuntimeError as error:  # e.g. vmap refuses a model's random ops (DropBlock)
                if strategy is self.candidates[0]:
                    raise
                log.info("strategy=auto: %s cannot run this model (%s)", strategy.name, error)
                continue
            runnable[strategy.name] = (strategy, run, warm_up)
        return runnable

    def _fastest(self, runnable: dict, batch: TaskBatch, what: str) -> tuple[object, dict]:
        """Times the candidates in turns, one run each per round, so that a machine that
        slows down or speeds up during the trial weighs on all of them alike; a lone
        candidate is taken as its warm-up timed it."""
        on_cuda = batch.support_x.is_cuda
        runs: dict[str, list[float]] = {name: [] for name in runnable}
        if len(runnable) == 1:
            ((name, (_, _, warm_up)),) = runnable.items()
            runs[name].append(warm_up)
        while len(runnable) > 1 and any(self._wants_more(r) for r in runs.values()):
            for name, (_, run, _) in runnable.items():
                if self._wants_more(runs[name]):
                    runs[name].append(self._time(run, on_cuda))
        names = list(runs)  # the same on every rank: skips depend on fn and chunks only
        rates = agree_mean([len(batch) / min(runs[name]) for name in names])
        timings = dict(zip(names, rates, strict=True))
        chosen = max((runnable[name][0] for name in names), key=lambda s: timings[s.name])
        measured = ", ".join(f"{name} {rate:.1f} tasks/s" for name, rate in timings.items())
        log.info("strategy=auto measured the %s: %s; chose %s", what, measured, chosen.name)
        return chosen, timings

    def _cache_key(self, what: str, fn: TaskFn, params: Params, batch: TaskBatch) -> str | None:
        if not self.cache or is_distributed():
            return None
        candidates = [type(c).__name__ for c in self.candidates]
        return strategy_cache.workload_key(what, fn, params, batch, candidates, self.settings)

    def _cached(self, key: str | None, what: str) -> tuple[object, dict] | None:
        """The choice measured before for this workload on this machine, if any."""
        entry = None if key is None or self.retime else strategy_cache.lookup(key)
        if entry is None:
            return None
        try:
            chosen = self.candidates[int(entry["chosen"])]
            if isinstance(chosen, VmapStrategy) and chosen.chunk is None:
                chosen.chunk = entry.get("chunk")
            timings = {str(k): float(v) for k, v in dict(entry["timings"]).items()}
        except (KeyError, IndexError, TypeError, ValueError):
            return None  # an entry of another layout: measure
        log.info(
            "strategy=auto: %s: %s, as measured on this machine for this workload (%s; "
            "strategy_retime=true measures again)",
            what,
            chosen.name,
            entry.get("measured", "earlier"),
        )
        return chosen, timings

    def _remember(self, key: str | None, chosen: object, timings: dict) -> None:
        if key is not None:
            entry = {
                "chosen": self.candidates.index(chosen),
                "chunk": getattr(chosen, "chunk", None),
                "timings": timings,
            }
            strategy_cache.remember(key, entry)

    def meta_gradient(
        self, fn: TaskFn, params: Params, batch: TaskBatch, backward: Backward
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.chosen is None:
            key = self._cache_key("meta-gradient", fn, params, batch)
            cached = self._cached(key, "meta-gradient")
            if cached is not None:
                self.chosen, self.timings = cached
            else:
                runnable = self._runnable(fn, params, batch)
                self.chosen, self.timings = self._fastest(runnable, batch, "meta-gradient")
                self._warm_outputs = {}  # a meta-gradient's trial wrote no .grad: it runs again
                self._remember(key, self.chosen, self.timings)
        return self.chosen.meta_gradient(fn, params, batch, backward)

    def map(self, fn: TaskFn, params: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        if self.chosen_map is None:
            key = self._cache_key("per-task map", fn, params, batch)
            cached = self._cached(key, "per-task map")
            if cached is not None:
                self.chosen_map, self.map_timings = cached
                return self.chosen_map.map(fn, params, batch)
            runnable = self._runnable(fn, params, batch, mapping=True)
            self.chosen_map, self.map_timings = self._fastest(runnable, batch, "per-task map")
            self._remember(key, self.chosen_map, self.map_timings)
            # The chosen map's warm-up already mapped this batch: running it again doubled
            # the first evaluation batch (50 of a 600-task test's tasks, ~8% of it).
            return self._warm_outputs.pop(self.chosen_map.name)
        return self.chosen_map.map(fn, params, batch)

    def state_dict(self) -> dict[str, object]:
        """The choices, for checkpoints: a resumed run keeps them instead of timing again (a
        new pick could differ in the last bits of the gradient from the uninterrupted run's)."""
        state: dict[str, object] = {}
        if self.chosen is not None:
            state.update(
                chosen=self.candidates.index(self.chosen),
                chunk=getattr(self.chosen, "chunk", None),
                timings=dict(self.timings),
            )
        if self.chosen_map is not None:
            state.update(
                chosen_map=self.candidates.index(self.chosen_map),
                map_chunk=getattr(self.chosen_map, "chunk", None),
                map_timings=dict(self.map_timings),
            )
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "chosen" in state:
            self.chosen = self.candidates[int(state["chosen"])]
            if isinstance(self.chosen, VmapStrategy):
                self.chosen.chunk = state["chunk"]
            self.timings = dict(state["timings"])
        if "chosen_map" in state:
            self.chosen_map = self.candidates[int(state["chosen_map"])]
            if isinstance(self.chosen_map, VmapStrategy) and self.chosen_map is not self.chosen:
                self.chosen_map.chunk = state["map_chunk"]
            self.map_timings = dict(state["map_timings"])
        if state:
            log.info("strategy=auto: kept the checkpoint's choice, %s", self.name)


STRATEGIES = ("loop", "vmap", "hybrid", "auto")


# Default budget for an automatically sized vmap chunk: on a CPU it keeps auto's peak memory
# within ~1.5x the loop's for Conv-4 (one task ~150 MiB); on a GPU, half its free memory.
CPU_VMAP_MEMORY_MIB = 256.0


def default_vmap_memory_mib(accelerator: str) -> float:
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free / 2**20 / 2
    return CPU_VMAP_MEMORY_MIB


def build_strategy(
    name: str,
    vmap_chunk: int | None,
    vmap_memory_mib: float | None = None,
    accelerator: str = "cpu",
    cache: bool = True,
    retime: bool = False,
):
    """``vmap_chunk=None`` sizes vmap's chunks to ``vmap_memory_mib`` (device default if None)."""
    budget = vmap_memory_mib or default_vmap_memory_mib(accelerator)
    vmap_budget = budget if vmap_chunk is None else None
    if name == "loop":
        return LoopStrategy()
    if name == "vmap":
        return VmapStrategy(vmap_chunk, vmap_budget)
    if name == "hybrid":
        return HybridStrategy(budget)
    if name == "auto":
        return AutoStrategy(
            [LoopStrategy(), VmapStrategy(vmap_chunk, vmap_budget), HybridStrategy(budget)],
            cache=cache,
            retime=retime,
            settings={"vmap_chunk": vmap_chunk, "memory_mib": budget},
        )
    raise ConfigError(f"strategy={name!r} is not known: choose one of {', '.join(STRATEGIES)}.")
