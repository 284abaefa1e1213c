"""The Lightning ``Trainer`` of a run: devices and strategy, checkpoints (best, last,
interrupted; atomic and verified), the CPU-time budget, the training clock and the inner
gradient monitor, from ``conf/trainer/`` and ``numerics``."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar
from pytorch_lightning.strategies import DDPStrategy

from metalab.budget import CpuTimeBudget, TrainingClock
from metalab.checkpoints import (
    AtomicCheckpointIO,
    ClockCheckpoint,
    InterruptCheckpoint,
    StepCheckpoint,
)
from metalab.errors import ConfigError
from metalab.numerics import InnerGradientMonitor

# trainer.* keys metalab reads itself (conf/trainer/); any other key is passed to Lightning's
# Trainer as it is (e.g. +trainer.profiler=simple, +trainer.gradient_clip_val=...), so a
# Lightning flag is never silently ignored.
METALAB_KEYS = frozenset(
    {
        "accelerator",
        "devices",
        "precision",
        "max_steps",
        "max_time",
        "max_cpu_seconds",
        "val_check_interval",
        "log_every_n_steps",
        "enable_progress_bar",
        "checkpoint_every_n_steps",
        "checkpoint_every_minutes",
        "strategy",
        "process_group_backend",
        "find_unused_parameters",
    }
)
# Trainer arguments metalab sets itself, and why a run cannot take another value.
OWNED = {
    "callbacks": "metalab's checkpoints, budget and clock are its callbacks",
    "logger": "choose loggers with logger=",
    "plugins": "metalab's atomic, verified checkpoint I/O is its plugin",
    "default_root_dir": "the run directory is hydra.run.dir",
    "use_distributed_sampler": "the data module shards tasks across ranks itself",
    "inference_mode": "test-time adaptation needs gradients",
    "check_val_every_n_epoch": "validation runs every trainer.val_check_interval outer steps",
}


def passed_through(t: DictConfig) -> dict[str, Any]:
    """The ``trainer.*`` keys that go to Lightning's Trainer unchanged."""
    plain = OmegaConf.to_container(t, resolve=True)
    assert isinstance(plain, dict)
    return {k: v for k, v in plain.items() if k not in METALAB_KEYS}


def check_trainer_keys(t: DictConfig) -> None:
    """Refuse a ``trainer.*`` key Lightning's Trainer does not take, or one metalab owns."""
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in passed_through(t):
        if key in OWNED:
            raise ConfigError(f"trainer.{key} is set by metalab itself ({OWNED[key]}): remove it.")
        if key not in accepted:
            match = difflib.get_close_matches(key, sorted(accepted | METALAB_KEYS), n=1)
            hint = f"did you mean trainer.{match[0]}? " if match else ""
            raise ConfigError(
                f"trainer.{key} is neither a metalab trainer setting nor an argument of "
                f"Lightning's Trainer: {hint}remove it (`metalab-train --cfg job` lists the "
                "trainer settings; any argument of pytorch_lightning.Trainer can be added with "
                "+trainer.<name>=<value>)."
            )


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, described in outer steps: a metalab run is one epoch of
    ``trainer.max_steps`` outer steps, which Lightning's description reads as "Epoch 0/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Outer steps':{len(self.validation_description)}}"


def make_strategy(t: DictConfig) -> str | DDPStrategy:
    """``trainer.strategy``: auto (one process) or ddp (one process per device)."""
    name = str(t.get("strategy", "auto"))
    if name == "auto":
        return "auto"
    if name != "ddp":
        raise ConfigError(
            f"trainer.strategy={name!r} is not known: choose auto (one process) or ddp "
            "(trainer=ddp for GPUs, trainer=ddp_cpu for CPU processes)."
        )
    return DDPStrategy(
        process_group_backend=t.get("process_group_backend"),
        find_unused_parameters=bool(t.get("find_unused_parameters", True)),
    )


def make_trainer(cfg: DictConfig, run_dir: Path, loggers: list, monitor: str, mode: str):
    t = cfg.trainer
    checkpoint = ModelCheckpoint(  # best.ckpt, by the validation metric
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        auto_insert_metric_name=False,
    )
    every = t.get("checkpoint_every_n_steps")
    latest = StepCheckpoint(  # last.ckpt, what resume=auto continues from
        dirpath=run_dir / "checkpoints",
        filename="last",
        every_n_train_steps=int(every) if every else None,  # else at every validation
        enable_version_counter=False,
    )
    checkpoints: list[Callback] = [checkpoint, latest]
    minutes = t.get("checkpoint_every_minutes")
    if minutes:
        checkpoints.append(ClockCheckpoint(run_dir / "checkpoints", float(minutes)))
    interrupt = InterruptCheckpoint(run_dir / "checkpoints")
    numerics = cfg.numerics
    inner_gradient = InnerGradientMonitor(
        int(numerics.inner_grad_every_n_steps), float(numerics.inner_grad_warn)
    )
    callbacks = [*checkpoints, interrupt, inner_gradient, TrainingClock()]
    if t.get("max_cpu_seconds"):
        callbacks.append(CpuTimeBudget(float(t.max_cpu_seconds)))
    if t.enable_progress_bar:
        callbacks.append(StepProgressBar())
    trainer = pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=make_strategy(t),
        precision=t.precision,
        max_steps=int(t.max_steps),
        max_time=t.get("max_time"),
        val_check_interval=min(int(t.val_check_interval), int(t.max_steps)),
        check_val_every_n_epoch=None,
        log_every_n_steps=int(t.log_every_n_steps),
        enable_progress_bar=bool(t.enable_progress_bar),
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        **({"num_sanity_val_steps": 0} if "num_sanity_val_steps" not in t else {}),
        **({"enable_model_summary": False} if "enable_model_summary" not in t else {}),
        inference_mode=False,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the data module shards tasks itself, without padding
        **passed_through(t),
    )
    return trainer, checkpoint, interrupt
