"""Find the runs under the paths a user gives: single run directories and whole sweeps."""

from __future__ import annotations

from pathlib import Path

from metalab.errors import ConfigError


def earlier_attempt(run_dir: Path) -> bool:
    """An ``attempt-N/`` folder inside a run: the files of an attempt that a resume moved
    aside; it is part of that run (its curve, load.metrics_files), not a run of its own."""
    return any(
        part.startswith("attempt-") and part.split("-", 1)[1].isdigit() for part in run_dir.parts
    )


def training_in_progress(run_dir: Path) -> bool:
    """A metalab-train job that has not written results.json (yet): Hydra's config and the
    training log or metrics are there. A metalab-eval job writes evaluate.log, not these."""
    return (
        (run_dir / ".hydra" / "config.yaml").is_file()
        and not (run_dir / "results.json").exists()
        and any((run_dir / name).exists() for name in ("train.log", "metrics.csv", "attempt-1"))
    )


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every run directory at or below each path, each once: those holding a
    ``results.json``, and training runs still in progress (or killed) without one; earlier
    attempts of a resumed run are left to their run."""
    found: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path} does not exist: give run or sweep directories to compare.")
        if path.is_file():
            if path.name != "results.json":
                raise ConfigError(f"{path} is a file: give a run or sweep directory.")
            found[path.parent.resolve()] = None
            continue
        folders = [results.parent for results in path.rglob("results.json")]
        folders += [config.parent.parent for config in path.rglob(".hydra/config.yaml")
                    if training_in_progress(config.parent.parent)]  # fmt: skip
        for folder in sorted(set(folders)):
            if not earlier_attempt(folder.relative_to(path)):
                found[folder.resolve()] = None
    if not found:
        raise ConfigError(
            f"no metalab runs under {', '.join(map(str, paths))} (no results.json, no run in "
            "progress): point metalab-compare at directories written by metalab-train "
            "(outputs/runs/... or outputs/multiruns/...)."
        )
    return list(found)
