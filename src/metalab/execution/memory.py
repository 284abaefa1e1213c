"""How much memory a vmap chunk's graph takes, measured rather than guessed."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Callable

import torch

from metalab.distributed import agree_min

log = logging.getLogger(__name__)


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
