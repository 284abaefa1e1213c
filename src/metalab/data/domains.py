"""Data sets inside a data set's config: the members of ``dataset=multi`` and the test
domains of ``dataset.test`` (cross-domain evaluation).

A domain is written as a ``conf/dataset`` option's name (``cub``) or as that option's keys
with some changed (``{name: imagefolder, root: my_birds, split_ratios: [0, 0, 1]}``); it is
that yaml file with the keys given, so a researcher writes only what differs. The image size
and the episode sizes (``image_size``, ``ways``, ``shots``, ``queries`` and their ``test_``
forms) are not a domain's own: they are the outer data set's, so that every domain's images
share one shape and every episode one protocol; a domain that sets them is refused. Images of
another number of channels are converted (grey to RGB by repeating the channel, RGB to grey
by ITU-R 601 luma, as torchvision's ``rgb_to_grayscale``).

``dataset.test``: train on the data set, validate and test on another (one or several,
``dataset.test={a: cub, b: {name: imagefolder, root: x}}``). Each test domain is tested on its
own and reported under its label (``results.json``: ``test/<label>/<metric>``; the first
``test/<metric>`` holds all domains' tasks together). Validation follows the test domains:
their validation splits if any has classes (one chosen uniformly per episode), else the
training data set's own validation split (a domain with ``split_ratios=[0, 0, 1]`` is tested
only). The training data set's test split is not used, so it may be empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError

from metalab.data.episodes import ClassPool, TaskSource
from metalab.data.ragged import PARTS, episode_source
from metalab.data.tasks import Task
from metalab.data.variable import VariableEpisodes, VariableRules, varies
from metalab.errors import ConfigError
from metalab.paths import config_dir

# Keys a domain takes from the outer data set (one image shape, one episode protocol).
SHARED_KEYS = (
    "image_size", "ways", "shots", "queries", "test_ways", "test_shots", "test_queries",
)  # fmt: skip
NOT_DOMAINS = ("multi", "sinusoid")  # not a set of image classes
SAMPLERS = ("fixed", "variable")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


class Domains(dict):
    """Test sources by domain label ({label: TaskSource}), each tested and reported alone."""


# --- the config of a domain ----------------------------------------------------------------


def dataset_options() -> list[str]:
    """The conf/dataset options a domain may name."""
    found = (Path(config_dir()) / "dataset").glob("*.yaml")
    return sorted(p.stem for p in found if p.stem not in NOT_DOMAINS)


def plain(value: Any) -> Any:
    """An OmegaConf node as plain Python (resolved); anything else as it is."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def domain_config(spec: Any, where: str, outer: Any) -> DictConfig:
    """conf/dataset/<name>.yaml with the keys of ``spec`` (a name, or a mapping with ``name``)
    and the shared keys of ``outer``; ``where`` names the spec in messages."""
    spec = plain(spec)
    if isinstance(spec, str):
        spec = {"name": spec}
    options = dataset_options()
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(
            f"{where}={spec!r}: name a data set ({', '.join(options)}) or give its config with "
            f"a name, e.g. {{name: imagefolder, root: my_images}}."
        )
    name = spec["name"]
    if name not in options:
        why = "is not an image data set" if name in NOT_DOMAINS else "is not a data set"
        raise ConfigError(f"{where}.name={name!r} {why}: choose one of {', '.join(options)}.")
    shared = sorted(set(spec) & set(SHARED_KEYS))
    if shared:
        raise ConfigError(
            f"{where}.{shared[0]}={spec[shared[0]]!r}: every domain takes its image size and "
            f"episode sizes from dataset.{shared[0]}; remove it from {where} (set "
            f"dataset.{shared[0]} instead)."
        )
    if spec.get("test") is not None:
        raise ConfigError(f"{where}.test: a domain has no test domains of its own; remove it.")
    base = OmegaConf.load(Path(config_dir()) / "dataset" / f"{name}.yaml")
    OmegaConf.set_struct(base, True)
    try:
        config = OmegaConf.merge(base, spec)
    except ConfigKeyError:
        unknown = sorted(set(spec) - set(base))
        raise ConfigError(
            f"{where}.{unknown[0]} is not a setting of dataset={name}: choose among "
            f"{', '.join(k for k in base if k not in (*SHARED_KEYS, 'name', 'test'))}."
        ) from None
    with open_dict(config):
        for key in SHARED_KEYS:
            config[key] = outer[key]
    return config


