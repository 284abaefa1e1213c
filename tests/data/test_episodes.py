"""Sampler invariants: what every N-way K-shot episode and every episode stream promises."""

from __future__ import annotations

import math

import pytest
import torch

from metalab.data.episodes import (
    TEST_STREAM,
    VAL_STREAM,
    FixedEpisodes,
    NWayKShot,
    TrainEpisodes,
)
from metalab.data.sinusoid import SinusoidTasks
from metalab.errors import ConfigError


class IdentityPool:
    """Each image is filled with its own identity, class * 1000 + example index."""

    def __init__(self, classes: int = 30, per_class: int = 20) -> None:
        self.num_classes, self.examples_per_class = classes, per_class

    def examples(self, class_index, example_indices):
        ids = class_index * 1000 + example_indices.to(torch.float32)
        return ids.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def identities(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0].tolist()]


@pytest.mark.parametrize("ways, shots, queries", [(5, 1, 15), (20, 1, 5), (5, 5, 10), (30, 2, 3)])
def test_episode_invariants(ways, shots, queries):
    sampler = NWayKShot(IdentityPool(), ways, shots, queries)
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        task = sampler.sample(generator)
        support, query = identities(task.support_x), identities(task.query_x)
        assert len(support) == ways * shots and len(query) == ways * queries
        assert not set(support) & set(query)  # no image in both support and query
        assert len(set(support)) == len(support) and len(set(query)) == len(query)
        assert sorted(set(task.support_y.tolist())) == list(range(ways))  # labels 0..N-1
        label_to_class: dict[int, int] = {}
        for ids, labels, per_class in [
            (support, task.support_y, shots),
            (query, task.query_y, queries),
        ]:
            for label in range(ways):
                classes = {ids[i] // 1000 for i in range(len(ids)) if labels[i] == label}
                assert len(classes) == 1  # one class per label...
                assert int((labels == label).sum()) == per_class  # ...with K or Q examples
                cls = classes.pop()
                assert label_to_class.setdefault(label, cls) == cls  # same in support and query
        assert len(set(label_to_class.values())) == ways  # N distinct classes


def test_oversized_episodes_are_refused_with_the_limit():
    with pytest.raises(ConfigError, match="only 30 classes"):
        NWayKShot(IdentityPool(), ways=31, shots=1, queries=1)
    with pytest.raises(ConfigError, match="at most 20"):
        NWayKShot(IdentityPool(), ways=5, shots=5, queries=16)


def test_fixed_episodes_are_the_same_in_every_run():
    sampler = NWayKShot(IdentityPool(), 5, 1, 3)
    first, again = FixedEpisodes(sampler, 10, VAL_STREAM), FixedEpisodes(sampler, 10, VAL_STREAM)
    for i in range(10):
        assert identities(first[i].support_x) == identities(again[i].support_x)
        assert identities(first[i].query_x) == identities(again[i].query_x)
    assert identities(first[0].query_x) != identities(first[1].query_x)
    test = FixedEpisodes(sampler, 10, TEST_STREAM)
    assert identities(first[0].query_x) != identities(test[0].query_x)  # val != test
    with pytest.raises(IndexError):
        first[10]


def test_training_stream_follows_the_seed_splits_over_ranks_and_resumes_exactly():
    sampler = NWayKShot(IdentityPool(), 5, 1, 3)

    def ids(stream, n=3):
        it = iter(stream)
        return [identities(next(it).query_x.flatten(0, 1)) for _ in range(n)]

    base = ids(TrainEpisodes(sampler, 4, seed=0))
    assert base == ids(TrainEpisodes(sampler, 4, seed=0))
    assert base != ids(TrainEpisodes(sampler, 4, seed=1))
    assert base[1:] == ids(TrainEpisodes(sampler, 4, seed=0, start_batch=1), n=2)
    # two ranks with half the meta-batch each draw exactly the one-process tasks, in order
    rank0 = ids(TrainEpisodes(sampler, 4, seed=0, rank=0, world=2))
    rank1 = ids(TrainEpisodes(sampler, 4, seed=0, rank=1, world=2))
    half = len(base[0]) // 2
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == base
    assert rank0[0] == base[0][:half] and rank0 != rank1
    with pytest.raises(ConfigError, match="multiple of 3"):
        TrainEpisodes(sampler, 4, seed=0, rank=0, world=3)


def test_sinusoid_tasks_follow_the_maml_paper():
    source = SinusoidTasks(shots=5, queries=50)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        task = source.sample(generator)
        x = torch.cat([task.support_x, task.query_x]).squeeze(-1).double()
        y = torch.cat([task.support_y, task.query_y]).squeeze(-1).double()
        assert task.support_x.shape == (5, 1) and task.query_x.shape == (50, 1)
        assert x.min() >= -5 and x.max() <= 5
        # y = A sin(x - phi) = a sin x + b cos x: fit (a, b) exactly, then check A and phi
        basis = torch.stack([torch.sin(x), torch.cos(x)], dim=1)
        (a, b) = torch.linalg.lstsq(basis, y.unsqueeze(1)).solution.squeeze(1).tolist()
        assert torch.allclose(basis @ torch.tensor([a, b], dtype=torch.float64), y, atol=1e-4)
        amplitude, phase = math.hypot(a, b), math.atan2(-b, a)
        assert 0.1 - 1e-4 <= amplitude <= 5 + 1e-4
        assert -1e-4 <= phase <= math.pi + 1e-4
