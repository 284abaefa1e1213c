"""The run's loggers: Lightning's CSV logger and W&B (offline unless asked otherwise)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from metalab.errors import ConfigError

log = logging.getLogger(__name__)
WANDB_MODES = ("offline", "online", "disabled")


def wandb_mode(requested: str) -> str:
    """Online needs credentials; without them fall back to offline instead of hanging."""
    if requested not in WANDB_MODES:
        raise ConfigError(
            f"logger.wandb.mode={requested!r} is not known: choose one of {', '.join(WANDB_MODES)}."
        )
    if requested == "online" and not (
        os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file()
    ):
        log.warning(
            "logger.wandb.mode=online but no W&B credentials (WANDB_API_KEY or `wandb login`) "
            "were found: logging offline instead; upload later with `wandb sync`."
        )
        return "offline"
    return requested


def build_loggers(
    cfg: Any, run_dir: Path, group: str | None, config: dict[str, Any]
) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
    if cfg.get("wandb"):
        w = cfg.wandb
        loggers.append(
            WandbLogger(
                save_dir=str(run_dir),
                project=w.project,
                entity=w.entity,
                group=w.group or group,
                name=w.name or run_dir.name,
                tags=list(w.tags),
                mode=wandb_mode(str(w.mode)),
                config=config,
            )
        )
    return loggers


def finish_wandb(failed: bool) -> None:
    """Close the W&B run (marking it failed if training raised), so no run is left open."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
