"""R2-D2's closed-form ridge head, float64: its solution and gradient equal a direct
``torch.linalg.solve`` of the other form of the normal equations (examples < features:
Woodbury against the primal system; examples > features: the reverse), and its
meta-gradient equals that of a per-task reference written here (explicit embedding, explicit
ridge solve over the task's own ways, cross-entropy), under loop and vmap."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from metalab.algorithms import build_algorithm, has_fixed_head
from metalab.algorithms.r2d2 import R2D2, ridge_regression
from metalab.data.tasks import TaskBatch
from metalab.errors import ConfigError
from metalab.execution import LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION
from metalab.models.conv4 import Conv4
from metalab.models.embedding import without_head
from tests.helpers.reference import relative_error

STRATEGIES = {"loop": LoopStrategy, "vmap": lambda: VmapStrategy(chunk=2)}


def primal(x, y, lam):
    """(x^T x + lam I)^-1 x^T y: a features x features system."""
    return torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)


def dual(x, y, lam):
    """x^T (x x^T + lam I)^-1 y: an examples x examples system (Woodbury)."""
    return x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(x.shape[0], dtype=x.dtype), y)


@pytest.mark.parametrize("examples,features", [(5, 12), (12, 5)])
def test_ridge_solution_and_gradient_equal_the_other_forms_direct_solve(examples, features):
    """Fewer examples than features takes the Woodbury form, more takes the primal one;
    each is checked against the form it did not take (equal by the push-through identity),
    value and gradient with respect to the inputs, the targets and lam."""
    generator = torch.Generator().manual_seed(examples)
    x = torch.randn(examples, features, generator=generator, dtype=torch.float64)
    y = torch.randn(examples, 3, generator=generator, dtype=torch.float64)
    lam = torch.tensor(0.7, dtype=torch.float64)
    probe = torch.randn(features, 3, generator=generator, dtype=torch.float64)
    reference = primal if examples <= features else dual

    def value_and_grads(solve):
        leaves = [t.clone().requires_grad_() for t in (x, y, lam)]
        weights = solve(*leaves)
        return weights.detach(), torch.autograd.grad((weights * probe).sum(), leaves)

    ours, our_grads = value_and_grads(ridge_regression)
    theirs, their_grads = value_and_grads(reference)
    assert ours.shape == (features, 3)
    assert relative_error([ours], [theirs]) < 1e-10
    assert relative_error(list(our_grads), list(their_grads)) < 1e-10


def test_ridge_solution_minimises_the_penalised_squared_error():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, generator=generator, dtype=torch.float64)
    y = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    weights = ridge_regression(x, y, torch.tensor(0.3, dtype=torch.float64))
    gradient = 2 * x.T @ (x @ weights - y) + 2 * 0.3 * weights  # of ||xW - y||^2 + lam ||W||^2
    assert gradient.abs().max() < 1e-12


# --- the whole algorithm against a per-task reference -------------------------------------


def image_batch(ways: int, shots: int, queries: int, tasks: int = 3) -> TaskBatch:
    generator = torch.Generator().manual_seed(ways * 10 + shots)

    def part(per_class: int):
        x = torch.rand(tasks, ways * per_class, 1, 16, 16, generator=generator)
        y = torch.arange(ways).repeat_interleave(per_class).expand(tasks, -1).clone()
        return x.double(), y

    return TaskBatch(*part(shots), *part(queries))


def embedding(channels: int = 4, blocks: int = 3):
    torch.manual_seed(0)
    model = Conv4(1, 3, image_size=16, channels=channels, blocks=blocks)
    return without_head(model, (1, 16, 16)).double()


def reference_embed(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Conv-4's blocks from F.conv2d / F.batch_norm (batch statistics), flattened."""
    for i in range(0, len(params), 4):
        w, b, gamma, beta = params[i : i + 4]
        x = F.batch_norm(F.conv2d(x, w, b, padding=1), None, None, gamma, beta, training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1)


