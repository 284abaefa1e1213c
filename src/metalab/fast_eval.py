"""Test-time adaptation without autograd graphs beyond one support-loss gradient.

Why: a 600-task test adapts every task for up to 50 steps and scores 300 queries at up to 11
of them; kept per task in ``InnerLoop.evaluate`` / ``MetaLSTM.unroll`` it took 8 minutes on
one thread for Reptile 20-way and Meta-LSTM 5-way (benchmarks/NOTES.md). Here each step
differentiates the support loss once (``torch.autograd.grad`` at leaf copies of the
parameters), and everything else (the update, the scoring) runs under ``torch.no_grad``:

- ``sgd_rule`` / ``adam_rule``: the plain first-order SGD step and Reptile's ``InnerAdam``,
  as multi-tensor (``torch._foreach_*``) updates in the same order of operations, so one
  step is ~20 kernel calls instead of ~100.
- ``MetaLSTMStepper``: Meta-LSTM's update over its 112k coordinates in row blocks that stay
  in cache (its gates are element-wise work on [112k, 20] tensors, memory-bound when whole),
  with ``tanh(z) = 2 sigmoid(2z) - 1``: torch's float32 ``tanh`` ran at 2.5 ns an element on
  this CPU, the identity at a third of that (it differs from ``tanh`` by float rounding,
  ~2e-7 absolute in float32, 1e-16 in float64).

The numbers are the per-task path's up to float rounding (``tests/algorithms/test_eval_speed.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F

from metalab.inner_loop import InnerLoop, Params

# (parameters, their support-loss gradients, 0-based step) -> new parameters, no graph.
Rule = Callable[[list[torch.Tensor], list[torch.Tensor], int], list[torch.Tensor]]
ROWS = 8192  # Meta-LSTM coordinates per block: its [rows, 24] inputs and gates fit in L2


def sgd_rule(lr: float) -> Rule:
    """``p - lr * g`` (``InnerLoop.step`` with a number as the rate)."""

    def step(params: list[torch.Tensor], grads: list[torch.Tensor], index: int):
        return torch._foreach_sub(params, torch._foreach_mul(grads, lr))

    return step


def adam_rule(lr: float, beta2: float, eps: float, v: dict | None = None, t: int = 0) -> Rule:
    """Reptile's ``InnerAdam`` (beta1 = 0), the same operations in the same order:
    v = b2 v + (1 - b2) g g; p - lr g / (sqrt(v / (1 - b2^t)) + eps). Each task starts from
    the state (v, t): none (fresh), or the training run's carried state, left unchanged."""
    state: list[list[torch.Tensor]] = []
    start = list(v.values()) if v is not None else None

    def step(params: list[torch.Tensor], grads: list[torch.Tensor], index: int):
        fresh = torch._foreach_mul(torch._foreach_mul(grads, 1 - beta2), grads)
        if index == 0 and start is None:
            state[:] = [fresh]
        else:
            before = start if index == 0 else state[0]
            state[:] = [torch._foreach_add(torch._foreach_mul(before, beta2), fresh)]
        scale = torch._foreach_div(state[0], 1 - beta2 ** (t + index + 1))
        torch._foreach_sqrt_(scale)
        torch._foreach_add_(scale, eps)
        return torch._foreach_sub(params, torch._foreach_div(torch._foreach_mul(grads, lr), scale))

    return step


