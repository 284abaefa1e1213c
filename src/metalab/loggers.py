"""The run's loggers, any combination of them (``logger=[csv,wandb,tensorboard,mlflow]``):
Lightning's CSV, W&B, TensorBoard and MLflow loggers.

W&B follows its own conventions: every setting left null in ``conf/logger/wandb.yaml`` comes
from the environment variable W&B documents (``WANDB_MODE``, ``WANDB_PROJECT``,
``WANDB_ENTITY``, ``WANDB_DIR``, ``WANDB_RUN_GROUP``, ``WANDB_NAME``, ``WANDB_JOB_TYPE``,
``WANDB_TAGS``, ``WANDB_RESUME``), else metalab's default (offline, project ``metalab``); a
value set in the config (on the command line) wins over the environment. One W&B run per job:
grouped by sweep, named after the job (``metalab.run_names``), tagged with the algorithm,
dataset and model, with its id kept in the job directory so that a job run again there (a
resumed sweep, a requeued SLURM job) continues the same run; the best validation value
(``val/acc_best``) is kept in its summary, which W&B sweeps and run tables read.

MLflow logs to a local file store, ``./mlruns`` (no server), unless ``MLFLOW_TRACKING_URI``
or ``logger.mlflow.tracking_uri`` names another; its run id is kept in the job directory
like W&B's. TensorBoard writes to ``<run dir>/tensorboard``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import socket
import string
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from metalab.console import verbose
from metalab.errors import ConfigError
from metalab.run_names import hydra_job_label, job_dirname, sweep_label

log = logging.getLogger(__name__)
WANDB_MODES = ("offline", "online", "disabled")
WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # W&B's older names
RUN_ID_FILE = "wandb_run_id"
MLFLOW_RUN_ID_FILE = "mlflow_run_id"
# logger option -> (the modules it can use, the pip extra that installs one)
PACKAGES = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": (("mlflow",), "mlflow"),
}
_OPEN: list[Logger] = []  # this job's loggers that hold a run to close (MLflow, TensorBoard)


def _env(name: str) -> str | None:
    """An environment variable, None when unset or blank (a `KEY=` line in an env file)."""
    value = os.environ.get(name, "").strip()
    return value or None


def wandb_mode(requested: str | None) -> str:
    """``logger.wandb.mode`` when set, else ``WANDB_MODE``, else offline. Online needs
    credentials and a reachable server; without them fall back to offline instead of
    hanging."""
    source = "logger.wandb.mode"
    if requested is None:
        requested, source = _env("WANDB_MODE"), "WANDB_MODE"
        if requested is None:
            return "offline"
    mode = WANDB_MODE_ALIASES.get(str(requested).lower(), str(requested).lower())
    if mode not in WANDB_MODES:
        fix = "set logger.wandb.mode" if source == "logger.wandb.mode" else "set WANDB_MODE"
        raise ConfigError(
            f"{source}={requested!r} is not a W&B mode: {fix} to one of {', '.join(WANDB_MODES)}."
        )
    if mode == "online" and not (_env("WANDB_API_KEY") or (Path.home() / ".netrc").is_file()):
        log.warning(
            "%s=online but no W&B credentials (WANDB_API_KEY or `wandb login`) were found: "
            "logging offline instead; upload later with `wandb sync`.",
            source,
        )
        return "offline"
    if mode == "online" and not wandb_reachable():
        log.warning(
            "%s=online but the W&B server %s cannot be reached: logging offline instead; "
            "upload later with `wandb sync`.",
            source,
            wandb_host(),
        )
        return "offline"
    return mode


def persistent_run_id(run_dir: Path) -> str:
    """The job's W&B run id: the one saved in its directory, else a W&B agent's (one job per
    agent run; the jobs of a multirun each need their own), else a new one."""
    saved = run_dir / RUN_ID_FILE
    if saved.is_file() and saved.read_text().strip():
        return saved.read_text().strip()
    alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet
    agent_id = None if in_multirun() else _env("WANDB_RUN_ID")
    run_id = agent_id or "".join(secrets.choice(alphabet) for _ in range(8))
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(run_id + "\n")
    return run_id


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_name(run_dir: Path, config: dict[str, Any] | None = None) -> str:
    """The job's name (``metalab.run_names``): ``maml_omniglot_5w1s,seed=1`` in a sweep that
    varies the seed, ``fomaml_sinusoid,seed=3`` for a single run with overrides; outside a
    Hydra job, the run directory's name."""
    if not HydraConfig.initialized():
        return run_dir.name
    default = f"{_name(config, 'algorithm')}_{_name(config, 'dataset')}"
    name = str((config or {}).get("run_name") or default)
    return job_dirname(hydra_job_label(HydraConfig.get(), name))


