"""CAVIA (Zintgraf et al. 2019): only a small context vector adapts to a task.

Each task starts from a context of zeros and adapts it alone with the shared inner loop
(``keys=("context",)``); every weight of the network is meta-learned, second order through
the context's adaptation unless ``first_order``. Where the context enters, as in the
authors' code (github.com/lmzintgraf/cavia):

- MLP (the sinusoid): concatenated to the input. ``[x, c] @ W.T`` is ``x @ W_x.T + c @
  W_c.T``, so the model's first layer is ``W_x`` and ``W_c`` (``conditioning``, no bias) is
  this algorithm's own parameter.
- a model with a ``features`` stack of blocks (Conv-4, ResNet-12): FiLM of block
  ``film_block`` (1-based; the paper's third convolution of Conv-4). A linear layer
  (``conditioning``) maps the context to ``2 * channels`` numbers, the first half scaling
  (gamma) and the second shifting (beta) the block's feature maps: ``gamma * h + beta``. In
  a Conv-4 block that is after the convolution, batch norm and pooling and before the ReLU,
  where the code puts it; any other block is FiLM-ed on its output.

The network the inner loop runs is ``Conditioned``: the model (its parameters named
``net.*``), the ``conditioning`` layer and the ``context``, all supplied by the functional
call, so the same objective runs per task, under ``vmap`` and ``strategy=hybrid`` (whose
worker threads each condition their own copy of the model).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms.base import AdaptingAlgorithm, FineTuning, Scores
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params
from metalab.models.conv4 import ConvBlock
from metalab.models.norm import BatchStatNorm

CONTEXT = "context"
NET = "net."


def block_channels(block: nn.Module) -> int | None:
    """The channels a block puts out: those of its last convolution (None: it has none)."""
    convolutions = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convolutions[-1].out_channels if convolutions else None


class Conditioned(nn.Module):
    """``net`` run with a context: joined to the input (MLP) or FiLM of one block. It runs
    the model's children in order, which is the forward of the MLP, Conv-4 and ResNet-12
    (``tests/gradients/test_cavia.py`` checks that an identity FiLM gives the model's output).

    It holds no values of its own: ``conditioning.*`` and ``context`` are empty slots on the
    meta device (made without random initialisation: this may run under ``vmap``), and the
    functional call supplies every tensor (``net.*``, ``conditioning.*``, ``context``), so
    worker threads never swap a shared tensor.
    """

    def __init__(self, net: nn.Module, conditioning: nn.Linear, film_block: int | None) -> None:
        super().__init__()
        self.net = net
        self.conditioning = nn.Module()
        slots = [(self, CONTEXT)] + [
            (self.conditioning, n) for n, _ in conditioning.named_parameters()
        ]
        for module, name in slots:
            module.register_buffer(name, torch.empty(0, device="meta"), persistent=False)
        self.has_bias = conditioning.bias is not None
        self.film_block = film_block  # 0-based here; None: the context joins the input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.conditioning.bias if self.has_bias else None
        code = F.linear(self.context, self.conditioning.weight, bias)
        if self.film_block is None:
            first, *rest = self.net.children()
            h = first(x) + code
            for layer in rest:
                h = layer(h)
            return h
        gamma, beta = code.chunk(2)
        h = x
        for name, child in self.net.named_children():
            if name != "features":
                h = child(h)
                continue
            for index, block in enumerate(child):
                h = film(block, h, gamma, beta) if index == self.film_block else block(h)
        return h


def film(
    block: nn.Module, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """``block`` with its feature maps scaled by gamma and shifted by beta per channel."""
    shape = [-1] + [1] * (h.dim() - 2)  # channels, then one per spatial dimension
    if not isinstance(block, ConvBlock):
        return gamma.view(shape) * block(h) + beta.view(shape)
    z = block[0](h)
    if isinstance(block[1], BatchStatNorm):
        z = block[1](z)
    if block.pools:
        z = F.max_pool2d(z, 2)
    return F.relu(gamma.view(shape) * z + beta.view(shape))


class CAVIA(FineTuning, AdaptingAlgorithm):
    def __init__(
        self,
        inner_loop: InnerLoop,
        *args,
        num_context_params: int = 5,
        film_block: int = 3,
        **kwargs,
    ) -> None:
        super().__init__(inner_loop, *args, **kwargs)
        if num_context_params < 1:
            raise ConfigError(
                f"algorithm.num_context_params={num_context_params}: set it to at least 1 "
                "(the paper: 5 for the sinusoid, 100 for mini-ImageNet)."
            )
        model = inner_loop.model
        features = getattr(model, "features", None)
        if isinstance(features, nn.Sequential):
            if not 1 <= film_block <= len(features):
                raise ConfigError(
                    f"algorithm.film_block={film_block} but the model has {len(features)} "
                    f"blocks: choose one of 1-{len(features)} (the paper: 3)."
                )
            channels = block_channels(features[film_block - 1])
            if channels is None:
                raise ConfigError(
                    f"algorithm=cavia FiLMs a convolutional block, but block {film_block} of "
                    f"{type(model).__name__} has no convolution: use model=conv4."
                )
            self.film_at: int | None = film_block - 1
            self.conditioning = nn.Linear(num_context_params, 2 * channels)
            # the code's 'kaiming' initialisation of its FiLM layer (linear gain)
            nn.init.kaiming_uniform_(self.conditioning.weight, nonlinearity="linear")
        elif isinstance(model, nn.Sequential) and isinstance(model[0], nn.Linear):
            self.film_at = None
            first = model[0]
            self.conditioning = nn.Linear(num_context_params, first.out_features, bias=False)
            # as the context's columns of a layer with in_features + context inputs
            bound = 1 / math.sqrt(first.in_features + num_context_params)
            nn.init.uniform_(self.conditioning.weight, -bound, bound)
        else:
            raise ConfigError(
                f"algorithm=cavia conditions an MLP (context joined to the input) or a model "
                f"with a features stack (FiLM), not {type(model).__name__}: use model=mlp or "
                "model=conv4."
            )
        self.conditioning.to(next(model.parameters()))
        self.num_context_params = num_context_params
        self._parts: tuple[nn.Module, InnerLoop] | None = None

    def context_loop(self) -> InnerLoop:
        """The inner loop over ``Conditioned`` around the model this algorithm runs now (a
        worker thread's copy under ``strategy=hybrid``); kept in a tuple, so the model is not
        registered a second time as part of this module."""
        model = self.inner_loop.model
        if self._parts is None or self._parts[0] is not model:
            network = Conditioned(model, self.conditioning, self.film_at)
            self._parts = (model, InnerLoop(network, self.inner_loop.kind))
        return self._parts[1]

    def conditioned(self, params: Params) -> Params:
        """The conditioned network's parameters: the model's, the conditioning layer's and a
        context of zeros (every task starts from it)."""
        some = next(iter(params.values()))
        context = torch.zeros(self.num_context_params, dtype=some.dtype, device=some.device)
        return {
            **{NET + k: p for k, p in params.items()},
            **{f"conditioning.{k}": p for k, p in self.conditioning.named_parameters()},
            CONTEXT: context,
        }

    def adapt_task(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params:
        """``inner_steps`` SGD steps of the context alone on the support set; returns the
        conditioned network's parameters, the adapted context among them."""
        return self.context_loop().adapt(
            self.conditioned(params),
            support_x,
            support_y,
            self.inner_steps,
            self.inner_lr,
            self.first_order,
            keys=(CONTEXT,),
        )

    def query_objective(
        self, adapted: Params, query_x: torch.Tensor, query_y: torch.Tensor
    ) -> Scores:
        prediction = self.context_loop().predict(adapted, query_x)
        kind = self.inner_loop.kind
        return kind.loss(prediction, query_y), kind.metric(prediction.detach(), query_y)

    def evaluate(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """A fresh context per task, ``eval_inner_steps`` first-order steps of it alone."""
        loop, lr = self.context_loop(), self.eval_inner_lr

        def update(p: Params, x: torch.Tensor, y: torch.Tensor, index: int) -> Params:
            return loop.step(p, x, y, lr, True, keys=(CONTEXT,))

        return loop.evaluate(
            self.conditioned(params),
            support_x,
            support_y,
            query_x,
            query_y,
            self.eval_inner_steps,
            lr,
            update=update,
            score_at=score_at,
        )

    def inner_gradient(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params:
        """The support-loss gradient of the context at zero: what the inner loop follows."""
        detached = {k: p.detach() for k, p in self.conditioned(params).items()}
        with torch.enable_grad():
            return self.context_loop().gradients(
                detached, support_x, support_y, first_order=True, keys=(CONTEXT,)
            )
