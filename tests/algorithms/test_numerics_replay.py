"""The NaN diagnosis replays a task with the algorithm's own update (``Algorithm.replay``):
its verdict (inner or outer loss) and inner step are those of that update, for every
algorithm: ANIL's head-only steps, Meta-SGD's and MAML++'s learned rates, Reptile's inner
Adam and mini-batches, Meta-LSTM's learned update, and no inner loop for metric methods.

Each divergence is forced where its step is known: a poisoned support set (before any inner
step), a poisoned query set (only the outer loss), an infinite rate (the step after it), or
a poisoned example of one of Reptile's mini-batches. Tiny float64 models.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from metalab.algorithms.anil import ANIL
from metalab.algorithms.base import Algorithm
from metalab.algorithms.fomaml import FOMAML
from metalab.algorithms.maml import MAML
from metalab.algorithms.mamlpp import MAMLPlusPlus
from metalab.algorithms.metalstm import MetaLSTM
from metalab.algorithms.metasgd import MetaSGD
from metalab.algorithms.protonet import ProtoNet
from metalab.algorithms.reptile import Reptile
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.tasks import TaskBatch
from metalab.execution import LoopStrategy
from metalab.inner_loop import InnerLoop, gradient_norm
from metalab.losses import CLASSIFICATION, REGRESSION
from metalab.models.conv4 import Conv4
from metalab.models.embedding import without_head
from metalab.models.mlp import MLP
from metalab.numerics import non_finite_error, replay_task

INF = float("inf")
STEPS = 3


def regression_case() -> tuple[torch.nn.Module, object, TaskBatch]:
    """An MLP 8-8 and three sinusoid tasks of 5 shots and 7 queries."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    tasks = SinusoidTasks(5, 7)
    batch = TaskBatch.stack([tasks.sample(generator) for _ in range(3)])
    return MLP(1, 1, (8, 8)).double(), REGRESSION, batch.to("cpu", torch.float64)


def image_batch() -> TaskBatch:
    """Three 3-way tasks of random 16x16 images, 2 shots and 2 queries per class."""
    generator = torch.Generator().manual_seed(1)

    def images(per_class: int) -> torch.Tensor:
        return torch.rand(3, 3 * per_class, 1, 16, 16, generator=generator, dtype=torch.float64)

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(3).repeat_interleave(per_class).expand(3, -1).clone()

    return TaskBatch(images(2), labels(2), images(2), labels(2))


def image_case() -> tuple[torch.nn.Module, object, TaskBatch]:
    """A Conv-4 of 4 channels with batch norm (a body and a head, batch-norm parameters)."""
    torch.manual_seed(0)
    return Conv4(1, 3, image_size=16, channels=4).double(), CLASSIFICATION, image_batch()


def embedding_case() -> tuple[torch.nn.Module, object, TaskBatch]:
    torch.manual_seed(0)
    model = without_head(Conv4(1, 3, image_size=16, channels=4), (1, 16, 16)).double()
    return model, CLASSIFICATION, image_batch()


def reptile(loop: InnerLoop, lr: float = 0.01, **kwargs) -> Reptile:
    kwargs = {"inner_batch": 4, "anneal": "none", **kwargs}
    return Reptile(loop, STEPS, lr, 2, lr, **kwargs)


# name -> (case, algorithm on an inner loop, inner steps a replay records)
ALGORITHMS: dict[str, tuple[Callable, Callable[[InnerLoop], Algorithm], int]] = {
    "maml": (regression_case, lambda loop: MAML(loop, STEPS, 0.01, 1, 0.01), STEPS),
    "fomaml": (regression_case, lambda loop: FOMAML(loop, STEPS, 0.01, 1, 0.01), STEPS),
    "anil": (image_case, lambda loop: ANIL(loop, STEPS, 0.4, 1, 0.4), STEPS),
    "metasgd": (regression_case, lambda loop: MetaSGD(loop, STEPS, 0.01, 1, 0.01), STEPS),
    "mamlpp": (image_case, lambda loop: MAMLPlusPlus(loop, STEPS, 0.4, 1, 0.4), STEPS),
    "reptile-sgd": (regression_case, lambda loop: reptile(loop, inner_optimizer="sgd"), STEPS),
    "reptile-adam-carried": (regression_case, reptile, STEPS),
    "metalstm": (regression_case, lambda loop: MetaLSTM(loop, STEPS, hidden_size=4), STEPS),
    "protonet": (embedding_case, ProtoNet, 0),
}
HAS_QUERY = [n for n in ALGORITHMS if not n.startswith("reptile")]  # Reptile trains on all


