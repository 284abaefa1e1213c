"""A second Ctrl+C is an abort whatever Lightning raises after it: the press can land where
unwinding leaves state behind (inside a torch.func transform) and Lightning's teardown then
fails with an error of its own, which must not turn exit 130 into a failed run."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from metalab.checkpoints import InterruptCheckpoint
from metalab.errors import RunInterrupted
from metalab.signals import _Aborted, lightning_handles_signals


@pytest.fixture
def own_sigint():
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)  # the block leaves an exit-at-once handler


def stopping_trainer() -> SimpleNamespace:
    requests = []
    connector = SimpleNamespace(_sigterm_notifier_fn=lambda signum, frame: requests.append(signum))
    return SimpleNamespace(_signal_connector=connector, requests=requests)


@pytest.mark.parametrize("after_abort", [None, RuntimeError("mutating .data inside functorch")])
def test_whatever_follows_the_second_press_is_the_abort(after_abort, tmp_path, own_sigint):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    trainer = stopping_trainer()
    handled = lightning_handles_signals(trainer, InterruptCheckpoint(tmp_path), tmp_path)
    with pytest.raises(RunInterrupted) as caught, handled:
        press = signal.getsignal(signal.SIGINT)
        press(signal.SIGINT, None)  # the first: Lightning is asked to stop after the step
        assert trainer.requests == [signal.SIGTERM]
        try:
            press(signal.SIGINT, None)  # the second: abort
        except _Aborted:
            if after_abort is not None:
                raise after_abort from None  # Lightning's teardown failing on its way out
            raise
    assert caught.value.signal == "SIGINT" and caught.value.step is None
    assert caught.value.checkpoint == str(tmp_path / "checkpoints" / "last.ckpt")


def test_an_error_without_a_second_press_stays_an_error(tmp_path, own_sigint):
    handled = lightning_handles_signals(stopping_trainer(), InterruptCheckpoint(tmp_path), tmp_path)
    with pytest.raises(RuntimeError, match="diverged"), handled:
        raise RuntimeError("diverged")