def target_specs(value: Any) -> dict[str, Any]:
    """``dataset.test`` as {label: spec}: a name (label = the name), one config with a
    ``name``, a list of those (labels = the names), or a mapping of labels to those."""
    value = plain(value)
    example = "e.g. dataset.test=cub or dataset.test={name:imagefolder,root:my_images}"
    if isinstance(value, str) or (isinstance(value, dict) and "name" in value):
        items: list[Any] | None = [value]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = None
        labelled = {str(label): spec for label, spec in value.items()}
    else:
        raise ConfigError(f"dataset.test={value!r}: name the data set(s) to test on, {example}.")
    if items is not None:
        labelled = {}
        for spec in items:
            label = spec if isinstance(spec, str) else None
            if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                label = spec["name"]
            if label is None:
                raise ConfigError(
                    f"dataset.test: {spec!r} is not a data set: give a name or a config with a "
                    f"name, {example}."
                )
            if label in labelled:
                raise ConfigError(
                    f"dataset.test names {label} twice: label each, e.g. "
                    f"dataset.test={{a:{{name:{label},...}},b:{{name:{label},...}}}}."
                )
            labelled[label] = spec
    if not labelled:
        raise ConfigError(f"dataset.test={value!r}: name the data set(s) to test on, {example}.")
    for label in labelled:
        check_label(label, "dataset.test")
    return labelled


def check_label(label: str, where: str) -> str:
    """A domain label becomes part of metric names (test/<label>/acc): one plain word."""
    if not label or "/" in label or label != label.strip():
        raise ConfigError(
            f"{where}: the label {label!r} cannot name a domain (its results are "
            "test/<label>/<metric>): use a word without '/' or spaces around it."
        )
    return label


def check_sampler(cfg: Any) -> tuple[str, VariableRules | None]:
    """``dataset.sampler`` (fixed: N-way K-shot; variable: Meta-Dataset's) and its rules."""
    sampler = cfg.get("sampler", "fixed")
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"dataset.sampler={sampler!r}: choose fixed (N-way K-shot episodes) or variable "
            "(Meta-Dataset's variable-way variable-shot episodes)."
        )
    if sampler == "fixed":
        return sampler, None
    return sampler, VariableRules.from_config(cfg.get("variable", None))


def check_variable(cfg: Any) -> None:
    """Variable-way episodes need a method without a fixed head, and one episode per
    meta-batch and device (their shapes differ, so they are never stacked). Whole config."""
    sampler, _ = check_sampler(cfg.dataset)
    if sampler != "variable":
        return
    from metalab.algorithms import ALGORITHMS, has_fixed_head

    name = cfg.algorithm.name
    if has_fixed_head(name):
        headless = ", ".join(sorted(n for n, c in ALGORITHMS.items() if not c.fixed_head))
        raise ConfigError(
            f"dataset.sampler=variable draws episodes of varying ways, but algorithm={name} "
            f"learns a fixed {cfg.dataset.ways}-way output layer: use a method without one "
            f"({headless}), or dataset.sampler=fixed."
        )
    trainer = cfg.get("trainer", None)
    ddp = trainer is not None and "ddp" in str(trainer.get("strategy", ""))
    devices = int(trainer.devices) if ddp and isinstance(trainer.get("devices"), int) else 1
    meta_batch = int(cfg.algorithm.meta_batch)
    if meta_batch != devices:
        raise ConfigError(
            f"algorithm.meta_batch={meta_batch}: dataset.sampler=variable draws episodes of "
            "different shapes, which are not stacked into one batch, so each device trains on "
            f"one episode a step: set algorithm.meta_batch={devices}."
        )


def domain_protocol(cfg: Any) -> dict[str, Any]:
    """What the protocol record (``assembly.protocol``) says beyond N-way K-shot: variable
    episodes, a multi-source data set's members and weights, the cross-domain test domains."""
    record: dict[str, Any] = {}
    sampler, _ = check_sampler(cfg)
    if sampler == "variable":
        record.update(ways="variable", shots="variable", queries="variable", sampler=sampler)
    if cfg.name == "multi":
        from metalab.data.multi import member_specs

        record["members"] = {label: weight for label, (_, weight) in member_specs(cfg).items()}
    if cfg.get("test", None) is not None:
        record["test_on"] = ", ".join(target_specs(cfg.test))
    return record