def sweep_group(group: str | None) -> str | None:
    """The sweep's name (``2026-11-22_10-00-00-000000``, from its directory) inside a Hydra
    multirun; else ``group`` as given (None for a single run)."""
    return sweep_label(HydraConfig.get().sweep.dir) if in_multirun() else group


def _name(config: dict[str, Any] | None, group: str) -> str | None:
    node = (config or {}).get(group)
    return str(node["name"]) if isinstance(node, dict) and node.get("name") else None


def job_tags(config: dict[str, Any], extra: list[str]) -> list[str]:
    names = [_name(config, k) for k in ("algorithm", "dataset", "model")]
    return list(dict.fromkeys([n for n in names if n] + [str(t) for t in extra]))


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


class MetalabWandbLogger(WandbLogger):
    """Lightning's W&B logger, plus the best value of the checkpointed validation metric in
    the run's summary (``val/acc_best``): the summary is what W&B sweeps optimise and run
    tables show, and by default it holds the last value logged, not the best."""

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        monitor = getattr(checkpoint_callback, "monitor", None)
        best = getattr(checkpoint_callback, "best_model_score", None)
        if monitor and best is not None:  # a best.ckpt was just written: the best moved
            self.experiment.summary[f"{monitor}_best"] = float(best)


def wandb_console() -> dict[str, Any]:
    """W&B's own console lines (its banner, and the run's history and summary at the end:
    about 35 lines a run) stay off the console: metalab says where the run is in one line.
    ``WANDB_SILENT``/``WANDB_QUIET`` set by the user, or ``hydra.verbose=wandb``, keep W&B's."""
    if _env("WANDB_SILENT") is not None or _env("WANDB_QUIET") is not None or verbose("wandb"):
        return {}
    import wandb

    return {"settings": wandb.Settings(silent=True)}


def wandb_logger(w: Any, run_dir: Path, group: str | None, config: dict[str, Any]) -> Logger:
    env_tags = [t.strip() for t in (_env("WANDB_TAGS") or "").split(",") if t.strip()]
    mode = wandb_mode(w.get("mode"))
    save_dir = _env("WANDB_DIR") or str(run_dir)
    quiet = wandb_console()
    logger = MetalabWandbLogger(
        save_dir=save_dir,
        project=w.get("project") or _env("WANDB_PROJECT") or "metalab",
        entity=w.get("entity") or _env("WANDB_ENTITY"),
        group=w.get("group") or _env("WANDB_RUN_GROUP") or group,
        job_type=w.get("job_type") or _env("WANDB_JOB_TYPE") or "train",
        name=w.get("name") or _env("WANDB_NAME") or run_name(run_dir, config),
        tags=job_tags(config, env_tags + [str(t) for t in w.get("tags") or []]),
        mode=mode,
        config=config,
        id=persistent_run_id(run_dir),
        resume=_env("WANDB_RESUME") or "allow",
        **quiet,
    )
    if quiet:
        where = Path(save_dir) / "wandb"
        upload = f"; upload: wandb sync {where}/offline-run-*" if mode == "offline" else ""
        log.info("W&B run %s (%s) in %s%s", logger._wandb_init["name"], mode, where, upload)
    # Lightning always passes anonymous (None), which wandb 0.31 warns has no effect
    logger._wandb_init.pop("anonymous", None)
    return logger


def require(option: str) -> None:
    """Refuse a logger whose package is not installed, with the command that installs it."""
    modules, extra = PACKAGES[option]
    if not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ConfigError(
            f"logger={option} needs the {modules[0]} package, which is not installed: "
            f"pip install -e '.[{extra}]' in the metalab checkout (or pip install {modules[0]})."
        )


