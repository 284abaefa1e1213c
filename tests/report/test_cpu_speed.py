"""CPU seconds buy different amounts of work on different machines: every run records one
thread's matmul rate, and metalab-compare's header shows the rates of its runs and warns when
they differ by more than one machine's drift (then CPU budgets compare machines too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metalab.compare.cli import main
from metalab.compare.header import cpu_speed_text
from metalab.compare.load import load_run
from metalab.cpu_speed import matmul_gflops


def test_the_rate_is_measured_on_one_thread_and_leaves_the_run_as_it_was():
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    slow = matmul_gflops(size=64, repeats=2)
    fast = matmul_gflops()
    assert slow > 0 and fast > 0
    assert torch.get_num_threads() == threads  # restored
    assert torch.equal(torch.get_rng_state(), rng)  # no random number drawn: seeds unchanged


def completed(root: Path, name: str, seed: int, speed: float | None) -> Path:
    """A completed Omniglot run as metalab-train leaves it, on a machine of ``speed``."""
    run = root / name
    run.mkdir(parents=True)
    hardware = {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1, "accelerator": "cpu"}
    if speed is not None:
        hardware["matmul_gflops_per_thread"] = speed
    results = {
        "status": "completed",
        "metrics": {"test/acc": {"metric": "acc", "mean": 0.9, "ci95": 0.01, "tasks": 600}},
        "protocol": {"dataset": "omniglot", "ways": 5, "shots": 1},
        "train": {"steps": 100, "cpu_seconds": 50.0, "wall_seconds": 60.0},
        "hardware": hardware,
        "config": {"seed": seed, "algorithm": {"name": "maml"},
                   "dataset": {"name": "omniglot", "ways": 5, "shots": 1}},
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    return run


@pytest.mark.parametrize(
    ("speeds", "expected"),
    [
        ([31.2, 31.4], "31 GFLOP/s one-thread float32 matmul"),
        ([30.0, 36.0], "30–36 GFLOP/s one-thread float32 matmul"),
        ([31.0, None], "31 GFLOP/s one-thread float32 matmul (1 of 2 runs recorded it)"),
        ([None, None], ""),
    ],
)
def test_alike_machines_are_named_without_a_warning(tmp_path, speeds, expected):
    runs = [load_run(completed(tmp_path, f"run{i}", i, s)) for i, s in enumerate(speeds)]
    assert cpu_speed_text(runs) == expected


def test_unlike_machines_are_flagged_in_the_report_header(tmp_path):
    sweep = tmp_path / "sweep"
    completed(sweep, "maml_0", 0, 31.0)
    completed(sweep, "maml_1", 1, 124.0)
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    header = {
        line.split("**")[1]: line.split("**: ", 1)[1]
        for line in (out / "comparison.md").read_text().splitlines()
        if line.startswith("- **")
    }
    assert header["CPU speed"] == (
        "31–124 GFLOP/s one-thread float32 matmul; the fastest machine computes 4.0x as much a "
        "CPU-second as the slowest, so CPU budgets and times compare machines as well as methods"
    )
    assert "CPU speed" in (out / "comparison.html").read_text()
