"""Whatever happens to a job, its ``results.json`` says how it ended (the task wrapper of the
Lightning-Hydra template): interrupted (signal, step, checkpoint; exit 128 + signal), failed
(the error; one line, or NaN to a sweeper so the other jobs go on) or, written by the run
itself, completed."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from metalab.errors import MetalabError, RunInterrupted
from metalab.loggers import finish_wandb
from metalab.run_status import FAILED, INTERRUPTED, write_outcome
from metalab.signals import exit_on_next_sigint, sigterm_outside_lightning

log = logging.getLogger("metalab")


def run_job(
    cfg: DictConfig, run_dir: Path, multirun: bool, job: Callable[[], float | None]
) -> float | None:
    """Run ``job`` and record its outcome in ``run_dir/results.json``."""
    failed = True
    previous = signal.signal(signal.SIGTERM, sigterm_outside_lightning)
    try:
        value = job()
        failed = False
        return value
    except (RunInterrupted, KeyboardInterrupt) as stop:
        exit_on_next_sigint()
        if not isinstance(stop, RunInterrupted):
            stop = RunInterrupted("SIGINT")
        write_outcome(
            run_dir,
            INTERRUPTED,
            error=str(stop),
            signal=stop.signal,
            step=stop.step,
            checkpoint=stop.checkpoint,
            checkpoints=_kept_checkpoints(run_dir),
            config=_config(cfg),
        )
        print(f"metalab: {stop}", file=sys.stderr)
        raise SystemExit(128 + signal.Signals[stop.signal].value) from None
    except Exception as raised:  # noqa: BLE001 - every failure is recorded, then handled below
        error = storage_error(raised) or raised
        if not isinstance(error, MetalabError):
            return _unexpected(error, cfg, run_dir, multirun)
        with contextlib.suppress(OSError):  # a full disk may refuse this record too
            write_outcome(
                run_dir,
                FAILED,
                error=str(error),
                error_type=type(error).__name__,
                checkpoints=_kept_checkpoints(run_dir),
                config=_config(cfg),
            )
        log.error("%s", error)
        if multirun:
            return math.nan
        raise SystemExit(f"metalab: error: {error}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        finish_wandb(failed)


# Errors only writing raises (a full disk, a quota, a file size limit, a read-only disk)
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def storage_error(error: BaseException) -> MetalabError | None:
    """A failed write, or a file metalab may not open, as one sentence naming the file and
    the fix; None for other errors."""
    if isinstance(error, PermissionError):
        return MetalabError(
            f"cannot open {error.filename or 'a file'} ({error.strerror}): give this user "
            "access to it, or point dataset.root (data) or hydra.run.dir (outputs) elsewhere."
        )
    if not isinstance(error, OSError) or error.errno not in WRITE_ERRNOS:
        return None
    where = error.filename or "a file of the run"
    return MetalabError(
        f"could not write {where} ({error.strerror}): free space on its disk (or choose "
        "another hydra.run.dir) and re-run the same command; checkpoints already written are "
        "kept, and resume=auto continues from the last one."
    )


def _unexpected(error: Exception, cfg: DictConfig, run_dir: Path, multirun: bool) -> float:
    """A bug, not a bad input: recorded, then its traceback is shown (a sweep goes on)."""
    write_outcome(
        run_dir,
        FAILED,
        error=f"{type(error).__name__}: {error}",
        error_type=type(error).__name__,
        checkpoints=_kept_checkpoints(run_dir),
        config=_config(cfg),
    )
    if multirun:
        log.exception("job %s failed", run_dir.name)
        return math.nan
    raise error


def _kept_checkpoints(run_dir: Path) -> list[str]:
    folder = run_dir / "checkpoints"
    return sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []


def _config(cfg: DictConfig) -> dict | str:
    """The resolved config for results.json; its text if it does not resolve (that may be
    why the job failed)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001
        return OmegaConf.to_yaml(cfg)


def completed_value(run_dir: Path) -> float | None:
    """The validation metric a completed job returned, for sweepers, when it is skipped."""
    metrics = json.loads((run_dir / "results.json").read_text()).get("metrics", {})
    return next(
        (v for k, v in metrics.items() if k.startswith("val/") and k.endswith("_best")), None
    )
