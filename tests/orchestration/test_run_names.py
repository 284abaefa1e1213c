"""Runs can be told apart (issue 20): job directories and W&B run names carry the experiment
(else algorithm and dataset) and only the keys a sweep varies; a single run is named with its
algorithm and dataset; the W&B group names the sweep; a re-run of a sweep finds its jobs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict, read_write

from metalab.paths import config_dir
from metalab.run_names import SweepNames, job_label, sweep_label, swept_keys
from tests.helpers.cli import read_results, run_cli, wandb_run_record

OMNIGLOT = Path(os.environ.get("METALAB_DATA", "/nonexistent")) / "omniglot"
EXPERIMENTS = "experiment=maml_omniglot_5w1s,fomaml_omniglot_5w1s,protonet_omniglot_5w1s"
EXCLUDE = ["experiment", "hparams_search", "resume", "logger.wandb.group", "logger.wandb.mode"]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def sweep_jobs(*args: str) -> list[tuple[str, str]]:
    """(job directory name, W&B/MLflow run name) of each job of ``metalab-train -m <args>``,
    composed the way a launcher composes them, without running any: the sweep's config with
    the SweepNames callback applied, then each job from the hydra overrides plus its own."""
    from metalab.loggers import run_name

    master = compose_train()
    with read_write(master.hydra), open_dict(master.hydra):
        master.hydra.overrides.task = list(args)
    SweepNames().on_multirun_start(config=master)
    parsed = OverridesParser.create().parse_overrides(list(args))
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    names = []
    for num, job in enumerate(batch):
        cfg = compose_train(*master.hydra.overrides.hydra, *job)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.job.num = num
            cfg.hydra.mode = "MULTIRUN"
        config = OmegaConf.to_container(cfg, resolve=False)
        config = {k: v for k, v in config.items() if k != "hydra"}
        config["run_name"] = str(cfg.run_name)
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)
        try:
            names.append((str(cfg.hydra.sweep.subdir), run_name(Path("unused"), config)))
        finally:
            HydraConfig.instance().cfg = None
    return names


def test_three_experiments_get_three_distinct_names_with_no_constant_overrides():
    names = sweep_jobs(EXPERIMENTS, "seed=3", "debug=tiny", "logger=csv", "resume=true")
    assert names == [
        ("0_maml_omniglot_5w1s", "maml_omniglot_5w1s"),
        ("1_fomaml_omniglot_5w1s", "fomaml_omniglot_5w1s"),
        ("2_protonet_omniglot_5w1s", "protonet_omniglot_5w1s"),
    ]


def test_a_sweep_names_only_the_keys_it_varies():
    names = sweep_jobs("algorithm=maml,fomaml", "seed=0,1", "trainer.max_steps=7")
    assert [n for n, _ in names] == [
        "0_maml_sinusoid,seed=0", "1_maml_sinusoid,seed=1",
        "2_fomaml_sinusoid,seed=0", "3_fomaml_sinusoid,seed=1",
    ]  # fmt: skip
    assert [w for _, w in names] == [n.split("_", 1)[1] for n, _ in names]  # W&B: no number
    # an experiment preset with a swept key: the preset names the base
    names = sweep_jobs("experiment=maml_omniglot_5w1s", "algorithm.inner_lr=0.1,0.4")
    assert [n for n, _ in names] == [
        "0_maml_omniglot_5w1s,algorithm.inner_lr=0.1",
        "1_maml_omniglot_5w1s,algorithm.inner_lr=0.4",
    ]


def test_a_rerun_with_resume_names_the_same_jobs():
    first = sweep_jobs("algorithm=maml,fomaml", "seed=0,1", "debug=tiny")
    again = sweep_jobs("algorithm=maml,fomaml", "seed=0,1", "debug=tiny", "resume=true")
    assert first == again


def test_swept_keys_from_the_command_line_and_the_sweepers_params():
    assert swept_keys(["seed=0,1", "algorithm=maml", "x=range(3)"], None) == ["seed", "x"]
    params = {"algorithm.inner_lr": "tag(log, interval(0.05, 1.0))", "optimizer.lr": "0.1",
              "algorithm.meta_batch": "choice(16, 32)", "experiment": "a,b"}  # fmt: skip
    assert swept_keys(["algorithm.meta_batch=16"], params) == ["algorithm.inner_lr", "experiment"]


def test_job_label_of_a_single_run_has_algorithm_dataset_and_its_overrides():
    label = job_label(["algorithm=fomaml", "seed=3", "logger=csv", "logger.wandb.mode=online",
                       "resume=true"], None, EXCLUDE, None, "fomaml_sinusoid")  # fmt: skip
    assert label == "fomaml_sinusoid,seed=3"
    assert job_label([], None, EXCLUDE, "maml_omniglot_5w1s", "maml_omniglot") == (
        "maml_omniglot_5w1s"
    )
    # run_name on the command line is the base; a swept experiment then shows
    label = job_label(["run_name=mine", "experiment=a"], ["experiment"], EXCLUDE, "a", "mine")
    assert label == "mine,experiment=a"


def test_single_run_directories_carry_experiment_or_algorithm_and_dataset():
    assert str(compose_train("experiment=maml_omniglot_5w1s").hydra.run.dir).endswith(
        "_maml_omniglot_5w1s"
    )
    run_dir = str(compose_train("algorithm=fomaml", "seed=3").hydra.run.dir)
    stamp = r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}"
    assert re.fullmatch(rf"outputs/runs/{stamp}_fomaml_sinusoid", run_dir)


def test_sweep_label_names_the_sweep_by_date_and_time(tmp_path):
    assert sweep_label("outputs/multiruns/2026-11-22/10-00-00-000000") == (
        "2026-11-22_10-00-00-000000"
    )
    assert sweep_label("outputs/hparams_search/sinusoid_maml") == "hparams_search_sinusoid_maml"
    assert sweep_label(tmp_path / "a" / "sweep", cwd=tmp_path) == "a_sweep"
    assert sweep_label("/elsewhere/my_sweep", cwd=tmp_path) == "my_sweep"


def test_eval_directory_names_the_run_it_tests():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose(
            "eval",
            ["ckpt_path='outputs/multiruns/d/t/3_maml_omniglot_5w1s,seed=1/checkpoints/best.ckpt'"],
            return_hydra_config=True,
        )
    assert str(cfg.hydra.run.dir).endswith("_maml_omniglot_5w1s,seed=1")


def tiny_sweep(where: Path, *args: str):
    return run_cli("metalab-train", "-m", *args, "debug=tiny", "logger=[csv,wandb]",
                   "seed=3", cwd=where)  # fmt: skip


def test_tiny_sweep_names_and_groups_and_a_resumed_rerun_finds_its_jobs(tmp_path):
    """A real 2-job multirun (joblib-free, W&B offline): directories and W&B runs carry the
    algorithm and dataset, not the constant overrides; the group is the sweep's date and time;
    the same command with resume=true finds the same directories and skips them."""
    out = tiny_sweep(tmp_path, "algorithm=maml,fomaml")
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").glob("*/*")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0_maml_sinusoid", "1_fomaml_sinusoid"]
    for job in jobs:
        run = wandb_run_record(job)
        assert run["display_name"] == job.name.split("_", 1)[1]
        assert run["run_group"] == f"{sweep.parent.name}_{sweep.name}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", run["run_group"])
    again = tiny_sweep(tmp_path, "algorithm=maml,fomaml", "resume=true",
                       f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [j.name for j in jobs]
    assert (again.stdout + again.stderr).count("already completed; skipped") == 2


@pytest.mark.data
def test_three_experiment_sweep_runs_into_three_distinct_directories(tmp_path):
    if not OMNIGLOT.is_dir():
        pytest.skip("set METALAB_DATA to the folder holding omniglot/")
    out = run_cli("metalab-train", "-m", EXPERIMENTS, "debug=tiny", "logger=csv", "seed=3",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("*/results.json"))
    names = [j.parent.name for j in jobs]
    assert names == ["0_maml_omniglot_5w1s", "1_fomaml_omniglot_5w1s", "2_protonet_omniglot_5w1s"]
    assert [read_results(j.parent)["config"]["algorithm"]["name"] for j in jobs] == [
        "maml", "fomaml", "protonet",
    ]  # fmt: skip


def test_a_job_directory_named_the_old_way_is_found_again(tmp_path):
    """Sweeps started before these names (``<n>_<override_dirname>``) resume in their jobs'
    directories; a sweep without such a directory gets the new name."""
    cfg = compose_train(f"hydra.sweep.dir={tmp_path}", "debug=tiny", "seed=0",
                        "++hydra.job.env_set.METALAB_SWEPT='seed'")  # fmt: skip
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.job.num = 0
    assert cfg.hydra.sweep.subdir == "0_maml_sinusoid,seed=0"
    (tmp_path / "0_debug=tiny,seed=0").mkdir()
    OmegaConf.clear_cache(cfg)
    assert cfg.hydra.sweep.subdir == "0_debug=tiny,seed=0"
