"""Checkpoints: read as data only, refused when they belong to another algorithm or model,
and written when a run is interrupted (SIGINT/SIGTERM) so it can be resumed."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from metalab.errors import ConfigError

log = logging.getLogger("metalab")

INTERRUPTED_NAME = "interrupted"


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint as data only (``weights_only=True``: no code runs from the file)."""
    ckpt_file = Path(path).expanduser()
    if not ckpt_file.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: pass the path of a .ckpt file.")
    try:
        return torch.load(ckpt_file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same answer
        raise ConfigError(
            f"ckpt_path={path} is not a readable metalab checkpoint ({error.__class__.__name__}): "
            "pass a checkpoint written by metalab-train."
        ) from error


def checkpoint_config(ckpt: dict, path: str | Path) -> dict[str, Any]:
    try:
        cfg = ckpt["hyper_parameters"]["cfg"]
        cfg["algorithm"]["name"], cfg["model"]["name"]  # noqa: B018 - must exist
        return cfg
    except (KeyError, TypeError):
        raise ConfigError(
            f"{path} holds no metalab config: pass a checkpoint written by metalab-train."
        ) from None


def _identity(cfg: Any) -> dict[str, Any]:
    """What must match for weights to be reused: the algorithm, the model, the output size."""
    cfg = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    identity = {"algorithm": cfg["algorithm"]["name"], "dataset": cfg["dataset"]["name"]}
    identity.update({f"model.{k}": v for k, v in cfg["model"].items()})
    if "ways" in cfg["dataset"]:
        identity["dataset.ways"] = cfg["dataset"]["ways"]
    return identity


def check_same_setup(ckpt_cfg: Any, cfg: Any, path: str | Path) -> None:
    """Refuse a checkpoint of another algorithm, model or output size, naming the difference."""
    have, want = _identity(ckpt_cfg), _identity(cfg)
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            raise ConfigError(
                f"{path} was trained with {key}={have.get(key)} but this run has "
                f"{key}={want.get(key)}: set {key}={have.get(key)} to continue from it, or "
                "start a new run (a new hydra.run.dir, without resume=true)."
            )


def load_weights(module: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    """Load a state dict strictly; a mismatch becomes one sentence instead of a key dump."""
    try:
        module.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[-1].strip() if str(error) else "no state_dict"
        raise ConfigError(
            f"the weights in {path} do not fit the model this config builds ({first[:160]}): "
            "pass a checkpoint of the same algorithm and model."
        ) from None


class InterruptCheckpoint(Callback):
    """Lightning's ``on_exception`` hook saves ``interrupted.ckpt``, only for SIGINT/SIGTERM
    (a NaN loss must not add a checkpoint of weights that diverge). Not Lightning's own
    OnExceptionCheckpoint: its presence makes ``fit(ckpt_path=None)`` resume from "last"."""

    def __init__(self, dirpath: str | Path) -> None:
        self.ckpt_path = str(Path(dirpath) / f"{INTERRUPTED_NAME}.ckpt")
        self.signal: str | None = None
        self.step: int | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal = signal.Signals.SIGTERM.name
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = signal.Signals.SIGINT.name
        else:
            return
        if trainer.state.fn == "fit":
            self.step = trainer.global_step
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)
            log.warning("%s: saved %s at step %d", self.signal, self.ckpt_path, self.step)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place: a
    process killed mid-write (SIGKILL, a pre-emption, a full disk) leaves the previous
    last.ckpt whole instead of a truncated one that resume could not read."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
