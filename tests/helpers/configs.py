"""Configs composed as metalab-train composes them (conf/train.yaml and its groups), in this
process; ``small`` cuts an experiment preset down to a few steps and keeps its settings, and
``small_run`` trains that once for every test that checks its run."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from metalab.paths import config_dir

CONF = Path(config_dir())
# Two outer steps, two tasks a batch, a few evaluation tasks; everything else the preset's
# (but MOST below).
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


# Ways and queries are sizes too: the code takes 5 as it takes 20 or 60 (each preset's own
# numbers are composed and checked by test_presets_run's preflight test), and at 20 ways a
# MAML++ or Koch (105 px) step cost 15-20 s of a CI core.
MOST = {"ways": 5, "test_ways": 5, "queries": 5, "test_queries": 5}


def small(experiment: str):
    cfg = compose_train(f"experiment={experiment}", *SMALL)
    with open_dict(cfg):
        cfg.algorithm.meta_batch = min(2, int(cfg.algorithm.meta_batch))
        for key, most in MOST.items():
            if isinstance(cfg.dataset.get(key), int) and cfg.dataset[key] > most:
                cfg.dataset[key] = most
        if "eval_inner_steps" in cfg.algorithm and cfg.algorithm.name == "reptile":
            cfg.algorithm.eval_inner_steps = 2  # Reptile's 50 test steps, cut for time
        if cfg.algorithm.name == "metalstm":  # 12 LSTM updates over every weight: ~1.5 s each
            cfg.algorithm.inner_steps = cfg.algorithm.eval_inner_steps = 3
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


def shared_root(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this session sees (the parent of the workers'
    own base temp folders), or this session's base temp folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-runs"
    root.mkdir(exist_ok=True)
    return root


def small_run(experiment: str, root: Path, cfg: DictConfig | None = None) -> Path:
    """The run directory of ``small(experiment)`` trained in this process under ``root``
    (``shared_root``): trained by whichever test (on whichever worker) asks first, under a
    lock, and read by the others. Tests in several files check the same preset's two-step
    run (tests/configs/test_presets_run.py every preset, tests/data/test_augment_affine.py
    the Siamese ones with their distortions); one run serves them all. A run that did not
    complete is trained again by the next test that asks, which then fails with its error.
    ``cfg``: ``small(experiment)`` where the caller has composed it already (unchanged)."""
    from metalab.train import train

    run_dir = root / experiment
    with (root / f"{experiment}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = run_dir / "results.json"
        if results.is_file() and json.loads(results.read_text()).get("status") == "completed":
            return run_dir
        shutil.rmtree(run_dir, ignore_errors=True)
        train(small(experiment) if cfg is None else cfg, run_dir)
    return run_dir
