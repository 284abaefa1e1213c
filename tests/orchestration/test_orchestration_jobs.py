"""Jobs as schedulers start them: two W&B sweep agents starting jobs at the same moment,
and an Optuna study killed mid-way and resumed from its SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import cli_argv, cli_env, read_results, run_cli, wandb_run_record
from tests.helpers.paths import ROOT

TINY = [
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "val.tasks=5",
    "eval.tasks=5",
    "strategy=loop",
]


def agent_command(sweep_file: Path, budget: dict) -> tuple[list[str], dict]:
    """The command line a W&B agent builds from a sweep file (wandb's own helpers), for the
    first value of each parameter; ``budget`` replaces values to keep the run tiny."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    sweep = yaml.safe_load(sweep_file.read_text())
    chosen = {}
    for name, spec in sweep["parameters"].items():
        if "value" in spec:
            chosen[name] = spec["value"]
        elif "values" in spec:
            chosen[name] = spec["values"][0]
        else:  # a log-uniform range: its geometric middle
            chosen[name] = float((spec["min"] * spec["max"]) ** 0.5)
    chosen.update(budget)
    args = sweep_utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in chosen.items()}}
    )
    args.update(env=["/usr/bin/env"], program=[sweep["program"]], interpreter=["python"])
    command = []
    for part in sweep_utils.create_sweep_command(sweep["command"]):
        command += args[part[2:-1]] if part.startswith("${") else [part]
    return command, chosen


def test_two_wandb_agents_starting_jobs_at_once(tmp_path):
    """Two agents of a W&B sweep start a job each at the same moment: the sweep file's
    command line drives Hydra overrides, each job gets its own directory (the default run
    directory carries microseconds) and continues the W&B run its agent created."""
    sweep_file = ROOT / "sweeps" / "sinusoid_maml_lr.yaml"
    budget = {
        "trainer.max_steps": 2,
        "trainer.val_check_interval": 1,
        "logger.wandb.mode": "offline",
    }  # an agent would log online
    command, chosen = agent_command(sweep_file, budget)
    assert command[:2] == ["/usr/bin/env", "metalab-train"]
    assert "trainer.enable_progress_bar=False" in command  # booleans as W&B writes them
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    procs = [
        subprocess.Popen(
            [*command, "val.tasks=5", "eval.tasks=5", "strategy=loop"],
            cwd=tmp_path,
            env=cli_env(WANDB_RUN_ID=f"agentrun{i}", PATH=path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, err[-3000:]
    runs = sorted((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(runs) == 2, runs
    # <date>/<HH-MM-SS-microseconds>_maml_sinusoid: complete, distinct names
    stamps = [run.name.split("_")[0] for run in runs]
    assert all(len(stamp) == len("12-00-00-000000") for stamp in stamps)
    assert stamps[0] != stamps[1]
    run_ids = set()
    for run in runs:
        config = read_results(run)["config"]
        assert config["algorithm"]["inner_lr"] == pytest.approx(chosen["algorithm.inner_lr"])
        assert config["optimizer"]["lr"] == pytest.approx(chosen["optimizer.lr"])
        assert config["trainer"]["max_steps"] == 2 and config["seed"] == chosen["seed"]
        run_ids.add(wandb_run_record(run)["run_id"])
    assert run_ids == {"agentrun0", "agentrun1"}  # each job logs to its agent's run


def trial_states(db: Path) -> list[str]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            return [row[0] for row in connection.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:  # created but no tables yet, or locked
        return []


def test_optuna_study_killed_mid_way_resumes_from_its_sqlite_file(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    search = tmp_path / "search"
    args = [
        "-m",
        "hparams_search=sinusoid_maml",
        "hydra.sweeper.n_trials=3",
        "logger=csv",
        *TINY,
        f"hydra.sweep.dir={search}",
    ]
    db = search / "optuna.db"
    proc = subprocess.Popen(
        [*cli_argv("metalab-train"), *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 1200
    while "COMPLETE" not in trial_states(db) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.kill()  # as a crash or a lost node would
    _, err = proc.communicate()
    done_first = trial_states(db).count("COMPLETE")
    assert 1 <= done_first < 3, f"the study was not interrupted mid-way: {err[-2000:]}"
    first_jobs = {
        p.name: (p / "results.json").read_bytes()
        for p in search.iterdir()
        if (p / "results.json").is_file()
    }

    out = run_cli("metalab-train", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    states = trial_states(db)
    assert states.count("COMPLETE") == 3  # the study was finished, not restarted
    assert states.count("RUNNING") == 0
    assert f"{done_first} trials complete, {3 - done_first} to run" in out.stdout + out.stderr
    jobs = {p.name for p in search.iterdir() if (p / "results.json").is_file()}
    assert len(jobs) == 3 and set(first_jobs) <= jobs
    for name, content in first_jobs.items():  # finished trials are left as they were
        assert (search / name / "results.json").read_bytes() == content
    best = yaml.safe_load((search / "optimization_results.yaml").read_text())
    values = [read_results(search / j)["metrics"]["val/mse_best"] for j in jobs]
    assert best["best_value"] == pytest.approx(min(values))
