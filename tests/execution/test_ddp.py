"""Two CPU processes under ``trainer=ddp_cpu`` take the same outer step as one process with the
union of their tasks (float64), for second-order MAML, FOMAML and Reptile's hand-written
pseudo-gradient; an end-to-end 2-process run writes one results.json over all test tasks."""

from __future__ import annotations

import os

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from metalab.assembly import build_data, build_module
from metalab.checkpoints import load_checkpoint
from metalab.errors import ConfigError
from metalab.paths import config_dir
from metalab.preflight import check_config
from tests.helpers.cli import read_results, train_run

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        "METALAB_DATA" not in os.environ,
        reason="set METALAB_DATA to the folder that holds omniglot/ to run the real-data tests",
    ),
]

# One outer step with plain SGD: the update is proportional to the meta-gradient (Adam's first
# step, about lr * sign(g), would hide a wrong average). 7 test tasks do not split evenly.
ONE_STEP = [
    "dataset=omniglot",
    "model=conv4",
    "model.channels=8",
    "trainer.precision=64-true",
    "trainer.max_steps=1",
    "trainer.val_check_interval=1",
    "trainer.enable_progress_bar=false",
    "optimizer.name=sgd",
    "optimizer.lr=0.5",
    "optimizer.scheduler=none",
    "algorithm.meta_batch=4",
    "val.tasks=3",
    "eval.tasks=7",
    "eval.batch=2",
    "strategy=loop",
    "logger=csv",
]
ALGORITHMS = {
    "maml": ["algorithm=maml", "algorithm.inner_steps=2", "algorithm.eval_inner_steps=1"],
    "fomaml": ["algorithm=fomaml", "algorithm.eval_inner_steps=1"],
    # a carried inner Adam state runs through one process's tasks in order, so only the fresh
    # state per task splits over ranks exactly (carried: each rank carries its own)
    "reptile": [
        "algorithm=reptile",
        "algorithm.inner_steps=3",
        "algorithm.eval_inner_steps=2",
        "algorithm.adam_state=fresh",
    ],
}


def one_process(overrides: list[str], tmp_path) -> tuple[dict, dict]:
    """The same configuration trained and tested in this process, on one device."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="64-true",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        inference_mode=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    return module.state_dict(), module.test_summary


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_two_processes_take_the_one_process_step(algorithm, tmp_path, one_thread):
    """One thread here and in each DDP process (set, not left to Lightning, which gives each
    process cores / processes threads unless OMP_NUM_THREADS says otherwise): a different
    thread count sums convolutions in another order, and Reptile's inner Adam turns the
    resulting rounding noise in BN-cancelled conv biases into lr-sized steps."""
    overrides = [*ONE_STEP, *ALGORITHMS[algorithm]]
    run_dir = train_run(tmp_path, *overrides, "trainer=ddp_cpu", env={"OMP_NUM_THREADS": "1"})
    results = read_results(run_dir)
    ddp = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ddp["global_step"] == 1
    reference, summary = one_process(overrides, tmp_path)
    assert set(ddp["state_dict"]) == set(reference)
    for name, expected in reference.items():
        got = ddp["state_dict"][name]
        assert got.dtype == torch.float64
        error = (got - expected).norm() / expected.norm().clamp_min(1e-300)
        assert error < 1e-10, f"{algorithm} {name}: relative error {error:.2e}"
    # one results.json, every test task once (7 tasks over 2 ranks: 4 + 3, no padding)
    assert results["status"] == "completed" and results["num_test_tasks"] == 7
    assert results["config"]["trainer"]["devices"] == 2
    assert results["metrics"]["test/acc"]["mean"] == pytest.approx(summary["mean"], abs=1e-12)
    assert not list(run_dir.glob("*/results.json"))  # rank 1 wrote none of its own


def test_a_meta_batch_that_does_not_split_over_the_devices_is_refused_before_any_rank_starts():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*ONE_STEP, "algorithm.meta_batch=5", "trainer=ddp_cpu"])
    with pytest.raises(ConfigError, match="algorithm.meta_batch=5 cannot be split evenly over 2"):
        check_config(cfg)
