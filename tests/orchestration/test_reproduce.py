"""One command per published table: ``metalab-train -m reproduce=<setting>`` runs every
algorithm's faithful preset, and ``metalab-compare`` turns the sweep into metalab vs paper."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from metalab.compare.published import entry
from metalab.paths import config_dir
from tests.helpers.cli import run_cli
from tests.helpers.paths import BENCHMARKS

CONF = Path(config_dir())
REPRODUCE = sorted(p.stem for p in (CONF / "reproduce").glob("*.yaml"))
# few-shot tables (<data set>_<ways>w<shots>s); navigation2d is the paper's figure of returns
# (MAML-RL and its baselines: tests/runs/test_navigation_reproduction.py)
TABLES = [setting for setting in REPRODUCE if setting != "navigation2d"]


def swept_experiments(setting: str) -> list[str]:
    preset = yaml.safe_load((CONF / "reproduce" / f"{setting}.yaml").read_text())
    return preset["hydra"]["sweeper"]["params"]["experiment"].split(",")


def test_there_is_a_table_per_omniglot_setting():
    assert REPRODUCE == [
        "miniimagenet_5w1s", "miniimagenet_5w5s", "navigation2d",
        "omniglot_20w1s", "omniglot_20w5s", "omniglot_5w1s", "omniglot_5w5s",
    ]  # fmt: skip


@pytest.mark.parametrize("setting", TABLES)
def test_each_table_runs_every_algorithm_with_a_published_number(setting):
    """Every experiment swept exists and its paper has a number for the setting; every
    algorithm whose paper has one is swept."""
    dataset, shape = setting.split("_")
    ways, shots = (int(n) for n in shape[:-1].split("w"))
    swept = swept_experiments(setting)
    for experiment in swept:
        assert (CONF / "experiment" / f"{experiment}.yaml").is_file(), experiment
        algorithm = experiment.split("_")[0]
        # a paper with two rows: Reptile's transductive one, Matching Networks' without FCE
        assert any(
            entry(algorithm, dataset, ways, shots, variant) is not None
            for variant in (None, "transductive", "no-fce")
        ), experiment
    algorithms = {e.split("_")[0] for e in swept}
    for name in ("maml", "fomaml", "reptile", "metasgd", "mamlpp", "protonet", "matchingnet"):
        assert name in algorithms, name
    for preset in (CONF / "experiment").glob(f"*_{setting}.yaml"):  # every preset with a number
        algorithm = preset.stem.split("_")[0]
        if any(entry(algorithm, dataset, ways, shots, v) for v in (None, "transductive", "no-fce")):
            assert preset.stem in swept, preset.stem


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif("METALAB_DATA" not in os.environ, reason="set METALAB_DATA for Omniglot")
def test_a_tiny_reproduction_sweep_gives_the_runs_numbers_beside_the_papers(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(
        "metalab-train", "-m", "reproduce=omniglot_5w1s",
        'hydra.sweeper.params.experiment="maml_omniglot_5w1s,protonet_omniglot_5w1s"',
        "trainer.max_steps=3", "trainer.val_check_interval=3", "val.tasks=4", "eval.tasks=6",
        "logger=csv", "strategy=loop", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_maml_seed0", "1_protonet_seed0"]
    results = {j.split("_")[1]: json.loads((sweep / j / "results.json").read_text()) for j in jobs}
    for result in results.values():
        assert result["status"] == "completed"
        assert result["config"]["trainer"]["max_cpu_seconds"] == 7200  # the table's budget
        assert result["train"]["cpu_seconds"] > 0 and result["hardware"]["cpu_cores"] >= 1

    report = tmp_path / "report"
    out = run_cli("metalab-compare", str(sweep), "--out", str(report), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["algorithm.name"]: r for r in csv.DictReader((report / "comparison.csv").open())}
    assert sorted(rows) == ["maml", "protonet"]
    for name, row in rows.items():
        test = results[name]["metrics"]["test/acc"]
        assert float(row["test_mean"]) == pytest.approx(100 * test["mean"])
        assert float(row["test_ci95"]) == pytest.approx(100 * test["ci95"])
        assert float(row["train_steps"]) == 3
        assert float(row["train_cpu_seconds"]) == pytest.approx(
            results[name]["train"]["cpu_seconds"], abs=0.06
        )
    assert float(rows["maml"]["published"]) == 98.7
    assert float(rows["protonet"]["published"]) == 98.8
    assert float(rows["maml"]["gap_to_published"]) == pytest.approx(
        float(rows["maml"]["test_mean"]) - 98.7
    )
    markdown = (report / "comparison.md").read_text()
    assert "Finn et al. 2017" in markdown and "Snell et al. 2017" in markdown


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif("METALAB_DATA" not in os.environ, reason="set METALAB_DATA for Omniglot")
def test_the_gpu_script_runs_its_table_and_prints_throughput(tmp_path):
    """benchmarks/reproduce_gpu.sh end to end, on the CPU (TRAINER=cpu) with tiny overrides:
    everything but the device is what a GPU run does."""
    import subprocess

    from tests.helpers.cli import cli_env

    script = BENCHMARKS / "reproduce_gpu.sh"
    out = subprocess.run(
        ["bash", str(script), "trainer.max_steps=2", "trainer.val_check_interval=2",
         "val.tasks=4", "eval.tasks=6", "strategy=loop"],
        env=cli_env(TRAINER="cpu", MINUTES="1", OUT=str(tmp_path / "gpu")),
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("tasks/s")[-1].splitlines()  # the lines after the script's header
    lines = [line for line in table if line.split() and line.split()[0].endswith("_seed0")]
    assert [line.split()[0] for line in lines] == ["0_maml_seed0", "1_protonet_seed0"]
    for line in lines:
        assert line.split()[1] == "2" and float(line.split()[3]) > 0  # steps, tasks/s
    assert (tmp_path / "gpu" / "comparison" / "comparison.md").is_file()


def test_the_gpu_script_refuses_without_a_gpu(tmp_path):
    import subprocess

    import torch

    from tests.helpers.cli import cli_env

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    script = BENCHMARKS / "reproduce_gpu.sh"
    out = subprocess.run(
        ["bash", str(script)], env=cli_env(OUT=str(tmp_path / "x")), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "no CUDA GPU" in out.stderr
    assert not (tmp_path / "x").exists()
