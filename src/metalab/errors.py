"""Errors that reach the user as one sentence naming the problem and the fix."""


class MetalabError(Exception):
    """Base class: the message is shown to the user without a traceback."""


class ConfigError(MetalabError):
    """A configuration value that cannot work; raised before any training starts."""


class CheckpointError(ConfigError):
    """A checkpoint whose bytes are not the ones written (a failed zip CRC or a content hash
    that differs from the one saved beside it): loading it would run on damaged weights. A
    ConfigError, so every place that turns a bad ``resume``/``ckpt_path`` into one line
    handles it too."""


class DataError(MetalabError):
    """A data set that is missing, incomplete or corrupt."""


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped a run; not a failure: the same command continues it."""

    def __init__(self, signal: str, step: int | None = None, checkpoint: str | None = None):
        self.signal, self.step, self.checkpoint = signal, step, checkpoint
        where = f" at step {step}" if step is not None else ""
        kept = f", checkpoint {checkpoint} written" if checkpoint else ""
        how = (
            "re-run the same command (same hydra.run.dir or hydra.sweep.dir) to continue from "
            "the checkpoint (resume=auto, the default)"
            if checkpoint
            else "re-run the same command with resume=true (same hydra.run.dir or "
            "hydra.sweep.dir) to run it again"
        )
        super().__init__(
            f"interrupted by {signal}{where}{kept}; results.json says interrupted: {how}."
        )
