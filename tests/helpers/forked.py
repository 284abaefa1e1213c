"""metalab-train and metalab-eval as processes forked from the test process.

Why: a console script in a fresh interpreter spends about 5 CPU-seconds importing torch and
Lightning before its job starts, more than a ``debug=tiny`` job itself takes. A fork of the
test process (which imports them once, here) runs the same entry point the console script
runs (``metalab.cli.train``/``evaluate``, with ``sys.argv``, the working directory and the
environment it would have) as a process of its own: its exit status, its stdout and stderr,
the signals sent to it and whatever it changes (Hydra's and logging's global state, signal
handlers, the environment) are its own, exactly as for the console script.

What a fork cannot have: a fresh interpreter's own hash seed (string hashing, so set order,
is the test process's) and module state that was there before the job (caches such as the
native kernel's, read from the environment once). A test of determinism across processes
compares a fork with a fresh interpreter (tests/runs/test_resume.py). A fork's ``__main__``
and ``sys.argv`` are the console script's, so Lightning's DDP launcher, which starts the
command line again for the other ranks, starts metalab-train (in a fresh interpreter, as for
a user), not the test runner. Commands of joblib's and SLURM's launchers
(``OWN_PROCESSES``) run as real console scripts: their jobs run in fresh interpreters (or
elsewhere) anyway, so a fork would save nothing.
``METALAB_TEST_SUBPROCESS=1`` runs every command as a real console script (the reference
these forks are meant to equal); so does a platform without ``os.fork``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from pathlib import Path
from typing import IO

import torch

from tests.helpers.cli import SCRIPTS, cli_argv, cli_env, run_console_script

ENTRY_POINTS = {"metalab-train": "train", "metalab-eval": "evaluate"}  # metalab.cli's
# What a job imports; imported once here so that no fork imports them again.
PRELOAD = ("metalab.cli", "metalab.train", "metalab.evaluate", "metalab.assembly")
# A fresh interpreter's warning filters (python -W default aside): see the warnings docs.
FRESH_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, None),
    ("ignore", PendingDeprecationWarning, None),
    ("ignore", ImportWarning, None),
    ("ignore", ResourceWarning, None),
)


# Overrides whose jobs run in processes the launcher starts.
OWN_PROCESSES = re.compile(r"^hydra/launcher=(parallel|joblib|slurm\w*|submitit\w*)$")


def forkable(command: str, args: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether ``command args`` runs forked here (else as a real console script): not while
    this process runs torch on several threads, since OpenMP's thread team does not survive a
    fork (the child would wait on threads it does not have); one thread each is what pytest's
    workers get on a machine with no more cores than workers (tests/conftest.py)."""
    return (
        command in ENTRY_POINTS
        and not any(OWN_PROCESSES.match(a) for a in args)
        and hasattr(os, "fork")
        and os.environ.get("METALAB_TEST_SUBPROCESS") != "1"
        and torch.get_num_threads() == 1
    )


def preload() -> None:
    for module in PRELOAD:
        importlib.import_module(module)


class ForkedProcess:
    """A Popen-like handle on a forked console script: ``pid``, ``poll``, ``wait``,
    ``send_signal``, ``communicate``, ``returncode`` (minus the signal that ended it), and
    ``stdout``/``stderr`` text pipes when asked for (``subprocess.PIPE``, else DEVNULL)."""

    def __init__(
        self,
        command: str,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        stdout: int | IO = subprocess.DEVNULL,
        stderr: int | IO = subprocess.DEVNULL,
    ):
        preload()
        self.args = [*cli_argv(command), *args]
        self.returncode: int | None = None
        ends = {1: _ends(stdout), 2: _ends(stderr)}
        # flush what this process holds, or the child would write it a second time
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into the test process
            code = 70
            try:
                for end in ends.values():
                    if end is not None and end[0] is not None:
                        os.close(end[0])
                code = _child(
                    command,
                    args,
                    cwd,
                    env,
                    {fd: end[1] if end else None for fd, end in ends.items()},
                )
            except BaseException:  # noqa: BLE001 - report it, never return into pytest
                with contextlib.suppress(Exception):
                    traceback.print_exc()
            finally:
                os._exit(code)
        opened: dict[int, IO[str] | None] = {}
        for fd, end in ends.items():
            if end is None or end[0] is None:
                opened[fd] = None
                continue
            os.close(end[1])
            opened[fd] = open(end[0], encoding="utf-8", errors="replace")  # noqa: SIM115
        self.stdout, self.stderr = opened[1], opened[2]

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Read the pipes to their end and wait, as Popen.communicate does."""
        read: dict[str, str] = {}
        readers = [
            threading.Thread(target=lambda n=name, s=stream: read.__setitem__(n, s.read()))
            for name, stream in (("stdout", self.stdout), ("stderr", self.stderr))
            if stream is not None
        ]
        for reader in readers:
            reader.start()
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        finally:
            for reader in readers:
                reader.join()
            for stream in (self.stdout, self.stderr):
                if stream is not None:
                    stream.close()
        return read.get("stdout"), read.get("stderr")


def _ends(how: int | IO) -> tuple[int | None, int] | None:
    """(read end, write end) of a pipe for PIPE, (None, its fd) for a file, None: DEVNULL."""
    if how == subprocess.PIPE:
        return os.pipe()
    return (None, how.fileno()) if hasattr(how, "fileno") else None


def _main_module(command: str) -> types.ModuleType:
    """The ``__main__`` the console script's process has (found as tests.helpers.cli finds
    the command): the script file, or ``python -m``'s module."""
    main = types.ModuleType("__main__")
    script = Path(sys.executable).with_name(command)
    if script.exists():
        main.__file__, main.__spec__ = str(script), None
    else:
        main.__spec__ = importlib.util.find_spec(SCRIPTS[command])
        main.__file__ = main.__spec__.origin
    return main


