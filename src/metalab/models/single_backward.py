"""Whether the graph of a forward pass will be differentiated once, never twice.

Some fast paths (``metalab.native.fused_first_block``) have a backward pass of their own that
is not itself differentiable. Second-order MAML differentiates the query loss through the
inner loop's gradients, so such paths may run only where the caller knows the graph gets a
single backward: hybrid's query passes, at detached adapted parameters, say so with
``backward_once()``. Asking such a graph for a differentiable backward
(``create_graph=True``) raises an error rather than returning a wrong second-order gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ONCE: ContextVar[bool] = ContextVar("metalab_backward_once", default=False)


@contextmanager
def backward_once() -> Iterator[None]:
    token = _ONCE.set(True)
    try:
        yield
    finally:
        _ONCE.reset(token)


def is_backward_once() -> bool:
    return _ONCE.get()
