"""Summaries of evaluation episodes and the ``results.json`` every run leaves behind."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import metalab
from metalab import native


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
    """What a run's times were measured on, for the tables that compare them."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
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
