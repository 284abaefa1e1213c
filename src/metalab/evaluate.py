"""``metalab-eval``: test a checkpoint on fixed episodes, with the protocol overridable.

The checkpoint carries the config it was trained with; test-time ways, shots, queries, inner
steps and learning rate can be changed from the command line, and the result goes to a new
``results.json`` in the evaluation's own directory (the training run is left untouched).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import metalab
from metalab.assembly import build_data, build_module, check_head, protocol
from metalab.errors import ConfigError, MetalabError
from metalab.paths import config_dir
from metalab.report import print_test_summary
from metalab.results import git_commit, write_json

log = logging.getLogger("metalab")


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint as data only (``weights_only=True``: no code runs from the file)."""
    ckpt_file = Path(path).expanduser()
    if not ckpt_file.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: pass the path of a .ckpt file.")
    try:
        return torch.load(ckpt_file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same answer
        raise ConfigError(
            f"ckpt_path={path} is not a readable metalab checkpoint ({error.__class__.__name__}): "
            "pass a checkpoint written by metalab-train."
        ) from error


def training_config(ckpt: dict, overrides: DictConfig) -> DictConfig:
    """The training run's config with the test-time protocol overrides applied."""
    try:
        cfg = OmegaConf.create(ckpt["hyper_parameters"]["cfg"])
    except KeyError:
        raise ConfigError(
            "this checkpoint holds no metalab config: pass a checkpoint written by metalab-train."
        ) from None
    dataset, algorithm = cfg.dataset, cfg.algorithm
    for key, value in {
        "test_ways": overrides.ways,
        "test_shots": overrides.shots,
        "test_queries": overrides.queries,
        "root": overrides.data_root,
    }.items():
        if value is not None:
            dataset[key] = value
    if overrides.inner_steps is not None:
        algorithm.eval_inner_steps = overrides.inner_steps
    if overrides.inner_lr is not None:
        algorithm.eval_inner_lr = overrides.inner_lr
    if overrides.strategy is not None:
        cfg.strategy = overrides.strategy
    cfg.eval.tasks, cfg.eval.batch = overrides.tasks, overrides.batch
    return cfg


def evaluate(overrides: DictConfig) -> dict:
    if overrides.split not in ("test", "val"):
        raise ConfigError(f"split={overrides.split!r} is not known: choose test or val.")
    ckpt = load_checkpoint(overrides.ckpt_path)
    cfg = training_config(ckpt, overrides)
    check_head(cfg)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    module.load_state_dict(ckpt["state_dict"])
    loader = data.test_dataloader() if overrides.split == "test" else data.val_dataloader()
    if overrides.split == "val":
        data.val_episodes.num_tasks = int(overrides.tasks)
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    trainer.test(module, dataloaders=loader, verbose=False)
    summary = module.test_summary
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    results = {
        "status": "completed",
        "metrics": {f"{overrides.split}/{module.metric}": summary},
        "num_test_tasks": summary["tasks"],
        "protocol": protocol(cfg, overrides.split),
        "checkpoint": str(Path(overrides.ckpt_path).resolve()),
        "seed": cfg.seed,
        "strategy": module.strategy.name,
        "metalab_version": metalab.__version__,
        "git_commit": git_commit(),
        "run_dir": str(run_dir),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(run_dir / "results.json", results)
    print_test_summary(summary, results["protocol"], run_dir / "results.json")
    return results


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        results = evaluate(cfg)
        return next(iter(results["metrics"].values()))["mean"]
    except MetalabError as error:
        log.error("%s", error)
        raise SystemExit(f"metalab: error: {error}") from None


if __name__ == "__main__":
    main()
