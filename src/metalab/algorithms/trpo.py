"""TRPO's update (Schulman et al. 2015), as MAML-RL's outer optimiser: the natural-gradient
direction by conjugate gradient on Hessian-vector products of the mean KL, scaled to the
trust region's edge, then a backtracking line search that keeps a step only if it lowers
the surrogate and stays within ``max_kl`` (rllab's and the PyTorch port's settings: CG 10
iterations, damping 1e-5, 15 backtracks by 0.8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# the parameters' values -> (surrogate loss, mean KL from the old policy)
Surrogate = Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def conjugate_gradient(
    product: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = 1e-10
) -> torch.Tensor:
    """Approximately solve A x = b for symmetric positive-definite A given as ``product``."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < tol:
            break
        ap = product(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def kl_hessian_product(
    kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> (H + damping I) v, H the Hessian of ``kl`` w.r.t. ``params`` (its Fisher
    matrix at the old policy), by double back-propagation."""
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))

    def product(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(grads @ v, params, retain_graph=True)
        return flat(hv) + damping * v

    return product


@dataclass
class StepInfo:
    accepted: bool
    step_size: float  # the fraction of the full natural step taken (0: rejected)
    loss_before: float
    loss_after: float
    kl: float


def trpo_step(
    params: Sequence[torch.Tensor],
    loss: torch.Tensor,
    kl: torch.Tensor,
    surrogate: Surrogate,
    max_kl: float = 0.01,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    ls_max_steps: int = 15,
    ls_backtrack_ratio: float = 0.8,
) -> tuple[list[torch.Tensor], StepInfo]:
    """The new parameter values from ``loss`` and ``kl`` (differentiable w.r.t. ``params``,
    at the old policy) and ``surrogate`` (the same two at other values, for the search)."""
    grads = flat(torch.autograd.grad(loss, params, retain_graph=True))
    product = kl_hessian_product(kl, params, cg_damping)
    direction = conjugate_gradient(product, grads, cg_iters)
    shs = 0.5 * (direction @ product(direction))
    full_step = direction / torch.sqrt(shs / max_kl).clamp_min(1e-12)
    old = flat([p.detach() for p in params])
    before = float(loss.detach())
    fraction = 1.0
    for _ in range(ls_max_steps):
        values = unflat(old - fraction * full_step.detach(), params)
        new_loss, new_kl = surrogate(values)
        if float(new_loss) < before and float(new_kl) <= max_kl:
            return values, StepInfo(True, fraction, before, float(new_loss), float(new_kl))
        fraction *= ls_backtrack_ratio
    return unflat(old, params), StepInfo(False, 0.0, before, before, 0.0)
