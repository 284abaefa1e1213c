"""Where metalab's Hydra configs are: inside the wheel, or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> str:
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"metalab's configs are missing: looked in {package / 'conf'} and "
        f"{package.parents[1] / 'conf'}; reinstall metalab."
    )
