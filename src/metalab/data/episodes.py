"""N-way K-shot episodes drawn from a pool of classes, and the seeded streams that serve them.

Training episodes follow the run seed; validation and test episodes are fixed: episode ``i``
of a split is the same in every run, so numbers from different runs are comparable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from metalab.data.tasks import Task, TaskBatch
from metalab.errors import ConfigError


class TaskSource(Protocol):
    """Anything that can draw one task from a random generator."""

    def sample(self, generator: torch.Generator) -> Task: ...


class ClassPool(Protocol):
    """Images grouped by class, every class with the same number of examples."""

    num_classes: int
    examples_per_class: int

    def examples(self, class_index: int, example_indices: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1], shape [len(example_indices), channels, height, width]."""
        ...


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (run seed, stream, rank, index)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class NWayKShot:
    """Draws N classes, then K support and Q query examples of each; labels are 0..N-1."""

    def __init__(
        self, pool: ClassPool, ways: int, shots: int, queries: int, split: str = ""
    ) -> None:
        where = f" in the {split} split" if split else ""
        if ways < 1 or shots < 1 or queries < 1:
            raise ConfigError(
                f"ways={ways}, shots={shots}, queries={queries}: each must be at least 1."
            )
        if ways > pool.num_classes:
            raise ConfigError(
                f"ways={ways} but there are only {pool.num_classes} classes{where}: "
                f"set dataset.ways (or dataset.test_ways) to at most {pool.num_classes}."
            )
        if shots + queries > pool.examples_per_class:
            raise ConfigError(
                f"shots + queries = {shots} + {queries} = {shots + queries} but each class "
                f"has only {pool.examples_per_class} examples{where}: lower dataset.shots or "
                f"dataset.queries so that they sum to at most {pool.examples_per_class}."
            )
        self.pool, self.ways, self.shots, self.queries = pool, ways, shots, queries

    def class_size(self, class_index: int) -> int:
        """How many examples class ``class_index`` has (all alike here; see data.ragged)."""
        return self.pool.examples_per_class

    def sample(self, generator: torch.Generator) -> Task:
        classes = torch.randperm(self.pool.num_classes, generator=generator)[: self.ways]
        support, query = [], []
        for class_index in classes.tolist():
            chosen = torch.randperm(self.class_size(class_index), generator=generator)
            images = self.pool.examples(class_index, chosen[: self.shots + self.queries])
            support.append(images[: self.shots])
            query.append(images[self.shots :])
        labels = torch.arange(self.ways)
        return Task(
            support_x=torch.cat(support),
            support_y=labels.repeat_interleave(self.shots),
            query_x=torch.cat(query),
            query_y=labels.repeat_interleave(self.queries),
        )


TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0, 1, 2


class TrainEpisodes(IterableDataset):
    """An endless stream of meta-batches; task ``j`` of batch ``i`` depends only on (seed, i, j).

    ``meta_batch`` is the global meta-batch: of ``world`` ranks, rank ``r`` yields tasks
    ``r * meta_batch / world`` up to the next rank's first. So every rank draws different tasks,
    N ranks together draw exactly the tasks one process would, and a resumed run
    (``start_batch``) sees the stream an uninterrupted run would have seen.
    """

    def __init__(
        self,
        source: TaskSource,
        meta_batch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        start_batch: int = 0,
    ) -> None:
        if meta_batch < 1:
            raise ConfigError(f"meta_batch={meta_batch}: set algorithm.meta_batch to at least 1.")
        if meta_batch % world:
            raise ConfigError(
                f"algorithm.meta_batch={meta_batch} cannot be split evenly over {world} devices: "
                f"choose a multiple of {world} (each device then runs meta_batch / {world} tasks "
                "per step), or change trainer.devices."
            )
        self.source, self.meta_batch, self.seed = source, meta_batch, seed
        self.rank, self.world, self.start_batch = rank, world, start_batch

    @property
    def local_tasks(self) -> range:
        """Which tasks of each global meta-batch this rank draws."""
        per_rank = self.meta_batch // self.world
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)

    def batch(self, index: int) -> TaskBatch:
        tasks = []
        for task in self.local_tasks:
            generator = torch.Generator().manual_seed(
                derive_seed(self.seed, TRAIN_STREAM, index, task)
            )
            tasks.append(self.source.sample(generator))
        return TaskBatch.stack(tasks)

    def __iter__(self) -> Iterator[TaskBatch]:
        index = self.start_batch
        while True:
            yield self.batch(index)
            index += 1


class FixedEpisodes(Dataset):
    """A fixed, indexable set of evaluation tasks: task ``i`` is a pure function of (stream, i)."""

    def __init__(self, source: TaskSource, num_tasks: int, stream: int, seed: int = 0) -> None:
        if num_tasks < 1:
            raise ConfigError(f"{num_tasks} evaluation tasks requested: ask for at least 1.")
        self.source, self.num_tasks, self.stream, self.seed = source, num_tasks, stream, seed

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index: int) -> Task:
        if not 0 <= index < self.num_tasks:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.stream, index))
        return self.source.sample(generator)
