"""Bad input stops before training with one sentence naming the problem and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from cli import run_cli, wandb_summary
from metalab.algorithms import build_algorithm
from metalab.assembly import build_data, check_device, check_head, check_positive
from metalab.errors import ConfigError, MetalabError
from metalab.inner_loop import InnerLoop
from metalab.losses import REGRESSION
from metalab.models.mlp import MLP
from metalab.paths import config_dir


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    out = run_cli("metalab-train", "algorithm=mamll", cwd=tmp_path)
    assert out.returncode != 0
    assert "Could not find 'algorithm/mamll'" in out.stderr
    assert "fomaml" in out.stderr and "maml" in out.stderr


def test_unknown_key_is_refused(tmp_path):
    out = run_cli("metalab-train", "algorithm.inner_lrr=0.1", cwd=tmp_path)
    assert out.returncode != 0
    assert "inner_lrr" in out.stderr and "not in struct" in out.stderr


def test_missing_dataset_root_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    out = run_cli(
        "metalab-train",
        "dataset=omniglot",
        "model=conv4",
        f"dataset.root={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "metalab: error:" in out.stderr and str(missing) in out.stderr
    assert "dataset.root" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_existing_run_directory_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    earlier = {"status": "completed", "metrics": {"test/mse": 0.5}}
    (run_dir / "results.json").write_text(json.dumps(earlier))
    out = run_cli("metalab-train", "trainer.max_steps=5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode != 0
    assert "already holds a run" in out.stderr and "hydra.run.dir" in out.stderr
    assert json.loads((run_dir / "results.json").read_text()) == earlier
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "override, key",
    [
        ("algorithm.meta_batch=0", "algorithm.meta_batch"),
        ("trainer.max_steps=-1", "trainer.max_steps"),
        ("eval.tasks=0", "eval.tasks"),
        ("val.tasks=0", "val.tasks"),
    ],
)
def test_non_positive_counts_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        check_positive(compose_train(override))


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.inner_lr=0", "algorithm.inner_lr=0"),
        ("algorithm.eval_inner_lr=-0.1", "must be positive"),
        ("algorithm.inner_steps=0", "algorithm.inner_steps=0"),
    ],
)
def test_bad_inner_loop_settings_are_refused(override, message):
    cfg = compose_train(override)
    with pytest.raises(ConfigError, match=message):
        build_algorithm(cfg.algorithm, InnerLoop(MLP(1, 1), REGRESSION))


def test_first_order_false_with_fomaml_points_to_maml():
    cfg = compose_train("algorithm=fomaml", "algorithm.first_order=false")
    with pytest.raises(ConfigError, match="use algorithm=maml"):
        build_algorithm(cfg.algorithm, InnerLoop(MLP(1, 1), REGRESSION))


def test_test_ways_different_from_training_ways_with_a_fixed_head():
    cfg = compose_train("dataset=omniglot", "model=conv4", "dataset.test_ways=20")
    with pytest.raises(ConfigError, match="test_ways=20 differs from dataset.ways=5"):
        check_head(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_says_use_cpu():
    with pytest.raises(ConfigError, match="use trainer=cpu"):
        check_device(compose_train("trainer=gpu"))


def test_sinusoid_without_support_points_is_refused():
    with pytest.raises(ConfigError, match="shots=0"):
        build_data(compose_train("dataset.shots=0"))


needs_data = pytest.mark.skipif(
    "METALAB_DATA" not in os.environ, reason="set METALAB_DATA to run the real-data checks"
)


@needs_data
@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.ways=5000", "ways=5000 but there are only"),
        ("dataset.queries=20", "shots \\+ queries = 1 \\+ 20 = 21 but each class has only 20"),
    ],
)
def test_episodes_larger_than_the_split_allows(override, message):
    root = Path(os.environ["METALAB_DATA"]) / "omniglot"
    cfg = compose_train("dataset=omniglot", "model=conv4", f"dataset.root={root}", override)
    with pytest.raises(MetalabError, match=message):
        build_data(cfg)


def test_diverging_run_stops_with_the_step_and_closes_the_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    out = run_cli(
        "metalab-train",
        "optimizer.lr=1e30",
        "trainer.max_steps=50",
        "strategy=loop",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "the meta-training loss is" in out.stderr and "at step" in out.stderr
    assert "learning rate" in out.stderr and "Traceback" not in out.stderr
    assert not (run_dir / "results.json").exists()
    summary = wandb_summary(run_dir)
    assert summary["state"] != "running" and summary["exit_code"] == 1
