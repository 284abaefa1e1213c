"""Algorithms by name: ``conf/algorithm/<name>.yaml`` selects ``metalab.algorithms.<name>``.

Every key of the algorithm's config except ``name`` and ``meta_batch`` (which the data
layer reads) is a keyword argument of its class; every class fulfils the contract of
``metalab.algorithms.base.Algorithm``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from metalab.algorithms.anil import ANIL
from metalab.algorithms.base import Algorithm
from metalab.algorithms.boil import BOIL
from metalab.algorithms.cavia import CAVIA
from metalab.algorithms.fomaml import FOMAML
from metalab.algorithms.imaml import IMAML
from metalab.algorithms.maml import MAML
from metalab.algorithms.maml_rl import MAMLRL
from metalab.algorithms.mamlpp import MAMLPlusPlus
from metalab.algorithms.matchingnet import MatchingNet
from metalab.algorithms.metalstm import MetaLSTM
from metalab.algorithms.metasgd import MetaSGD
from metalab.algorithms.protonet import ProtoNet
from metalab.algorithms.r2d2 import R2D2
from metalab.algorithms.reptile import Reptile
from metalab.algorithms.siamese import Siamese
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop
from metalab.paths import config_dir

ALGORITHMS: dict[str, type[Algorithm]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "anil": ANIL,
    "metasgd": MetaSGD,
    "mamlpp": MAMLPlusPlus,
    "reptile": Reptile,
    "metalstm": MetaLSTM,
    "matchingnet": MatchingNet,
    "siamese": Siamese,
    "protonet": ProtoNet,
    "cavia": CAVIA,
    "boil": BOIL,
    "imaml": IMAML,
    "r2d2": R2D2,
    "maml_rl": MAMLRL,
}
NOT_ARGUMENTS = ("name", "meta_batch")


def algorithm_class(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ConfigError(
            f"algorithm.name={name!r} is not known: choose one of {', '.join(sorted(ALGORITHMS))}."
        )
    return ALGORITHMS[name]


def algorithms_for(task: str) -> list[str]:
    """The algorithms that learn from tasks of kind ``task`` (``dataset.task``)."""
    return sorted(n for n, cls in ALGORITHMS.items() if task in cls.task_kinds)


def datasets_for(kinds: tuple[str, ...]) -> list[str]:
    """The data set options (``conf/dataset``) whose tasks are of one of ``kinds``."""
    folder = Path(config_dir()) / "dataset"
    return sorted(p.stem for p in folder.glob("*.yaml") if OmegaConf.load(p).get("task") in kinds)


def check_task_kind(name: str, task: str, dataset: str) -> None:
    """An algorithm meets a data set whose kind of task it can learn from, or is refused."""
    kinds = algorithm_class(name).task_kinds
    if task not in kinds:
        raise ConfigError(
            f"algorithm={name} cannot learn from dataset={dataset} ({task} tasks; it learns "
            f"from {' or '.join(kinds)} tasks): choose dataset="
            f"{'|'.join(datasets_for(kinds))}, or one of {', '.join(algorithms_for(task))} "
            f"for dataset={dataset}."
        )


def has_fixed_head(name: str) -> bool:
    """Whether the algorithm's model ends in a linear head with one output per training way
    (the MAML family, Meta-LSTM); metric methods (``fixed_head = False``) embed only."""
    return algorithm_class(name).fixed_head


def build_algorithm(cfg: Any, inner_loop: InnerLoop) -> Algorithm:
    name = cfg.name
    cls = algorithm_class(name)
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    kwargs = {k: v for k, v in plain.items() if k not in NOT_ARGUMENTS}
    accepted = _accepted(cls)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(
            f"algorithm={name} has no setting {', '.join(unknown)}: remove it, or choose one of "
            f"{', '.join(sorted(accepted))}."
        )
    return cls(inner_loop, **kwargs)


def _accepted(cls: type) -> set[str]:
    """Keyword arguments of ``cls`` and, through ``**kwargs``, of its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.startswith("torch"):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {
            p.name
            for p in params
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self",)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"inner_loop"}
