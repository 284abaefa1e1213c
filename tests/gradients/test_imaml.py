"""iMAML's implicit meta-gradient, float64: on inner problems solved exactly it equals the
hypergradient of the closed-form solution and converges to it as cg_steps grows; on Conv-4
it equals a per-task reference written here with plain autograd (double backward for the
Hessian-vector products, a textbook conjugate gradient), under loop and vmap."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from metalab.algorithms import build_algorithm
from metalab.algorithms.base import Algorithm, TaskObjective
from metalab.algorithms.imaml import IMAML, conjugate_gradient
from metalab.algorithms.maml import MAML
from metalab.data.tasks import TaskBatch
from metalab.errors import ConfigError
from metalab.execution import HybridStrategy, LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION, REGRESSION
from metalab.models.conv4 import Conv4
from tests.helpers.reference import conv4_forward, relative_error

STRATEGIES = {"loop": LoopStrategy, "vmap": lambda: VmapStrategy(chunk=2)}
NO_BACKWARD = lambda loss: pytest.fail("iMAML has no loss to back-propagate")  # noqa: E731


def imaml(model, kind, steps, lr, **settings) -> IMAML:
    """Training and test time alike: ``steps`` inner steps at rate ``lr``."""
    return IMAML(InnerLoop(model, kind), steps, lr, steps, lr, **settings)


def outer_gradient(algorithm: IMAML, model: nn.Module, batch: TaskBatch, strategy) -> list:
    """What ``outer_step`` leaves in the model's ``.grad``."""
    model.zero_grad()
    losses, metrics = algorithm.outer_step(
        dict(model.named_parameters()), batch, strategy, NO_BACKWARD
    )
    assert losses.shape == metrics.shape == (len(batch),) and torch.isfinite(losses).all()
    return [p.grad.clone() for p in model.parameters()]


# --- a quadratic inner problem: a linear model, squared error, the proximal term ----------

FEATURES, OUTPUTS, SUPPORT, QUERY = 6, 2, 8, 10
# The outputs share one Hessian block, so (I + H/lam) has at most FEATURES + 1 distinct
# eigenvalues: conjugate gradient is exact after that many steps.
EXACT_CG = FEATURES + 1


def regression_case(tasks: int = 3):
    generator = torch.Generator().manual_seed(3)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    torch.manual_seed(0)
    model = nn.Linear(FEATURES, OUTPUTS).double()
    batch = TaskBatch(
        draw(tasks, SUPPORT, FEATURES), draw(tasks, SUPPORT, OUTPUTS),
        draw(tasks, QUERY, FEATURES), draw(tasks, QUERY, OUTPUTS),
    )  # fmt: skip
    return model, batch


def closed_form_hypergradient(model: nn.Linear, batch: TaskBatch, lam: float) -> list:
    """d(query loss at phi*(theta))/d theta, mean over tasks, through the solution itself:
    with rows [x, 1] and Theta = [W^T; b^T], the proximal problem's minimiser solves
    (2/(n m) X^T X + lam I) Phi = 2/(n m) X^T Y + lam Theta (torch.linalg.solve, then
    autograd; no implicit function theorem, no conjugate gradient)."""
    theta = torch.cat([model.weight.T, model.bias[None]]).detach().requires_grad_()
    total = 0.0
    for task in range(len(batch)):
        x, y = batch.support_x[task], batch.support_y[task]
        rows = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        scale = 2 / y.numel()
        system = scale * rows.T @ rows + lam * torch.eye(FEATURES + 1, dtype=x.dtype)
        phi = torch.linalg.solve(system, scale * rows.T @ y + lam * theta)
        query_rows = torch.cat([batch.query_x[task], torch.ones(QUERY, 1, dtype=x.dtype)], 1)
        total = total + F.mse_loss(query_rows @ phi, batch.query_y[task]) / len(batch)
    (grad,) = torch.autograd.grad(total, theta)
    return [grad[:FEATURES].T, grad[FEATURES]]


