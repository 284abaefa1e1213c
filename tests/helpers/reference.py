"""Hand-written per-task MAML reference: plain autograd, native torch ops, no torch.func.

The models are re-implemented here from ``F.linear``/``F.conv2d``/``F.batch_norm`` so that a
mistake in metalab's models, inner loop or execution strategies cannot hide in both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mlp_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    *hidden, (w_out, b_out) = list(zip(params[::2], params[1::2], strict=True))
    for w, b in hidden:
        x = F.relu(F.linear(x, w, b))
    return F.linear(x, w_out, b_out)


def conv4_forward(
    params: list[torch.Tensor], x: torch.Tensor, norm: bool = True, strided: bool = False
) -> torch.Tensor:
    """Conv-4 as the papers write it; ``strided``: MAML's Omniglot network (stride-2
    convolutions, no pooling, the head on the mean of the last feature map)."""
    per_block = 4 if norm else 2
    *blocks, w_head, b_head = params
    for i in range(0, len(blocks), per_block):
        w, b = blocks[i], blocks[i + 1]
        x = F.conv2d(x, w, b, stride=2 if strided else 1, padding=1)
        if norm:
            x = F.batch_norm(x, None, None, blocks[i + 2], blocks[i + 3], training=True)
        x = F.relu(x) if strided else F.max_pool2d(F.relu(x), 2)
    return F.linear(x.mean((-2, -1)) if strided else x.flatten(1), w_head, b_head)


def maml_meta_gradient(
    forward,
    params: list[torch.Tensor],
    batch,
    loss_fn,
    steps: int,
    lr: float,
    first_order: bool,
) -> list[torch.Tensor]:
    """Mean over tasks of d(query loss after `steps` SGD steps)/d(initial params)."""
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(batch)):
        fast = list(params)
        for _ in range(steps):
            loss = loss_fn(forward(fast, batch.support_x[i]), batch.support_y[i])
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            if first_order:
                grads = [g.detach() for g in grads]
            fast = [p - lr * g for p, g in zip(fast, grads, strict=True)]
        query_loss = loss_fn(forward(fast, batch.query_x[i]), batch.query_y[i])
        for t, g in zip(total, torch.autograd.grad(query_loss, params), strict=True):
            t += g / len(batch)
    return total


def relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    flat_a = torch.cat([t.flatten() for t in a])
    flat_b = torch.cat([t.flatten() for t in b])
    return ((flat_a - flat_b).norm() / flat_b.norm()).item()


# --- The rest of the gradient-based family (issue 4), written from the papers' equations. ---


def _adapted_query_loss(forward, params, rates, adapt, x, y, qx, qy, loss_fn, steps, first_order):
    """SGD on (x, y) of the parameters whose index is in ``adapt``, rate ``rates[step][i]``."""
    fast = list(params)
    for step in range(steps):
        loss = loss_fn(forward(fast, x), y)
        chosen = [fast[i] for i in adapt]
        grads = torch.autograd.grad(loss, chosen, create_graph=not first_order)
        for i, g in zip(adapt, grads, strict=True):
            fast[i] = fast[i] - rates[step][i] * (g.detach() if first_order else g)
    return loss_fn(forward(fast, qx), qy)


def metasgd_meta_gradient(forward, params, rates, batch, loss_fn, steps, first_order=False):
    """Mean over tasks of d(query loss)/d(params, per-element rates): Li et al. 2017, eq. 3."""
    leaves = list(params) + list(rates)
    total = [torch.zeros_like(p) for p in leaves]
    adapt = range(len(params))
    for i in range(len(batch)):
        query_loss = _adapted_query_loss(
            forward, params, [rates] * steps, adapt, batch.support_x[i], batch.support_y[i],
            batch.query_x[i], batch.query_y[i], loss_fn, steps, first_order,
        )  # fmt: skip
        for t, g in zip(total, torch.autograd.grad(query_loss, leaves), strict=True):
            t += g / len(batch)
    return total


def anil_meta_gradient(forward, params, head, batch, loss_fn, steps, lr, first_order=False):
    """MAML where only the last ``head`` tensors adapt, with a full forward pass per step."""
    total = [torch.zeros_like(p) for p in params]
    adapt = range(len(params) - head, len(params))
    rates = [[lr] * len(params)] * steps
    for i in range(len(batch)):
        query_loss = _adapted_query_loss(
            forward, params, rates, adapt, batch.support_x[i], batch.support_y[i],
            batch.query_x[i], batch.query_y[i], loss_fn, steps, first_order,
        )  # fmt: skip
        for t, g in zip(total, torch.autograd.grad(query_loss, params), strict=True):
            t += g / len(batch)
    return total


def mamlpp_meta_gradient(
    forward, params, step_rates, bn, step_bn, weights, batch, loss_fn, steps, first_order=False
):
    """MAML++'s meta-gradient w.r.t. (params, step_rates, step_bn).

    ``step_rates[j]`` is a [steps] tensor for params[j] (None: not adapted); ``bn`` lists
    the indices of batch-norm tensors, replaced at step k by ``step_bn[n][k]`` and never
    adapted; ``weights`` (None: final loss only) weighs the query loss after every step.
    """
    learnable = [r for r in step_rates if r is not None]
    leaves = list(params) + learnable + list(step_bn)
    total = [torch.zeros_like(p) for p in leaves]

    def with_bn(fast, k):
        fast = list(fast)
        for n, j in enumerate(bn):
            fast[j] = step_bn[n][k]
        return fast

    for i in range(len(batch)):
        x, y = batch.support_x[i], batch.support_y[i]
        qx, qy = batch.query_x[i], batch.query_y[i]
        fast, objective = list(params), 0.0
        for k in range(steps):
            fast = with_bn(fast, k)
            adapt = [j for j in range(len(fast)) if step_rates[j] is not None]
            grads = torch.autograd.grad(
                loss_fn(forward(fast, x), y), [fast[j] for j in adapt], create_graph=not first_order
            )
            for j, g in zip(adapt, grads, strict=True):
                fast[j] = fast[j] - step_rates[j][k] * (g.detach() if first_order else g)
            if weights is not None:
                objective = objective + weights[k] * loss_fn(forward(fast, qx), qy)
        if weights is None:
            objective = loss_fn(forward(fast, qx), qy)
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        for t, g in zip(total, grads, strict=True):
            if g is not None:
                t += g / len(batch)
    return total


def reptile_update(
    forward, params, xs, ys, loss_fn, steps, lr, inner_batch, optimizer, eps, beta2, adam_eps,
    carried=None,
):  # fmt: skip
    """theta + eps * (mean_i W_i - theta), W_i: ``steps`` steps of SGD or Adam(beta1=0) on task
    i's examples ``xs[i]`` taken ``inner_batch`` at a time in the given order (None: all).

    ``carried``: a dict {"v": [...], "t": int} of Adam state that runs on from task to task
    (the authors' code); it is updated in place. None: a fresh state per task."""
    adapted = []
    for x, y in zip(xs, ys, strict=True):
        fast = [p.detach().clone() for p in params]
        v = [torch.zeros_like(p) for p in fast] if carried is None else carried["v"]
        start = 0 if carried is None else carried["t"]
        for t in range(start + 1, start + steps + 1):
            if inner_batch is None:
                xb, yb = x, y
            else:
                i = t - start  # the task's own step: its slice of examples
                xb, yb = (
                    x[(i - 1) * inner_batch : i * inner_batch],
                    y[(i - 1) * inner_batch : i * inner_batch],
                )
            fast = [p.requires_grad_() for p in fast]
            grads = torch.autograd.grad(loss_fn(forward(fast, xb), yb), fast)
            with torch.no_grad():
                if optimizer == "sgd":
                    fast = [p - lr * g for p, g in zip(fast, grads, strict=True)]
                else:
                    v = [beta2 * vi + (1 - beta2) * g**2 for vi, g in zip(v, grads, strict=True)]
                    fast = [
                        p - lr * g / (torch.sqrt(vi / (1 - beta2**t)) + adam_eps)
                        for p, g, vi in zip(fast, grads, v, strict=True)
                    ]
        if carried is not None:
            carried["v"], carried["t"] = v, start + steps
        adapted.append(fast)
    with torch.no_grad():
        return [
            p + eps * (torch.stack([w[j] for w in adapted]).mean(0) - p)
            for j, p in enumerate(params)
        ]
