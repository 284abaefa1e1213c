"""HalfCheetah velocity and direction tasks (Finn et al. 2017, section 5.3; the reward
definitions of cbfinn/maml_rl and tristandeleu/pytorch-maml-rl) on Gymnasium's MuJoCo
HalfCheetah (v5), one simulator per episode, stepped together.

Reward per step: velocity tasks -|v - v_goal| - 0.05 * |a|^2, goal velocities uniform in
[0, 2]; direction tasks d * v - 0.05 * |a|^2, d = +1 (forward) or -1 (backward) with equal
probability; v is the torso's forward velocity over the step. Actions are clipped to the
action space [-1, 1]; episodes run to the horizon (200 in the paper). Gymnasium and MuJoCo
are the optional extra ``pip install -e .[rl]``; without them these families are refused.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from metalab.data.tasks import Task
from metalab.errors import ConfigError

KINDS = ("vel", "dir")
CONTROL_COST = 0.5 * 0.1  # 0.5 * 1e-1 * sum(a^2), as in both codes


def require_mujoco(name: str) -> None:
    """Refuse a MuJoCo family without its packages, naming the command that installs them."""
    missing = [m for m in ("gymnasium", "mujoco") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"dataset={name} needs Gymnasium's MuJoCo environments ({' and '.join(missing)} "
            "not installed): pip install -e '.[rl]' in the metalab checkout (or pip install "
            "'gymnasium[mujoco]'); dataset=navigation2d needs nothing."
        )


class HalfCheetah:
    """Velocity or direction tasks for a batch of episodes (goal [episodes, 1]); the
    simulators are the state, so ``step`` ignores the observation it is given."""

    observation_size = 17
    action_size = 6

    def __init__(self, kind: str, horizon: int = 200) -> None:
        if kind not in KINDS:
            raise ConfigError(f"HalfCheetah task kind {kind!r} is not known: choose vel or dir.")
        if horizon < 1:
            raise ConfigError(f"dataset.horizon={horizon}: set it to at least 1 step.")
        require_mujoco(f"halfcheetah_{kind}")
        self.kind, self.horizon = kind, horizon
        self.envs: list = []

    def _make(self, count: int) -> None:
        import gymnasium as gym

        while len(self.envs) < count:
            self.envs.append(gym.make("HalfCheetah-v5").unwrapped)

    def reset(self, goals: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each episode's simulator reset (Gymnasium's initial-state noise), seeded from
        ``generator`` so that the same noise stream gives the same episodes."""
        self._make(goals.shape[0])
        seeds = torch.randint(0, 2**31 - 1, (goals.shape[0],), generator=generator).tolist()
        obs = [self.envs[i].reset(seed=s)[0] for i, s in enumerate(seeds)]
        return torch.as_tensor(np.stack(obs), dtype=goals.dtype, device=goals.device)

    def step(
        self, state: torch.Tensor, action: torch.Tensor, goals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        actions = action.detach().clamp(-1, 1).cpu().double().numpy()
        observations, rewards = [], []
        for i, a in enumerate(actions):
            env = self.envs[i]
            before = float(env.data.qpos[0])
            obs, *_ = env.step(a)
            velocity = (float(env.data.qpos[0]) - before) / env.dt
            goal = float(goals[i, 0])
            forward = -abs(velocity - goal) if self.kind == "vel" else goal * velocity
            rewards.append(forward - CONTROL_COST * float(np.square(a).sum()))
            observations.append(obs)
        as_tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=goals.dtype, device=goals.device)  # noqa: E731
        reward = as_tensor(rewards)
        return as_tensor(np.stack(observations)), reward, torch.zeros_like(reward, dtype=torch.bool)


class CheetahTasks:
    """Goal velocities uniform in [0, 2] (vel) or directions +-1 (dir), repeated once per
    trajectory like ``NavigationTasks``."""

    def __init__(self, kind: str, shots: int, queries: int) -> None:
        if shots < 1 or queries < 1:
            raise ConfigError(f"halfcheetah shots={shots}, queries={queries}: set both >= 1.")
        self.kind, self.shots, self.queries = kind, shots, queries

    def sample(self, generator: torch.Generator) -> Task:
        if self.kind == "vel":
            goal = 2.0 * torch.rand(1, generator=generator)
        else:
            goal = 2.0 * torch.randint(0, 2, (1,), generator=generator).float() - 1.0
        empty = torch.zeros(0)
        return Task(
            goal.expand(self.shots, 1).clone(),
            empty.expand(self.shots, 0).clone(),
            goal.expand(self.queries, 1).clone(),
            empty.expand(self.queries, 0).clone(),
        )
