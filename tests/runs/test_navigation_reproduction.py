"""The paper's 2-D navigation comparison as one sweep (``reproduce=navigation2d``): MAML-RL,
the pretrained baseline (``algorithm.pretrain=true``) and a random initialisation
(``trainer.max_steps=0``: the initial weights tested), then metalab-compare's return against
test-time policy-gradient steps, on an axis that holds the (negative) returns. A key of the
swept presets alone (``dataset.horizon``) is set with ``++``: Hydra applies the command
line's keys before the sweep chooses the experiment."""

from __future__ import annotations

import pytest

from metalab.compare.cli import main as compare
from metalab.compare.groups import group_runs
from metalab.compare.load import load_run
from metalab.compare.plots import figure_adaptation_curves
from metalab.compare.rows import build_rows
from tests.helpers.cli import read_results, run_cli

JOBS = ("maml_rl_navigation2d", "maml_rl_navigation2d_pretrained", "maml_rl_navigation2d_random")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("navigation")
    out = run_cli(
        "metalab-train", "-m", "reproduce=navigation2d", "trainer.max_cpu_seconds=0.5",
        "algorithm.meta_batch=2", "dataset.shots=3", "dataset.queries=3", "++dataset.horizon=12",
        "val.tasks=2", "eval.tasks=3", "trainer.checkpoint_every_n_steps=null", "logger=csv",
        f"hydra.sweep.dir={root / 'sweep'}", cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "sweep"


def test_the_sweep_runs_maml_rl_and_both_baselines(sweep):
    results = {job: read_results(sweep / f"{i}_{job}_seed0") for i, job in enumerate(JOBS)}
    assert all(r["status"] == "completed" for r in results.values())
    maml, pretrained, random = (results[job] for job in JOBS)
    assert maml["config"]["algorithm"]["pretrain"] is False and maml["train"]["steps"] >= 1
    assert pretrained["config"]["algorithm"]["pretrain"] is True
    assert pretrained["train"]["steps"] >= 1
    assert random["train"]["steps"] == 0
    assert random["tested_checkpoint"] == "initial weights (no training step)"
    for r in results.values():
        steps = [row["step"] for row in r["metrics"]["test/return"]["per_step"]]
        assert steps == [0, 1, 2, 3]


def test_compare_draws_the_return_against_test_time_steps(sweep, tmp_path):
    assert compare([str(sweep), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "adaptation_curves.png").is_file()
    runs = [load_run(sweep / f"{i}_{job}_seed0") for i, job in enumerate(JOBS)]
    rows = build_rows(group_runs(runs))
    assert len(rows) == 3  # MAML-RL, pretrained and random apart
    ax = figure_adaptation_curves(rows).axes[0]
    curves = [line.get_ydata() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert len(curves) == 3 and all(len(c) == 4 for c in curves)
    low, high = ax.get_ylim()
    assert high == 0.0 and low < min(min(c) for c in curves) < 0
    assert "policy-gradient steps" in ax.get_xlabel()
