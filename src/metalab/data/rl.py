"""Reinforcement-learning task families: the environment of each ``dataset=<name>`` and
its train/val/test task sources (``metalab.data.datamodule.build_sources`` asks here).

The environment is not data the loader carries: the algorithm rolls it out, and finds it
by name (``algorithm.env: ${dataset.name}``) through ``environment``.
"""

from __future__ import annotations

from typing import Any

from metalab.data.navigation import Navigation2D, NavigationTasks
from metalab.errors import ConfigError

RL_DATASETS = ("navigation2d",)


def environment(name: str, horizon: int) -> Navigation2D:
    if name == "navigation2d":
        return Navigation2D(horizon)
    raise ConfigError(
        f"algorithm.env={name!r} is not a reinforcement-learning task family: choose one of "
        f"{', '.join(RL_DATASETS)} (dataset=navigation2d sets it)."
    )


def rl_sources(cfg: Any) -> dict[str, NavigationTasks]:
    """Training tasks with ``shots``/``queries`` trajectories, evaluation tasks with
    ``test_shots``/``test_queries``; the fixed val/test goals come from
    ``FixedEpisodes`` (a pure function of the split and the index: the same in every run)."""
    low, high = float(cfg.get("goal_low", -0.5)), float(cfg.get("goal_high", 0.5))
    train = NavigationTasks(int(cfg.shots), int(cfg.queries), low, high)
    test = NavigationTasks(int(cfg.test_shots), int(cfg.test_queries), low, high)
    return {"train": train, "val": test, "test": test}


def observation_and_action_sizes(name: str) -> tuple[int, int]:
    env = environment(name, 1)
    return env.observation_size, env.action_size
