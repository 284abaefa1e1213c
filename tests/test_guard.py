"""The run-directory guard holds for every input (issue 18, items 1, 2 and 8): a value of the
wrong type, an evaluation pointed at a run, or resume=true in a folder of someone's own files
stops the job with one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import run_cli


def completed_run(run_dir: Path) -> dict[str, bytes]:
    """A finished run's files, as a user would not want to lose them; their bytes."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / "results.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
    (run_dir / "metrics.csv").write_text("epoch,step,val/mse\n0,9,0.5\n")
    (run_dir / "train.log").write_text("finished\n")
    return snapshot(run_dir)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "bad",
    [
        "optimizer.lr=abc",
        "algorithm.meta_batch=[1,2]",
        "trainer.max_steps=abc",
    ],
)
def test_a_wrong_type_stops_the_job_before_a_completed_run_is_touched(bad, tmp_path):
    run_dir = tmp_path / "done"
    before = completed_run(run_dir)
    out = run_cli("metalab-train", bad, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode != 0
    assert "metalab: error:" in out.stderr and "Traceback" not in out.stderr
    assert snapshot(run_dir) == before


def test_an_evaluation_never_writes_into_a_run_directory(tmp_path):
    run_dir = tmp_path / "done"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"weights")  # refused before reading
    before = completed_run(run_dir)
    out = run_cli(
        "metalab-eval", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0
    assert "metalab: error:" in out.stderr and "never overwrites" in out.stderr
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("resume", ["true", "auto"])
def test_a_folder_of_other_files_is_refused_and_left_as_it_is(resume, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my own notes\n")
    (folder / "data").mkdir()
    (folder / "data" / "x.csv").write_text("1,2\n")
    before = snapshot(folder)
    out = run_cli(
        "metalab-train", f"resume={resume}", f"hydra.run.dir={folder}", cwd=tmp_path
    )
    assert out.returncode != 0
    assert "holds files that are not a metalab run (data, notes.txt)" in out.stderr
    assert snapshot(folder) == before and not (folder / "attempt-1").exists()
