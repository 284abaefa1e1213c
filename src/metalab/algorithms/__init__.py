"""Algorithms by name: ``conf/algorithm/<name>.yaml`` selects ``metalab.algorithms.<name>``."""

from __future__ import annotations

from typing import Any

from metalab.algorithms.fomaml import FOMAML
from metalab.algorithms.maml import MAML
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop

ALGORITHMS = {"maml": MAML, "fomaml": FOMAML}


def build_algorithm(cfg: Any, inner_loop: InnerLoop):
    name = cfg.name
    if name not in ALGORITHMS:
        raise ConfigError(
            f"algorithm.name={name!r} is not known: choose one of {', '.join(sorted(ALGORITHMS))}."
        )
    return ALGORITHMS[name](
        inner_loop,
        inner_steps=int(cfg.inner_steps),
        inner_lr=float(cfg.inner_lr),
        eval_inner_steps=int(cfg.eval_inner_steps),
        eval_inner_lr=float(cfg.eval_inner_lr),
        first_order=bool(cfg.first_order),
    )
