"""Agreement across DDP ranks for decisions each rank makes from its own measurements.

Under DDP every rank must run the same number of backward passes per step (each one is an
all-reduce), so choices that come from timing or memory readings (``strategy=auto``'s pick,
a vmap chunk sized to a memory budget) are reduced to one value that all ranks share. Without
an initialised process group these functions return their input.
"""

from __future__ import annotations

import os

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


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0 and 1 without a process group)."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_tasks(values: torch.Tensor, total: int) -> torch.Tensor:
    """All ranks' per-task rows ``[n_r, ...]`` back in task order ``[total, ...]``.

    Rank r holds tasks r, r + world, r + 2 world, ... (see ``EpisodeDataModule``), so shards
    differ in length by at most one: each is padded to the longest, gathered, interleaved,
    and the padding (which lands past ``total``) is dropped. Every task is counted once.
    """
    if not is_distributed():
        return values
    world = dist.get_world_size()
    longest = -(-total // world)
    padded = values.new_zeros((longest, *values.shape[1:]))
    padded[: len(values)] = values
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    return torch.stack(shards, 1).reshape(world * longest, *values.shape[1:])[:total]


def launched_rank() -> int:
    """This process's global rank as its launcher set it, before any process group exists:
    Lightning sets LOCAL_RANK (and NODE_RANK) for the processes it starts, SLURM SLURM_PROCID,
    torchrun RANK. Rank 0 (or no launcher) owns the run directory and results.json."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", "0") or 0)
    return local + node  # > 0 exactly when not the first process (its value is not needed)
