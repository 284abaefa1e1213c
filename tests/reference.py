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


def conv4_forward(params: list[torch.Tensor], x: torch.Tensor, norm: bool = True) -> torch.Tensor:
    per_block = 4 if norm else 2
    *blocks, w_head, b_head = params
    for i in range(0, len(blocks), per_block):
        w, b = blocks[i], blocks[i + 1]
        x = F.conv2d(x, w, b, padding=1)
        if norm:
            x = F.batch_norm(x, None, None, blocks[i + 2], blocks[i + 3], training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.flatten(1), w_head, b_head)


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
