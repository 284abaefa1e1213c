"""Checks that run before any time is spent: on the command line, then on the composed config.

``check_overrides`` reads the overrides before Hydra composes anything, so a mistyped key or
group option gets one sentence (with the closest valid name) instead of Hydra's stack of
messages, and no run directory is created. ``check_config`` refuses values that cannot work
before data is decoded or a step is trained.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig

from metalab.algorithms import ALGORITHMS, build_algorithm, has_fixed_head
from metalab.assembly import check_device, check_head, check_positive
from metalab.data.augment import augmentation
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop
from metalab.losses import TASK_KINDS
from metalab.models import build_model
from metalab.paths import config_dir
from metalab.schema import EVAL, TRAIN, check_memory, check_override_value, check_values

# Keys every algorithm config has that the data/module read, not the algorithm class.
SHARED_ALGORITHM_KEYS = frozenset({"name", "meta_batch"})
# Omniglot's fixed facts: drawings per character, and characters per split part
# (train, val, test); each rotation of a character is a class of its own.
OMNIGLOT_DRAWINGS = 20
OMNIGLOT_CHARACTERS = {
    "vinyals": (1028, 172, 423),
    "finn": (1100, 100, 423),
    "lake": (864, 100, 659),
}


# --- the command line ---------------------------------------------------------------------


def config_groups(root: Path | None = None) -> dict[str, list[str]]:
    """Each config group (a folder of conf/) and its options (the yaml files in it)."""
    root = Path(root or config_dir())
    return {
        folder.name: sorted(p.stem for p in folder.glob("*.yaml"))
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }


def _closest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {match[0]}? " if match else ""


def _values(override) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [str(override.get_value_element_as_str())]


def _typed_values(override) -> list[Any]:
    """The values of an override as Hydra will type them (a sweep's each); [] if unknown."""
    try:
        if override.is_sweep_override():
            return list(override.sweep_iterator())
        return [override.value()]
    except Exception:  # noqa: BLE001 - glob or interval sweeps: checked once composed
        return []


def setting_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config (inner nodes too), for suggestions."""
    for key, value in cfg.items_ex(resolve=False):
        full = f"{prefix}{key}"
        yield full
        if isinstance(value, DictConfig):
            yield from setting_keys(value, f"{full}.")


def check_overrides(overrides: list[str], config_name: str = "train") -> None:
    """Refuse an unknown group option or key on the command line, naming the closest one.

    Leaves anything it cannot judge (syntax errors, ``+key=`` additions, ``hydra.*``) to
    Hydra, whose own message then follows.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # a syntax error: Hydra's message shows where it is
    groups = config_groups()
    chosen: list[str] = []
    settings = []
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_delete() or key.startswith("hydra"):
            continue
        if override.package is not None:
            continue
        if key in groups:
            for value in _values(override):
                if value not in groups[key] and value != "null":
                    raise ConfigError(
                        f"{key}={value} is not a known {key}: {_closest(value, groups[key])}"
                        f"choose one of {', '.join(groups[key])}."
                    )
            chosen.append(f"{key}={_values(override)[0]}")
        else:
            settings.append(key)
            for value in _typed_values(override):  # each value of a sweep, before launching
                check_override_value(key, value, TRAIN if config_name == "train" else EVAL)
    if not settings:
        return
    try:
        with initialize_config_dir(config_dir(), version_base="1.3"):
            cfg = compose(config_name, overrides=chosen)
    except HydraException:
        return
    known = list(setting_keys(cfg))
    for key in settings:
        if key not in known:
            raise ConfigError(
                f"{key} is not a metalab setting: {_closest(key, known)}"
                f"`metalab-{'train' if config_name == 'train' else 'eval'} --cfg job` "
                "lists every setting (add a new one with +key=value)."
            )


# --- the composed config ------------------------------------------------------------------


def accepted_algorithm_keys(cls: type) -> set[str]:
    """The config keys an algorithm class accepts: its ``config_keys`` if it declares them,
    otherwise the keyword arguments of its constructor (following ``**kwargs`` to parents)."""
    declared = getattr(cls, "config_keys", None)
    if declared is not None:
        return set(declared)
    keys: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        keys |= {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return keys - {"self"}


def check_algorithm_keys(cfg: DictConfig) -> None:
    """A setting the chosen algorithm has no notion of (``first_order`` for an algorithm that
    is never second order) is refused when set, instead of being silently ignored."""
    name = cfg.algorithm.name
    cls = ALGORITHMS.get(name)
    if cls is None:
        return  # build_algorithm names the valid ones
    accepted = accepted_algorithm_keys(cls) | SHARED_ALGORITHM_KEYS
    for key, value in cfg.algorithm.items():
        if key in accepted or value in (None, False):
            continue
        having = sorted(n for n, c in ALGORITHMS.items() if key in accepted_algorithm_keys(c))
        fix = f"choose an algorithm that has it ({', '.join(having)})" if having else "drop it"
        raise ConfigError(
            f"algorithm={name} has no notion of algorithm.{key} (set to {value}): remove the "
            f"override, or {fix}."
        )


def check_learning_rates(cfg: DictConfig) -> None:
    """Learning rates and inner step counts must be positive (zero silently trains nothing);
    schedule lengths must not be negative."""
    values = {"optimizer.lr": cfg.optimizer.lr}
    for key, value in cfg.algorithm.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[f"algorithm.{key}"] = value
    for key, value in values.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf.endswith("lr") and not value > 0:
            raise ConfigError(
                f"{key}={value}: a learning rate must be positive (try {_default_lr(leaf)})."
            )
        # inner steps adapt (0 trains nothing); schedule lengths such as MAML++'s
        # first_order_steps or msl_anneal_steps may be 0 (the trick off)
        minimum = 1 if leaf.endswith("inner_steps") else 0
        if leaf.endswith("steps") and not value >= minimum:
            unit = "1 step" if minimum == 1 else f"{minimum} steps"
            raise ConfigError(f"{key}={value}: set it to at least {unit}.")


def check_scheduler(cfg: DictConfig) -> None:
    """scheduler=step needs its period; refused here rather than after the data is loaded."""
    opt = cfg.optimizer
    if opt.get("scheduler") == "step" and opt.get("step_size") is None:
        raise ConfigError(
            "optimizer.scheduler=step multiplies the outer lr by optimizer.gamma every "
            "optimizer.step_size outer steps, but optimizer.step_size is null: set it to an "
            "integer >= 1 (ProtoNets: 2000)."
        )


def _default_lr(leaf: str) -> str:
    return "0.001" if leaf == "lr" else "0.01 for sinusoid, 0.4 for Omniglot"


def check_episode_sizes(cfg: DictConfig) -> None:
    """Ways and shots + queries that the data set's splits cannot supply, before decoding."""
    dataset = cfg.dataset
    if dataset.name != "omniglot":
        return
    counts = OMNIGLOT_CHARACTERS.get(str(dataset.split))
    rotations = len(dataset.rotations) if isinstance(dataset.rotations, ListConfig) else 1
    phases = [("train", dataset.ways, dataset.shots, dataset.queries, "dataset.ways")]
    phases += [
        (part, dataset.test_ways, dataset.test_shots, dataset.test_queries, "dataset.test_ways")
        for part in ("val", "test")
    ]
    for part, ways, shots, queries, ways_key in phases:
        if counts is not None:
            classes = counts[("train", "val", "test").index(part)] * max(rotations, 1)
            if ways > classes:
                raise ConfigError(
                    f"{ways_key}={ways} but the {dataset.split} {part} split has only {classes} "
                    f"classes: set {ways_key} to at most {classes}."
                )
        if shots + queries > OMNIGLOT_DRAWINGS:
            prefix = "dataset." if part == "train" else "dataset.test_"
            raise ConfigError(
                f"{prefix}shots + {prefix}queries = {shots} + {queries} = {shots + queries} but "
                f"each Omniglot character has only {OMNIGLOT_DRAWINGS} drawings: lower them so "
                f"that they sum to at most {OMNIGLOT_DRAWINGS}."
            )


def check_augmentation(cfg: DictConfig) -> None:
    """dataset.augment and its settings (crop_padding, affine.*), before any image is decoded."""
    augmentation(cfg.dataset)


def check_gpu(cfg: DictConfig) -> None:
    check_device(cfg)
    if cfg.trainer.accelerator in ("gpu", "cuda") and int(cfg.trainer.devices) > max(
        torch.cuda.device_count(), 1
    ):
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices} but only {torch.cuda.device_count()} GPU(s) "
            "are visible: lower trainer.devices."
        )


