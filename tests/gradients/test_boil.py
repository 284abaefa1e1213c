"""BOIL: the meta-gradient equals a float64 per-task reference in which every tensor but the
head's takes the inner SGD steps (the authors' update_parameters with the classifier's step
size 0), under loop, vmap and hybrid; the head is fixed in the inner loop and at test time,
yet meta-learned."""

from __future__ import annotations

import pytest
import torch

from metalab.algorithms import build_algorithm
from metalab.algorithms.boil import BOIL
from metalab.algorithms.maml import MAML
from metalab.errors import ConfigError
from metalab.execution import HybridStrategy, LoopStrategy, VmapStrategy
from metalab.execution import threads as task_threads
from metalab.inner_loop import InnerLoop
from metalab.models.embedding import without_head
from tests.helpers.cases import conv_case, mlp_case
from tests.helpers.configs import compose_train
from tests.helpers.reference import relative_error

STRATEGIES = {
    "loop": LoopStrategy,
    "vmap": lambda: VmapStrategy(chunk=2),
    "hybrid": lambda: HybridStrategy(memory_budget_mib=1e-6),  # a task per chunk
}
ORDERS = [(1, False), (2, False), (2, True)]  # (inner steps, first order)
CASES = {
    "mlp": lambda: mlp_case(),
    "conv4-batchnorm": lambda: conv_case(),
    # MAML's Omniglot network: stride-2 convolutions, the head on the mean feature
    "conv4-strided": lambda: conv_case(strided=True),
}
HEAD = 2  # the head's weight and bias: the last two tensors of every model here


def three_tasks(name: str):
    model, forward, kind, batch, lr = CASES[name]()
    return model, forward, kind, batch.slice(0, 3), lr


def boil_meta_gradient(forward, params, batch, loss_fn, steps, lr, first_order):
    """Mean over tasks of d(query loss)/d(params) after ``steps`` SGD steps of the body on
    the support set: ``p - lr * g`` for the body, ``p - 0 * g`` (unchanged) for the head."""
    total = [torch.zeros_like(p) for p in params]
    body = len(params) - HEAD
    for i in range(len(batch)):
        fast = list(params)
        for _ in range(steps):
            loss = loss_fn(forward(fast, batch.support_x[i]), batch.support_y[i])
            grads = torch.autograd.grad(loss, fast[:body], create_graph=not first_order)
            if first_order:
                grads = [g.detach() for g in grads]
            fast = [p - lr * g for p, g in zip(fast[:body], grads, strict=True)] + fast[body:]
        query = loss_fn(forward(fast, batch.query_x[i]), batch.query_y[i])
        for t, g in zip(total, torch.autograd.grad(query, params), strict=True):
            t += g / len(batch)
    return total


def meta_gradient(model, algorithm, batch, strategy) -> list[torch.Tensor]:
    model.zero_grad()
    params = dict(model.named_parameters())
    losses, metrics = strategy.meta_gradient(
        algorithm.meta_objective, params, batch, lambda loss: loss.backward()
    )
    assert losses.shape == metrics.shape == (len(batch),) and torch.isfinite(losses).all()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("steps,first_order", ORDERS)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_boil_matches_reference(name, strategy, steps, first_order):
    model, forward, kind, batch, lr = three_tasks(name)
    algorithm = BOIL(InnerLoop(model, kind), steps, lr, steps, lr, first_order=first_order)
    ours = meta_gradient(model, algorithm, batch, STRATEGIES[strategy]())
    plain = [p.detach().contiguous().requires_grad_() for p in model.parameters()]
    reference = boil_meta_gradient(forward, plain, batch, kind.loss, steps, lr, first_order)
    assert relative_error(ours, reference) < 1e-8
    assert all(float(g.abs().sum()) > 0 for g in ours[-HEAD:])  # the head is meta-learned


