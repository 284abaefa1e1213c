"""2-D navigation (Finn et al. 2017, section 5.3; rllab's ``point_env_randgoal``), batched.

A point agent starts at the origin; its action is a velocity, clipped to [-0.1, 0.1] per
coordinate; the reward after each move is minus the distance to the task's goal; an episode
ends at the horizon (100) or once the agent is within 0.01 of the goal in both coordinates
(as in the authors' code). Goals are uniform in [-0.5, 0.5]^2. Written in torch over a batch
of episodes (each with its own goal) so that all episodes of all tasks step at once.

A task is its goal. As a ``Task`` it is the goal repeated once per episode: ``support_x``
[shots, 2] for the trajectories the policy adapts on, ``query_x`` [queries, 2] for those it
is scored on; the ``*_y`` fields are empty (the rewards come from the rollouts).
"""

from __future__ import annotations

import torch

from metalab.data.tasks import Task
from metalab.errors import ConfigError


class Navigation2D:
    """The dynamics and reward, for a batch of episodes: state [episodes, 2]."""

    observation_size = 2
    action_size = 2
    action_bound = 0.1
    goal_tolerance = 0.01

    def __init__(self, horizon: int = 100) -> None:
        if horizon < 1:
            raise ConfigError(f"dataset.horizon={horizon}: set it to at least 1 step.")
        self.horizon = horizon

    def reset(self, goals: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Every episode starts at the origin (no randomness to draw)."""
        return torch.zeros_like(goals)

    def step(
        self, state: torch.Tensor, action: torch.Tensor, goals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next state, reward, done): move by the clipped action, reward minus the distance
        to the goal after the move, done within ``goal_tolerance`` of it in each coordinate."""
        bound = self.action_bound
        state = state + action.clamp(-bound, bound)
        offset = state - goals
        reward = -offset.norm(dim=-1)
        done = (offset.abs() < self.goal_tolerance).all(dim=-1)
        return state, reward, done


class NavigationTasks:
    """Goals uniform in [low, high]^2; each task holds its goal once per episode."""

    def __init__(self, shots: int, queries: int, low: float = -0.5, high: float = 0.5) -> None:
        if shots < 1 or queries < 1:
            raise ConfigError(
                f"navigation2d shots={shots}, queries={queries}: both count trajectories per "
                "task; set both to at least 1."
            )
        if not high > low:
            raise ConfigError(f"dataset.goal_low={low}, goal_high={high}: need low < high.")
        self.shots, self.queries, self.low, self.high = shots, queries, low, high

    def sample(self, generator: torch.Generator) -> Task:
        goal = self.low + (self.high - self.low) * torch.rand(2, generator=generator)
        empty = torch.zeros(0)
        return Task(
            goal.expand(self.shots, 2).clone(),
            empty.expand(self.shots, 0).clone(),
            goal.expand(self.queries, 2).clone(),
            empty.expand(self.queries, 0).clone(),
        )