def support_gradients(
    inner_loop: InnerLoop, names: list[str], values: list[torch.Tensor], x, y
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The support loss and its gradient at ``values``; the only graph a step builds."""
    leaves = [v.detach().requires_grad_() for v in values]
    with torch.enable_grad():
        loss = inner_loop.loss(dict(zip(names, leaves, strict=True)), x, y)
        grads = torch.autograd.grad(loss, leaves)
    return list(grads), loss.detach()


def adapt_and_score(
    inner_loop: InnerLoop,
    params: Params,
    support: tuple[torch.Tensor, torch.Tensor],
    query: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    rule: Rule,
    transductive: bool = True,
    score_at: Collection[int] | None = None,
) -> dict[str, torch.Tensor]:
    """``InnerLoop.evaluate`` for a first-order rule on all parameters: query loss and metric
    after the steps in ``score_at`` (all when None), shape [len(score_at)]."""
    names = list(params)
    values = [p.detach() for p in params.values()]
    losses, metrics = [], []
    kind = inner_loop.kind
    for step in range(steps + 1):
        if step:
            grads, _ = support_gradients(inner_loop, names, values, *support)
            with torch.no_grad():
                values = rule(values, grads, step - 1)
        if score_at is not None and step not in score_at:
            continue
        with torch.no_grad():
            at = dict(zip(names, values, strict=True))
            prediction = inner_loop.predict_query(at, support[0], query[0], transductive)
            losses.append(kind.loss(prediction, query[1]))
            metrics.append(kind.metric(prediction, query[1]))
    return {"loss": torch.stack(losses), "metric": torch.stack(metrics)}


def fast_tanh(z: torch.Tensor) -> torch.Tensor:
    """``tanh(z)`` as ``2 sigmoid(2z) - 1`` (see the module's docstring)."""
    return torch.sigmoid(z * 2).mul_(2).sub_(1)


class MetaLSTMStepper:
    """Meta-LSTM's ``update`` under no_grad, in blocks of ``ROWS`` coordinates, keeping
    its recurrent state (the input LSTM's h, c and the gates' previous values) in place."""

    def __init__(self, meta, theta: torch.Tensor, rows: int | None = None) -> None:
        self.meta, self.rows = meta, rows or ROWS
        zeros = torch.zeros_like(theta)
        self.i, self.f = zeros, zeros.clone()
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        cell = meta.input_lstm
        if cell is not None:
            hidden = cell.hidden_size
            weight = torch.cat([cell.input_map.weight, cell.recurrent_map.weight], 1)
            self.cell_weight = weight.detach().view(4, hidden, -1)
            self.cell_bias = cell.input_map.bias.detach().view(4, hidden)
            self.state = (theta.new_zeros(len(theta), hidden), theta.new_zeros(len(theta), hidden))

    def _cell(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """``LSTMCell.forward`` with ``fast_tanh``."""
        xh = torch.cat([x, h], -1)
        i, f, g, o = (F.linear(xh, self.cell_weight[k], self.cell_bias[k]) for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * fast_tanh(g)
        return torch.sigmoid(o) * fast_tanh(c), c

    def _block(self, rows: slice, theta, grads, loss_features, out) -> None:
        meta = self.meta
        g = grads[rows]
        x = torch.cat([meta_preprocess(g, meta.p), loss_features.expand(len(g), 2)], 1)
        if self.state is not None:
            h, c = self._cell(x, self.state[0][rows], self.state[1][rows])
            self.state[0][rows], self.state[1][rows] = h, c
            x = h
        column = theta[rows].unsqueeze(1)
        i = torch.sigmoid(meta.input_gate(torch.cat([x, column, self.i[rows].unsqueeze(1)], 1)))
        f = torch.sigmoid(meta.forget_gate(torch.cat([x, column, self.f[rows].unsqueeze(1)], 1)))
        i, f = i.squeeze(1), f.squeeze(1)
        self.i[rows], self.f[rows] = i, f
        out[rows] = f * theta[rows] - i * g

    @torch.no_grad()
    def __call__(self, theta: torch.Tensor, grads: torch.Tensor, loss: torch.Tensor):
        """theta_t from theta_{t-1}, its flattened gradient and the support loss."""
        loss_features = meta_preprocess(loss, self.meta.p)
        out = torch.empty_like(theta)
        for start in range(0, len(theta), self.rows):
            self._block(slice(start, start + self.rows), theta, grads, loss_features, out)
        return out


def meta_preprocess(z: torch.Tensor, p: float) -> torch.Tensor:
    from metalab.algorithms.metalstm import preprocess  # the algorithm imports this module

    return preprocess(z, p)


def rule_for(algorithm) -> Rule | None:
    """The no-graph rule of an algorithm of the MAML family, or None where its test-time
    adaptation is not a first-order step of all parameters with a number as the rate
    (Meta-SGD's learned rates, MAML++'s per-step rule, ANIL's head): those keep the
    per-task path."""
    own = getattr(algorithm, "eval_rule", None)
    if own is not None:
        return own()
    from metalab.algorithms.maml import MAML

    cls = type(algorithm)
    plain = all(
        getattr(cls, hook) is getattr(MAML, hook)
        for hook in ("eval_options", "eval_learning_rate", "evaluate")
    )
    lr = algorithm.eval_learning_rate()
    return sgd_rule(float(lr)) if plain and isinstance(lr, int | float) else None
