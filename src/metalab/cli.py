"""Console scripts ``metalab-train`` and ``metalab-eval``, and the checks on their command line.

Why a module of its own: ``--help``, ``--cfg job`` and shell completion must answer without
importing torch or Lightning (seconds of start-up), so this module imports only Hydra and
OmegaConf, and the job itself (``metalab.train``/``metalab.evaluate``) is imported when a job
runs. ``check_overrides`` reads the overrides before Hydra composes anything, so a mistyped
key or group option gets one sentence (with the closest valid name) instead of Hydra's stack
of messages, and no run directory is created.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

import metalab.run_names  # noqa: F401 - registers the resolver hydra.sweep.subdir uses
from metalab.errors import ConfigError
from metalab.paths import config_dir
from metalab.schema import EVAL, TRAIN, check_override_value


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


def _options(value: str) -> list[str]:
    """The options a group value chooses: ``[csv,wandb]`` (Hydra's list of options, e.g.
    loggers combined) chooses each of them."""
    if value.startswith("[") and value.endswith("]"):
        return [v.strip() for v in value[1:-1].split(",") if v.strip()]
    return [value]


def _typed_values(override) -> list[Any]:
    """The values of an override as Hydra will type them (a sweep's each); [] if unknown."""
    try:
        if override.is_sweep_override():
            return list(override.sweep_iterator())
        return [override.value()]
    except Exception:  # noqa: BLE001 - glob or interval sweeps: checked once composed
        return []


def setting_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config (inner nodes too), for suggestions; Hydra's own node
    (``hydra.*`` overrides are Hydra's to judge) is left out."""
    for key, value in cfg.items_ex(resolve=False):
        if not prefix and key == "hydra":
            continue
        full = f"{prefix}{key}"
        yield full
        if isinstance(value, DictConfig):
            yield from setting_keys(value, f"{full}.")


def check_overrides(overrides: list[str], config_name: str = "train") -> None:
    """Refuse an unknown group option or key on the command line, naming the closest one.

    Leaves anything it cannot judge (syntax errors, ``+key=`` / ``++key=`` additions,
    ``hydra.*``) to Hydra, whose own message then follows.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # a syntax error: Hydra's message shows where it is
    groups = config_groups()
    chosen: list[str] = []  # group options of every job: Hydra applies the keys after them
    swept: list[tuple[str, list[str]]] = []  # group options a sweep varies: chosen later
    settings = []
    for override in parsed:
        key = override.key_or_group
        adds = override.is_add() or override.is_force_add()
        if adds or override.is_delete() or key.startswith("hydra"):
            continue
        if override.package is not None:
            continue
        if key in groups:
            for value in _values(override):
                for option in _options(value):
                    if option not in groups[key] and option != "null":
                        raise ConfigError(
                            f"{key}={option} is not a known {key}: "
                            f"{_closest(option, groups[key])}"
                            f"choose one of {', '.join(groups[key])}."
                        )
            if override.is_sweep_override():
                swept.append((key, _values(override)))
            else:
                chosen.append(f"{key}={_values(override)[0]}")
        else:
            settings.append(key)
            for value in _typed_values(override):  # each value of a sweep, before launching
                check_override_value(key, value, TRAIN if config_name == "train" else EVAL)
    if not settings:
        return
    try:
        with initialize_config_dir(config_dir(), version_base="1.3"):
            cfg = compose(config_name, overrides=chosen, return_hydra_config=True)
            known = set(setting_keys(cfg))
            later: dict[str, str] = {}  # key -> the swept option that has it
            if any(key not in known for key in settings):
                for choice in [*swept_choices(swept), *preset_sweep(cfg, groups, chosen)]:
                    extra = compose(config_name, overrides=[*chosen, choice])
                    for k in setting_keys(extra):
                        if k not in known:
                            later.setdefault(k, choice)
    except HydraException:
        return
    tool = f"metalab-{'train' if config_name == 'train' else 'eval'}"
    for key in settings:
        if key in known:
            continue
        if key in later:
            raise ConfigError(
                f"{key} is a setting of {later[key]}, which the sweep chooses per job, after "
                f"Hydra has applied the command line's keys to the defaults: write "
                f"++{key}=<value> (add or override) and every job that has it gets the value."
            )
        raise ConfigError(
            f"{key} is not a metalab setting: {_closest(key, [*known, *later])}"
            f"`{tool} --cfg job` lists every setting (add a new one with +key=value)."
        )


def swept_choices(swept: list[tuple[str, list[str]]]) -> list[str]:
    """``group=option`` for each option of the command line's group sweeps."""
    return [f"{group}={option}" for group, values in swept for option in values]


def preset_sweep(cfg: DictConfig, groups: dict[str, list[str]], chosen: list[str]) -> list[str]:
    """``group=option`` for each option a preset's own sweep varies (``reproduce=navigation2d``
    sweeps ``experiment=...`` in ``hydra.sweeper.params``)."""
    sweeper = OmegaConf.select(cfg, "hydra.sweeper")
    params = OmegaConf.to_container(sweeper).get("params") if sweeper is not None else None
    return [
        f"{group}={option.strip()}"
        for group, values in (params or {}).items()
        if group in groups and not any(c.startswith(f"{group}=") for c in chosen)
        for option in str(values).split(",")
    ]


def _answers_without_a_job(args: Any) -> bool:
    """``--help``, ``--hydra-help`` and shell completion: Hydra answers, no key is checked
    (completion passes a partial command line such as ``install=bash`` or ``algorithm=ma``)."""
    return bool(args.help or args.hydra_help or args.shell_completion)


def checked_entry(hydra_main: Callable[[], Any], config_name: str) -> None:
    """A console script's ``main``: check the command line's keys, group options and values
    (one ``metalab: error:`` line, nothing composed or written), then run Hydra."""
    try:
        args = get_args_parser().parse_args(sys.argv[1:])
        if not _answers_without_a_job(args):
            check_overrides(list(args.overrides), args.config_name or config_name)
    except ConfigError as error:
        raise SystemExit(f"metalab: error: {error}") from None
    except SystemExit:
        pass  # argparse's own message and exit are Hydra's to give
    hydra_main()


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def _train_job(cfg: DictConfig) -> float | None:
    from metalab.train import job  # torch and Lightning: only once a job runs

    return job(cfg)


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
def _eval_job(cfg: DictConfig) -> float:
    from metalab.evaluate import job

    return job(cfg)


def train() -> None:
    """``metalab-train``."""
    checked_entry(_train_job, "train")


def evaluate() -> None:
    """``metalab-eval``."""
    checked_entry(_eval_job, "eval")
