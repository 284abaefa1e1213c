"""The shell commands of README.md's usage blocks, and how a test runs each one cheaply.

``collect`` reads the fenced code blocks (```bash, ```sh or plain ```), joins backslash
continuations, drops comments and keeps every command (a part of an ``&&`` chain) that starts
with metalab-train, metalab-eval, metalab-compare, ``python -m metalab...`` or runs the
metalab or metalab-gpu service of ``docker compose`` (whose entrypoint is metalab-train). A
line that only mentions a command further on (the Layout block's
``train.py  metalab-train; ...``) is not one.

``Command.compose_only`` says why a command is composed (``--cfg job``) instead of run: it
needs a GPU, SLURM, W&B online or Docker, or a data set that is not under ``$METALAB_DATA``.
The rest run with ``debug=tiny`` (conf/debug/tiny.yaml); the rules that make them cheap and
point their placeholders at this test's own outputs are the functions below. metalab-train
and metalab-eval run forked from the test process (tests/helpers/forked.py: the console
script's entry point in a process of its own, without importing torch again), except those
that run their jobs in the launcher's processes (joblib's, SLURM's), which run as console
scripts.

Each command knows its README section (the "## " heading above it): the "Set up" and "Using
it" commands run in tests/cli/test_readme_usage.py, the others in tests/cli/test_readme_sweeps.py,
each module with a ``Workspace`` of its own, so that two test workers share the commands.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import cli_env
from tests.helpers.forked import run_cli_forked
from tests.helpers.paths import CONF, README

TINY = CONF / "debug" / "tiny.yaml"

SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
TOOLS = {"metalab.train": "metalab-train", "metalab.evaluate": "metalab-eval",
         "metalab.compare.cli": "metalab-compare"}  # fmt: skip
# Why a command is composed only, by the overrides (or environment) that ask for it.
NEEDS = [
    ("needs a GPU", re.compile(r"^(trainer=(gpu|ddp)|trainer\.accelerator=(gpu|cuda))$")),
    ("needs SLURM", re.compile(r"^hydra/launcher=(slurm|submitit_slurm)$")),
    ("needs W&B online", re.compile(r"^(logger\.wandb\.mode|WANDB_MODE)=online$")),
    ("needs MuJoCo (the rl extra)", re.compile(r"^(experiment|dataset)=\S*halfcheetah")),
]
# Data sets by a word in the command (an experiment, dataset, reproduce or search preset's
# name) and the folder under $METALAB_DATA that holds them (conf/dataset/*.yaml's root).
DATA = {"omniglot": "omniglot", "miniimagenet": "miniimagenet", "cifar_fs": "cifar100",
        "fc100": "cifar100", "imagefolder": "imagefolder", "tieredimagenet": "tieredimagenet",
        "cub": "cub"}  # fmt: skip
# metalab-eval has no debug group (conf/eval.yaml): its two test-size keys, cut here.
EVAL_TINY = ("eval.tasks=2", "eval.batch=2")
SEARCH_TRIALS = 2  # an Optuna search (hparams_search=...) runs this many trials
PRINTS_ONLY = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"}


@dataclass(frozen=True)
class Command:
    """One documented command: ``tool`` (metalab-train, metalab-eval, metalab-compare or a
    ``python -m`` module), its arguments as the shell passes them, and its environment."""

    text: str
    tool: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    docker: bool = False
    module: str | None = None  # python -m <module> that is not one of the console scripts
    line: int = 0
    section: str = ""  # the README's "## " heading above it

    @property
    def multirun(self) -> bool:
        return "-m" in self.args or "--multirun" in self.args

    @property
    def prints_only(self) -> bool:
        """--cfg, --help, --info: the command trains nothing, so it runs as written."""
        return any(a in PRINTS_ONLY for a in self.args)

    def compose_only(self, data_root: Path | None) -> str | None:
        """Why this command is only composed, or None when it runs."""
        why = ["needs Docker"] if self.docker else []
        why += [w for w, pattern in NEEDS if any(pattern.match(a) for a in (*self.args, *self.env))]
        if not why and self.tool == "metalab-train" and not self.prints_only:
            folders = {folder for word, folder in DATA.items() if any(word in a for a in self.args)}
            why += [
                f"no {folder}/ under METALAB_DATA"
                for folder in sorted(folders)
                if data_root is None or not (data_root / folder).is_dir()
            ]
        return ", ".join(why) or None

    def short(self) -> str:
        words = " ".join(("docker" if self.docker else self.tool, *self.args))
        return words if len(words) <= 80 else words[:77] + "..."


@dataclass
class _Block:
    lang: str
    start: int
    lines: list[str] = field(default_factory=list)


def shell_blocks(text: str) -> list[_Block]:
    """The fenced blocks whose language is a shell's (or none)."""
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w-]*)\s*$", line)
        if fence and current is None:
            current = _Block(fence.group(1).lower(), number + 1)
        elif fence:
            if current.lang in SHELL_FENCES:
                blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    return blocks


