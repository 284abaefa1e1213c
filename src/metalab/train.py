"""``metalab-train``: meta-train one configuration, test it, and write ``results.json``.

Compose with Hydra (``metalab-train algorithm=fomaml dataset=omniglot model=conv4`` or an
``experiment=`` preset), sweep with ``-m``. Returns the best validation metric, which is
what Hydra's sweepers optimise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

from metalab.assembly import build_data, build_module, protocol
from metalab.budget import CpuTimeBudget, TrainingClock
from metalab.checkpoints import (
    AtomicCheckpointIO,
    InterruptCheckpoint,
    check_same_setup,
    checkpoint_config,
    copy_checkpoint,
    load_checkpoint,
)
from metalab.distributed import launched_rank
from metalab.errors import ConfigError, MetalabError, RunInterrupted
from metalab.loggers import build_loggers, finish_wandb
from metalab.numerics import InnerGradientMonitor
from metalab.paths import config_dir
from metalab.preflight import check_config, check_overrides
from metalab.report import print_test_summary
from metalab.results import completed_results, hardware, write_json
from metalab.run_status import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    read_status,
    resumable_checkpoint,
    resume_mode,
    write_outcome,
)
from metalab.signals import (
    exit_on_next_sigint,
    lightning_handles_signals,
    sigterm_outside_lightning,
)

log = logging.getLogger("metalab")

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


def guard_run_dir(run_dir: Path) -> None:
    """A run directory that already holds a run's results is never written into again."""
    for name in ("results.json", "checkpoints"):
        if (run_dir / name).exists():
            raise ConfigError(
                f"{run_dir} already holds a run ({name} exists) and metalab never overwrites one: "
                "choose a new hydra.run.dir or leave it at its default."
            )


def sweep_group() -> str | None:
    """The sweep's folder name inside a Hydra multirun; None for one run (or outside Hydra,
    when ``train`` is called as a library function)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None


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


def interrupted_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the newest earlier attempt if it was interrupted or killed; None when
    that attempt failed (its failure stands: it runs again from scratch) or kept none."""
    attempts = sorted(
        run_dir.glob("attempt-*"), key=lambda p: int(p.name.split("-")[1]), reverse=True
    )
    for attempt in attempts:
        found = resumable_checkpoint(attempt)
        if found is not None:
            return found
        if (attempt / "checkpoints").is_dir():
            return None
    return None


def carry_checkpoints_over(resume_from: Path, run_dir: Path) -> None:
    """Copies of an earlier attempt's best/last checkpoints where the restored checkpoint
    callback expects them (its best may stay the best); the originals stay in attempt-N/."""
    source = resume_from.parent
    if source == run_dir / "checkpoints" or not source.is_dir():
        return
    target = run_dir / "checkpoints"
    target.mkdir(parents=True, exist_ok=True)
    for kept in source.glob("*.ckpt"):
        if kept.name != "interrupted.ckpt":
            copy_checkpoint(kept, target / kept.name)


