"""Summaries of evaluation episodes and the ``results.json`` every run leaves behind."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import metalab
from metalab import native
from metalab.cpu_speed import matmul_gflops


def mean_and_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of the normal 95% interval, 1.96 * std / sqrt(n)."""
    values = values.double()
    n = values.numel()
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


def git_commit() -> str | None:
    """The commit of the metalab checkout in use, or None for an installed wheel;
    ``METALAB_GIT_COMMIT`` names it where the code was copied without its .git (an image,
    an archive)."""
    if os.environ.get("METALAB_GIT_COMMIT"):
        return os.environ["METALAB_GIT_COMMIT"]
    here = Path(metalab.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The processor's name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(cfg: Any) -> dict[str, Any]:
    """What a run's times were measured on, for the tables that compare them: the CPU, and
    what one of its threads computes a second (a CPU-second differs between machines)."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "matmul_gflops_per_thread": round(matmul_gflops(), 1),
        "torch_threads": torch.get_num_threads(),
        "accelerator": str(cfg.trainer.accelerator),
        "devices": cfg.trainer.devices,
    }
    if str(cfg.trainer.accelerator) != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, so a crash mid-write never leaves a half file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def tested_weights(best: str | None, steps: int) -> str:
    """What the test ran on: the best checkpoint's name, else the weights training ended
    with; with ``trainer.max_steps=0`` the initial ones (a random-initialisation baseline)."""
    if best:
        return Path(best).name
    return "initial weights (no training step)" if steps == 0 else "final weights"


def completed_results(
    metrics: dict[str, Any],
    summary: dict[str, Any],
    protocol: dict[str, Any],
    run_dir: Path,
    config: dict[str, Any],
    **fields: Any,
) -> dict[str, Any]:
    """The results.json of a completed training run or evaluation, in one key order:
    status, metrics, tasks, protocol, what produced them (``fields``, the native kernels the
    passes took: ``metalab.native.record``), provenance, config."""
    return {
        "status": "completed",
        "metrics": metrics,
        "num_test_tasks": summary["tasks"],
        "protocol": protocol,
        **fields,
        "kernels": native.record(),
        "metalab_version": metalab.__version__,
        "git_commit": git_commit(),
        "run_dir": str(run_dir),
        "config": config,
    }


# --- several test domains (dataset=multi, dataset.test) -------------------------------------


def run_each_domain(data: Any, module: Any, test: Callable[[], object]) -> dict[str, dict]:
    """``test()`` once per test domain of ``data`` (its ``domains``), each summary by label;
    ``{"": summary}`` for a data module with one plain test set."""
    labels = list(getattr(data, "domains", None) or [])
    if not labels:
        test()
        return {"": module.test_summary}
    summaries = {}
    for label in labels:
        data.use_test_domain(label)
        test()
        summaries[label] = module.test_summary
    return summaries


def _pool(points: list[tuple[float, float, int]]) -> tuple[float, float]:
    """Mean and 95% half-width of the union of groups given as (mean, ci95, n) each, as
    ``mean_and_ci95`` gives them over all the values together (the sample standard deviation
    of each group recovered from its half-width, the spread between the groups added)."""
    total = sum(n for _, _, n in points)
    mean = sum(m * n for m, _, n in points) / total
    squares = sum(
        (n - 1) * (ci * math.sqrt(n) / 1.96) ** 2 + n * (m - mean) ** 2 for m, ci, n in points
    )
    std = math.sqrt(squares / (total - 1)) if total > 1 else 0.0
    return mean, 1.96 * std / math.sqrt(total)


def pooled_summary(summaries: dict[str, dict]) -> dict[str, Any]:
    """One test summary over every domain's tasks together (the domains have equal numbers of
    tasks, so its mean is the mean over domains), at each scored inner step."""
    if len(summaries) == 1:
        return next(iter(summaries.values()))
    parts = list(summaries.values())
    mean, ci = _pool([(s["mean"], s["ci95"], s["tasks"]) for s in parts])
    per_step = []
    for index, point in enumerate(parts[0]["per_step"]):
        group = [(s["per_step"][index]["mean"], s["per_step"][index]["ci95"], s["tasks"])
                 for s in parts]  # fmt: skip
        step_mean, step_ci = _pool(group)
        per_step.append({"step": point["step"], "mean": step_mean, "ci95": step_ci})
    return {
        "metric": parts[0]["metric"],
        "mean": mean,
        "ci95": ci,
        "tasks": sum(s["tasks"] for s in parts),
        "per_step": per_step,
    }


def metrics_by_domain(summaries: dict[str, dict], split: str = "test") -> dict[str, Any]:
    """``{split}/<metric>`` (all domains together) first, where metalab-compare reads it, then
    ``{split}/<domain>/<metric>`` for each test domain."""
    summary = pooled_summary(summaries)
    metric = summary["metric"]
    metrics = {f"{split}/{metric}": summary}
    for label, part in summaries.items():
        if label:
            metrics[f"{split}/{label}/{metric}"] = part
    return metrics


def print_domains(summaries: dict[str, dict]) -> None:
    """One line per test domain under the test summary (the table shows them together)."""
    if list(summaries) == [""]:
        return
    from rich.console import Console

    console = Console()
    for label, summary in summaries.items():
        scale, unit = (100.0, " %") if summary["metric"] == "acc" else (1.0, "")
        console.print(
            f"test {summary['metric']} on {label}: {scale * summary['mean']:.3f} +- "
            f"{scale * summary['ci95']:.3f}{unit} ({summary['tasks']} tasks)",
            highlight=False,
        )