def logical_lines(block: _Block) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    joined, pending, first = [], "", 0
    for offset, line in enumerate(block.lines):
        if not pending:
            first = block.start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((first, pending + line))
        pending = ""
    if pending:
        joined.append((first, pending))
    return joined


def parse(tokens: list[str], text: str, line: int) -> Command | None:
    """A metalab command from one part of a shell line, or None."""
    env = []
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        env.append(tokens.pop(0))
    if not tokens:
        return None
    head = tokens[0]
    if head in TOOLS.values():
        return Command(text, head, tuple(tokens[1:]), tuple(env), line=line)
    if head in ("python", "python3") and len(tokens) > 2 and tokens[1] == "-m":
        module = tokens[2]
        if module in TOOLS:
            return Command(text, TOOLS[module], tuple(tokens[3:]), tuple(env), line=line)
        if module.split(".")[0] == "metalab":
            return Command(text, module, tuple(tokens[3:]), tuple(env), module=module, line=line)
    if tokens[:2] == ["docker", "compose"] and "run" in tokens:
        rest = tokens[tokens.index("run") + 1 :]
        while rest and rest[0].startswith("-"):
            rest.pop(0)  # --rm, -T (run's flags that take no value)
        # docker/Dockerfile: ENTRYPOINT ["metalab-train"]; the CPU and GPU services
        if rest and rest[0] in ("metalab", "metalab-gpu"):
            return Command(text, "metalab-train", tuple(rest[1:]), tuple(env), True, line=line)
    return None


