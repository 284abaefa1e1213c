"""Hostile but realistic inputs and faults against metalab's console scripts, each classified.

Issue 18 counted how metalab answers what a careless, hurried or unlucky user gives it: values
of the wrong type or size, a completed run as the target directory, damaged checkpoints, a
second process in a live run's directory, Ctrl+C pressed twice, unreadable data, a disk that
fills up, malformed results for metalab-compare. This script runs that catalogue again, as a
user would (each case is a subprocess of the console script in a fresh temporary directory,
with HYDRA_FULL_ERROR unset, logger=csv and tiny sizes so a case takes seconds), and sorts
every outcome into one of:

- ``clear``: a non-zero exit whose last stderr line starts with ``metalab: error:`` (or, where a
  malformed input is meant to be skipped, a ``metalab: warning:`` line and success for the
  rest; or, for Ctrl+C, exit 130 with a ``metalab:`` line), no traceback, and nothing that
  existed before changed;
- ``traceback``: a Python traceback, or Hydra's "Set the environment variable
  HYDRA_FULL_ERROR" line;
- ``vague``: a non-zero exit without the above;
- ``wrong``: exit 0 where the input cannot work, a completed run's files changed, files lost,
  damaged checkpoints left behind, or no answer at all (killed after a timeout);
- ``skipped``: a fault this machine cannot produce (chmod does not stop root).

Legitimate inputs run alongside as controls and must exit 0.

    python benchmarks/hostile_inputs.py              # the whole catalogue, ~15 min on 2 cores
    python benchmarks/hostile_inputs.py --quick      # a representative subset, under a minute
    python benchmarks/hostile_inputs.py --only resume --keep
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CLEAR, TRACEBACK, VAGUE, WRONG, SKIPPED = "clear", "traceback", "vague", "wrong", "skipped"
OK, FAILED = "ok", "FAILED"  # controls
CLASSES = (CLEAR, TRACEBACK, VAGUE, WRONG, SKIPPED)

SCRIPTS = {
    "metalab-train": "metalab.train",
    "metalab-eval": "metalab.evaluate",
    "metalab-compare": "metalab.compare.cli",
}
# A run that takes seconds: 4 outer steps of sinusoid MAML, validated twice on 5 tasks.
TINY = (
    "logger=csv",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "val.tasks=5",
    "eval.tasks=10",
    "strategy=loop",
    "trainer.enable_progress_bar=false",
)
# A run that lives until it is stopped, checkpointing every 20 steps (live-run and Ctrl+C cases)
LONG = (
    "logger=csv",
    "trainer.max_steps=100000",
    "trainer.checkpoint_every_n_steps=20",
    "trainer.val_check_interval=1000",
    "val.tasks=5",
    "eval.tasks=10",
    "strategy=loop",
    "trainer.enable_progress_bar=false",
)
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR"
CATCH_ALL = "the config could not be checked ("  # RunGuard's message for an unforeseen error
TIMEOUT = 180.0  # seconds: longer than any refusal or tiny run takes on a loaded 2-core machine


# --- running a console script ---------------------------------------------------------------


def cli_argv(tool: str) -> list[str]:
    """The console script next to this Python (what a user's shell finds in the venv), else
    the same module with ``python -m``."""
    script = Path(sys.executable).with_name(tool)
    return [str(script)] if script.exists() else [sys.executable, "-m", SCRIPTS[tool]]


def user_env() -> dict[str, str]:
    """A user's environment: no HYDRA_FULL_ERROR (so Hydra's own hint shows where it would),
    W&B quiet and offline (the runs use logger=csv anyway)."""
    env = dict(os.environ, WANDB_SILENT="true", WANDB_MODE="offline")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@dataclass
class Ran:
    """What one subprocess did."""

    argv: list[str]
    cwd: Path
    rc: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    seconds: float


def _limit_file_size(limit: int | None) -> Callable[[], None] | None:
    """A disk that fills up, emulated: writes past ``limit`` bytes fail (EFBIG) as they would
    with ENOSPC. Python ignores SIGXFSZ, so the write raises instead of killing the process."""
    if limit is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def start(
    tool: str, args: list[str], cwd: Path, env: dict[str, str], fsize: int | None = None
) -> subprocess.Popen:
    """The console script in its own process group (as a terminal's foreground job, so a
    Ctrl+C can be sent to the whole group)."""
    return subprocess.Popen(
        [*cli_argv(tool), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=_limit_file_size(fsize),
    )


def finish(proc: subprocess.Popen, started: float, cwd: Path, timeout: float) -> Ran:
    """Wait for ``proc``; kill its whole group if it gives no answer within ``timeout``."""
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        rc = None
    return Ran(list(map(str, proc.args)), cwd, rc, out, err, time.monotonic() - started)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_tool(
    tool: str,
    args: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout: float = TIMEOUT,
    fsize: int | None = None,
) -> Ran:
    started = time.monotonic()
    return finish(start(tool, args, cwd, env, fsize), started, cwd, timeout)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> bool:
    """Until ``path`` exists (True) or the process ended or time ran out (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


# --- what a case leaves behind --------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder``: a file's sha256, ``<dir>`` for a folder."""
    found: dict[str, str] = {}
    if not folder.exists():
        return found
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = "<link>"
        elif path.is_dir():
            found[rel] = "<dir>"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def unchanged(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """How ``after`` differs from ``before`` path by path (empty: byte for byte the same)."""
    changes = [f"{p} removed" for p in before if p not in after]
    changes += [f"{p} changed" for p in before if p in after and after[p] != before[p]]
    added = sorted({Path(p).parts[0] for p in after if p not in before})
    if added:  # new files: named by the top-level entry they are in
        changes.append(f"{', '.join(added)} added" + ("" if changes else " (nothing changed)"))
    return changes


def kept(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files whose bytes are nowhere under the folder any more (moving them is allowed)."""
    contents = set(after.values())
    return [f"{p} lost" for p, h in before.items() if h != "<dir>" and h not in contents]


def checkpoint_damage(folder: Path) -> list[str]:
    """Checkpoints under ``folder`` that fail their zip CRCs or the sha256 written beside them
    (checked here independently of metalab's own verification)."""
    problems = []
    for ckpt in sorted(folder.rglob("*.ckpt")):
        try:
            with zipfile.ZipFile(ckpt) as archive:
                bad = archive.testzip()
            if bad is not None:
                problems.append(f"{ckpt.name}: CRC fails in {bad}")
                continue
        except (zipfile.BadZipFile, OSError) as error:
            problems.append(f"{ckpt.name}: {error}")
            continue
        sidecar = ckpt.with_name(ckpt.name + ".sha256")
        if sidecar.is_file():
            recorded = sidecar.read_text().split()[:1]
            actual = hashlib.sha256(ckpt.read_bytes()).hexdigest()
            if recorded != [actual]:
                problems.append(f"{ckpt.name}: sha256 differs from {sidecar.name}")
    return problems


def flip_data_byte(ckpt: Path) -> str:
    """Flip one byte in the middle of the largest tensor member of a checkpoint's zip (a
    weight, not the pickle): what a bad disk sector or an interrupted copy does."""
    with zipfile.ZipFile(ckpt) as archive:
        member = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = bytearray(ckpt.read_bytes())
    offset = member.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[offset + 26 : offset + 30])
    at = offset + 30 + name_len + extra_len + member.compress_size // 2
    raw[at] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    return member.filename


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def tail(text: str, count: int = 6) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


# --- a case and its outcome -----------------------------------------------------------------


@dataclass
class Outcome:
    """One row of the table."""

    case: str
    summary: str
    outcome: str
    last: str
    command: str = ""
    cwd: str = ""
    stderr_tail: list[str] = field(default_factory=list)
    note: str = ""
    control: bool = False
    seconds: float = 0.0


@dataclass
class Plan:
    """What a simple case runs and what it must leave as it was.

    ``expect``: error (a refusal), warning (metalab-compare skips the bad run and compares
    the rest), ok (a control). ``watch``: folders whose bytes must stay the same
    (``unchanged``) or whose files may be moved aside but never lost (``kept``). ``check``
    looks at the finished process and returns what went wrong, if anything."""

    tool: str
    args: list[str]
    cwd: Path
    expect: str = "error"
    watch: dict[Path, str] = field(default_factory=dict)
    fsize: int | None = None
    check: Callable[[Ran], str | None] | None = None
    skip: str | None = None
    timeout: float = TIMEOUT


@dataclass
class Case:
    """A named input. ``build`` prepares its files in a fresh folder and returns the plan;
    ``custom`` cases (a live run, Ctrl+C) drive their processes themselves."""

    name: str
    build: Callable[[Lab, Path], Plan] | None = None
    custom: Callable[[Lab, Path], list[Outcome]] | None = None
    quick: bool = False
    control: bool = False
    names: tuple[str, ...] = ()  # the rows a custom case reports, for --only


def classify(
    plan_expect: str, ran: Ran, changes: list[str], problem: str | None
) -> tuple[str, str]:
    """The class of an outcome and a note saying why (see the module's docstring)."""
    if ran.rc is None:
        return WRONG, f"no answer within {ran.seconds:.0f}s (killed)"
    if changes:
        return WRONG, "; ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")
    if problem:
        return WRONG, problem
    traceback = "Traceback" in ran.stderr or HYDRA_HINT in ran.stderr
    last = last_line(ran.stderr)
    if plan_expect == "ok":
        if ran.rc == 0 and not traceback:
            return OK, ""
        return FAILED, f"exit {ran.rc}"
    if plan_expect == "warning":
        warned = any(line.startswith("metalab: warning:") for line in ran.stderr.splitlines())
        if traceback:
            return TRACEBACK, f"exit {ran.rc}"
        if ran.rc == 0:
            return (CLEAR, "") if warned else (WRONG, "exit 0 without a warning")
        if last.startswith("metalab: error:"):
            return VAGUE, f"exit {ran.rc}: refused the whole comparison instead of skipping"
        return VAGUE, f"exit {ran.rc}"
    if ran.rc == 0:
        return WRONG, "exit 0"
    if traceback:
        return TRACEBACK, f"exit {ran.rc}"
    if last.startswith("metalab: error:"):
        if CATCH_ALL in last:
            return CLEAR, "the guard's catch-all message: it names an exception, not the input"
        return CLEAR, ""
    return VAGUE, f"exit {ran.rc}"


class Lab:
    """The shared state of one catalogue run: a temporary root, the user's environment, and
    the fixtures made once (a completed run, an evaluation of it) that cases copy."""

    def __init__(self, root: Path, keep: bool) -> None:
        self.root = root
        self.keep = keep
        self.env = user_env()
        self.data = Path(os.environ.get("METALAB_DATA", "data"))
        self._completed: Path | None = None
        self._evaluation: Path | None = None
        self.fixture_rows: list[Outcome] = []
        self.work: Path = root

    # paths in the table are written relative to the case's folder
    def short(self, text: str) -> str:
        for path, name in ((self.work, "<tmp>"), (self.root, "<lab>"), (self.data, "$DATA")):
            text = text.replace(str(path), name)
        return text

    def summary(self, tool: str, args: list[str]) -> str:
        shown = [a for a in args if a not in TINY and a not in LONG]
        return self.short(" ".join([tool, *(shlex.quote(a) for a in shown)]))

    def outcome(self, name: str, ran: Ran, cls: str, note: str, control: bool = False) -> Outcome:
        tool = Path(ran.argv[0]).name
        args = ran.argv[1:] if not tool.startswith("python") else ran.argv[3:]
        tool = tool if not tool.startswith("python") else ran.argv[2]
        return Outcome(
            case=name,
            summary=self.summary(tool, args),
            outcome=cls,
            last=self.short(last_line(ran.stderr)),
            command=shlex.join(ran.argv),
            cwd=str(ran.cwd),
            stderr_tail=tail(ran.stderr),
            note=note,
            control=control,
            seconds=ran.seconds,
        )

    # -- fixtures ------------------------------------------------------------------------

    def completed(self) -> Path:
        """A completed tiny run (made once; its result is the first control)."""
        if self._completed is None:
            target = self.root / "fixture-completed-run"
            ran = run_tool("metalab-train", [*TINY, f"hydra.run.dir={target}"], self.root, self.env)
            cls, note = classify("ok", ran, [], None)
            if cls == OK and not (target / "results.json").is_file():
                cls, note = FAILED, "no results.json"
            self.fixture_rows.append(
                self.outcome("control: a tiny training run", ran, cls, note, control=True)
            )
            if cls != OK:
                raise SystemExit(
                    "hostile_inputs: the tiny training run every case copies failed:\n"
                    + "\n".join(tail(ran.stderr, 20))
                )
            self._completed = target
        return self._completed

    def evaluation(self) -> Path:
        """A completed evaluation of that run's best.ckpt (made once; a control)."""
        if self._evaluation is None:
            target = self.root / "fixture-evaluation"
            ckpt = self.completed() / "checkpoints" / "best.ckpt"
            ran = run_tool(
                "metalab-eval",
                [f"ckpt_path={ckpt}", "eval.tasks=10", "eval.batch=10", f"hydra.run.dir={target}"],
                self.root,
                self.env,
            )
            cls, note = classify("ok", ran, [], None)
            if cls == OK and not (target / "results.json").is_file():
                cls, note = FAILED, "no results.json"
            self.fixture_rows.append(
                self.outcome("control: metalab-eval of its best.ckpt", ran, cls, note, True)
            )
            if cls != OK:
                raise SystemExit("hostile_inputs: the evaluation fixture failed")
            self._evaluation = target
        return self._evaluation

    def copy_completed(self, where: Path) -> Path:
        shutil.copytree(self.completed(), where, symlinks=True)
        return where

    def copy_evaluation(self, where: Path) -> Path:
        shutil.copytree(self.evaluation(), where, symlinks=True)
        return where

    def run_plan(self, case: Case, plan: Plan) -> Outcome:
        if plan.skip:
            return Outcome(
                case.name, self.summary(plan.tool, plan.args), SKIPPED, plan.skip, note=plan.skip
            )
        before = {folder: snapshot(folder) for folder in plan.watch}
        ran = run_tool(plan.tool, plan.args, plan.cwd, self.env, plan.timeout, plan.fsize)
        changes: list[str] = []
        for folder, mode in plan.watch.items():
            after = snapshot(folder)
            found = (
                unchanged(before[folder], after)
                if mode == "unchanged"
                else kept(before[folder], after)
            )
            changes += [f"{self.short(str(folder))}/{c}" for c in found]
        problem = plan.check(ran) if plan.check and ran.rc is not None else None
        cls, note = classify(plan.expect, ran, changes, problem)
        return self.outcome(case.name, ran, cls, note, case.control)


# --- the catalogue --------------------------------------------------------------------------


def tiny(*overrides: str) -> list[str]:
    """TINY with ``overrides`` in place of the same keys (Hydra refuses a key given twice)."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [t for t in TINY if t.split("=", 1)[0] not in keys] + list(overrides)


def into_completed(*overrides: str) -> Callable[[Lab, Path], Plan]:
    """metalab-train with ``overrides`` aimed at a copy of a completed run (issue 18, item 1):
    refused in one line, the run byte for byte as it was."""

    def build(lab: Lab, work: Path) -> Plan:
        done = lab.copy_completed(work / "done")
        return Plan(
            "metalab-train",
            [*tiny(*overrides), f"hydra.run.dir={done}"],
            work,
            watch={done: "unchanged"},
        )

    return build


def into_new(*overrides: str, default_dir: bool = False, timeout: float = TIMEOUT):
    """metalab-train with ``overrides`` into a new directory (or Hydra's default one under the
    case's folder): refused in one line, within the timeout."""

    def build(lab: Lab, work: Path) -> Plan:
        where = [] if default_dir else [f"hydra.run.dir={work / 'run'}"]
        return Plan("metalab-train", [*tiny(*overrides), *where], work, timeout=timeout)

    return build


HOSTILE_VALUES = {
    "a string": "abc",
    "a list": "[1,2]",
    "a float for an int": "2.5",
    "zero": "0",
    "a negative": "-3",
    "a huge value": "1000000000000000",
}
INT_KEYS = (
    "algorithm.meta_batch",
    "trainer.max_steps",
    "val.tasks",
    "eval.tasks",
    "eval.batch",
    "seed",
    "trainer.devices",
)
FLOAT_KEYS = ("optimizer.lr", "algorithm.inner_lr", "optimizer.grad_clip")
DURATION_VALUES = {
    "a string": "abc",
    "a list": "[1,2]",
    "zero": "0",
    "a negative": "-3",
    "a malformed duration": "00:99:00",
}
OTHER_VALUES = [  # choices, flags and group options
    ("strategy=fast", "an unknown choice"),
    ("optimizer.name=rmsprop", "an unknown choice"),
    ("optimizer.scheduler=exp", "an unknown choice"),
    ("trainer.enable_progress_bar=maybe", "a flag that is not true/false"),
    ("logger.csv=abc", "a flag that is not true/false"),
    ("algorithm.inner_steps=abc", "a string"),
    ("trainer.val_check_interval=0", "zero"),
    ("trainer.checkpoint_every_n_steps=-1", "a negative"),
    ("algorithm=mamll", "a misspelt group option"),
    ("algorithm.inner_lrr=0.1", "a misspelt key"),
]


def value_cases() -> Iterator[Case]:
    """Item 1, 7 and 9 of the issue: every value kind for the numeric keys, aimed at a
    completed run's directory."""
    for key in INT_KEYS:
        for what, text in HOSTILE_VALUES.items():
            yield Case(f"{key}: {what}", into_completed(f"{key}={text}"))
    for key in FLOAT_KEYS:
        for what, text in HOSTILE_VALUES.items():
            if what != "a float for an int":
                yield Case(f"{key}: {what}", into_completed(f"{key}={text}"))
    for what, text in DURATION_VALUES.items():
        yield Case(f"trainer.max_time: {what}", into_completed(f"trainer.max_time={text}"))
    for override, what in OTHER_VALUES:
        yield Case(f"{override.split('=')[0]}: {what}", into_completed(override))
    yield Case(
        "trainer=ddp_cpu trainer.devices=0", into_completed("trainer=ddp_cpu", "trainer.devices=0")
    )


def bound_cases() -> Iterator[Case]:
    """Items 6 and 7 (and the 300-character run_name of 9): values that once were truncated
    or ran unbounded, into a new directory where nothing else would stop them."""
    yield Case("new dir: seed=1.5 (truncated before)", into_new("seed=1.5"))
    yield Case("new dir: algorithm.meta_batch=2.5", into_new("algorithm.meta_batch=2.5"))
    yield Case("new dir: algorithm.meta_batch=1e9", into_new("algorithm.meta_batch=1000000000"))
    yield Case("new dir: val.tasks=1e9", into_new("val.tasks=1000000000"))
    yield Case("new dir: eval.tasks=1e9", into_new("eval.tasks=1000000000"))
    yield Case("new dir: trainer.max_steps=2.5", into_new("trainer.max_steps=2.5"))
    yield Case("run_name of 300 characters", into_new("run_name=" + "a" * 300, default_dir=True))
    yield Case("run_name with a slash", into_new("run_name=a/../../b", default_dir=True))


def _eval_plan(lab: Lab, work: Path, args: list[str], watch: dict[Path, str]) -> Plan:
    where = (
        []
        if any(a.startswith("hydra.run.dir=") for a in args)
        else [f"hydra.run.dir={work / 'eval'}"]
    )
    return Plan(
        "metalab-eval", [*args, "eval.tasks=10", "eval.batch=10", *where], work, watch=watch
    )


def eval_case(name: str, make: Callable[[Lab, Path, Path], list[str]], quick: bool = False):
    """metalab-eval on a copy of the completed run ``done`` (watched: it must stay as it was,
    damage included); ``make`` prepares the input and returns the arguments."""

    def build(lab: Lab, work: Path) -> Plan:
        done = lab.copy_completed(work / "done")
        args = make(lab, work, done)
        return _eval_plan(lab, work, args, {done: "unchanged"})

    return Case(name, build, quick=quick)


def _damaged(work: Path, done: Path) -> list[str]:
    flip_data_byte(done / "checkpoints" / "best.ckpt")
    return [f"ckpt_path={done / 'checkpoints' / 'best.ckpt'}"]


def _truncated(work: Path, done: Path) -> list[str]:
    ckpt = done / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return [f"ckpt_path={ckpt}"]


def _stale_hash(work: Path, done: Path) -> list[str]:
    """An intact zip whose sha256 line does not match (e.g. last.ckpt copied over best.ckpt
    with a different model, its hash file left behind)."""
    sidecar = done / "checkpoints" / "best.ckpt.sha256"
    sidecar.write_text("0" * 64 + "  best.ckpt\n")
    return [f"ckpt_path={done / 'checkpoints' / 'best.ckpt'}"]


def _not_a_checkpoint(work: Path, done: Path) -> list[str]:
    notes = work / "notes.txt"
    notes.write_text("my notes, not a checkpoint\n")
    return [f"ckpt_path={notes}"]


def _empty_ckpt(work: Path, done: Path) -> list[str]:
    (work / "empty.ckpt").write_bytes(b"")
    return [f"ckpt_path={work / 'empty.ckpt'}"]


def _best(done: Path) -> str:
    return f"ckpt_path={done / 'checkpoints' / 'best.ckpt'}"


def eval_cases() -> Iterator[Case]:
    """Items 2, 5 and 9: metalab-eval's targets and checkpoints."""
    yield eval_case(
        "eval into the completed run's dir",
        lambda lab, w, d: [_best(d), f"hydra.run.dir={d}"],
        quick=True,
    )
    yield Case("eval into an earlier evaluation's dir", _eval_into_evaluation)
    yield eval_case("eval without ckpt_path", lambda lab, w, d: [])
    yield eval_case("eval ckpt_path=<a folder>", lambda lab, w, d: [f"ckpt_path={d}"])
    yield eval_case(
        "eval ckpt_path=<checkpoints folder>", lambda lab, w, d: [f"ckpt_path={d / 'checkpoints'}"]
    )
    yield eval_case("eval nonexistent ckpt", lambda lab, w, d: [f"ckpt_path={w}/nope.ckpt"])
    yield eval_case(
        "eval damaged ckpt (a flipped weight byte)", lambda lab, w, d: _damaged(w, d), quick=True
    )
    yield eval_case("eval truncated ckpt", lambda lab, w, d: _truncated(w, d))
    yield eval_case("eval ckpt with a stale .sha256", lambda lab, w, d: _stale_hash(w, d))
    yield eval_case("eval a non-checkpoint file", lambda lab, w, d: _not_a_checkpoint(w, d))
    yield eval_case("eval an empty .ckpt file", lambda lab, w, d: _empty_ckpt(w, d))
    for override in (
        "eval.tasks=abc",
        "eval.tasks=0",
        "eval.batch=-1",
        "split=train",
        "inner_lr=abc",
        "shots=2.5",
        "eval.curve_points=abc",
        "ways=[1,2]",
    ):
        yield eval_case(f"eval {override}", lambda lab, w, d, o=override: [_best(d), o])


def _eval_into_evaluation(lab: Lab, work: Path) -> Plan:
    earlier = lab.copy_evaluation(work / "earlier-eval")
    done = lab.copy_completed(work / "done")
    args = [_best(done), f"hydra.run.dir={earlier}"]
    return _eval_plan(lab, work, args, {earlier: "unchanged", done: "unchanged"})


def _user_folder(work: Path) -> Path:
    """A folder of the user's own files, not a metalab run."""
    folder = work / "mine"
    (folder / "data").mkdir(parents=True)
    (folder / "notes.txt").write_text("my own notes\n")
    (folder / "data" / "x.csv").write_text("1,2\n")
    return folder


def resume_cases() -> Iterator[Case]:
    """Items 5, 8 and 9: resume= in folders that never held a run, to checkpoints that are
    not there or damaged."""

    def user_folder(resume: str, dot: bool = False) -> Callable[[Lab, Path], Plan]:
        def build(lab: Lab, work: Path) -> Plan:
            folder = _user_folder(work)
            where = "." if dot else str(folder)
            return Plan(
                "metalab-train",
                [*tiny(f"resume={resume}"), f"hydra.run.dir={where}"],
                folder if dot else work,
                watch={folder: "unchanged"},
            )

        return build

    yield Case("resume=true into a folder of the user's files", user_folder("true"))
    yield Case("resume=auto into a folder of the user's files", user_folder("auto"))
    yield Case("resume=true hydra.run.dir=. in the user's folder", user_folder("true", True))
    yield Case("resume=/nonexistent.ckpt", into_new("resume=/nonexistent/last.ckpt"))
    yield Case("resume=maybe", into_new("resume=maybe"), quick=True)
    yield Case("resume=true into the completed run", into_completed("resume=true"))
    yield Case("resume=false into the completed run", into_completed("resume=false"))

    def resume_to(make: Callable[[Path, Path], str]) -> Callable[[Lab, Path], Plan]:
        def build(lab: Lab, work: Path) -> Plan:
            done = lab.copy_completed(work / "done")
            target = make(work, done)
            return Plan(
                "metalab-train",
                [*tiny("trainer.max_steps=6", f"resume={target}"), f"hydra.run.dir={work / 'run'}"],
                work,
                watch={done: "unchanged"},
            )

        return build

    def damaged_last(work: Path, done: Path) -> str:
        flip_data_byte(done / "checkpoints" / "last.ckpt")
        return str(done / "checkpoints" / "last.ckpt")

    def notes_ckpt(work: Path, done: Path) -> str:
        (work / "notes.ckpt").write_text("not a checkpoint\n")
        return str(work / "notes.ckpt")

    yield Case("resume=<damaged last.ckpt>", resume_to(damaged_last))
    yield Case("resume=<a text file named .ckpt>", resume_to(notes_ckpt))
    yield Case("resume=<a folder>", resume_to(lambda w, d: str(d / "checkpoints")))

    def crashed_with_damage(lab: Lab, work: Path) -> Plan:
        """A run killed before it finished (no results.json) whose last.ckpt is damaged:
        resume=auto must refuse it naming the file, and lose nothing."""
        run = lab.copy_completed(work / "crashed")
        (run / "results.json").unlink()
        flip_data_byte(run / "checkpoints" / "last.ckpt")
        return Plan("metalab-train", [*tiny(), f"hydra.run.dir={run}"], work, watch={run: "kept"})

    yield Case("resume=auto into a crashed run with a damaged last.ckpt", crashed_with_damage)


def _no_omniglot(lab: Lab) -> str | None:
    if (lab.data / "omniglot" / "images_background.zip").is_file():
        return None
    return "skipped (no omniglot under $METALAB_DATA to copy)"


def data_cases() -> Iterator[Case]:
    """Item 9: data that cannot be read."""
    omniglot = ("dataset=omniglot", "model=conv4")

    def unreadable(lab: Lab, work: Path) -> Plan:
        folder = work / "omniglot"
        skip = _no_omniglot(lab)
        if skip is None:
            shutil.copytree(lab.data / "omniglot", folder)
            os.chmod(folder, 0)
            with contextlib.suppress(OSError):
                os.listdir(folder)
                skip = "skipped (root: chmod 000 does not stop reads)"
        args = [
            *tiny(*omniglot, f"dataset.root={folder}", f"dataset.cache_dir={work / 'cache'}"),
            f"hydra.run.dir={work / 'run'}",
        ]
        return Plan("metalab-train", args, work, skip=skip)

    def corrupt_zip(lab: Lab, work: Path) -> Plan:
        folder = work / "omniglot"
        if _no_omniglot(lab):
            return Plan("metalab-train", [], work, skip=_no_omniglot(lab))
        shutil.copytree(lab.data / "omniglot", folder)
        for path in [folder, *folder.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        archive = folder / "images_background.zip"
        with archive.open("r+b") as handle:
            handle.truncate(archive.stat().st_size // 3)
        (work / "cache").mkdir()
        args = [
            *tiny(*omniglot, f"dataset.root={folder}", f"dataset.cache_dir={work / 'cache'}"),
            f"hydra.run.dir={work / 'run'}",
        ]
        return Plan("metalab-train", args, work)

    def root_is(make: Callable[[Path], Path]) -> Callable[[Lab, Path], Plan]:
        def build(lab: Lab, work: Path) -> Plan:
            root = make(work)
            args = [
                *tiny(*omniglot, f"dataset.root={root}", f"dataset.cache_dir={work / 'c'}"),
                f"hydra.run.dir={work / 'run'}",
            ]
            return Plan("metalab-train", args, work)

        return build

    def a_file(work: Path) -> Path:
        (work / "omniglot.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        return work / "omniglot.zip"

    def empty(work: Path) -> Path:
        (work / "empty").mkdir()
        return work / "empty"

    yield Case("dataset.root unreadable (chmod 000)", unreadable)
    yield Case("dataset.root with a truncated images_background.zip", corrupt_zip)
    yield Case("dataset.root is a file", root_is(a_file))
    yield Case("dataset.root is an empty folder", root_is(empty))
    yield Case("dataset.root does not exist", root_is(lambda w: w / "nowhere"))


def output_cases() -> Iterator[Case]:
    """Item 9: an output folder that cannot be written, a disk that fills up."""

    def read_only(lab: Lab, work: Path) -> Plan:
        parent = work / "readonly"
        parent.mkdir()
        os.chmod(parent, 0o555)
        skip = None
        try:
            (parent / "probe").touch()
            (parent / "probe").unlink()
            skip = "skipped (root: chmod 555 does not stop writes)"
        except OSError:
            pass
        return Plan("metalab-train", [*tiny(), f"hydra.run.dir={parent / 'run'}"], work, skip=skip)

    def under_a_file(lab: Lab, work: Path) -> Plan:
        (work / "report.txt").write_text("a file\n")
        return Plan(
            "metalab-train",
            [*tiny(), f"hydra.run.dir={work / 'report.txt' / 'run'}"],
            work,
            watch={work / "report.txt": "unchanged"},
        )

    def disk_full(limit: int) -> Callable[[Lab, Path], Plan]:
        def build(lab: Lab, work: Path) -> Plan:
            return Plan(
                "metalab-train",
                [*tiny(), f"hydra.run.dir={work / 'run'}"],
                work,
                fsize=limit,
                check=lambda ran: _damaged_left(work / "run"),
            )

        return build

    yield Case("read-only output folder (chmod 555)", read_only)
    yield Case("hydra.run.dir under a regular file", under_a_file)
    yield Case("disk full at 2 KB (Hydra's own files)", disk_full(2_000))
    yield Case("disk full at 20 KB (the first checkpoint)", disk_full(20_000))


def _damaged_left(run: Path) -> str | None:
    problems = checkpoint_damage(run) if run.exists() else []
    return "damaged checkpoint left: " + "; ".join(problems) if problems else None


def _metrics_abc(run: Path) -> None:
    """A metrics.csv whose validation metric holds text in one row (a hand edit gone wrong)."""
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("val/mse")  # the curve metalab-compare draws for sinusoid
    for number, line in enumerate(lines[1:], 1):
        cells = line.split(",")
        if cells[column]:
            cells[column] = "abc"
            lines[number] = ",".join(cells)
            break
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")


def compare_cases() -> Iterator[Case]:
    """Item 9: metalab-compare on malformed results and a bad --out."""

    def with_bad(write: Callable[[Path], None], quick: bool = False, expect: str = "warning"):
        def build(lab: Lab, work: Path) -> Plan:
            good = lab.copy_completed(work / "runs" / "good")
            bad = lab.copy_completed(work / "runs" / "bad")
            write(bad)

            def reported_good(ran: Ran) -> str | None:
                if ran.rc == 0 and not (work / "report" / "comparison.md").is_file():
                    return "exit 0 but no report written"
                return None

            return Plan(
                "metalab-compare",
                [str(good), str(bad), "--out", str(work / "report")],
                work,
                expect=expect,
                watch={good: "unchanged", bad: "unchanged"},
                check=reported_good,
            )

        return build

    def results(text: str) -> Callable[[Path], None]:
        return lambda run: (run / "results.json").write_text(text)

    def mean_abc(run: Path) -> None:
        data = json.loads((run / "results.json").read_text())
        for value in data["metrics"].values():
            if isinstance(value, dict):
                value["mean"] = "abc"
        (run / "results.json").write_text(json.dumps(data))

    yield Case("compare: results.json is a JSON list", with_bad(results("[1, 2]")), quick=True)
    yield Case('compare: results.json with "mean": "abc"', with_bad(mean_abc))
    yield Case("compare: results.json cut short", with_bad(results('{"status": "compl')))
    yield Case("compare: metrics.csv with val/mse=abc", with_bad(_metrics_abc))
    yield Case(
        "compare: metrics.csv of garbage",
        with_bad(lambda run: (run / "metrics.csv").write_text("\x00\x01garbage,\n1,2,3,4\n")),
    )

    def out_is_file(lab: Lab, work: Path) -> Plan:
        done = lab.copy_completed(work / "done")
        (work / "notes.md").write_text("my notes\n")
        return Plan(
            "metalab-compare",
            [str(done), "--out", str(work / "notes.md")],
            work,
            watch={work / "notes.md": "unchanged", done: "unchanged"},
        )

    def plain(args: Callable[[Lab, Path], list[str]]) -> Callable[[Lab, Path], Plan]:
        return lambda lab, work: Plan("metalab-compare", args(lab, work), work)

    def empty(lab: Lab, work: Path) -> list[str]:
        (work / "empty").mkdir()
        return [str(work / "empty"), "--out", str(work / "report")]

    yield Case("compare --out naming an existing file", out_is_file)
    yield Case(
        "compare a nonexistent path",
        plain(lambda lab, w: [str(w / "nowhere"), "--out", str(w / "r")]),
    )
    yield Case("compare an empty folder", plain(empty))
    yield Case(
        "compare --thresholds abc",
        plain(
            lambda lab, w: [
                str(lab.copy_completed(w / "done")),
                "--thresholds",
                "abc",
                "--out",
                str(w / "r"),
            ]
        ),
    )


def sweep_cases() -> Iterator[Case]:
    """Sweeps (one guard for every entry point): bad values among good ones."""

    def sweep(*overrides: str, into_completed_run: bool = False) -> Callable[[Lab, Path], Plan]:
        def build(lab: Lab, work: Path) -> Plan:
            target = work / "sweep"
            watch = {}
            if into_completed_run:
                target = lab.copy_completed(work / "done")
                watch = {target: "unchanged"}
            return Plan(
                "metalab-train",
                ["-m", *tiny(*overrides), f"hydra.sweep.dir={target}"],
                work,
                watch=watch,
                check=lambda ran: _jobs_started(work / "sweep"),
            )

        return build

    yield Case("sweep -m seed=0,abc", sweep("seed=0,abc"))
    yield Case("sweep -m algorithm.meta_batch=2,2.5", sweep("algorithm.meta_batch=2,2.5"))
    yield Case("sweep -m optimizer.lr=0.1,[1,2]", sweep("optimizer.lr=0.1,[1,2]"))
    yield Case(
        "sweep -m seed=0,1 into a completed run's dir",
        sweep("seed=0,1", "resume=false", into_completed_run=True),
    )


def _jobs_started(sweep_dir: Path) -> str | None:
    """A refused sweep starts no job (a job's folder holds .hydra/)."""
    jobs = [p.name for p in sweep_dir.glob("*/.hydra")] if sweep_dir.is_dir() else []
    return f"jobs started before the refusal: {jobs}" if jobs else None


# --- cases that drive their processes -------------------------------------------------------


def live_run(lab: Lab, work: Path) -> list[Outcome]:
    """Item 3: a second process started into a live run's directory is refused, naming the
    first, and the live run goes on untouched; then the first is killed."""
    run = work / "live"
    args = [*LONG, f"hydra.run.dir={run}"]
    names = LIVE_NAMES
    first = start("metalab-train", args, work, lab.env)
    started = time.monotonic()
    rows: list[Outcome] = []
    try:
        if not wait_for(run / "checkpoints" / "last.ckpt", first, TIMEOUT):
            ran = finish(first, started, work, 5)
            return [
                lab.outcome(name, ran, VAGUE, "the first run wrote no last.ckpt") for name in names
            ]
        seconds = [
            ("metalab-train", args),
            ("metalab-train", [*LONG, "resume=true", f"hydra.run.dir={run}"]),
            (
                "metalab-eval",
                [
                    f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                    "eval.tasks=10",
                    f"hydra.run.dir={run}",
                ],
            ),
        ]
        for name, (tool, second_args) in zip(names, seconds, strict=True):
            ran = run_tool(tool, second_args, work, lab.env, timeout=90)
            problem = None
            if first.poll() is not None:
                problem = f"the live run ended (exit {first.returncode})"
            elif list(run.glob("attempt-*")):
                problem = "the live run's files were moved to attempt-N/"
            elif (run / "results.json").exists():
                problem = "results.json written into the live run"
            cls, note = classify("error", ran, [], problem)
            if cls == CLEAR and str(first.pid) not in ran.stderr:
                note = "refused without naming the live process"
            rows.append(lab.outcome(name, ran, cls, note))
    finally:
        _kill_group(first)
        first.communicate()
    return rows


LIVE_NAMES = (
    "live run: the same command again",
    "live run: resume=true into it",
    "live run: metalab-eval into it",
)


# Outer steps of ~1 s (500 sinusoid tasks each) checkpointed at every step: a second Ctrl+C
# 0.25 s after the first lands inside the step the first asked to finish, so it takes the
# abort path instead of arriving after a clean stop.
SLOW_STEPS = ("algorithm.meta_batch=500", "trainer.checkpoint_every_n_steps=1")


def ctrl_c(presses: int, gap: float, *extra: str) -> Callable[[Lab, Path], list[Outcome]]:
    """Item 4: Ctrl+C pressed ``presses`` times, ``gap`` seconds apart (to the process group,
    as a terminal sends it) into a live training run: exit 130, a ``metalab:`` line, no
    traceback, and every checkpoint left intact (the last one resumable)."""

    def drive(lab: Lab, work: Path) -> list[Outcome]:
        run = work / "run"
        name = f"Ctrl+C {presses}x into a running job"
        replaced = {e.split("=")[0] for e in extra}
        args = [*(a for a in LONG if a.split("=")[0] not in replaced), *extra]
        args.append(f"hydra.run.dir={run}")
        proc = start("metalab-train", args, work, lab.env)
        started = time.monotonic()
        if not wait_for(run / "checkpoints" / "last.ckpt", proc, TIMEOUT):
            ran = finish(proc, started, work, 5)
            return [lab.outcome(name, ran, VAGUE, "the run wrote no last.ckpt")]
        time.sleep(0.3)  # inside a step rather than at the checkpoint just written
        for press in range(presses):
            if press:
                time.sleep(gap)
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                break
        ran = finish(proc, started, work, 90)
        problems = checkpoint_damage(run)
        if not (run / "checkpoints" / "last.ckpt").is_file():
            problems.append("last.ckpt lost")
        if ran.rc is None:
            cls, note = WRONG, "no exit within 90 s of the last Ctrl+C (killed)"
        elif problems:
            cls, note = WRONG, "; ".join(problems)
        elif "Traceback" in ran.stderr or HYDRA_HINT in ran.stderr:
            cls, note = TRACEBACK, f"exit {ran.rc}"
        elif ran.rc != 130:
            cls, note = VAGUE, f"exit {ran.rc}, not 130"
        elif not last_line(ran.stderr).startswith("metalab:"):
            cls, note = VAGUE, "exit 130 without a metalab: line"
        else:
            cls, note = CLEAR, ""
        if cls == CLEAR and presses > 1 and "interrupted.ckpt" in last_line(ran.stderr):
            note = "the run had stopped cleanly before the next press: no abort path exercised"
        return [lab.outcome(name, ran, cls, note)]

    return drive


# --- controls -------------------------------------------------------------------------------


def control_cases() -> Iterator[Case]:
    """Legitimate inputs next to the hostile ones: each must exit 0 (the fixtures, a tiny run
    and its evaluation, are controls too)."""

    def compare_completed(lab: Lab, work: Path) -> Plan:
        done = lab.copy_completed(work / "done")
        return Plan(
            "metalab-compare",
            [str(done), "--out", str(work / "report")],
            work,
            expect="ok",
            watch={done: "unchanged"},
        )

    def resume_from_checkpoint(lab: Lab, work: Path) -> Plan:
        done = lab.copy_completed(work / "done")
        last = done / "checkpoints" / "last.ckpt"
        return Plan(
            "metalab-train",
            [*tiny("trainer.max_steps=6", f"resume={last}"), f"hydra.run.dir={work / 'r'}"],
            work,
            expect="ok",
            watch={done: "unchanged"},
        )

    def sweep(lab: Lab, work: Path) -> Plan:
        return Plan(
            "metalab-train",
            ["-m", *tiny("seed=1,2"), f"hydra.sweep.dir={work / 's'}"],
            work,
            expect="ok",
        )

    def default_dir(lab: Lab, work: Path) -> Plan:
        return Plan(
            "metalab-train",
            tiny("seed=3", "optimizer.lr=0.01"),
            work,
            expect="ok",
            check=lambda ran: (
                None
                if list(work.glob("outputs/runs/*/*/results.json"))
                else "no results.json under outputs/runs/"
            ),
        )

    yield Case("control: metalab-compare of the completed run", compare_completed, control=True)
    yield Case("control: resume=<last.ckpt> into a new run", resume_from_checkpoint, control=True)
    yield Case("control: a tiny run in the default directory", default_dir, control=True)
    yield Case("control: a sweep -m seed=1,2", sweep, control=True)


def catalogue() -> list[Case]:
    cases: list[Case] = []
    for group in (
        value_cases,
        bound_cases,
        eval_cases,
        resume_cases,
        data_cases,
        output_cases,
        compare_cases,
        sweep_cases,
        control_cases,
    ):
        cases.extend(group())
    quick = {
        "optimizer.lr: a string",
        "algorithm.meta_batch: a list",
        "new dir: seed=1.5 (truncated before)",
    }
    for case in cases:
        case.quick = case.quick or case.name in quick
    cases.append(Case("live run", custom=live_run, names=LIVE_NAMES))
    cases.append(Case("Ctrl+C 1x into a running job", custom=ctrl_c(1, 0)))
    cases.append(Case("Ctrl+C 2x into a running job", custom=ctrl_c(2, 0.25, *SLOW_STEPS)))
    cases.append(Case("Ctrl+C 3x into a running job", custom=ctrl_c(3, 0.25, *SLOW_STEPS)))
    names = [n for c in cases for n in (c.names or (c.name,))]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, duplicates
    return cases


# --- running and reporting ------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60] or "case"


def run_catalogue(cases: list[Case], keep: bool, progress: bool = True) -> list[Outcome]:
    """Every case in its own folder under one temporary root, one process at a time."""
    root = Path(tempfile.mkdtemp(prefix="metalab-hostile-"))
    lab = Lab(root, keep)
    rows: list[Outcome] = []
    try:
        lab.completed()  # the fixture every copy comes from, first
        rows.extend(lab.fixture_rows)
        lab.fixture_rows.clear()
        for number, case in enumerate(cases, 1):
            work = root / f"{number:03d}-{slug(case.name)}"
            work.mkdir()
            lab.work = work
            if case.custom is not None:
                found = case.custom(lab, work)
            else:
                assert case.build is not None
                found = [lab.run_plan(case, case.build(lab, work))]
            rows.extend(lab.fixture_rows)
            lab.fixture_rows.clear()
            for row in found:
                row.control = row.control or case.control
                if progress:
                    print(
                        f"[{number}/{len(cases)}] {row.outcome:9} {row.case} ({row.seconds:.0f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
            rows.extend(found)
            if not keep:
                _remove(work)
    finally:
        if keep:
            print(f"kept the cases' folders under {root}", file=sys.stderr)
        else:
            _remove(root)
    return rows


def _remove(folder: Path) -> None:
    """Remove a case's folder, chmod-ed ones included."""
    for path in [folder, *folder.rglob("*")] if folder.exists() else []:
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                os.chmod(path, 0o755)
    shutil.rmtree(folder, ignore_errors=True)


def totals(rows: list[Outcome]) -> dict[str, int]:
    counts = dict.fromkeys(CLASSES, 0)
    for row in rows:
        if not row.control:
            counts[row.outcome] += 1
    return counts


def totals_line(rows: list[Outcome]) -> str:
    counts = totals(rows)
    controls = [r for r in rows if r.control]
    good = sum(r.outcome == OK for r in controls)
    return (
        " / ".join(f"{name} {counts[name]}" for name in CLASSES)
        + f" (controls: {good} of {len(controls)} ok)"
    )


def print_report(rows: list[Outcome], out=sys.stdout) -> None:
    """The table, the cases that need a fix in full, then the totals."""
    width = max(len(r.case) for r in rows)
    for row in rows:
        last = row.last if len(row.last) <= 120 else row.last[:117] + "..."
        print(f"{row.case:<{width}}  {row.outcome:<9}  {row.summary}", file=out)
        print(f"{'':<{width}}  {'':<9}  -> {last}", file=out)
    bad = [r for r in rows if r.outcome not in (CLEAR, SKIPPED, OK)]
    if bad:
        print("\nnot clear:", file=out)
        for row in bad:
            print(f"\n== {row.case}: {row.outcome}{f' ({row.note})' if row.note else ''}", file=out)
            print(f"   cd {shlex.quote(row.cwd)} && {row.command}", file=out)
            for line in row.stderr_tail:
                print(f"   | {line[:300]}", file=out)
    notes = [r for r in rows if r.outcome == CLEAR and r.note]
    for row in notes:
        print(f"\nnote: {row.case}: {row.note}", file=out)
    print(f"\n{totals_line(rows)}", file=out)


def select(cases: list[Case], quick: bool, only: str | None) -> list[Case]:
    chosen = [c for c in cases if c.quick] if quick else list(cases)
    if only:
        needle = only.lower()
        chosen = [c for c in chosen if any(needle in n.lower() for n in (c.names or (c.name,)))]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a small representative subset (under a minute)"
    )
    parser.add_argument("--only", metavar="TEXT", help="the cases whose name contains TEXT")
    parser.add_argument("--keep", action="store_true", help="keep the cases' folders")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    args = parser.parse_args(argv)
    cases = select(catalogue(), args.quick, args.only)
    if args.list:
        for case in cases:
            for name in case.names or (case.name,):
                print(name)
        return 0
    if not cases:
        parser.error(f"no case matches --only {args.only!r}")
    found = importlib.util.find_spec("metalab")
    print(f"metalab under test: {found.origin if found else 'not importable here'}")
    rows = run_catalogue(cases, args.keep)
    print_report(rows)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    counts = totals(rows)
    failed_controls = any(r.outcome != OK for r in rows if r.control)
    return 1 if counts[TRACEBACK] or counts[WRONG] or counts[VAGUE] or failed_controls else 0


if __name__ == "__main__":
    sys.exit(main())