EXACT = dict(lam=1.0, cg_damping=0.0)
# The proximal objective's Hessian has eigenvalues in [1.05, 3.4] on these tasks: a step of
# 0.45 contracts the error by 0.53 or better, so 80 steps reach machine precision.
INNER = dict(steps=80, lr=0.45)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_implicit_gradient_equals_the_closed_form_hypergradient(strategy):
    model, batch = regression_case()
    algorithm = imaml(model, REGRESSION, **INNER, cg_steps=EXACT_CG, **EXACT)
    ours = outer_gradient(algorithm, model, batch, STRATEGIES[strategy]())
    exact = closed_form_hypergradient(model, batch, EXACT["lam"])
    assert relative_error(ours, exact) < 1e-6


def test_implicit_gradient_converges_as_cg_steps_grow():
    """Conjugate gradient's error decreases with every iteration (Hestenes & Stiefel) and is
    exact after as many as the system has distinct eigenvalues; cg_steps=0 is the query
    gradient at phi."""
    model, batch = regression_case()
    exact = closed_form_hypergradient(model, batch, EXACT["lam"])
    errors = []
    for cg_steps in (0, 1, 2, 3, 5, EXACT_CG):
        algorithm = imaml(model, REGRESSION, **INNER, cg_steps=cg_steps, **EXACT)
        ours = outer_gradient(algorithm, model, batch, LoopStrategy())
        errors.append(relative_error(ours, exact))
    assert errors[0] > 1e-2  # the first-order approximation is not the hypergradient
    assert all(a > b for a, b in zip(errors[1:], errors[2:], strict=False)), errors
    assert errors[-2] > 1e-6  # not exact before the last
    assert errors[-1] < 1e-6


def test_conjugate_gradient_solves_a_positive_definite_system():
    generator = torch.Generator().manual_seed(0)
    root = torch.randn(9, 9, generator=generator, dtype=torch.float64)
    matrix = root @ root.T + 0.5 * torch.eye(9, dtype=torch.float64)
    b = {"a": torch.randn(4, generator=generator, dtype=torch.float64),
         "b": torch.randn(5, generator=generator, dtype=torch.float64)}  # fmt: skip

    def operator(v):
        flat = matrix @ torch.cat([v["a"], v["b"]])
        return {"a": flat[:4], "b": flat[4:]}

    x = conjugate_gradient(operator, b, 9)
    exact = torch.linalg.solve(matrix, torch.cat([b["a"], b["b"]]))
    assert relative_error([x["a"], x["b"]], [exact[:4], exact[4:]]) < 1e-10
    zero = conjugate_gradient(operator, {k: torch.zeros_like(v) for k, v in b.items()}, 3)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in zero.values())  # no 0/0


# --- a non-quadratic one: a linear head on fixed features, cross-entropy -----------------


def test_cross_entropy_head_meets_the_implicit_function_theorem():
    """The inner minimiser found by plain autograd gradient descent, the Hessian of the
    support loss written out (torch.func.hessian) and (I + H/lam)^-1 g solved directly."""
    ways, features, lam = 3, 5, 1.0
    generator = torch.Generator().manual_seed(5)
    support_x = torch.randn(1, 9, features, generator=generator, dtype=torch.float64)
    query_x = torch.randn(1, 12, features, generator=generator, dtype=torch.float64)
    labels = torch.arange(ways).repeat(4)
    batch = TaskBatch(support_x, labels[None, :9], query_x, labels[None, :12])
    torch.manual_seed(0)
    model = nn.Linear(features, ways).double()
    n = (features + 1) * ways
    algorithm = imaml(model, CLASSIFICATION, 300, 0.5, lam=lam, cg_damping=0.0, cg_steps=n)
    ours = outer_gradient(algorithm, model, batch, LoopStrategy())

    theta = torch.cat([model.weight.flatten(), model.bias]).detach()

    def loss(flat, x, y):
        return F.cross_entropy(x @ flat[: n - ways].view(ways, features).T + flat[n - ways :], y)

    phi = theta.clone()
    for _ in range(400):
        phi = phi.requires_grad_()
        (g,) = torch.autograd.grad(loss(phi, support_x[0], labels[:9]), phi)
        phi = (phi - 0.5 * (g + lam * (phi - theta))).detach()
    hessian = torch.func.hessian(loss)(phi, support_x[0], labels[:9])
    g_query = torch.func.grad(loss)(phi, query_x[0], labels[:12])
    exact = torch.linalg.solve(torch.eye(n, dtype=torch.float64) + hessian / lam, g_query)
    assert relative_error(ours, [exact[: n - ways].view(ways, features), exact[n - ways :]]) < 1e-6