RESUME_FROM_ENV = "METALAB_RESUME_FROM"  # rank 0's choice, inherited by the DDP processes


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Where this run continues from, by ``resume`` (see ``metalab.run_status``)."""
    if launched_rank() > 0:
        return Path(os.environ[RESUME_FROM_ENV]) if os.environ.get(RESUME_FROM_ENV) else None
    mode = resume_mode(cfg.get("resume", "auto"))
    if mode == "path":
        return Path(str(cfg.resume))
    return interrupted_checkpoint(run_dir) if mode in ("true", "auto") else None


def refuse_ddp_in_local_sweeps(cfg: DictConfig, multirun: bool) -> None:
    """Lightning starts DDP processes by re-running the command line, which in a sweep would
    start the whole sweep again; under SLURM, srun starts them instead."""
    ddp = str(cfg.trainer.get("strategy", "auto")) == "ddp" and int(cfg.trainer.devices) > 1
    if multirun and ddp and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError(
            f"trainer.strategy=ddp with trainer.devices={cfg.trainer.devices} cannot run inside a "
            "local sweep (-m): Lightning would start each rank by re-running the whole sweep. "
            "Run each configuration without -m, or sweep with hydra/launcher=slurm, where srun "
            "starts the ranks (set hydra.launcher.tasks_per_node to trainer.devices)."
        )


def train(cfg: DictConfig, run_dir: Path) -> float | None:
    rank_zero = launched_rank() == 0
    if rank_zero:
        guard_run_dir(run_dir)
    check_config(cfg)
    refuse_ddp_in_local_sweeps(cfg, sweep_group() is not None)
    resume_from = checkpoint_to_resume(cfg, run_dir)
    if resume_from is not None:
        check_same_setup(
            checkpoint_config(load_checkpoint(resume_from), resume_from), cfg, resume_from
        )
        log.info("resume=%s: continuing from %s", cfg.get("resume", "auto"), resume_from)
        if rank_zero:
            carry_checkpoints_over(resume_from, run_dir)
    os.environ[RESUME_FROM_ENV] = str(resume_from or "")
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    metric = module.metric
    resolved = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.logger, run_dir, sweep_group(), resolved)
    trainer, checkpoint, interrupt = make_trainer(
        cfg, run_dir, loggers, f"val/{metric}", "max" if module.kind.higher_is_better else "min"
    )
    started = time.time()
    with lightning_handles_signals(trainer, interrupt, run_dir):
        trainer.fit(
            module,
            datamodule=data,
            ckpt_path=str(resume_from) if resume_from else None,
            weights_only=True,
        )
    train_seconds = time.time() - started
    clock = next(c for c in trainer.callbacks if isinstance(c, TrainingClock))
    train_cpu, train_wall = clock.seconds()
    log.info("execution strategy: %s", module.strategy.name)
    best = checkpoint.best_model_path
    test_started = (time.process_time(), time.perf_counter())
    with lightning_handles_signals(trainer, interrupt, run_dir):
        trainer.test(
            module, datamodule=data, ckpt_path=best or None, verbose=False, weights_only=True
        )
    test_cpu = time.process_time() - test_started[0]
    test_wall = time.perf_counter() - test_started[1]
    summary = module.test_summary
    val_best = checkpoint.best_model_score
    if not trainer.is_global_zero:  # every rank holds the gathered metrics; rank 0 writes them
        return _float(val_best)
    results = completed_results(
        {f"test/{metric}": summary, f"val/{metric}_best": _float(val_best)},
        summary,
        protocol(cfg),
        run_dir,
        resolved,
        tested_checkpoint=Path(best).name if best else "final weights",
        seed=int(cfg.seed),
        strategy=module.strategy.name,
        train={
            "steps": trainer.global_step,
            "seconds": round(train_seconds, 1),  # this attempt, wall clock
            "cpu_seconds": round(train_cpu, 1),  # all attempts: see budget.TrainingClock
            "wall_seconds": round(train_wall, 1),
        },
        test={"cpu_seconds": round(test_cpu, 1), "wall_seconds": round(test_wall, 1)},
        hardware=hardware(cfg),
    )
    if resume_from is not None:
        results["resumed_from"] = str(resume_from)
    write_json(run_dir / "results.json", results)
    for logger in loggers:
        if hasattr(logger, "experiment") and logger.__class__.__name__ == "WandbLogger":
            logger.experiment.summary.update(
                {
                    f"test/{metric}": summary["mean"],
                    f"test/{metric}_ci95": summary["ci95"],
                    "strategy": module.strategy.name,
                }
            )
    print_test_summary(summary, results["protocol"], run_dir / "results.json")
    return _float(val_best)


def _float(value) -> float | None:
    return None if value is None else float(value)


def _kept_checkpoints(run_dir: Path) -> list[str]:
    folder = run_dir / "checkpoints"
    return sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []


def _config(cfg: DictConfig) -> dict | str:
    """The resolved config for results.json; its text if it does not resolve (that may be
    why the job failed)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001
        return OmegaConf.to_yaml(cfg)


def _completed_value(run_dir: Path) -> float | None:
    """The validation metric a completed job returned, for sweepers, when it is skipped."""
    metrics = json.loads((run_dir / "results.json").read_text()).get("metrics", {})
    return next(
        (v for k, v in metrics.items() if k.startswith("val/") and k.endswith("_best")), None
    )


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job. Whatever happens, its results.json says how it ended; in a sweep a failed job
    returns NaN (a failed trial for sweepers) so the other jobs still run."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    resuming = resume_mode(cfg.get("resume", "auto")) != "false"
    if multirun and resuming and read_status(run_dir) == COMPLETED:
        log.info("resume: %s already completed; skipped", run_dir.name)
        return _completed_value(run_dir)
    if launched_rank() > 0:  # a DDP process Lightning started: rank 0 records the outcome
        return train(cfg, run_dir)
    failed = True
    previous = signal.signal(signal.SIGTERM, sigterm_outside_lightning)
    try:
        value = train(cfg, run_dir)
        failed = False
        return value
    except (RunInterrupted, KeyboardInterrupt) as stop:
        exit_on_next_sigint()
        if not isinstance(stop, RunInterrupted):
            stop = RunInterrupted("SIGINT")
        write_outcome(
            run_dir,
            INTERRUPTED,
            error=str(stop),
            signal=stop.signal,
            step=stop.step,
            checkpoint=stop.checkpoint,
            checkpoints=_kept_checkpoints(run_dir),
            config=_config(cfg),
        )
        print(f"metalab: {stop}", file=sys.stderr)
        raise SystemExit(128 + signal.Signals[stop.signal].value) from None
    except MetalabError as error:
        write_outcome(
            run_dir,
            FAILED,
            error=str(error),
            error_type=type(error).__name__,
            checkpoints=_kept_checkpoints(run_dir),
            config=_config(cfg),
        )
        log.error("%s", error)
        if multirun:
            return math.nan
        raise SystemExit(f"metalab: error: {error}") from None
    except Exception as error:
        write_outcome(
            run_dir,
            FAILED,
            error=f"{type(error).__name__}: {error}",
            error_type=type(error).__name__,
            checkpoints=_kept_checkpoints(run_dir),
            config=_config(cfg),
        )
        if multirun:
            log.exception("job %s failed", run_dir.name)
            return math.nan
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        finish_wandb(failed)


def main() -> None:
    """``metalab-train``: check the command line's keys and group options, then run Hydra."""
    try:
        args = get_args_parser().parse_args(sys.argv[1:])
        check_overrides(list(args.overrides), args.config_name or "train")
    except ConfigError as error:
        raise SystemExit(f"metalab: error: {error}") from None
    except SystemExit:
        pass  # argparse's own message and exit are Hydra's to give
    hydra_main()


if __name__ == "__main__":
    main()