def reference_task_loss(params, scale, bias, lam, task, ways: int) -> torch.Tensor:
    """Ridge regression of [z, 1] / sqrt(n) onto one-hot / sqrt(n) over the task's ``ways``
    classes by the primal normal equations, then the scaled query logits' cross-entropy."""
    both = reference_embed(params, torch.cat([task.support_x, task.query_x]))
    n = len(task.support_x)
    support, query = both[:n], both[n:]
    rows = torch.cat([support, torch.ones(n, 1, dtype=support.dtype)], 1) / math.sqrt(n)
    targets = F.one_hot(task.support_y, ways).to(support.dtype) / math.sqrt(n)
    weights = primal(rows, targets, lam)
    logits = torch.cat([query, torch.ones(len(query), 1, dtype=query.dtype)], 1) @ weights
    return F.cross_entropy(scale * logits + bias, task.query_y)


def r2d2(model, **settings) -> R2D2:
    return R2D2(InnerLoop(model, CLASSIFICATION), **settings).double()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize(
    "ways,shots",
    [(3, 2), (4, 5)],  # 6 support examples < 2x2x4 + 1 = 17 columns: Woodbury; 20 > 17: primal
    ids=["woodbury", "primal"],
)
def test_meta_gradient_matches_the_per_task_reference(strategy, ways, shots):
    model, batch = embedding(blocks=3), image_batch(ways, shots, queries=2)
    assert model.out_features + 1 == 17
    algorithm = r2d2(model, lam=0.8, scale=3.0, bias=0.5, learn_lambda=True)
    model.zero_grad()
    losses, _ = STRATEGIES[strategy]().meta_gradient(
        algorithm.meta_objective,
        dict(model.named_parameters()),
        batch,
        lambda loss: loss.backward(),
    )
    learned = [algorithm.scale, algorithm.bias, algorithm.log_lam]
    ours = [p.grad for p in [*model.parameters(), *learned]]

    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    scale, bias, log_lam = (p.detach().clone().requires_grad_() for p in learned)
    per_task = [
        reference_task_loss(params, scale, bias, log_lam.exp(), batch.task(i), ways)
        for i in range(len(batch))
    ]
    total = sum(per_task) / len(batch)
    reference = torch.autograd.grad(total, [*params, scale, bias, log_lam])
    torch.testing.assert_close(losses, torch.stack(per_task).detach())
    assert relative_error(ours, list(reference)) < 1e-8
    assert float(algorithm.log_lam.grad.abs()) > 0 and float(algorithm.scale.grad.abs()) > 0
    assert float(algorithm.bias.grad.abs()) < 1e-12  # a bias shared by all logits cancels


def test_test_ways_may_differ_from_training_ways():
    """No head: the same weights score 2-way and 5-way tasks (and the scores of absent
    classes are -inf, never picked)."""
    model = embedding()
    algorithm = r2d2(model, scale=10.0)
    params = {k: p.detach() for k, p in model.named_parameters()}
    assert not has_fixed_head("r2d2")
    for ways in (2, 5):
        task = image_batch(ways, 1, queries=3, tasks=1).task(0)
        scores = algorithm.class_scores(params, task.support_x, task.support_y, task.query_x)
        assert scores.shape == (3 * ways, ways) and torch.isfinite(scores).all()
        result = algorithm.evaluate(params, *vars(task).values())
        assert result["metric"].shape == (1,) and 0 <= float(result["metric"]) <= 1


def test_lambda_is_fixed_unless_learned():
    fixed = r2d2(embedding())
    assert "log_lam" not in dict(fixed.named_parameters())
    assert float(fixed.lam) == pytest.approx(50.0)
    assert "log_lam" in dict(r2d2(embedding(), learn_lambda=True).named_parameters())


def test_bad_lambda_is_refused():
    cfg = OmegaConf.create(dict(name="r2d2", lam=0.0, meta_batch=1))
    with pytest.raises(ConfigError, match=r"algorithm.lam=0.0: the ridge penalty must be"):
        build_algorithm(cfg, InnerLoop(embedding(), CLASSIFICATION))
