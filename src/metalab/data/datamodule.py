"""Lightning's view of the episodic data: an endless training stream, fixed val/test episodes."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Subset

from metalab.data.augment import augmentation
from metalab.data.domains import Domains, domain_sources
from metalab.data.episodes import (
    TEST_STREAM,
    VAL_STREAM,
    ClassPool,
    FixedEpisodes,
    TaskSource,
    TrainEpisodes,
)
from metalab.data.ragged import episode_source
from metalab.data.rl import RL_DATASETS, rl_sources
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.tasks import TaskBatch
from metalab.data.variable import varies
from metalab.errors import ConfigError

DATASETS = (
    "sinusoid", "omniglot", "miniimagenet", "cifar_fs", "fc100", "imagefolder", "tieredimagenet",
    "cub", "multi", *RL_DATASETS,
)  # fmt: skip


def build_sources(cfg: Any) -> dict[str, TaskSource]:
    """Task sources for "train", "val" and "test"; val/test use the test-time ways/shots.

    ``dataset=multi``, ``dataset.test`` (cross-domain) and ``dataset.sampler=variable`` are
    built by ``metalab.data.domains``; their "test" may be ``Domains`` (tested one by one)."""
    if cfg.get("test", None) is not None and cfg.name == "sinusoid":
        raise ConfigError(
            "dataset.test: sinusoid regression has no other domain to test on; remove it."
        )
    if cfg.name in RL_DATASETS:  # goals (or velocities): the rollouts are the algorithm's
        return rl_sources(cfg)
    if cfg.name == "sinusoid":
        return {
            "train": SinusoidTasks(int(cfg.shots), int(cfg.queries)),
            "val": SinusoidTasks(int(cfg.test_shots), int(cfg.test_queries)),
            "test": SinusoidTasks(int(cfg.test_shots), int(cfg.test_queries)),
        }
    if cfg.name not in DATASETS:
        raise ConfigError(f"dataset.name={cfg.name!r} is not known: choose one of {DATASETS}.")
    if (
        cfg.name == "multi"
        or cfg.get("test", None) is not None
        or cfg.get("sampler", "fixed") != "fixed"
    ):
        return domain_sources(cfg)
    augment = augmentation(cfg)  # checked before any image is decoded
    sources = episodes(load_pools(cfg), cfg)
    sources["train"] = augment(sources["train"])  # the training split only
    return sources


def load_pools(cfg: Any) -> dict[str, ClassPool]:
    """The train/val/test class pools of an image data set (imported only when used)."""
    if cfg.name == "omniglot":
        from metalab.data.omniglot import load_omniglot

        return load_omniglot(
            cfg.root,
            split=cfg.split,
            image_size=int(cfg.image_size),
            rotations=tuple(cfg.rotations),
            cache_dir=cfg.cache_dir,
            download=bool(cfg.download),
            seed=int(cfg.split_seed),
        )
    if cfg.name == "miniimagenet":
        from metalab.data.miniimagenet import load_miniimagenet

        return load_miniimagenet(
            cfg.root, source=cfg.source, image_size=cfg.image_size, cache_dir=cfg.cache_dir
        )
    if cfg.name == "imagefolder":
        from metalab.data.imagefolder import imagefolder_pools

        return imagefolder_pools(cfg)
    if cfg.name == "tieredimagenet":
        from metalab.data.tiered import tiered_pools

        return tiered_pools(cfg)
    if cfg.name == "cub":
        from metalab.data.cub import cub_pools

        return cub_pools(cfg)
    from metalab.data.cifar import load_cifar

    return load_cifar(
        cfg.name,
        cfg.root,
        image_size=cfg.image_size,
        cache_dir=cfg.cache_dir,
        download=bool(cfg.download),
    )


def episodes(pools: dict[str, ClassPool], cfg: Any) -> dict[str, TaskSource]:
    """N-way K-shot episodes of each split: training ways/shots for train, test ones else
    (``episode_source``: classes of unequal sizes get the ragged sampler)."""
    test = (cfg.test_ways, cfg.test_shots, cfg.test_queries)
    return {
        "train": episode_source(pools["train"], cfg.ways, cfg.shots, cfg.queries, "train"),
        "val": episode_source(pools["val"], *test, "val"),
        "test": episode_source(pools["test"], *test, "test"),
    }


class EpisodeDataModule(pl.LightningDataModule):
    def __init__(
        self,
        sources: dict[str, TaskSource],
        meta_batch: int,
        seed: int,
        val_tasks: int,
        test_tasks: int,
        eval_batch: int,
    ) -> None:
        super().__init__()
        if eval_batch < 1:
            raise ConfigError(f"eval.batch={eval_batch}: set it to at least 1 task.")
        self.sources, self.meta_batch, self.seed = sources, meta_batch, seed
        self.val_tasks, self.test_tasks, self.eval_batch = val_tasks, test_tasks, eval_batch
        self.train_episodes = TrainEpisodes(sources["train"], meta_batch, seed)
        self.val_episodes = FixedEpisodes(sources["val"], val_tasks, VAL_STREAM)
        # Test domains (dataset=multi, dataset.test) each get the same fixed episodes as
        # when tested alone; ``domains`` is empty for one plain test set.
        tests = sources["test"]
        self.domains = list(tests) if isinstance(tests, Domains) else []
        self.test_sets = {
            label: FixedEpisodes(source, test_tasks, TEST_STREAM)
            for label, source in (tests.items() if self.domains else [("", tests)])
        }
        self.test_episodes = next(iter(self.test_sets.values()))
        self.rank, self.world = 0, 1

    def use_test_domain(self, label: str) -> None:
        """Make the test split the episodes of test domain ``label``."""
        self.test_episodes = self.test_sets[label]

    def setup(self, stage: str) -> None:
        """Under DDP each rank draws its share of every meta-batch and of the fixed tasks."""
        trainer = self.trainer
        if trainer is None:
            return
        self.rank, self.world = int(trainer.global_rank), int(trainer.world_size)
        if stage == "fit":
            self.train_episodes = TrainEpisodes(
                self.sources["train"], self.meta_batch, self.seed, self.rank, self.world
            )

    def _fixed(self, episodes: FixedEpisodes) -> DataLoader:
        """Rank r evaluates tasks r, r + world, ...: each task once, none padded in (the
        module gathers them back in order; see ``distributed.gather_tasks``). Episodes of
        varying shapes (dataset.sampler=variable) are evaluated one at a time."""
        shard = (
            episodes
            if self.world == 1
            else Subset(episodes, range(self.rank, len(episodes), self.world))
        )
        batch = 1 if varies(episodes.source) else self.eval_batch
        return DataLoader(shard, batch_size=batch, collate_fn=TaskBatch.stack)

    def train_dataloader(self) -> DataLoader:
        """Starts at the batch after the last one trained (a resumed run continues the stream)."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        self.train_episodes.start_batch = int(getattr(module, "train_batches", 0))
        return DataLoader(self.train_episodes, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._fixed(self.val_episodes)

    def test_dataloader(self) -> DataLoader:
        return self._fixed(self.test_episodes)
