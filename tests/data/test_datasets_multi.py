"""dataset=multi (issue 22, item 3) and Meta-Dataset's variable-way variable-shot sampler, on
generated image folders and in-memory pools: member weights (a chi-square test on many draws),
the members' roles (trained, validated, tested), resumable streams, the sampler's bounds,
channel conversion, refusals in one sentence, and a metalab-train run.

Every generated image is one flat colour whose red value encodes a class id unique across the
members (red = 10 * id + 5, tests/helpers/fake_imagefolder.py), so the member and class of
every image of an episode can be read back.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from metalab.assembly import build_data, build_module
from metalab.data.datamodule import build_sources
from metalab.data.domains import Domains, check_variable, convert_channels
from metalab.data.episodes import FixedEpisodes, TrainEpisodes
from metalab.data.ragged import RaggedClasses
from metalab.data.variable import VariableEpisodes, VariableRules, varies
from metalab.errors import ConfigError
from metalab.paths import config_dir
from metalab.preflight import check_config
from metalab.results import run_each_domain
from metalab.trainer import make_trainer
from tests.helpers.cli import read_results, run_cli
from tests.helpers.fake_imagefolder import write_image

PER_MEMBER = 8  # classes of each generated member; member m holds class ids 8m .. 8m + 7
# The 0.999 quantiles of the chi-square distribution with 1 and 2 degrees of freedom.
CHI2_999 = {1: 10.828, 2: 13.816}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))


def member_folder(root: Path, member: int, images: int = 3) -> Path:
    """PER_MEMBER classes of ``images`` flat-colour images, ids unique to ``member``."""
    for offset in range(PER_MEMBER):
        class_id = PER_MEMBER * member + offset
        for number in range(images):
            write_image(root / f"k{class_id:02d}" / f"{number}.png", class_id, number, (9, 7))
    return root


def ids(x: torch.Tensor) -> list[int]:
    """The class id encoded in the red channel of each image of [n, 3, H, W]."""
    return ((x[:, 0].mean(dim=(-2, -1)) * 255 - 5) / 10).round().long().tolist()


def member(
    label: str, root: Path, weight: float = 1, ratios: str = "[0.5,0.25,0.25]", more: str = ""
) -> str:
    return (
        f"+dataset.members.{label}={{name:imagefolder,root:'{root}',weight:{weight},"
        f"split_ratios:{ratios}{more}}}"
    )


def compose_multi(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "dataset=multi", "algorithm=protonet", "model=conv4", "logger=none",
                "dataset.members.omniglot=null", "dataset.members.miniimagenet=null",
                "dataset.image_size=8", "dataset.ways=2", "dataset.shots=1",
                "dataset.queries=1", *overrides,
            ],
        )  # fmt: skip


@pytest.fixture
def three(tmp_path: Path) -> list[str]:
    """Members a (weight 1) and b (weight 3), and c: weight 0, every class in its test split."""
    return [
        member("a", member_folder(tmp_path / "a", 0), 1),
        member("b", member_folder(tmp_path / "b", 1), 3),
        member("c", member_folder(tmp_path / "c", 2), 0, "[0,0,1]"),
    ]


def test_training_episodes_follow_the_member_weights(three) -> None:
    sources = build_sources(compose_multi(*three).dataset)
    stream = TrainEpisodes(sources["train"], meta_batch=8, seed=0)
    counts: Counter[int] = Counter()
    for index in range(250):
        batch = stream.batch(index)
        for task in range(len(batch)):
            members = {i // PER_MEMBER for i in ids(batch.support_x[task])}
            members |= {i // PER_MEMBER for i in ids(batch.query_x[task])}
            assert len(members) == 1  # one episode, one member
            counts[members.pop()] += 1
    total = sum(counts.values())
    assert total == 2000 and counts[2] == 0  # c (weight 0) is never trained on
    expected = {0: total / 4, 1: 3 * total / 4}
    chi2 = sum((counts[m] - e) ** 2 / e for m, e in expected.items())
    assert chi2 < CHI2_999[1], (counts, chi2)


def test_members_are_validated_and_tested_by_their_roles(three) -> None:
    sources = build_sources(compose_multi(*three).dataset)
    assert isinstance(sources["test"], Domains) and list(sources["test"]) == ["a", "b", "c"]
    for label, source in sources["test"].items():
        episodes = FixedEpisodes(source, 20, stream=2)
        members = {i // PER_MEMBER for t in episodes for i in ids(t.support_x)}
        assert members == {"abc".index(label)}
    val = FixedEpisodes(sources["val"], 200, stream=1)
    seen = Counter(ids(t.support_x)[0] // PER_MEMBER for t in val)
    assert set(seen) == {0, 1} and seen[1] > seen[0]  # a and b by their weights, never c


def test_a_resumed_stream_draws_the_same_members_and_images(tmp_path, three) -> None:
    augmented = member("a", tmp_path / "a", more=",augment:crop_flip_jitter,crop_padding:2")
    for extra in (
        [],
        ["dataset.sampler=variable", "dataset.variable.min_ways=2"],
        [augmented, "dataset.sampler=variable", "dataset.variable.min_ways=2"],
    ):
        members = [*three[1:], *extra] if augmented in extra else [*three, *extra]
        first = build_sources(compose_multi(*members).dataset)["train"]
        again = build_sources(compose_multi(*members).dataset)["train"]
        uninterrupted = TrainEpisodes(first, meta_batch=1, seed=3)
        resumed = iter(TrainEpisodes(again, meta_batch=1, seed=3, start_batch=5))
        for index in range(5, 12):
            a, b = uninterrupted.batch(index), next(resumed)
            assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
        other = TrainEpisodes(first, meta_batch=1, seed=4)
        assert any(
            not torch.equal(
                other.batch(i).support_x[0, :1], uninterrupted.batch(i).support_x[0, :1]
            )
            for i in range(5)
        )


def test_members_share_one_image_shape_and_channels(three) -> None:
    rgb = build_sources(compose_multi(*three).dataset)["train"].sample(torch.Generator())
    assert rgb.support_x.shape[1:] == (3, 8, 8)
    grey = build_sources(compose_multi(*three, "dataset.channels=1").dataset)
    task = grey["train"].sample(torch.Generator().manual_seed(1))
    assert task.support_x.shape[1:] == (1, 8, 8)
    for split in ("val",):
        assert grey[split].sample(torch.Generator()).query_x.shape[1] == 1
    assert grey["test"]["c"].sample(torch.Generator()).query_x.shape[1] == 1


def test_channel_conversion_against_direct_computation() -> None:
    rgb = torch.rand(4, 3, 5, 6, dtype=torch.float64)
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert torch.allclose(convert_channels(rgb, 1)[:, 0], luma)
    grey = torch.rand(4, 1, 5, 6)
    assert all(torch.equal(convert_channels(grey, 3)[:, c], grey[:, 0]) for c in range(3))
    assert convert_channels(rgb, 3) is rgb


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["dataset.members.x={name:sinusoid}"], "dataset.members.x.name='sinusoid'"),
        (["dataset.members.x={name:cubb}"], "is not a data set"),
        (["dataset.members.x={name:cub,image_size:32}"], "dataset.members.x.image_size"),
        (["dataset.members.x={name:cub,roots:x}"], "dataset.members.x.roots is not a setting"),
        (["dataset.members.x={name:cub,weight:-1}"], "dataset.members.x.weight=-1"),
        (["dataset.members.x={name:cub,weight:0}"], "every dataset.members.<label>.weight is 0"),
        (["dataset.channels=2"], "dataset.channels=2"),
        (["dataset.sampler=varied"], "dataset.sampler='varied'"),
        (["dataset.sampler=variable", "dataset.variable.min_ways=60"], "min_ways=60 is above"),
    ],
)
def test_bad_members_are_refused_in_one_sentence(extra, words) -> None:
    cfg = compose_multi(*[f"+{e}" if e.startswith("dataset.members.") else e for e in extra])
    with pytest.raises(ConfigError) as refused:
        build_sources(cfg.dataset)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_fixed_heads_refuse_variable_ways_and_metric_methods_take_them() -> None:
    def config(*overrides: str):
        with initialize_config_dir(config_dir(), version_base="1.3"):
            return compose("train", overrides=["dataset=multi", "dataset.sampler=variable",
                                               *overrides])  # fmt: skip

    for name in ("maml", "fomaml", "anil", "metasgd", "metalstm"):
        with pytest.raises(ConfigError, match=f"but algorithm={name} learns a fixed 5-way"):
            check_variable(config(f"algorithm={name}", "algorithm.meta_batch=1"))
    for name in ("protonet", "matchingnet", "siamese"):
        check_variable(config(f"algorithm={name}", "algorithm.meta_batch=1"))
    with pytest.raises(ConfigError, match="set algorithm.meta_batch=1"):
        check_variable(config("algorithm=protonet", "algorithm.meta_batch=4"))
    check_variable(config("algorithm=maml", "dataset.sampler=fixed"))  # fixed ways: fine


def numbered_pool(counts: list[int]) -> RaggedClasses:
    """Class c's image i holds c in channel 0 and i in channels 1 and 2 (i % 256, i // 256),
    read back by ``decode``."""
    total = sum(counts)
    images = torch.zeros(total, 3, 1, 1, dtype=torch.uint8)
    rows, start = [], 0
    for c, n in enumerate(counts):
        number = torch.arange(n).view(n, 1, 1)
        images[start : start + n, 0] = c
        images[start : start + n, 1] = (number % 256).to(torch.uint8)
        images[start : start + n, 2] = (number // 256).to(torch.uint8)
        rows.append(torch.arange(start, start + n))
        start += n
    return RaggedClasses(images, rows, [f"k{c}" for c in range(len(counts))])


def decode(x: torch.Tensor) -> list[tuple[int, int]]:
    values = (x[:, :, 0, 0] * 255).round().long()
    return [(int(c), int(low) + 256 * int(high)) for c, low, high in values]


def check_episode(task, counts: list[int], rules: VariableRules) -> int:
    """Every rule's bound on one episode; returns its ways."""
    support, query = decode(task.support_x), decode(task.query_x)
    support_y, query_y = task.support_y.tolist(), task.query_y.tolist()
    ways = max(support_y) + 1
    classes = {y: c for (c, _), y in zip(support, support_y, strict=True)}
    assert sorted(classes) == list(range(ways)) and len(set(classes.values())) == ways
    assert rules.min_ways <= ways <= min(rules.max_ways, len(counts))
    sizes = [counts[classes[way]] for way in range(ways)]
    queries = min(rules.max_query, min(sizes) // 2)
    assert queries >= 1
    assert query_y == [w for w in range(ways) for _ in range(queries)]
    shots = Counter(support_y)
    assert support_y == sorted(support_y)
    assert all(1 <= shots[w] <= n - queries for w, n in enumerate(sizes))
    assert ways <= len(support_y) <= rules.max_support
    labelled = zip(support + query, support_y + query_y, strict=True)
    assert all(c == classes[y] for (c, _), y in labelled)
    assert len(set(support + query)) == len(support) + len(query)  # no image twice
    return ways


def test_variable_episodes_stay_within_meta_datasets_bounds() -> None:
    generator = torch.Generator().manual_seed(0)
    counts = torch.randint(2, 700, (80,), generator=generator).tolist()
    counts[:3] = [2, 3, 900]
    rules = VariableRules()
    source = VariableEpisodes(numbered_pool(counts), rules)
    assert varies(source)
    seen = [check_episode(source.sample(torch.Generator().manual_seed(s)), counts, rules)
            for s in range(300)]  # fmt: skip
    assert min(seen) == 5 and max(seen) == 50  # the whole range [5, min(50, 80)] is drawn
    few = [4, 9, 30, 2, 12, 7]  # 6 classes: at most 6 ways
    small = VariableRules(min_ways=2, max_ways=50, max_query=3, max_support=8,
                          max_support_per_class=2)  # fmt: skip
    source = VariableEpisodes(numbered_pool(few), small)
    seen = [check_episode(source.sample(torch.Generator().manual_seed(s)), few, small)
            for s in range(300)]  # fmt: skip
    assert set(seen) == {2, 3, 4, 5, 6}


def test_variable_episodes_need_enough_classes_of_two_images() -> None:
    with pytest.raises(ConfigError, match="at least dataset.variable.min_ways=5 classes"):
        VariableEpisodes(numbered_pool([5, 5, 5, 5]), split="val")
    with pytest.raises(ConfigError, match="with fewer: k2"):
        VariableEpisodes(numbered_pool([5, 5, 1, 5, 5, 5]))


@pytest.mark.usefixtures("one_thread")
def test_metalab_train_on_variable_multi_source_episodes(tmp_path, three) -> None:
    run = tmp_path / "run"
    out = run_cli(
        "metalab-train", "dataset=multi", "algorithm=protonet", "model=conv4", "debug=tiny",
        "algorithm.meta_batch=1", "dataset.members.omniglot=null",
        "dataset.members.miniimagenet=null", *three, "dataset.image_size=16",
        "dataset.sampler=variable", "dataset.variable.min_ways=2", "eval.tasks=3",
        f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(run)
    metrics = results["metrics"]
    assert list(metrics) == ["test/acc", "test/a/acc", "test/b/acc", "test/c/acc", "val/acc_best"]
    domains = [metrics[f"test/{label}/acc"] for label in "abc"]
    assert all(d["tasks"] == 3 for d in domains) and metrics["test/acc"]["tasks"] == 9
    assert metrics["test/acc"]["mean"] == pytest.approx(sum(d["mean"] for d in domains) / 3)
    protocol = results["protocol"]
    assert (protocol["ways"], protocol["shots"], protocol["sampler"]) == (
        "variable", "variable", "variable")  # fmt: skip
    assert protocol["members"] == {"a": 1.0, "b": 3.0, "c": 0.0}


def test_build_data_refuses_a_fixed_head_on_variable_ways_before_decoding(tmp_path, three):
    cfg = compose_multi(*three, "algorithm=maml", "algorithm.meta_batch=1",
                        "dataset.sampler=variable")  # fmt: skip
    with pytest.raises(ConfigError, match="algorithm=maml learns a fixed 2-way output layer"):
        build_data(cfg)  # what metalab-train and metalab-eval call before anything is decoded
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError, match="algorithm=maml learns a fixed 2-way output layer"):
        check_config(cfg)  # metalab-train's config check: before any run folder is made


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("algorithm", "sampler"),
    [("maml", "fixed"), ("protonet", "variable"), ("r2d2", "variable")],
)
def test_algorithms_train_and_test_each_member(tmp_path, three, algorithm, sampler) -> None:
    steps = ["algorithm.inner_steps=1"] if algorithm == "maml" else []
    cfg = compose_multi(
        *three, f"algorithm={algorithm}", "debug=tiny", "logger=none", "algorithm.meta_batch=1",
        "model.channels=8", "dataset.image_size=16", f"dataset.sampler={sampler}",
        "dataset.variable.min_ways=2", *steps,
    )  # fmt: skip
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    before = [p.detach().clone() for p in module.parameters()]
    trainer, _, _ = make_trainer(cfg, tmp_path / "run", [], "val/acc", "max")
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    summaries = run_each_domain(
        data, module, lambda: trainer.test(module, datamodule=data, verbose=False)
    )
    assert list(summaries) == ["a", "b", "c"]
    assert all(s["tasks"] == 2 and 0.0 <= s["mean"] <= 1.0 for s in summaries.values())
