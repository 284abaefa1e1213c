"""benchmarks/throughput.py compares like with like: its textbook steps and metalab's steps
compute the same outer gradient (bit for bit on the sinusoid MLP)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from metalab.execution import LoopStrategy
from tests.helpers.paths import BENCHMARKS

SCRIPT = BENCHMARKS / "throughput.py"


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["throughput"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["throughput"]


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
def test_textbook_and_metalab_steps_take_the_same_gradient(throughput, algorithm):
    workload = throughput.WORKLOADS["sinusoid"]
    batch = throughput.make_batch(workload).slice(0, 4)
    first_order = throughput.ALGORITHMS[algorithm]
    gradients = []
    for textbook in (True, False):
        torch.manual_seed(0)
        if textbook:
            model = throughput.textbook_model(workload)
            step = (
                throughput.textbook_reptile_step(model, batch, workload)
                if algorithm == "reptile"
                else throughput.textbook_step(model, batch, workload, first_order)
            )
        else:
            model = throughput.metalab_model(workload)
            step = (
                throughput.metalab_reptile_step(model, batch, workload, LoopStrategy())
                if algorithm == "reptile"
                else throughput.metalab_step(model, batch, workload, first_order, LoopStrategy())
            )
        step()
        gradients.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*gradients, strict=True))


def test_the_mamlpp_rows_run_the_phase_they_name(throughput):
    """``mamlpp-msl`` scores every inner step (hybrid cannot run it, so it has no hybrid
    row); ``mamlpp`` the final step alone, which hybrid runs."""
    workload = throughput.WORKLOADS["mamlpp5w1s"]
    model = throughput.metalab_model(workload)
    during = throughput.metalab_algorithm("mamlpp-msl", model, workload)
    after = throughput.metalab_algorithm("mamlpp", model, workload)
    assert during.multi_step_loss_active and not after.multi_step_loss_active
    assert "hybrid" in throughput.NOT_FOR["mamlpp-msl"]
    assert "hybrid" not in throughput.NOT_FOR.get("mamlpp", set())
