"""dataset=halfcheetah_vel / halfcheetah_dir: refused in one sentence naming the extra when
Gymnasium's MuJoCo is missing (simulated, so it runs everywhere); with the extra installed,
the rewards against Gymnasium's own HalfCheetah and a short MAML-RL run."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from metalab.paths import config_dir
from metalab.run_status import RunGuard
from tests.helpers.cli import read_results, train_run

HAS_MUJOCO = all(importlib.util.find_spec(m) is not None for m in ("gymnasium", "mujoco"))
needs_mujoco = pytest.mark.skipif(
    not HAS_MUJOCO, reason="Gymnasium's MuJoCo is not installed (pip install -e '.[rl]')"
)


@pytest.mark.parametrize("family", ["halfcheetah_vel", "halfcheetah_dir"])
def test_without_the_extra_a_mujoco_family_is_refused_naming_the_install(
    family, tmp_path, monkeypatch
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gymnasium" else real(name, *a),
    )
    with initialize_config_dir(config_dir(), version_base="1.3"):
        overrides = ["algorithm=maml_rl", f"dataset={family}", "model=gaussian_mlp"]
        cfg = compose(
            "train",
            overrides=[*overrides, f"hydra.run.dir={tmp_path / 'r'}"],
            return_hydra_config=True,
        )
    with pytest.raises(SystemExit) as stop:
        RunGuard().on_run_start(cfg)
    message = str(stop.value.code)
    assert message.startswith(f"metalab: error: dataset={family} needs Gymnasium's MuJoCo")
    assert "pip install -e '.[rl]'" in message and "\n" not in message
    assert not (tmp_path / "r").exists()


@needs_mujoco
@pytest.mark.parametrize("kind", ["vel", "dir"])
def test_rewards_match_gymnasiums_halfcheetah(kind):
    """Our batched episodes against Gymnasium's env stepped alone with the same seed and
    actions: the same observations, and the paper's reward from Gymnasium's x_velocity."""
    import gymnasium as gym

    from metalab.data.halfcheetah import HalfCheetah

    env = HalfCheetah(kind, horizon=8)
    goals = torch.tensor([[1.3], [0.4]] if kind == "vel" else [[1.0], [-1.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    seeds = torch.randint(0, 2**31 - 1, (2,), generator=torch.Generator().manual_seed(3)).tolist()
    state = env.reset(goals, generator)
    actions = torch.randn(8, 2, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    references = [gym.make("HalfCheetah-v5") for _ in range(2)]
    obs = [r.reset(seed=s)[0] for r, s in zip(references, seeds, strict=True)]
    assert np.allclose(state.numpy(), np.stack(obs))
    for t in range(8):
        state, reward, done = env.step(state, actions[t], goals)
        assert not done.any()
        for i, ref in enumerate(references):
            a = actions[t, i].clamp(-1, 1).numpy()
            o, _, _, _, info = ref.step(a)
            v, g = info["x_velocity"], float(goals[i, 0])
            expected = (-abs(v - g) if kind == "vel" else g * v) - 0.05 * float(np.square(a).sum())
            assert np.allclose(state[i].numpy(), o) and reward[i].item() == pytest.approx(expected)


@needs_mujoco
def test_a_short_maml_rl_run_on_halfcheetah_vel(tmp_path):
    run = train_run(
        tmp_path, "experiment=maml_rl_halfcheetah_vel", "debug=tiny", "dataset.shots=2",
        "dataset.queries=2", "dataset.horizon=5",
    )  # fmt: skip
    test = read_results(run)["metrics"]["test/return"]
    assert [row["step"] for row in test["per_step"]] == [0, 1, 2, 3]
