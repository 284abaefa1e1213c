"""The Gaussian MLP policy of MAML's RL experiments: a ReLU MLP (100-100 in the paper) for
the action mean and a learned, state-independent log standard deviation per action.

``forward`` returns (mean, log_std), log_std broadcast to the mean's shape, so the policy
runs through ``torch.func.functional_call`` with adapted parameters like any other model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metalab.models.mlp import MLP


class GaussianMLP(nn.Module):
    def __init__(
        self,
        observation_size: int,
        action_size: int,
        hidden: Sequence[int] = (100, 100),
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.mean = MLP(observation_size, action_size, hidden)
        self.log_std = nn.Parameter(torch.full((action_size,), float(torch.tensor(init_std).log())))

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean(observation)
        return mean, self.log_std.expand_as(mean)
