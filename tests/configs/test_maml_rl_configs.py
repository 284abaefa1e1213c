"""MAML-RL's configs: the navigation preset carries the paper's protocol, every RL setting
refuses hostile values with one line naming it, and the combinations that cannot work
(an image data set, an outer optimiser other than TRPO's plain step) are refused early."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from metalab.assembly import build_data, build_module
from metalab.errors import MetalabError
from metalab.paths import config_dir
from metalab.run_status import RunGuard
from metalab.schema import numeric_keys
from tests.helpers.configs import compose_train
from tests.helpers.fake_runs import completed_run, snapshot

PRESET = ["experiment=maml_rl_navigation2d"]
HOSTILE = {"a string": "abc", "a list": "[1,2]", "a negative": "-3", "huge": "1000000000000000"}
RL_KEYS = sorted(
    k
    for k in numeric_keys(compose_train(*PRESET))
    if k.split(".")[-1]
    in {
        "horizon", "gamma", "gae_lambda", "normalize_advantages", "baseline_reg", "max_kl",
        "cg_iters", "ls_max_steps", "ls_backtrack_ratio", "sampling_seed", "init_std",
        "goal_low", "goal_high", "cg_damping",
    }
)  # fmt: skip


def test_the_preset_is_the_papers_navigation_protocol():
    cfg = compose_train(*PRESET)
    algorithm, dataset = cfg.algorithm, cfg.dataset
    assert (algorithm.name, dataset.name, cfg.model.name) == (
        "maml_rl",
        "navigation2d",
        "gaussian_mlp",
    )
    assert list(cfg.model.hidden) == [100, 100]
    assert (algorithm.meta_batch, dataset.shots, dataset.queries, dataset.horizon) == (
        20,
        20,
        20,
        100,
    )
    assert (algorithm.inner_steps, algorithm.inner_lr, algorithm.gamma) == (1, 0.1, 0.99)
    assert (algorithm.gae_lambda, algorithm.max_kl, algorithm.eval_inner_steps) == (1.0, 0.01, 3)
    assert (algorithm.env, algorithm.horizon) == ("navigation2d", 100)
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("sgd", 1.0)
    assert len(RL_KEYS) >= 14


@pytest.mark.parametrize("key", RL_KEYS)
def test_a_hostile_value_for_an_rl_setting_stops_the_job_naming_it(key, tmp_path):
    run_dir = tmp_path / "done"
    before = completed_run(run_dir)
    for what, text in HOSTILE.items():
        with initialize_config_dir(config_dir(), version_base="1.3"):
            overrides = [*PRESET, f"{key}={text}", f"hydra.run.dir={run_dir}"]
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with pytest.raises(SystemExit) as stop:
            RunGuard().on_run_start(cfg)
        message = str(stop.value.code)
        assert message.startswith("metalab: error: ") and "\n" not in message, (what, message)
        if what != "a negative" or not key.endswith(("goal_low", "goal_high")):
            # dataset.horizon reaches the algorithm as algorithm.horizon, checked first
            named = "horizon=" if key == "dataset.horizon" else f"{key}="
            assert named in message, (what, message)
        assert snapshot(run_dir) == before


def test_an_image_data_set_is_refused_with_the_rl_families(tmp_path):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        overrides = ["algorithm=maml_rl", "dataset=omniglot", "model=conv4"]
        cfg = compose(
            "train",
            overrides=[*overrides, f"hydra.run.dir={tmp_path / 'r'}"],
            return_hydra_config=True,
        )
    with pytest.raises(SystemExit) as stop:
        RunGuard().on_run_start(cfg)
    message = str(stop.value.code)
    assert "algorithm=maml_rl cannot learn from dataset=omniglot" in message
    assert "dataset=halfcheetah_dir|halfcheetah_vel|navigation2d" in message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "override", ["optimizer.name=adam", "optimizer.lr=0.5", "optimizer.scheduler=cosine"]
)
def test_an_outer_optimiser_that_would_change_trpos_step_is_refused(override):
    cfg = compose_train(*PRESET, "debug=tiny", override)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    with pytest.raises(MetalabError, match="optimizer.name=sgd optimizer.lr=1"):
        module.configure_optimizers()


@pytest.mark.parametrize("strategy", ["vmap", "hybrid"])
def test_a_vectorised_strategy_is_refused_in_one_sentence(strategy):
    from metalab.execution import build_strategy

    cfg = compose_train(*PRESET, "debug=tiny")
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    batch = next(iter(data.train_episodes))
    params = dict(module.model.named_parameters())
    with pytest.raises(MetalabError, match=f"strategy={strategy}: .* use strategy=loop"):
        module.algorithm.outer_step(
            params, batch, build_strategy(strategy, None, None, "cpu"), None
        )
