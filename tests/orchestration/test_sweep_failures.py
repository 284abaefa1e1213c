"""A sweep survives a failed job, says so at the end, and resume=true re-runs only what did
not complete, keeping every earlier file."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import read_results, run_cli

SWEEP = [
    "-m",
    # 6 jobs: lr 10000 diverges at the second step (jobs 1 and 5); scheduler=step without
    # its step_size is refused by the config checks (jobs 2 and 3); jobs 0 and 4 complete
    "optimizer.scheduler=none,step,cosine",
    "optimizer.lr=0.001,10000",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "algorithm.meta_batch=5",
    "val.tasks=5",
    "eval.tasks=10",
    "strategy=loop",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder, by relative path, except the log Hydra appends to."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "train.log"
    }


def test_failed_job_is_recorded_others_run_and_resume_reruns_only_it(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("metalab-train", *SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    jobs = sorted(
        (p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0])
    )
    assert [job.name.split("_")[0] for job in jobs] == ["0", "1", "2", "3", "4", "5"]
    assert "resume" not in jobs[0].name  # the job's directory does not depend on resume
    statuses = [read_results(job)["status"] for job in jobs]
    assert statuses == ["completed", "failed", "failed", "failed", "completed", "failed"]
    error = read_results(jobs[1])["error"]
    assert error.startswith("the meta-training loss is not finite at step 1")
    refused = read_results(jobs[2])
    assert refused["error_type"] == "ConfigError" and refused["error"].startswith(
        "optimizer.scheduler=step multiplies the outer lr by optimizer.gamma every "
        "optimizer.step_size outer steps, but optimizer.step_size is null"
    )
    assert not (jobs[2] / "checkpoints").exists()  # refused before any data or training
    assert out.returncode == 1  # the sweep ran to its end, and says something failed
    assert (
        f"metalab: error: 4 of 6 jobs did not complete:\n  {jobs[1].name}: failed ({error})\n"
        f"  {jobs[2].name}: failed ({refused['error']})"
    ) in out.stderr
    assert f"re-run the same command with resume=true hydra.sweep.dir={sweep}" in out.stderr

    # Without resume=true the sweep directory is refused as a whole, before Hydra writes in it.
    before = {job.name: snapshot(job) for job in jobs} | {
        "top": (sweep / "multirun.yaml").read_bytes()
    }
    out = run_cli("metalab-train", *SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 1
    assert (
        f"metalab: error: hydra.sweep.dir={sweep} already holds a sweep of 6 jobs and metalab "
        "never overwrites one: add resume=true"
    ) in out.stderr
    assert {job.name: snapshot(job) for job in jobs} | {
        "top": (sweep / "multirun.yaml").read_bytes()
    } == before

    # A job whose results.json is missing (killed mid-run) counts as unfinished.
    (jobs[4] / "results.json").unlink()
    unfinished = snapshot(jobs[4])
    out = run_cli("metalab-train", *SWEEP, "resume=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 1  # the four bad jobs fail again, and are the only ones reported
    assert "4 of 6 jobs did not complete" in out.stderr
    assert "already completed; skipped" in out.stdout
    assert snapshot(jobs[0]) == before[jobs[0].name]  # completed: byte for byte, .hydra too
    for bad in (1, 2, 3, 5):  # moved aside, never deleted
        assert snapshot(jobs[bad] / "attempt-1") == before[jobs[bad].name]
        assert read_results(jobs[bad])["status"] == "failed"
    assert snapshot(jobs[4] / "attempt-1") == unfinished
    assert read_results(jobs[4])["status"] == "completed"  # the unfinished job ran again
    assert (sweep / "multirun.attempt-1.yaml").read_bytes() == before["top"]
    assert not any(sweep.rglob(".hydra-kept"))


def test_a_sweep_cut_off_before_a_checkpoint_is_finished_by_the_same_command(tmp_path):
    """A sweep killed (a pre-emption) while a job had no checkpoint yet: the same command
    (resume=auto) keeps the completed job, runs the cut-off one again (its files moved to
    attempt-1/) and the one never started; another command is refused."""
    sweep = tmp_path / "sweep"
    command = [*SWEEP[:1], "seed=0,1,2", *SWEEP[3:], f"hydra.sweep.dir={sweep}"]
    assert run_cli("metalab-train", *command, cwd=tmp_path).returncode == 0
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [job.name.split("_")[0] for job in jobs] == ["0", "1", "2"]
    (jobs[1] / "results.json").unlink()  # job 1 killed before its first checkpoint,
    for file in (jobs[1] / "checkpoints").iterdir():
        file.unlink()
    (jobs[1] / "checkpoints").rmdir()
    for file in sorted(jobs[2].rglob("*"), reverse=True):  # job 2 never started
        file.unlink() if file.is_file() else file.rmdir()
    jobs[2].rmdir()
    completed, cut_off = snapshot(jobs[0]), snapshot(jobs[1])

    other = run_cli("metalab-train", *command, "trainer.max_steps=5", cwd=tmp_path)
    assert other.returncode == 1 and "already holds a sweep of 2 jobs" in other.stderr
    assert snapshot(jobs[0]) == completed and snapshot(jobs[1]) == cut_off

    out = run_cli("metalab-train", *command, cwd=tmp_path)  # the same command
    assert out.returncode == 0, out.stderr[-3000:]
    assert snapshot(jobs[0]) == completed  # kept byte for byte
    assert snapshot(jobs[1] / "attempt-1") == cut_off
    assert [read_results(job)["status"] for job in jobs] == ["completed"] * 3
