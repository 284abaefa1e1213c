"""Configs composed as metalab-train composes them (conf/train.yaml and its groups), in this
process; ``small`` cuts an experiment preset down to a few steps and keeps its settings."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from metalab.paths import config_dir

CONF = Path(config_dir())
# Two outer steps, two tasks a batch, a few evaluation tasks; everything else the preset's.
SMALL = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "val.tasks=2",
    "eval.tasks=2",
    "eval.batch=2",
    "logger=none",
    "strategy=loop",
]


def compose_train(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def small(experiment: str):
    cfg = compose_train(f"experiment={experiment}", *SMALL)
    with open_dict(cfg):
        cfg.algorithm.meta_batch = min(2, int(cfg.algorithm.meta_batch))
        if "eval_inner_steps" in cfg.algorithm and cfg.algorithm.name == "reptile":
            cfg.algorithm.eval_inner_steps = 2  # Reptile's 50 test steps, cut for time
    return cfg


def refused_without_mujoco(cfg) -> bool:
    """A MuJoCo preset where Gymnasium's MuJoCo is not installed: the config check must refuse
    it with the install command (True: checked); False where the check can run in full."""
    import importlib.util

    import pytest

    from metalab.errors import ConfigError
    from metalab.preflight import check_config

    if "halfcheetah" not in str(cfg.dataset.name):
        return False
    if all(importlib.util.find_spec(m) is not None for m in ("gymnasium", "mujoco")):
        return False
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[rl\]'"):
        check_config(cfg)
    return True
