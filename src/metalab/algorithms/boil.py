"""BOIL (Oh et al. 2021): Body Only update in Inner Loop; the mirror image of ANIL.

The inner loop adapts every parameter of the body and none of the head (the paper's head
learning rate of 0), so a task is fitted by moving its features towards a head that stays
where meta-training put it ("representation change"); the head is still meta-learned,
through the query loss and, second order, through the body's adaptation. The model's last
child module is the head (Conv-4's and ResNet-12's ``head``, the MLP's last layer), as for
ANIL. Only the adapted keys differ from MAML's, so the objective stays adapt-then-score
(``strategy=hybrid`` applies); test-time fine-tuning adapts the body alone too.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.algorithms.maml import MAML
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params


def head_name(model: nn.Module) -> str:
    """The name of the model's last child module, which must hold parameters (the head)."""
    children = list(model.named_children())
    if len(children) < 2 or not any(True for _ in children[-1][1].parameters()):
        raise ConfigError(
            f"algorithm=boil needs a model whose last child module is its head, but "
            f"{type(model).__name__} has children {[n for n, _ in children]}: use model=conv4, "
            "model=resnet12 or model=mlp."
        )
    return children[-1][0]


class BOIL(MAML):
    def __init__(self, inner_loop: InnerLoop, *args, **kwargs) -> None:
        super().__init__(inner_loop, *args, **kwargs)
        self.prefix = head_name(inner_loop.model) + "."

    def body_keys(self, params: Params) -> list[str]:
        """The parameters the inner loop adapts: all but the head's."""
        return [k for k in params if not k.startswith(self.prefix)]

    def inner_update(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, index: int, first_order: bool
    ) -> Params:
        """One SGD step of the body at ``inner_lr``; the head as it was."""
        return self.inner_loop.step(
            params, x, y, self.inner_lr, first_order, keys=self.body_keys(params)
        )

    def eval_options(self) -> dict:
        """Test-time fine-tuning of the body alone, first order, at ``eval_inner_lr``."""
        lr = self.eval_inner_lr

        def update(params: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
            return self.inner_loop.step(params, x, y, lr, True, keys=self.body_keys(params))

        return {"update": update}
