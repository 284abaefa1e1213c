"""Meta-Dataset's variable-way, variable-shot episodes (``dataset.sampler=variable``).

Triantafillou et al. 2020, "Meta-Dataset" (ICLR), Appendix "Episode sampling", as its code
does it (``meta_dataset/data/sampling.py`` of github.com/google-research/meta-dataset, the
defaults of its tests and gin files). For a split of C classes, class c holding n_c images:

1. ways: N uniform in [min_ways, min(max_ways, C)] (5 and 50); the N classes uniformly
   without replacement. (Meta-Dataset's ImageNet DAG and Omniglot alphabet hierarchies are
   not used: every source draws its classes uniformly, as its other sources do.)
2. queries: the same q for every chosen class, q = min(max_query, floor(min_c n_c / 2))
   (max_query 10), so the query set is balanced and half of the smallest class is left.
3. support budget: S = min(max_support, sum_c ceil(beta * min(max_support_per_class,
   n_c - q))) with beta uniform in (0, 1] (500 and 100; the code's floor(beta * x + 1) with
   beta in [0, 1), the same distribution).
4. shots: k_c = min(floor(p_c * (S - N)) + 1, n_c - q), p_c proportional to
   n_c * exp(a_c), a_c uniform in [log 0.5, log 2): every class gets at least one support
   image, larger classes more, each perturbed by a factor between 1/2 and 2.

So an episode has 1 <= k_c <= n_c - q shots of class c, sum_c k_c <= S <= max_support,
and 1 <= q <= max_query queries of every class; a split needs at least min_ways classes of at
least 2 images each. Labels are 0..N-1 in the order the classes were drawn.

Episodes differ in shape, so they are never stacked: a meta-batch holds one episode (per
device) and evaluation runs one episode at a time (``metalab.data.datamodule``); algorithms
with a fixed head (one output per training way) cannot take them (``check_variable``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from metalab.data.episodes import ClassPool
from metalab.data.tasks import Task
from metalab.errors import ConfigError

LOG_WEIGHT = (math.log(0.5), math.log(2.0))  # the range of a_c (rule 4)


@dataclass(frozen=True)
class VariableRules:
    """The bounds of rules 1-4 (Meta-Dataset's defaults)."""

    min_ways: int = 5
    max_ways: int = 50
    max_query: int = 10
    max_support: int = 500
    max_support_per_class: int = 100

    @classmethod
    def from_config(cls, value: Any) -> VariableRules:
        """``dataset.variable``: each bound a whole number >= 1, min_ways <= max_ways and
        max_support >= max_ways (one support image per way); None gives the defaults."""
        if value is None:
            return cls()
        given = dict(value.items()) if hasattr(value, "items") else None
        if given is None:
            raise ConfigError(
                f"dataset.variable={value!r}: give a mapping of min_ways, max_ways, max_query, "
                "max_support, max_support_per_class (or leave it out for Meta-Dataset's)."
            )
        names = list(cls.__dataclass_fields__)
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ConfigError(
                f"dataset.variable.{unknown[0]} is not a bound of the variable sampler: choose "
                f"one of {', '.join(names)}."
            )
        for key, number in given.items():
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ConfigError(
                    f"dataset.variable.{key}={number!r}: set it to a whole number >= 1."
                )
        rules = cls(**given)
        if rules.min_ways > rules.max_ways:
            raise ConfigError(
                f"dataset.variable.min_ways={rules.min_ways} is above max_ways="
                f"{rules.max_ways}: set min_ways <= max_ways."
            )
        if rules.max_support < rules.max_ways:
            raise ConfigError(
                f"dataset.variable.max_support={rules.max_support} is below max_ways="
                f"{rules.max_ways}: every way needs one support image; raise max_support."
            )
        return rules


def class_counts(pool: ClassPool) -> list[int]:
    """Images in each class of a pool: a ragged pool's own counts, else all alike."""
    counts = getattr(pool, "counts", None)
    if counts is not None:
        return [int(c) for c in counts]
    return [int(pool.examples_per_class)] * int(pool.num_classes)


@dataclass(frozen=True)
class Composition:
    """What one episode holds: the classes (pool indices), shots of each, queries of each."""

    classes: list[int]
    shots: list[int]
    queries: int


class VariableEpisodes:
    """A TaskSource of Meta-Dataset episodes over one pool (the rules in the module's doc)."""

    variable_shapes = True  # episodes differ in shape: never stacked (datamodule)

    def __init__(
        self, pool: ClassPool, rules: VariableRules | None = None, split: str = "", source: str = ""
    ) -> None:
        self.pool, self.rules = pool, rules or VariableRules()
        self.counts = class_counts(pool)
        where = f"the {split} split" if split else "the split"
        where += f" of {source}" if source else ""
        if len(self.counts) < self.rules.min_ways:
            raise ConfigError(
                f"dataset.sampler=variable draws at least dataset.variable.min_ways="
                f"{self.rules.min_ways} classes but {where} has only {len(self.counts)}: lower "
                "min_ways, or give that split more classes."
            )
        small = [i for i, n in enumerate(self.counts) if n < 2]
        if small:
            names = getattr(pool, "class_names", None)
            shown = ", ".join(str(names[i]) if names else str(i) for i in small[:4])
            raise ConfigError(
                f"dataset.sampler=variable needs at least 2 images a class (one support, one "
                f"query) but {where} has {len(small)} class(es) with fewer: {shown}: add "
                "images, or remove those classes."
            )

    def composition(self, generator: torch.Generator) -> Composition:
        """Rules 1-4: which classes, how many shots of each, how many queries."""
        rules = self.rules
        high = min(rules.max_ways, len(self.counts))
        ways = int(torch.randint(rules.min_ways, high + 1, (1,), generator=generator))
        classes = torch.randperm(len(self.counts), generator=generator)[:ways].tolist()
        sizes = torch.tensor([self.counts[c] for c in classes], dtype=torch.float64)
        queries = min(rules.max_query, int(sizes.min()) // 2)
        remaining = sizes - queries
        beta = torch.rand(1, generator=generator, dtype=torch.float64)
        contributions = remaining.clamp(max=rules.max_support_per_class)
        budget = min(rules.max_support, int(torch.floor(beta * contributions + 1).sum()))
        low, top = LOG_WEIGHT
        log_weights = torch.rand(ways, generator=generator, dtype=torch.float64) * (top - low)
        weights = sizes * torch.exp(log_weights + low)
        desired = torch.floor(weights / weights.sum() * (budget - ways)) + 1
        shots = torch.minimum(desired, remaining).long().tolist()
        return Composition(classes, shots, queries)

    def sample(self, generator: torch.Generator) -> Task:
        plan = self.composition(generator)
        support, query = [], []
        for class_index, shots in zip(plan.classes, plan.shots, strict=True):
            chosen = torch.randperm(self.counts[class_index], generator=generator)
            images = self.pool.examples(class_index, chosen[: shots + plan.queries])
            support.append(images[:shots])
            query.append(images[shots:])
        labels = torch.arange(len(plan.classes))
        return Task(
            support_x=torch.cat(support),
            support_y=labels.repeat_interleave(torch.tensor(plan.shots)),
            query_x=torch.cat(query),
            query_y=labels.repeat_interleave(plan.queries),
        )


def varies(source: object) -> bool:
    """Whether a task source draws episodes of different shapes (which cannot be stacked),
    looking through wrappers (augmentation, channel conversion) at what they wrap."""
    while source is not None:
        if getattr(source, "variable_shapes", False):
            return True
        source = getattr(source, "source", None)
    return False
