"""metalab-compare's bookkeeping on run directories laid out as metalab-train writes them
(results.json, .hydra/config.yaml, metrics.csv), with values chosen so every number in the
report can be recomputed here: grouping, the CI over seeds, the published-CI flag, failed
runs kept out of the means, and clear errors."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from metalab.compare.cli import main
from metalab.compare.groups import t95
from metalab.compare.published import TABLE
from tests.helpers.fake_runs import omniglot_run


@pytest.fixture
def report(tmp_path) -> tuple[Path, dict]:
    accs = {"maml": [0.90, 0.92, 0.95], "fomaml": [0.981, 0.983, 0.985]}
    for algorithm, values in accs.items():
        for seed, acc in enumerate(values):
            omniglot_run(
                tmp_path / "sweep",
                f"{algorithm}_{seed}",
                algorithm,
                seed,
                acc,
                status=None if seed == 0 else "completed",
            )  # no status = completed
    omniglot_run(tmp_path / "sweep", "maml_9", "maml", 9, None, status="failed")
    out = tmp_path / "report"
    assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    with (out / "comparison.csv").open() as handle:
        rows = {row["algorithm.name"]: row for row in csv.DictReader(handle)}
    return out, {"rows": rows, "accs": accs}


def test_groups_are_the_differing_keys_and_means_are_over_seeds(report):
    out, data = report
    rows = data["rows"]
    assert set(rows) == {"maml", "fomaml"}
    assert "algorithm.first_order" not in rows["maml"]  # it only restates algorithm.name
    assert "logger.wandb.group" not in rows["maml"]  # logging keys never split groups
    for algorithm, values in data["accs"].items():
        row = rows[algorithm]
        assert int(row["runs"]) == 3 and row["seeds"] == "0 1 2"
        assert float(row["test_mean"]) == pytest.approx(100 * statistics.fmean(values))
        ci = 4.303 * 100 * statistics.stdev(values) / math.sqrt(3)  # Student's t, 2 dof
        assert float(row["test_ci95"]) == pytest.approx(ci, rel=1e-6)
        assert float(row["val_best_mean"]) == pytest.approx(100 * statistics.fmean(values) - 1)
    assert int(rows["maml"]["failed"]) == 1 and int(rows["fomaml"]["failed"]) == 0
    runs_csv = (out / "runs.csv").read_text()
    assert "failed" in runs_csv and "out of memory" in runs_csv


def test_published_numbers_and_the_outside_ci_flag(report):
    out, data = report
    rows = data["rows"]
    maml, fomaml = (
        TABLE[("omniglot", "maml", 5, 1, None)],
        TABLE[("omniglot", "fomaml", 5, 1, None)],
    )
    assert float(rows["maml"]["published"]) == maml.mean == 98.7
    assert float(rows["maml"]["published_ci95"]) == maml.ci95 == 0.4
    assert "Finn et al. 2017" in rows["maml"]["published_source"]
    assert rows["maml"]["outside_published_ci"] == "True"  # 92.3 vs 98.7 +- 0.4
    assert rows["fomaml"]["outside_published_ci"] == "False"  # 98.3 vs 98.3 +- 0.5
    assert fomaml.mean == 98.3
    # the gap to the paper in points: ours minus the paper's
    maml_mean = 100 * statistics.fmean(data["accs"]["maml"])
    assert float(rows["maml"]["gap_to_published"]) == pytest.approx(maml_mean - 98.7)
    assert float(rows["fomaml"]["gap_to_published"]) == pytest.approx(0.0, abs=1e-9)
    markdown = (out / "comparison.md").read_text()
    assert "OUTSIDE published CI" in markdown and "within published CI" in markdown
    assert "Finn et al. 2017" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| group |"))
    assert (
        header.index("| published |") < header.index("| gap to paper |") < header.index("| flag |")
    )
    assert f"{maml_mean - 98.7:+.2f} pts" in markdown  # -6.37 pts


def test_student_t_quantiles():
    assert t95(2) == 12.706 and t95(3) == 4.303 and t95(31) == 2.042 and t95(100) == 1.96


def test_config_falls_back_to_hydra_config_yaml(tmp_path):
    for seed, (algorithm, acc) in enumerate([("maml", 0.9), ("fomaml", 0.8)]):
        run = omniglot_run(tmp_path / "runs", f"r{seed}", algorithm, seed, acc)
        results = json.loads((run / "results.json").read_text())
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(results.pop("config")))
        (run / "results.json").write_text(json.dumps(results))
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    with (tmp_path / "out" / "comparison.csv").open() as handle:
        rows = {row["algorithm.name"]: row for row in csv.DictReader(handle)}
    assert float(rows["fomaml"]["test_mean"]) == pytest.approx(80.0)


def test_by_groups_on_the_keys_asked_for(tmp_path):
    for seed, ways in enumerate([5, 5, 20]):
        omniglot_run(tmp_path / "runs", f"r{seed}", "maml", seed, 0.9 + seed / 100, ways=ways)
    assert (
        main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--by", "dataset.ways"]) == 0
    )
    with (tmp_path / "out" / "comparison.csv").open() as handle:
        rows = {row["dataset.ways"]: row for row in csv.DictReader(handle)}
    assert int(rows["5"]["runs"]) == 2 and int(rows["20"]["runs"]) == 1
    assert float(rows["20"]["published"]) == 95.8
    assert float(rows["20"]["gap_to_published"]) == pytest.approx(92.0 - 95.8)
    # one seed: the run's own CI over its test tasks (0.01 -> 1 point)
    assert float(rows["20"]["test_ci95"]) == pytest.approx(1.0)


def test_paths_without_runs_are_refused_in_one_sentence(tmp_path, capsys):
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metalab: error: no metalab runs under")
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    omniglot_run(tmp_path / "only_failed", "f", "maml", 0, None, status="failed")
    assert main([str(tmp_path / "only_failed"), "--out", str(tmp_path / "out")]) == 2
    assert "has completed" in capsys.readouterr().err


def test_reptile_rows_follow_the_transductive_setting_and_the_flag_names_the_interval(tmp_path):
    for seed, transductive in enumerate([True, False]):
        run = omniglot_run(tmp_path / "runs", f"r{seed}", "reptile", seed, 0.96)
        results = json.loads((run / "results.json").read_text())
        results["config"]["algorithm"]["transductive"] = transductive
        (run / "results.json").write_text(json.dumps(results))
    omniglot_run(tmp_path / "runs", "anil", "anil", 0, 0.96, ways=20)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    with (tmp_path / "out" / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by_method = {row["published_method"]: row for row in rows}
    assert float(by_method["Reptile (transductive)"]["published"]) == 97.68
    assert float(by_method["Reptile (non-transductive)"]["published"]) == 95.39
    assert float(by_method["Reptile (non-transductive)"]["gap_to_published"]) == pytest.approx(
        96.0 - 95.39
    )
    assert by_method["ANIL"]["published_interval"] == "std over 3 seeds"
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "(std over 3 seeds)" in markdown  # ANIL's ± is not a CI over tasks
