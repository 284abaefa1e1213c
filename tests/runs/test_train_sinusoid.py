"""End to end on the embedded sinusoid data: train, test, log, checkpoint, reload, learn."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf

from metalab.assembly import build_data, build_module
from tests.helpers.cli import read_results, run_cli, train_run, wandb_summary

TRAIN = [
    "trainer.max_steps=1500",
    "trainer.val_check_interval=500",
    "trainer.enable_progress_bar=false",
    "eval.tasks=200",
    "val.tasks=50",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("sinusoid"), *TRAIN)


def test_results_json_records_metrics_and_protocol(run_dir):
    results = read_results(run_dir)
    test = results["metrics"]["test/mse"]
    assert results["status"] == "completed"
    assert results["num_test_tasks"] == test["tasks"] == 200
    assert len(test["per_step"]) == 11  # before adaptation and after each of 10 steps
    assert test["mean"] == test["per_step"][-1]["mean"] and test["ci95"] > 0
    assert results["protocol"]["shots"] == 10 and results["protocol"]["inner_steps"] == 10
    # an MLP has no Conv-4 first block: the record says the composite path, and why
    assert results["kernels"]["first_block"] == "composite" and results["kernels"]["reason"]
    assert results["config"]["algorithm"]["name"] == "maml"
    assert results["train"]["steps"] == 1500
    assert results["strategy"].startswith("auto -> ")
    assert results["metalab_version"]
    # what a CPU-second of this machine buys, for comparing budgets across machines
    assert 0.1 < results["hardware"]["matmul_gflops_per_thread"] < 10_000


def test_checkpoints_and_csv_metrics_are_written(run_dir):
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/mse" in header and "test/mse" in header


def test_wandb_offline_run_is_readable_and_holds_test_metrics(run_dir):
    summary = wandb_summary(run_dir)
    results = read_results(run_dir)
    assert summary["state"] == "finished"
    assert summary["summary"]["test/mse"] == pytest.approx(results["metrics"]["test/mse"]["mean"])
    assert summary["config"]["algorithm"]["name"] == "maml"


def test_maml_beats_the_unadapted_initialisation(run_dir):
    """After a short budget, one inner step from MAML's init fits far better than from a
    fresh init: the meta-learning, not the inner step alone, does the work."""
    results = read_results(run_dir)
    cfg = OmegaConf.create(results["config"])
    data, in_shape, out_features = build_data(cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    untrained = build_module(cfg, in_shape, out_features)
    pl.Trainer(logger=False, enable_progress_bar=False, inference_mode=False).test(
        untrained, dataloaders=data.test_dataloader(), verbose=False
    )
    fresh_one_step = untrained.test_summary["per_step"][1]["mean"]
    maml_one_step = results["metrics"]["test/mse"]["per_step"][1]["mean"]
    assert maml_one_step < 0.6 * fresh_one_step, (maml_one_step, fresh_one_step)


def test_eval_reloads_checkpoint_with_new_protocol(run_dir, tmp_path):
    before = (run_dir / "results.json").read_bytes()
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    out = run_cli(
        "metalab-eval",
        f"ckpt_path={ckpt}",
        "shots=5",
        "eval.tasks=100",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "eval")
    assert results["protocol"]["shots"] == 5 and results["num_test_tasks"] == 100
    assert results["metrics"]["test/mse"]["mean"] > 0
    assert (run_dir / "results.json").read_bytes() == before  # the training run is untouched


def test_a_run_with_no_training_step_leaves_its_initial_weights_to_evaluate(tmp_path):
    """``trainer.max_steps=0`` (a random-initialisation baseline) tests the initial weights
    and keeps them as last.ckpt: metalab-eval on it gives the run's own test numbers."""
    run = train_run(tmp_path, "trainer.max_steps=0", "eval.tasks=20", "val.tasks=5", "logger=csv")
    results = read_results(run)
    assert results["train"]["steps"] == 0
    assert results["tested_checkpoint"] == "initial weights (no training step)"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run / "checkpoints" / "last.ckpt.sha256").is_file()
    out = run_cli(
        "metalab-eval", f"ckpt_path={last}", "eval.tasks=20", f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    again = read_results(tmp_path / "eval")["metrics"]["test/mse"]
    assert again["tasks"] == 20
    assert [s["mean"] for s in again["per_step"]] == pytest.approx(
        [s["mean"] for s in results["metrics"]["test/mse"]["per_step"]], rel=1e-6
    )
