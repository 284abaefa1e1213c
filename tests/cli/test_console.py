"""The console scripts answer ``--help``, ``--cfg job`` and shell completion at once: without
importing torch, Lightning or optuna (seconds of start-up), and completion works the way
Hydra's installed bash function asks for it. Start-up time itself is measured in
benchmarks/startup.py, not asserted here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli

BIN = Path(sys.executable).parent
HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "optuna", "wandb")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("tool", ["train", "evaluate"])
@pytest.mark.parametrize("flags", [["--help"], ["--cfg", "job"], ["--hydra-help"]])
def test_answers_without_importing_torch_or_lightning(tool, flags):
    cfg = flags[0] == "--cfg" and tool == "evaluate"
    argv = [f"metalab-{tool}", *flags, *(["ckpt_path=x.ckpt"] if cfg else [])]
    code = (  # --help exits inside Hydra: the check runs at exit
        f"import atexit, sys; sys.argv = {argv!r}\n"
        f"atexit.register(lambda: print('HEAVY', sorted(m for m in {HEAVY!r} if m in "
        "sys.modules), file=sys.stderr))\n"
        "import metalab.cli\n"
        f"getattr(metalab.cli, {tool!r})()\n"
    )
    done = run(sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr, done.stderr
    assert done.stdout.strip()


@pytest.mark.parametrize("script", ["metalab-train", "metalab-eval"])
def test_completion_script_installs_for_the_console_script(script):
    done = run(str(BIN / script), "--shell-completion", "install=bash")
    assert done.returncode == 0, done.stderr
    assert f"-F hydra_bash_completion {script}" in done.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("metalab-train algorithm=fo", "algorithm=fomaml"),
        ("metalab-train experiment=protonet_omniglot_5w", "experiment=protonet_omniglot_5w1s"),
        ("metalab-train optimizer.l", "optimizer.lr="),
        ("metalab-eval eval.ta", "eval.tasks="),
    ],
)
def test_bash_completion_completes_groups_options_and_keys(line, expected):
    """Hydra's installed function, run by bash as on a user's <TAB>."""
    script = line.split()[0]
    words = line.split()
    shell = (
        f'eval "$({script} -sc install=bash)"\n'
        f"COMP_LINE={line!r}; COMP_POINT={len(line)}; COMP_CWORD={len(words) - 1}\n"
        "hydra_bash_completion\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = run("bash", "-c", shell, env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout.split(), done.stdout + done.stderr


def test_a_typo_is_still_refused_before_anything_is_composed():
    done = run(str(BIN / "metalab-train"), "--cfg", "job", "algoritm=fomaml")
    assert done.returncode == 1
    assert "did you mean algorithm?" in done.stderr


NOISE = (
    "GPU available",
    "TPU available",
    "Tip:",
    "Epoch 0/-",
    "LeafSpec",
    "exists and is not empty",
    "pre-optimization state",
)


def test_a_run_s_console_is_quiet_and_hydra_verbose_brings_lightning_back(tmp_path):
    """Lightning's banner, tips and inapplicable warnings stay off the console (the run's
    train.log keeps metalab's lines); the progress bar counts outer steps."""
    quiet_run = run_cli(
        "metalab-train",
        "debug=tiny",
        "logger=csv",
        "trainer.enable_progress_bar=true",
        "trainer.checkpoint_every_n_steps=1",  # Lightning warns of manual optimisation then
        "trainer.val_check_interval=2",
        f"hydra.run.dir={tmp_path / 'quiet'}",
        cwd=tmp_path,
    )
    assert quiet_run.returncode == 0, quiet_run.stderr
    console = quiet_run.stdout + quiet_run.stderr
    assert not [n for n in NOISE if n in console], console
    assert "Outer steps" in console
    assert "[metalab]" in console  # metalab's own lines stay, without time stamps
    assert "][metalab][INFO] - " in (tmp_path / "quiet" / "train.log").read_text()
    loud = run_cli(
        "metalab-train",
        "debug=tiny",
        "logger=csv",
        "hydra.verbose=pytorch_lightning",
        f"hydra.run.dir={tmp_path / 'loud'}",
        cwd=tmp_path,
    )
    assert loud.returncode == 0, loud.stderr
    assert "GPU available" in loud.stdout + loud.stderr


def test_w_and_b_s_own_lines_stay_off_the_console_unless_asked(tmp_path):
    """W&B's banner and end-of-run history and summary (~35 lines a run) are replaced by one
    metalab line; the offline run is written all the same."""
    quiet = run_cli(
        "metalab-train", "debug=tiny", "logger=wandb", f"hydra.run.dir={tmp_path / 'q'}",
        cwd=tmp_path, env={"WANDB_SILENT": None, "WANDB_QUIET": None},
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    console = quiet.stdout + quiet.stderr
    assert not [line for line in console.splitlines() if line.startswith("wandb:")], console
    assert "W&B run " in console and "(offline)" in console
    assert list((tmp_path / "q" / "wandb").glob("offline-run-*"))
    loud = run_cli(
        "metalab-train", "debug=tiny", "logger=wandb", "hydra.verbose=wandb",
        f"hydra.run.dir={tmp_path / 'l'}", cwd=tmp_path, env={"WANDB_SILENT": None},
    )  # fmt: skip
    assert loud.returncode == 0, loud.stderr
    assert "wandb: " in loud.stdout + loud.stderr
