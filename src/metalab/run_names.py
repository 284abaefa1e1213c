"""Names for run directories, sweep jobs and logger runs (W&B, MLflow), so that runs can be
told apart: each carries the experiment preset (else ``<algorithm>_<dataset>``) and, in a
sweep, only the keys the sweep varies (``0_maml_omniglot_5w1s,seed=1``); constant
overrides would otherwise fill every name of the sweep.

A job cannot see which of its overrides vary: Hydra composes each job from its own override
list. The ``SweepNames`` callback reads the sweep's command line (and
``hydra.sweeper.params``) once, in the process that starts the sweep, and hands the varying
keys to every job through ``hydra.job.env_set.METALAB_SWEPT`` (an override Hydra re-applies
to each job it composes, in any launcher's process). A re-run of the sweep (``resume=true``)
varies the same keys, so its jobs find the same directories; a job directory named the way
metalab named them before (``<n>_<override_dirname>``) is still found and reused.

Names are made one safe path component by ``job_dirname``: Hydra's override strings can hold
'/' (a path value would nest directories) and can grow past the 255-byte file-name limit of
common file systems, so a long name is cut and ends in a hash of the full string (it stays
unique). The OmegaConf resolvers ``metalab.dirname``, ``metalab.run_label``,
``metalab.job_subdir`` and ``metalab.eval_label`` are what conf/train.yaml and conf/eval.yaml
name their directories with. Only Hydra and OmegaConf are imported here: ``--help`` and
``--cfg`` stay fast.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

MAX_BYTES = 200  # of the name, leaving room below the 255-byte limit for the job number


def job_dirname(overrides: str, max_bytes: int = MAX_BYTES) -> str:
    """One safe path component for an override string such as ``algorithm=maml,seed=1``."""
    name = overrides.replace("/", "%2F").replace("\0", "") or "defaults"
    if name in (".", ".."):
        name = f"%2E{name[1:]}"
    if len(name.encode()) <= max_bytes:
        return name
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
    while len(name.encode()) > max_bytes - len(digest) - 1:
        name = name[:-1]
    return f"{name}~{digest}"


SWEPT = "METALAB_SWEPT"  # the hydra.job.env_set key naming the keys a sweep varies
# Settings that never change what a job computes stay out of names (besides Hydra's
# override_dirname exclude_keys): where and how it logs.
QUIET_KEYS = ("hydra", "logger")


def _parsed(overrides: Sequence[str]) -> list[Any]:
    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def swept_keys(
    task_overrides: Sequence[str], sweeper_params: Mapping[str, Any] | None
) -> list[str]:
    """The keys a sweep varies: sweeps on its command line (``seed=0,1,2``, ``range(3)``) and
    the sweeper's ``params`` (an Optuna search space, or the basic sweeper's), except those the
    command line fixes to one value."""
    parsed = _parsed(task_overrides)
    fixed = {o.key_or_group for o in parsed if not o.is_sweep_override()}
    keys = {o.key_or_group for o in parsed if o.is_sweep_override()}
    for key, value in (sweeper_params or {}).items():
        if key in fixed or key in keys:
            continue
        try:
            varies = _parsed([f"{key}={value}"])[0].is_sweep_override()
        except HydraException:
            varies = True  # a value the parser cannot read: naming the key is the safe side
        if varies:
            keys.add(str(key))
    return sorted(keys)


def _names_a_job(key: str, exclude: Collection[str]) -> bool:
    quiet = key.split(".")[0].split("/")[0] in QUIET_KEYS
    return not quiet and (key == "experiment" or key not in exclude)


def job_label(
    task_overrides: Sequence[str],
    swept: Collection[str] | None,
    exclude: Collection[str],
    experiment: str | None,
    run_name: str,
    with_overrides: bool = True,
) -> str:
    """``<base>,<key=value>,...``: the base is ``run_name`` when it is given on the command
    line, else the experiment preset, else ``run_name`` (``<algorithm>_<dataset>``); then the
    overrides that set this job apart: in a sweep (``swept`` given) those of the keys it
    varies, in a single run every override; never those the base already says, those of
    ``exclude`` or those of logging and Hydra (``QUIET_KEYS``)."""
    parsed = _parsed(task_overrides)
    given = {o.key_or_group for o in parsed}
    if "run_name" in given:
        base, covered = run_name, {"run_name"}
    elif experiment:
        base, covered = experiment, {"experiment"}
    else:  # run_name's default: <algorithm>_<dataset>
        base, covered = run_name, {"run_name", "algorithm", "dataset"}
    if not with_overrides:
        return base
    apart = sorted(
        str(o.input_line)
        for o in parsed
        if o.key_or_group not in covered
        and _names_a_job(o.key_or_group, exclude)
        and (swept is None or o.key_or_group in swept)
    )
    return ",".join([base, *apart])


def hydra_job_label(hydra: DictConfig, run_name: str, with_overrides: bool = True) -> str:
    """``job_label`` of a job from its ``hydra`` node (a composed config's, or
    ``HydraConfig.get()``) and its ``run_name``."""
    swept_text = hydra.job.env_set.get(SWEPT)
    swept = None if swept_text is None else [k for k in str(swept_text).split(",") if k]
    return job_label(
        list(hydra.overrides.task),
        swept,
        list(hydra.job.config.override_dirname.exclude_keys or []),
        hydra.runtime.choices.get("experiment"),
        run_name,
        with_overrides,
    )


def _root_label(root: DictConfig, with_overrides: bool = True) -> str:
    return hydra_job_label(root.hydra, str(root.get("run_name") or "run"), with_overrides)


def sweep_label(sweep_dir: str | Path, cwd: Path | None = None) -> str:
    """A sweep's name, from its directory: ``2026-11-22_10-00-00-000000`` for
    outputs/multiruns/<date>/<time>, ``hparams_search_sinusoid_maml``,
    ``reproduce_omniglot_5w1s_<date>_<time>``; the folder's name when it lies outside the
    working directory."""
    path = Path(sweep_dir)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to((cwd or Path.cwd()).resolve())
        except ValueError:
            return path.name
    parts = [p for p in path.parts if p not in ("", ".")]
    for prefix in ("outputs", "multiruns"):
        if len(parts) > 1 and parts[0] == prefix:
            parts = parts[1:]
    return "_".join(parts) or path.name


def _run_label(_root_: DictConfig) -> str:
    """A single run's directory: ``<time>_<experiment>`` or ``<time>_<algorithm>_<dataset>``
    (its overrides would make long paths; the time already keeps it apart)."""
    return job_dirname(_root_label(_root_, with_overrides=False))


def _job_subdir(_root_: DictConfig) -> str:
    """A sweep job's directory: ``<job number>_<label>``, or the one metalab named
    ``<job number>_<override_dirname>`` before, when a re-run finds only that one."""
    hydra = _root_.hydra
    name = f"{hydra.job.num}_{job_dirname(_root_label(_root_))}"
    legacy = f"{hydra.job.num}_{job_dirname(str(hydra.job.override_dirname))}"
    sweep_dir = Path(str(hydra.sweep.dir))
    if legacy != name and (sweep_dir / legacy).is_dir() and not (sweep_dir / name).exists():
        return legacy
    return name


TIMESTAMPED = re.compile(r"^(\d{2}-\d{2}-\d{2}(-\d+)?|\d+)_")


def _eval_label(_root_: DictConfig) -> str:
    """An evaluation's directory carries the name of the run it tests: its run directory's
    name without the time or job number (``maml_omniglot_5w1s,seed=1``), and the checkpoint
    when it is not best.ckpt."""
    ckpt = _root_.get("ckpt_path") if not OmegaConf.is_missing(_root_, "ckpt_path") else None
    if not ckpt:
        return "eval"
    path = Path(str(ckpt))
    if path.parent.name != "checkpoints" or not path.parent.parent.name:
        return job_dirname(path.stem)
    label = TIMESTAMPED.sub("", path.parent.parent.name) or path.parent.parent.name
    return job_dirname(label if path.stem == "best" else f"{label}_{path.stem}")


class SweepNames(Callback):
    """Hydra callback (conf/train.yaml): hands the keys a sweep varies to each of its jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        keys = swept_keys(list(config.hydra.overrides.task), config.hydra.sweeper.get("params"))
        keys = [k for k in keys if "'" not in k and "," not in k]
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{SWEPT}='{','.join(keys)}'")


def register_resolvers() -> None:
    """Idempotent: Hydra's worker processes import this module again."""
    resolvers = {
        "metalab.dirname": job_dirname,
        "metalab.run_label": _run_label,
        "metalab.job_subdir": _job_subdir,
        "metalab.eval_label": _eval_label,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()
