"""Lightning Trainer flags: any argument of ``pytorch_lightning.Trainer`` added as
``+trainer.<name>=<value>`` reaches the Trainer; a misspelt one, or one metalab sets itself,
is refused before anything is written (it used to be accepted and silently ignored)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from metalab.errors import ConfigError
from metalab.trainer import check_trainer_keys, make_trainer, passed_through
from tests.helpers.cli import run_cli


def trainer_config(**extra):
    base = OmegaConf.load(__import__("metalab.paths").paths.config_dir() + "/trainer/cpu.yaml")
    return OmegaConf.merge(base, extra)


def test_a_lightning_flag_reaches_the_trainer(tmp_path):
    t = trainer_config(profiler="simple", gradient_clip_val=0.5, max_steps=3)
    check_trainer_keys(t)
    assert passed_through(t) == {"profiler": "simple", "gradient_clip_val": 0.5}
    cfg = OmegaConf.create(
        {"trainer": t, "numerics": {"inner_grad_every_n_steps": 0, "inner_grad_warn": 1e3}}
    )
    trainer, _, _ = make_trainer(cfg, tmp_path, [], "val/acc", "max")
    assert type(trainer.profiler).__name__ == "SimpleProfiler"
    assert trainer.gradient_clip_val == 0.5


def test_metalab_s_own_keys_are_not_passed_through():
    assert passed_through(trainer_config()) == {}


def test_a_misspelt_flag_is_refused_with_the_closest_name():
    with pytest.raises(ConfigError, match=r"trainer\.profilr .*did you mean trainer\.profiler\?"):
        check_trainer_keys(trainer_config(profilr="simple"))


@pytest.mark.parametrize("key", ["callbacks", "logger", "default_root_dir", "inference_mode"])
def test_a_flag_metalab_sets_itself_is_refused_with_the_reason(key):
    with pytest.raises(ConfigError, match=rf"trainer\.{key} is set by metalab itself \(.+\)"):
        check_trainer_keys(trainer_config(**{key: None}))


def test_the_command_line_refuses_a_misspelt_flag_and_writes_nothing(tmp_path):
    done = run_cli(
        "metalab-train",
        "debug=tiny",
        "+trainer.profilr=simple",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "metalab: error: trainer.profilr" in done.stderr
    assert "did you mean trainer.profiler?" in done.stderr
    assert not (tmp_path / "run").exists()
