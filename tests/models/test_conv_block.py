"""Conv-4's block rewrites compute the same function as its layers in turn, to every order."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from metalab.models.conv4 import ConvBlock
from metalab.models.folded_norm import conv_batch_stat_norm, folds
from metalab.models.layout import apply_memory_format
from metalab.models.norm import BatchStatNorm
from metalab.models.vectorised import vectorised

CL = torch.channels_last


def randomised(module: nn.Module) -> nn.Module:
    """Batch-norm weights away from 1 and biases away from 0, so that no term hides."""
    torch.manual_seed(0)
    module = module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
            elif p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return module


class ConvThenNorm(nn.Module):
    def __init__(self, conv: nn.Conv2d, norm: BatchStatNorm) -> None:
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x: torch.Tensor, folded: bool) -> torch.Tensor:
        return conv_batch_stat_norm(x, self.conv, self.norm) if folded else self.norm(self.conv(x))


class Block(nn.Module):
    """A ``ConvBlock`` run as written, or as its layers in turn."""

    def __init__(self, block: ConvBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, rewritten: bool) -> torch.Tensor:
        return self.block(x) if rewritten else nn.Sequential.forward(self.block, x)


def second_order(module: nn.Module, x: torch.Tensor, flag: bool) -> dict[str, torch.Tensor]:
    """The gradient of the squared norm of a loss gradient, the second-order term of MAML's
    meta-gradient, with respect to every parameter."""

    def loss(p):
        return functional_call(module, p, (x, flag)).square().mean()

    def squared_gradient(p):
        return sum(g.square().sum() for g in grad(loss)(p).values())

    return grad(squared_gradient)(dict(module.named_parameters()))


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "stride", "padding", "bias"),
    [(1, 20, 1, 1, True), (3, 64, 1, 1, True), (1, 24, 2, 0, False), (2, 40, 1, 2, True)],
)
def test_folded_norm_equals_norm_of_conv(in_channels, out_channels, stride, padding, bias):
    conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding, bias=bias)
    pair = randomised(ConvThenNorm(conv, BatchStatNorm(out_channels)))
    x = torch.rand(6, in_channels, 11, 11, dtype=torch.float64)
    assert folds(conv)
    torch.testing.assert_close(pair(x, folded=True), pair(x, folded=False))
    ours, reference = second_order(pair, x, True), second_order(pair, x, False)
    for name, value in reference.items():
        torch.testing.assert_close(ours[name], value, atol=1e-10, rtol=1e-8)


def test_folded_conv_bias_has_an_exact_zero_gradient():
    """It cancels against the batch mean; a zero, not a missing gradient, for every strategy."""
    pair = randomised(ConvThenNorm(nn.Conv2d(1, 20, 3, padding=1), BatchStatNorm(20)))
    pair(torch.rand(4, 1, 8, 8, dtype=torch.float64), folded=True).sin().sum().backward()
    assert pair.conv.bias.grad is not None
    assert torch.count_nonzero(pair.conv.bias.grad) == 0


def test_folds_only_where_it_measured_faster():
    assert folds(nn.Conv2d(1, 64, 3, padding=1))
    assert folds(nn.Conv2d(3, 64, 3, padding=1))
    assert not folds(nn.Conv2d(3, 32, 3, padding=1))  # mini-ImageNet's Conv-4-32
    assert not folds(nn.Conv2d(64, 64, 3, padding=1))
    assert not folds(nn.Conv2d(2, 64, 3, padding=1, groups=2))


@pytest.mark.parametrize("in_channels", [1, 64], ids=["folded-norm", "layers"])
@pytest.mark.parametrize("side", [12, 13], ids=["even", "odd"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_block_equals_its_layers_in_turn(in_channels, side, layout):
    block = ConvBlock(in_channels, 20 if in_channels == 1 else 8, "batch")
    module = randomised(Block(block))
    apply_memory_format(module, layout)
    x = torch.rand(5, in_channels, side, side, dtype=torch.float64)
    out = module(x, rewritten=True)
    torch.testing.assert_close(out, module(x, rewritten=False))
    expected = CL if layout == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=expected)
    ours, reference = second_order(module, x, True), second_order(module, x, False)
    for name, value in reference.items():
        torch.testing.assert_close(ours[name], value, atol=1e-10, rtol=1e-8)


def test_block_equals_its_layers_under_vmap_over_tasks():
    module = randomised(Block(ConvBlock(1, 20, "batch")))
    tasks = torch.rand(3, 5, 1, 10, 10, dtype=torch.float64)
    params = dict(module.named_parameters())

    def per_task(rewritten):
        def loss(p, x):
            return functional_call(module, p, (x, rewritten)).square().mean()

        with vectorised():
            return vmap(grad(loss), in_dims=(None, 0))(params, tasks)

    ours, reference = per_task(True), per_task(False)
    for name, value in reference.items():
        torch.testing.assert_close(ours[name], value, atol=1e-10, rtol=1e-8)
