"""SIGTERM and Ctrl+C stop a run the same way: at the end of the outer step in progress, with
``interrupted.ckpt``, so that the resumed run equals the uninterrupted one.

Lightning stops at a batch boundary on SIGTERM by itself; a KeyboardInterrupt, however, stops
it mid-batch (the resumed run then validates and checkpoints one step early). So while
Lightning runs, the first Ctrl+C is turned into Lightning's SIGTERM request; a second one
aborts at once (exit 130, ``last.ckpt`` kept; nothing half-written), and any further one
exits immediately. Outside Lightning (data loading, set-up) both signals raise
``RunInterrupted`` at once: there is no step to finish.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl

from metalab.checkpoints import InterruptCheckpoint
from metalab.errors import RunInterrupted

_TRAINER_RUNNING = False
SIGINT_EXIT = 128 + signal.SIGINT.value  # 130, what a shell reports for Ctrl+C


class _Aborted(BaseException):
    """A second Ctrl+C: Lightning must not treat it as its KeyboardInterrupt (which would
    write a mid-step checkpoint) but pass it through as any other error."""


def _request_stop(trainer: pl.Trainer, interrupt: InterruptCheckpoint):
    """The SIGINT handler while Lightning runs (see the module's docstring)."""
    presses = 0

    def on_sigint(signum, frame) -> None:
        nonlocal presses
        presses += 1
        on_sigint.presses = presses
        if presses == 1:
            interrupt.requested = signal.Signals.SIGINT.name
            # Lightning's own SIGTERM path: the step finishes, DDP ranks are told, the
            # interrupt checkpoint is written at the boundary
            trainer._signal_connector._sigterm_notifier_fn(signal.SIGTERM, frame)
            print(
                "\nmetalab: Ctrl+C: stopping after this step and writing interrupted.ckpt; "
                "press Ctrl+C again to abort at once (last.ckpt is kept).",
                file=sys.stderr,
                flush=True,
            )
            return
        if presses == 2:
            raise _Aborted()
        os._exit(SIGINT_EXIT)

    on_sigint.presses = 0
    return on_sigint


def exit_on_next_sigint() -> None:
    """Once a run is stopping, another Ctrl+C ends the process at once with 130 (what is
    being written then is written atomically, so nothing is left half-done)."""
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(SIGINT_EXIT))


@contextlib.contextmanager
def lightning_handles_signals(
    trainer: pl.Trainer, interrupt: InterruptCheckpoint, run_dir: Path
) -> Iterator[None]:
    """While Lightning runs it stops at a batch boundary on SIGINT/SIGTERM and calls the
    interrupt checkpoint; what it raises then becomes one RunInterrupted."""
    global _TRAINER_RUNNING
    _TRAINER_RUNNING = True
    interrupt.requested = None
    handler = _request_stop(trainer, interrupt)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    except BaseException as error:
        # after a second press whatever comes out is the abort: the press may land where
        # unwinding leaves state behind (inside a torch.func transform, say) and Lightning's
        # teardown then fails with an error of its own
        if isinstance(error, _Aborted) or handler.presses >= 2:
            last = run_dir / "checkpoints" / "last.ckpt"
            raise RunInterrupted(
                signal.Signals.SIGINT.name, None, str(last) if last.is_file() else None
            ) from None
        if interrupt.signal:
            raise RunInterrupted(
                interrupt.requested or interrupt.signal,
                interrupt.step,
                interrupt.ckpt_path if interrupt.step is not None else None,
            ) from None
        raise
    finally:
        if handler.presses:
            exit_on_next_sigint()
        else:
            signal.signal(signal.SIGINT, previous)
        _TRAINER_RUNNING = False


def sigterm_outside_lightning(signum, frame) -> None:
    if not _TRAINER_RUNNING:  # inside fit/test Lightning's own handler takes care of it
        raise RunInterrupted(signal.Signals(signum).name)
