"""``metalab-train``: meta-train one configuration, test it, and write ``results.json``.

Compose with Hydra (``metalab-train algorithm=fomaml dataset=omniglot model=conv4`` or an
``experiment=`` preset), sweep with ``-m``. Returns the best validation metric, which is
what Hydra's sweepers optimise. Read top to bottom: check, resume, build, fit, test, write;
the concerns live in their own modules (``preflight``, ``resume``, ``trainer``, ``signals``,
``outcome``, ``results``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from metalab.assembly import build_data, build_module, protocol
from metalab.budget import TrainingClock
from metalab.console import quiet
from metalab.distributed import launched_rank
from metalab.loggers import build_loggers, summarise_wandb
from metalab.outcome import completed_value, run_job
from metalab.preflight import check_config, refuse_ddp_in_local_sweeps
from metalab.report import print_test_summary
from metalab.results import (
    completed_results,
    hardware,
    metrics_by_domain,
    pooled_summary,
    print_domains,
    run_each_domain,
    tested_weights,
    write_json,
)
from metalab.resume import prepare_resume
from metalab.run_status import COMPLETED, guard_run_dir, read_status, resume_mode
from metalab.signals import lightning_handles_signals
from metalab.trainer import make_trainer

log = logging.getLogger("metalab")


def sweep_group() -> str | None:
    """The sweep's folder name inside a Hydra multirun; None for one run (or outside Hydra,
    when ``train`` is called as a library function)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None


def train(cfg: DictConfig, run_dir: Path) -> float | None:
    quiet()
    if launched_rank() == 0:
        guard_run_dir(run_dir)
    check_config(cfg)
    refuse_ddp_in_local_sweeps(cfg, sweep_group() is not None)
    resume_from = prepare_resume(cfg, run_dir)
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
    keep_initial_weights(trainer, run_dir)
    train_cpu, train_wall = next(
        c for c in trainer.callbacks if isinstance(c, TrainingClock)
    ).seconds()
    log.info("execution strategy: %s", module.strategy.name)
    best = checkpoint.best_model_path
    test_started = (time.process_time(), time.perf_counter())
    with lightning_handles_signals(trainer, interrupt, run_dir):
        summaries = run_each_domain(  # once, or once per test domain (multi, dataset.test)
            data,
            module,
            lambda: trainer.test(
                module, datamodule=data, ckpt_path=best or None, verbose=False, weights_only=True
            ),
        )
    test_cpu = time.process_time() - test_started[0]
    test_wall = time.perf_counter() - test_started[1]
    summary = pooled_summary(summaries)
    val_best = None if checkpoint.best_model_score is None else float(checkpoint.best_model_score)
    if not trainer.is_global_zero:  # every rank holds the gathered metrics; rank 0 writes them
        return val_best
    results = completed_results(
        {**metrics_by_domain(summaries), f"val/{metric}_best": val_best},
        summary,
        protocol(cfg),
        run_dir,
        resolved,
        tested_checkpoint=tested_weights(best, trainer.global_step),
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
    summarise_wandb(loggers, metric, summary, module.strategy.name)
    print_test_summary(summary, results["protocol"], run_dir / "results.json")
    print_domains(summaries)
    return val_best


def keep_initial_weights(trainer: pl.Trainer, run_dir: Path) -> None:
    """A run with no training step (``trainer.max_steps=0``: a random-initialisation baseline)
    still leaves ``checkpoints/last.ckpt``, so that metalab-eval can test its weights under
    another protocol as it tests a trained run's. Lightning writes checkpoints from training
    steps and validations only. The save is collective (a barrier), so rank 0 decides for all:
    a rank that looked after rank 0 had written would skip it and leave rank 0 waiting."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if trainer.strategy.broadcast(trainer.global_step == 0 and not last.exists(), src=0):
        trainer.save_checkpoint(last)


def job(cfg: DictConfig) -> float | None:
    """One job. Whatever happens, its results.json says how it ended; in a sweep a failed job
    returns NaN (a failed trial for sweepers) so the other jobs still run."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    resuming = resume_mode(cfg.get("resume", "auto")) != "false"
    if multirun and resuming and read_status(run_dir) == COMPLETED:
        log.info("resume: %s already completed; skipped", run_dir.name)
        return completed_value(run_dir)
    if launched_rank() > 0:  # a DDP process Lightning started: rank 0 records the outcome
        return train(cfg, run_dir)
    return run_job(cfg, run_dir, multirun, lambda: train(cfg, run_dir))


def main() -> None:
    """``python -m metalab.train``: the same as the console script ``metalab-train``."""
    from metalab.cli import train as console

    console()


if __name__ == "__main__":
    main()
