"""Where mixed precision (``trainer.precision=bf16-mixed`` / ``16-mixed``) stops.

Lightning runs ``training_step`` under autocast, and metalab's manual backward is called from
inside it. Two places step out:

- backward passes: PyTorch advises against running them under autocast, and a second-order
  meta-gradient's backward runs differentiable ops (the double-backward formulas) that
  autocast would put in half precision;
- vectorised tasks (``torch.func.vmap``): torch's batching rules do not apply autocast
  consistently (a vmapped Conv-4 under bf16 autocast received a bfloat16 input and a float32
  bias and failed, on an H200 and on the CPU), so they run in the parameters' precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch


@contextmanager
def autocast_off() -> Iterator[None]:
    """Autocast switched off on every device where it is on (nothing to do elsewhere)."""
    with ExitStack() as stack:
        for device in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        yield
