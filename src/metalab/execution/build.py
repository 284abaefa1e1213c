"""build_strategy: the strategy= setting as an object."""

from __future__ import annotations

import logging

import torch

from metalab.errors import ConfigError
from metalab.execution.auto import AutoStrategy
from metalab.execution.hybrid import HybridStrategy
from metalab.execution.loop import LoopStrategy
from metalab.execution.vmap import VmapStrategy

log = logging.getLogger(__name__)

STRATEGIES = ("loop", "vmap", "hybrid", "auto")


# Default budget for an automatically sized vmap chunk: on a CPU it keeps auto's peak memory
# within ~1.5x the loop's for Conv-4 (one task ~150 MiB); on a GPU, half its free memory.
CPU_VMAP_MEMORY_MIB = 256.0


def default_vmap_memory_mib(accelerator: str) -> float:
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free / 2**20 / 2
    return CPU_VMAP_MEMORY_MIB


def build_strategy(
    name: str,
    vmap_chunk: int | None,
    vmap_memory_mib: float | None = None,
    accelerator: str = "cpu",
    cache: bool = True,
    retime: bool = False,
):
    """``vmap_chunk=None`` sizes vmap's chunks to ``vmap_memory_mib`` (device default if None)."""
    budget = vmap_memory_mib or default_vmap_memory_mib(accelerator)
    vmap_budget = budget if vmap_chunk is None else None
    if name == "loop":
        return LoopStrategy()
    if name == "vmap":
        return VmapStrategy(vmap_chunk, vmap_budget)
    if name == "hybrid":
        return HybridStrategy(budget)
    if name == "auto":
        return AutoStrategy(
            [LoopStrategy(), VmapStrategy(vmap_chunk, vmap_budget), HybridStrategy(budget)],
            cache=cache,
            retime=retime,
            settings={"vmap_chunk": vmap_chunk, "memory_mib": budget},
        )
    raise ConfigError(f"strategy={name!r} is not known: choose one of {', '.join(STRATEGIES)}.")
