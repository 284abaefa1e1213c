"""Turns a composed config into data, a module and the protocol record, for train and eval."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from metalab.data.datamodule import EpisodeDataModule, build_sources
from metalab.data.domains import check_variable, domain_protocol
from metalab.data.rl import observation_and_action_sizes
from metalab.module import MetaLearner

BATCH_NORM_MODE = {
    "batch": "batch statistics at training and test time (transductive at test, as MAML's code)",
    "none": "no normalisation",
}
NON_TRANSDUCTIVE = (
    "batch statistics; at test each query example is normalised together with the support "
    "set alone (non-transductive, as Reptile's code)"
)


def build_data(cfg: DictConfig) -> tuple[EpisodeDataModule, tuple[int, ...], int]:
    check_variable(cfg)  # before anything is decoded
    sources = build_sources(cfg.dataset)
    data = EpisodeDataModule(
        sources,
        meta_batch=int(cfg.algorithm.meta_batch),
        seed=int(cfg.seed),
        val_tasks=int(cfg.val.tasks),
        test_tasks=int(cfg.eval.tasks),
        eval_batch=int(cfg.eval.batch),
    )
    if cfg.dataset.task == "reinforcement":  # the policy maps observations to actions
        observation, action = observation_and_action_sizes(str(cfg.dataset.name))
        return data, (observation,), action
    example = sources["train"].sample(torch.Generator().manual_seed(0))
    in_shape = tuple(example.support_x.shape[1:])
    if cfg.dataset.task == "classification":
        out_features = int(cfg.dataset.ways)
    else:
        out_features = int(example.support_y.shape[-1])
    return data, in_shape, out_features


def build_module(cfg: DictConfig, in_shape: tuple[int, ...], out_features: int) -> MetaLearner:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return MetaLearner(plain, in_shape, out_features)


def protocol(cfg: DictConfig, split: str = "test") -> dict[str, Any]:
    """What a test number means: enough to reproduce it or to refuse comparing it."""
    dataset, algorithm = cfg.dataset, cfg.algorithm
    record: dict[str, Any] = {"dataset": dataset.name, "split": split}
    if dataset.task == "classification":
        record.update(
            data_split=dataset.split,
            ways=dataset.test_ways,
            shots=dataset.test_shots,
            queries=dataset.test_queries,
        )
        record.update(domain_protocol(dataset))  # variable episodes, the test domains
    elif dataset.task == "reinforcement":  # trajectories per adaptation step and per score
        record.update(
            trajectories=dataset.test_shots,
            scored_trajectories=dataset.test_queries,
            horizon=dataset.horizon,
        )
    else:
        record.update(shots=dataset.test_shots, queries=dataset.test_queries)
    # Metric methods have no inner steps; Meta-LSTM learns its rates (no inner_lr).
    record["inner_steps"] = algorithm.get("eval_inner_steps", 0)
    if algorithm.get("eval_inner_lr") is not None:
        record["inner_lr"] = algorithm.eval_inner_lr
    record.update(
        tasks=cfg.eval.tasks,
        batch_norm=BATCH_NORM_MODE.get(cfg.model.get("norm", "none"), cfg.model.get("norm")),
    )
    if algorithm.get("transductive") is False and cfg.model.get("norm") == "batch":
        record["batch_norm"] = NON_TRANSDUCTIVE
    return record
