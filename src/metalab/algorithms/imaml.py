"""iMAML (Rajeswaran et al. 2019): MAML's meta-gradient without differentiating the inner loop.

A task's adapted parameters approximate the minimiser of the support loss plus a proximal
term that keeps them near the meta-parameters,

    phi*(theta) = argmin_phi  L_support(phi) + lam/2 ||phi - theta||^2,

reached by ``inner_steps`` steps of gradient descent on that objective with no graph kept.
At the minimiser the implicit function theorem gives d phi*/d theta = (I + H/lam)^-1, H the
support loss's Hessian at phi*, so a task's meta-gradient is

    (I + H/lam)^-1 g,        g = the query loss's gradient at phi,

solved by ``cg_steps`` of conjugate gradient on Hessian-vector products (each a backward
pass through the one support-loss gradient that ``torch.func.vjp`` keeps): memory does not
grow with the inner steps, where second-order MAML keeps every step's graph. ``cg_damping``
adds to the identity, ((1 + cg_damping) I + H/lam), which keeps the system positive
definite when phi is not an exact minimiser (the authors' code: 1.0); ``lam_damping`` adds
to lam in the Hessian term, ((1 + cg_damping) I + H/(lam + lam_damping)): 0 in the paper,
10 in the authors' code (``matrix_evaluator``'s ``lam_damping``), which keeps the solve
close to (a multiple of) g; ``cg_steps=0`` takes g itself (first-order iMAML, as the
authors' code does for cg_steps <= 1).

``inner_solver`` chooses how phi is reached: ``proximal`` descends the proximal objective at
every step (the paper's eq. 4 and Algorithm 2); ``pullback`` does what the authors' code
does (aravindr93/imaml_dev, ``learn_task`` and then its "pull back for regularization"):
``inner_steps`` steps of plain gradient descent on the support loss, then one step on the
proximal term alone, phi - lr * lam * (phi - theta). The meta-gradient is the same formula
at the phi reached; the test-time rule follows the same solver (with ``eval_lam``).

The outer step is not the gradient of a per-task objective, so iMAML writes the mean of its
tasks' meta-gradients into ``.grad`` itself (as Reptile does), running the per-task solve
over the meta-batch with the strategy's ``map``: one task after another (loop) or
vectorised (vmap). ``strategy=hybrid`` runs it as the loop: there is no backward through an
adaptation for hybrid to vectorise. Test-time adaptation solves the same proximal problem
(``eval_inner_steps`` steps at ``eval_inner_lr``, with ``eval_lam``; 0: plain fine-tuning).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
from torch.func import grad, grad_and_value, vjp

from metalab import fast_eval
from metalab.algorithms.base import Backward, FineTuning, Replay, Scores
from metalab.data.tasks import TaskBatch
from metalab.distributed import average_gradients
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params, recording

Operator = Callable[[Params], Params]


def dot(a: Params, b: Params) -> torch.Tensor:
    """The inner product of two parameter dicts, as if each were one flat vector."""
    return sum((a[k] * b[k]).sum() for k in a)


def conjugate_gradient(operator: Operator, b: Params, steps: int) -> Params:
    """``steps`` iterations of conjugate gradient on ``operator(x) = b`` from x = 0.

    ``operator`` must be symmetric positive definite. A fixed number of iterations and no
    data-dependent branch, so that it runs under ``vmap``; a residual that reached exactly
    zero leaves x where it is (its step sizes are guarded, not divided by zero).
    """
    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r, p = b, b
    rr = dot(r, r)
    for _ in range(steps):
        ap = operator(p)
        pap = dot(p, ap)
        alpha = rr / torch.where(pap == 0, torch.ones_like(pap), pap)
        x = {k: x[k] + alpha * p[k] for k in x}
        r = {k: r[k] - alpha * ap[k] for k in r}
        new_rr = dot(r, r)
        beta = new_rr / torch.where(rr == 0, torch.ones_like(rr), rr)
        p = {k: r[k] + beta * p[k] for k in r}
        rr = new_rr
    return x


SOLVERS = ("proximal", "pullback")


def proximal_rule(lr: float, lam: float, pullback_after: int | None = None) -> fast_eval.Rule:
    """A graph-free step of gradient descent on support loss + lam/2 ||phi - theta||^2, theta
    being the parameters the first step starts from (a rule serves one task); with
    ``pullback_after`` = n, plain steps on the support loss and, after the n-th, one step on
    the proximal term alone (``inner_solver=pullback``)."""
    theta: list[torch.Tensor] = []

    def step(params: list[torch.Tensor], grads: list[torch.Tensor], index: int):
        if index == 0:
            theta[:] = [p.detach() for p in params]
        if pullback_after is None:
            pairs = zip(params, grads, theta, strict=True)
            return [p - lr * (g + lam * (p - t)) for p, g, t in pairs]
        new = [p - lr * g for p, g in zip(params, grads, strict=True)]
        if index == pullback_after - 1:
            new = [p - lr * lam * (p - t) for p, t in zip(new, theta, strict=True)]
        return new

    return step


class IMAML(FineTuning):
    def __init__(
        self,
        inner_loop: InnerLoop,
        inner_steps: int,
        inner_lr: float,
        eval_inner_steps: int,
        eval_inner_lr: float,
        lam: float = 2.0,
        cg_steps: int = 5,
        cg_damping: float = 1.0,
        eval_lam: float | None = None,
        inner_solver: str = "proximal",
        lam_damping: float = 0.0,
    ) -> None:
        super().__init__(inner_loop, inner_steps, inner_lr, eval_inner_steps, eval_inner_lr)
        if not lam > 0:
            raise ConfigError(
                f"algorithm.lam={lam}: the proximal strength must be positive (it divides the "
                "Hessian in (I + H/lam)); the paper uses 2.0."
            )
        if cg_steps < 0:
            raise ConfigError(
                f"algorithm.cg_steps={cg_steps}: set it to 0 (the query gradient itself) or more "
                "(the paper: 5)."
            )
        if not cg_damping >= 0:
            raise ConfigError(f"algorithm.cg_damping={cg_damping}: it must be >= 0 (0: none).")
        if not lam_damping >= 0:
            raise ConfigError(
                f"algorithm.lam_damping={lam_damping}: it must be >= 0 (0: the paper's H/lam; "
                "the authors' code: 10)."
            )
        eval_lam = lam if eval_lam is None else eval_lam
        if not eval_lam >= 0:
            raise ConfigError(
                f"algorithm.eval_lam={eval_lam}: it must be >= 0 (0: plain fine-tuning at test "
                "time), or null for algorithm.lam."
            )
        if inner_solver not in SOLVERS:
            raise ConfigError(
                f"algorithm.inner_solver={inner_solver}: choose proximal (the paper's "
                "Algorithm 2) or pullback (the authors' code)."
            )
        self.lam, self.cg_steps, self.cg_damping = lam, cg_steps, cg_damping
        self.eval_lam, self.inner_solver = eval_lam, inner_solver
        self.lam_damping = lam_damping

    # --- the inner problem ---------------------------------------------------------------

    def proximal_step(
        self, phi: Params, theta: Params, x: torch.Tensor, y: torch.Tensor, lr: float, lam: float
    ) -> Params:
        """One step of gradient descent on the support loss plus lam/2 ||phi - theta||^2,
        with no graph (the support gradient is taken at detached parameters)."""
        grads = self.inner_loop.gradients(phi, x, y, first_order=True)
        return {k: p - lr * (grads[k] + lam * (p - theta[k])) for k, p in phi.items()}

    def solve(
        self, theta: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, lam: float
    ) -> Params:
        """phi after ``steps`` steps from theta by ``inner_solver`` (module docstring); theta
        is held fixed (detached), so no step keeps a graph."""
        theta = {k: p.detach() for k, p in theta.items()}
        phi = theta
        if self.inner_solver == "pullback":
            for _ in range(steps):
                phi = self.proximal_step(phi, theta, x, y, lr, 0.0)
            return {k: p - lr * lam * (p - theta[k]) for k, p in phi.items()}
        for _ in range(steps):
            phi = self.proximal_step(phi, theta, x, y, lr, lam)
        return phi

    def adapt(self, theta: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
        """Training's inner problem: phi from theta."""
        return self.solve(theta, x, y, self.inner_steps, self.inner_lr, self.lam)

    def query_scores(
        self, phi: Params, query_x: torch.Tensor, query_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prediction = self.inner_loop.predict(phi, query_x)
        kind = self.inner_loop.kind
        return kind.loss(prediction, query_y), kind.metric(prediction.detach(), query_y)

    def implicit_gradient(self, phi: Params, x: torch.Tensor, y: torch.Tensor, g: Params) -> Params:
        """((1 + cg_damping) I + H/(lam + lam_damping))^-1 g by conjugate gradient, H the
        support loss's Hessian at phi: each product is a backward pass through one support
        gradient."""
        if self.cg_steps == 0:
            return g
        support_gradient = grad(lambda p: self.inner_loop.loss(p, x, y))
        _, hessian_product = vjp(support_gradient, phi)
        lam, identity = self.lam + self.lam_damping, 1.0 + self.cg_damping

        def operator(v: Params) -> Params:
            hv = hessian_product(v)[0]  # H is symmetric: the vjp of the gradient is H v
            return {k: identity * v[k] + hv[k] / lam for k in v}

        return conjugate_gradient(operator, g, self.cg_steps)

    def task_meta_gradient(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One task: its query loss and metric at phi and its meta-gradient
        (``grad:<name>``), all without a graph (a pure function of its inputs: the
        strategies run it per task or under vmap)."""
        phi = self.adapt(params, support_x, support_y)
        g, (loss, metric) = grad_and_value(self.query_scores, has_aux=True)(phi, query_x, query_y)
        meta = self.implicit_gradient(phi, support_x, support_y, g)
        out = {"loss": loss.detach(), "metric": metric.detach()}
        return {**out, **{"grad:" + k: v.detach() for k, v in meta.items()}}

    # --- the contract --------------------------------------------------------------------

    def outer_step(self, params: Params, batch: TaskBatch, strategy, backward: Backward) -> Scores:
        """The mean of the tasks' implicit meta-gradients, written into ``.grad`` (there is
        no loss to back-propagate, so ``backward`` is not called)."""
        with torch.enable_grad():
            out = strategy.map(self.task_meta_gradient, params, batch)
        for name, p in params.items():
            p.grad = out["grad:" + name].mean(0).to(p.dtype)
        # DDP averages gradients in backward hooks, which a hand-written .grad bypasses.
        average_gradients(params.values())
        return out["loss"], out["metric"]

    def replay(self, params: Params, batch: TaskBatch, task: int) -> Replay:
        """Task ``task``'s inner steps as ``outer_step`` ran them, and its query loss."""
        one = batch.task(task)
        with torch.enable_grad(), recording() as steps:
            phi = self.adapt(params, one.support_x, one.support_y)
        with torch.no_grad():
            loss, _ = self.query_scores(phi, one.query_x, one.query_y)
        return Replay(float(loss), steps)

    def eval_rule(self) -> fast_eval.Rule:
        """The test-time proximal problem, graph-free (``fast_eval``; ``FineTuning.evaluate``
        takes the per-task path under ``vmap``)."""
        pullback = self.eval_inner_steps if self.inner_solver == "pullback" else None
        return proximal_rule(self.eval_inner_lr, self.eval_lam, pullback)

    def evaluate_per_task(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The same through ``InnerLoop.evaluate`` with ``proximal_step`` (the reference
        path the graph-free one is tested against)."""
        theta = {k: p.detach() for k, p in params.items()}

        lr, lam, steps = self.eval_inner_lr, self.eval_lam, self.eval_inner_steps

        def update(p: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
            if self.inner_solver == "proximal":
                return self.proximal_step(p, theta, x, y, lr, lam)
            new = self.proximal_step(p, theta, x, y, lr, 0.0)
            if index == steps - 1:
                new = {k: v - lr * lam * (v - theta[k]) for k, v in new.items()}
            return new

        return self.inner_loop.evaluate(
            params,
            support_x,
            support_y,
            query_x,
            query_y,
            self.eval_inner_steps,
            self.eval_inner_lr,
            update=update,
            score_at=score_at,
        )
