"""``eval.curve_points``: the test curve scores a subset of the inner steps, and each scored
step is exactly the number that scoring every step gives (the adaptation is unchanged)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metalab.data.episodes import NWayKShot
from metalab.errors import ConfigError
from metalab.inner_loop import scored_steps
from metalab.module import MetaLearner
from metalab.paths import config_dir
from test_meta_gradient import RandomImages, sample_batch

EVAL_STEPS = 4


@pytest.mark.parametrize(
    ("steps", "points", "expected"),
    [
        (50, 11, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]),
        (10, 11, list(range(11))),
        (3, None, [0, 1, 2, 3]),
        (12, 11, [0, 2, 4, 6, 8, 10, 12]),  # Meta-LSTM: a regular stride
        (7, 3, [0, 4, 7]),  # the last step is always scored
        (5, 1, [5]),
        (0, 11, [0]),  # the metric methods: no inner steps
    ],
)
def test_scored_steps_spreads_the_points_and_keeps_both_ends(steps, points, expected):
    assert scored_steps(steps, points) == expected


def test_curve_points_below_one_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="eval.curve_points=0: set it to at least 1"):
        scored_steps(10, 0)


def learner(algorithm: str, *overrides: str, steps: int = EVAL_STEPS) -> MetaLearner:
    """A float64 MetaLearner of ``algorithm`` on a tiny 3-way Conv-4 (also test_eval_speed's)."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"algorithm={algorithm}",
                "dataset=omniglot",
                "model=conv4",
                "model.channels=4",
                f"++algorithm.eval_inner_steps={steps}",
                "dataset.ways=3",
                "strategy=loop",
                *overrides,
            ],
        )
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    torch.manual_seed(0)
    return MetaLearner(plain, (1, 16, 16), 3).double()


@pytest.mark.parametrize("algorithm", ["maml", "reptile", "anil", "metasgd", "mamlpp", "metalstm"])
def test_a_subset_of_steps_scores_exactly_what_every_step_scores(algorithm):
    module = learner(algorithm)
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=1, queries=2), tasks=2)
    every = module._evaluate(batch, list(range(EVAL_STEPS + 1)))
    assert every["metric"].shape == (2, EVAL_STEPS + 1)
    some = module._evaluate(batch, [0, 2, EVAL_STEPS])
    for key in ("loss", "metric"):
        torch.testing.assert_close(some[key], every[key][:, [0, 2, EVAL_STEPS]], rtol=0, atol=0)
    assert not torch.equal(every["loss"][:, 0], every["loss"][:, -1])  # it did adapt
