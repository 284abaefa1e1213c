"""The Lightning ``Trainer`` of a run: devices and strategy, checkpoints (best, last,
interrupted; atomic and verified), the CPU-time budget, the training clock and the inner
gradient monitor, from ``conf/trainer/`` and ``numerics``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

from metalab.budget import CpuTimeBudget, TrainingClock
from metalab.checkpoints import AtomicCheckpointIO, InterruptCheckpoint
from metalab.errors import ConfigError
from metalab.numerics import InnerGradientMonitor

# Lightning warnings that do not apply here: episodes are sampled in-process from memory,
# the run directory always holds Hydra's files before the CSV logger starts, and the
# module's transfer_batch_to_device is the one meant to be used.
for pattern in (
    ".*does not have many workers.*",
    ".*IterableDataset.*__len__.*",
    ".*exists and is not empty.*",
    ".*overridden `transfer_batch_to_device`.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
):
    warnings.filterwarnings("ignore", message=pattern)


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
    latest = ModelCheckpoint(  # last.ckpt, what resume=auto continues from
        dirpath=run_dir / "checkpoints",
        filename="last",
        every_n_train_steps=int(every) if every else None,  # else at every validation
        enable_version_counter=False,
    )
    interrupt = InterruptCheckpoint(run_dir / "checkpoints")
    numerics = cfg.numerics
    inner_gradient = InnerGradientMonitor(
        int(numerics.inner_grad_every_n_steps), float(numerics.inner_grad_warn)
    )
    callbacks = [checkpoint, latest, interrupt, inner_gradient, TrainingClock()]
    if t.get("max_cpu_seconds"):
        callbacks.append(CpuTimeBudget(float(t.max_cpu_seconds)))
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
        num_sanity_val_steps=0,
        enable_model_summary=False,
        inference_mode=False,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the data module shards tasks itself, without padding
    )
    return trainer, checkpoint, interrupt
