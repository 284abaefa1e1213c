"""ANIL (Raghu et al. 2020): almost no inner loop; only the head adapts to a task.

The body's features of a task's support and query sets are computed once; the head adapts
on them with the shared inner loop (run on the head module alone), and the query loss
differentiates back through the head's adaptation into the body (second order, unless
``first_order``). The model's last child module is the head; the children before it,
applied in order and flattened, are the body: true of Conv-4 (features, head) and the MLP.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.func import functional_call

from metalab.algorithms.maml import MAML
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params


def split_body_head(model: nn.Module) -> tuple[nn.Module, str]:
    """The body (an ``nn.Sequential`` keeping the model's parameter names) and the head's name."""
    children = list(model.named_children())
    if len(children) < 2 or not any(True for _ in children[-1][1].parameters()):
        raise ConfigError(
            f"algorithm=anil needs a model whose last child module is its head, but "
            f"{type(model).__name__} has children {[n for n, _ in children]}: use model=conv4 or "
            "model=mlp."
        )
    return nn.Sequential(OrderedDict(children[:-1])), children[-1][0]


class ANIL(MAML):
    def __init__(self, inner_loop: InnerLoop, *args, **kwargs) -> None:
        super().__init__(inner_loop, *args, **kwargs)
        body, head = split_body_head(inner_loop.model)
        # Plain attributes: the modules are registered already as parts of the model.
        object.__setattr__(self, "body", body)
        self.prefix = head + "."
        self.head_loop = InnerLoop(inner_loop.model.get_submodule(head), inner_loop.kind)

    def split(self, params: Params) -> tuple[Params, Params]:
        body = {k: p for k, p in params.items() if not k.startswith(self.prefix)}
        head = {k[len(self.prefix) :]: p for k, p in params.items() if k.startswith(self.prefix)}
        return body, head

    def features(self, body: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.body, body, (x,)).flatten(1)

    def meta_objective(self, params, support_x, support_y, query_x, query_y):
        body, head = self.split(params)
        support_features = self.features(body, support_x)
        adapted = self.head_loop.adapt(
            head, support_features, support_y, self.inner_steps, self.inner_lr, self.first_order
        )
        prediction = self.head_loop.predict(adapted, self.features(body, query_x))
        kind = self.inner_loop.kind
        return kind.loss(prediction, query_y), kind.metric(prediction.detach(), query_y)

    def evaluate(self, params, support_x, support_y, query_x, query_y, score_at=None):
        body, head = self.split(params)
        with torch.no_grad():
            support_features = self.features(body, support_x)
            query_features = self.features(body, query_x)
        return self.head_loop.evaluate(
            head,
            support_features,
            support_y,
            query_features,
            query_y,
            self.eval_inner_steps,
            self.eval_inner_lr,
            score_at=score_at,
        )
