"""Agreement across DDP ranks for decisions each rank makes from its own measurements.

Under DDP every rank must run the same number of backward passes per step (each one is an
all-reduce), so choices that come from timing or memory readings (``strategy=auto``'s pick,
a vmap chunk sized to a memory budget) are reduced to one value that all ranks share. Without
an initialised process group these functions return their input.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _reduce(values: list[float], op) -> list[float]:
    if not is_distributed():
        return values
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    )
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def agree_min(value: int) -> int:
    """The smallest of the ranks' values (e.g. a chunk every rank can afford)."""
    return int(_reduce([float(value)], dist.ReduceOp.MIN)[0])


def agree_mean(values: list[float]) -> list[float]:
    """The ranks' mean of each value (e.g. measured throughputs, to pick one winner)."""
    if not is_distributed():
        return values
    return [v / dist.get_world_size() for v in _reduce(values, dist.ReduceOp.SUM)]


def average_gradients(parameters) -> None:
    """Average ``.grad`` over ranks: for gradients written by hand (Reptile's pseudo-gradient),
    which never pass through DDP's autograd hooks. One flattened all-reduce."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
