"""Loggers the way the ecosystem uses them (issue 20): W&B honours the environment variables
it documents (the command line still wins), loggers combine (``logger=[csv,wandb,tensorboard,
mlflow]``), MLflow logs to a local ./mlruns store, a missing package is refused with its
install command, and the best validation value is in the W&B summary that the W&B sweep
files optimise. No test here touches the network: W&B runs offline or is never started."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

from metalab import loggers
from metalab.cli import check_overrides
from metalab.errors import ConfigError
from metalab.paths import config_dir
from tests.helpers.cli import read_results, run_cli, wandb_summary
from tests.helpers.paths import ROOT

CONFIG = {"algorithm": {"name": "maml"}, "dataset": {"name": "sinusoid"},
          "model": {"name": "mlp"}, "run_name": "maml_sinusoid"}  # fmt: skip
ENV = ["WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR", "WANDB_RUN_GROUP",
       "WANDB_NAME", "WANDB_JOB_TYPE", "WANDB_TAGS", "WANDB_RESUME", "WANDB_RUN_ID",
       "WANDB_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
       "MLFLOW_ALLOW_FILE_STORE"]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No W&B or MLflow setting from the machine running the tests; the W&B server counts
    as reachable (it is never contacted: no run is started); files go to tmp_path."""
    for name in ENV:  # set first, so that the variable is restored (or removed) afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(loggers, "wandb_reachable", lambda timeout=3.0: True)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def logger_node(*overrides: str):
    """The ``logger`` node as metalab-train composes it with these command-line overrides."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides)).logger


def wandb_init(run_dir: Path, *overrides: str) -> dict:
    """What the W&B logger would pass to ``wandb.init`` (the run itself is never started)."""
    built = loggers.build_loggers(logger_node(*overrides), run_dir, None, CONFIG)
    (wandb,) = [lg for lg in built if isinstance(lg, WandbLogger)]
    return wandb._wandb_init


def test_wandb_mode_comes_from_the_environment_else_offline(tmp_path, clean_env):
    assert wandb_init(tmp_path)["mode"] == "offline"
    clean_env.setenv("WANDB_MODE", "online")
    clean_env.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_init(tmp_path)["mode"] == "online"


def test_the_command_line_mode_beats_the_environment(tmp_path, clean_env):
    clean_env.setenv("WANDB_MODE", "online")
    clean_env.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_init(tmp_path, "logger.wandb.mode=offline")["mode"] == "offline"
    clean_env.setenv("WANDB_MODE", "offline")
    assert wandb_init(tmp_path, "logger.wandb.mode=disabled")["mode"] == "disabled"


def test_online_from_the_environment_without_a_key_stays_offline(tmp_path, clean_env, caplog):
    clean_env.setenv("WANDB_MODE", "online")
    clean_env.setenv("HOME", str(tmp_path))  # no ~/.netrc
    with caplog.at_level(logging.WARNING):
        assert wandb_init(tmp_path)["mode"] == "offline"
    assert "WANDB_MODE=online but no W&B credentials" in caplog.text


def test_a_mode_w_and_b_does_not_know_is_refused_naming_where_it_came_from(clean_env):
    clean_env.setenv("WANDB_MODE", "dryrun")  # W&B's old name for offline
    assert loggers.wandb_mode(None) == "offline"
    clean_env.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match=r"^WANDB_MODE='sometimes' is not a W&B mode: set"):
        loggers.wandb_mode(None)
    with pytest.raises(ConfigError, match=r"^logger.wandb.mode='x' is not a W&B mode"):
        loggers.wandb_mode("x")


def test_wandb_settings_come_from_their_environment_variables(tmp_path, clean_env):
    env = {"WANDB_PROJECT": "proj", "WANDB_ENTITY": "team", "WANDB_RUN_GROUP": "study",
           "WANDB_NAME": "mine", "WANDB_JOB_TYPE": "tune", "WANDB_TAGS": "a, b",
           "WANDB_DIR": str(tmp_path / "wandb_dir"), "WANDB_RESUME": "must"}  # fmt: skip
    for name, value in env.items():
        clean_env.setenv(name, value)
    init = wandb_init(tmp_path / "run")
    assert (init["project"], init["entity"], init["group"]) == ("proj", "team", "study")
    assert (init["name"], init["job_type"], init["resume"]) == ("mine", "tune", "must")
    assert init["dir"] == str(tmp_path / "wandb_dir")
    assert init["tags"] == ["maml", "sinusoid", "mlp", "a", "b"]
    assert "anonymous" not in init  # wandb 0.31 warns about any value of it
    init = wandb_init(tmp_path / "run", "logger.wandb.project=p2", "logger.wandb.group=g2",
                      "logger.wandb.name=n2", "logger.wandb.tags=[c]")  # fmt: skip
    assert (init["project"], init["group"], init["name"]) == ("p2", "g2", "n2")
    assert init["tags"] == ["maml", "sinusoid", "mlp", "a", "b", "c"]


def test_without_environment_wandb_gets_metalabs_defaults(tmp_path):
    init = wandb_init(tmp_path)
    assert (init["project"], init["entity"], init["job_type"]) == ("metalab", None, "train")
    assert init["dir"] == str(tmp_path) and init["group"] is None
    # outside a Hydra job (job names: tests/orchestration/test_run_names.py)
    assert init["name"] == tmp_path.name


class Summary:
    """The part of a W&B run that the logger's checkpoint hook writes to."""

    def __init__(self) -> None:
        self.summary: dict = {}