def sections(text: str) -> list[tuple[int, str]]:
    """(line number, title) of each "## " heading outside the fenced blocks, in order."""
    found, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*```", line):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            found.append((number, line[3:].strip()))
    return found


def collect(text: str | None = None) -> list[Command]:
    """Every metalab command of the README's shell blocks, each once, in order."""
    text = README.read_text() if text is None else text
    headings = sections(text)
    commands, seen = [], set()
    for block in shell_blocks(text):
        for number, line in logical_lines(block):
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue  # not shell (a file listing)
            part: list[str] = []
            for token in [*tokens, "&&"]:
                if token not in ("&&", "||", ";"):
                    part.append(token)
                    continue
                command = parse(part, shlex.join(part), number) if part else None
                part = []
                if command is not None and command.text not in seen:
                    seen.add(command.text)
                    above = [title for start, title in headings if start < number]
                    commands.append(replace(command, section=above[-1] if above else ""))
    return commands


# --- making a documented command cheap and pointing it at this test's outputs --------------


def tiny_values() -> dict[str, str]:
    """conf/debug/tiny.yaml as dotted key -> override value (its defaults list aside)."""

    def flat(node: dict, prefix: str = "") -> dict[str, str]:
        out = {}
        for key, value in node.items():
            if key == "defaults":
                continue
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = yaml.safe_dump(value).strip().removesuffix("\n...")
        return out

    return flat(yaml.safe_load(TINY.read_text()))


def split_override(arg: str) -> tuple[str, str] | None:
    if arg.startswith("-") or "=" not in arg:
        return None
    key, value = arg.split("=", 1)
    return key.lstrip("+~"), value


def first_job(args: tuple[str, ...]) -> list[str]:
    """One job of a sweep, for --cfg job (Hydra composes no sweep): the first value of each
    ``a,b,c`` list; overrides that are sweep functions (interval(...), tag(...)) are dropped."""
    out = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        kv = split_override(arg)
        if kv is None:
            out.append(arg)
        elif re.match(r"^\w+\(", kv[1]):
            continue
        elif "," in kv[1] and not kv[1].startswith(("[", "{", "'", '"')):
            out.append(f"{arg.split('=', 1)[0]}={kv[1].split(',')[0]}")
        else:
            out.append(arg)
    return out


def tiny_train_args(args: tuple[str, ...]) -> list[str]:
    """A training command cut to seconds: debug=tiny appended, and what would outweigh it:
    a value the command gives to a key tiny.yaml sets takes tiny's value (the key is kept, so
    it is still checked), a sweep over seeds runs its first seed (seeds change no code path),
    and an Optuna search runs SEARCH_TRIALS trials."""
    tiny = tiny_values()
    out = []
    for arg in args:
        kv = split_override(arg)
        if kv and kv[0] in tiny:
            arg = f"{arg.split('=', 1)[0]}={tiny[kv[0]]}"
        elif kv and kv[0] == "seed" and "," in kv[1]:
            arg = f"seed={kv[1].split(',')[0]}"
        elif kv and kv[0] == "hydra.sweeper.n_trials":
            continue
        out.append(arg)
    if any((split_override(a) or ("",))[0] == "hparams_search" for a in args):
        out.append(f"hydra.sweeper.n_trials={SEARCH_TRIALS}")
    reproduce = [v for k, v in filter(None, map(split_override, args)) if k == "reproduce"]
    if reproduce:  # a paper's whole table: its first REPRODUCE_JOBS presets (each preset is
        # trained on its own in tests/configs/test_presets_run.py)
        out.append(f"hydra.sweeper.params.experiment='{','.join(table_presets(reproduce[0]))}'")
    return [*out, "debug=tiny"]


REPRODUCE_JOBS = 2


def table_presets(name: str) -> list[str]:
    """The first REPRODUCE_JOBS experiment presets a conf/reproduce/ sweep runs."""
    sweep = yaml.safe_load((CONF / "reproduce" / f"{name}.yaml").read_text())
    return str(sweep["hydra"]["sweeper"]["params"]["experiment"]).split(",")[:REPRODUCE_JOBS]


# --- running the commands: one workspace per test module ------------------------------------

DATA_ROOT = Path(os.environ["METALAB_DATA"]) if os.environ.get("METALAB_DATA") else None
TIMEOUT = 900
# The README's sections whose commands tests/cli/test_readme_usage.py runs; the commands of
# every other section are tests/cli/test_readme_sweeps.py's, so none is left out.
USAGE_SECTIONS = ("Set up", "Using it")


def usage_commands() -> list[Command]:
    return [c for c in collect() if c.section in USAGE_SECTIONS]


def sweep_commands() -> list[Command]:
    return [c for c in collect() if c.section not in USAGE_SECTIONS]


def command_ids(commands: list[Command]) -> list[str]:
    """A test id per command, named by the command; a command whose short form repeats an
    earlier one's anywhere in the README gets its line number too."""
    ids: dict[Command, str] = {}
    for command in collect():
        short = command.short()
        ids[command] = short if short not in ids.values() else f"{short} (line {command.line})"
    return [ids[c] for c in commands]


def run_tool(command: Command, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run one of the console scripts with these arguments, forked where it can be
    (tests/helpers/forked.py): the result is the console script's either way."""
    return run_cli_forked(command.tool, *args, cwd=cwd, timeout=TIMEOUT)


def _tail(out: subprocess.CompletedProcess) -> str:
    stdout, stderr = out.stdout[-2000:], out.stderr[-4000:]
    return f"exit {out.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"


class Workspace:
    """Runs README commands with the tiny budget, each at most once, each in a folder of its
    own; a placeholder of a later command is the folder of the command that makes it, taken
    from ``commands`` (the test module's own) when one of them makes it, so that no command
    runs twice in one test session."""

    def __init__(self, root: Path, commands: list[Command]):
        self.root = root
        self.commands = commands
        self.done: dict[str, Path | AssertionError] = {}

    def run(self, command: Command) -> Path:
        """The command's folder, after running it (once) and checking that it succeeded."""
        if command.text not in self.done:
            try:
                self.done[command.text] = self._run(command)
            except AssertionError as error:
                self.done[command.text] = error
        result = self.done[command.text]
        if isinstance(result, AssertionError):
            raise AssertionError(str(result))
        return result

    def _run(self, command: Command) -> Path:
        where = self.root / f"{collect().index(command):02d}"
        where.mkdir(parents=True)
        if command.tool == "metalab-train":
            args = [*tiny_train_args(command.args), f"hydra.run.dir={where / 'run'}",
                    f"hydra.sweep.dir={where / 'sweep'}"]  # fmt: skip
        elif command.tool == "metalab-eval":
            args = [*self.eval_args(command.args), *EVAL_TINY, f"hydra.run.dir={where / 'eval'}"]
        elif command.tool == "metalab-compare":
            args = self.compare_args(command.args)
        else:
            raise AssertionError(f"no rule to run {command.text!r} (README line {command.line})")
        out = run_tool(command, args, where)
        assert out.returncode == 0, (
            f"README line {command.line}: {command.text}\nran as: {command.tool} "
            f"{' '.join(args)}\n{_tail(out)}"
        )
        self.check(command, where)
        return where

    def check(self, command: Command, where: Path) -> None:
        if command.tool == "metalab-compare":
            out = where / (self.option(command.args, "--out") or "comparison")
            assert (out / "comparison.md").is_file(), f"{command.text}: no {out}/comparison.md"
            return
        results = sorted(where.rglob("results.json"))
        assert results, f"{command.text}: no results.json under {where}"
        for path in results:
            status = json.loads(path.read_text()).get("status")
            assert status == "completed", f"{command.text}: {path} says {status!r}"

    @staticmethod
    def option(args: tuple[str, ...], name: str) -> str | None:
        return args[args.index(name) + 1] if name in args[:-1] else None

    def source(self, kind: str) -> Path:
        """The output folder of the README command that makes ``kind``: "run" (a single
        training run), "multirun" (a plain sweep) or "reproduce=<name>"; the first such
        command of this module's, else of the whole README."""

        def makes(c: Command) -> bool:
            if c.tool != "metalab-train" or c.prints_only:
                return False
            keys = {kv[0]: kv[1] for kv in map(split_override, c.args) if kv}
            if kind == "run":
                return not c.multirun and "reproduce" not in keys
            if kind == "multirun":
                return c.multirun and not {"reproduce", "hparams_search"} & set(keys)
            return f"reproduce={keys.get('reproduce')}" == kind

        maker = next((c for c in [*self.commands, *collect()] if makes(c)), None)
        assert maker is not None, f"the README has no command that makes a {kind} to use"
        why = maker.compose_only(DATA_ROOT)
        if why:
            pytest.skip(f"its input, README line {maker.line} ({maker.text}), is not run: {why}")
        try:
            where = self.run(maker)
        except AssertionError as error:
            raise AssertionError(f"its input failed, {str(error).split(chr(10))[0]}") from None
        return where / ("run" if kind == "run" else "sweep")

    def eval_args(self, args: tuple[str, ...]) -> list[str]:
        """ckpt_path=<any documented example> -> best.ckpt of a README run."""
        out = []
        for arg in args:
            if arg.startswith("ckpt_path="):
                arg = f"ckpt_path={self.source('run') / 'checkpoints' / 'best.ckpt'}"
            out.append(arg)
        return out

    def compare_args(self, args: tuple[str, ...]) -> list[str]:
        """outputs/... folders -> the folders this workspace's runs and sweeps wrote."""
        out = []
        for arg in args:
            if arg.startswith("outputs/runs/"):
                arg = str(self.source("run").parent)  # the folder of the day's runs
            elif arg.startswith("outputs/multiruns/"):
                arg = str(self.source("multirun"))
            elif match := re.match(r"outputs/reproduce/([^/]+)/", arg):
                arg = str(self.source(f"reproduce={match.group(1)}"))
            elif arg.startswith("outputs/"):
                raise AssertionError(f"no rule for the placeholder {arg!r}: add one above")
            out.append(arg)
        return out


def run_documented(command: Command, workspace: Workspace, tmp_path: Path) -> None:
    """One README command, as the test of its module runs it: composed only (and skipped
    when its data is missing), run as written when it prints only, else run tiny."""
    where = f"README line {command.line}: {command.text}"
    why = command.compose_only(DATA_ROOT)
    if why is not None:
        args = [*first_job(command.args), "--cfg", "job"]
        out = run_tool(command, args, tmp_path)
        assert out.returncode == 0, f"{where}\ncomposed as: {' '.join(args)}\n{_tail(out)}"
        assert "algorithm" in (yaml.safe_load(out.stdout) or {}), f"{where}\n{_tail(out)}"
        if "METALAB_DATA" in why:
            pytest.skip(f"composed only: {why}")
        return
    if command.module is not None:  # python -m metalab.<something> that is no console script
        out = subprocess.run(
            [sys.executable, "-m", command.module, *command.args], cwd=tmp_path, env=cli_env(),
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert out.returncode == 0 and out.stdout.strip(), f"{where}\n{_tail(out)}"
        return
    if command.prints_only:
        out = run_tool(command, list(command.args), tmp_path)
        assert out.returncode == 0 and out.stdout.strip(), f"{where}\n{_tail(out)}"
        return
    workspace.run(command)
