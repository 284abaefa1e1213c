"""A run killed with SIGKILL continues with the same command (resume=auto) and ends exactly where
an uninterrupted run ends; two runs with the same seed write identical metrics.csv.

The uninterrupted reference run is the console script in a fresh interpreter; the runs that
must match it are metalab-train forked from this process (tests/helpers/forked.py): killed,
interrupted and resumed as the console script is, without importing torch again each time,
and compared with a process that shares nothing with them (not even Python's hash seed)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from metalab.checkpoints import ClockCheckpoint, StepCheckpoint, load_checkpoint
from metalab.run_lock import LOCK_NAME
from tests.helpers.cli import read_results, run_cli
from tests.helpers.forked import ForkedProcess, forkable, popen_cli

# Sinusoid MAML with a checkpoint every 50 steps, each a validation step (a checkpoint there
# is written after the validation): long enough (~10 s) to be killed part-way, with Adam, a
# cosine schedule and the episode stream all to be restored.
STEPS = 200
RUN = [
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=50",
    "trainer.checkpoint_every_n_steps=50",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "optimizer.scheduler=cosine",
    "algorithm.meta_batch=5",
    "val.tasks=10",
    "eval.tasks=20",
    "strategy=loop",
    "logger=csv",
]


def train(run_dir: Path, cwd: Path, fresh: bool = False) -> subprocess.CompletedProcess:
    """metalab-train RUN into run_dir: forked, or in a fresh interpreter."""
    out = run_cli("metalab-train", *RUN, f"hydra.run.dir={run_dir}", cwd=cwd, fresh=fresh)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def metrics_csv(run_dir: Path) -> Path:
    return run_dir / "metrics.csv"


def rows(path: Path) -> dict[int, dict[str, str]]:
    """metrics.csv as {step: the row's non-empty training/validation values}."""
    table: dict[int, dict[str, str]] = {}
    for row in csv.DictReader(path.read_text().splitlines()):
        values = {k: v for k, v in row.items() if v and k.split("/")[0] in ("train", "val")}
        if values:
            table.setdefault(int(row["step"]), {}).update(values)
    return table


def comparable(results: dict) -> dict:
    """What a run computed, without where and when it ran."""
    return {"metrics": results["metrics"], "steps": results["train"]["steps"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("uninterrupted")
    train(where / "run", where, fresh=True)
    return where / "run"


def test_two_runs_with_the_same_seed_write_identical_metrics(uninterrupted, tmp_path):
    train(tmp_path / "again", tmp_path)
    first, second = metrics_csv(uninterrupted), metrics_csv(tmp_path / "again")
    assert len(first.read_text().splitlines()) > 40  # a training curve, not one line
    # every value the runs computed is identical; only time/* (the clock) may differ
    assert rows(first) == rows(second)
    assert first.read_text().splitlines()[0] == second.read_text().splitlines()[0]
    assert comparable(read_results(uninterrupted)) == comparable(read_results(tmp_path / "again"))


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """A run's files; not the lock its (killed) process held, which is no file of the run."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != LOCK_NAME
    }


def test_a_killed_run_resumes_from_its_checkpoint_and_matches_the_uninterrupted_run(
    uninterrupted, tmp_path
):
    run_dir = tmp_path / "run"
    process = start(run_dir, tmp_path)
    wait_for_checkpoint(process, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists()  # killed: nothing recorded how it ended
    before = snapshot(run_dir)
    checkpoint = load_checkpoint(last)
    killed_at = checkpoint["global_step"]
    assert 0 < killed_at < STEPS
    # the validation that followed the checkpoint's step ran before it was written (Lightning
    # skips it on resume: written before it, the run would lose it for good)
    assert all(step in validations(run_dir) for step in range(49, killed_at, 50))
    clock = next(v for k, v in checkpoint["callbacks"].items() if "TrainingClock" in k)
    assert clock["cpu_seconds"] > 0 and clock["wall_seconds"] > 0

    train(run_dir, tmp_path)  # the same command: resume=auto
    resumed = read_results(run_dir)
    assert resumed["status"] == "completed"
    assert resumed["resumed_from"] == str(run_dir / "attempt-1" / "checkpoints" / "last.ckpt")
    log = (run_dir / "train.log").read_text()
    assert f"resume=auto: continuing from {run_dir / 'attempt-1/checkpoints/last.ckpt'}" in log
    assert comparable(resumed) == comparable(read_results(uninterrupted))
    # the resumed curve is the uninterrupted one from the checkpoint on
    full, tail = rows(metrics_csv(uninterrupted)), rows(metrics_csv(run_dir))
    # (a row at the checkpoint's step is the next step's: the inner-gradient norm it logs first)
    assert min(tail) >= killed_at and max(tail) == max(full) == STEPS - 1
    differ = {step: (tail[step], full[step]) for step in tail if tail[step] != full[step]}
    assert not differ
    assert validations(run_dir) == validations(uninterrupted)  # every point of the curve
    assert sorted(validations(run_dir)) == [49, 99, 149, 199]
    # the training clock goes on from the checkpoint's time, not from zero
    times = [
        (int(r["step"]), float(r["time/cpu_seconds"]))
        for r in csv.DictReader(metrics_csv(run_dir).read_text().splitlines())
        if r.get("time/cpu_seconds")
    ]
    assert times and all(t > clock["cpu_seconds"] for _, t in times)
    assert [t for _, t in times] == sorted(t for _, t in times)
    assert resumed["train"]["cpu_seconds"] >= round(times[-1][1], 1)  # results.json keeps 0.1 s
    # nothing from before the kill is lost: it is all in attempt-1/, byte for byte
    assert snapshot(run_dir / "attempt-1") == before


def validations(run_dir: Path) -> dict[int, str]:
    """Every validation a run logged, over its attempts: {step logged: val/mse}."""
    logged: dict[int, str] = {}
    for path in [*sorted(run_dir.glob("attempt-*/metrics.csv")), metrics_csv(run_dir)]:
        if path.is_file():  # a run killed before the logger first wrote has none
            logged |= {step: row["val/mse"] for step, row in rows(path).items() if "val/mse" in row}
    return logged


def test_checkpoints_by_the_clock_alone_resume_to_the_uninterrupted_run(uninterrupted, tmp_path):
    """trainer.checkpoint_every_minutes writes last.ckpt by wall clock (Lightning's
    train_time_interval), however long a step takes: killed after its first one, long before
    the first validation (step 50) or step trigger (none), the run resumes from it."""
    by_clock = ["trainer.checkpoint_every_n_steps=null", "trainer.checkpoint_every_minutes=0.0005"]
    run_dir = tmp_path / "run"
    process = start(run_dir, tmp_path, *by_clock)
    wait_for_checkpoint(process, run_dir)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    killed_at = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < killed_at < 50  # the clock's checkpoint: nothing else writes one before step 50
    out = run_cli("metalab-train", *RUN, *by_clock, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = read_results(run_dir)
    assert resumed["resumed_from"] == str(run_dir / "attempt-1" / "checkpoints" / "last.ckpt")
    assert comparable(resumed) == comparable(read_results(uninterrupted))


def test_a_clock_checkpoint_due_at_a_validation_step_is_written_after_the_validation(tmp_path):
    """ClockCheckpoint, due at every batch (0 minutes), driven through the hooks Lightning
    calls, on a trainer that validates after every 3rd batch: the save of a batch that a
    validation follows waits for that validation's end (a checkpoint before it would make a
    resumed run skip it: the test above, by steps)."""
    events: list[str] = []
    epoch_loop = SimpleNamespace(total_batch_idx=0)
    trainer = SimpleNamespace(
        enable_validation=True, val_check_batch=3, sanity_checking=False,
        strategy=SimpleNamespace(broadcast=lambda due: due),
        fit_loop=SimpleNamespace(epoch_loop=epoch_loop),
        save_checkpoint=lambda path, weights_only: events.append(f"save {Path(path).name}"),
    )  # fmt: skip
    clock = ClockCheckpoint(tmp_path, minutes=0.0)
    clock.on_train_start(trainer, None)
    for batch in range(6):
        epoch_loop.total_batch_idx = batch
        events.append(f"batch {batch}")
        clock.on_train_batch_end(trainer, None, None, None, batch)
        if (batch + 1) % 3 == 0:
            events.append("validation")
            clock.on_validation_end(trainer, None)
    assert events == [
        "batch 0", "save last.ckpt", "batch 1", "save last.ckpt",
        "batch 2", "validation", "save last.ckpt",
        "batch 3", "save last.ckpt", "batch 4", "save last.ckpt",
        "batch 5", "validation", "save last.ckpt",
    ]  # fmt: skip


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_the_same_command(tmp_path):
    """Nothing to continue from, nothing lost by starting again: the same command (a requeued
    job) re-runs it with the earlier files in attempt-1/; another command is refused."""
    short = [o for o in RUN if not o.startswith(("trainer.max_steps", "trainer.val_check"))]
    short += ["trainer.max_steps=10", "trainer.val_check_interval=5"]
    first, run_dir = tmp_path / "first", tmp_path / "run"
    assert run_cli("metalab-train", *short, f"hydra.run.dir={first}", cwd=tmp_path).returncode == 0
    shutil.copytree(first, run_dir, ignore=shutil.ignore_patterns(LOCK_NAME))
    # what a kill before the first checkpoint leaves: no results.json, no checkpoints/
    (run_dir / "results.json").unlink()
    shutil.rmtree(run_dir / "checkpoints")
    before = snapshot(run_dir)

    other = run_cli("metalab-train", *short, "seed=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert other.returncode != 0 and "Traceback" not in other.stderr
    assert (
        f"{run_dir} already holds a run stopped before its first checkpoint that was started "
        f"with other overrides ({' '.join(short)}; now: {' '.join(short)} seed=1)"
    ) in other.stderr
    assert snapshot(run_dir) == before  # refused before anything was moved or written

    out = run_cli("metalab-train", *short, f"hydra.run.dir={run_dir}", cwd=tmp_path)  # resume=auto
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr  # said before Hydra opens the run's train.log
    assert f"resume=auto: {run_dir} holds this run, stopped before its first checkpoint" in said
    assert f"resume=true: moved the earlier attempt to {run_dir / 'attempt-1'}" in said
    assert snapshot(run_dir / "attempt-1") == before
    again = read_results(run_dir)
    assert again["status"] == "completed" and "resumed_from" not in again
    assert comparable(again) == comparable(read_results(first))
    assert rows(metrics_csv(run_dir)) == rows(metrics_csv(first))


def start(run_dir: Path, cwd: Path, *more: str) -> ForkedProcess | subprocess.Popen:
    """The run of RUN in a process of its own that takes Ctrl+C as a terminal's job does."""
    return popen_cli(
        "metalab-train", *RUN, *more, f"hydra.run.dir={run_dir}", cwd=cwd, stderr=subprocess.PIPE
    )


def wait_for_checkpoint(process: ForkedProcess | subprocess.Popen, run_dir: Path) -> None:
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.is_file() and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)


def test_ctrl_c_stops_at_a_step_boundary_and_resume_equals_the_uninterrupted_run(
    uninterrupted, tmp_path
):
    run_dir = tmp_path / "run"
    process = start(run_dir, tmp_path)
    wait_for_checkpoint(process, run_dir)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    stopped = read_results(run_dir)
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGINT"
    saved = load_checkpoint(run_dir / "checkpoints" / "interrupted.ckpt")
    assert saved["global_step"] == stopped["step"] and 0 < stopped["step"] < STEPS
    train(run_dir, tmp_path)  # the same command: resume=auto
    resumed = read_results(run_dir)
    assert resumed["resumed_from"] == str(run_dir / "attempt-1/checkpoints/interrupted.ckpt")
    assert comparable(resumed) == comparable(read_results(uninterrupted))
    full, tail = rows(metrics_csv(uninterrupted)), rows(metrics_csv(run_dir))
    assert max(tail) == max(full) == STEPS - 1
    assert {step: tail[step] for step in tail} == {step: full[step] for step in tail}


def test_a_ctrl_c_right_after_a_validation_resumes_to_the_uninterrupted_curve(
    uninterrupted, tmp_path, monkeypatch
):
    """Ctrl+C pressed just after the validation of step 50 (sent by the run itself once its
    last.ckpt there is written, so the moment is exact): the interrupt checkpoint is made at
    that step boundary, where Lightning's resume would count the batch a second time and log
    every later step one too high. The resumed run logs at the uninterrupted run's steps."""
    if not forkable("metalab-train"):
        pytest.skip("the Ctrl+C is sent from inside the run: needs the forked metalab-train")
    save_after_validation = StepCheckpoint.on_validation_end

    def press_ctrl_c_at_step_50(self, trainer, pl_module):
        save_after_validation(self, trainer, pl_module)
        if trainer.global_step == 50 and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(StepCheckpoint, "on_validation_end", press_ctrl_c_at_step_50)
    run_dir = tmp_path / "run"
    process = start(run_dir, tmp_path)  # forked: it runs the patched hook
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr[-3000:]
    assert read_results(run_dir)["step"] == 50
    monkeypatch.undo()
    train(run_dir, tmp_path)  # the same command: resume=auto
    assert comparable(read_results(run_dir)) == comparable(read_results(uninterrupted))
    full, tail = rows(metrics_csv(uninterrupted)), rows(metrics_csv(run_dir))
    assert min(tail) == 50 and max(tail) == max(full) == STEPS - 1
    assert {step: tail[step] for step in tail} == {step: full[step] for step in tail}
    assert validations(run_dir) == validations(uninterrupted)


def test_a_second_ctrl_c_aborts_at_once_with_130_and_keeps_last_ckpt(tmp_path, monkeypatch):
    # a console script of its own, not a fork: once in ~22 forked runs the second press,
    # landing inside a torch.func transform, ended in exit 1 (Lightning's teardown failing;
    # now reported as the abort, tests/failures/test_second_ctrl_c.py), as a user's run would
    monkeypatch.setenv("METALAB_TEST_SUBPROCESS", "1")
    run_dir = tmp_path / "run"
    slow = ["algorithm.meta_batch=300", "trainer.checkpoint_every_n_steps=1"]  # ~1 s a step
    process = start(run_dir, tmp_path, *slow)
    wait_for_checkpoint(process, run_dir)
    process.send_signal(signal.SIGINT)
    seen = []
    for line in process.stderr:  # the first press is taken: the step is finishing
        seen.append(line)
        if "press Ctrl+C again to abort at once" in line:
            break
    process.send_signal(signal.SIGINT)
    stderr = "".join(seen) + process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    results = read_results(run_dir)
    assert results["status"] == "interrupted" and results["signal"] == "SIGINT"
    # aborted mid-step: no interrupted.ckpt; the last whole step's checkpoint is the one to use
    assert not (run_dir / "checkpoints" / "interrupted.ckpt").exists()
    assert results["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] > 0
