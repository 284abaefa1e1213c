"""metalab's one table of published numbers: every entry cites a paper's table or figure,
holds a plausible value, every algorithm with a published number has one, lookup picks the
row a run's config asks for, and the shell-facing readers (markdown printer, --get,
benchmarks/accuracy_table.sh) read this table rather than a copy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metalab.compare.published import (
    CONTEXT,
    TABLE,
    Key,
    entry,
    gap,
    lookup,
    main,
    markdown,
    others,
    outside_published_ci,
    setting_text,
    value_text,
)
from tests.helpers.paths import ROOT

SCRIPT = ROOT / "benchmarks" / "accuracy_table.sh"
# Algorithms without any published Omniglot or mini-ImageNet number (none today).
NO_PUBLISHED_NUMBER: set[str] = {"maml_rl"}  # the paper's RL results are curves, not a table
SOURCE = re.compile(r"^[A-Z][\w-]+ (et al\.|& [A-Z][\w-]+) \d{4}, .+ \(.+\), .*(Table|Figure) \w+")


def algorithm_configs() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "algorithm").glob("*.yaml"))


@pytest.mark.parametrize("key", list(TABLE), ids=str)
def test_every_entry_cites_a_table_or_figure_and_is_plausible(key: Key) -> None:
    published = TABLE[key]
    assert SOURCE.match(published.source), published.source
    assert published.method
    if key.dataset == "sinusoid":  # MSE
        assert published.mean > 0 and key.ways is None and key.variant
    else:
        assert 0 < published.mean <= 100 and key.ways in {5, 20} and key.shots in {1, 5}
        assert key.dataset in {"omniglot", "miniimagenet"}
    assert published.ci95 is None or published.ci95 >= 0
    if published.ci95 is not None:
        assert published.interval  # says what the ± is


def test_every_algorithm_config_with_a_published_number_has_an_image_entry() -> None:
    covered = {k.algorithm for k in TABLE if k.dataset in {"omniglot", "miniimagenet"}}
    for name in algorithm_configs():
        if name not in NO_PUBLISHED_NUMBER:
            assert name in covered, f"conf/algorithm/{name}.yaml has no published entry"
    assert covered <= set(algorithm_configs())  # keys are config names


def test_papers_numbers_spot_checks() -> None:
    assert entry("maml", "omniglot", 5, 1).mean == 98.7
    assert entry("maml", "miniimagenet", 5, 5).ci95 == 0.92
    assert "Nichol et al. 2018" in entry("fomaml", "omniglot", 20, 1).source
    assert entry("protonet", "miniimagenet", 5, 1).note.startswith("trained with 30-way")
    assert entry("anil", "omniglot", 5, 1) is None  # ANIL reports Omniglot 20-way only
    assert entry("anil", "miniimagenet", 5, 1).interval == "std over 3 seeds"
    assert entry("metalstm", "omniglot", 5, 1) is None  # mini-ImageNet only
    assert entry("maml", "sinusoid", None, 5, "10 steps").mean == 0.35


def test_lookup_picks_reptiles_transductive_or_non_transductive_row() -> None:
    protocol = {"ways": 5, "shots": 1}
    flat = {"dataset.name": "omniglot", "algorithm.name": "reptile"}
    assert lookup({**flat, "algorithm.transductive": True}, protocol).mean == 97.68
    assert lookup({**flat, "algorithm.transductive": False}, protocol).mean == 95.39
    assert lookup(flat, protocol).mean == 97.68  # the config's default is transductive
    nested = {
        "dataset": {"name": "miniimagenet"},
        "algorithm": {"name": "reptile", "transductive": False},
    }
    assert lookup(nested, protocol).mean == 47.07  # nested configs (results.json) too
    assert lookup({**flat, "algorithm.transductive": "false"}, protocol).mean == 95.39


def test_lookup_covers_every_algorithm_and_falls_back_to_the_config() -> None:
    for key in TABLE:
        if key.dataset == "sinusoid":
            continue
        config = {
            "dataset.name": key.dataset,
            "algorithm.name": key.algorithm,
            "dataset.ways": key.ways,
            "dataset.shots": key.shots,
            "algorithm.transductive": key.variant != "non-transductive",
            "algorithm.fce": key.variant == "fce",
        }
        assert lookup(config, {}) is TABLE[key], key
    sinusoid = {"dataset.name": "sinusoid", "algorithm.name": "maml", "dataset.shots": 5}
    assert lookup(sinusoid, {"inner_steps": 1}).mean == 0.67
    assert lookup({**sinusoid, "algorithm.eval_inner_steps": 5}, {}).mean == 0.38
    assert lookup({"dataset.name": "omniglot", "algorithm.name": "maml"}, {}) is None


def test_gap_and_flag_are_in_the_papers_unit() -> None:
    maml = entry("maml", "omniglot", 5, 1)
    assert gap(97.7, maml) == pytest.approx(-1.0)
    assert outside_published_ci(98.4, maml) is False and outside_published_ci(98.2, maml)
    assert outside_published_ci(99.0, entry("protonet", "omniglot", 5, 1)) is None


def test_other_methods_for_a_setting_come_from_the_one_table() -> None:
    methods = {p.method for p in others("omniglot", 20, 1, exclude={"maml"})}
    assert "MAML" not in methods and "Prototypical Networks" in methods
    assert {p.method for p in CONTEXT[(20, 1)]} >= methods  # derived, no numbers of its own
    assert all(p.mean < 60 for p in others("miniimagenet", 5, 1))


def test_markdown_lists_every_entry() -> None:
    text = markdown()
    lines = text.splitlines()
    assert len(lines) == 2 + len(TABLE)
    for line, (key, published) in zip(lines[2:], TABLE.items(), strict=True):
        assert f"| {setting_text(key)} | {value_text(published)} |" in line
        assert published.source in line and f"| {key.dataset} |" in line
    assert "98.0 ± 0.3" in text  # printed as the paper prints it, not 98


def test_command_line_prints_the_table_and_one_entry(capsys) -> None:
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == markdown()
    assert main(["--get", "reptile", "omniglot", "20", "1", "--variant", "non-transductive"]) == 0
    mean, ci, source = capsys.readouterr().out.rstrip("\n").split("\t")
    assert (mean, ci) == ("88.14", "0.15") and "Table 2" in source
    assert main(["--get", "protonet", "omniglot", "5", "1"]) == 0
    assert capsys.readouterr().out.split("\t")[:2] == ["98.8", "-"]
    assert main(["--get", "metalstm", "omniglot", "5", "1"]) == 1
    done = subprocess.run(
        [sys.executable, "-m", "metalab.compare.published", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == markdown()


def inline_python() -> str:
    text = SCRIPT.read_text()
    start = text.index("<<'PY'\n") + len("<<'PY'\n")
    return text[start : text.index("\nPY\n", start)]


def test_accuracy_table_script_reads_the_one_table() -> None:
    code = inline_python()
    assert "from metalab.compare.published import" in code
    assert "PUBLISHED" not in code
    for key, published in TABLE.items():  # no copy of any published number
        if key.dataset != "sinusoid":
            assert value_text(published) not in code


def test_accuracy_table_script_reports_gap_and_flag(tmp_path: Path) -> None:
    def run(name: str, algorithm: str, ways: int, acc: float, **extra) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(
            json.dumps(
                {
                    "status": "completed",
                    "config": {
                        "algorithm": {"name": algorithm, **extra},
                        "dataset": {"name": "omniglot", "ways": ways, "shots": 1},
                    },
                    "protocol": {"dataset": "omniglot", "ways": ways, "shots": 1},
                    "metrics": {"test/acc": {"mean": acc, "ci95": 0.004}},
                    "train": {"steps": 100},
                }
            )
        )

    run("maml_5w1s", "maml", 5, 0.95)
    run("reptile_20w1s", "reptile", 20, 0.881, transductive=False)
    run("metalstm_5w1s", "metalstm", 5, 0.9)
    done = subprocess.run(
        [sys.executable, "-", str(tmp_path)],
        input=inline_python(),
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in done.stdout.splitlines()[2:]}
    assert "| 98.7 ± 0.4 | -3.70 | OUTSIDE |" in rows["maml"]
    assert "| 88.14 ± 0.15 | -0.04 | within |" in rows["reptile"]
    assert "Reptile (non-transductive)" in rows["reptile"]
    assert "none published" in rows["metalstm"]