# --- loading a domain ----------------------------------------------------------------------


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """[..., C, H, W] with C = 1 or 3 as ``channels`` channels (grey repeated, or RGB luma)."""
    have = images.shape[-3]
    if have == channels:
        return images
    if have == 1:
        return images.expand(*images.shape[:-3], channels, *images.shape[-2:]).contiguous()
    if have == 3 and channels == 1:
        weights = images.new_tensor(LUMA).view(3, 1, 1)
        return (images * weights).sum(dim=-3, keepdim=True)
    raise ConfigError(
        f"images of {have} channels cannot be converted to {channels}: set dataset.channels to "
        f"{have}."
    )


class ConvertChannels:
    """A TaskSource: the wrapped source's tasks with images of ``channels`` channels."""

    def __init__(self, source: TaskSource, channels: int) -> None:
        self.source, self.channels = source, channels

    def sample(self, generator: torch.Generator) -> Task:
        task = self.source.sample(generator)
        return Task(
            convert_channels(task.support_x, self.channels),
            task.support_y,
            convert_channels(task.query_x, self.channels),
            task.query_y,
        )


def with_channels(source: TaskSource | None, have: int, want: int) -> TaskSource | None:
    if source is None or have == want:
        return source
    if have not in (1, 3) or want not in (1, 3):
        raise ConfigError(
            f"images of {have} channels cannot be converted to {want}: set dataset.channels to "
            f"{have}."
        )
    return ConvertChannels(source, want)


@dataclass
class Loaded:
    """One domain's episode sources by split (None: the split has no classes)."""

    label: str
    sources: dict[str, TaskSource | None]
    channels: int


def pool_image_shape(pools: Mapping[str, ClassPool]) -> tuple[int, int, int]:
    """(channels, height, width) of the images of a load's first non-empty pool."""
    for pool in pools.values():
        if pool.num_classes:
            return tuple(pool.examples(0, torch.tensor([0])).shape[1:])  # type: ignore[return-value]
    raise ConfigError("a data set with no classes in any split cannot be used.")


def split_source(
    pool: ClassPool, cfg: Any, split: str, rules: VariableRules | None, label: str
) -> TaskSource | None:
    """The episodes of one split (None when it has no classes): N-way K-shot, training
    sizes for train and test sizes else, or Meta-Dataset's when ``rules`` are given."""
    if pool.num_classes == 0:
        return None
    if rules is not None:
        return VariableEpisodes(pool, rules, split, label)
    if split == "train":
        shape = (int(cfg.ways), int(cfg.shots), int(cfg.queries))
    else:
        shape = (int(cfg.test_ways), int(cfg.test_shots), int(cfg.test_queries))
    return episode_source(pool, *shape, split)


def load_domain(
    cfg: Any, label: str, required: tuple[str, ...], rules: VariableRules | None
) -> Loaded:
    """Load the data set ``cfg`` (a full dataset config) and build the episodes of its splits;
    the splits in ``required`` must fit their episodes (checked before decoding where the
    reader can), the others may be empty."""
    from metalab.data.datamodule import load_pools  # the readers; imports this module lazily

    config = OmegaConf.create(plain(cfg))
    config.optional_splits = [split for split in PARTS if split not in required]
    if rules is not None:  # the reader's own check: at least min_ways classes of 2 images
        for prefix in ("", "test_"):
            config[f"{prefix}ways"] = rules.min_ways
            config[f"{prefix}shots"] = config[f"{prefix}queries"] = 1
    pools = load_pools(config)
    channels, height, width = pool_image_shape(pools)
    size = int(cfg.image_size)
    if (height, width) != (size, size):
        raise ConfigError(
            f"the {label} images are {height}x{width}, not the {size}x{size} of "
            f"dataset.image_size: the reader of dataset={cfg.name} did not resize them; set "
            f"dataset.image_size={height} if it always gives that size."
        )
    sources = {split: split_source(pools[split], cfg, split, rules, label) for split in PARTS}
    for split in required:
        if sources[split] is None:
            raise ConfigError(
                f"the {split} split of {label} has no classes, but it is needed: give it "
                "classes (dataset.split_ratios, split files or folders)."
            )
    return Loaded(label, sources, int(channels))


