"""Runtime failures lose nothing: NaN losses, SIGINT/SIGTERM, foreign checkpoints, no W&B."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metalab import loggers
from metalab.assembly import build_data, build_module
from metalab.checkpoints import check_same_setup, load_checkpoint, load_weights
from metalab.errors import ConfigError
from metalab.evaluate import evaluate
from metalab.numerics import InnerGradientMonitor, non_finite_error
from metalab.paths import config_dir
from tests.helpers.cli import SCRIPTS, read_results, run_cli, wandb_summary

# The monitor is called here without a Trainer; its self.log() is then a no-op.
NO_TRAINER = pytest.mark.filterwarnings("ignore:.*self.trainer. reference is not registered")
QUICK = ["val.tasks=5", "eval.tasks=10", "strategy=loop", "trainer.enable_progress_bar=false"]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def finite(state_dict: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


# --- numbers --------------------------------------------------------------------------------


def test_nan_outer_loss_stops_with_step_loss_and_cause_and_keeps_the_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    out = run_cli(
        "metalab-train",
        "optimizer.lr=10000",
        "trainer.max_steps=50",
        "trainer.val_check_interval=1",
        "numerics.inner_grad_every_n_steps=1",
        *QUICK,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    message = (
        "the meta-training loss is not finite at step 1: the meta-parameters have grown to "
        "|w| = 1e+04 (the outer update diverged); the outer learning rate is probably too high "
        "(optimizer.lr=10000): lower it, or set optimizer.grad_clip. The checkpoints written "
        "before this step are kept."
    )
    assert f"metalab: error: {message}" in out.stderr
    # the blow-up was reported (logged) before the NaN
    assert "the inner gradient norm is 1.35e+25 at step 1 (warning threshold" in out.stdout
    results = read_results(run_dir)
    assert results["status"] == "failed" and results["error"] == message
    assert results["checkpoints"] == ["best.ckpt", "last.ckpt"]
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 1 and finite(last["state_dict"])  # the weights before the NaN
    summary = wandb_summary(run_dir)
    assert summary["state"] != "running" and summary["exit_code"] == 1


def tiny_module_and_batch(*overrides: str):
    """A sinusoid MAML module and one meta-batch, the same whatever ran before (seeded)."""
    torch.manual_seed(0)
    cfg = compose_train("algorithm.meta_batch=3", *overrides)
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    return module, next(iter(data.train_dataloader()))


def test_nan_in_the_inner_loop_names_the_inner_step_and_the_inner_learning_rate():
    module, batch = tiny_module_and_batch("algorithm.inner_lr=3", "algorithm.inner_steps=5")
    losses, _ = module.strategy.meta_gradient(
        module.algorithm.meta_objective, dict(module.model.named_parameters()), batch, lambda _: 0
    )
    assert not torch.isfinite(losses).all()  # a real blow-up, not an injected NaN
    message = str(non_finite_error(module, batch, losses))
    assert message.startswith("the meta-training loss is not finite at step 0: the inner ")
    assert "(support) loss of task" in message and "inner gradient norm up to" in message
    assert (
        "the inner learning rate is probably too high (algorithm.inner_lr=3): lower it" in message
    )


def test_meta_parameters_thrown_out_of_range_blame_the_outer_learning_rate():
    module, batch = tiny_module_and_batch("optimizer.lr=10000")
    with torch.no_grad():  # what one Adam step of lr 10000 does to the weights
        for p in module.model.parameters():
            p.add_(torch.sign(torch.randn_like(p)) * 1e4)
    losses, _ = module.strategy.meta_gradient(
        module.algorithm.meta_objective, dict(module.model.named_parameters()), batch, lambda _: 0
    )
    assert not torch.isfinite(losses).all()
    message = str(non_finite_error(module, batch, losses))
    assert "the meta-parameters have grown to |w| = 1e+04 (the outer update diverged)" in message
    assert "the outer learning rate is probably too high (optimizer.lr=10000)" in message


class MetricsRecorder:
    """A stand-in logger: what ``log_metrics`` received."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.rows.append((step, metrics))


@NO_TRAINER
def test_an_exploding_inner_gradient_is_reported(caplog):
    module, batch = tiny_module_and_batch("algorithm.inner_lr=0.01")
    with torch.no_grad():
        for p in module.model.parameters():
            p.mul_(1e3)  # a meta-update that went too far
    monitor = InnerGradientMonitor(every_n_steps=1, threshold=1e3)
    logged = MetricsRecorder()
    trainer = type("T", (), {"global_step": 7, "loggers": [logged]})()
    with caplog.at_level(logging.WARNING, logger="metalab"):
        monitor.on_train_batch_start(trainer, module, batch, 0)
        monitor.on_train_batch_start(trainer, module, batch, 1)
    (step, metrics), _ = logged.rows  # logged at the step it was measured, each time
    assert step == 7 and metrics["train/inner_grad_norm"] > 1e3
    warnings = [r.getMessage() for r in caplog.records if "inner gradient norm" in r.getMessage()]
    assert len(warnings) == 1  # once, not every step
    assert "at step 7 (warning threshold numerics.inner_grad_warn=1000)" in warnings[0]
    assert "lower algorithm.inner_lr (now 0.01)" in warnings[0]


