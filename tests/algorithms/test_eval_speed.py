"""The no-graph evaluation (``metalab.fast_eval``) scores what the per-task path scores.

Each algorithm's ``evaluate`` against its ``evaluate_per_task`` (the previous code), in
float64 on a small Conv-4, every inner step scored; timing is benchmarks/eval_throughput.py's.
"""

from __future__ import annotations

import pytest
import torch

from metalab import fast_eval
from metalab.data.episodes import NWayKShot
from metalab.execution import AutoStrategy, LoopStrategy
from metalab.module import MetaLearner
from tests.helpers.cases import RandomImages, sample_batch
from tests.helpers.cases import learner as curve_learner

STEPS = 4


def learner(algorithm: str, *overrides: str) -> MetaLearner:
    return curve_learner(algorithm, *overrides, steps=STEPS)


def both_paths(module: MetaLearner, tasks: int = 2):
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=1, queries=2), tasks=tasks)
    params = {k: p.detach() for k, p in module.model.named_parameters()}
    steps = list(range(STEPS + 1))
    fast, slow = [], []
    for task in zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y, strict=True):
        fast.append(module.algorithm.evaluate(params, *task, score_at=steps))
        slow.append(module.algorithm.evaluate_per_task(params, *task, score_at=steps))
    return fast, slow


def assert_same(fast, slow, rtol: float = 1e-12) -> None:
    for new, old in zip(fast, slow, strict=True):
        assert not new["loss"].requires_grad  # no graph left behind
        torch.testing.assert_close(new["loss"], old["loss"], rtol=rtol, atol=1e-13)
        torch.testing.assert_close(new["metric"], old["metric"], rtol=0, atol=0)
    assert not torch.equal(slow[0]["loss"][0], slow[0]["loss"][-1])  # it did adapt


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("transductive", [True, False])
@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_reptile_fast_evaluation_matches_the_per_task_path(optimizer, transductive, downsample):
    module = learner(
        "reptile",
        f"algorithm.inner_optimizer={optimizer}",
        f"algorithm.transductive={str(transductive).lower()}",
        "algorithm.inner_lr=0.01",
        f"model.downsample={downsample}",
    )
    assert fast_eval.rule_for(module.algorithm) is not None
    assert_same(*both_paths(module))


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_maml_fast_evaluation_matches_the_per_task_path(algorithm):
    module = learner(algorithm)
    assert fast_eval.rule_for(module.algorithm) is not None
    assert_same(*both_paths(module))


@pytest.mark.parametrize("hidden", [20, 0])
def test_metalstm_fast_evaluation_matches_the_unrolled_path(monkeypatch, hidden):
    monkeypatch.setattr(fast_eval, "ROWS", 64)  # several blocks on the small model
    module = learner("metalstm", f"algorithm.hidden_size={hidden}")
    # Meta-LSTM's initial rate is tiny; larger input gates make the updates visible.
    torch.nn.init.constant_(module.algorithm.input_gate.bias, 1.0)
    assert_same(*both_paths(module))


@pytest.mark.parametrize("algorithm", ["metasgd", "mamlpp", "anil"])
def test_other_rules_keep_the_per_task_path(algorithm):
    module = learner(algorithm)
    assert fast_eval.rule_for(module.algorithm) is None
    if algorithm == "anil":  # its own evaluate (the head alone adapts)
        return
    fast, slow = both_paths(module, tasks=1)
    torch.testing.assert_close(fast[0]["loss"], slow[0]["loss"], rtol=0, atol=0)


def test_fast_tanh_is_tanh_to_rounding():
    z = torch.linspace(-30, 30, 10001, dtype=torch.float64)
    torch.testing.assert_close(fast_eval.fast_tanh(z), torch.tanh(z), rtol=0, atol=1e-15)
    torch.testing.assert_close(
        fast_eval.fast_tanh(z.float()), torch.tanh(z.float()), rtol=0, atol=4e-7
    )


class CountingLoop(LoopStrategy):
    def __init__(self) -> None:
        self.calls = 0

    def map(self, *args):
        self.calls += 1
        return super().map(*args)


def test_auto_returns_its_lone_trial_instead_of_mapping_the_batch_twice():
    module = learner("maml")
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=1, queries=2), tasks=2)
    params = {k: p.detach() for k, p in module.model.named_parameters()}
    loop = CountingLoop()
    auto = AutoStrategy([loop])
    with torch.enable_grad():
        first = auto.map(module.algorithm.evaluate, params, batch)
    assert loop.calls == 1 and auto.chosen_map is loop
    reference = LoopStrategy().map(module.algorithm.evaluate, params, batch)
    for key, value in reference.items():
        torch.testing.assert_close(first[key], value, rtol=0, atol=0)
    with torch.enable_grad():
        auto.map(module.algorithm.evaluate, params, batch)
    assert loop.calls == 2