def _pristine_warnings():
    """A fresh copy of the warnings module, for the functions the test process has swapped."""
    spec = importlib.util.find_spec("warnings")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(command: str, args: list[str], cwd: Path, env: dict[str, str], pipes) -> int:
    """Become the console script's process, run its entry point, return its exit status."""
    # stdin, stdout and stderr as a console script started by subprocess has them
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    for fd, end in pipes.items():
        os.dup2(end if end is not None else null, fd)
    old = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )
    # a fresh interpreter's global state where the test process has changed it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        import faulthandler

        faulthandler.disable()
    atexit._clear()
    warnings.resetwarnings()
    for action, category, module in FRESH_FILTERS:
        warnings.filterwarnings(action, category=category, module=module or "")
    warnings.showwarning = warnings._showwarning_orig  # type: ignore[attr-defined]
    # pytest's catch_warnings(record=True) also swaps the function behind showwarning for
    # its recorder: without the original, the child's warnings never reached its stderr
    warnings._showwarnmsg_impl = _pristine_warnings()._showwarnmsg_impl  # type: ignore[attr-defined]
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in old:
                handler.setStream(sys.stderr)  # a library's own console handler
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    main = sys.modules["__main__"] = _main_module(command)
    sys.argv = [main.__file__, *args]

    from metalab import cli

    code: int = 0
    try:
        getattr(cli, ENTRY_POINTS[command])()
    except SystemExit as stop:  # what the interpreter does with sys.exit's argument
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # uncaught: the interpreter ends by SIGINT itself
        traceback.print_exc()
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001 - the interpreter prints it and exits with 1
        traceback.print_exc()
        code = 1
    _finish()
    return code & 0xFF


def _finish() -> None:
    """What the interpreter does at exit: atexit functions, then flushing the streams."""
    atexit._run_exitfuncs()
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def popen_cli(
    command: str,
    *args: str,
    cwd: Path,
    env: dict[str, str | None] | None = None,
    stdout: int = subprocess.DEVNULL,
    stderr: int = subprocess.DEVNULL,
) -> ForkedProcess | subprocess.Popen:
    """Start a console script (forked where it can be) and return its Popen-like handle;
    Ctrl+C (SIGINT) reaches it as it reaches a terminal's job."""
    if forkable(command, args):
        return ForkedProcess(
            command, list(args), cwd, cli_env(**(env or {})), stdout=stdout, stderr=stderr
        )
    return subprocess.Popen(
        [*cli_argv(command), *args],
        cwd=cwd,
        env=cli_env(**(env or {})),
        stdout=stdout,
        stderr=stderr,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_cli_forked(
    command: str,
    *args: str,
    cwd: Path,
    timeout: float = 1800,
    env: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess:
    """``tests.helpers.cli.run_cli``, forked where it can be: the same arguments, the same
    result (exit status, stdout, stderr)."""
    if not forkable(command, args):
        return run_console_script(command, *args, cwd=cwd, timeout=timeout, env=env)
    # the child's output goes to files: a pipe nobody reads while it runs could fill
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = ForkedProcess(
            command, list(args), cwd, cli_env(**(env or {})), stdout=out, stderr=err
        )
        process.communicate(timeout=timeout)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())
