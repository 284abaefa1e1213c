"""Run metalab's console scripts as a user would: a process of their own, from a given directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPTS = {
    "metalab-train": "metalab.train",
    "metalab-eval": "metalab.evaluate",
    "metalab-compare": "metalab.compare.cli",
}


def cli_argv(command: str) -> list[str]:
    """A console script found next to this Python, else the same module as ``python -m``."""
    script = Path(sys.executable).with_name(command)
    return [str(script)] if script.exists() else [sys.executable, "-m", SCRIPTS[command]]


def cli_env(**extra: str | None) -> dict[str, str]:
    # offline whatever the machine's environment says (WANDB_MODE=online would go live)
    quiet = {"WANDB_SILENT": "true", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    # the console scripts of this interpreter's environment first, activated or not (a
    # script such as benchmarks/reproduce_gpu.sh calls metalab-train by name)
    scripts = str(Path(sys.executable).parent)
    path = os.pathsep.join([scripts, os.environ.get("PATH", "")]).rstrip(os.pathsep)
    merged = {**os.environ, "PATH": path, **quiet, **extra}
    return {k: v for k, v in merged.items() if v is not None}  # None: unset it


def run_cli(
    command: str,
    *args: str,
    cwd: Path,
    timeout: float = 1800,
    env: dict[str, str | None] | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """Run a console script with ``env`` added to the environment (a None value unsets that
    variable): metalab-train and metalab-eval forked from the test process where they can be
    (tests/helpers/forked.py: the same exit status and output without importing torch and
    Lightning again, 5-13 CPU-seconds a command), else, or with ``fresh``, as a console script
    in a fresh interpreter."""
    if fresh:
        return run_console_script(command, *args, cwd=cwd, timeout=timeout, env=env)
    from tests.helpers.forked import run_cli_forked  # it imports this module

    return run_cli_forked(command, *args, cwd=cwd, timeout=timeout, env=env)


def run_console_script(
    command: str,
    *args: str,
    cwd: Path,
    timeout: float = 1800,
    env: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess:
    """Run a console script (found next to this Python, else as ``python -m``) in a fresh
    interpreter, with ``env`` added to the environment (a None value unsets that variable)."""
    return subprocess.run(
        [*cli_argv(command), *args],
        cwd=cwd,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_run(
    where: Path,
    *overrides: str,
    env: dict[str, str | None] | None = None,
    fresh: bool = False,
) -> Path:
    """Run metalab-train into ``where/run`` (``env`` added to its environment; ``fresh``: in a
    fresh interpreter, see run_cli) and return that run directory."""
    out = run_cli(
        "metalab-train", *overrides, f"hydra.run.dir={where / 'run'}", cwd=where, env=env,
        fresh=fresh,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return where / "run"


def wandb_summary(run_dir: Path) -> dict:
    """The offline W&B run of a job, read the documented way (`wandb leet inspect`)."""
    wandb = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    out = subprocess.run(
        [wandb, "leet", "inspect", "--summary", "--json", str(run_dir / "wandb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wandb_run_record(run_dir: Path) -> dict:
    """The `run` record of a job's offline W&B log (it carries the group and the config)."""
    wandb = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    out = subprocess.run(
        [wandb, "leet", "inspect", "--json", str(run_dir / "wandb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return next(r["run"] for r in records if r.get("type") == "run")


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def preset_sweep(where: Path, names: list[str], *overrides: str) -> dict[str, Path]:
    """One multirun over ``<name>_omniglot_5w1s`` presets; {algorithm name: job directory}."""
    sweep = where / "sweep"
    out = run_cli(
        "metalab-train",
        "-m",
        f"experiment={','.join(f'{name}_omniglot_5w1s' for name in names)}",
        *overrides,
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",  # the default names every override: too long
        cwd=where,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [p for p in sweep.iterdir() if (p / "results.json").is_file()]
    return {read_results(p)["config"]["algorithm"]["name"]: p for p in runs}
