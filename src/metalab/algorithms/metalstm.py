"""Meta-LSTM (Ravi & Larochelle 2017): an LSTM meta-learner whose cell state is the learner.

The learner's parameters theta (flattened) are the cell state c_t; one update on the
support set is, per coordinate (eq. 2-3 of the paper),

    i_t = sigmoid(W_I . [x_t, theta_{t-1}, i_{t-1}] + b_I)      (a learned learning rate)
    f_t = sigmoid(W_F . [x_t, theta_{t-1}, f_{t-1}] + b_F)      (a learned weight decay)
    theta_t = f_t * theta_{t-1} - i_t * grad_t

where x_t describes the coordinate's gradient and the loss, each preprocessed as in
Andrychowicz et al. (2016): z -> (log|z| / p, sign z) if |z| >= e^-p, else (-1, e^p z).
With ``hidden_size > 0`` (the paper's code: 20) x_t is the output of a first, ordinary
LSTM layer over those four numbers; with 0 it is the four numbers themselves, the
equations as printed. All weights are shared across coordinates. The initial cell state
theta_0 (the learner's initialisation) is the model's parameters, meta-learned.

The meta-gradient flows through the unrolled updates but not through the learner's
gradients: grad_t and the loss are computed at a detached theta_{t-1} (the paper's
simplification). Batch norm uses the statistics of the batch at hand at training and test
time, and its weight and bias are coordinates of theta like any other; the paper's code
additionally keeps running averages that it does not meta-learn; there are none here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metalab.algorithms.base import AdaptingAlgorithm
from metalab.algorithms.lstm_cell import LSTMCell
from metalab.errors import ConfigError
from metalab.fast_eval import MetaLSTMStepper, support_gradients
from metalab.inner_loop import InnerLoop, Params

# The input LSTM's (h, c) per coordinate; None before the first step or without that layer.
State = tuple[torch.Tensor, torch.Tensor] | None
Gates = tuple[torch.Tensor, torch.Tensor]  # (i, f) per coordinate


def preprocess(z: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """[..., 2]: Andrychowicz et al.'s (log|z|/p, sign z), or (-1, e^p z) when |z| < e^-p."""
    large = z.abs() >= math.exp(-p)
    magnitude = torch.where(large, z.abs().clamp(min=math.exp(-p)).log() / p, -torch.ones_like(z))
    direction = torch.where(large, torch.sign(z), math.exp(p) * z)
    return torch.stack([magnitude, direction], -1)


