"""Reinforcement-learning task families: the environment of each ``dataset=<name>`` and
its train/val/test task sources (``metalab.data.datamodule.build_sources`` asks here).

The environment is not data the loader carries: the algorithm rolls it out, and finds it
by name (``algorithm.env: ${dataset.name}``) through ``environment``. The MuJoCo families
(HalfCheetah) need the optional extra ``pip install -e .[rl]`` and are refused without it.
"""

from __future__ import annotations

from typing import Any

from metalab.data.halfcheetah import CheetahTasks, HalfCheetah, require_mujoco
from metalab.data.navigation import Navigation2D, NavigationTasks
from metalab.errors import ConfigError

CHEETAH = {"halfcheetah_vel": "vel", "halfcheetah_dir": "dir"}
RL_DATASETS = ("navigation2d", *CHEETAH)


def environment(name: str, horizon: int) -> Navigation2D | HalfCheetah:
    if name == "navigation2d":
        return Navigation2D(horizon)
    if name in CHEETAH:
        return HalfCheetah(CHEETAH[name], horizon)
    raise ConfigError(
        f"algorithm.env={name!r} is not a reinforcement-learning task family: choose one of "
        f"{', '.join(RL_DATASETS)} (dataset=<family> sets it)."
    )


def rl_sources(cfg: Any) -> dict[str, NavigationTasks | CheetahTasks]:
    """Training tasks with ``shots``/``queries`` trajectories, evaluation tasks with
    ``test_shots``/``test_queries``; the fixed val/test goals come from
    ``FixedEpisodes`` (a pure function of the split and the index: the same in every run)."""
    sizes = (int(cfg.shots), int(cfg.queries)), (int(cfg.test_shots), int(cfg.test_queries))
    if cfg.get("name") in CHEETAH:
        require_mujoco(str(cfg.name))
        train, test = (CheetahTasks(CHEETAH[str(cfg.name)], *s) for s in sizes)
    else:
        low, high = float(cfg.get("goal_low", -0.5)), float(cfg.get("goal_high", 0.5))
        train, test = (NavigationTasks(*s, low, high) for s in sizes)
    return {"train": train, "val": test, "test": test}


def observation_and_action_sizes(name: str) -> tuple[int, int]:
    family = HalfCheetah if name in CHEETAH else Navigation2D
    return family.observation_size, family.action_size
