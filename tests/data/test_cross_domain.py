"""Cross-domain evaluation (issue 22, item 4): train on one generated domain, validate and test
on another (``dataset.test``), an eval-time override in metalab-eval, results per target
domain in results.json and metalab-compare, and the summary of all domains together.

Generated domains: flat-colour images whose red value encodes a class id unique across the
domains (tests/helpers/fake_imagefolder.py), so every episode's domain can be read back.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from metalab.compare.cli import main as compare_main
from metalab.data.datamodule import build_sources
from metalab.data.domains import Domains, target_specs
from metalab.data.episodes import FixedEpisodes
from metalab.errors import ConfigError
from metalab.paths import config_dir
from metalab.results import mean_and_ci95, metrics_by_domain, pooled_summary
from tests.helpers.cli import read_results, run_cli
from tests.helpers.fake_imagefolder import write_image

CLASSES = 6  # classes of each generated domain; domain d holds class ids 6d .. 6d + 5


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))


def domain(root: Path, number: int, images: int = 3) -> Path:
    for offset in range(CLASSES):
        class_id = CLASSES * number + offset
        for image in range(images):
            write_image(root / f"k{class_id:02d}" / f"{image}.png", class_id, image, (11, 9))
    return root


def domains_of(x: torch.Tensor) -> set[int]:
    ids = ((x[:, 0].mean(dim=(-2, -1)) * 255 - 5) / 10).round().long()
    return set((ids // CLASSES).tolist())


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "dataset=imagefolder", "algorithm=protonet", "model=conv4", "logger=none",
                "dataset.image_size=8", "dataset.ways=2", "dataset.shots=1",
                "dataset.queries=1", *overrides,
            ],
        )  # fmt: skip


def test_dataset_test_is_a_name_a_config_a_list_or_labelled_configs() -> None:
    assert target_specs("cub") == {"cub": "cub"}
    inline = {"name": "imagefolder", "root": "x"}
    assert target_specs(inline) == {"imagefolder": inline}
    assert list(target_specs(["cub", inline])) == ["cub", "imagefolder"]
    labelled = {"birds": "cub", "mine": inline}
    assert target_specs(labelled) == labelled
    for bad, words in [
        (["cub", "cub"], "names cub twice"),
        ({"a/b": "cub"}, "cannot name a domain"),
        ([], "name the data set(s) to test on"),
        (3, "name the data set(s) to test on"),
        ([{"root": "x"}], "is not a data set"),
    ]:
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            target_specs(bad)


def test_validation_follows_the_test_domain_or_stays_home(tmp_path: Path) -> None:
    home = domain(tmp_path / "home", 0)
    away = domain(tmp_path / "away", 1)
    base = [f"dataset.root={home}", "dataset.split_ratios=[0.5,0.5,0]"]
    # the target has validation classes: validation is on them, testing on its test split
    target = f"dataset.test={{away:{{name:imagefolder,root:'{away}',split_ratios:[0,0.5,0.5]}}}}"
    sources = build_sources(compose_train(*base, target).dataset)
    assert isinstance(sources["test"], Domains) and list(sources["test"]) == ["away"]
    for split, stream in (("val", 1), ("test", 2)):
        source = sources[split] if split == "val" else sources["test"]["away"]
        seen = {d for t in FixedEpisodes(source, 10, stream) for d in domains_of(t.query_x)}
        assert seen == {1}, split
    train = sources["train"].sample(torch.Generator())
    assert domains_of(train.support_x) == {0}
    assert (
        train.support_x.shape[1:]
        == sources["test"]["away"].sample(torch.Generator()).support_x.shape[1:]
    )
    # a target only tested on ([0, 0, 1]): validation stays on the training data set's own
    target = f"dataset.test={{name:imagefolder,root:'{away}',split_ratios:[0,0,1]}}"
    sources = build_sources(compose_train(*base, target).dataset)
    assert list(sources["test"]) == ["imagefolder"]
    assert {d for t in FixedEpisodes(sources["val"], 10, 1) for d in domains_of(t.query_x)} == {0}
    # neither has validation classes: refused in one sentence
    no_val = f"dataset.test={{name:imagefolder,root:'{away}',split_ratios:[0,0,1]}}"
    with pytest.raises(ConfigError, match="no validation classes"):
        build_sources(compose_train(f"dataset.root={home}", "dataset.split_ratios=[1,0,0]",
                                    no_val).dataset)  # fmt: skip


def test_the_summary_of_all_domains_is_that_of_their_tasks_together() -> None:
    generator = torch.Generator().manual_seed(0)
    values = {d: torch.rand(n, 3, generator=generator, dtype=torch.float64)
              for d, n in (("a", 7), ("b", 7), ("c", 7))}  # fmt: skip

    def summary(v: torch.Tensor) -> dict:
        points = [mean_and_ci95(v[:, i]) for i in range(v.shape[1])]
        return {"metric": "acc", "mean": points[-1][0], "ci95": points[-1][1], "tasks": len(v),
                "per_step": [{"step": s, "mean": m, "ci95": c}
                             for s, (m, c) in zip((0, 5, 10), points, strict=True)]}  # fmt: skip

    pooled = pooled_summary({d: summary(v) for d, v in values.items()})
    direct = summary(torch.cat(list(values.values())))
    assert pooled["tasks"] == direct["tasks"] == 21
    for got, want in zip(pooled["per_step"], direct["per_step"], strict=True):
        assert got["step"] == want["step"]
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
        assert got["ci95"] == pytest.approx(want["ci95"], rel=1e-12)
    metrics = metrics_by_domain({d: summary(v) for d, v in values.items()})
    assert list(metrics) == ["test/acc", "test/a/acc", "test/b/acc", "test/c/acc"]
    assert metrics_by_domain({"": direct}) == {"test/acc": direct}


@pytest.mark.usefixtures("one_thread")
def test_train_on_one_domain_test_on_another_then_evaluate_and_compare(tmp_path: Path) -> None:
    home = domain(tmp_path / "home", 0)
    away = domain(tmp_path / "away", 1)
    also = domain(tmp_path / "also", 2)
    common = ["algorithm=protonet", "model=conv4", "debug=tiny", "dataset=imagefolder",
              "dataset.image_size=16", "dataset.ways=2", "dataset.shots=1",
              "dataset.queries=1"]  # fmt: skip
    run = tmp_path / "run"
    out = run_cli(
        "metalab-train", *common, f"dataset.root={home}", "dataset.split_ratios=[0.67,0.33,0]",
        f"dataset.test={{away:{{name:imagefolder,root:'{away}',split_ratios:[0,0,1]}}}}",
        f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    trained = read_results(run)
    assert list(trained["metrics"]) == ["test/acc", "test/away/acc", "val/acc_best"]
    assert trained["metrics"]["test/acc"] == trained["metrics"]["test/away/acc"]
    assert trained["protocol"]["test_on"] == "away"
    # metalab-eval: the same weights tested on two other domains, each reported on its own
    targets = (f"dataset.test={{away:{{name:imagefolder,root:'{away}',split_ratios:[0,0,1]}},"
               f"also:{{name:imagefolder,root:'{also}',split_ratios:[0,0,1]}}}}")  # fmt: skip
    evaluation = tmp_path / "eval"
    out = run_cli(
        "metalab-eval", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", targets,
        "eval.tasks=4", "eval.batch=2", f"hydra.run.dir={evaluation}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test acc on also:" in out.stdout
    evaluated = read_results(evaluation)
    metrics = evaluated["metrics"]
    assert list(metrics) == ["test/acc", "test/away/acc", "test/also/acc"]
    assert [metrics[k]["tasks"] for k in metrics] == [8, 4, 4]
    average = (metrics["test/away/acc"]["mean"] + metrics["test/also/acc"]["mean"]) / 2
    assert metrics["test/acc"]["mean"] == pytest.approx(average)
    assert evaluated["protocol"]["test_on"] == "away, also"
    # metalab-compare: a column per test domain, the numbers of results.json in %
    report = tmp_path / "report"
    assert compare_main([str(run), str(evaluation), "--out", str(report)]) == 0
    rows = list(csv.DictReader((report / "comparison.csv").open()))
    assert [row["kind"] for row in rows] == ["train", "eval"]
    train_row, eval_row = rows
    assert float(train_row["test_mean[away]"]) == pytest.approx(
        100 * trained["metrics"]["test/away/acc"]["mean"]
    )
    assert train_row["test_mean[also]"] == ""
    for label in ("away", "also"):
        assert float(eval_row[f"test_mean[{label}]"]) == pytest.approx(
            100 * metrics[f"test/{label}/acc"]["mean"]
        )
        assert float(eval_row[f"test_ci95[{label}]"]) == pytest.approx(
            100 * metrics[f"test/{label}/acc"]["ci95"]
        )
    assert train_row["published"] == ""  # no published number for a cross-domain setting
    markdown = (report / "comparison.md").read_text()
    assert "| test on away | test on also |" in markdown
    assert "imagefolder -> away" in markdown