def flatten(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(vector: torch.Tensor, like: Params) -> Params:
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vector[start : start + p.numel()].view_as(p)
        start += p.numel()
    return out


class MetaLSTM(AdaptingAlgorithm):
    """Adapt, then score: the adaptation rule is the unrolled meta-learner (``unroll``)."""

    def __init__(
        self,
        inner_loop: InnerLoop,
        inner_steps: int = 12,
        eval_inner_steps: int | None = None,
        hidden_size: int = 20,
        preprocess_p: float = 10.0,
        forget_bias: tuple[float, float] = (4.0, 6.0),
        input_bias: tuple[float, float] = (-5.0, -4.0),
        init_range: float = 0.01,
    ) -> None:
        super().__init__()
        for key, value in [("inner_steps", inner_steps), ("eval_inner_steps", eval_inner_steps)]:
            if value is not None and value < 1:
                raise ConfigError(f"algorithm.{key}={value}: set it to at least 1.")
        if hidden_size < 0 or not preprocess_p > 0:
            raise ConfigError(
                f"algorithm.hidden_size={hidden_size}, algorithm.preprocess_p={preprocess_p}: "
                "the size must be >= 0 (0: no input LSTM) and p positive."
            )
        self.inner_loop = inner_loop  # a plain object: the model is registered by the caller
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps or inner_steps
        self.hidden_size, self.p = hidden_size, preprocess_p
        self.input_lstm = LSTMCell(4, hidden_size) if hidden_size else None
        features = (hidden_size or 4) + 2  # x_t, theta_{t-1}, the gate's previous value
        self.input_gate, self.forget_gate = nn.Linear(features, 1), nn.Linear(features, 1)
        # The paper's initialisation: small weights, a forget gate near 1, a small rate.
        for gate, (low, high) in [(self.input_gate, input_bias), (self.forget_gate, forget_bias)]:
            nn.init.uniform_(gate.weight, -init_range, init_range)
            nn.init.uniform_(gate.bias, low, high)

    def describe(
        self, grads: torch.Tensor, loss: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        """x_t per coordinate [P, features] from the preprocessed gradient and loss."""
        x = torch.cat(
            [preprocess(grads, self.p), preprocess(loss, self.p).expand(len(grads), 2)], 1
        )
        if self.input_lstm is None:
            return x, state
        h, c = state if state is not None else (x.new_zeros(len(x), self.hidden_size),) * 2
        h, c = self.input_lstm(x, h, c)
        return h, (h, c)

    def update(
        self,
        theta: torch.Tensor,
        grads: torch.Tensor,
        loss: torch.Tensor,
        gates: Gates,
        state: State,
    ) -> tuple[torch.Tensor, Gates, State]:
        """One meta-learner step: (theta_t, (i_t, f_t), state) from theta_{t-1} and grad_t."""
        x, state = self.describe(grads, loss, state)
        i_prev, f_prev = gates
        column = theta.unsqueeze(1)
        i = torch.sigmoid(self.input_gate(torch.cat([x, column, i_prev.unsqueeze(1)], 1)))
        f = torch.sigmoid(self.forget_gate(torch.cat([x, column, f_prev.unsqueeze(1)], 1)))
        i, f = i.squeeze(1), f.squeeze(1)
        return f * theta - i * grads, (i, f), state

    def unroll(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        steps: int,
        keep_graph: bool = True,
    ) -> list[Params]:
        """theta_0 .. theta_steps (as parameter dicts), each step on the whole support set;
        ``keep_graph=False`` (evaluation) cuts the graph after every step."""
        theta = flatten(params)
        zeros = torch.zeros_like(theta)
        gates, state, thetas = (zeros, zeros), None, [params]
        for _ in range(steps):
            at = unflatten(theta, params)  # first order: no second derivatives through grad_t
            loss, grads = self.inner_loop.loss_and_gradients(
                at, support_x, support_y, first_order=True
            )
            theta, gates, state = self.update(theta, flatten(grads), loss, gates, state)
            if not keep_graph:
                theta, gates = theta.detach(), tuple(g.detach() for g in gates)
                state = None if state is None else tuple(s.detach() for s in state)
            thetas.append(unflatten(theta, params))
        return thetas

    def adapt_task(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params:
        return self.unroll(params, support_x, support_y, self.inner_steps)[-1]

    def evaluate(self, params, support_x, support_y, query_x, query_y, score_at=None):
        """Query loss and metric after the test-time updates in ``score_at`` (all when None):
        ``unroll(keep_graph=False)``'s numbers, with no graph beyond each support gradient
        and the update in cache-sized blocks (``fast_eval.MetaLSTMStepper``)."""
        params = {k: p.detach() for k, p in params.items()}
        names = list(params)
        theta = flatten(params)
        stepper = MetaLSTMStepper(self, theta)
        kind = self.inner_loop.kind
        losses, metrics = [], []
        for step in range(self.eval_inner_steps + 1):
            if step:
                at = list(unflatten(theta, params).values())
                grads, loss = support_gradients(self.inner_loop, names, at, support_x, support_y)
                theta = stepper(theta, torch.cat([g.reshape(-1) for g in grads]), loss)
            if score_at is not None and step not in score_at:
                continue
            with torch.no_grad():
                prediction = self.inner_loop.predict(unflatten(theta, params), query_x)
                losses.append(kind.loss(prediction, query_y))
                metrics.append(kind.metric(prediction, query_y))
        return {"loss": torch.stack(losses), "metric": torch.stack(metrics)}

    def evaluate_per_task(self, params, support_x, support_y, query_x, query_y, score_at=None):
        """The previous evaluation (``unroll`` with its graph cut after every step): the
        reference that ``tests/algorithms/test_eval_speed.py`` and ``benchmarks/eval_throughput.py``
        compare ``evaluate`` with."""
        params = {k: p.detach() for k, p in params.items()}
        with torch.enable_grad():
            thetas = self.unroll(
                params, support_x, support_y, self.eval_inner_steps, keep_graph=False
            )
        losses, metrics = [], []
        kind = self.inner_loop.kind
        with torch.no_grad():
            for step, theta in enumerate(thetas):
                if score_at is not None and step not in score_at:
                    continue
                prediction = self.inner_loop.predict(theta, query_x)
                losses.append(kind.loss(prediction, query_y))
                metrics.append(kind.metric(prediction, query_y))
        return {"loss": torch.stack(losses), "metric": torch.stack(metrics)}
