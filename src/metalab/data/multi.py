"""``dataset=multi``: episodes from several data sets, each episode from one of them.

Each member is a domain (``metalab.data.domains``: a conf/dataset option and the keys that
differ) with a ``weight``. A training episode comes from one member, chosen with probability
weight / sum of the weights by the episode's own generator, so the choice is seeded and a
resumed run draws the same members (``MultiSource``). A member of weight 0 is not trained on:
with ``split_ratios=[0, 0, 1]`` it is a domain only tested on. Validation episodes are chosen
the same way among the members that train and have validation classes. Each member with test
classes is tested on its own and reported under its label (``test/<label>/<metric>``; the
first ``test/<metric>`` holds every member's tasks together).

All members share ``dataset.image_size`` (each reader resizes to it when it decodes) and
``dataset.channels`` (converted: grey repeated to RGB, RGB to grey by luma), and the episode
sizes ``dataset.ways``, ``shots``, ``queries`` and their ``test_`` forms. Augmentation is each
member's own (``dataset.members.<label>.augment``). ``dataset.sampler=variable`` draws
Meta-Dataset's variable-way variable-shot episodes in every member instead
(``metalab.data.variable``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from metalab.data.augment import augmentation
from metalab.data.domains import (
    Domains,
    check_label,
    domain_config,
    load_domain,
    mixture,
    plain,
    with_channels,
)
from metalab.data.variable import VariableRules
from metalab.errors import ConfigError

log = logging.getLogger("metalab")


def check_channels(value: Any) -> int:
    if value not in (1, 3) or isinstance(value, bool):
        raise ConfigError(
            f"dataset.channels={value!r}: choose 3 (RGB; grey members are repeated) or 1 "
            "(grey; RGB members become their luma)."
        )
    return int(value)


def member_specs(cfg: Any) -> dict[str, tuple[dict[str, Any], float]]:
    """``dataset.members`` as {label: (spec, weight)}; a member set to null is left out."""
    members = plain(cfg.get("members", None))
    example = "e.g. dataset.members={a:{name:omniglot},b:{name:imagefolder,root:my_images}}"
    if not isinstance(members, dict):
        raise ConfigError(
            f"dataset.members={members!r}: give the data sets as a mapping of labels to "
            f"configs, {example}."
        )
    specs: dict[str, tuple[dict[str, Any], float]] = {}
    for label, spec in members.items():
        where = f"dataset.members.{label}"
        check_label(str(label), where)
        if spec is None:
            continue
        spec = {"name": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{where}={spec!r}: give a data set's name or its config with a name, {example}."
            )
        spec = dict(spec)
        weight = spec.pop("weight", 1)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ConfigError(
                f"{where}.weight={weight!r}: set it to a number >= 0 (the member's share of the "
                "training episodes is weight / sum of the weights; 0: tested on only)."
            )
        specs[str(label)] = (spec, float(weight))
    if not specs:
        raise ConfigError(f"dataset.members is empty: give at least one data set, {example}.")
    if not any(weight > 0 for _, weight in specs.values()):
        raise ConfigError(
            "every dataset.members.<label>.weight is 0, so no member is trained on: give at "
            "least one a weight > 0."
        )
    return specs


def multi_sources(cfg: Any, cross_domain: bool, rules: VariableRules | None) -> dict[str, Any]:
    """Train, val and test (``Domains``, or None when testing elsewhere) sources of a
    ``dataset=multi`` config, and the channels of its images."""
    channels = check_channels(cfg.get("channels", 3))
    specs = member_specs(cfg)
    weights = {label: weight for label, (_, weight) in specs.items()}
    configs = {label: domain_config(spec, f"dataset.members.{label}", cfg)
               for label, (spec, _) in specs.items()}  # fmt: skip
    augments = {label: augmentation(config) for label, config in configs.items()}
    trains, vals, tests = {}, {}, Domains()
    for label, config in configs.items():
        required = ("train",) if weights[label] > 0 else ()
        loaded = load_domain(config, label, required, rules)
        converted = {
            split: with_channels(source, loaded.channels, channels)
            for split, source in loaded.sources.items()
        }
        if weights[label] > 0:
            trains[label] = augments[label](converted["train"])
            vals[label] = converted["val"]
        if converted["test"] is not None:
            tests[label] = converted["test"]
    train = mixture(trains, weights)
    val = mixture(vals, weights)
    log.info(
        "dataset=multi: training on %s; validating on %s; testing on %s",
        ", ".join(f"{label} ({weights[label]:g})" for label in trains),
        ", ".join(label for label, source in vals.items() if source is not None) or "-",
        "dataset.test" if cross_domain else ", ".join(tests) or "-",
    )
    if not cross_domain:
        if val is None:
            raise ConfigError(
                "no member that trains (weight > 0) has validation classes: give one a "
                "validation split (e.g. split_ratios with a validation share)."
            )
        if not tests:
            raise ConfigError(
                "no member has test classes: give one a test split (a member only tested on: "
                "weight 0 and split_ratios [0, 0, 1]), or test elsewhere with dataset.test."
            )
    return {"train": train, "val": val, "test": tests or None, "channels": channels}