# --- Conv-4 against a per-task reference --------------------------------------------------


def image_batch(tasks: int = 3, ways: int = 3, shots: int = 2, queries: int = 2) -> TaskBatch:
    generator = torch.Generator().manual_seed(1)

    def part(per_class: int):
        x = torch.rand(tasks, ways * per_class, 1, 16, 16, generator=generator)
        y = torch.arange(ways).repeat_interleave(per_class).expand(tasks, -1).clone()
        return x.double(), y

    return TaskBatch(*part(shots), *part(queries))


def conv_model() -> nn.Module:
    torch.manual_seed(0)
    return Conv4(1, 3, image_size=16, channels=4).double()


def reference_imaml_gradient(
    params, batch, steps, lr, lam, cg_steps, damping, pullback=False, lam_damping=0.0
) -> list:
    """Mean over tasks of ((1 + damping) I + H/(lam + lam_damping))^-1 g (lam_damping: the
    authors' code's matrix_evaluator), written with autograd.grad on
    ``conv4_forward``: proximal gradient descent (``pullback``: plain descent, then one step
    on the proximal term alone, as the authors' code), the query gradient, Hessian-vector
    products by double backward and the textbook conjugate gradient on flat vectors."""
    loss_fn = F.cross_entropy
    total = [torch.zeros_like(p) for p in params]
    theta = [p.detach() for p in params]
    shapes = [p.shape for p in params]

    def unflatten(flat):
        return torch.split(flat, [s.numel() for s in shapes])

    for task in range(len(batch)):
        sx, sy = batch.support_x[task], batch.support_y[task]
        phi = [t.clone() for t in theta]
        for _ in range(steps):
            phi = [p.requires_grad_() for p in phi]
            grads = torch.autograd.grad(loss_fn(conv4_forward(phi, sx), sy), phi)
            pull = 0.0 if pullback else lam
            phi = [
                (p - lr * (g + pull * (p - t))).detach()
                for p, g, t in zip(phi, grads, theta, strict=True)
            ]
        if pullback:
            phi = [p - lr * lam * (p - t) for p, t in zip(phi, theta, strict=True)]
        phi = [p.requires_grad_() for p in phi]
        query_loss = loss_fn(conv4_forward(phi, batch.query_x[task]), batch.query_y[task])
        b = torch.cat([g.flatten() for g in torch.autograd.grad(query_loss, phi)])
        support_grads = torch.autograd.grad(
            loss_fn(conv4_forward(phi, sx), sy), phi, create_graph=True
        )

        def apply(v, phi=phi, support_grads=support_grads):
            outputs = [piece.view(s) for piece, s in zip(unflatten(v), shapes, strict=True)]
            hv = torch.autograd.grad(support_grads, phi, outputs, retain_graph=True)
            return (1 + damping) * v + torch.cat([h.flatten() for h in hv]) / (lam + lam_damping)

        x, r = torch.zeros_like(b), b.clone()
        p, rs = r.clone(), r @ r
        for _ in range(cg_steps):
            ap = apply(p)
            alpha = rs / (p @ ap)
            x, r = x + alpha * p, r - alpha * ap
            new = r @ r
            p, rs = r + new / rs * p, new
        for t, piece, s in zip(total, unflatten(x), shapes, strict=True):
            t += piece.view(s) / len(batch)
    return total


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_conv4_meta_gradient_matches_the_per_task_reference(strategy):
    model, batch = conv_model(), image_batch()
    settings = dict(lam=2.0, cg_steps=3, cg_damping=1.0)
    algorithm = imaml(model, CLASSIFICATION, 2, 0.4, **settings)
    ours = outer_gradient(algorithm, model, batch, STRATEGIES[strategy]())
    reference = reference_imaml_gradient(list(model.parameters()), batch, 2, 0.4, 2.0, 3, 1.0)
    assert relative_error(ours, reference) < 1e-8


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_pullback_solver_matches_the_per_task_reference(strategy):
    """``inner_solver=pullback`` (the authors' code): plain steps, one proximal step, and the
    same implicit meta-gradient at the phi it reaches."""
    model, batch = conv_model(), image_batch()
    settings = dict(lam=2.0, cg_steps=3, cg_damping=1.0, inner_solver="pullback")
    algorithm = imaml(model, CLASSIFICATION, 2, 0.4, **settings)
    ours = outer_gradient(algorithm, model, batch, STRATEGIES[strategy]())
    params = list(model.parameters())
    reference = reference_imaml_gradient(params, batch, 2, 0.4, 2.0, 3, 1.0, pullback=True)
    assert relative_error(ours, reference) < 1e-8
    proximal = reference_imaml_gradient(params, batch, 2, 0.4, 2.0, 3, 1.0)
    assert relative_error(ours, proximal) > 1e-3  # a different phi, a different gradient


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_lam_damping_matches_the_per_task_reference(strategy):
    """``algorithm.lam_damping`` (the authors' code: H/(lam + 10) in the CG operator)."""
    model, batch = conv_model(), image_batch()
    settings = dict(lam=2.0, cg_steps=3, cg_damping=1.0, inner_solver="pullback", lam_damping=10.0)
    algorithm = imaml(model, CLASSIFICATION, 2, 0.4, **settings)
    ours = outer_gradient(algorithm, model, batch, STRATEGIES[strategy]())
    params = list(model.parameters())
    reference = reference_imaml_gradient(
        params, batch, 2, 0.4, 2.0, 3, 1.0, pullback=True, lam_damping=10.0
    )
    assert relative_error(ours, reference) < 1e-8
    undamped = reference_imaml_gradient(params, batch, 2, 0.4, 2.0, 3, 1.0, pullback=True)
    assert relative_error(ours, undamped) > 1e-4  # the operator differs