def build(name: str):
    case, make, steps = ALGORITHMS[name]
    model, kind, batch = case()
    algorithm = make(InnerLoop(model, kind)).double()
    return model, algorithm, batch, steps


def detached(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in model.named_parameters()}


def poisoned(batch: TaskBatch, part: str, task: int, example: int) -> TaskBatch:
    tensors = {k: v.clone() for k, v in vars(batch).items()}
    tensors[f"{part}_x"][task, example] = float("nan")
    return TaskBatch(**tensors)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_replay_reproduces_each_tasks_training_loss(name):
    """The replay runs what the outer step ran: the same loss for every task of the batch
    (Reptile's carried Adam state: as the tasks before it left it), the same inner steps."""
    model, algorithm, batch, steps = build(name)
    params = dict(model.named_parameters())
    losses, _ = algorithm.outer_step(params, batch, LoopStrategy(), lambda loss: loss.backward())
    for task in range(len(batch)):
        replay = algorithm.replay(params, batch, task)
        assert replay.loss == pytest.approx(float(losses[task]), rel=1e-12, abs=1e-15)
        assert len(replay.inner_steps) == steps
        assert all(s.grad_norm > 0 for s in replay.inner_steps)


@pytest.mark.parametrize("name", HAS_QUERY)
def test_a_poisoned_query_set_blames_the_outer_loss(name):
    model, algorithm, batch, steps = build(name)
    info = replay_task(algorithm, detached(model), poisoned(batch, "query", 1, 0), 1)
    assert info["where"] == "outer" and info["inner_steps"] == steps
    assert info["loss"] != info["loss"]  # NaN


@pytest.mark.parametrize("name", [n for n in ALGORITHMS if n != "protonet"])
def test_a_poisoned_support_set_blames_the_inner_loss_before_any_step(name):
    model, algorithm, batch, _ = build(name)
    if name.startswith("reptile"):  # all examples train: poison the first mini-batch's first
        order = algorithm.minibatch_order(len(batch), 12)[1]
        part, example = ("support", int(order[0])) if order[0] < 5 else ("query", order[0] - 5)
        batch = poisoned(batch, part, 1, int(example))
    else:
        batch = poisoned(batch, "support", 1, 0)
    info = replay_task(algorithm, detached(model), batch, 1)
    assert info["where"] == "inner" and info["inner_step"] == 0 and info["grad_norm"] == 0


@pytest.mark.parametrize("part", ["support", "query"])
def test_a_metric_method_has_only_its_one_loss_to_blame(part):
    model, algorithm, batch, _ = build("protonet")
    info = replay_task(algorithm, detached(model), poisoned(batch, part, 2, 1), 2)
    assert info["where"] == "outer" and info["inner_steps"] == 0
    assert info["loss"] != info["loss"] and info["grad_norm"] == 0


def infinite_step_rate(algorithm: MAMLPlusPlus) -> None:
    for rate in algorithm.step_rates.values():
        rate[1] = INF  # the second inner step's rate of every layer


def infinite_rate_element(algorithm: MetaSGD) -> None:
    rate = next(iter(algorithm.rates.values()))
    rate.view(-1)[3] = INF  # one element of the first weight: inner_lr stays 0.01


def nan_forget_gate(algorithm: MetaLSTM) -> None:
    algorithm.forget_gate.bias.fill_(float("nan"))  # the model's forward never reads it


