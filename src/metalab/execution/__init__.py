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
  depends on the model, the workload and the device, so only a measurement can tell
  (``cache``: its choice kept per machine and workload).

One module each: ``base`` (the interface), ``loop``, ``vmap``, ``hybrid``, ``auto``,
``memory`` (graph memory of a vmap chunk), ``threads`` (worker threads of one intra-op
thread each), ``cache`` and ``build`` (the ``strategy=`` setting as an object).
"""

from metalab.execution.auto import AutoStrategy
from metalab.execution.base import Backward, Strategy, TaskFn
from metalab.execution.build import (
    CPU_VMAP_MEMORY_MIB,
    STRATEGIES,
    build_strategy,
    default_vmap_memory_mib,
)
from metalab.execution.hybrid import HybridStrategy
from metalab.execution.loop import LoopStrategy
from metalab.execution.memory import fit_chunk, graph_memory_mib
from metalab.execution.vmap import VmapStrategy

__all__ = [
    "CPU_VMAP_MEMORY_MIB",
    "STRATEGIES",
    "AutoStrategy",
    "Backward",
    "HybridStrategy",
    "LoopStrategy",
    "Strategy",
    "TaskFn",
    "VmapStrategy",
    "build_strategy",
    "default_vmap_memory_mib",
    "fit_chunk",
    "graph_memory_mib",
]
