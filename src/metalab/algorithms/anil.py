"""ANIL (Raghu et al. 2020): almost no inner loop; only the head adapts to a task.

The body's features of a task's support set are computed once; the head adapts on them
with the shared inner loop (run on the head module alone), and the query set is scored by
the whole model at the adapted head, so the query loss differentiates back through the
head's adaptation into the body (second order, unless ``first_order``). The model's last
child module is the head; the children before it, applied in order and flattened, are the
body: true of Conv-4 (features, pool, head) and the MLP.
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
        self.prefix = split_body_head(inner_loop.model)[1] + "."
        self._parts: tuple[nn.Module, nn.Module, InnerLoop] | None = None

    def parts(self) -> tuple[nn.Module, InnerLoop]:
        """The body and the head's inner loop of the model this algorithm runs now: a worker
        thread's copy of the algorithm (``strategy=hybrid``) runs its own copy of the model.
        Kept in a tuple, so that the body's modules, registered already as parts of the
        model, are not registered again as this module's."""
        model = self.inner_loop.model
        if self._parts is None or self._parts[0] is not model:
            body, head = split_body_head(model)
            self._parts = (model, body, InnerLoop(model.get_submodule(head), self.inner_loop.kind))
        return self._parts[1], self._parts[2]

    def split(self, params: Params) -> tuple[Params, Params]:
        body = {k: p for k, p in params.items() if not k.startswith(self.prefix)}
        head = {k[len(self.prefix) :]: p for k, p in params.items() if k.startswith(self.prefix)}
        return body, head

    def features(self, body: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.parts()[0], body, (x,)).flatten(1)

    def adapt_task(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params:
        """The head's inner loop on the body's support features; the body as it was."""
        body, head = self.split(params)
        adapted = self.parts()[1].adapt(
            head,
            self.features(body, support_x),
            support_y,
            self.inner_steps,
            self.inner_lr,
            self.first_order,
        )
        return {**body, **{self.prefix + k: p for k, p in adapted.items()}}

    def evaluate(self, params, support_x, support_y, query_x, query_y, score_at=None):
        body, head = self.split(params)
        with torch.no_grad():
            support_features = self.features(body, support_x)
            query_features = self.features(body, query_x)
        return self.parts()[1].evaluate(
            head,
            support_features,
            support_y,
            query_features,
            query_y,
            self.eval_inner_steps,
            self.eval_inner_lr,
            score_at=score_at,
        )
