"""One process per run or sweep directory: an OS-level lock held for the job's lifetime.

Without it the same command started twice into one directory takes the live run for a
crashed one: resume=auto moves its files to ``attempt-1/`` and both processes then write one
``metrics.csv`` and one set of checkpoints. The lock is ``flock`` on ``.metalab.lock`` in the
directory, which the kernel releases when the process ends however it ends, so a lock whose
owner died is never in the way (the file may stay behind, holding the dead owner's pid and
host only as information). The owner is written into the file for the message a second
process gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from metalab.errors import ConfigError

LOCK_NAME = ".metalab.lock"

_held: dict[Path, int] = {}  # directory -> open file descriptor of its lock, in this process


def _owner(path: Path) -> str:
    """Who holds the lock, as its file says (best effort: the file is information only)."""
    try:
        owner = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["since"]))
        return f"process {owner['pid']} on {owner['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire(directory: Path) -> None:
    """Hold ``directory``'s lock until ``release`` or the end of this process; refuse with the
    owner named when another process holds it. Re-acquiring in the same process is a no-op."""
    directory = Path(directory).resolve()
    if directory in _held:
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{directory} is in use by {_owner(path)}: a second process would mix its files "
                "with that run's. Wait for it to end (or stop it), or choose another "
                "hydra.run.dir / hydra.sweep.dir."
            ) from None
        except OSError:  # a file system without locks: run unguarded rather than not at all
            os.close(fd)
            return
        try:  # the holder may have removed the file between our open and flock: lock anew
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _held[directory] = fd


def release(directory: Path) -> None:
    """Give the lock back and remove its file (the next owner makes a new one)."""
    directory = Path(directory).resolve()
    fd = _held.pop(directory, None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        (directory / LOCK_NAME).unlink(missing_ok=True)
    os.close(fd)


def holds(directory: Path) -> bool:
    return Path(directory).resolve() in _held


def owner_alive(directory: Path) -> bool | None:
    """Whether the process that holds (or held) ``directory``'s lock is still alive, from the
    owner the lock file names, without touching the lock itself (a probe with ``flock``
    could make a job that starts at that instant refuse its own directory). None when it
    cannot be told here: the owner ran on another host, or the file is unreadable. No lock
    file: nothing runs there (``release`` removes it; a killed owner leaves it behind)."""
    path = Path(directory) / LOCK_NAME
    try:
        owner = json.loads(path.read_text())
        pid, host, since = int(owner["pid"]), str(owner["host"]), float(owner["since"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        pass
    started = _start_time(pid)  # a pid the kernel gave again since: another process
    return started is None or started <= since + 5.0


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from Linux's /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))  # fmt: skip
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError, StopIteration):
        return None
