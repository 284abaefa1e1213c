"""``eval.curve_points``: the test curve scores a subset of the inner steps, and each scored
step is exactly the number that scoring every step gives (the adaptation is unchanged)."""

from __future__ import annotations

import pytest
import torch

from metalab.data.episodes import NWayKShot
from metalab.errors import ConfigError
from metalab.inner_loop import scored_steps
from tests.helpers.cases import RandomImages, learner, sample_batch

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


@pytest.mark.parametrize("algorithm", ["maml", "reptile", "anil", "metasgd", "mamlpp", "metalstm"])
def test_a_subset_of_steps_scores_exactly_what_every_step_scores(algorithm):
    module = learner(algorithm, steps=EVAL_STEPS)
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=1, queries=2), tasks=2)
    every = module._evaluate(batch, list(range(EVAL_STEPS + 1)))
    assert every["metric"].shape == (2, EVAL_STEPS + 1)
    some = module._evaluate(batch, [0, 2, EVAL_STEPS])
    for key in ("loss", "metric"):
        torch.testing.assert_close(some[key], every[key][:, [0, 2, EVAL_STEPS]], rtol=0, atol=0)
    assert not torch.equal(every["loss"][:, 0], every["loss"][:, -1])  # it did adapt
