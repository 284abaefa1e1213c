"""Whether a forward pass runs under ``torch.func.vmap`` over tasks.

Some per-task fast paths must step aside under vmap: the native batch-norm kernel gives wrong
second-order gradients there (torch 2.13, ``shared/notes/vmap_batchnorm_repro.py``), and
memory-layout conversions have no batching rule. Vectorised strategies run their per-task
function inside ``vectorised()``; modules ask ``is_vectorised()``.
Autocast is off inside (``metalab.precision``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from metalab.precision import autocast_off

_VECTORISED: ContextVar[bool] = ContextVar("metalab_vectorised", default=False)


@contextmanager
def vectorised() -> Iterator[None]:
    token = _VECTORISED.set(True)
    try:
        with autocast_off():
            yield
    finally:
        _VECTORISED.reset(token)


def is_vectorised() -> bool:
    return _VECTORISED.get()
