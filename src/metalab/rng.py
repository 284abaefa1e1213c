"""The process's random number generators, saved in checkpoints so a resumed run continues
with the draws an uninterrupted run would have made (dropout, augmentation, shuffles)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "python": random.getstate(),
        # as plain types and tensors: checkpoints are loaded with weights_only=True
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _numpy_state() -> tuple:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return (
        str(name),
        torch.from_numpy(keys.astype(np.int64)),
        int(position),
        int(has_gauss),
        float(gauss),
    )
