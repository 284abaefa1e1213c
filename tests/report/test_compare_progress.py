"""metalab-compare on runs that have not ended: a training run without results.json (its
process alive, or killed) and one interrupted by a signal are listed under "Runs in
progress" with their validation curve so far, steps, time and time to each threshold, never
in the means; a metalab-eval still running is not a training run. A real run is compared
while it trains and after SIGKILL; the other cases are run folders laid out as metalab
writes them."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from metalab.compare.cli import main
from metalab.compare.load import load_run
from metalab.run_lock import LOCK_NAME
from tests.helpers.fake_runs import omniglot_run
from tests.helpers.forked import popen_cli

# (outer steps logged, val/acc, CPU seconds, wall seconds), over two attempts of one run
FIRST_ATTEMPT = [(99, 0.85, 40.0, 50.0), (199, 0.91, 80.0, 100.0)]
SECOND_ATTEMPT = [(299, 0.93, 120.0, 160.0), (399, 0.955, 160.0, 210.0)]


def write_metrics(folder: Path, curve: list[tuple[int, float, float, float]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "time/cpu_seconds", "time/wall_seconds",
                         "train/loss", "val/acc", "val/loss"])  # fmt: skip
        for step, acc, cpu, wall in curve:
            writer.writerow([0, step - 5, "", "", 0.3, "", ""])
            writer.writerow([0, step, cpu, wall, "", acc, 0.2])
        writer.writerow([0, curve[-1][0] + 40, "", "", 0.25, "", ""])  # trained on since


def unfinished_run(root: Path, name: str, algorithm: str = "maml", seed: int = 0,
                   owner: dict | None = None) -> Path:  # fmt: skip
    """A training run without results.json: Hydra's config, train.log, an earlier attempt
    (a resume) and the current one's metrics.csv, a last.ckpt, and the lock file ``owner``."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "algorithm": {"name": algorithm, "first_order": algorithm != "maml"},
              "dataset": {"name": "omniglot", "ways": 5, "shots": 1},
              "trainer": {"max_steps": 60000}}  # fmt: skip
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "train.log").write_text("training\n")
    write_metrics(run / "attempt-1", FIRST_ATTEMPT)
    write_metrics(run, SECOND_ATTEMPT)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not read")
    if owner is not None:
        (run / LOCK_NAME).write_text(json.dumps(owner))
    return run


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_status_says_whether_the_runs_process_is_alive(tmp_path):
    here, now = socket.gethostname(), time.time()
    alive = unfinished_run(tmp_path, "alive", owner={"pid": os.getpid(), "host": here,
                                                      "since": now})  # fmt: skip
    killed = unfinished_run(tmp_path, "killed", owner={"pid": dead_pid(), "host": here,
                                                        "since": now})  # fmt: skip
    # a pid given again to another process since: this process started long before "since"
    reused = unfinished_run(tmp_path, "reused", owner={"pid": os.getpid(), "host": here,
                                                        "since": now - 10**6})  # fmt: skip
    released = unfinished_run(tmp_path, "released")  # its process ended: the lock file went
    elsewhere = unfinished_run(tmp_path, "elsewhere", owner={"pid": 1, "host": "node-17",
                                                              "since": now})  # fmt: skip
    statuses = {run.name: load_run(run).status for run in (alive, killed, reused, released,
                                                            elsewhere)}  # fmt: skip
    assert statuses == {"alive": "running", "killed": "stopped", "reused": "stopped",
                        "released": "stopped", "elsewhere": "unfinished"}  # fmt: skip


def test_a_run_in_progress_has_its_curve_steps_and_time_so_far(tmp_path):
    run = load_run(unfinished_run(tmp_path, "run"))
    assert run.in_progress and not run.completed and not run.is_eval
    assert run.metric == "acc"
    # both attempts' validations, at the outer steps done (the step logged + 1)
    assert run.curve == [(100, 0.85), (200, 0.91), (300, 0.93), (400, 0.955)]
    assert run.val_best == 0.955
    assert run.train == {"steps": 440, "cpu_seconds": 160.0, "wall_seconds": 210.0}


def test_a_row_being_written_is_left_for_the_next_reading(tmp_path):
    """The run writes metrics.csv while it is read: a last line without its newline is a row
    half written (here cut inside a number), not a malformed file."""
    run_dir = unfinished_run(tmp_path, "run")
    with (run_dir / "metrics.csv").open("a") as handle:
        handle.write("0,499,2")  # a validation row cut off after its CPU seconds' first digit
    run = load_run(run_dir)
    assert run.curve[-1] == (400, 0.955) and run.train["cpu_seconds"] == 160.0
    with (run_dir / "metrics.csv").open("a") as handle:
        handle.write("00.0,260.0,,0.96,0.2\n")  # the row complete
    run = load_run(run_dir)
    assert run.curve[-1] == (500, 0.96) and run.train["cpu_seconds"] == 200.0