def check_devices(cfg: DictConfig) -> None:
    """Under DDP each rank runs meta_batch / devices tasks: refuse before any rank starts."""
    if str(cfg.trainer.get("strategy", "auto")) != "ddp":
        return
    devices, meta_batch = cfg.trainer.devices, int(cfg.algorithm.meta_batch)
    if isinstance(devices, int) and meta_batch % devices:
        raise ConfigError(
            f"algorithm.meta_batch={meta_batch} cannot be split evenly over {devices} devices: "
            f"choose a multiple of {devices} (each device then runs meta_batch / {devices} "
            "tasks per step), or change trainer.devices."
        )


GRAYSCALE = ("omniglot",)


def example_shape(cfg: DictConfig) -> tuple[int, ...]:
    """One example's shape, from the config alone (the data is not read yet)."""
    if cfg.dataset.task != "classification":
        return (1,)
    size = int(cfg.dataset.image_size)
    return (1 if cfg.dataset.name in GRAYSCALE else 3, size, size)


def parameter_count(cfg: DictConfig, shape: tuple[int, ...], ways: int, head: bool) -> int | None:
    """The model's parameters, counted on the meta device (nothing is allocated, so a model
    too large for the machine is measured instead of built); None if it cannot be built."""
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, shape, ways, head=head)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - the real build below reports what is wrong
        return None
    return sum(p.numel() for p in model.parameters())