@pytest.mark.parametrize("name", sorted(CASES))
def test_hybrid_with_two_worker_threads_takes_the_loops_gradient(monkeypatch, name):
    monkeypatch.setattr(task_threads, "workers_for", lambda tasks, device: 2)
    model, _, kind, batch, lr = three_tasks(name)
    algorithm = BOIL(InnerLoop(model, kind), 2, lr, 2, lr)
    loop = meta_gradient(model, algorithm, batch, LoopStrategy())
    hybrid = meta_gradient(model, algorithm, batch, HybridStrategy(memory_budget_mib=1e-6))
    assert relative_error(hybrid, loop) < 1e-8


def test_the_head_stays_put_and_the_body_moves():
    model, _, kind, batch, lr = three_tasks("conv4-batchnorm")
    algorithm = BOIL(InnerLoop(model, kind), 2, lr, 2, lr)
    params = {k: p.detach() for k, p in model.named_parameters()}
    task = batch.task(0)
    adapted = algorithm.adapt_task(params, task.support_x, task.support_y)
    head = [k for k in params if k.startswith("head.")]
    assert head == ["head.weight", "head.bias"]
    assert all(adapted[k] is params[k] for k in head)
    assert all(not torch.equal(adapted[k], params[k]) for k in params if k not in head)


def test_boil_differs_from_maml_only_by_the_head_step():
    """The same objective with MAML's all-parameter step differs: the head's step matters."""
    model, _, kind, batch, lr = three_tasks("conv4-batchnorm")
    boil = meta_gradient(model, BOIL(InnerLoop(model, kind), 1, lr, 1, lr), batch, LoopStrategy())
    maml = meta_gradient(model, MAML(InnerLoop(model, kind), 1, lr, 1, lr), batch, LoopStrategy())
    assert relative_error(boil, maml) > 1e-3


@pytest.mark.parametrize("name", sorted(CASES))
def test_test_time_fine_tuning_adapts_the_body_alone(name):
    model, forward, kind, batch, lr = three_tasks(name)
    algorithm = BOIL(InnerLoop(model, kind), 1, lr, 2, lr / 2)
    params = {k: p.detach() for k, p in model.named_parameters()}
    task = batch.task(1)
    fast = list(params.values())
    expected = []
    for step in range(3):
        if step:
            leaves = [p.detach().requires_grad_() for p in fast]
            loss = kind.loss(forward(leaves, task.support_x), task.support_y)
            grads = torch.autograd.grad(loss, leaves)
            fast = [p - lr / 2 * g for p, g in zip(fast[:-HEAD], grads, strict=False)]
            fast = [p.detach() for p in fast] + list(params.values())[-HEAD:]
        expected.append(kind.loss(forward(fast, task.query_x), task.query_y))
    scores = algorithm.evaluate(params, *vars(task).values())
    torch.testing.assert_close(scores["loss"], torch.stack(expected))


def test_config_and_a_model_without_a_head():
    model, _, kind, _, _ = conv_case()
    cfg = compose_train("algorithm=boil").algorithm
    algorithm = build_algorithm(cfg, InnerLoop(model, kind))
    assert isinstance(algorithm, BOIL) and algorithm.prefix == "head."
    assert list(algorithm.parameters()) == []  # nothing of its own: the head is the model's
    headless = without_head(model.float(), (1, 16, 16))
    with pytest.raises(ConfigError, match="algorithm=boil needs a model whose last child"):
        BOIL(InnerLoop(headless, kind), 1, 0.1, 1, 0.1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_evaluation_under_vmap_scores_as_the_loop(name):
    """``strategy=vmap`` maps ``evaluate`` over tasks (validation, test): same scores."""
    model, _, kind, batch, lr = three_tasks(name)
    algorithm = BOIL(InnerLoop(model, kind), 1, lr, 2, lr)
    params = {k: p.detach() for k, p in model.named_parameters()}
    with torch.no_grad():
        loop = LoopStrategy().map(algorithm.evaluate, params, batch)
        vmapped = VmapStrategy(chunk=2).map(algorithm.evaluate, params, batch)
    for key in ("loss", "metric"):
        assert loop[key].shape == (len(batch), 3)
        torch.testing.assert_close(vmapped[key], loop[key], rtol=1e-9, atol=1e-10)
