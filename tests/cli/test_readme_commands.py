"""Every metalab command of the README's usage blocks works as documented: the rules here,
the commands in tests/cli/test_readme_usage.py (the "Set up" and "Using it" sections) and
tests/cli/test_readme_sweeps.py (every other section), two modules so that two test workers
share them.

``readme_commands.collect`` finds the commands (metalab-train, metalab-eval, metalab-compare,
``python -m metalab...``, the ``docker compose`` service); each is one test case, named by
the command, so a documented command that breaks fails by name. How each one runs
(``readme_commands.run_documented``):

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
  So ``-m reproduce=omniglot_5w1s`` runs the first two of its presets for 2 steps each (each
  preset trains on its own in tests/configs/test_presets_run.py).
- **Placeholders** point at the outputs of other README commands, run (once) on demand, the
  module's own when it has one that makes them: ``ckpt_path=...`` -> best.ckpt of a single
  training run; for metalab-compare, ``outputs/runs/<day>`` -> the folder of that run,
  ``outputs/multiruns/...`` -> the sweep of a plain multirun, ``outputs/reproduce/<name>/...``
  -> the sweep of a ``reproduce=<name>`` command. metalab-eval has no debug group
  (conf/eval.yaml), so its test size is cut with ``eval.tasks=2 eval.batch=2``.
"""

from __future__ import annotations

import pytest

from metalab.preflight import check_config
from tests.helpers.configs import compose_train, options, refused_without_mujoco
from tests.helpers.readme_commands import (
    DATA_ROOT,
    collect,
    first_job,
    sweep_commands,
    tiny_train_args,
    tiny_values,
    usage_commands,
)

COMMANDS = collect()


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
    # the two modules that run them split them, each command in one: both have a share
    assert len(usage_commands()) >= 8 and len(sweep_commands()) >= 8, [c.section for c in COMMANDS]


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
    if refused_without_mujoco(cfg):
        return
    check_config(cfg)
    assert cfg.trainer.max_steps == 2 and cfg.trainer.val_check_interval == 1
    assert cfg.val.tasks == cfg.eval.tasks == cfg.eval.batch == cfg.algorithm.meta_batch == 2
    assert "wandb" not in cfg.logger and cfg.strategy == "loop"


def test_the_command_line_wins_over_debug_tiny():
    assert compose_train("debug=tiny", "trainer.max_steps=3").trainer.max_steps == 3
