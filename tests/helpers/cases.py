"""Small float64 problems that the gradient, evaluation and strategy tests share: a pool of
random images, seeded task batches, an MLP and a Conv-4 case (each with the plain-torch
forward of ``tests.helpers.reference``), metalab's meta-gradient through a strategy, and a
float64 MetaLearner built from the composed config."""

from __future__ import annotations

import time

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metalab.algorithms.fomaml import FOMAML
from metalab.algorithms.maml import MAML
from metalab.data.episodes import NWayKShot
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.tasks import TaskBatch
from metalab.execution import LoopStrategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION, REGRESSION
from metalab.models.conv4 import Conv4
from metalab.models.mlp import MLP
from metalab.module import MetaLearner
from metalab.paths import config_dir
from tests.helpers.reference import conv4_forward, mlp_forward


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


def conv_case(norm: str = "batch", channels: int = 4, strided: bool = False):
    torch.manual_seed(0)
    model = Conv4(
        1, 3, image_size=16, channels=channels, norm=norm,
        downsample="stride" if strided else "maxpool", global_pool=strided,
    ).double()  # fmt: skip
    forward = lambda p, x: conv4_forward(p, x, norm=norm == "batch", strided=strided)  # noqa: E731
    batch = sample_batch(NWayKShot(RandomImages(), ways=3, shots=2, queries=2), tasks=5)
    return model, forward, CLASSIFICATION, batch, 0.4


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


class SleepyLoop(LoopStrategy):
    """A loop made slower by a fixed delay, to see that auto measures rather than guesses."""

    def __init__(self, delay: float, name: str) -> None:
        self.delay, self.name = delay, name

    def meta_gradient(self, *args):
        time.sleep(self.delay)
        return super().meta_gradient(*args)

    def map(self, *args):
        time.sleep(self.delay)
        return super().map(*args)


def learner(algorithm: str, *overrides: str, steps: int = 4) -> MetaLearner:
    """A float64 MetaLearner of ``algorithm`` on a tiny 3-way Conv-4 with ``steps`` test-time
    inner steps (the evaluation tests score every one of them)."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"algorithm={algorithm}",
                "dataset=omniglot",
                "model=conv4",
                "model.channels=4",
                f"++algorithm.eval_inner_steps={steps}",
                "dataset.ways=3",
                "strategy=loop",
                *overrides,
            ],
        )
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    torch.manual_seed(0)
    return MetaLearner(plain, (1, 16, 16), 3).double()