@NO_TRAINER
def test_a_normal_inner_gradient_is_not_reported(caplog):
    module, batch = tiny_module_and_batch()
    monitor = InnerGradientMonitor(every_n_steps=1, threshold=1e3)
    with caplog.at_level(logging.WARNING, logger="metalab"):
        trainer = type("T", (), {"global_step": 0, "loggers": []})()
        monitor.on_train_batch_start(trainer, module, batch, 0)
    assert not caplog.records


# --- signals --------------------------------------------------------------------------------


def start_training(run_dir: Path, cwd: Path) -> subprocess.Popen:
    script = Path(sys.executable).with_name("metalab-train")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", SCRIPTS["metalab-train"]]
    return subprocess.Popen(
        [
            *argv,
            "trainer.max_steps=100000",
            "trainer.val_check_interval=2",
            "logger=csv",
            *QUICK,
            f"hydra.run.dir={run_dir}",
        ],
        cwd=cwd,
        env=dict(os.environ, WANDB_SILENT="true", HYDRA_FULL_ERROR="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT; a user's Ctrl+C does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_cleanly_with_a_checkpoint_and_resume_continues(tmp_path, signum):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, tmp_path)
    deadline = time.time() + 600
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.5)
    time.sleep(1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 128 + signum.value, stderr[-3000:]
    results = read_results(run_dir)
    step = results["step"]
    assert results["status"] == "interrupted" and results["signal"] == signum.name
    assert (
        f"metalab: interrupted by {signum.name} at step {step}, checkpoint "
        f"{run_dir / 'checkpoints' / 'interrupted.ckpt'} written; results.json says interrupted: "
        "re-run the same command (same hydra.run.dir or hydra.sweep.dir) to continue from the "
        "checkpoint (resume=auto, the default)"
    ) in stderr
    saved = load_checkpoint(run_dir / "checkpoints" / "interrupted.ckpt")
    assert saved["global_step"] == step > 0 and finite(saved["state_dict"])
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] <= step
    if signum != signal.SIGTERM:
        return
    before = (run_dir / "results.json").read_bytes()
    out = run_cli(
        "metalab-train",
        f"trainer.max_steps={step + 3}",
        "trainer.val_check_interval=2",
        "logger=csv",
        *QUICK,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = read_results(run_dir)
    assert resumed["status"] == "completed" and resumed["train"]["steps"] == step + 3
    assert resumed["resumed_from"] == str(run_dir / "attempt-1/checkpoints/interrupted.ckpt")
    assert (run_dir / "attempt-1" / "results.json").read_bytes() == before  # kept, not deleted
    assert (run_dir / "attempt-1" / ".hydra" / "config.yaml").is_file()


# --- checkpoints ----------------------------------------------------------------------------


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["METALAB_TEST_MARKER"]),))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("METALAB_TEST_MARKER", str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode()}, evil)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(evil)
    assert str(error.value) == (
        f"ckpt_path={evil} is not a readable metalab checkpoint (UnpicklingError): pass a "
        "checkpoint written by metalab-train."
    )
    assert not marker.exists()


def test_a_checkpoint_of_another_algorithm_or_model_is_refused():
    maml = compose_train()
    with pytest.raises(ConfigError) as error:
        check_same_setup(maml, compose_train("algorithm=fomaml"), "a.ckpt")
    assert str(error.value) == (
        "a.ckpt was trained with algorithm=maml but this run has algorithm=fomaml: set "
        "algorithm=maml to continue from it, or start a new run (a new hydra.run.dir, without "
        "resume=true)."
    )
    with pytest.raises(ConfigError, match=r"model.hidden=\[40, 40\] but this run has model.hid"):
        check_same_setup(maml, compose_train("model.hidden=[8]"), "a.ckpt")
    check_same_setup(maml, compose_train("optimizer.lr=0.1", "seed=3"), "a.ckpt")  # same setup


def test_weights_of_another_model_are_refused_in_one_sentence():
    module, _ = tiny_module_and_batch()
    other, _ = tiny_module_and_batch("model.hidden=[8]")
    with pytest.raises(ConfigError) as error:
        load_weights(module, {"state_dict": other.state_dict()}, "b.ckpt")
    message = str(error.value)
    assert message.startswith("the weights in b.ckpt do not fit the model this config builds (")
    assert message.endswith("pass a checkpoint of the same algorithm and model.")
    assert "\n" not in message


def test_metalab_eval_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    overrides = OmegaConf.load(Path(config_dir()) / "eval.yaml")
    overrides.ckpt_path = str(bogus)
    with pytest.raises(ConfigError) as error:
        evaluate(overrides)
    assert str(error.value).startswith(f"ckpt_path={bogus} is not a readable metalab checkpoint")
    assert bogus.read_text() == "not a checkpoint"


# --- W&B ------------------------------------------------------------------------------------


def test_wandb_online_without_a_key_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    with caplog.at_level(logging.WARNING):
        assert loggers.wandb_mode("online") == "offline"
    assert "no W&B credentials (WANDB_API_KEY or `wandb login`) were found: logging offline" in (
        caplog.text
    )


def test_wandb_online_without_network_falls_back_to_offline_at_once(monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    started = time.time()
    with caplog.at_level(logging.WARNING):
        assert loggers.wandb_mode("online") == "offline"
    assert time.time() - started < 10
    assert "the W&B server ('127.0.0.1', 9) cannot be reached: logging offline" in caplog.text


def test_wandb_offline_is_not_touched(monkeypatch):
    monkeypatch.setattr(loggers, "wandb_reachable", lambda: pytest.fail("no network check"))
    assert loggers.wandb_mode("offline") == "offline"
