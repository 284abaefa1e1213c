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


class TrainingClock(pl.Callback):
    """Logs ``time/cpu_seconds`` (this process, all threads) and ``time/wall_seconds`` of
    training at every validation, so that a run's validation curve can be read against the
    time it cost (time to accuracy in ``metalab-compare``). Both travel in checkpoints: a
    resumed run goes on counting from where the interrupted one stopped."""

    def __init__(self) -> None:
        self.cpu_before = 0.0
        self.wall_before = 0.0
        self.start: tuple[float, float] | None = None

    def seconds(self) -> tuple[float, float]:
        """(CPU, wall) seconds of training so far, earlier attempts included."""
        if self.start is None:
            return self.cpu_before, self.wall_before
        cpu, wall = time.process_time() - self.start[0], time.perf_counter() - self.start[1]
        return self.cpu_before + cpu, self.wall_before + wall

    def state_dict(self) -> dict:
        cpu, wall = self.seconds()
        return {"cpu_seconds": cpu, "wall_seconds": wall}

    def load_state_dict(self, state_dict: dict) -> None:
        self.cpu_before = float(state_dict.get("cpu_seconds", 0.0))
        self.wall_before = float(state_dict.get("wall_seconds", 0.0))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = (time.process_time(), time.perf_counter())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.start is None:
            return
        cpu, wall = self.seconds()
        pl_module.log("time/cpu_seconds", cpu)
        pl_module.log("time/wall_seconds", wall)
