"""``trainer.max_cpu_seconds``: stop training after this much CPU time of the process.

A wall-clock budget (``trainer.max_time``) measures the machine's other work as much as the
run's; CPU seconds (all threads of this process, ``time.process_time``) make budgets
comparable between runs that share a machine, as in the accuracy tables of the README.
The CPU time spent so far travels in every checkpoint, so a resumed run spends what is left
of the budget, not a fresh one.
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

from metalab.errors import ConfigError

log = logging.getLogger("metalab")


class CpuTimeBudget(pl.Callback):
    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ConfigError(f"trainer.max_cpu_seconds={seconds}: it must be > 0, or null.")
        self.seconds = float(seconds)
        self.start: float | None = None
        self.spent_before = 0.0  # by the attempts this run resumed from

    def used(self) -> float:
        """CPU seconds of training so far, earlier attempts included."""
        since_start = 0.0 if self.start is None else time.process_time() - self.start
        return self.spent_before + since_start

    def state_dict(self) -> dict:
        return {"used_cpu_seconds": self.used()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.spent_before = float(state_dict.get("used_cpu_seconds", 0.0))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if self.used() >= self.seconds and not trainer.should_stop:
            log.info(
                "trainer.max_cpu_seconds=%g reached at step %d: training stops",
                self.seconds,
                trainer.global_step,
            )
            trainer.should_stop = True
