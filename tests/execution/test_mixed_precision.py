"""Mixed precision (``trainer.precision=bf16-mixed``): where ``metalab.precision`` stops it.

A vmapped Conv-4 under bf16 autocast failed (a bfloat16 input, a float32 bias; seen on an
H200 and on the CPU), and a second-order backward under autocast runs its double-backward
ops in bfloat16. Vectorised tasks and the backward pass therefore run with autocast off.
"""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from metalab.algorithms import MAML
from metalab.execution import HybridStrategy, LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from metalab.precision import autocast_off
from tests.helpers.cases import conv_case
from tests.helpers.reference import relative_error


def float32_conv_case():
    model, forward, kind, batch, lr = conv_case()
    model.float()
    batch = replace(batch, **{
        f.name: getattr(batch, f.name).float()
        for f in fields(batch) if getattr(batch, f.name).is_floating_point()
    })  # fmt: skip
    return model, kind, batch, lr


def meta_gradient(model, kind, batch, strategy, lr):
    """MAML's meta-gradient with the module's backward (autocast off), 1 inner step."""
    algorithm = MAML(InnerLoop(model, kind), 1, lr, 1, lr)
    model.zero_grad()

    def backward(loss):
        with autocast_off():
            loss.backward()

    strategy.meta_gradient(
        algorithm.meta_objective, dict(model.named_parameters()), batch, backward
    )
    return [p.grad.clone() for p in model.parameters()]


def test_vmap_meta_gradient_under_autocast_is_the_full_precision_one():
    model, kind, batch, lr = float32_conv_case()
    plain = meta_gradient(model, kind, batch, VmapStrategy(chunk=2), lr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = meta_gradient(model, kind, batch, VmapStrategy(chunk=2), lr)
    assert all(g.dtype == torch.float32 for g in mixed)
    assert relative_error(mixed, plain) < 1e-5


@pytest.mark.parametrize(
    "strategy",
    [LoopStrategy, lambda: HybridStrategy(memory_budget_mib=1e9)],
    ids=["loop", "hybrid"],
)
def test_forward_passes_outside_vmap_keep_mixed_precision(strategy):
    """The loop's forward passes (and hybrid's query scoring) stay under autocast: their
    gradient differs from the float32 one (so autocast acted), in float32 and finite."""
    model, kind, batch, lr = float32_conv_case()
    plain = meta_gradient(model, kind, batch, strategy(), lr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = meta_gradient(model, kind, batch, strategy(), lr)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in mixed)
    assert relative_error(mixed, plain) > 1e-4


def test_autocast_off_leaves_no_trace():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast_off():
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")
    with autocast_off():
        assert not torch.is_autocast_enabled("cpu")
