"""One run as metalab-compare sees it: its config, test result and validation curve."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metalab.errors import ConfigError


@dataclass
class Run:
    path: Path
    status: str
    config: dict[str, Any]  # flattened: {"algorithm.name": "maml", ...}
    metric: str | None = None  # "acc" or "mse"
    test_mean: float | None = None
    test_ci95: float | None = None
    test_tasks: int | None = None
    val_best: float | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val metric)
    # step -> (CPU, wall) seconds of training at that validation; empty for runs logged
    # before metalab recorded time (budget.TrainingClock)
    clock: dict[int, tuple[float, float | None]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # steps, cpu_seconds, wall_seconds
    test_time: dict[str, Any] = field(default_factory=dict)  # cpu_seconds, wall_seconds
    hardware: dict[str, Any] = field(default_factory=dict)  # cpu, torch_threads, gpu, ...

    @property
    def completed(self) -> bool:
        return self.status == "completed" and self.test_mean is not None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_config(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """The resolved config stored in results.json, else Hydra's .hydra/config.yaml."""
    if isinstance(results.get("config"), dict):
        return flatten(results["config"])
    hydra_config = run_dir / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        return flatten(yaml.safe_load(hydra_config.read_text()) or {})
    return {}


def metrics_files(run_dir: Path) -> list[Path]:
    """A run's metrics.csv files, oldest first: those of the attempts a resumed run moved to
    attempt-N/ (N = 1, 2, ...), then its own. Together they hold the whole curve."""
    attempts = sorted(
        (p for p in run_dir.glob("attempt-*") if p.name.split("-", 1)[1].isdigit()),
        key=lambda p: int(p.name.split("-", 1)[1]),
    )
    return [p / "metrics.csv" for p in [*attempts, run_dir] if (p / "metrics.csv").is_file()]


def read_curve(metrics_csv: Path | list[Path], metric: str) -> list[tuple[int, float]]:
    """The validation metric over training steps from Lightning's CSV logger; from several
    files (a resumed run's attempts, oldest first), a step logged again keeps its last value."""
    column = f"val/{metric}"
    curve: dict[int, float] = {}
    for path in [metrics_csv] if isinstance(metrics_csv, Path) else metrics_csv:
        if not path.is_file():
            continue
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                value = row.get(column)
                if value not in (None, "") and row.get("step") not in (None, ""):
                    curve[int(float(row["step"]))] = float(value)
    return sorted(curve.items())


def read_clock(metrics_csv: Path | list[Path]) -> dict[int, tuple[float, float | None]]:
    """``time/cpu_seconds`` and ``time/wall_seconds`` by step, from one file or a resumed
    run's files oldest first. A step logged twice (a resumed run validating again where an
    interrupted attempt had) keeps its last row, as the curve does."""
    clock: dict[int, tuple[float, float | None]] = {}
    for path in [metrics_csv] if isinstance(metrics_csv, Path) else metrics_csv:
        if not path.is_file():
            continue
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                cpu, step = row.get("time/cpu_seconds"), row.get("step")
                if cpu in (None, "") or step in (None, ""):
                    continue
                wall = row.get("time/wall_seconds")
                wall_value = float(wall) if wall not in (None, "") else None
                clock[int(float(step))] = (float(cpu), wall_value)
    return clock


def load_run(run_dir: Path) -> Run:
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"{run_dir / 'results.json'} cannot be read ({error}): remove or repair that run."
        ) from None
    # results.json without a status predates failure recording: it was written on success
    run = Run(
        path=run_dir,
        status=str(results.get("status", "completed")),
        config=read_config(run_dir, results),
        error=results.get("error"),
    )
    tests = {k: v for k, v in results.get("metrics", {}).items() if k.startswith("test/")}
    if not tests:
        return run
    key, summary = next(iter(tests.items()))
    run.metric = summary.get("metric") or key.split("/", 1)[1]
    run.test_mean = _number(summary.get("mean"))
    run.test_ci95 = _number(summary.get("ci95"))
    run.test_tasks = summary.get("tasks")
    run.val_best = _number(results["metrics"].get(f"val/{run.metric}_best"))
    run.protocol = dict(results.get("protocol") or {})
    run.curve = read_curve(metrics_files(run_dir), run.metric)
    run.clock = read_clock(metrics_files(run_dir))
    run.train = _dict(results.get("train"))
    run.test_time = _dict(results.get("test"))
    run.hardware = _dict(results.get("hardware"))
    return run


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
