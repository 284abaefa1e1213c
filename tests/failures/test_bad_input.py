"""Bad input stops before training with one sentence naming the problem and the fix."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from metalab import algorithms
from metalab.assembly import build_data
from metalab.data import datamodule
from metalab.errors import ConfigError, MetalabError
from metalab.paths import config_dir
from metalab.preflight import OMNIGLOT_CHARACTERS, check_algorithm_keys, check_config
from metalab.train import main as train_main
from tests.helpers.cli import run_cli


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def metalab_train_in_process(monkeypatch, where: Path, *argv: str) -> str:
    """Run metalab-train's entry point in this process; return the message it exits with."""
    monkeypatch.chdir(where)
    monkeypatch.setattr(sys, "argv", ["metalab-train", *argv])
    try:
        with pytest.raises(SystemExit) as stop:
            train_main()
    finally:
        GlobalHydra.instance().clear()
    return str(stop.value.code)


def _no_data(*args, **kwargs):
    raise AssertionError("a config check touched the data")


# --- the command line -----------------------------------------------------------------------


def test_unknown_group_option_is_one_sentence_naming_the_valid_ones(tmp_path):
    out = run_cli("metalab-train", "algorithm=mamll", cwd=tmp_path)
    assert out.returncode == 1
    shipped = sorted(path.stem for path in (Path(config_dir()) / "algorithm").glob("*.yaml"))
    assert out.stderr.strip() == (
        "metalab: error: algorithm=mamll is not a known algorithm: did you mean maml? "
        f"choose one of {', '.join(shipped)}."
    )
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run directory


def test_unknown_key_suggests_the_closest_setting(tmp_path, monkeypatch):
    message = metalab_train_in_process(monkeypatch, tmp_path, "algorithm.inner_lrr=0.1")
    assert message.startswith("metalab: error: algorithm.inner_lrr is not a metalab setting")
    assert "did you mean algorithm.inner_lr?" in message and "--cfg job" in message
    assert not (tmp_path / "outputs").exists()


def test_unknown_key_of_the_chosen_group_option(tmp_path, monkeypatch):
    message = metalab_train_in_process(monkeypatch, tmp_path, "dataset=omniglot", "dataset.way=5")
    assert "dataset.way is not a metalab setting: did you mean dataset.ways?" in message


@pytest.mark.parametrize(
    "sweep",
    [("-m", "reproduce=navigation2d"), ("-m", "experiment=maml_rl_navigation2d,maml_sinusoid")],
)
def test_a_key_only_the_swept_options_have_points_to_plus_plus(sweep, tmp_path, monkeypatch):
    """Hydra applies the command line's keys to the config before a sweep chooses its group
    options, so a key of a swept option alone cannot be set plainly: ++ adds or overrides."""
    message = metalab_train_in_process(monkeypatch, tmp_path, *sweep, "dataset.horizon=12")
    assert "dataset.horizon is a setting of experiment=maml_rl_navigation2d" in message
    assert "write ++dataset.horizon=<value>" in message
    typo = metalab_train_in_process(monkeypatch, tmp_path, *sweep, "dataset.horizn=12")
    assert "dataset.horizn is not a metalab setting: did you mean dataset.horizon?" in typo
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


def test_a_typo_in_one_sweep_value_stops_the_whole_sweep_at_once(tmp_path, monkeypatch):
    message = metalab_train_in_process(monkeypatch, tmp_path, "-m", "algorithm=maml,fomal")
    assert "algorithm=fomal is not a known algorithm: did you mean fomaml?" in message
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


# --- run directories ------------------------------------------------------------------------


