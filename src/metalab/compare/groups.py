"""Group runs by the config keys that differ between them and aggregate over seeds."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from metalab.compare.load import Run

# Keys that never define a group: the seed is what is aggregated over; the rest change
# where or how fast a run goes, not what it computes.
IGNORED_KEYS = (
    "seed",
    "run_name",
    "resume",
    "strategy",
    "vmap_chunk",
    "eval.batch",
    "dataset.root",
    "dataset.download",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.accelerator",
    "trainer.devices",
)
IGNORED_PREFIXES = ("logger.", "hydra.")

# Student's t, two-sided 95%, by degrees of freedom (n seeds - 1); 1.96 beyond the table.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


@dataclass
class Group:
    key: dict[str, Any]  # the differing config values shared by its runs
    runs: list[Run]
    failed: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.key.items()) or "all runs"

    @property
    def metric(self) -> str | None:
        return self.runs[0].metric if self.runs else None

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]

    def test(self) -> tuple[float | None, float | None]:
        return mean_and_ci95([r.test_mean for r in self.runs], self.runs)

    def val_best(self) -> tuple[float | None, float | None]:
        values = [r.val_best for r in self.runs if r.val_best is not None]
        return mean_and_ci95(values, [])


def t95(n: int) -> float:
    return T95[n - 2] if 2 <= n <= len(T95) + 1 else 1.96


def mean_and_ci95(values: list[float], runs: list[Run]) -> tuple[float | None, float | None]:
    """Mean over seeds and the half-width of Student's t 95% interval. With one seed, the
    run's own interval over test tasks is the only uncertainty there is."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, runs[0].test_ci95 if runs else None
    return mean, t95(len(values)) * statistics.stdev(values) / math.sqrt(len(values))


def ignored(key: str, extra: tuple[str, ...]) -> bool:
    return key in IGNORED_KEYS or key in extra or key.startswith(IGNORED_PREFIXES)


def differing_keys(runs: list[Run], extra_ignored: tuple[str, ...] = ()) -> list[str]:
    """Config keys whose value is not the same in every run, in config order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.config))
    return [
        key
        for key in keys
        if not ignored(key, extra_ignored) and len({repr(run.config.get(key)) for run in runs}) > 1
    ]


def drop_redundant(keys: list[str], runs: list[Run]) -> list[str]:
    """Drop a key that merely restates another (algorithm.first_order always follows
    algorithm.name), so group labels stay short; ``*.name`` keys are the ones kept."""
    kept: list[str] = []
    for key in sorted(keys, key=lambda k: not k.endswith(".name")):
        if not any(one_to_one(runs, earlier, key) for earlier in kept):
            kept.append(key)
    return [key for key in keys if key in kept]


def one_to_one(runs: list[Run], a: str, b: str) -> bool:
    pairs = {(repr(r.config.get(a)), repr(r.config.get(b))) for r in runs}
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def group_runs(
    runs: list[Run], by: list[str] | None = None, extra_ignored: tuple[str, ...] = ()
) -> list[Group]:
    """One group per combination of the differing keys (or of ``by``), in first-seen order."""
    keys = by if by else drop_redundant(differing_keys(runs, extra_ignored), runs)
    groups: dict[tuple, Group] = {}
    for run in runs:
        values = {key: run.config.get(key) for key in keys}
        group = groups.setdefault(tuple(map(repr, values.values())), Group(values, []))
        (group.runs if run.completed else group.failed).append(run)
    return list(groups.values())
