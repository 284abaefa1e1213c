"""Independent pieces of work (tasks, chunks of tasks) spread over Python threads of one
intra-op thread each.

Why: on a CPU a task's passes mix compute-bound convolutions with memory-bound batch norm,
pooling and the first block's large activation, and a vectorised inner loop is many small
operations. Two pieces side by side, one thread each, keep both the arithmetic and the
memory of the cores busy, where one piece at a time on two intra-op threads makes them take
turns: hybrid's 32 query passes ran 1.49x faster (benchmarks/NOTES.md). Each piece's
arithmetic is the same; results come back in order.
"""

from __future__ import annotations

import contextvars
import copy
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

from metalab.inner_loop import InnerLoop

Result = TypeVar("Result")
State = TypeVar("State")


def with_own_model(algorithm: Any) -> Any:
    """A shallow copy of ``algorithm`` running a deep copy of its model, for a worker thread
    (``map_tasks``). What the algorithm meta-learns itself (Meta-SGD's rates, Meta-LSTM's
    gates) stays shared: it is read, never swapped."""
    own = copy.copy(algorithm)
    inner_loop = algorithm.inner_loop
    own.inner_loop = InnerLoop(copy.deepcopy(inner_loop.model), inner_loop.kind)
    return own


class Replicable:
    """A per-task function that worker threads may each run on a copy of its own
    (``replicate``), for work whose tasks are independent of each other and of their order:
    test-time adaptation. Training maps stay plain functions (Reptile's carried inner Adam
    state runs through the tasks in order). Calls and ``repr`` (the strategy cache's key)
    are those of the function."""

    def __init__(self, fn: Callable[..., Any], replicate: Callable[[], Callable[..., Any]]):
        self.fn, self.replicate = fn, replicate

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return repr(self.fn)


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def workers_for(tasks: int, device: torch.device) -> int:
    """One worker per intra-op thread on a CPU; none elsewhere (a GPU queues its kernels
    anyway), nor under CPU autocast, which is thread-local and would not reach them."""
    if device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return 1
    return max(1, min(torch.get_num_threads(), tasks))


def map_tasks(run: Callable[[int, State], Result], tasks: int, states: list[State]) -> list[Result]:
    """``[run(0, state), ..., run(tasks - 1, state)]``, on one worker thread per state when
    there are several: each thread holds one state for all its calls. A state per thread:
    ``torch.func.functional_call`` swaps a module's parameters in place, so two threads
    calling it on one module leave it holding the other's tensors. Each call sees the
    caller's grad mode and context variables (``metalab.models.vectorised``)."""
    threads = min(len(states), tasks)
    if threads <= 1:
        return [run(task, states[0]) for task in range(tasks)]
    grad_enabled = torch.is_grad_enabled()  # thread-local too
    free = queue.SimpleQueue()
    for state in states[:threads]:
        free.put(state)
    local = threading.local()
    context = contextvars.copy_context()

    def in_worker(task: int) -> Result:
        if not hasattr(local, "state"):
            local.state = free.get_nowait()
        with torch.set_grad_enabled(grad_enabled):
            return context.copy().run(run, task, local.state)

    with intra_op_threads(1), ThreadPoolExecutor(threads) as pool:
        return list(pool.map(in_worker, range(tasks)))
