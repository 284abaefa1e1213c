"""``resume=PATH`` of another run's checkpoint into a new folder (more budget for a finished
run): the new run keeps tracking the best over both runs under the name best.ckpt (Lightning
drops a ModelCheckpoint's best score when its folder changed and wrote the first new best as
best-v1.ckpt beside the carried best.ckpt), and the first run's folder is only read."""

from __future__ import annotations

import csv
from pathlib import Path

from metalab.checkpoints import load_checkpoint
from tests.helpers.cli import read_results
from tests.helpers.forked import run_cli_forked

RUN = [
    "trainer.val_check_interval=25",
    "trainer.checkpoint_every_n_steps=20",
    "trainer.enable_progress_bar=false",
    "algorithm.meta_batch=5",
    "val.tasks=10",
    "eval.tasks=20",
    "strategy=loop",
    "logger=csv",
]


def train(cwd: Path, *args: str) -> None:
    out = run_cli_forked("metalab-train", *RUN, *args, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]


def best_state(ckpt: dict) -> tuple[dict, str]:
    """The best-checkpoint callback's state, and its mode (min or max)."""
    ((key, state),) = [
        (k, s)
        for k, s in ckpt["callbacks"].items()
        if k.startswith("ModelCheckpoint") and s["monitor"]
    ]
    return state, "max" if "'mode': 'max'" in key else "min"


def validations(run_dir: Path, monitor: str) -> list[float]:
    rows = csv.DictReader((run_dir / "metrics.csv").read_text().splitlines())
    return [float(row[monitor]) for row in rows if row.get(monitor)]


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_a_longer_budget_for_a_finished_run_continues_in_a_new_folder(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(tmp_path, "trainer.max_steps=60", f"hydra.run.dir={first}")
    before = files(first)
    first_best, mode = best_state(load_checkpoint(first / "checkpoints" / "last.ckpt"))
    train(
        tmp_path,
        "trainer.max_steps=120",
        f"resume={first / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={second}",
    )
    assert files(first) == before  # read, never written
    kept = sorted(p.name for p in (second / "checkpoints").glob("*.ckpt"))
    assert kept == ["best.ckpt", "last.ckpt"], kept
    last = load_checkpoint(second / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 120
    state, _ = best_state(last)
    here = str((second / "checkpoints").resolve())
    assert state["dirpath"] == here and state["best_model_path"] == f"{here}/best.ckpt"
    # the best over both runs' validations, not over the second run's alone
    monitor = state["monitor"]
    both = validations(first, monitor) + validations(second, monitor)
    assert len(validations(second, monitor)) >= 2
    expected = max(both) if mode == "max" else min(both)
    assert abs(float(state["best_model_score"]) - expected) <= 1e-6 * max(1.0, abs(expected))
    results = read_results(second)
    assert results["status"] == "completed" and results["tested_checkpoint"] == "best.ckpt"
    assert results["train"]["steps"] == 120
