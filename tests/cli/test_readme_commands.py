"""Every metalab command of the README's usage blocks works as documented.

``readme_commands.collect`` finds the commands (metalab-train, metalab-eval, metalab-compare,
``python -m metalab...``, the ``docker compose`` service); each is one test case, named by
the command, so a documented command that breaks fails here by name. How each one runs:

- **Composed only** (``--cfg job``, exit status 0, a config printed) when it needs a GPU,
  SLURM, W&B online or Docker. Hydra composes no sweep under ``--cfg``, so a sweep is composed
  as its first job (the first value of each ``a,b,c`` list). A command whose data set is not
  under ``$METALAB_DATA`` is composed too, then reported as skipped with the reason.
- **Run as written** when it trains nothing (``--cfg``, ``--help``;
  ``python -m metalab.compare.published``).
- **Run with ``debug=tiny``** otherwise (conf/debug/tiny.yaml: two outer steps, two tasks,
  CSV logger), each into its own folder (``hydra.run.dir`` and ``hydra.sweep.dir``) of a
  workspace shared by the module; every ``results.json`` it leaves must say ``completed``.
  What would outweigh the tiny preset is cut, by rules kept in ``readme_commands``: a value
  the command gives to a key the preset sets takes the preset's (``trainer.max_steps=2000``
  runs 2 steps), a sweep over seeds runs its first seed, an Optuna search runs 2 trials.
  So ``-m reproduce=omniglot_5w1s`` runs its 8 presets for 2 steps each.
- **Placeholders** point at the outputs of other README commands, run (once) on demand:
  ``ckpt_path=...`` -> best.ckpt of the first single training run; for metalab-compare,
  ``outputs/runs/<day>`` -> the folder of that run, ``outputs/multiruns/...`` -> the sweep of
  the first plain multirun, ``outputs/reproduce/<name>/...`` -> the sweep of the first
  ``reproduce=<name>`` command. metalab-eval has no debug group (conf/eval.yaml), so its test
  size is cut with ``eval.tasks=2 eval.batch=2``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metalab.preflight import check_config
from tests.helpers.cli import cli_env, run_cli
from tests.helpers.configs import compose_train, options
from tests.helpers.readme_commands import (
    EVAL_TINY,
    Command,
    collect,
    first_job,
    split_override,
    tiny_train_args,
    tiny_values,
)

COMMANDS = collect()
DATA_ROOT = Path(os.environ["METALAB_DATA"]) if os.environ.get("METALAB_DATA") else None
TIMEOUT = 900


def _ids(commands: list[Command]) -> list[str]:
    ids: list[str] = []
    for command in commands:
        short = command.short()
        ids.append(short if short not in ids else f"{short} (line {command.line})")
    return ids


def _tail(out: subprocess.CompletedProcess) -> str:
    stdout, stderr = out.stdout[-2000:], out.stderr[-4000:]
    return f"exit {out.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"


class Workspace:
    """Runs README commands with the tiny budget, each at most once, each in a folder of its
    own; a placeholder of a later command is the folder of the command that makes it."""

    def __init__(self, root: Path):
        self.root = root
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
        where = self.root / f"{COMMANDS.index(command):02d}"
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
        out = run_cli(command.tool, *args, cwd=where, timeout=TIMEOUT)
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
        """The output folder of the README command that makes ``kind``: "run" (the first
        single training run), "multirun" (the first plain sweep) or "reproduce=<name>"."""

        def makes(c: Command) -> bool:
            if c.tool != "metalab-train" or c.prints_only:
                return False
            keys = {kv[0]: kv[1] for kv in map(split_override, c.args) if kv}
            if kind == "run":
                return not c.multirun and "reproduce" not in keys
            if kind == "multirun":
                return c.multirun and not {"reproduce", "hparams_search"} & set(keys)
            return f"reproduce={keys.get('reproduce')}" == kind

        maker = next((c for c in COMMANDS if makes(c)), None)
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
        """ckpt_path=<any documented example> -> best.ckpt of the README's first run."""
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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"))


def test_the_collector_finds_the_readme_commands():
    """A README rewrite that the parser no longer reads must not leave this file testing
    nothing: 24 commands were documented when it was written."""
    assert len(COMMANDS) >= 24, [c.text for c in COMMANDS]
    tools = {c.tool for c in COMMANDS}
    assert {"metalab-train", "metalab-eval", "metalab-compare"} <= tools
    reasons = {why for c in COMMANDS for why in (c.compose_only(DATA_ROOT) or "").split(", ")}
    assert {"needs a GPU", "needs SLURM", "needs Docker"} <= reasons
    # what runs wherever the data is: 12 training commands (seconds each with debug=tiny)
    trains = [c for c in COMMANDS if c.tool == "metalab-train" and not c.prints_only]
    assert sum(not (c.compose_only(DATA_ROOT) or "").startswith("needs") for c in trains) >= 12