def test_the_best_validation_value_goes_to_the_wandb_summary(tmp_path):
    run = Summary()
    logger = loggers.MetalabWandbLogger(save_dir=str(tmp_path), experiment=run)
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/acc", mode="max")
    last = ModelCheckpoint(dirpath=tmp_path, filename="last")  # monitors nothing
    best.best_model_score = torch.tensor(0.625)
    logger.after_save_checkpoint(best)
    logger.after_save_checkpoint(last)
    assert run.summary == {"val/acc_best": 0.625}
    best.best_model_score = torch.tensor(0.75)
    logger.after_save_checkpoint(best)
    assert run.summary == {"val/acc_best": 0.75}


def test_wandb_sweep_files_optimise_the_best_value_like_optuna():
    files = sorted((ROOT / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        metric = yaml.safe_load(path.read_text())["metric"]
        assert metric["name"] in ("val/acc_best", "val/mse_best"), path.name
        expected = "maximize" if metric["name"] == "val/acc_best" else "minimize"
        assert metric["goal"] == expected, path.name
    for path in sorted((ROOT / "conf" / "hparams_search").glob("*.yaml")):
        direction = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["direction"]
        assert direction in ("maximize", "minimize")


def test_logger_lists_are_checked_option_by_option():
    check_overrides(["logger=[csv,mlflow]", "logger.mlflow.experiment_name=x"])
    with pytest.raises(ConfigError, match="logger=tensorbord is not a known logger: did you"):
        check_overrides(["logger=[csv,tensorbord]"])
    with pytest.raises(ConfigError, match="logger.wandb.mode is not a metalab setting"):
        check_overrides(["logger=[csv,tensorboard]", "logger.wandb.mode=online"])


def test_composed_lists_hold_each_chosen_logger_and_keep_metrics_csv():
    node = logger_node("logger=[csv,tensorboard,mlflow]")
    assert node.csv and "wandb" not in node and {"tensorboard", "mlflow"} <= set(node)
    node = logger_node("logger=[wandb,tensorboard]")
    assert node.csv and {"wandb", "tensorboard"} <= set(node)
    assert not logger_node("logger=none").csv


@pytest.mark.parametrize("option", ["tensorboard", "mlflow"])
def test_a_logger_whose_package_is_missing_is_refused_with_the_install_command(
    tmp_path, clean_env, option
):
    real = importlib.util.find_spec
    missing = {"tensorboard", "tensorboardX", "mlflow"}
    clean_env.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name in missing else real(name, *a))  # fmt: skip
    with pytest.raises(ConfigError) as error:
        loggers.build_loggers(logger_node(f"logger=[csv,{option}]"), tmp_path, None, CONFIG)
    assert str(error.value).startswith(f"logger={option} needs the {option} package")
    assert f"pip install -e '.[{option}]'" in str(error.value)


def test_mlflow_defaults_to_a_local_mlruns_file_store(tmp_path, clean_env):
    import os

    assert loggers.mlflow_tracking_uri({}) == (tmp_path / "mlruns").resolve().as_uri()
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # MLflow 3 asks for the opt-in
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert loggers.mlflow_tracking_uri({}) == "http://tracking.example:5000"
    assert loggers.mlflow_tracking_uri({"tracking_uri": "sqlite:///x.db"}) == "sqlite:///x.db"


def test_a_job_run_again_in_its_directory_continues_its_mlflow_run(tmp_path, caplog):
    pytest.importorskip("mlflow", reason="pip install -e '.[mlflow]' to test the MLflow logger")
    node = logger_node("logger=[mlflow]", "logger.csv=false")
    (first,) = loggers.build_loggers(node, tmp_path / "run", "sweep1", CONFIG)
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    assert first.run_id == run_id
    run = first.experiment.get_run(run_id)
    assert run.data.params["algorithm/name"] == "maml"
    assert run.data.tags["group"] == "sweep1" and run.data.tags["dataset"] == "sinusoid"
    loggers.finish_loggers(failed=True)
    assert first.experiment.get_run(run_id).info.status == "FAILED"
    (again,) = loggers.build_loggers(node, tmp_path / "run", "sweep1", CONFIG)
    assert again.run_id == run_id
    loggers.finish_loggers(failed=False)
    (tmp_path / "run" / "mlflow_run_id").write_text("0" * 32 + "\n")  # a store that lost it
    with caplog.at_level(logging.WARNING):
        (fresh,) = loggers.build_loggers(node, tmp_path / "run", None, CONFIG)
    assert fresh.run_id not in (run_id, "0" * 32) and "starting a new run" in caplog.text
    loggers.finish_loggers(failed=False)


def test_all_four_loggers_combined_in_a_tiny_run(tmp_path, clean_env):
    """``logger=[csv,wandb,tensorboard,mlflow]`` in one debug=tiny run: every logger holds
    the run's metrics, named alike, and W&B's summary has the best validation value."""
    pytest.importorskip("tensorboard", reason="pip install -e '.[tensorboard]'")
    pytest.importorskip("mlflow", reason="pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    clean_env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # this test's own client reads the store

    out = run_cli("metalab-train", "debug=tiny", "algorithm=fomaml", "seed=3",
                  "logger=[csv,wandb,tensorboard,mlflow]", "hydra.run.dir=run",
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "run"
    results = read_results(run_dir)
    best = results["metrics"]["val/mse_best"]
    assert "val/mse" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    summary = wandb_summary(run_dir)
    assert summary["name"] == "fomaml_sinusoid,debug=tiny,seed=3"
    assert summary["summary"]["val/mse_best"] == pytest.approx(best)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert "val/mse" in events.Tags()["scalars"]
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED" and run.info.run_name == summary["name"]
    assert min(m.value for m in client.get_metric_history(run.info.run_id, "val/mse")) == (
        pytest.approx(best)
    )
    assert run.data.params["seed"] == "3"


def test_a_missing_logger_package_is_refused_by_the_config_check(monkeypatch):
    """Before the data is built or anything written: the check every run passes first."""
    from hydra import compose, initialize_config_dir

    from metalab import preflight
    from metalab.paths import config_dir

    real = importlib.util.find_spec
    monkeypatch.setattr(preflight, "_CHECKED", set())
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", ["debug=tiny", "logger=[csv,mlflow]"])
    with pytest.raises(ConfigError, match=r"logger=mlflow needs the mlflow package"):
        preflight.check_config(cfg)
