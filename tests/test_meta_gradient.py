"""Every execution strategy's MAML/FOMAML meta-gradient equals the float64 per-task reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.algorithms.fomaml import FOMAML
from metalab.algorithms.maml import MAML
from metalab.data.episodes import NWayKShot
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.tasks import TaskBatch
from metalab.execution import AutoStrategy, LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION, REGRESSION
from metalab.models.conv4 import Conv4
from metalab.models.mlp import MLP
from reference import conv4_forward, maml_meta_gradient, mlp_forward, relative_error

STRATEGIES = {
    "loop": LoopStrategy,
    "vmap": lambda: VmapStrategy(chunk=2),
    "auto": lambda: AutoStrategy(
        [LoopStrategy(), VmapStrategy(chunk=3)], min_repeats=1, max_repeats=1
    ),
}


class RandomImages:
    """A tiny class pool of random images, enough to exercise conv + batch norm."""

    def __init__(self, classes: int = 6, per_class: int = 5, size: int = 16) -> None:
        generator = torch.Generator().manual_seed(1)
        self.data = torch.rand(classes, per_class, 1, size, size, generator=generator)
        self.num_classes, self.examples_per_class = classes, per_class

    def examples(self, class_index, example_indices):
        return self.data[class_index, example_indices]


def sample_batch(source, tasks: int) -> TaskBatch:
    generator = torch.Generator().manual_seed(7)
    return TaskBatch.stack([source.sample(generator) for _ in range(tasks)]).to(
        "cpu", torch.float64
    )


def mlp_case():
    torch.manual_seed(0)
    model = MLP(1, 1, (16, 16)).double()
    return model, mlp_forward, REGRESSION, sample_batch(SinusoidTasks(5, 7), tasks=5), 0.01


def conv_case(norm: str = "batch"):
    torch.manual_seed(0)
    model = Conv4(1, 3, image_size=16, channels=4, norm=norm).double()
    forward = lambda p, x: conv4_forward(p, x, norm=norm == "batch")  # noqa: E731
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=2, queries=2), tasks=5)
    return model, forward, CLASSIFICATION, batch, 0.4


CASES = {"mlp": mlp_case, "conv4-batchnorm": conv_case, "conv4-nonorm": lambda: conv_case("none")}


def metalab_meta_gradient(model, kind, batch, strategy, steps, lr, first_order):
    algorithm_cls = FOMAML if first_order else MAML
    algorithm = algorithm_cls(InnerLoop(model, kind), steps, lr, steps, lr, first_order=first_order)
    model.zero_grad()
    params = dict(model.named_parameters())
    losses, _ = strategy.meta_gradient(
        algorithm.meta_objective, params, batch, lambda loss: loss.backward()
    )
    assert losses.shape == (len(batch),)
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("first_order", [False, True], ids=["maml", "fomaml"])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_meta_gradient_matches_reference(case, strategy, steps, first_order):
    model, forward, kind, batch, lr = CASES[case]()
    ours = metalab_meta_gradient(model, kind, batch, STRATEGIES[strategy](), steps, lr, first_order)
    reference = maml_meta_gradient(
        forward, list(model.parameters()), batch, kind.loss, steps, lr, first_order
    )
    assert relative_error(ours, reference) < 1e-8


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_order_differs_from_second_order(case):
    model, _, kind, batch, lr = CASES[case]()
    second = metalab_meta_gradient(model, kind, batch, LoopStrategy(), 1, lr, False)
    first = metalab_meta_gradient(model, kind, batch, LoopStrategy(), 1, lr, True)
    assert relative_error(first, second) > 1e-3


def test_decomposed_batch_norm_equals_native_batch_norm():
    from metalab.models.norm import BatchStatNorm, decomposed_batch_norm

    norm = BatchStatNorm(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    native = F.batch_norm(x, None, None, norm.weight, norm.bias, training=True)
    with decomposed_batch_norm():
        decomposed = norm(x)
    torch.testing.assert_close(decomposed, native)
    torch.testing.assert_close(norm(x), native)


class SleepyLoop(LoopStrategy):
    """A loop made slower by a fixed delay, to see that auto measures rather than guesses."""

    def __init__(self, delay: float, name: str) -> None:
        self.delay, self.name = delay, name

    def meta_gradient(self, *args):
        import time

        time.sleep(self.delay)
        return super().meta_gradient(*args)


@pytest.mark.parametrize("slow_first", [True, False])
def test_auto_keeps_the_candidate_it_measured_fastest(slow_first):
    model, _, kind, batch, lr = mlp_case()
    slow, fast = SleepyLoop(0.05, "slow"), SleepyLoop(0.0, "fast")
    auto = AutoStrategy([slow, fast] if slow_first else [fast, slow], min_seconds=0.0)
    metalab_meta_gradient(model, kind, batch, auto, 1, lr, False)
    assert auto.chosen is fast and auto.name == "auto -> fast"
    assert set(auto.timings) == {"slow", "fast"}