def check_algorithm_settings(cfg: DictConfig) -> None:
    """Let the algorithm's constructor refuse its settings now, on the configured model.

    The model is built on the shape the data set will give (cheap: no data is read), so
    checks that need it (ANIL's head, MAML++'s batch norm) hold too.
    """
    shape = example_shape(cfg)
    ways = int(cfg.dataset.ways) if cfg.dataset.task == "classification" else 1
    head = has_fixed_head(cfg.algorithm.name)  # metric methods: the model as they get it
    check_memory(cfg, math.prod(shape), parameter_count(cfg, shape, ways, head))
    try:
        kind = TASK_KINDS[cfg.dataset.task]
        model = build_model(cfg.model, shape, ways, head=head)
        build_algorithm(cfg.algorithm, InnerLoop(model, kind))
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - anything else is checked when the real run builds it
        return


def check_config(cfg: Any) -> None:
    """Every check that needs only the config, cheapest first: types and ranges of every
    value (``metalab.schema``) before anything does arithmetic with them."""
    check_values(cfg)
    check_positive(cfg)
    check_learning_rates(cfg)
    check_scheduler(cfg)
    check_algorithm_keys(cfg)
    check_algorithm_settings(cfg)
    check_head(cfg)
    check_episode_sizes(cfg)
    check_augmentation(cfg)
    check_gpu(cfg)
    check_devices(cfg)


def refuse_ddp_in_local_sweeps(cfg: DictConfig, multirun: bool) -> None:
    """Lightning starts DDP processes by re-running the command line, which in a sweep would
    start the whole sweep again; under SLURM, srun starts them instead."""
    ddp = str(cfg.trainer.get("strategy", "auto")) == "ddp" and int(cfg.trainer.devices) > 1
    if multirun and ddp and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError(
            f"trainer.strategy=ddp with trainer.devices={cfg.trainer.devices} cannot run inside a "
            "local sweep (-m): Lightning would start each rank by re-running the whole sweep. "
            "Run each configuration without -m, or sweep with hydra/launcher=slurm, where srun "
            "starts the ranks (set hydra.launcher.tasks_per_node to trainer.devices)."
        )


def checked_entry(hydra_main: Callable[[], Any], config_name: str) -> None:
    """A console script's ``main``: check the command line's keys, group options and values
    (one ``metalab: error:`` line, nothing composed or written), then run Hydra."""
    try:
        args = get_args_parser().parse_args(sys.argv[1:])
        check_overrides(list(args.overrides), args.config_name or config_name)
    except ConfigError as error:
        raise SystemExit(f"metalab: error: {error}") from None
    except SystemExit:
        pass  # argparse's own message and exit are Hydra's to give
    hydra_main()
