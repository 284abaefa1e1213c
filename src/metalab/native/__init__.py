"""Native kernels: hand-written fast paths for what a composite of torch ops computes, and
the one question a model asks before taking one.

Why a room of their own: a kernel is C source compiled on first use, loaded with ctypes and
cached (``fused_first_block``), machinery a reader of the models need not meet. And a run
that took one differs from a run that did not in its last bits (float32 sums in another
order, a max-pool near-tie sent elsewhere), so each answer is counted and ``record()`` puts
it in results.json: two runs whose numbers differ slightly can be told apart.

- ``first_block_path(x, conv)``: whether Conv-4's first block (folded convolution + batch
  norm, 2x2 max-pooling) runs this pass as the native kernel or as the composite of torch
  ops. The answer depends on the pass, not only on the config: the kernel has one backward,
  so a graph that may be differentiated twice (MAML's inner loop) or vmapped takes the
  composite path, while hybrid's query passes and evaluation's scoring take the kernel.
- ``record()``: what this process's passes took since its model was built (``reset``):
  training, validation and test, ``strategy=auto``'s timing trial included. Asking costs
  about 5 us a pass (a block's forward: milliseconds).

Layering: ``models.conv4`` asks here; the kernel reuses three leaf modules of ``models``
(``folded_norm``, ``single_backward``, ``vectorised``), so ``models`` refers to this package
as a module (``from metalab import native``), which either may import first.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Literal

import torch
from torch import nn

from metalab.native import fused_first_block

Path = Literal["native", "composite"]

NO_FIRST_BLOCK = (
    "no first block the native kernel fits: it needs model=conv4 with norm=batch, "
    "downsample=maxpool and a first convolution that folds its batch norm (1-3 input channels)"
)

_passes: Counter[str] = Counter()  # why each first-block pass took the composite path; "": native
_lock = threading.Lock()  # hybrid's worker threads ask at once


def first_block_path(x: torch.Tensor, conv: nn.Conv2d) -> Path:
    """The path Conv-4's first block takes for images ``x`` and convolution ``conv`` (whose
    batch norm folds), counted for ``record()``."""
    reason = fused_first_block.why_composite(x, conv)
    with _lock:
        _passes[reason] += 1
    return "composite" if reason else "native"


def reset() -> None:
    """Forget the passes counted so far: a run starts its record when it builds its model."""
    with _lock:
        _passes.clear()


def record() -> dict[str, Any]:
    """The kernels this process's passes took since ``reset``, for results.json:
    ``{"first_block": "native" | "composite", "reason": ..., "passes": {...}}``, "native"
    where any pass ran the kernel."""
    with _lock:
        counts = dict(_passes)
    native = counts.pop("", 0)
    composite = sum(counts.values())
    why = "; ".join(
        f"{reason} ({count})" for reason, count in sorted(counts.items(), key=lambda c: -c[1])
    )
    if native:
        reason = (
            f"the native kernel ran {native} of {native + composite} first-block passes, "
            "those whose graph gets one backward or none"
        )
        if composite:
            reason += f"; the composite path ran the others: {why}"
    else:
        reason = f"the composite path ran every first-block pass: {why}" if why else NO_FIRST_BLOCK
    return {
        "first_block": "native" if native else "composite",
        "reason": reason,
        "passes": {"native": native, "composite": composite},
    }