def test_the_collector_reads_shell_blocks_only():
    text = "\n".join([
        "Prose with `metalab-train inline=1`.",
        "```bash",
        "python3 -m venv .venv && . .venv/bin/activate && metalab-train   # a comment",
        "metalab-train -m hydra/launcher=slurm \\",
        "    trainer=gpu 'a.b=tag(log, interval(0.1, 1))' seed=0,1",
        "OMP_NUM_THREADS=1 python -m metalab.train --cfg job",
        "python -m metalab.compare.published --markdown",
        "docker compose -f docker/compose.yaml build",
        "docker compose -f docker/compose.yaml run --rm metalab -m seed=0,1",
        "wandb sync outputs/x",
        "```",
        "```",
        "  train.py       metalab-train; evaluate.py: metalab-eval",
        "metalab-eval ckpt_path=x.ckpt",
        "```",
        "```python",
        "metalab-compare outputs/x",
        "```",
    ])  # fmt: skip
    found = [(c.tool, c.args, c.env, c.docker) for c in collect(text)]
    assert found == [
        ("metalab-train", (), (), False),
        ("metalab-train", ("-m", "hydra/launcher=slurm", "trainer=gpu",
                           "a.b=tag(log, interval(0.1, 1))", "seed=0,1"), (), False),
        ("metalab-train", ("--cfg", "job"), ("OMP_NUM_THREADS=1",), False),
        ("metalab.compare.published", ("--markdown",), (), False),
        ("metalab-train", ("-m", "seed=0,1"), (), True),
        ("metalab-eval", ("ckpt_path=x.ckpt",), (), False),
    ]  # fmt: skip
    slurm = collect(text)[1]
    assert slurm.compose_only(None) == "needs a GPU, needs SLURM"
    assert first_job(slurm.args) == ["hydra/launcher=slurm", "trainer=gpu", "seed=0"]


def test_the_tiny_rules():
    tiny = tiny_values()
    assert tiny["trainer.max_steps"] == "2" and tiny["eval.tasks"] == "2"
    args = ("-m", "trainer.max_steps=2000", "seed=0,1,2", "algorithm=maml,fomaml")
    assert tiny_train_args(args) == [
        "-m", "trainer.max_steps=2", "seed=0", "algorithm=maml,fomaml", "debug=tiny",
    ]  # fmt: skip
    assert tiny_train_args(("-m", "hparams_search=x", "hydra.sweeper.n_trials=50"))[-2:] == [
        "hydra.sweeper.n_trials=2", "debug=tiny",
    ]  # fmt: skip


PRESETS = [f"{group}={name}" for group in ("experiment", "reproduce", "hparams_search")
           for name in options(group)]  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
def test_debug_tiny_cuts_every_preset(preset):
    """conf/train.yaml applies the debug group after the presets, so debug=tiny cuts each one
    down, with values that pass every check (types and ranges, keys the algorithm accepts)."""
    cfg = compose_train(preset, "debug=tiny")
    check_config(cfg)
    assert cfg.trainer.max_steps == 2 and cfg.trainer.val_check_interval == 1
    assert cfg.val.tasks == cfg.eval.tasks == cfg.eval.batch == cfg.algorithm.meta_batch == 2
    assert "wandb" not in cfg.logger and cfg.strategy == "loop"


def test_the_command_line_wins_over_debug_tiny():
    assert compose_train("debug=tiny", "trainer.max_steps=3").trainer.max_steps == 3


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_readme_command(command: Command, workspace: Workspace, tmp_path):
    where = f"README line {command.line}: {command.text}"
    why = command.compose_only(DATA_ROOT)
    if why is not None:
        args = [*first_job(command.args), "--cfg", "job"]
        out = run_cli(command.tool, *args, cwd=tmp_path, timeout=TIMEOUT)
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
        out = run_cli(command.tool, *command.args, cwd=tmp_path, timeout=TIMEOUT)
        assert out.returncode == 0 and out.stdout.strip(), f"{where}\n{_tail(out)}"
        return
    workspace.run(command)
