"""Test tasks side by side on worker threads (``LoopStrategy.map`` of a ``Replicable``
evaluation): each task's numbers are those of the one-thread path, every worker ran some
tasks on its own copy of the model, and the methods that must not (MAML-RL, the metric
methods) or training maps (Reptile's carried Adam state) stay on one thread."""

from __future__ import annotations

import threading

import pytest
import torch

from metalab.data.episodes import NWayKShot
from metalab.execution import LoopStrategy
from metalab.execution.threads import Replicable
from tests.helpers.cases import RandomImages, learner, sample_batch

TASKS = 6


def evaluate(module, threads: int):
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=1, queries=2), tasks=TASKS)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return module._evaluate(batch, [0, 1, 3])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "algorithm,overrides",
    [
        ("maml", ()),
        ("reptile", ("algorithm.inner_lr=0.01",)),
        ("metalstm", ()),
        ("anil", ()),
        ("metasgd", ()),
        ("mamlpp", ()),
        ("cavia", ()),
        ("imaml", ()),
        ("boil", ()),
    ],
)
def test_parallel_evaluation_scores_each_task_as_one_thread(algorithm, overrides):
    module = learner(algorithm, *overrides, steps=3)
    assert module.algorithm.parallel_eval
    one = evaluate(module, 1)
    two = evaluate(module, 2)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-10, atol=1e-12)
    assert not torch.equal(one["loss"][:, 0], one["loss"][:, -1])  # it adapted
    # the module's own model was left holding its parameters
    for name, p in module.model.named_parameters():
        assert p.dtype == torch.float64 and p.is_leaf, name


def test_every_worker_runs_tasks_on_its_own_model():
    module = learner("maml", steps=2)
    seen: dict[int, set[int]] = {}
    evaluate_ = type(module.algorithm).evaluate

    def recording(self, params, *args, **kwargs):
        seen.setdefault(threading.get_ident(), set()).add(id(self.inner_loop.model))
        return evaluate_(self, params, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(module.algorithm), "evaluate", recording)
        evaluate(module, 2)
    assert len(seen) == 2  # two workers
    models = [next(iter(ids)) for ids in seen.values()]
    assert all(len(ids) == 1 for ids in seen.values()) and len(set(models)) == 2


def test_plain_functions_and_one_thread_stay_in_order_on_the_caller():
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=1, queries=2), tasks=TASKS)
    callers: list[int] = []

    def fn(params, support_x, support_y, query_x, query_y):
        callers.append(threading.get_ident())
        return {"n": torch.tensor(len(callers))}

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = LoopStrategy().map(fn, {}, batch)  # a training map: not Replicable
    finally:
        torch.set_num_threads(before)
    assert out["n"].tolist() == list(range(1, TASKS + 1))
    assert set(callers) == {threading.get_ident()}
    torch.set_num_threads(1)
    try:
        callers.clear()
        LoopStrategy().map(Replicable(fn, lambda: fn), {}, batch)
    finally:
        torch.set_num_threads(before)
    assert set(callers) == {threading.get_ident()}


def test_simulators_and_metric_methods_evaluate_on_one_thread():
    from metalab.algorithms.maml_rl import MAMLRL
    from metalab.algorithms.metric import MetricAlgorithm

    assert not MAMLRL.parallel_eval and not MetricAlgorithm.parallel_eval
