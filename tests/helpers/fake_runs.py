"""Run directories written by hand, laid out as metalab-train writes them (results.json,
.hydra/config.yaml, metrics.csv, train.log), with values a test can recompute."""

from __future__ import annotations

import csv
import json
from pathlib import Path


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


def omniglot_run(
    root: Path,
    name: str,
    algorithm: str,
    seed: int,
    acc: float | None,
    status: str | None = "completed",
    ways: int = 5,
) -> Path:
    """An Omniglot ``ways``-way 1-shot run with test accuracy ``acc`` (None: a run that failed
    with an error) and a short metrics.csv, for metalab-compare to read."""
    run = root / name
    run.mkdir(parents=True)
    config = {
        "seed": seed,
        "algorithm": {"name": algorithm, "first_order": algorithm != "maml"},
        "dataset": {"name": "omniglot", "ways": ways, "shots": 1},
        "logger": {"wandb": {"group": name}},
    }
    results: dict = {
        "config": config,
        "protocol": {"dataset": "omniglot", "ways": ways, "shots": 1},
    }
    if status is not None:
        results["status"] = status
    if acc is not None:
        results["metrics"] = {
            "test/acc": {"metric": "acc", "mean": acc, "ci95": 0.01, "tasks": 600},
            "val/acc_best": acc - 0.01,
        }
    else:
        results["error"] = "RuntimeError: out of memory"
    (run / "results.json").write_text(json.dumps(results))
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "train/loss", "val/acc"])
        value = acc or 0.5
        writer.writerows([[0, 9, 1.2, ""], [0, 9, "", value], [0, 19, "", value + 0.01]])
    return run
