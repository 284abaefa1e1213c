"""Processes that need the same missing cache build it once: the others wait for the builder
and read its file (a sweep's parallel jobs or DDP's ranks on a fresh machine), and a builder
that dies leaves the build to the next one instead of a lock held for ever."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import torch

from metalab.data.cache import TensorCache

FORK = multiprocessing.get_context("fork")


def blob_of(seed: int) -> dict:
    return {"images": torch.full((3, 4, 4), seed, dtype=torch.uint8), "names": ["a", "b", "c"]}


def build_logged(log: Path, seconds: float, value: int):
    """A build that takes ``seconds`` and notes the pid of every process that ran it."""

    def build() -> dict:
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        return blob_of(value)

    return build


def load(folder: Path, log: Path, seconds: float, value: int, out: Path) -> None:
    cache = TensorCache(folder, "unit", ("key", 1), "unit-test")
    blob = cache.load_or_build(build_logged(log, seconds, value))
    out.write_text(str(int(blob["images"][0, 0, 0])))


def test_two_processes_needing_one_cache_decode_it_once(tmp_path: Path) -> None:
    folder, log = tmp_path / "cache", tmp_path / "builds.log"
    workers = [
        FORK.Process(target=load, args=(folder, log, 1.5, value, tmp_path / f"out{value}"))
        for value in (7, 9)
    ]
    for worker in workers:
        worker.start()
        time.sleep(0.3)  # the second starts while the first is building
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(log.read_text().split()) == 1  # one build
    # both got the builder's blob: the waiter read the file rather than building its own
    assert (tmp_path / "out7").read_text() == (tmp_path / "out9").read_text() == "7"
    assert [p.name for p in folder.glob("*.pt")] == [
        TensorCache(folder, "unit", ("key", 1), "x").name
    ]


def test_a_builder_killed_mid_build_leaves_the_build_to_the_waiter(tmp_path: Path) -> None:
    folder, log = tmp_path / "cache", tmp_path / "builds.log"
    builder = FORK.Process(target=load, args=(folder, log, 60, 7, tmp_path / "out7"))
    builder.start()
    deadline = time.monotonic() + 30
    while not log.is_file() and time.monotonic() < deadline:  # it holds the lock and builds
        time.sleep(0.05)
    waiter = FORK.Process(target=load, args=(folder, log, 0.1, 9, tmp_path / "out9"))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # waiting for the builder, not building beside it
    os.kill(builder.pid, signal.SIGKILL)
    builder.join(10)
    waiter.join(30)
    assert waiter.exitcode == 0
    assert (tmp_path / "out9").read_text() == "9"
    assert len(log.read_text().split()) == 2  # the dead build, then the waiter's own
    again = TensorCache(folder, "unit", ("key", 1), "unit-test").load_or_build(
        build_logged(log, 0, 5)
    )
    assert int(again["images"][0, 0, 0]) == 9  # the file the waiter wrote, read back