def test_existing_run_directory_is_never_overwritten(tmp_path, monkeypatch):
    """Refused before Hydra writes .hydra/: the earlier run's files stay byte for byte."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    earlier = {
        "results.json": json.dumps({"status": "completed", "metrics": {"test/mse": 0.5}}),
        ".hydra/config.yaml": "seed: 7\n",
        ".hydra/overrides.yaml": "- seed=7\n",
    }
    for name, text in earlier.items():
        (run_dir / name).write_text(text)
    message = metalab_train_in_process(
        monkeypatch, tmp_path, "trainer.max_steps=5", f"hydra.run.dir={run_dir}"
    )
    assert message == (
        f"metalab: error: {run_dir} already holds a completed run and metalab never overwrites "
        "one: choose a new hydra.run.dir (or leave it at its default), or add resume=true to run "
        "it again with the earlier files moved to attempt-N/."
    )
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == sorted(
        [".hydra", *earlier]
    )
    for name, text in earlier.items():
        assert (run_dir / name).read_text() == text


def test_resume_of_a_completed_run_is_refused(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"status": "completed"}')
    message = metalab_train_in_process(
        monkeypatch, tmp_path, "resume=true", f"hydra.run.dir={run_dir}"
    )
    assert "already holds a completed run, so resume=true has nothing to do" in message
    assert [p.name for p in run_dir.iterdir()] == ["results.json"]


def test_missing_dataset_root_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    out = run_cli(
        "metalab-train",
        "dataset=omniglot",
        "model=conv4",
        f"dataset.root={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "metalab: error:" in out.stderr and str(missing) in out.stderr
    assert "dataset.root" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and str(missing) in results["error"]


# --- values that cannot work ----------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.meta_batch=0", "algorithm.meta_batch=0: expected an integer >= 1"),
        ("trainer.max_steps=-1", "trainer.max_steps=-1: expected an integer >= 0"),
        ("eval.tasks=0", "eval.tasks=0: expected an integer >= 1 and <= 1000000"),
        ("val.tasks=0", "val.tasks=0: expected an integer >= 1 and <= 1000000"),
        ("optimizer.lr=0", "optimizer.lr=0: expected a number > 0 and <= 10000 (a learning rate"),
        ("algorithm.inner_lr=-0.1", "algorithm.inner_lr=-0.1: expected a number > 0"),
        ("algorithm.eval_inner_lr=0", "algorithm.eval_inner_lr=0: expected a number > 0"),
        ("algorithm.inner_steps=0", "algorithm.inner_steps=0: expected an integer >= 1"),
        (
            "algorithm.eval_inner_steps=-2",
            "algorithm.eval_inner_steps=-2: expected an integer >= 1",
        ),
    ],
)
def test_non_positive_settings_are_refused_before_any_data(override, message, monkeypatch):
    monkeypatch.setattr(datamodule, "build_sources", _no_data)
    with pytest.raises(ConfigError) as error:
        check_config(compose_train(override))
    assert str(error.value).startswith(message)


def test_first_order_false_with_fomaml_points_to_maml():
    cfg = compose_train("algorithm=fomaml", "algorithm.first_order=false")
    with pytest.raises(ConfigError, match="use algorithm=maml"):
        check_config(cfg)


class _NoSecondOrder:
    """An algorithm with no first_order notion (as Reptile): its constructor has no such key."""

    def __init__(self, inner_loop, inner_steps, inner_lr, eval_inner_steps, eval_inner_lr):
        pass


class _Declared(_NoSecondOrder):
    config_keys = ("inner_steps", "inner_lr", "eval_inner_steps", "eval_inner_lr", "first_order")


def test_first_order_with_an_algorithm_that_has_no_such_notion(monkeypatch):
    monkeypatch.setitem(algorithms.ALGORITHMS, "noorder", _NoSecondOrder)
    cfg = compose_train("algorithm.first_order=true")
    cfg.algorithm.name = "noorder"
    with pytest.raises(ConfigError) as error:
        check_algorithm_keys(cfg)
    message = str(error.value)
    assert message.startswith(
        "algorithm=noorder has no notion of algorithm.first_order (set to True): remove the "
        "override, or choose an algorithm that has it ("
    )
    having = message.rsplit("(", 1)[1].rstrip(").").split(", ")
    assert {"maml", "fomaml"} <= set(having) and "noorder" not in having
    cfg.algorithm.first_order = False  # an inherited default of false is not an error
    check_algorithm_keys(cfg)
    monkeypatch.setitem(algorithms.ALGORITHMS, "noorder", _Declared)
    cfg.algorithm.first_order = True  # a class that declares its keys is taken at its word
    check_algorithm_keys(cfg)


def test_test_ways_different_from_training_ways_with_a_fixed_head(monkeypatch):
    monkeypatch.setattr(datamodule, "build_sources", _no_data)
    cfg = compose_train("dataset=omniglot", "model=conv4", "dataset.test_ways=20")
    with pytest.raises(ConfigError, match="test_ways=20 differs from dataset.ways=5"):
        check_config(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_says_use_cpu():
    with pytest.raises(ConfigError) as error:
        check_config(compose_train("trainer=gpu"))
    assert str(error.value).startswith("trainer=gpu but no CUDA GPU is visible to torch")
    assert str(error.value).endswith("use trainer=cpu, or install a CUDA build of torch.")


def test_sinusoid_without_support_points_is_refused():
    with pytest.raises(ConfigError, match="shots=0"):
        build_data(compose_train("dataset.shots=0"))


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "dataset.ways=5000",
            "dataset.ways=5000 but the vinyals train split has only 4112 classes: set "
            "dataset.ways to at most 4112.",
        ),
        ("dataset.test_ways=700", "dataset.test_ways=700 but the vinyals val split has only 688"),
        (
            "dataset.queries=20",
            "dataset.shots + dataset.queries = 1 + 20 = 21 but each Omniglot character has only "
            "20 drawings: lower them so that they sum to at most 20.",
        ),
        ("dataset.test_shots=15", "dataset.test_shots + dataset.test_queries = 15 + 15 = 30"),
    ],
)
def test_episodes_larger_than_the_split_are_refused_before_decoding(override, message, monkeypatch):
    monkeypatch.setattr(datamodule, "build_sources", _no_data)
    cfg = compose_train("dataset=omniglot", "model=conv4", override)
    if "test_ways" in override:
        cfg.dataset.ways = cfg.dataset.test_ways  # the fixed head needs equal ways
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert str(error.value).startswith(message)


needs_data = pytest.mark.skipif(
    "METALAB_DATA" not in os.environ, reason="set METALAB_DATA to run the real-data checks"
)


@needs_data
def test_the_split_sizes_checked_before_decoding_match_the_split_files():
    root = Path(os.environ["METALAB_DATA"]) / "omniglot" / "splits_vinyals"
    lines = [len((root / f"{p}.txt").read_text().split()) for p in ("train", "val", "test")]
    assert lines == [4 * n for n in OMNIGLOT_CHARACTERS["vinyals"]]


@needs_data
@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.ways=5000", "ways=5000 but there are only"),
        ("dataset.queries=20", "shots \\+ queries = 1 \\+ 20 = 21 but each class has only 20"),
    ],
)
def test_episodes_larger_than_the_split_allows(override, message):
    root = Path(os.environ["METALAB_DATA"]) / "omniglot"
    cfg = compose_train("dataset=omniglot", "model=conv4", f"dataset.root={root}", override)
    with pytest.raises(MetalabError, match=message):
        build_data(cfg)


def test_check_config_runs_once_per_config(monkeypatch):
    """The run guard checks a run's config (with Hydra's node) and train() gets it again
    (without): the checks run once; a changed config is checked anew."""
    import metalab.preflight as preflight

    calls = []
    original = preflight.check_values
    monkeypatch.setattr(preflight, "_CHECKED", set())
    monkeypatch.setattr(
        preflight, "check_values", lambda cfg, *a, **k: calls.append(1) or original(cfg, *a, **k)
    )
    with initialize_config_dir(config_dir(), version_base="1.3"):
        guarded = compose("train", ["debug=tiny"], return_hydra_config=True)
        job = compose("train", ["debug=tiny"])
    preflight.check_config(guarded)
    preflight.check_config(job)
    assert len(calls) == 1
    job.seed = 3
    preflight.check_config(job)
    assert len(calls) == 2
