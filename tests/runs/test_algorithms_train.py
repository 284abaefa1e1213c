"""Each new algorithm end to end through metalab-train: its Omniglot preset, shrunk to a
few seconds (one Hydra multirun, one process), writes results.json and a checkpoint that
holds what the algorithm meta-learns and reloads."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from metalab.assembly import build_data, build_module
from metalab.module import MetaLearner
from tests.helpers.cli import preset_sweep, read_results

PRESETS = ["anil", "metasgd", "mamlpp", "reptile"]
TINY = [
    "model=conv4",  # the presets' groups, so that the overrides below validate
    "dataset=omniglot",
    "model.channels=4",
    "algorithm.meta_batch=2",
    "algorithm.inner_steps=2",
    "algorithm.eval_inner_steps=2",
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
    return preset_sweep(tmp_path_factory.mktemp("algorithms"), PRESETS, *TINY)


def test_every_algorithm_writes_results(jobs):
    assert sorted(jobs) == sorted(PRESETS)
    for name, run_dir in jobs.items():
        results = read_results(run_dir)
        test = results["metrics"]["test/acc"]
        assert results["status"] == "completed" and results["train"]["steps"] == 2, name
        assert test["tasks"] == 4 and len(test["per_step"]) == 3, name
        assert 0.0 <= test["mean"] <= 1.0 and results["protocol"]["ways"] == 5
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_reptile_preset_steps_sgd_on_the_pseudo_gradient(jobs):
    config = read_results(jobs["reptile"])["config"]
    assert config["optimizer"]["name"] == "sgd" and config["optimizer"]["lr"] == 1.0
    assert config["dataset"]["queries"] == 9 and config["dataset"]["test_queries"] == 15


def fresh_module(run_dir) -> MetaLearner:
    """The module as metalab-train built it before the first step (same seed, same order)."""
    cfg = OmegaConf.create(read_results(run_dir)["config"])
    pl.seed_everything(int(cfg.seed), verbose=False)
    _, in_shape, out_features = build_data(cfg)
    return build_module(cfg, in_shape, out_features)


@pytest.mark.parametrize("name", PRESETS)
def test_checkpoint_holds_and_reloads_what_the_algorithm_learns(jobs, name):
    ckpt = jobs[name] / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    learned = {"metasgd": "algorithm.rates.", "mamlpp": "algorithm.step_rates."}
    if name in learned:
        assert any(key.startswith(learned[name]) for key in state)
    if name == "mamlpp":
        assert any(key.startswith("algorithm.step_bn.") for key in state)
    reloaded = MetaLearner.load_from_checkpoint(ckpt, map_location="cpu")
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, state[key])
    fresh = fresh_module(jobs[name]).state_dict()
    moved = [key for key in state if not torch.equal(fresh[key], state[key])]
    assert any(key.startswith("model.features.0.0") for key in moved), name  # the body trained
    if name in learned:
        assert any(key.startswith(learned[name]) for key in moved)


def test_non_transductive_evaluation_is_named_in_the_protocol(jobs):
    from metalab.assembly import protocol

    cfg = OmegaConf.create(read_results(jobs["reptile"])["config"])
    assert "transductive at test" in protocol(cfg)["batch_norm"]
    cfg.algorithm.transductive = False
    assert "non-transductive" in protocol(cfg)["batch_norm"]


@pytest.mark.parametrize(
    "scheduler,factors",
    [("linear", [1.0, 0.75, 0.5]), ("none", [1.0] * 3), ("step", [1.0, 1.0, 0.5, 0.5, 0.25])],
)
def test_outer_optimizer_and_schedule_follow_the_config(jobs, scheduler, factors):
    from types import SimpleNamespace

    cfg = OmegaConf.create(read_results(jobs["reptile"])["config"])
    cfg.optimizer.scheduler = scheduler
    cfg.optimizer.step_size, cfg.optimizer.gamma = 2, 0.5
    module = build_module(cfg, (1, 28, 28), 5)
    module._trainer = SimpleNamespace(max_steps=4)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    assert isinstance(optimizer, torch.optim.SGD)
    seen = []
    for _ in factors:
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(configured, dict):
            configured["lr_scheduler"].step()
    assert seen == pytest.approx(factors)


def test_eval_gives_reptile_s_non_transductive_row_from_the_same_weights(jobs, tmp_path):
    """The paper's two Reptile rows differ only at test time: one training run, two tests."""
    from tests.helpers.cli import run_cli

    ckpt = jobs["reptile"] / "checkpoints" / "last.ckpt"
    rows = {}
    for transductive in ("true", "false"):
        out = run_cli(
            "metalab-eval", f"ckpt_path={ckpt}", f"transductive={transductive}", "eval.tasks=4",
            f"hydra.run.dir={tmp_path / transductive}", cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        rows[transductive] = read_results(tmp_path / transductive)
    assert "non-transductive" in rows["false"]["protocol"]["batch_norm"]
    assert "non-transductive" not in rows["true"]["protocol"]["batch_norm"]
    assert rows["false"]["config"]["algorithm"]["transductive"] is False
    means = [rows[t]["metrics"]["test/acc"]["per_step"][-1]["mean"] for t in rows]
    assert means[0] != means[1]


def test_eval_refuses_the_transductive_switch_for_an_algorithm_without_it(jobs, tmp_path):
    from tests.helpers.cli import run_cli

    out = run_cli(
        "metalab-eval", f"ckpt_path={jobs['anil'] / 'checkpoints' / 'last.ckpt'}",
        "transductive=false", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0
    assert "algorithm=anil has no transductive switch" in out.stderr
