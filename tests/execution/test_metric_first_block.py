"""benchmarks/metric_first_block.py measures what it says: its episodes are the presets',
its native rounds run the kernel and its composite rounds do not."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from metalab import native
from metalab.native import fused_first_block
from tests.helpers.paths import BENCHMARKS

pytestmark = pytest.mark.skipif(
    fused_first_block.library() is None, reason="no C compiler for the fused kernel"
)


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "metric_first_block", BENCHMARKS / "metric_first_block.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_episodes_are_the_presets(script):
    protonet = script.Episode.of("protonet_omniglot_5w1s")
    assert (protonet.ways, protonet.shots, protonet.queries) == (60, 1, 5)
    assert protonet.algorithm["name"] == "protonet"
    matching = script.Episode.of("matchingnet_omniglot_20w1s")
    assert (matching.ways, matching.queries) == (20, 5)
    assert matching.algorithm["name"] == "matchingnet" and matching.algorithm["fce"] is False


def test_native_rounds_run_the_kernel_and_composite_rounds_do_not(script, monkeypatch):
    monkeypatch.delenv(script.SWITCH, raising=False)
    episode = script.Episode.of("siamese_omniglot_5w1s")
    row = script.measure(episode, rounds=1, steps=2)
    assert row["native_passes"] == row["passes"] == 2  # one task a step
    assert row["native"] > 0 and row["composite"] > 0
    step = script.training_step(episode)
    native.reset()
    with script.kernel(False):
        step()
    assert native.record()["passes"] == {"native": 0, "composite": 1}
    assert script.SWITCH not in os.environ and fused_first_block.library() is not None
