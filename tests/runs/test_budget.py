"""``trainer.max_cpu_seconds`` stops training on the process's CPU time, then tests as usual."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from metalab.budget import CpuTimeBudget
from metalab.errors import ConfigError
from tests.helpers.cli import read_results, train_run


def test_a_cpu_budget_stops_training_and_the_run_still_tests(tmp_path):
    run_dir = train_run(
        tmp_path,
        "trainer.max_steps=1000000",
        "trainer.max_cpu_seconds=4",
        "trainer.val_check_interval=50",
        "trainer.enable_progress_bar=false",
        "val.tasks=5",
        "eval.tasks=10",
        "strategy=loop",
        "logger=csv",
    )
    results = read_results(run_dir)
    assert results["status"] == "completed" and results["num_test_tasks"] == 10
    assert 0 < results["train"]["steps"] < 1000000
    assert "trainer.max_cpu_seconds=4 reached at step" in (run_dir / "train.log").read_text()


def test_a_budget_that_is_not_positive_is_refused():
    with pytest.raises(ConfigError, match="max_cpu_seconds=0"):
        CpuTimeBudget(0)


def test_a_resumed_run_spends_what_is_left_of_the_budget_not_a_fresh_one():
    first = CpuTimeBudget(240)
    first.load_state_dict({"used_cpu_seconds": 100.0})  # two attempts: 100 s, then more
    first.on_train_start(None, None)
    saved = first.state_dict()["used_cpu_seconds"]
    assert saved >= 100.0
    resumed = CpuTimeBudget(240)
    resumed.load_state_dict({"used_cpu_seconds": 240.0})  # all spent before a kill
    resumed.on_train_start(None, None)
    trainer = SimpleNamespace(should_stop=False, global_step=7)
    resumed.on_train_batch_end(trainer)
    assert trainer.should_stop  # a fresh budget would have trained for 240 more seconds
    fresh = CpuTimeBudget(240)
    fresh.on_train_start(None, None)
    trainer = SimpleNamespace(should_stop=False, global_step=7)
    fresh.on_train_batch_end(trainer)
    assert not trainer.should_stop
