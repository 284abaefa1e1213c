"""Training steps of the metric methods with Conv-4's first block as the native kernel or as
the composite block, on their Omniglot presets' episodes.

Why: ProtoNets, Matching and Siamese networks differentiate their loss once (no inner loop),
so their training passes may run the first block as ``metalab.native.fused_first_block``
(``MetricAlgorithm.embed_episode`` says so with ``backward_once``); before, every training
pass took the composite block. This script measures what that buys, as a ratio of the two
paths in one process: rounds alternate between them (the kernel switched off with
``METALAB_NATIVE_KERNELS=0``), so a machine that other jobs load unevenly loads both alike.

Each step is what ``MetaLearner.training_step`` does: the algorithm's ``outer_step`` with
the loop strategy (``strategy=auto``'s choice for Conv-4 on the CPU), then Adam. The model
and algorithm are built as training builds them (``MetaLearner`` from the composed preset).

Run: ``python benchmarks/metric_first_block.py`` (``--threads``, ``--rounds``, ``--presets``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from metalab import native
from metalab.data.tasks import TaskBatch
from metalab.execution import LoopStrategy
from metalab.module import MetaLearner
from metalab.native import fused_first_block
from metalab.paths import config_dir

IMAGE = (1, 28, 28)
SWITCH = "METALAB_NATIVE_KERNELS"


@dataclass(frozen=True)
class Episode:
    """A preset's training episode: the composed training config (``experiment=<preset>``)."""

    preset: str
    config: dict

    @classmethod
    def of(cls, preset: str) -> Episode:
        with initialize_config_dir(config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={preset}"])
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra", None)
        return cls(preset, plain)

    @property
    def algorithm(self) -> dict:
        return self.config["algorithm"]

    @property
    def ways(self) -> int:
        return self.config["dataset"]["ways"]

    @property
    def shots(self) -> int:
        return self.config["dataset"]["shots"]

    @property
    def queries(self) -> int:
        return self.config["dataset"]["queries"]

    def batch(self, generator: torch.Generator) -> TaskBatch:
        def images(per_class: int) -> torch.Tensor:
            return torch.rand(1, self.ways * per_class, *IMAGE, generator=generator)

        def labels(per_class: int) -> torch.Tensor:
            return torch.arange(self.ways).repeat_interleave(per_class)[None]

        return TaskBatch(
            images(self.shots), labels(self.shots), images(self.queries), labels(self.queries)
        )


PRESETS = (
    "protonet_omniglot_5w1s",
    "matchingnet_omniglot_5w1s",
    "matchingnet_omniglot_20w1s",
    "siamese_omniglot_5w1s",
)


@contextmanager
def kernel(on: bool):
    """The native kernel available (``on``) or switched off, for the passes inside."""
    saved = os.environ.get(SWITCH)
    if on:
        os.environ.pop(SWITCH, None)
    else:
        os.environ[SWITCH] = "0"
    fused_first_block._library.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(SWITCH, None)
        else:
            os.environ[SWITCH] = saved
        fused_first_block._library.cache_clear()


def training_step(episode: Episode):
    """One outer step of ``episode``'s algorithm as training takes it, as a closure."""
    learner = MetaLearner(episode.config, IMAGE, episode.ways)  # model, layout, algorithm
    model, algorithm = learner.model, learner.algorithm
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam([*params.values(), *algorithm.parameters()], lr=1e-3)
    strategy = LoopStrategy()
    batch = episode.batch(torch.Generator().manual_seed(0))

    def step() -> None:
        optimizer.zero_grad()
        algorithm.outer_step(params, batch, strategy, lambda loss: loss.backward())
        optimizer.step()

    return step


def measure(episode: Episode, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each path, rounds alternating; and whether the native
    rounds' passes ran the kernel."""
    step = training_step(episode)
    times: dict[bool, list[float]] = {True: [], False: []}
    for on in (True, False):  # warm-up: oneDNN's primitives, the kernel's build
        with kernel(on):
            step()
    passes = {"native": 0, "composite": 0}
    for r in range(2 * rounds):
        on = r % 2 == 0
        native.reset()
        with kernel(on):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[on].append((time.perf_counter() - start) / steps)
        if on:  # the paths the native rounds' passes took
            for path, count in native.record()["passes"].items():
                passes[path] += count
    return {
        "native": statistics.median(times[True]),
        "composite": statistics.median(times[False]),
        "native_passes": passes["native"],
        "passes": passes["native"] + passes["composite"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds of each path")
    parser.add_argument("--steps", type=int, default=5, help="outer steps per round")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    if fused_first_block.library() is None:
        console.print(f"the native kernel is unavailable: {fused_first_block.unavailable()}")
        return
    table = Table(title=f"metric methods' training step, {args.threads} thread(s)")
    for column in ("preset", "images/episode", "composite ms", "native ms", "speed-up", "kernel"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    for preset in args.presets.split(","):
        episode = Episode.of(preset)
        row = measure(episode, args.rounds, args.steps)
        images = episode.ways * (episode.shots + episode.queries)
        table.add_row(
            preset,
            str(images),
            f"{1e3 * row['composite']:.1f}",
            f"{1e3 * row['native']:.1f}",
            f"{row['composite'] / row['native']:.2f}x",
            f"{row['native_passes']:.0f} of {row['passes']:.0f} native-round passes",
        )
    console.print(table)


if __name__ == "__main__":
    main()