def tensorboard_logger(t: Any, run_dir: Path, config: dict[str, Any]) -> Logger:
    require("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger

    save_dir = Path(t.get("dir") or run_dir / "tensorboard")
    logger = TensorBoardLogger(save_dir=str(save_dir), name="", version="", default_hp_metric=False)
    logger.log_hyperparams(config)  # the module saves its hyperparameters without loggers
    return logger


def mlflow_tracking_uri(m: Any) -> str:
    """``logger.mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ./mlruns as a local
    file store (MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is true: set
    for this process when it is unset, since a local store is what metalab asks for)."""
    uri = m.get("tracking_uri") or _env("MLFLOW_TRACKING_URI")
    if uri is None:
        uri = Path("mlruns").resolve().as_uri()
    scheme = urlparse(str(uri)).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C: on Windows) or file://
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return str(uri)


def mlflow_logger(m: Any, run_dir: Path, group: str | None, config: dict[str, Any]) -> Logger:
    """One MLflow run per job; a job run again in its directory continues the run whose id it
    saved there (when the store still holds it)."""
    require("mlflow")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    uri = mlflow_tracking_uri(m)
    saved = run_dir / MLFLOW_RUN_ID_FILE
    run_id = saved.read_text().strip() if saved.is_file() else None
    if run_id:
        try:
            MlflowClient(uri).get_run(run_id)
        except MlflowException:
            log.warning("MLflow run %s is not in %s: starting a new run", run_id, uri)
            run_id = None
    named = {k: _name(config, k) for k in ("algorithm", "dataset", "model")}
    tags = {k: v for k, v in {**named, "group": group}.items() if v}
    logger = MLFlowLogger(
        experiment_name=m.get("experiment_name") or _env("MLFLOW_EXPERIMENT_NAME") or "metalab",
        run_name=m.get("run_name") or run_name(run_dir, config),
        tracking_uri=uri,
        tags={**tags, **{str(k): str(v) for k, v in (m.get("tags") or {}).items()}},
        run_id=run_id or None,
    )
    if not run_id:  # a new run: its parameters (MLflow's are write-once, so not again)
        logger.log_hyperparams(config)
        if logger.run_id:  # None on ranks other than 0, which log nothing
            run_dir.mkdir(parents=True, exist_ok=True)
            saved.write_text(logger.run_id + "\n")
    return logger


def build_loggers(
    cfg: Any, run_dir: Path, group: str | None, config: dict[str, Any]
) -> list[Logger]:
    """The loggers ``cfg`` (the ``logger`` node) names, in a fixed order; ``group`` is the
    sweep's name, replaced by ``sweep_group``'s inside a Hydra multirun."""
    group = sweep_group(group)
    loggers: list[Logger] = []
    if cfg.get("csv"):
        loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
    if cfg.get("wandb"):
        loggers.append(wandb_logger(cfg.wandb, run_dir, group, config))
    if cfg.get("tensorboard") is not None:
        loggers.append(tensorboard_logger(cfg.tensorboard, run_dir, config))
    if cfg.get("mlflow") is not None:
        loggers.append(mlflow_logger(cfg.mlflow, run_dir, group, config))
    _OPEN.extend(lg for lg in loggers if not isinstance(lg, (CSVLogger, WandbLogger)))
    return loggers


def finish_loggers(failed: bool) -> None:
    """Close this job's runs (marking them failed if the job raised), so no W&B or MLflow
    run is left open, whatever ended the job."""
    status = "failed" if failed else "success"
    while _OPEN:
        logger = _OPEN.pop()
        try:
            logger.finalize(status)
        except Exception as error:  # noqa: BLE001 - closing one must not hide the job's outcome
            log.warning("could not close the %s run: %s", type(logger).__name__, error)
    wandb = sys.modules.get("wandb")  # never imported: no W&B run to close (nor installed)
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


finish_wandb = finish_loggers  # the name metalab.outcome calls it by


def summarise_wandb(loggers: list, metric: str, summary: dict, strategy: str) -> None:
    """The test result on the W&B run's summary, where the dashboard's tables read it."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(
                {
                    f"test/{metric}": summary["mean"],
                    f"test/{metric}_ci95": summary["ci95"],
                    "strategy": strategy,
                }
            )
