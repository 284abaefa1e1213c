"""CAVIA and BOIL end to end through metalab-train (one Hydra multirun, one process, on the
sinusoid with debug=tiny): each writes results.json and a checkpoint that reloads and holds
what it meta-learns (CAVIA's conditioning layer, BOIL's head, which its inner loop never
moves)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from metalab.assembly import build_data, build_module
from metalab.module import MetaLearner
from tests.helpers.cli import read_results, run_cli


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("cavia_boil")
    sweep = where / "sweep"
    out = run_cli(
        "metalab-train", "-m", "algorithm=cavia,boil", "dataset=sinusoid", "model=mlp",
        "debug=tiny", "algorithm.eval_inner_steps=2", f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}", cwd=where,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [p for p in sweep.iterdir() if (p / "results.json").is_file()]
    return {read_results(p)["config"]["algorithm"]["name"]: p for p in runs}


def test_both_train_and_test(jobs):
    assert sorted(jobs) == ["boil", "cavia"]
    for name, run_dir in jobs.items():
        results = read_results(run_dir)
        test = results["metrics"]["test/mse"]
        assert results["status"] == "completed" and results["train"]["steps"] == 2, name
        assert test["tasks"] == 2 and len(test["per_step"]) == 3 and test["mean"] > 0, name
        assert (run_dir / "checkpoints" / "last.ckpt").is_file(), name


def fresh_module(run_dir: Path) -> MetaLearner:
    """The module as metalab-train built it before the first step (same seed, same order)."""
    cfg = OmegaConf.create(read_results(run_dir)["config"])
    pl.seed_everything(int(cfg.seed), verbose=False)
    _, in_shape, out_features = build_data(cfg)
    return build_module(cfg, in_shape, out_features)


@pytest.mark.parametrize("name", ["cavia", "boil"])
def test_checkpoint_holds_and_reloads_what_is_meta_learned(jobs, name):
    ckpt = jobs[name] / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    reloaded = MetaLearner.load_from_checkpoint(ckpt, map_location="cpu")
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, state[key])
    fresh = fresh_module(jobs[name]).state_dict()
    assert sorted(fresh) == sorted(state)
    moved = {key for key in state if not torch.equal(fresh[key], state[key])}
    if name == "cavia":  # the context's weights into the first layer, and the network
        assert state["algorithm.conditioning.weight"].shape == (40, 5)
        assert {"algorithm.conditioning.weight", "model.0.weight", "model.4.weight"} <= moved
    else:  # the head (model.4) is fixed in the inner loop but meta-learned
        assert {"model.0.weight", "model.4.weight", "model.4.bias"} <= moved
