"""The run's loggers: Lightning's CSV logger and W&B (offline unless asked otherwise).

One W&B run per job: grouped by sweep, named after the job's overrides, tagged with the
algorithm, dataset and model, and with its id kept in the job directory so that a job run
again in the same directory (a resumed sweep, a requeued SLURM job) continues the same run.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from metalab.errors import ConfigError
from metalab.run_names import job_dirname

log = logging.getLogger(__name__)
WANDB_MODES = ("offline", "online", "disabled")
RUN_ID_FILE = "wandb_run_id"


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
    if requested == "online" and not wandb_reachable():
        log.warning(
            "logger.wandb.mode=online but the W&B server %s cannot be reached: logging offline "
            "instead; upload later with `wandb sync`.",
            wandb_host(),
        )
        return "offline"
    return requested


def persistent_run_id(run_dir: Path) -> str:
    """The job's W&B run id: the one saved in its directory, else a W&B agent's (one job per
    agent run; the jobs of a multirun each need their own), else a new one."""
    saved = run_dir / RUN_ID_FILE
    if saved.is_file() and saved.read_text().strip():
        return saved.read_text().strip()
    alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet
    agent_id = None if in_multirun() else os.environ.get("WANDB_RUN_ID")
    run_id = agent_id or "".join(secrets.choice(alphabet) for _ in range(8))
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(run_id + "\n")
    return run_id


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> str:
    """The job's overrides as Hydra writes them in directory names ('' outside Hydra)."""
    if not HydraConfig.initialized():
        return ""
    return str(HydraConfig.get().job.override_dirname)


def run_name(run_dir: Path) -> str:
    """``algorithm=fomaml,seed=1`` for a job with overrides, else the run directory's name."""
    overrides = job_overrides()
    return job_dirname(overrides) if overrides else run_dir.name


def job_tags(config: dict[str, Any], extra: list[str]) -> list[str]:
    names = [config.get(k, {}).get("name") for k in ("algorithm", "dataset", "model")]
    return list(dict.fromkeys([str(n) for n in names if n] + [str(t) for t in extra]))


def wandb_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def wandb_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection within seconds, so a machine without network never waits on W&B's
    own retries (minutes) before falling back."""
    try:
        with socket.create_connection(wandb_host(), timeout=timeout):
            return True
    except OSError:
        return False


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
                job_type=w.get("job_type") or "train",
                name=w.name or run_name(run_dir),
                tags=job_tags(config, list(w.tags)),
                mode=wandb_mode(str(w.mode)),
                config=config,
                id=persistent_run_id(run_dir),
                resume="allow",
            )
        )
    return loggers


def finish_wandb(failed: bool) -> None:
    """Close the W&B run (marking it failed if training raised), so no run is left open."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def summarise_wandb(loggers: list, metric: str, summary: dict, strategy: str) -> None:
    """The test result on the W&B run's summary, where the dashboard's tables read it."""
    for logger in loggers:
        if hasattr(logger, "experiment") and logger.__class__.__name__ == "WandbLogger":
            logger.experiment.summary.update(
                {
                    f"test/{metric}": summary["mean"],
                    f"test/{metric}_ci95": summary["ci95"],
                    "strategy": strategy,
                }
            )
