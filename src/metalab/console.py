"""One quiet, readable console for a run.

Why: Lightning and PyTorch print banners, tips and warnings that do not apply to a metalab run
(a GPU/TPU banner on every CPU run, advertisements, deprecations inside Lightning), and log
lines written past a live progress bar end up glued onto it. This module keeps them off the
console; ``hydra.verbose=pytorch_lightning`` (Hydra's own switch; ``hydra.verbose=true`` for
everything) brings Lightning's lines back. It imports nothing heavy: Hydra's logging config
names its classes before any job starts (conf/hydra/job_logging/metalab.yaml).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

# Warnings that do not apply to a metalab run: episodes are sampled in-process from memory,
# the run directory always holds Hydra's files before the CSV logger starts, the module's
# transfer_batch_to_device is the one meant to be used, Lightning's own use of a torch
# API deprecated under it is not the user's to fix, and a step checkpoint
# (trainer.checkpoint_every_n_steps) holds the weights after the step on purpose: its step
# count includes that step, so a resumed run goes on from there (Lightning's warning and its
# 15-line example are about another convention).
IGNORED_WARNINGS = (
    ".*does not have many workers.*",
    ".*IterableDataset.*__len__.*",
    ".*exists and is not empty.*",
    ".*overridden `transfer_batch_to_device`.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*manual optimization and every_n_train_steps, but no pre-optimization state.*",
)
# Loggers whose info lines (GPU/TPU banner, tips, "Restoring states ...") stay off the console.
CHATTY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning")


def verbose(name: str) -> bool:
    """Whether ``hydra.verbose`` asks for this logger's lines."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return False
        verbose = HydraConfig.get().verbose
    except Exception:  # noqa: BLE001 - outside Hydra: stay quiet
        return False
    if isinstance(verbose, bool):
        return verbose
    names = [verbose] if isinstance(verbose, str) else list(verbose)
    return any(name == n or name.startswith(f"{n}.") or n in ("root", "") for n in names)


def quiet() -> None:
    """Call once a job starts (after Lightning is imported: it sets its logger to INFO on
    import, over Hydra's logging config)."""
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in CHATTY_LOGGERS:
        if not verbose(name):
            logging.getLogger(name).setLevel(logging.WARNING)


class LiveStreamHandler(logging.StreamHandler):
    """A console handler that writes to the *current* ``sys.stdout``. A live progress bar
    (rich's) redirects ``sys.stdout`` while it runs and prints what is written there above
    itself; a handler bound to the original stream at start-up would glue lines onto it."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # logging sets it in __init__; the property wins
        pass


class ConsoleFormatter(logging.Formatter):
    """``[metalab] message`` for information, ``[metalab] WARNING: message`` above it: the
    time stamps and levels stay in the run's log file."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        level = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        return f"[{record.name}] {level}{message}"
