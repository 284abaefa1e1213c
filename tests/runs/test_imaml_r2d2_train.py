"""iMAML and R2-D2 end to end through metalab-train: their Omniglot presets cut by debug=tiny
(one Hydra multirun, one process) write results.json and checkpoints that hold what they
meta-learn, R2-D2 tests on other ways than it trains on, and an iMAML run continues from its
checkpoint (a second process)."""

from __future__ import annotations

import os

import pytest
import torch

from metalab.module import MetaLearner
from tests.helpers.cli import preset_sweep, read_results, run_cli

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        "METALAB_DATA" not in os.environ,
        reason="set METALAB_DATA to the folder that holds omniglot/ to run the real-data tests",
    ),
]

PRESETS = ["imaml", "r2d2"]
# the presets' groups first, so that the overrides after them validate in the multirun
TINY = [
    "model=conv4",
    "dataset=omniglot",
    "debug=tiny",
    "model.channels=4",
    "eval.curve_points=null",
]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict:
    return preset_sweep(tmp_path_factory.mktemp("implicit"), PRESETS, *TINY)


def test_both_write_results(jobs):
    assert sorted(jobs) == PRESETS
    for name, run_dir in jobs.items():
        results = read_results(run_dir)
        assert results["status"] == "completed" and results["train"]["steps"] == 2, name
        test = results["metrics"]["test/acc"]
        assert test["tasks"] == 2 and 0.0 <= test["mean"] <= 1.0, name
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    imaml = read_results(jobs["imaml"])
    assert len(imaml["metrics"]["test/acc"]["per_step"]) == 16 + 1  # the preset's test steps
    r2d2 = read_results(jobs["r2d2"])
    assert r2d2["config"]["dataset"]["ways"] == 60 and r2d2["protocol"]["ways"] == 5
    assert len(r2d2["metrics"]["test/acc"]["per_step"]) == 1  # no inner loop


@pytest.mark.parametrize("name", PRESETS)
def test_checkpoint_holds_and_reloads_what_it_learns(jobs, name):
    ckpt = jobs[name] / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    reloaded = MetaLearner.load_from_checkpoint(ckpt, map_location="cpu")
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, state[key])
    if name == "r2d2":  # the logit scale is meta-learned from the preset's 10; lam is fixed
        assert float(state["algorithm.scale"]) != 10.0
        assert float(state["algorithm.log_lam"].exp()) == pytest.approx(50.0)


def test_imaml_continues_from_its_checkpoint(jobs, tmp_path):
    last = jobs["imaml"] / "checkpoints" / "last.ckpt"
    out = run_cli(
        "metalab-train", "experiment=imaml_omniglot_5w1s", *TINY, "trainer.max_steps=3",
        f"resume={last}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "resumed")
    assert results["status"] == "completed" and results["train"]["steps"] == 3
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 3


def test_eval_takes_imaml_s_test_time_lam(jobs, tmp_path):
    """``metalab-eval lam=0``: the authors' test (plain fine-tuning) from the same weights;
    refused for an algorithm without a test-time proximal term."""
    ckpt = jobs["imaml"] / "checkpoints" / "last.ckpt"
    rows = {}
    for lam in ("0", "50"):
        out = run_cli(
            "metalab-eval", f"ckpt_path={ckpt}", f"lam={lam}", "eval.tasks=2",
            "eval.curve_points=null", f"hydra.run.dir={tmp_path / lam}", cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        rows[lam] = read_results(tmp_path / lam)
        assert rows[lam]["config"]["algorithm"]["eval_lam"] == float(lam)
    losses = [r["metrics"]["test/acc"]["per_step"] for r in rows.values()]
    assert losses[0][0] == losses[1][0]  # the same weights before adaptation
    out = run_cli(
        "metalab-eval", f"ckpt_path={jobs['r2d2'] / 'checkpoints' / 'last.ckpt'}", "lam=0",
        f"hydra.run.dir={tmp_path / 'r2d2'}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0 and "algorithm=r2d2 has no test-time proximal term" in out.stderr
