"""auto: time the candidates on the first meta-batch and keep the fastest."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from metalab.data.tasks import TaskBatch
from metalab.distributed import agree_mean, is_distributed
from metalab.execution import cache as strategy_cache
from metalab.execution.base import Backward, Strategy, TaskFn
from metalab.execution.hybrid import HybridStrategy
from metalab.execution.vmap import VmapStrategy
from metalab.inner_loop import Params
from metalab.objectives import split_objective

log = logging.getLogger(__name__)


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
        self.chosen_split: bool | None = None  # whether ``chosen`` was picked for a split objective
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
        split = split_objective(fn) is not None
        if self.chosen is not None and self.chosen_split is None:
            self.chosen_split = split  # a checkpoint from before the shape was recorded
        if self.chosen is not None and split != self.chosen_split:
            # MAML++'s objective becomes adapt-then-score when its multi-step loss ends:
            # the candidates that can run it change, so the choice is made again.
            log.info("strategy=auto: the objective %s adapt-then-score: measuring again",
                     "is now" if split else "is no longer")  # fmt: skip
            self.chosen = None
        if self.chosen is None:
            self.chosen_split = split
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
                chosen_split=self.chosen_split,
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
            self.chosen_split = state.get("chosen_split")
        if "chosen_map" in state:
            self.chosen_map = self.candidates[int(state["chosen_map"])]
            if isinstance(self.chosen_map, VmapStrategy) and self.chosen_map is not self.chosen:
                self.chosen_map.chunk = state["map_chunk"]
            self.map_timings = dict(state["map_timings"])
        if state:
            log.info("strategy=auto: kept the checkpoint's choice, %s", self.name)
