"""Checks on the composed config that run before any time is spent.

``check_config`` refuses values that cannot work before data is decoded or a step is
trained (the command line's own checks, before anything is composed, are in ``metalab.cli``).
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from metalab.algorithms import ALGORITHMS, build_algorithm, check_task_kind, has_fixed_head
from metalab.data.augment import augmentation
from metalab.data.domains import check_variable
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop
from metalab.loggers import require
from metalab.losses import TASK_KINDS
from metalab.models import build_model
from metalab.schema import check_memory, check_values
from metalab.trainer import check_trainer_keys

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


def check_device(cfg: DictConfig) -> None:
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer={cfg.trainer.accelerator} but no CUDA GPU is visible to torch "
            f"{torch.__version__}: use trainer=cpu, or install a CUDA build of torch."
        )


def check_head(cfg: DictConfig) -> None:
    """A linear head has one output per training way; it cannot score a different number.
    Metric methods (ProtoNets, Matching, Siamese) have no head and may test on other ways."""
    dataset = cfg.dataset
    if not has_fixed_head(cfg.algorithm.name):
        return
    if dataset.task == "classification" and dataset.test_ways != dataset.ways:
        raise ConfigError(
            f"dataset.test_ways={dataset.test_ways} differs from dataset.ways={dataset.ways}, but "
            f"algorithm={cfg.algorithm.name} learns a {dataset.ways}-way output layer: "
            "evaluate with the training ways, or train with dataset.ways equal to test_ways."
        )


def check_logger_packages(cfg: Any) -> None:
    """logger=tensorboard or mlflow without its package: refused before anything is written
    (the loggers are built after the data)."""
    for option in ("tensorboard", "mlflow"):
        if cfg.get("logger") is not None and cfg.logger.get(option) is not None:
            require(option)


# Configs this process has already checked: the run guard checks a run's config before Hydra
# writes anything, and train() (which may also be called as a library function) gets it again.
_CHECKED: set[str] = set()


def _fingerprint(cfg: Any) -> str:
    keys = [k for k in cfg if k != "hydra"]  # the guard sees Hydra's node, the job does not
    return OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, keys))


def check_config(cfg: Any) -> None:
    """Every check that needs only the config, cheapest first: types and ranges of every
    value (``metalab.schema``) before anything does arithmetic with them. Once per config:
    a config checked before in this process is not checked again."""
    fingerprint = _fingerprint(cfg)
    if fingerprint in _CHECKED:
        return
    _check_config(cfg)
    _CHECKED.add(fingerprint)


def _check_config(cfg: Any) -> None:
    check_values(cfg)
    check_task_kind(str(cfg.algorithm.name), str(cfg.dataset.task), str(cfg.dataset.name))
    check_learning_rates(cfg)
    check_scheduler(cfg)
    check_trainer_keys(cfg.trainer)
    check_logger_packages(cfg)
    check_algorithm_keys(cfg)
    check_variable(cfg)
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