def test_pullback_evaluation_is_plain_steps_then_the_proximal_step():
    model, batch = conv_model(), image_batch(tasks=2)
    params = {k: p.detach() for k, p in model.named_parameters()}
    task = vars(batch.task(0)).values()
    algorithm = imaml(model, CLASSIFICATION, 3, 0.4, lam=2.0, inner_solver="pullback")
    fast = algorithm.evaluate(params, *task)
    torch.testing.assert_close(fast, algorithm.evaluate_per_task(params, *task))
    maml = MAML(InnerLoop(model, CLASSIFICATION), 3, 0.4, 3, 0.4).evaluate(params, *task)
    torch.testing.assert_close(fast["loss"][:3], maml["loss"][:3])  # plain steps until the last
    assert not torch.allclose(fast["loss"][3], maml["loss"][3])  # then pulled back
    one = batch.task(0)
    phi = algorithm.adapt(params, one.support_x, one.support_y)
    with torch.no_grad():
        loss, _ = algorithm.query_scores(phi, one.query_x, one.query_y)
    torch.testing.assert_close(fast["loss"][3], loss)  # the training solver's phi


def test_hybrid_runs_it_as_the_loop():
    model, batch = conv_model(), image_batch()
    algorithm = imaml(model, CLASSIFICATION, 2, 0.4)
    loop = outer_gradient(algorithm, model, batch, LoopStrategy())
    hybrid = outer_gradient(algorithm, model, batch, HybridStrategy(memory_budget_mib=1e-6))
    assert all(torch.equal(a, b) for a, b in zip(loop, hybrid, strict=True))


