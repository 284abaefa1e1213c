"""``trainer.max_cpu_seconds``: stop training after this much CPU time of the process.

A wall-clock budget (``trainer.max_time``) measures the machine's other work as much as the
run's; CPU seconds (all threads of this process, ``time.process_time``) make budgets
comparable between runs that share a machine, as in the accuracy tables of the README.
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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        used = time.process_time() - (self.start or 0.0)
        if used >= self.seconds and not trainer.should_stop:
            log.info(
                "trainer.max_cpu_seconds=%g reached at step %d: training stops",
                self.seconds,
                trainer.global_step,
            )
            trainer.should_stop = True
