"""2-D navigation: the paper's comparison of test-time adaptation (Finn et al. 2017, fig. 5,
left) on the preset's fixed test goals, and the batched environment's speed.

For each policy, the return of 20 trajectories after 0..3 policy-gradient steps (alpha 0.1,
20 trajectories per step) on ``--tasks`` fixed test goals, mean and 95% CI over the goals,
with exactly the evaluation of ``metalab-train``'s test (``MAMLRL.evaluate``):

- ``random``: a freshly initialised policy (the paper's "random" baseline), seed ``--seed``;
- ``<checkpoint>``: each ``--ckpt`` given (a MAML-RL run's best.ckpt or last.ckpt).

``--env-steps`` also times the batched environment alone (random actions, one intra-op
thread), as environment steps per second for 1 and for 400 episodes stepping together,
and their ratio; with Gymnasium's MuJoCo installed, HalfCheetah's for 20 episodes too (one
simulator each, stepped in turn: no batching gain to expect).

    python benchmarks/maml_rl_navigation.py --ckpt outputs/runs/<run>/checkpoints/best.ckpt
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from metalab.assembly import build_data, build_module
from metalab.data.episodes import TEST_STREAM, FixedEpisodes
from metalab.data.halfcheetah import HalfCheetah
from metalab.data.navigation import Navigation2D
from metalab.data.tasks import TaskBatch
from metalab.paths import config_dir
from metalab.results import mean_and_ci95


def curve(module, tasks: int) -> list[tuple[float, float]]:
    """Return after 0..eval_inner_steps steps on the first ``tasks`` fixed test goals."""
    data, _, _ = build_data(module.cfg)
    fixed = FixedEpisodes(data.sources["test"], tasks, TEST_STREAM)
    params = {k: p.detach() for k, p in module.model.named_parameters()}
    rows = []
    for batch in DataLoader(fixed, batch_size=tasks, collate_fn=TaskBatch.stack):
        for i in range(len(batch)):
            rows.append(module.algorithm.evaluate(params, *vars(batch.task(i)).values())["metric"])
    values = torch.stack(rows)
    return [mean_and_ci95(values[:, s]) for s in range(values.shape[1])]


def env_steps_per_second(episodes: int, seconds: float = 2.0, env=None) -> float:
    env = env or Navigation2D()
    goals = torch.rand(episodes, 1 if isinstance(env, HalfCheetah) else 2) - 0.5
    state, steps, started = env.reset(goals), 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        state, _, _ = env.step(state, 0.2 * torch.randn(episodes, env.action_size), goals)
        steps += episodes
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", action="append", default=[])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-steps", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=maml_rl_navigation2d", f"seed={args.seed}"])
    torch.manual_seed(args.seed)
    policies = {"random": build_module(cfg, (2,), 2)}
    for path in args.ckpt:
        module = build_module(cfg, (2,), 2)
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        policies[path] = module
    print(f"return on {args.tasks} fixed test goals, mean +- 95% CI, after 0..3 steps")
    for name, module in policies.items():
        cells = "  ".join(f"{m:8.2f} +- {c:5.2f}" for m, c in curve(module, args.tasks))
        print(f"{name}: {cells}")
    if args.env_steps:
        one, many = env_steps_per_second(1), env_steps_per_second(400)
        print(f"navigation2d env steps/s: 1 episode {one:,.0f}; 400 together {many:,.0f}")
        print(f"ratio (400 together / 1): {many / one:.0f}x")
        if all(importlib.util.find_spec(m) is not None for m in ("gymnasium", "mujoco")):
            cheetah = env_steps_per_second(20, env=HalfCheetah("vel"))
            print(f"halfcheetah env steps/s, 20 episodes: {cheetah:,.0f}")


if __name__ == "__main__":
    main()
