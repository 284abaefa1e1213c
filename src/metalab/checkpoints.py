"""Checkpoints: read as data only, refused when they belong to another algorithm or model,
and written when a run is interrupted (SIGINT/SIGTERM) so it can be resumed.

Every checkpoint is verified before it is loaded: its zip archive's CRCs, and the sha256 that
was written beside it at save time (``last.ckpt.sha256``, in ``sha256sum`` format, so
``sha256sum -c last.ckpt.sha256`` checks it too). torch.load checks neither: flipped bytes in
a weight tensor would otherwise give a "completed" run with a NaN or a wrong test metric.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from metalab.errors import CheckpointError, ConfigError

log = logging.getLogger("metalab")

INTERRUPTED_NAME = "interrupted"
HASH_SUFFIX = ".sha256"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive


def hash_file(path: str | Path) -> Path:
    """Where a checkpoint's content hash lives: ``last.ckpt`` -> ``last.ckpt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + HASH_SUFFIX)


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (hashlib.file_digest needs Python 3.11)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_hash(path: Path, digest: str) -> None:
    """Write ``<digest>  <name>`` beside the checkpoint, atomically (temporary file, rename):
    a half-written hash file would make a good checkpoint look damaged."""
    target = hash_file(path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_text(f"{digest}  {path.name}\n")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _recorded_sha256(path: Path) -> str | None:
    """The hex digest in the hash file (the name after it is not compared: a copied or renamed
    checkpoint keeps its hash); None if the hash file is not a sha256 line."""
    words = hash_file(path).read_text(errors="replace").split()
    digest = words[0].lower() if words else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return None
    return digest


def _zip_damage(path: Path) -> str | None:
    """What is wrong with the checkpoint's zip archive, None if every member's CRC holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as error:
        return f"not a whole zip archive: {error}"
    return f"the CRC of {bad} fails" if bad else None


def _hash_damage(path: Path) -> str | None:
    """What is wrong against the hash written at save time; None if it matches or if the
    checkpoint has no hash file (one written before metalab wrote them: CRC only)."""
    if not hash_file(path).is_file():
        return None
    recorded = _recorded_sha256(path)
    if recorded is None:
        return f"{hash_file(path).name} holds no sha256 digest"
    actual = file_sha256(path)
    if actual != recorded:
        return (
            f"its sha256 {actual[:12]}... differs from {recorded[:12]}... written at save time "
            f"in {hash_file(path).name}"
        )
    return None


def checkpoint_damage(path: str | Path) -> str | None:
    """Why a checkpoint file is damaged, or None if it verifies. A file that is not a zip at
    all, or cannot be opened, gets no verdict here: torch.load's own error names it then."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            is_zip = handle.read(4) == ZIP_MAGIC
        return (_zip_damage(path) if is_zip else None) or _hash_damage(path)
    except OSError:
        return None


def _run_checkpoints(path: Path) -> list[Path]:
    """The other checkpoints of the run ``path`` belongs to: its folder, and the run's
    ``checkpoints/`` and ``attempt-N/checkpoints/`` folders."""
    folder = path.parent
    folders = {folder}
    if folder.name == "checkpoints":
        run_dir = folder.parent
        if run_dir.name.startswith("attempt-"):
            run_dir = run_dir.parent
        folders |= {run_dir / "checkpoints", *run_dir.glob("attempt-*/checkpoints")}
    found = {p.resolve() for f in folders for p in f.glob("*.ckpt") if p.is_file()}
    found.discard(path.resolve())
    return sorted(found)


def last_good_checkpoint(path: str | Path) -> Path | None:
    """The newest other checkpoint of the same run that verifies, to suggest instead."""
    good = [p for p in _run_checkpoints(Path(path)) if checkpoint_damage(p) is None]
    return max(good, key=lambda p: p.stat().st_mtime_ns, default=None)


def verify_checkpoint(path: str | Path) -> None:
    """Refuse a damaged checkpoint in one line naming the file, what failed and what to use
    instead. Called before every load: metalab's own and Lightning's (resume, test)."""
    if not Path(path).is_file():
        return  # the caller's "does not exist" is the better message
    damage = checkpoint_damage(path)
    if damage is None:
        return
    other = last_good_checkpoint(path)
    if other is None:
        instead = "no other checkpoint of this run verifies: re-run, or restore it from a backup."
    else:
        instead = (
            f"use {other} instead (the newest checkpoint of this run that verifies) as "
            "resume= or ckpt_path=, or re-run."
        )
    raise CheckpointError(f"{path} is damaged ({damage}) and was not loaded: {instead}")


def copy_checkpoint(source: str | Path, target: str | Path) -> None:
    """Copy a checkpoint with its hash file, so that the copy is verified as the original is
    (a copy without it would be checked by CRC only; one beside a stale hash, refused)."""
    source, target = Path(source), Path(target)
    hash_file(target).unlink(missing_ok=True)
    shutil.copy2(source, target)
    if hash_file(source).is_file():
        shutil.copy2(hash_file(source), hash_file(target))


def load_checkpoint(path: str | Path) -> dict:
    """Read a verified checkpoint as data only (``weights_only=True``: no code runs from it)."""
    ckpt_file = Path(path).expanduser()
    if not ckpt_file.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: pass the path of a .ckpt file.")
    verify_checkpoint(ckpt_file)
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
        self.saving = False  # inside this callback's own save (on_save_checkpoint)
        self.signal: str | None = None
        self.step: int | None = None
        # the signal that asked Lightning to stop, when it was not SIGTERM itself (Ctrl+C is
        # turned into Lightning's SIGTERM request by metalab.signals)
        self.requested: str | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal = self.requested or signal.Signals.SIGTERM.name
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = signal.Signals.SIGINT.name
        else:
            return
        if trainer.state.fn == "fit":
            self.step = trainer.global_step
            self.saving = True
            try:
                trainer.save_checkpoint(self.ckpt_path, weights_only=False)
            finally:
                self.saving = False
            log.warning("%s: saved %s at step %d", self.signal, self.ckpt_path, self.step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """A stop right after a validation (the signal came during it or just after) leaves
        Lightning's count of stepped batches one ahead of what its resume expects: resuming
        such a checkpoint, Lightning skips that validation again and counts the batch a
        second time, so every step the resumed run logged was one too high. The count saved
        is the one a checkpoint written at that validation's end has (last.ckpt's)."""
        if self.saving and stopped_after_validation(trainer):
            state = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
            state["_batches_that_stepped"] -= 1


def validation_follows(trainer) -> bool:
    """Whether Lightning validates right after the current training batch (every
    ``trainer.val_check_interval`` batches of the one endless epoch metalab trains in).

    A checkpoint due at such a step is written after that validation: Lightning, resuming
    from a checkpoint written at ``on_train_batch_end`` of a batch a validation follows,
    skips that validation (its training loop "fast forwards" the validation's progress), so
    a run killed between the checkpoint and the validation's end would lose that point of
    its curve (and of its best.ckpt) for good."""
    every = getattr(trainer, "val_check_batch", None)
    if not trainer.enable_validation or not isinstance(every, int) or every < 1:
        return False
    return (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every == 0


def stopped_after_validation(trainer) -> bool:
    """Whether training stopped at the end of a batch whose validation ran: every batch
    fetched is done (Lightning resumes such a state as saved at a validation's end) and a
    validation followed the last one, not interrupted mid-way."""
    done = trainer.fit_loop.epoch_loop.batch_progress.total
    whole = done.ready == done.started == done.processed == done.completed
    return whole and not trainer.validating and validation_follows(trainer)


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` outer steps
    (``trainer.checkpoint_every_n_steps``); one due at a step that a validation follows is
    written after it (validation_follows), through ModelCheckpoint's own deferral to
    ``on_validation_end``. Its state keeps ModelCheckpoint's key, so checkpoints written
    before this class (or after) resume alike."""

    @property
    def state_key(self) -> str:
        key = super().state_key
        return ModelCheckpoint.__qualname__ + key[len(type(self).__qualname__) :]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self._every_n_train_steps
        if every >= 1 and trainer.global_step % every == 0 and validation_follows(trainer):
            self._defer_save_until_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class ClockCheckpoint(Callback):
    """``last.ckpt`` every ``minutes`` of wall clock (``trainer.checkpoint_every_minutes``), so
    that a kill loses at most that much time however long a step takes; one due at a step
    that a validation follows is written after it (validation_follows). Not
    ModelCheckpoint's ``train_time_interval``: Lightning 2.6 reads only
    ``every_n_train_steps`` under manual optimisation. Rank 0's clock decides for every rank
    (the save is collective)."""

    def __init__(self, dirpath: str | Path, minutes: float) -> None:
        self.ckpt_path = str(Path(dirpath) / "last.ckpt")
        self.seconds = 60.0 * minutes
        self.since: float | None = None
        self.after_validation = False  # a save due now, waiting for the validation's end

    def on_train_start(self, trainer, pl_module) -> None:
        self.since = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        due = self.since is not None and time.monotonic() - self.since >= self.seconds
        if trainer.strategy.broadcast(due):
            if validation_follows(trainer):
                self.after_validation = True
            else:
                self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.after_validation and not trainer.sanity_checking:
            self.after_validation = False
            self.save(trainer)

    def save(self, trainer) -> None:
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        self.since = time.monotonic()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place: a
    process killed mid-write (SIGKILL, a pre-emption, a full disk) leaves the previous
    last.ckpt whole instead of a truncated one that resume could not read. Beside it goes its
    sha256, and every checkpoint Lightning loads (``fit``/``test`` with ``ckpt_path``) is
    verified first. Every checkpoint metalab writes (ModelCheckpoint's best/last, the
    interrupt checkpoint) goes through ``trainer.save_checkpoint``, i.e. through this class."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            digest = file_sha256(partial)
            # The old hash goes first: a kill before the new one is written leaves a checkpoint
            # checked by CRC only, never a good one refused for a stale hash.
            hash_file(target).unlink(missing_ok=True)
            os.replace(partial, target)
            write_hash(target, digest)
        finally:
            partial.unlink(missing_ok=True)

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        verify_checkpoint(path)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: str | Path) -> None:
        super().remove_checkpoint(path)
        hash_file(path).unlink(missing_ok=True)
