"""MAML-RL end to end through the command line: a tiny navigation run writes results.json
with the return after 0..3 test-time steps, logs the returns before and after adaptation,
and its checkpoint both re-evaluates to the same numbers (metalab-eval) and resumes into the
run an uninterrupted one would have been."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.cli import read_results, run_cli, train_run

TINY = [
    "experiment=maml_rl_navigation2d",
    "debug=tiny",
    "dataset.shots=4",
    "dataset.queries=4",
    "dataset.horizon=20",
]


def curve(results: dict) -> list[float]:
    return [row["mean"] for row in results["metrics"]["test/return"]["per_step"]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("maml_rl"), *TINY)


def test_results_json_has_the_return_curve_and_the_rl_protocol(run_dir):
    results = read_results(run_dir)
    test = results["metrics"]["test/return"]
    assert results["status"] == "completed" and results["train"]["steps"] == 2
    assert [row["step"] for row in test["per_step"]] == [0, 1, 2, 3]
    assert test["tasks"] == 2 and test["ci95"] > 0
    assert all(-20 * 1.5 < m < 0 for m in curve(results))  # 20 steps, at most ~1.2 away
    protocol = results["protocol"]
    assert protocol["dataset"] == "navigation2d" and protocol["horizon"] == 20
    assert protocol["trajectories"] == protocol["scored_trajectories"] == 4
    assert protocol["inner_steps"] == 3 and protocol["inner_lr"] == 0.1
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/return_pre", "train/return_post", "val/return", "test/return"} <= set(header)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_the_checkpoint_evaluates_to_the_same_curve(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    out = run_cli(
        "metalab-eval", f"ckpt_path={ckpt}", "eval.tasks=2", f"hydra.run.dir={tmp_path / 'e'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert curve(read_results(tmp_path / "e")) == curve(read_results(run_dir))


def test_a_resumed_run_equals_the_uninterrupted_one(run_dir, tmp_path):
    """Rollout noise is drawn from (sampling_seed, outer step): continuing from step 2 to 3
    gives the weights of the run that went to 3 at once. (The curves are not compared: the
    tested "best" checkpoint of a run resumed into a new directory is chosen among its own
    validations.)"""
    last = run_dir / "checkpoints" / "last.ckpt"
    (tmp_path / "resumed").mkdir()
    (tmp_path / "whole").mkdir()
    resumed = train_run(tmp_path / "resumed", *TINY, "trainer.max_steps=3", f"resume={last}")
    whole = train_run(tmp_path / "whole", *TINY, "trainer.max_steps=3")
    assert read_results(resumed)["train"]["steps"] == 3
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for run in (resumed, whole)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
