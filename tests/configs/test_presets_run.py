"""Every experiment preset composes, passes the preflight checks and trains a few steps.

Each preset runs in this process with its own settings and only its size cut down (two outer
steps, two tasks a batch, at most 5 ways and 5 queries, a few evaluation tasks), so that a
preset whose keys no longer fit the code fails here rather than after a user's first hour.
Omniglot presets need the real data (``METALAB_DATA``); presets for data sets metalab cannot
fetch here are composed only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from metalab.preflight import check_config
from tests.helpers.configs import (
    compose_train,
    options,
    refused_without_mujoco,
    shared_root,
    small,
    small_run,
)

PRESETS = options("experiment")
OMNIGLOT = Path(os.environ.get("METALAB_DATA", "/nonexistent")) / "omniglot"


@pytest.mark.parametrize("experiment", PRESETS)
def test_preset_composes_and_passes_preflight(experiment):
    cfg = compose_train(f"experiment={experiment}")
    if refused_without_mujoco(cfg):
        return
    check_config(cfg)
    if experiment.endswith("_random"):  # a random-initialisation baseline: tested untrained
        assert cfg.trainer.max_steps == 0
        return
    # the paper's full length: MAML-RL's 2-D navigation is 500 outer steps, the rest 1,000+
    assert cfg.trainer.max_steps >= (500 if cfg.dataset.task == "reinforcement" else 1000)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment",
    [p for p in PRESETS if p.split("_")[1] in ("omniglot", "koch") or p == "maml_sinusoid"],
)
def test_preset_trains_a_few_steps(experiment, tmp_path_factory, one_thread):
    cfg = small(experiment)
    if cfg.dataset.name == "omniglot" and not OMNIGLOT.is_dir():
        pytest.skip("set METALAB_DATA to the folder holding omniglot/")
    run = small_run(experiment, shared_root(tmp_path_factory), cfg)  # trained here, or shared
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["train"]["steps"] == 2
    assert results["num_test_tasks"] == 2
    assert results["config"]["algorithm"]["name"] == cfg.algorithm.name
