"""Launcher, sweeper and naming configs compose to what the README promises, without
running a sweep: the SLURM launcher even renders its sbatch script (with a stand-in srun)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metalab.paths import config_dir
from metalab.run_names import job_dirname
from tests.helpers.cli import run_cli


def hydra_config(tmp_path: Path, *overrides: str) -> dict:
    """`metalab-train ... --cfg hydra` as a user would run it, parsed."""
    out = run_cli("metalab-train", *overrides, "--cfg", "hydra", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return yaml.safe_load(out.stdout)["hydra"]


def test_slurm_launcher_composes_and_renders_sbatch_flags(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    launcher = hydra_config(
        tmp_path,
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=720",
    )["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1
    assert launcher["timeout_min"] == 720 and launcher["max_num_timeout"] == 3
    assert launcher["additional_parameters"] == {"requeue": True}
    # What the launcher hands to submitit (same split as hydra-submitit-launcher's launch())
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=tmp_path / "submitit",
        slurm_max_num_timeout=launcher["max_num_timeout"],
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {
        (k if k in base else f"slurm_{k}"): v
        for k, v in launcher.items()
        if k not in ("_target_", "submitit_folder", "max_num_timeout") and v is not None
    }
    params["name"] = "train"
    executor.update_parameters(**params)
    script = executor._executor._make_submission_file_text("python -m metalab.train", "x")
    for flag in (
        "--partition=gpu",
        "--gpus-per-node=1",
        "--time=720",
        "--requeue",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {flag}\n" in script, script
    assert executor._executor.max_num_timeout == 3


@pytest.mark.parametrize(
    ("preset", "direction"),
    [("sinusoid_maml", "minimize"), ("omniglot_maml_5w1s", "maximize")],
)
def test_hparams_search_presets_compose_with_sqlite_in_the_sweep_dir(preset, direction):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", [f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("resumable_optuna.ResumableOptunaSweeper")
    assert sweeper.direction == direction
    assert sweeper.storage == f"sqlite:///outputs/hparams_search/{preset}/optuna.db"
    assert "algorithm.inner_lr" in sweeper.params and sweeper.sampler.seed == cfg.seed
    if preset.startswith("omniglot"):
        assert cfg.dataset.name == "omniglot" and cfg.dataset.ways == 5


def test_parallel_launcher_is_joblib_with_processes():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=parallel"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2 and cfg.hydra.launcher.backend == "loky"


def test_override_dirname_leaves_out_keys_that_do_not_change_a_job():
    overrides = [
        "algorithm=fomaml",
        "seed=3",
        "logger.wandb.group=g",
        "hydra/launcher=parallel",
        "hparams_search=sinusoid_maml",
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    assert cfg.hydra.job.override_dirname == "algorithm=fomaml,seed=3"
    excluded = cfg.hydra.job.config.override_dirname.exclude_keys
    assert "resume" in excluded and "hydra.sweep.dir" in excluded


def test_job_dirname_is_one_bounded_path_component():
    assert job_dirname("algorithm=maml,seed=1") == "algorithm=maml,seed=1"
    assert "/" not in job_dirname("dataset.root=/data/omniglot,seed=1")
    assert job_dirname("") == "defaults"
    long_a = ",".join(f"model.layer{i}.width={i}" for i in range(40))
    long_b = long_a.replace("width=39", "width=40")
    name_a, name_b = job_dirname(long_a), job_dirname(long_b)
    assert len(name_a.encode()) <= 200 and len(name_b.encode()) <= 200
    assert name_a != name_b  # the hash of the full string keeps shortened names apart
    assert len(job_dirname("x=" + "é" * 300).encode()) <= 200


def test_wandb_run_takes_group_override_tags_and_the_saved_id(tmp_path, monkeypatch):
    from metalab.loggers import build_loggers

    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    cfg = OmegaConf.create(
        {
            "csv": False,
            "wandb": {
                "project": "p",
                "mode": "offline",
                "entity": None,
                "group": None,
                "job_type": "train",
                "name": None,
                "tags": ["mine"],
            },
        }
    )
    config = {
        "algorithm": {"name": "fomaml"},
        "dataset": {"name": "sinusoid"},
        "model": {"name": "mlp"},
    }
    (first,) = build_loggers(cfg, tmp_path, "sweep1", config)
    init = first._wandb_init
    assert init["group"] == "sweep1" and init["job_type"] == "train"
    assert init["tags"] == ["fomaml", "sinusoid", "mlp", "mine"]
    assert init["name"] == tmp_path.name  # outside a Hydra job: the run directory's name
    assert init["resume"] == "allow"
    assert init["id"] == (tmp_path / "wandb_run_id").read_text().strip()
    cfg.wandb.group = "my-study"
    (again,) = build_loggers(cfg, tmp_path, "sweep1", config)
    assert again._wandb_init["group"] == "my-study"  # logger.wandb.group overrides the sweep
    assert again._wandb_init["id"] == init["id"]  # same directory, same W&B run
