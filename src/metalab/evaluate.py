"""``metalab-eval``: test a checkpoint on fixed episodes, with the protocol overridable.

The checkpoint carries the config it was trained with; test-time ways, shots, queries, inner
steps and learning rate (and Reptile's transductive switch, iMAML's proximal strength) can be
changed from the command line, and the result goes to a new
``results.json`` in the evaluation's own directory (the training run is left untouched).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from metalab.assembly import build_data, build_module, protocol
from metalab.checkpoints import checkpoint_config, load_checkpoint, load_weights
from metalab.console import quiet
from metalab.errors import ConfigError, MetalabError
from metalab.module import load_algorithm_state
from metalab.preflight import check_episode_sizes, check_head
from metalab.report import print_test_summary
from metalab.results import (
    completed_results,
    metrics_by_domain,
    pooled_summary,
    print_domains,
    run_each_domain,
    write_json,
)

log = logging.getLogger("metalab")


def check_ckpt_path(cfg: DictConfig) -> None:
    """``ckpt_path`` names a checkpoint file that exists; a folder gets the files it holds."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError(
            "metalab-eval needs the checkpoint to test: add "
            "ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt."
        )
    path = Path(str(cfg.ckpt_path))
    if path.is_dir():
        found = sorted(path.glob("*.ckpt")) or sorted(path.glob("checkpoints/*.ckpt"))
        choose = ", ".join(str(p) for p in found[:4]) if found else "none is inside it"
        raise ConfigError(
            f"ckpt_path={path} is a folder, not a checkpoint file: pass one .ckpt file ({choose})."
        )
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path} does not exist: pass the path of a .ckpt file (a run keeps "
            "them in <run>/checkpoints/)."
        )


# metalab-eval key -> (the algorithm's setting, what an algorithm without it lacks, type)
ALGORITHM_SWITCHES = {
    "transductive": ("transductive", "transductive switch (Reptile has)", bool),
    "lam": ("eval_lam", "test-time proximal term (iMAML has)", float),
}


def training_config(ckpt: dict, overrides: DictConfig) -> DictConfig:
    """The training run's config with the test-time protocol overrides applied."""
    cfg = OmegaConf.create(checkpoint_config(ckpt, overrides.ckpt_path))
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
    for key, (setting, has, convert) in ALGORITHM_SWITCHES.items():
        value = overrides.get(key)
        if value is None:
            continue
        if setting not in algorithm:
            raise ConfigError(
                f"{key}={value}: algorithm={algorithm.name} has no {has}; leave it out."
            )
        algorithm[setting] = convert(value)
    if overrides.strategy is not None:
        cfg.strategy = overrides.strategy
    test = overrides.get("dataset", {}).get("test")
    if test is not None:  # cross-domain: test on other data set(s) (metalab.data.domains)
        dataset.test = test
    cfg.eval.tasks, cfg.eval.batch = overrides.eval.tasks, overrides.eval.batch
    cfg.eval.curve_points = overrides.eval.get("curve_points")
    return cfg


def evaluate(overrides: DictConfig) -> dict:
    quiet()
    if overrides.split not in ("test", "val"):
        raise ConfigError(f"split={overrides.split!r} is not known: choose test or val.")
    ckpt = load_checkpoint(overrides.ckpt_path)
    cfg = training_config(ckpt, overrides)
    check_head(cfg)
    check_episode_sizes(cfg)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    load_weights(module, ckpt, overrides.ckpt_path)
    load_algorithm_state(module.algorithm, ckpt.get("metalab"))  # Reptile's carried Adam
    if overrides.split == "val":
        data.val_episodes.num_tasks = int(overrides.eval.tasks)
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )

    def test() -> None:
        loader = data.test_dataloader() if overrides.split == "test" else data.val_dataloader()
        trainer.test(module, dataloaders=loader, verbose=False)

    if overrides.split == "val":  # one validation source, whatever the test domains
        test()
        summaries = {"": module.test_summary}
    else:  # once, or once per test domain (dataset=multi, dataset.test)
        summaries = run_each_domain(data, module, test)
    summary = pooled_summary(summaries)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    results = completed_results(
        metrics_by_domain(summaries, overrides.split),
        summary,
        protocol(cfg, overrides.split),
        run_dir,
        OmegaConf.to_container(cfg, resolve=True),
        checkpoint=str(Path(overrides.ckpt_path).resolve()),
        seed=cfg.seed,
        strategy=module.strategy.name,
    )
    write_json(run_dir / "results.json", results)
    print_test_summary(summary, results["protocol"], run_dir / "results.json")
    print_domains(summaries)
    return results


def job(cfg: DictConfig) -> float:
    try:
        results = evaluate(cfg)
        return next(iter(results["metrics"].values()))["mean"]
    except MetalabError as error:
        log.error("%s", error)
        raise SystemExit(f"metalab: error: {error}") from None


def main() -> None:
    """``python -m metalab.evaluate``: the same as the console script ``metalab-eval``."""
    from metalab.cli import evaluate as console

    console()


if __name__ == "__main__":
    main()
