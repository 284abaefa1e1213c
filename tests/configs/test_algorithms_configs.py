"""The new algorithms' presets compose with the values their papers (or MAML's) use."""

from __future__ import annotations

import pytest

from tests.helpers.configs import compose_train

PRESETS = {
    # Nichol et al. 2018, run_omniglot.sh (transductive): Adam 1e-3, 5 x 10 examples,
    # train-shots 10 (1 shot + 9 queries), meta-batch 5, eps 1 -> 0, 100k steps, 50 test steps.
    "reptile_omniglot_5w1s": dict(
        name="reptile", ways=5, shots=1, queries=9, test_queries=15, inner_optimizer="adam",
        inner_lr=0.001, inner_steps=5, inner_batch=10, meta_batch=5, outer_step_size=1.0,
        anneal="linear", eval_inner_steps=50, max_steps=100_000, optimizer="sgd", lr=1.0,
    ),
    "reptile_omniglot_20w1s": dict(
        name="reptile", ways=20, inner_lr=0.0005, inner_steps=10, inner_batch=20, meta_batch=5,
        max_steps=200_000, optimizer="sgd", lr=1.0,
    ),
    "fomaml_omniglot_20w1s": dict(name="fomaml", ways=20, inner_steps=5, first_order=True),
    "anil_omniglot_5w1s": dict(name="anil", ways=5, inner_steps=1, inner_lr=2.0, meta_batch=32),
    "anil_omniglot_20w1s": dict(name="anil", ways=20, inner_steps=5, inner_lr=2.0, meta_batch=16),
    "metasgd_omniglot_5w1s": dict(
        name="metasgd", ways=5, inner_steps=1, eval_inner_steps=1, inner_lr=0.4
    ),
    "metasgd_omniglot_20w1s": dict(
        name="metasgd", ways=20, inner_steps=1, eval_inner_steps=1, inner_lr=0.1
    ),
    # the authors' experiment_config/omniglot_maml++-omniglot_1_8_0.1_64_5_*.json
    "mamlpp_omniglot_5w1s": dict(
        name="mamlpp", ways=5, queries=1, inner_steps=5, inner_lr=0.1, eval_inner_steps=5,
        multi_step_loss=True, learnable_lr=True, per_step_bn=True, first_order_steps=0,
        msl_anneal_steps=5000, scheduler="cosine", max_steps=50_000, optimizer="adam",
        meta_batch=8, downsample="maxpool", global_pool=False,
    ),
    "mamlpp_omniglot_20w1s": dict(name="mamlpp", ways=20, meta_batch=8, scheduler="cosine"),
    "mamlpp_omniglot_20w5s": dict(name="mamlpp", ways=20, shots=5, queries=1, meta_batch=8),
    # Nichol et al.'s OmniglotModel: stride-2 convolutions, features flattened
    "reptile_omniglot_5w5s": dict(
        name="reptile", shots=5, queries=5, downsample="stride", global_pool=False
    ),
    "reptile_omniglot_20w5s": dict(name="reptile", ways=20, shots=5, queries=5, inner_batch=20),
    "protonet_omniglot_5w5s": dict(
        name="protonet", ways=60, shots=5, queries=5, test_ways=5, test_shots=5,
        scheduler="step", max_steps=20_000,
    ),
    "anil_omniglot_20w5s": dict(name="anil", ways=20, shots=5, queries=5, inner_steps=5),
    "metasgd_omniglot_20w5s": dict(name="metasgd", ways=20, shots=5, inner_steps=1),
    "siamese_omniglot_20w5s": dict(name="siamese", ways=5, test_ways=20, test_shots=5),
    "matchingnet_omniglot_5w5s": dict(name="matchingnet", ways=5, shots=5),
}  # fmt: skip


@pytest.mark.parametrize("experiment", sorted(PRESETS))
def test_algorithm_presets_carry_their_settings(experiment):
    cfg = compose_train(f"experiment={experiment}")
    flat = {
        **cfg.algorithm,
        **cfg.dataset,
        "max_steps": cfg.trainer.max_steps,
        "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr,
        "scheduler": cfg.optimizer.scheduler,
        "downsample": cfg.model.get("downsample"),
        "global_pool": cfg.model.get("global_pool"),
    }
    flat["name"] = cfg.algorithm.name
    for key, value in PRESETS[experiment].items():
        assert flat[key] == value, key
    assert cfg.model.name == "conv4" and cfg.dataset.name == "omniglot"
