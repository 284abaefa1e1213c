"""The run-directory guard holds for every input (issue 18, items 1, 2 and 8): a value of the
wrong type, an evaluation pointed at a run, or resume=true in a folder of someone's own files
stops the job with one line before anything is written."""

from __future__ import annotations

import errno
import json
import shutil

import pytest

from metalab.errors import ConfigError
from tests.helpers.cli import run_cli
from tests.helpers.fake_runs import completed_run, snapshot


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
    out = run_cli("metalab-train", f"resume={resume}", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert out.returncode != 0
    assert "holds files that are not a metalab run (data, notes.txt)" in out.stderr
    assert snapshot(folder) == before and not (folder / "attempt-1").exists()


def test_a_sweep_aimed_at_a_single_run_is_refused_and_the_run_left_alone(tmp_path):
    run_dir = tmp_path / "done"
    before = completed_run(run_dir)
    out = run_cli(
        "metalab-train", "-m", "seed=0,1", "resume=false", f"hydra.sweep.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"hydra.sweep.dir={run_dir} holds a single run" in out.stderr
    assert snapshot(run_dir) == before


def test_a_run_directory_that_cannot_be_made_is_named_with_the_cause(tmp_path):
    (tmp_path / "report.txt").write_text("mine\n")
    out = run_cli("metalab-train", f"hydra.run.dir={tmp_path / 'report.txt' / 'run'}", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "cannot be used (Not a directory" in out.stderr.strip().splitlines()[-1]
    assert (tmp_path / "report.txt").read_text() == "mine\n"


def test_a_nearly_full_disk_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from metalab import run_status

    usage = shutil.disk_usage(tmp_path)._replace(free=10 * 2**20)
    monkeypatch.setattr(run_status.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(ConfigError, match="on a disk with 10.0 MiB free"):
        run_status.check_free_space(tmp_path)


def test_a_failed_write_is_one_line_naming_the_file_and_recorded(tmp_path, capsys):
    from omegaconf import OmegaConf

    from metalab.outcome import run_job

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "last.ckpt"))

    with pytest.raises(SystemExit) as stop:
        run_job(OmegaConf.create({"seed": 0}), tmp_path, False, full_disk)
    assert str(stop.value.code) == (
        f"metalab: error: could not write {tmp_path / 'last.ckpt'} (No space left on device): "
        "free space on its disk (or choose another hydra.run.dir) and re-run the same command; "
        "checkpoints already written are kept, and resume=auto continues from the last one."
    )
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_a_file_metalab_may_not_open_is_one_line_naming_it(tmp_path):
    from omegaconf import OmegaConf

    from metalab.outcome import run_job

    def unreadable_data():
        raise PermissionError(errno.EACCES, "Permission denied", "/data/omniglot/x.zip")

    with pytest.raises(SystemExit) as stop:
        run_job(OmegaConf.create({"seed": 0}), tmp_path, False, unreadable_data)
    assert str(stop.value.code).startswith(
        "metalab: error: cannot open /data/omniglot/x.zip (Permission denied): give this user "
        "access to it, or point dataset.root"
    )