def test_no_graph_is_kept_through_the_inner_steps():
    """The adapted parameters and the meta-gradient carry no autograd history, whatever
    the inner steps: only one support gradient's graph lives, inside the CG solve."""
    model, batch = conv_model(), image_batch(tasks=1)
    algorithm = imaml(model, CLASSIFICATION, 3, 0.4)
    params = dict(model.named_parameters())
    task = batch.task(0)
    phi = algorithm.adapt(params, task.support_x, task.support_y)
    assert all(p.grad_fn is None and not p.requires_grad for p in phi.values())
    out = algorithm.task_meta_gradient(params, *vars(task).values())
    assert all(v.grad_fn is None for v in out.values())


# --- evaluation, replay, settings ---------------------------------------------------------


def test_evaluation_solves_the_proximal_problem_without_graphs():
    model, batch = conv_model(), image_batch(tasks=2)
    params = {k: p.detach() for k, p in model.named_parameters()}
    task = vars(batch.task(0)).values()
    algorithm = imaml(model, CLASSIFICATION, 3, 0.4, lam=2.0)
    fast = algorithm.evaluate(params, *task)
    assert fast["loss"].shape == fast["metric"].shape == (4,)
    torch.testing.assert_close(fast, algorithm.evaluate_per_task(params, *task))
    plain = imaml(model, CLASSIFICATION, 3, 0.4, eval_lam=0.0).evaluate(params, *task)
    maml = MAML(InnerLoop(model, CLASSIFICATION), 3, 0.4, 3, 0.4).evaluate(params, *task)
    torch.testing.assert_close(plain, maml)  # eval_lam=0: plain fine-tuning
    assert not torch.allclose(fast["loss"][1:], plain["loss"][1:])
    with torch.enable_grad():
        mapped = VmapStrategy(chunk=2).map(algorithm.evaluate, params, batch)
    torch.testing.assert_close(mapped["loss"][0], fast["loss"])


def test_replay_repeats_a_tasks_inner_steps_and_loss():
    model, batch = conv_model(), image_batch()
    algorithm = imaml(model, CLASSIFICATION, 3, 0.4)
    params = dict(model.named_parameters())
    losses, _ = algorithm.outer_step(params, batch, LoopStrategy(), NO_BACKWARD)
    replay = algorithm.replay(params, batch, 1)
    assert replay.loss == pytest.approx(float(losses[1]), rel=1e-12)
    assert len(replay.inner_steps) == 3


def test_its_outer_step_is_its_own():
    algorithm = imaml(conv_model(), CLASSIFICATION, 1, 0.4)
    assert isinstance(algorithm, Algorithm) and not isinstance(algorithm, TaskObjective)


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"lam": 0.0}, "algorithm.lam=0.0: the proximal strength must be positive"),
        ({"cg_steps": -1}, "algorithm.cg_steps=-1: set it to 0"),
        ({"cg_damping": -0.1}, "algorithm.cg_damping=-0.1: it must be >= 0"),
        ({"lam_damping": -1.0}, "algorithm.lam_damping=-1.0: it must be >= 0"),
        ({"eval_lam": -1.0}, "algorithm.eval_lam=-1.0: it must be >= 0"),
        ({"first_order": True}, "algorithm=imaml has no setting first_order"),
        ({"inner_solver": "code"}, "algorithm.inner_solver=code: choose proximal"),
    ],
)
def test_bad_settings_are_refused(setting, message):
    cfg = OmegaConf.create(
        dict(name="imaml", inner_steps=1, inner_lr=0.1, eval_inner_steps=1, eval_inner_lr=0.1,
             meta_batch=2, **setting)
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_algorithm(cfg, InnerLoop(conv_model(), CLASSIFICATION))
