"""Published numbers to compare with, each with its source (from the papers' tables).

Omniglot: test accuracy %, 95% CI over test tasks where the paper gives one. Sinusoid: the
MAML paper's 5-shot test MSE after 1, 5 and 10 inner steps (no interval published).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FINN = "Finn et al. 2017, MAML (ICML), Table 1"
FINN_SIN = "Finn et al. 2017, MAML (ICML), Figure 2 / Section 5.1"


@dataclass(frozen=True)
class Published:
    method: str
    mean: float  # in the metric's reported unit: % for accuracy, raw for MSE
    ci95: float | None
    source: str


# (dataset, algorithm, ways, shots, test inner steps or None) -> published result
TABLE: dict[tuple, Published] = {
    ("omniglot", "maml", 5, 1, None): Published("MAML", 98.7, 0.4, FINN),
    ("omniglot", "maml", 5, 5, None): Published("MAML", 99.9, 0.1, FINN),
    ("omniglot", "maml", 20, 1, None): Published("MAML", 95.8, 0.3, FINN),
    ("omniglot", "maml", 20, 5, None): Published("MAML", 98.9, 0.2, FINN),
    ("omniglot", "fomaml", 5, 1, None): Published("first-order MAML", 98.3, 0.5, FINN),
    ("omniglot", "fomaml", 5, 5, None): Published("first-order MAML", 99.2, 0.2, FINN),
    ("omniglot", "fomaml", 20, 1, None): Published("first-order MAML", 89.4, 0.5, FINN),
    ("omniglot", "fomaml", 20, 5, None): Published("first-order MAML", 97.9, 0.1, FINN),
    ("sinusoid", "maml", None, 5, 1): Published("MAML", 0.67, None, FINN_SIN),
    ("sinusoid", "maml", None, 5, 5): Published("MAML", 0.38, None, FINN_SIN),
    ("sinusoid", "maml", None, 5, 10): Published("MAML", 0.35, None, FINN_SIN),
}

# Other methods on Omniglot, shown for context in the plots (no metalab counterpart yet).
CONTEXT: dict[tuple[int, int], list[Published]] = {
    (5, 1): [
        Published("Reptile (transductive)", 97.68, 0.04, "Nichol et al. 2018, Table 1"),
        Published("Prototypical Networks", 98.8, None, "Snell et al. 2017, Table 1"),
        Published("Matching Networks", 98.1, None, "Vinyals et al. 2016, Table 1"),
        Published("MAML++", 99.47, None, "Antoniou et al. 2019, Table 1"),
    ],
    (5, 5): [
        Published("Reptile (transductive)", 99.48, 0.06, "Nichol et al. 2018, Table 1"),
        Published("Prototypical Networks", 99.7, None, "Snell et al. 2017, Table 1"),
        Published("Matching Networks", 98.9, None, "Vinyals et al. 2016, Table 1"),
        Published("MAML++", 99.93, None, "Antoniou et al. 2019, Table 1"),
    ],
    (20, 1): [
        Published("Reptile (transductive)", 89.43, 0.14, "Nichol et al. 2018, Table 1"),
        Published("Prototypical Networks", 96.0, None, "Snell et al. 2017, Table 1"),
        Published("Matching Networks", 93.8, None, "Vinyals et al. 2016, Table 1"),
        Published("MAML++", 97.65, None, "Antoniou et al. 2019, Table 1"),
    ],
    (20, 5): [
        Published("Reptile (transductive)", 97.12, 0.32, "Nichol et al. 2018, Table 1"),
        Published("Prototypical Networks", 98.9, None, "Snell et al. 2017, Table 1"),
        Published("Matching Networks", 98.5, None, "Vinyals et al. 2016, Table 1"),
        Published("MAML++", 99.33, None, "Antoniou et al. 2019, Table 1"),
    ],
}


def lookup(config: dict[str, Any], protocol: dict[str, Any]) -> Published | None:
    """The published counterpart of a run with this (flattened) config and test protocol."""
    dataset = config.get("dataset.name")
    algorithm = config.get("algorithm.name")
    shots = protocol.get("shots", config.get("dataset.test_shots", config.get("dataset.shots")))
    if dataset == "sinusoid":
        steps = protocol.get("inner_steps", config.get("algorithm.eval_inner_steps"))
        return TABLE.get((dataset, algorithm, None, shots, steps))
    ways = protocol.get("ways", config.get("dataset.ways"))
    return TABLE.get((dataset, algorithm, ways, shots, None))


def scale(metric: str | None) -> float:
    """Published accuracies are in %, metalab stores fractions."""
    return 100.0 if metric == "acc" else 1.0


def outside_published_ci(mean: float, published: Published) -> bool | None:
    """True when our mean (in the published unit) lies outside the published 95% CI;
    None when the paper gives no interval."""
    if published.ci95 is None:
        return None
    return abs(mean - published.mean) > published.ci95
