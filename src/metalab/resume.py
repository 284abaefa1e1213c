"""Where a run continues from (``resume=``; see ``metalab.run_status`` for the directory
side): the checkpoint of an interrupted or killed earlier attempt, or a given one, checked
against this run's setup; DDP ranks inherit rank 0's choice."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from metalab.checkpoints import (
    AtomicCheckpointIO,
    check_same_setup,
    checkpoint_config,
    copy_checkpoint,
    load_checkpoint,
)
from metalab.distributed import launched_rank
from metalab.run_status import resumable_checkpoint, resume_mode

log = logging.getLogger("metalab")


def interrupted_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the newest earlier attempt if it was interrupted or killed; None when
    that attempt failed (its failure stands: it runs again from scratch) or kept none."""
    attempts = sorted(
        run_dir.glob("attempt-*"), key=lambda p: int(p.name.split("-")[1]), reverse=True
    )
    for attempt in attempts:
        found = resumable_checkpoint(attempt)
        if found is not None:
            return found
        if (attempt / "checkpoints").is_dir():
            return None
    return None


def carry_checkpoints_over(resume_from: Path, run_dir: Path) -> None:
    """Copies of an earlier attempt's best/last checkpoints where the restored checkpoint
    callback expects them (its best may stay the best); the originals stay in attempt-N/."""
    source = resume_from.parent
    if source == run_dir / "checkpoints" or not source.is_dir():
        return
    target = run_dir / "checkpoints"
    target.mkdir(parents=True, exist_ok=True)
    for kept in source.glob("*.ckpt"):
        if kept.name != "interrupted.ckpt":
            copy_checkpoint(kept, target / kept.name)


def _moved(path: str, old: str, new: str) -> str:
    return new + path[len(old) :] if path and (path + os.sep).startswith(old + os.sep) else path


def moved_here(resume_from: Path, ckpt: dict, run_dir: Path) -> Path:
    """A checkpoint of another run's folder (``resume=PATH``: more budget for a finished run,
    a fork of one) made this run's ``checkpoints/last.ckpt``, its checkpoint callbacks'
    paths moved here. Lightning drops a ModelCheckpoint's best score when its folder changed,
    so the continued run would track the best since the resume only, and write its first new
    best as best-v1.ckpt beside the carried best.ckpt. The other folder is only read."""
    here = Path(os.path.realpath(run_dir / "checkpoints"))  # as ModelCheckpoint keeps it
    states = [
        state
        for key, state in ckpt.get("callbacks", {}).items()
        if key.startswith("ModelCheckpoint") and isinstance(state, dict)
    ]
    folders = {str(s.get("dirpath")) for s in states if s.get("dirpath")} - {str(here)}
    if not folders:
        return resume_from  # this run's own checkpoint (an earlier attempt's)
    for state in states:
        old = str(state.get("dirpath"))
        if old not in folders:
            continue
        state["dirpath"] = str(here)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if isinstance(state.get(key), str):
                state[key] = _moved(state[key], old, str(here))
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {
                _moved(k, old, str(here)): v for k, v in state["best_k_models"].items()
            }
    target = here / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(ckpt, target)
    log.info("resume=%s: continuing from its copy %s", resume_from, target)
    return target


RESUME_FROM_ENV = "METALAB_RESUME_FROM"  # rank 0's choice, inherited by the DDP processes


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Where this run continues from, by ``resume`` (see ``metalab.run_status``)."""
    if launched_rank() > 0:
        return Path(os.environ[RESUME_FROM_ENV]) if os.environ.get(RESUME_FROM_ENV) else None
    mode = resume_mode(cfg.get("resume", "auto"))
    if mode == "path":
        return Path(str(cfg.resume))
    return interrupted_checkpoint(run_dir) if mode in ("true", "auto") else None


def prepare_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint this run continues from (None: from scratch), checked to come from the
    same setup, with the earlier attempt's best/last copied where Lightning expects them."""
    resume_from = checkpoint_to_resume(cfg, run_dir)
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        check_same_setup(checkpoint_config(ckpt, resume_from), cfg, resume_from)
        log.info("resume=%s: continuing from %s", cfg.get("resume", "auto"), resume_from)
        if launched_rank() == 0:
            carry_checkpoints_over(resume_from, run_dir)
            resume_from = moved_here(resume_from, ckpt, run_dir)
    os.environ[RESUME_FROM_ENV] = str(resume_from or "")
    return resume_from
