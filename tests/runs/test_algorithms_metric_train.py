"""ProtoNets, Matching and Siamese networks and Meta-LSTM on the real Omniglot: each learns
5-way 1-shot in a short CPU run (through the LightningModule), and each runs end to end
through metalab-train (one multirun) and writes results.json; metalab-eval's path tests a ProtoNet
checkpoint's config on other ways, and refuses to for Meta-LSTM."""

from __future__ import annotations

import os

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from metalab.assembly import build_data, build_module
from metalab.errors import ConfigError
from metalab.evaluate import load_checkpoint, training_config
from metalab.paths import config_dir
from metalab.preflight import check_head
from tests.helpers.cli import preset_sweep, read_results
from tests.helpers.configs import compose_train

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        "METALAB_DATA" not in os.environ,
        reason="set METALAB_DATA to the folder that holds omniglot/ to run the real-data tests",
    ),
]

SMALL = [
    "model.channels=16",
    "dataset.ways=5",
    "dataset.queries=5",
    "dataset.test_queries=5",
    "eval.tasks=50",
    "eval.batch=25",
    "strategy=loop",
]
# name: (extra overrides, outer steps, accuracy the test must exceed; chance is 0.2)
LEARNS = {
    "protonet": (["dataset.ways=10", "dataset.queries=2"], 80, 0.45),  # 10-way train, 5-way test
    "matchingnet": ([], 80, 0.45),
    "siamese": ([], 100, 0.33),
    "metalstm": (["algorithm.inner_steps=3", "eval.tasks=40", "eval.batch=20"], 50, 0.33),
}


def fit_and_test(name: str) -> tuple[dict, object]:
    extra, steps, _ = LEARNS[name]
    cfg = compose_train(
        f"experiment={name}_omniglot_5w1s", *SMALL, *extra, f"trainer.max_steps={steps}"
    )
    pl.seed_everything(0, verbose=False)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is as fast, and kinder to CI
    try:
        trainer.fit(module, datamodule=data)
        trainer.test(module, datamodule=data, verbose=False)
    finally:
        torch.set_num_threads(threads)
    return module.test_summary, cfg


@pytest.mark.parametrize("name", sorted(LEARNS))
def test_learns_omniglot_5way_1shot(name):
    summary, cfg = fit_and_test(name)
    threshold = LEARNS[name][2]
    assert summary["tasks"] == cfg.eval.tasks and cfg.dataset.test_ways == 5
    assert summary["mean"] > threshold, summary
    if name == "metalstm":  # the learned updates, not only the learned initialisation
        assert summary["per_step"][-1]["mean"] > summary["per_step"][0]["mean"] + 0.1, summary


TINY = [
    "model=conv4",  # the presets' groups, so that the overrides below validate
    "dataset=omniglot",
    "model.channels=4",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "val.tasks=2",
    "eval.tasks=4",
    "eval.batch=4",
    "logger=csv",
    "strategy=loop",
]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict:
    return preset_sweep(tmp_path_factory.mktemp("metric"), sorted(LEARNS), *TINY)


def test_every_method_writes_results(jobs):
    assert sorted(jobs) == sorted(LEARNS)
    for name, run_dir in jobs.items():
        results = read_results(run_dir)
        test = results["metrics"]["test/acc"]
        assert results["status"] == "completed" and results["train"]["steps"] == 2, name
        steps = 12 if name == "metalstm" else 0  # metric methods have no inner steps
        curve = [0, 2, 4, 6, 8, 10, 12] if name == "metalstm" else [0]  # eval.curve_points=11
        assert test["tasks"] == 4 and [s["step"] for s in test["per_step"]] == curve, name
        assert results["protocol"]["inner_steps"] == steps and "inner_lr" not in results["protocol"]
        assert 0.0 <= test["mean"] <= 1.0 and results["protocol"]["ways"] == 5, name
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_checkpoints_hold_what_each_method_meta_learns(jobs):
    learned = {
        "siamese": "algorithm.pair_head.",
        "metalstm": "algorithm.input_gate.",
        "protonet": "model.features.",
        "matchingnet": "model.features.",
    }
    for name, run_dir in jobs.items():
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
        state = ckpt["state_dict"]
        assert any(key.startswith(learned[name]) for key in state), name
        has_head = any(key.startswith("model.head.") for key in state)
        assert has_head == (name == "metalstm"), name  # metric methods embed only


def eval_config(run_dir, ways: int):
    """The checkpoint's config with metalab-eval's test-time overrides applied."""
    path = str(run_dir / "checkpoints" / "last.ckpt")
    with initialize_config_dir(config_dir(), version_base="1.3"):
        overrides = compose(
            "eval", [f"ckpt_path={path}", f"ways={ways}", "eval.tasks=4", "eval.batch=4"]
        )
    ckpt = load_checkpoint(path)
    return ckpt, training_config(ckpt, overrides)


def test_protonet_trains_60_way_and_tests_on_other_ways(jobs):
    ckpt, cfg = eval_config(jobs["protonet"], ways=20)
    assert cfg.dataset.ways == 60 and cfg.dataset.test_ways == 20
    check_head(cfg)  # what metalab-eval checks first: no fixed head, so allowed
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    module.load_state_dict(ckpt["state_dict"])
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, inference_mode=False)
    trainer.test(module, dataloaders=data.test_dataloader(), verbose=False)
    assert module.test_summary["tasks"] == 4 and data.test_episodes.source.ways == 20


def test_meta_lstm_refuses_other_test_ways(jobs):
    _, cfg = eval_config(jobs["metalstm"], ways=20)
    with pytest.raises(ConfigError, match="algorithm=metalstm learns a 5-way output layer"):
        check_head(cfg)
