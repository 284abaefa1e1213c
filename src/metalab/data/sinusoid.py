"""Sinusoid regression tasks exactly as in the MAML paper (Finn et al. 2017, section 5.1).

Amplitude ~ U[0.1, 5], phase ~ U[0, pi], inputs ~ U[-5, 5], target = A * sin(x - phase).
The data is generated, so this is the data set that needs no download.
"""

from __future__ import annotations

import math

import torch

from metalab.data.tasks import Task
from metalab.errors import ConfigError


class SinusoidTasks:
    def __init__(
        self,
        shots: int,
        queries: int,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        if shots < 1 or queries < 1:
            raise ConfigError(f"sinusoid shots={shots}, queries={queries}: set both to at least 1.")
        self.shots, self.queries = shots, queries
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    def sample(self, generator: torch.Generator) -> Task:
        def uniform(bounds: tuple[float, float], *shape: int) -> torch.Tensor:
            low, high = bounds
            return low + (high - low) * torch.rand(*shape, generator=generator)

        amplitude, phase = uniform(self.amplitude, 1), uniform(self.phase, 1)
        x = uniform(self.x_range, self.shots + self.queries, 1)
        y = amplitude * torch.sin(x - phase)
        return Task(x[: self.shots], y[: self.shots], x[self.shots :], y[self.shots :])
