"""End to end on the real Omniglot (``$METALAB_DATA/omniglot``): MAML learns 5-way 1-shot."""

from __future__ import annotations

import os

import pytest

from tests.helpers.cli import read_results, train_run, wandb_summary

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        "METALAB_DATA" not in os.environ,
        reason="set METALAB_DATA to the folder that holds omniglot/ to run the real-data tests",
    ),
]

TINY_BUDGET = [
    "experiment=maml_omniglot_5w1s",
    "model.channels=32",
    "algorithm.meta_batch=8",
    "algorithm.eval_inner_steps=1",
    "trainer.max_steps=80",
    "trainer.val_check_interval=40",
    "trainer.enable_progress_bar=false",
    "val.tasks=20",
    "eval.tasks=100",
    "strategy=loop",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("omniglot"), *TINY_BUDGET)


def test_maml_beats_chance_on_omniglot_5way_1shot(run_dir):
    results = read_results(run_dir)
    test = results["metrics"]["test/acc"]
    assert results["num_test_tasks"] == 100
    assert results["protocol"]["ways"] == 5 and results["protocol"]["data_split"] == "finn"
    assert "batch statistics" in results["protocol"]["batch_norm"]
    # chance is 20%; 80 steps of 8 tasks take a couple of CPU minutes
    assert test["mean"] > 0.45, test


def test_omniglot_run_leaves_checkpoint_and_wandb_run(run_dir):
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    summary = wandb_summary(run_dir)
    assert summary["summary"]["test/acc"] == pytest.approx(
        read_results(run_dir)["metrics"]["test/acc"]["mean"]
    )
