"""``metalab-train``: meta-train one configuration, test it, and write ``results.json``.

Compose with Hydra (``metalab-train algorithm=fomaml dataset=omniglot model=conv4`` or an
``experiment=`` preset), sweep with ``-m``. Returns the best validation metric, which is
what Hydra's sweepers optimise.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

import metalab
from metalab.assembly import (
    build_data,
    build_module,
    check_device,
    check_head,
    check_positive,
    protocol,
)
from metalab.errors import ConfigError, MetalabError
from metalab.loggers import build_loggers, finish_wandb
from metalab.paths import config_dir
from metalab.report import print_test_summary
from metalab.results import git_commit, write_json

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
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None


def make_trainer(cfg: DictConfig, run_dir: Path, loggers: list, monitor: str, mode: str):
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_last=True,
        auto_insert_metric_name=False,
    )
    t = cfg.trainer
    trainer = pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.precision,
        max_steps=int(t.max_steps),
        max_time=t.get("max_time"),
        val_check_interval=min(int(t.val_check_interval), int(t.max_steps)),
        check_val_every_n_epoch=None,
        log_every_n_steps=int(t.log_every_n_steps),
        enable_progress_bar=bool(t.enable_progress_bar),
        logger=loggers or False,
        callbacks=[checkpoint],
        default_root_dir=str(run_dir),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        inference_mode=False,
    )
    return trainer, checkpoint


def train(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    guard_run_dir(run_dir)
    check_positive(cfg)
    check_head(cfg)
    check_device(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    metric = module.metric
    resolved = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.logger, run_dir, sweep_group(), resolved)
    trainer, checkpoint = make_trainer(
        cfg, run_dir, loggers, f"val/{metric}", "max" if module.kind.higher_is_better else "min"
    )
    started = time.time()
    trainer.fit(module, datamodule=data)
    train_seconds = time.time() - started
    log.info("execution strategy: %s", module.strategy.name)
    best = checkpoint.best_model_path
    trainer.test(module, datamodule=data, ckpt_path=best or None, verbose=False)
    summary = module.test_summary
    val_best = checkpoint.best_model_score
    results: dict[str, Any] = {
        "status": "completed",
        "metrics": {f"test/{metric}": summary, f"val/{metric}_best": _float(val_best)},
        "num_test_tasks": summary["tasks"],
        "protocol": protocol(cfg),
        "tested_checkpoint": Path(best).name if best else "final weights",
        "seed": int(cfg.seed),
        "strategy": module.strategy.name,
        "train": {"steps": trainer.global_step, "seconds": round(train_seconds, 1)},
        "metalab_version": metalab.__version__,
        "git_commit": git_commit(),
        "run_dir": str(run_dir),
        "config": resolved,
    }
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


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    failed = True
    try:
        value = train(cfg)
        failed = False
        return value
    except MetalabError as error:
        log.error("%s", error)
        raise SystemExit(f"metalab: error: {error}") from None
    finally:
        finish_wandb(failed)


if __name__ == "__main__":
    main()
