"""One process per run directory (issue 18, item 3): the same command started twice into one
directory is refused with the live process named, instead of taking the live run for a crashed
one and mixing the two runs' files; a lock whose owner died never stands in the way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metalab import run_lock
from metalab.checkpoints import load_checkpoint
from metalab.errors import ConfigError
from tests.helpers.cli import cli_argv, cli_env, run_cli

HOLD = (
    "import sys, time; from pathlib import Path; from metalab import run_lock; "
    "run_lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"
)


def hold_in_another_process(directory: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_directory_held_by_another_process_is_refused_with_its_owner(tmp_path):
    holder = hold_in_another_process(tmp_path / "run")
    try:
        with pytest.raises(ConfigError) as refused:
            run_lock.acquire(tmp_path / "run")
        assert f"in use by process {holder.pid} on " in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    run_lock.acquire(tmp_path / "run")  # the kernel released the dead owner's lock
    assert json.loads((tmp_path / "run" / run_lock.LOCK_NAME).read_text())["pid"] == os.getpid()
    run_lock.release(tmp_path / "run")
    assert not (tmp_path / "run" / run_lock.LOCK_NAME).exists()


def test_a_stale_lock_file_of_a_dead_process_does_not_block(tmp_path):
    (tmp_path / "run").mkdir()
    dead = {"pid": 999999, "host": "elsewhere", "since": 0}
    (tmp_path / "run" / run_lock.LOCK_NAME).write_text(json.dumps(dead))
    run_lock.acquire(tmp_path / "run")
    run_lock.release(tmp_path / "run")


# A sinusoid run long enough to be started twice (checkpoints every 20 steps).
RUN = [
    "trainer.max_steps=100000",
    "trainer.val_check_interval=50",
    "trainer.checkpoint_every_n_steps=20",
    "trainer.enable_progress_bar=false",
    "algorithm.meta_batch=5",
    "val.tasks=10",
    "eval.tasks=20",
    "strategy=loop",
    "logger=csv",
]


def test_the_same_command_twice_refuses_the_second_and_leaves_the_live_run_alone(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [*cli_argv("metalab-train"), *RUN, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 600
        while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline:
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.1)
        # resume=auto would take the live run for a crashed one (it has a checkpoint)
        second = run_cli("metalab-train", *RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith(f"metalab: error: {run_dir} is in use by process {first.pid}")
        assert "Traceback" not in second.stderr
        assert not (run_dir / "attempt-1").exists() and first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # its owner killed, the run continues with the same command (resume=auto)
    step = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    third = run_cli(
        "metalab-train", *RUN[1:], f"trainer.max_steps={step + 5}", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr[-3000:]
    assert (run_dir / "attempt-1").is_dir()
    assert json.loads((run_dir / "results.json").read_text())["train"]["steps"] == step + 5
    assert not (run_dir / run_lock.LOCK_NAME).exists()  # released at the end