# --- sources for training, validation and each test domain ---------------------------------


class MultiSource:
    """A TaskSource: each episode from one of ``sources``, chosen with probability
    weight / sum of weights by the episode's own generator (one uniform draw, before the
    chosen source's draws), so the choice is as seeded and resumable as the episode."""

    def __init__(self, sources: Mapping[str, TaskSource], weights: Mapping[str, float]) -> None:
        self.labels = list(sources)
        self.sources = [sources[label] for label in self.labels]
        total = float(sum(weights[label] for label in self.labels))
        shares = torch.tensor(
            [weights[label] / total for label in self.labels], dtype=torch.float64
        )
        self.cumulative = shares.cumsum(0)
        self.cumulative[-1] = 1.0  # no rounding gap above the last

    @property
    def variable_shapes(self) -> bool:
        return any(varies(source) for source in self.sources)

    def choose(self, generator: torch.Generator) -> int:
        """The index (into ``labels``) of the source of the episode ``generator`` draws."""
        draw = torch.rand(1, generator=generator, dtype=torch.float64)
        return int(
            torch.searchsorted(self.cumulative, draw, right=True).clamp(max=len(self.labels) - 1)
        )

    def sample(self, generator: torch.Generator) -> Task:
        return self.sources[self.choose(generator)].sample(generator)


def mixture(
    sources: Mapping[str, TaskSource | None], weights: Mapping[str, float] | None = None
) -> TaskSource | None:
    """One source (or None) from several: those present, chosen by ``weights`` (uniform when
    None); a single one is itself."""
    present = {label: s for label, s in sources.items() if s is not None}
    if not present:
        return None
    if len(present) == 1:
        return next(iter(present.values()))
    return MultiSource(present, weights or dict.fromkeys(present, 1.0))


def training_domain(cfg: Any, cross_domain: bool, rules: VariableRules | None) -> dict[str, Any]:
    """The sources of a single (not multi) training data set, its test split unused when
    testing on other domains."""
    from metalab.data.augment import augmentation

    augment = augmentation(cfg)  # refused before any image is decoded
    required = ("train",) if cross_domain else PARTS
    loaded = load_domain(cfg, str(cfg.name), required, rules)
    return {
        "train": augment(loaded.sources["train"]),
        "val": loaded.sources["val"],
        "test": loaded.sources["test"],
        "channels": loaded.channels,
    }


def domain_sources(cfg: Any) -> dict[str, Any]:
    """Train, val and test sources of ``dataset=multi``, of a data set with
    ``dataset.sampler=variable`` and of one with ``dataset.test`` (cross-domain)."""
    from metalab.data.multi import multi_sources

    _, rules = check_sampler(cfg)
    targets = plain(cfg.get("test", None))
    specs = target_specs(targets) if targets is not None else {}
    single = isinstance(targets, str) or (isinstance(targets, dict) and "name" in targets)
    configs = {
        label: domain_config(spec, "dataset.test" if single else f"dataset.test.{label}", cfg)
        for label, spec in specs.items()
    }  # every spec checked before loading anything
    if cfg.name == "multi":
        sources = multi_sources(cfg, bool(configs), rules)
    else:
        sources = training_domain(cfg, bool(configs), rules)
    channels = sources.pop("channels")
    if not configs:
        return sources
    loaded = {
        label: load_domain(config, label, ("test",), rules) for label, config in configs.items()
    }
    val = mixture(
        {
            label: with_channels(d.sources["val"], d.channels, channels)
            for label, d in loaded.items()
        }
    )
    if val is None:
        val = sources["val"]
    if val is None:
        raise ConfigError(
            "no validation classes: neither the dataset.test domain(s) nor the training data "
            "set have a validation split with classes; give one of them some (e.g. "
            "split_ratios with a validation share)."
        )
    tests = Domains(
        {
            label: with_channels(d.sources["test"], d.channels, channels)
            for label, d in loaded.items()
        }
    )
    return {"train": sources["train"], "val": val, "test": tests}
