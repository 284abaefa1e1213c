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


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every directory holding a ``results.json``, at or below each path, each once; earlier
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
        for results in sorted(path.rglob("results.json")):
            relative = results.parent.relative_to(path)
            if not earlier_attempt(relative):
                found[results.parent.resolve()] = None
    if not found:
        raise ConfigError(
            f"no results.json under {', '.join(map(str, paths))}: point metalab-compare at "
            "directories written by metalab-train (outputs/runs/... or outputs/multiruns/...)."
        )
    return list(found)
