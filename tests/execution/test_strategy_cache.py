"""strategy=auto's choice, kept per machine and workload (metalab.strategy_cache): measured
once, reused by the next run of the same workload without timing, measured again with
strategy_retime=true or for another workload; a damaged cache file costs a measurement."""

from __future__ import annotations

import json

import pytest
import torch

from metalab.execution import AutoStrategy
from metalab.execution import cache as strategy_cache
from tests.helpers.cases import SleepyLoop, metalab_meta_gradient, mlp_case
from tests.helpers.cli import read_results, run_cli


class CountingLoop(SleepyLoop):
    """A candidate that counts its calls: a reused choice must not time anything."""

    def __init__(self, delay: float, name: str) -> None:
        super().__init__(delay, name)
        self.calls = 0

    def meta_gradient(self, *args):
        self.calls += 1
        return super().meta_gradient(*args)


def candidates():
    return [CountingLoop(0.2, "slow"), CountingLoop(0.0, "fast")]


def step(auto: AutoStrategy, hidden: int = 16):
    model, _, kind, batch, lr = mlp_case()
    if hidden != 16:
        model = type(model)(1, 1, (hidden, hidden)).double()
    metalab_meta_gradient(model, kind, batch, auto, 1, lr, False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path))
    return tmp_path / strategy_cache.FILE


def test_a_choice_is_measured_once_and_reused_without_timing(cache):
    first = AutoStrategy(candidates(), min_seconds=0.0, cache=True)
    step(first)
    assert first.chosen.name == "fast" and cache.is_file()
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["chosen"] == 1 and set(entry["timings"]) == {"slow", "fast"}
    again = AutoStrategy(candidates(), min_seconds=0.0, cache=True)
    step(again)
    slow, fast = again.candidates
    assert again.chosen is fast and slow.calls == 0 and fast.calls == 1  # the step, no trial
    assert again.timings == pytest.approx(entry["timings"])


def test_retime_measures_again_and_replaces_the_entry(cache):
    step(AutoStrategy(candidates(), min_seconds=0.0, cache=True))
    before = json.loads(cache.read_text())
    retimed = AutoStrategy(candidates(), min_seconds=0.0, cache=True, retime=True)
    step(retimed)
    assert retimed.candidates[0].calls > 0  # the slow one was timed again
    after = json.loads(cache.read_text())
    assert after.keys() == before.keys()
    (key,) = after
    assert after[key]["measured"] >= before[key]["measured"]


def test_another_workload_is_measured_anew(cache):
    step(AutoStrategy(candidates(), min_seconds=0.0, cache=True))
    other = AutoStrategy(candidates(), min_seconds=0.0, cache=True)
    step(other, hidden=8)  # other parameter shapes
    assert other.candidates[0].calls > 0 and len(json.loads(cache.read_text())) == 2


def test_without_the_cache_nothing_is_written(cache):
    step(AutoStrategy(candidates(), min_seconds=0.0))
    assert not cache.exists()


def test_a_damaged_cache_file_costs_a_measurement(cache):
    cache.write_text("{ not json")
    auto = AutoStrategy(candidates(), min_seconds=0.0, cache=True)
    step(auto)
    assert auto.chosen.name == "fast" and len(json.loads(cache.read_text())) == 1


def test_a_second_run_reuses_the_first_run_s_choice(tmp_path):
    """End to end: the second run of the same workload says where its choice came from."""
    env_cache = tmp_path / "cache"
    runs = []
    for name in ("first", "second"):
        done = run_cli(
            "metalab-train",
            "debug=tiny",
            "strategy=auto",
            f"hydra.run.dir={tmp_path / name}",
            cwd=tmp_path,
            env={"METALAB_CACHE": str(env_cache)},
        )
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout + done.stderr)
    assert "as measured on this machine" not in runs[0]
    assert "as measured on this machine for this workload" in runs[1]
    first, second = (read_results(tmp_path / n) for n in ("first", "second"))
    assert first["strategy"] == second["strategy"]
    torch.testing.assert_close(
        first["metrics"]["test/mse"]["mean"], second["metrics"]["test/mse"]["mean"]
    )
