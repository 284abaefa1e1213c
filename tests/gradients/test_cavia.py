"""CAVIA: the meta-gradient (network and conditioning layer) equals a float64 per-task
reference written as the authors' code writes the model (the context concatenated to the MLP's
input; FiLM of a Conv-4 block after its pooling, before its ReLU), under loop, vmap and
hybrid; only the context adapts, from zeros, at training and at test time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms import build_algorithm
from metalab.algorithms.cavia import CAVIA, Conditioned
from metalab.errors import ConfigError
from metalab.execution import HybridStrategy, LoopStrategy, VmapStrategy
from metalab.execution import threads as task_threads
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION
from metalab.models.resnet12 import ResNet12
from tests.helpers.cases import conv_case, mlp_case
from tests.helpers.configs import compose_train
from tests.helpers.reference import relative_error

CONTEXT = 3  # context parameters in these tests
STRATEGIES = {
    "loop": LoopStrategy,
    "vmap": lambda: VmapStrategy(chunk=2),
    "hybrid": lambda: HybridStrategy(memory_budget_mib=1e-6),  # a task per chunk
}
ORDERS = [(1, False), (2, False), (2, True)]  # (inner steps, first order)


# --- the reference: the authors' models, plain autograd ------------------------------------


def mlp_forward(params, conditioning, context, x):
    """CaviaModel: [x, context] through Linear(in + context, 16), ReLU, ..., Linear."""
    (w1, b1, *rest), (w_context,) = params, conditioning
    h = torch.cat([x, context.expand(len(x), -1)], dim=1)
    h = F.relu(F.linear(h, torch.cat([w1, w_context], dim=1), b1))
    *hidden, w_out, b_out = rest
    for w, b in zip(hidden[::2], hidden[1::2], strict=True):
        h = F.relu(F.linear(h, w, b))
    return F.linear(h, w_out, b_out)


def conv_forward(film_block: int, strided: bool = False):
    """CondConvNet: [conv, batch norm, max-pool, FiLM where chosen, ReLU] per block; MAML's
    Omniglot variant with stride-2 convolutions and the head on the mean feature."""

    def forward(params, conditioning, context, x):
        *blocks, w_head, b_head = params
        film = F.linear(context, *conditioning)
        gamma, beta = film[: len(film) // 2], film[len(film) // 2 :]
        for i in range(0, len(blocks), 4):
            w, b, bn_w, bn_b = blocks[i : i + 4]
            x = F.conv2d(x, w, b, stride=2 if strided else 1, padding=1)
            x = F.batch_norm(x, None, None, bn_w, bn_b, training=True)
            if not strided:
                x = F.max_pool2d(x, 2)
            if i // 4 == film_block - 1:
                x = gamma.view(1, -1, 1, 1) * x + beta.view(1, -1, 1, 1)
            x = F.relu(x)
        return F.linear(x.mean((-2, -1)) if strided else x.flatten(1), w_head, b_head)

    return forward


def cavia_meta_gradient(forward, params, conditioning, batch, loss_fn, steps, lr, first_order):
    """Mean over tasks of d(query loss)/d(network, conditioning) after ``steps`` SGD steps of
    a context that starts at zero (the authors' regression/cavia.py, one task at a time)."""
    leaves = [*params, *conditioning]
    total = [torch.zeros_like(p) for p in leaves]
    for i in range(len(batch)):
        context = torch.zeros(CONTEXT, dtype=torch.float64, requires_grad=True)
        for _ in range(steps):
            loss = loss_fn(forward(params, conditioning, context, batch.support_x[i]),
                           batch.support_y[i])  # fmt: skip
            (grad,) = torch.autograd.grad(loss, context, create_graph=not first_order)
            context = context - lr * grad
        query = loss_fn(forward(params, conditioning, context, batch.query_x[i]),
                        batch.query_y[i])  # fmt: skip
        for t, g in zip(total, torch.autograd.grad(query, leaves), strict=True):
            t += g / len(batch)
    return total


# --- the cases ------------------------------------------------------------------------------


def case(name: str, film_block: int = 3):
    """(model, reference forward, kind, three tasks, context lr)."""
    if name == "mlp":
        model, _, kind, batch, _ = mlp_case()
        return model, mlp_forward, kind, batch.slice(0, 3), 0.5
    strided = name == "conv4-strided"
    model, _, kind, batch, lr = conv_case(strided=strided)
    return model, conv_forward(film_block, strided), kind, batch.slice(0, 3), lr


def cavia(model, kind, steps, lr, first_order=False, film_block=3) -> CAVIA:
    torch.manual_seed(1)
    algorithm = CAVIA(
        InnerLoop(model, kind), steps, lr, steps, lr, first_order=first_order,
        num_context_params=CONTEXT, film_block=film_block,
    )  # fmt: skip
    bias = algorithm.conditioning.bias
    if bias is not None:  # a FiLM far from zero, scales of both signs (max-pooling and FiLM
        with torch.no_grad():  # commute only for positive ones)
            signs = torch.tensor([1.0, -1.0]).repeat(len(bias) // 2).double()
            bias.uniform_(0.5, 1.5).mul_(signs)
    return algorithm


def meta_gradient(model, algorithm, batch, strategy) -> list[torch.Tensor]:
    model.zero_grad()
    algorithm.zero_grad()
    params = dict(model.named_parameters())
    losses, metrics = strategy.meta_gradient(
        algorithm.meta_objective, params, batch, lambda loss: loss.backward()
    )
    assert losses.shape == metrics.shape == (len(batch),) and torch.isfinite(losses).all()
    leaves = [*model.parameters(), *algorithm.parameters()]
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in leaves]


CASES = ["mlp", "conv4-batchnorm", "conv4-strided"]


@pytest.mark.parametrize("steps,first_order", ORDERS)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("name", CASES)
def test_cavia_matches_reference(name, strategy, steps, first_order):
    model, forward, kind, batch, lr = case(name)
    algorithm = cavia(model, kind, steps, lr, first_order)
    ours = meta_gradient(model, algorithm, batch, STRATEGIES[strategy]())
    conditioning = list(algorithm.conditioning.parameters())
    reference = cavia_meta_gradient(
        forward, list(model.parameters()), conditioning, batch, kind.loss, steps, lr, first_order
    )
    assert relative_error(ours, reference) < 1e-8
    learned = ours[len(list(model.parameters())) :]
    assert learned and all(float(g.abs().sum()) > 0 for g in learned)  # meta-learned


@pytest.mark.parametrize("film_block", [1, 4])
def test_film_block_chooses_the_conditioned_block(film_block):
    model, forward, kind, batch, lr = case("conv4-batchnorm", film_block)
    algorithm = cavia(model, kind, 1, lr, film_block=film_block)
    ours = meta_gradient(model, algorithm, batch, LoopStrategy())
    conditioning = list(algorithm.conditioning.parameters())
    reference = cavia_meta_gradient(
        forward, list(model.parameters()), conditioning, batch, kind.loss, 1, lr, False
    )
    assert relative_error(ours, reference) < 1e-8


@pytest.mark.parametrize("workers", [2])
@pytest.mark.parametrize("name", CASES)
def test_hybrid_worker_threads_condition_their_own_model(monkeypatch, name, workers):
    """Each worker thread runs its own copy of the model inside its own ``Conditioned``."""
    monkeypatch.setattr(task_threads, "workers_for", lambda tasks, device: workers)
    model, _, kind, batch, lr = case(name)
    algorithm = cavia(model, kind, 2, lr)
    loop = meta_gradient(model, algorithm, batch, LoopStrategy())
    hybrid = meta_gradient(model, algorithm, batch, HybridStrategy(memory_budget_mib=1e-6))
    assert relative_error(hybrid, loop) < 1e-8


def test_second_order_reaches_the_network_through_the_context():
    model, _, kind, batch, lr = case("conv4-batchnorm")
    second = meta_gradient(model, cavia(model, kind, 1, lr), batch, LoopStrategy())
    first = meta_gradient(model, cavia(model, kind, 1, lr, True), batch, LoopStrategy())
    assert relative_error(first, second) > 1e-3


@pytest.mark.parametrize("name", CASES)
def test_only_the_context_adapts_and_it_starts_at_zero(name):
    model, _, kind, batch, lr = case(name)
    algorithm = cavia(model, kind, 2, lr)
    params = {k: p.detach() for k, p in model.named_parameters()}
    task = batch.task(0)
    adapted = algorithm.adapt_task(params, task.support_x, task.support_y)
    assert set(adapted) == {"context", *(f"net.{k}" for k in params)} | {
        f"conditioning.{k}" for k, _ in algorithm.conditioning.named_parameters()
    }
    assert all(adapted[f"net.{k}"] is p for k, p in params.items())  # the network as it was
    assert float(adapted["context"].detach().abs().sum()) > 0
    assert torch.equal(algorithm.conditioned(params)["context"], torch.zeros(CONTEXT).double())
    gradient = algorithm.inner_gradient(params, task.support_x, task.support_y)
    assert set(gradient) == {"context"} and gradient["context"].shape == (CONTEXT,)


@pytest.mark.parametrize("name", CASES)
def test_evaluation_adapts_a_fresh_context_per_task(name):
    """Before adaptation the query is scored at context zero; each test step moves the
    context alone, first order, at eval_inner_lr, as the reference's steps do."""
    model, forward, kind, batch, lr = case(name)
    algorithm = cavia(model, kind, 1, lr)
    algorithm.eval_inner_steps = 2
    params = {k: p.detach() for k, p in model.named_parameters()}
    conditioning = [p.detach() for p in algorithm.conditioning.parameters()]
    plain = list(params.values())
    task = batch.task(1)
    context = torch.zeros(CONTEXT, dtype=torch.float64)
    expected = []
    for step in range(3):
        if step:
            leaf = context.requires_grad_()
            loss = kind.loss(forward(plain, conditioning, leaf, task.support_x), task.support_y)
            context = (leaf - lr * torch.autograd.grad(loss, leaf)[0]).detach()
        expected.append(kind.loss(forward(plain, conditioning, context, task.query_x),
                                  task.query_y))  # fmt: skip
    scores = algorithm.evaluate(params, *vars(task).values())
    torch.testing.assert_close(scores["loss"], torch.stack(expected))
    assert scores["metric"].shape == (3,)
    again = algorithm.evaluate(params, *vars(task).values())  # no context carried over
    torch.testing.assert_close(again["loss"], scores["loss"])


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return ResNet12(1, 3, image_size=16, channels=(4, 4, 8, 8)).double()


@pytest.mark.parametrize("name", ["mlp", "conv4-batchnorm", "conv4-strided", "resnet12"])
def test_an_identity_film_or_a_zero_context_is_the_model_itself(name):
    """``Conditioned`` runs the model's own layers: with gamma = 1, beta = 0 (or a zero
    context at the input) it is the model, so nothing but the conditioning differs."""
    if name == "resnet12":
        model, batch = tiny_resnet(), case("conv4-batchnorm")[3]
    else:
        model, _, _, batch, _ = case(name)
    model.eval()  # (ResNet-12's DropBlock is off anyway at rate 0)
    algorithm = CAVIA(InnerLoop(model, CLASSIFICATION), 1, 0.1, 1, 0.1,
                      num_context_params=CONTEXT)  # fmt: skip
    params = {k: p.detach() for k, p in model.named_parameters()}
    full = algorithm.conditioned(params)
    weight = full["conditioning.weight"]
    full["conditioning.weight"] = torch.zeros_like(weight)
    if "conditioning.bias" in full:
        channels = len(full["conditioning.bias"]) // 2
        identity = torch.cat([torch.ones(channels), torch.zeros(channels)])  # gamma 1, beta 0
        full["conditioning.bias"] = identity.double()
    else:
        full["context"] = torch.randn(CONTEXT).double()  # multiplied by a zero weight
    x = batch.query_x[0]
    with torch.no_grad():
        torch.testing.assert_close(algorithm.context_loop().predict(full, x), model(x))


def test_settings_come_from_the_config_and_bad_ones_are_refused():
    model, _, kind, _, _ = conv_case()
    cfg = compose_train("algorithm=cavia", "algorithm.num_context_params=7").algorithm
    algorithm = build_algorithm(cfg, InnerLoop(model, kind))
    assert (algorithm.inner_lr, algorithm.film_at) == (1.0, 2)  # the code's lr, third block
    assert algorithm.conditioning.weight.shape == (2 * 4, 7)  # gamma and beta of 4 channels
    assert algorithm.conditioning.weight.dtype == torch.float64  # the model's
    with pytest.raises(ConfigError, match="film_block=5 but the model has 4 blocks"):
        CAVIA(InnerLoop(model, kind), 1, 0.1, 1, 0.1, film_block=5)
    with pytest.raises(ConfigError, match="num_context_params=0"):
        CAVIA(InnerLoop(model, kind), 1, 0.1, 1, 0.1, num_context_params=0)
    with pytest.raises(ConfigError, match="use model=mlp or model=conv4"):
        CAVIA(InnerLoop(nn.Sequential(nn.Conv2d(1, 2, 3)), kind), 1, 0.1, 1, 0.1)
    mlp, _, regression, _, _ = mlp_case()
    on_mlp = CAVIA(InnerLoop(mlp, regression), 1, 0.1, 1, 0.1, num_context_params=5)
    assert on_mlp.film_at is None and on_mlp.conditioning.weight.shape == (16, 5)
    assert on_mlp.conditioning.bias is None  # the first layer's bias is the model's
    assert isinstance(on_mlp.context_loop().model, Conditioned)


@pytest.mark.parametrize("name", CASES)
def test_evaluation_under_vmap_scores_as_the_loop(name):
    """``strategy=vmap`` maps ``evaluate`` over tasks (validation, test): same scores."""
    model, _, kind, batch, lr = case(name)
    algorithm = cavia(model, kind, 1, lr)
    algorithm.eval_inner_steps = 2
    params = {k: p.detach() for k, p in model.named_parameters()}
    with torch.no_grad():
        loop = LoopStrategy().map(algorithm.evaluate, params, batch)
        vmapped = VmapStrategy(chunk=2).map(algorithm.evaluate, params, batch)
    for key in ("loss", "metric"):
        assert loop[key].shape == (len(batch), 3)
        torch.testing.assert_close(vmapped[key], loop[key], rtol=1e-9, atol=1e-10)
