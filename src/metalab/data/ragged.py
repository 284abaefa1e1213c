"""Classes with different numbers of examples, and their N-way K-shot episodes.

Why a pool and a sampler of their own: ``NWayKShot`` draws example indices below one
``examples_per_class`` shared by every class. Real collections are uneven (CUB has 41 to 60
images a species, tieredImageNet 732 to 1,300, a user's folders anything), and cutting every
class to the smallest would throw images away. Here each class keeps all of its images and the
sampler draws ``shots + queries`` of them without replacement from that class alone.

The sampler draws from the generator exactly as ``NWayKShot`` does (a permutation of the
classes, then one of each chosen class's examples), so on a pool whose classes are all the same
size both give the same episodes. A split that cannot fill an episode (fewer classes than
ways, a class with fewer images than shots + queries) is refused with the classes and counts,
by ``check_fits``, which the loaders also call right after listing the files, so the refusal
comes before anything is decoded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from metalab.data.episodes import ClassPool, NWayKShot, TaskSource
from metalab.errors import ConfigError

PARTS = ("train", "val", "test")
Shape = tuple[int, int, int]  # ways, shots, queries


class RaggedClasses:
    """A pool whose class ``i`` is the rows ``rows[i]`` of ``images`` [N, C, H, W] (uint8).

    The splits of one load may share ``images``; ``source`` names where the data came from
    (for messages). There is deliberately no ``examples_per_class``: ``NWayKShot`` given this
    pool fails loudly instead of drawing only the first images of every class.
    """

    def __init__(
        self,
        images: torch.Tensor,
        rows: Sequence[torch.Tensor],
        class_names: Sequence[str],
        source: str = "",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [examples, channels, height, width], not "
                f"{images.dtype} {list(images.shape)}"
            )
        if len(rows) != len(class_names):
            raise ValueError("give one name per class")
        self.images = images
        self.rows = [torch.as_tensor(r, dtype=torch.long) for r in rows]
        self.class_names = [str(n) for n in class_names]
        self.counts = [len(r) for r in self.rows]
        self.num_classes = len(self.rows)
        self.source = source

    def examples(self, class_index: int, example_indices: torch.Tensor) -> torch.Tensor:
        """Float32 images ``[n, C, H, W]`` in [0, 1]."""
        indices = self.rows[class_index][torch.as_tensor(example_indices, dtype=torch.long)]
        return self.images.index_select(0, indices).to(torch.float32).div_(255.0)

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.images.shape[1:])
        low, high = (min(self.counts), max(self.counts)) if self.counts else (0, 0)
        return f"RaggedClasses({self.num_classes} classes, {low}-{high} x {shape})"


def _few(items: Sequence[str], limit: int = 6) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_fits(
    names: Sequence[str],
    counts: Sequence[int],
    shape: Shape,
    split: str,
    source: str = "",
) -> None:
    """Refuse a split that cannot fill one episode of ``shape``, naming classes and counts."""
    ways, shots, queries = (int(v) for v in shape)
    prefix = "dataset." if split == "train" else "dataset.test_"
    where = f"the {split} split" + (f" of {source}" if source else "")
    if ways < 1 or shots < 1 or queries < 1:
        raise ConfigError(
            f"{prefix}ways={ways}, {prefix}shots={shots}, {prefix}queries={queries}: each "
            "must be at least 1."
        )
    if ways > len(names):
        listed = f" ({_few(list(names))})" if names else ""
        raise ConfigError(
            f"{prefix}ways={ways} but {where} has only {len(names)} classes{listed}: set "
            f"{prefix}ways to at most {len(names)}, or give that split more classes."
        )
    need = shots + queries
    short = [(n, c) for n, c in zip(names, counts, strict=True) if c < need]
    if short:
        fewest = min(c for _, c in short)
        listed = _few([f"{n} ({c})" for n, c in sorted(short, key=lambda nc: (nc[1], nc[0]))])
        raise ConfigError(
            f"{prefix}shots + {prefix}queries = {shots} + {queries} = {need} but {where} has "
            f"{len(short)} class(es) with fewer images: {listed}: lower them to sum to at most "
            f"{fewest}, or add images to those classes (or move them out of the data set)."
        )


class RaggedNWayKShot(NWayKShot):
    """N classes, then K support and Q query examples of each, from classes of any size:
    ``NWayKShot``'s draws, each class's permutation over its own images."""

    def __init__(
        self, pool: RaggedClasses, ways: int, shots: int, queries: int, split: str = ""
    ) -> None:
        check_fits(pool.class_names, pool.counts, (ways, shots, queries), split, pool.source)
        self.pool, self.ways, self.shots, self.queries = pool, ways, shots, queries

    def class_size(self, class_index: int) -> int:
        return self.pool.counts[class_index]


def episode_source(
    pool: ClassPool | RaggedClasses, ways: int, shots: int, queries: int, split: str = ""
) -> TaskSource:
    """The N-way K-shot sampler that fits the pool: ragged pools get ``RaggedNWayKShot``."""
    if isinstance(pool, RaggedClasses):
        return RaggedNWayKShot(pool, ways, shots, queries, split)
    return NWayKShot(pool, ways, shots, queries, split)


def episode_shapes(cfg: Any) -> dict[str, Shape]:
    """(ways, shots, queries) of each split from a dataset config: training ones for train.

    Splits named in ``cfg.optional_splits`` are left out: a multi-source member or a
    ``dataset.test`` domain may leave them empty (``metalab.data.domains`` checks those that
    have classes when it builds their episodes)."""
    train = (int(cfg.ways), int(cfg.shots), int(cfg.queries))
    test = (int(cfg.test_ways), int(cfg.test_shots), int(cfg.test_queries))
    optional = set(cfg.get("optional_splits", None) or ())
    shapes = {"train": train, "val": test, "test": test}
    return {split: shape for split, shape in shapes.items() if split not in optional}


def check_parts_fit(
    parts: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    shapes: Mapping[str, Shape] | None,
    source: str = "",
) -> None:
    """``check_fits`` for each split of ``parts`` ({split: (class names, counts)})."""
    if shapes is None:
        return
    for split, (names, counts) in parts.items():
        if split in shapes:
            check_fits(names, counts, shapes[split], split, source)