# name -> (what makes the algorithm's own rule diverge, the inner step whose loss is hit)
DIVERGENCES = {
    "maml": (lambda a: setattr(a, "inner_lr", INF), 1),
    "fomaml": (lambda a: setattr(a, "inner_lr", INF), 1),
    "anil": (lambda a: setattr(a, "inner_lr", INF), 1),
    "metasgd": (infinite_rate_element, 1),
    "mamlpp": (infinite_step_rate, 2),
    "reptile-sgd": (lambda a: setattr(a, "inner_lr", INF), 1),
    "reptile-adam-carried": (lambda a: setattr(a, "inner_lr", INF), 1),
    "metalstm": (nan_forget_gate, 1),
}


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_a_diverging_inner_rule_is_named_at_the_step_after_it(name):
    """A rate or update only the algorithm's own rule uses (a plain ``p - inner_lr * g``
    replay would not diverge for Meta-SGD, MAML++ or Meta-LSTM) breaks the inner step after
    it; the largest gradient norm is that of the steps before."""
    model, algorithm, batch, _ = build(name)
    diverge, step = DIVERGENCES[name]
    with torch.no_grad():
        diverge(algorithm)
    info = replay_task(algorithm, detached(model), batch, 1)
    assert info["where"] == "inner" and info["inner_step"] == step
    assert 0 < info["grad_norm"] < INF


def test_anils_inner_gradient_is_the_heads_alone():
    model, algorithm, batch, _ = build("anil")
    algorithm.inner_lr = INF
    info = replay_task(algorithm, detached(model), batch, 0)
    loss = CLASSIFICATION.loss(model(batch.support_x[0]), batch.support_y[0])
    names, leaves = zip(*model.named_parameters(), strict=True)
    grads = dict(zip(names, torch.autograd.grad(loss, leaves), strict=True))
    head = gradient_norm({k: g for k, g in grads.items() if k.startswith("head.")})
    assert info["inner_step"] == 1 and info["grad_norm"] == pytest.approx(head, rel=1e-10)
    assert head < gradient_norm(grads)


def test_reptile_replays_the_mini_batch_that_holds_a_poisoned_example():
    """A poisoned example that the second mini-batch is the first to use: the inner loss of
    step 1 (a replay on the whole support set would blame step 0, or miss a query example)."""
    model, algorithm, batch, _ = build("reptile-sgd")
    order = algorithm.minibatch_order(len(batch), 12)[0]  # 12 examples: 5 support, 7 query
    example = next(int(e) for e in order[4:8] if e >= 5 and e not in order[:4])
    info = replay_task(algorithm, detached(model), poisoned(batch, "query", 0, example - 5), 0)
    assert info["where"] == "inner" and info["inner_step"] == 1


def fake_module(algorithm: Algorithm, model: torch.nn.Module, inner_lr: float | None):
    """What ``non_finite_error`` reads of the LightningModule."""
    settings = {"name": "x"} if inner_lr is None else {"name": "x", "inner_lr": inner_lr}
    cfg = OmegaConf.create({"optimizer": {"lr": 0.001}, "algorithm": settings})
    return SimpleNamespace(cfg=cfg, model=model, algorithm=algorithm, global_step=5)


def test_the_error_names_the_inner_step_and_the_inner_rate():
    model, algorithm, batch, _ = build("maml")
    algorithm.inner_lr = INF
    losses = torch.tensor([0.5, float("nan"), float("nan")])
    message = str(non_finite_error(fake_module(algorithm, model, INF), batch, losses))
    assert message.startswith(
        "the meta-training loss is not finite at step 5: the inner (support) loss of task 1 "
        "is nan after 1 inner steps (inner gradient norm up to "
    )
    assert "the inner learning rate is probably too high (algorithm.inner_lr=inf)" in message


def test_meta_lstm_is_pointed_at_the_outer_update_that_shapes_its_inner_one():
    model, algorithm, batch, _ = build("metalstm")
    batch = poisoned(batch, "query", 0, 0)
    losses = torch.tensor([float("nan"), 0.5, 0.5])
    message = str(non_finite_error(fake_module(algorithm, model, None), batch, losses))
    assert "the outer (query) loss of task 0 is nan after adaptation" in message
    assert message.endswith(
        "the outer learning rate is probably too high (optimizer.lr=0.001): lower it, or set "
        "optimizer.grad_clip. The checkpoints written before this step are kept."
    )
    assert "inner_lr" not in message


def test_a_non_finite_learned_update_is_an_outer_failure():
    """Meta-LSTM's gates are meta-parameters: NaN there means the outer update diverged."""
    model, algorithm, batch, _ = build("metalstm")
    with torch.no_grad():
        nan_forget_gate(algorithm)
    losses = torch.tensor([float("nan")] * 3)
    message = str(non_finite_error(fake_module(algorithm, model, None), batch, losses))
    assert "the meta-parameters themselves are not finite" in message
    assert "the outer learning rate is probably too high (optimizer.lr=0.001)" in message