def test_runs_in_progress_are_listed_apart_and_kept_out_of_the_means(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for name, acc in (("0", 0.96), ("1", 0.98)):  # completed, with the same step budget
        results = omniglot_run(sweep, name, "maml", int(name), acc) / "results.json"
        recorded = json.loads(results.read_text())
        recorded["config"]["trainer"] = {"max_steps": 60000}
        results.write_text(json.dumps(recorded))
    unfinished_run(sweep, "2", "maml", seed=2)  # a seed still training
    unfinished_run(sweep, "3", "protonet", seed=0)  # a group with no result yet
    # an evaluation still running (metalab-eval writes evaluate.log, not train.log)
    (sweep / "eval" / ".hydra").mkdir(parents=True)
    (sweep / "eval" / ".hydra" / "config.yaml").write_text("ckpt_path: x.ckpt\n")
    (sweep / "eval" / "evaluate.log").write_text("testing\n")
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 in progress (2 stopped)" in printed

    table = {row["group"]: row for row in rows_of(out / "comparison.csv")}
    assert set(table) == {"maml"}  # protonet has no test result: no row
    assert float(table["maml"]["test_mean"]) == pytest.approx(97.0)  # seeds 0 and 1 only
    assert table["maml"]["runs"] == "2"

    progress = {row["group"]: row for row in rows_of(out / "in_progress.csv")}
    assert set(progress) == {"maml", "protonet"}
    row = progress["maml"]
    assert (row["seed"], row["status"], row["train_steps"], row["max_steps"]) == (
        "2", "stopped", "440", "60000")  # fmt: skip
    assert float(row["val_last"]) == 0.955 and row["val_last_step"] == "400"
    assert (row["step_to_acc90"], row["step_to_acc95"], row["step_to_acc97"]) == (
        "200", "400", "")  # fmt: skip
    assert float(row["cpu_seconds_to_acc90"]) == 80.0
    assert row["checkpoint"] == "last.ckpt" and row["path"] == "../sweep/2"

    listed = {(r["group"], r["seed"]): r["status"] for r in rows_of(out / "runs.csv")}
    assert listed == {("maml", "0"): "completed", ("maml", "1"): "completed",
                      ("maml", "2"): "stopped", ("protonet", "0"): "stopped"}  # fmt: skip
    markdown = (out / "comparison.md").read_text()
    assert "## Runs in progress" in markdown
    assert "| maml | 2 | stopped | 440 of 60,000 |" in markdown
    html = (out / "comparison.html").read_text()
    assert "<h2>Runs in progress</h2>" in html and 'href="../sweep/3"' in html
    image = Image.open(out / "progress_curves.png")
    image.verify()


def test_an_interrupted_run_is_in_progress_not_an_evaluation_of_its_checkpoint(tmp_path):
    """results.json of a run stopped by SIGTERM names the checkpoint it wrote; a
    metalab-eval's names the checkpoint it tested. Only the second is an evaluation."""
    run = unfinished_run(tmp_path, "run")
    written = run / "checkpoints" / "interrupted.ckpt"
    written.write_bytes(b"not read")
    results = {"status": "interrupted", "signal": "SIGTERM", "step": 452,
               "checkpoint": str(written), "config": yaml.safe_load(
                   (run / ".hydra" / "config.yaml").read_text())}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    loaded = load_run(run)
    assert loaded.status == "interrupted" and loaded.in_progress and not loaded.is_eval
    assert loaded.train["steps"] == 452 and loaded.curve[-1] == (400, 0.955)
    out = tmp_path / "report"
    assert main([str(run), "--out", str(out)]) == 0
    (row,) = rows_of(out / "in_progress.csv")
    assert (row["status"], row["checkpoint"], row["train_steps"]) == (
        "interrupted", "interrupted.ckpt", "452")  # fmt: skip
    assert "No run has completed yet" in (out / "comparison.md").read_text()


# Sinusoid MAML long enough (~2,000 steps) to be compared while it trains, then killed
LONG_RUN = [
    "trainer.max_steps=2000",
    "trainer.val_check_interval=20",
    "trainer.checkpoint_every_n_steps=20",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "algorithm.meta_batch=5",
    "val.tasks=10",
    "strategy=loop",
    "logger=csv",
]


def validated_and_saved(run_dir: Path) -> bool:
    """The run has logged a validation and written last.ckpt."""
    metrics = run_dir / "metrics.csv"
    return (run_dir / "checkpoints" / "last.ckpt").is_file() and (
        metrics.is_file() and "val/mse" in metrics.read_text()
    )


def test_a_real_run_is_compared_while_it_trains_and_after_a_kill(tmp_path):
    run_dir = tmp_path / "run"
    process = popen_cli("metalab-train", *LONG_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path,
                        stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not validated_and_saved(run_dir):
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.05)
        out = tmp_path / "while_training"
        assert main([str(run_dir), "--out", str(out)]) == 0
        assert process.poll() is None  # still training: the comparison saw it running
        (row,) = rows_of(out / "in_progress.csv")
        assert row["status"] == "running" and row["metric"] == "mse"
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    logged = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("val/mse")]
    out = tmp_path / "after_kill"
    assert main([str(run_dir), "--out", str(out)]) == 0
    (row,) = rows_of(out / "in_progress.csv")
    assert row["status"] == "stopped" and row["checkpoint"] == "last.ckpt"
    assert int(row["val_last_step"]) == int(logged[-1]["step"]) + 1
    assert float(row["val_last"]) == pytest.approx(float(logged[-1]["val/mse"]))
    assert float(row["train_cpu_seconds"]) == pytest.approx(float(logged[-1]["time/cpu_seconds"]))
    assert int(row["train_steps"]) >= int(row["val_last_step"])
    assert int(row["train_steps"]) < 2000
