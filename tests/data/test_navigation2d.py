"""dataset=navigation2d: the batched torch environment against a plain-Python reference
(dynamics, clipping, reward, early termination), and its fixed evaluation goals."""

from __future__ import annotations

import math
import random

import torch
from omegaconf import OmegaConf

from metalab.algorithms.policy_gradient import rollout
from metalab.data.episodes import TEST_STREAM, FixedEpisodes
from metalab.data.navigation import Navigation2D, NavigationTasks
from metalab.data.rl import rl_sources


def reference_step(state, action, goal):
    """One move of the point agent, written from the paper's description in plain Python."""
    clipped = [min(max(a, -0.1), 0.1) for a in action]
    x, y = state[0] + clipped[0], state[1] + clipped[1]
    dx, dy = x - goal[0], y - goal[1]
    return (x, y), -math.sqrt(dx * dx + dy * dy), abs(dx) < 0.01 and abs(dy) < 0.01


def test_one_step_matches_the_reference_clipping_and_reward():
    rng = random.Random(0)
    env = Navigation2D()
    states = [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in range(64)]
    actions = [(rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)) for _ in range(64)]
    goals = [(rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)) for _ in range(64)]
    # two episodes that land within the tolerance of their goal
    goals[0] = (states[0][0] + 0.05 + 0.004, states[0][1] - 0.1 - 0.003)
    actions[0] = (0.05, -0.4)
    goals[1] = (states[1][0] + 0.02, states[1][1] + 0.02)
    actions[1] = (0.02 + 0.009, 0.02 - 0.009)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    next_state, reward, done = env.step(t(states), t(actions), t(goals))
    for i in range(64):
        (x, y), r, d = reference_step(states[i], actions[i], goals[i])
        assert next_state[i].tolist() == [x, y]
        assert math.isclose(float(reward[i]), r, rel_tol=1e-12, abs_tol=1e-12)
        assert bool(done[i]) is d
    assert done[:2].all() and done.sum() == 2


def test_rollout_matches_a_reference_episode_loop():
    """A deterministic policy heading for the goal at full speed: the batched rollout's
    observations, rewards and masks equal the plain loop, which ends at the goal."""
    env = Navigation2D(horizon=100)
    goals = torch.tensor(
        [[0.3, -0.45], [-0.05, 0.2], [0.5, 0.5], [0.0, 0.004]], dtype=torch.float64
    )

    def towards_goal(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = 0.7 * (goals - state) + torch.tensor([0.003, -0.002], dtype=torch.float64)
        return mean, torch.full_like(mean, -math.inf)  # std 0: no noise

    episodes = rollout(env, towards_goal, goals, torch.Generator().manual_seed(0))
    assert episodes.observations.shape == (100, 4, 2) and episodes.mask.shape == (100, 4)
    for e, goal in enumerate(goals.tolist()):
        state, alive, total = (0.0, 0.0), True, 0.0
        for step in range(100):
            assert float(episodes.mask[step, e]) == float(alive)
            if not alive:
                assert float(episodes.rewards[step, e]) == 0.0
                continue
            assert episodes.observations[step, e].tolist() == list(state)
            action = [
                0.7 * (g - s) + b for g, s, b in zip(goal, state, (0.003, -0.002), strict=True)
            ]
            state, reward, done = reference_step(state, action, goal)
            assert math.isclose(float(episodes.rewards[step, e]), reward, abs_tol=1e-12)
            total += reward
            alive = not done
        assert math.isclose(float(episodes.returns()[e]), total, abs_tol=1e-9)
    assert (episodes.mask.sum(0) < 100).all()  # every episode ended at its goal
    assert float(episodes.mask[:, 3].sum()) == 1  # the goal next to the origin: one step


def test_goals_are_uniform_in_the_square_and_the_test_goals_are_fixed():
    source = NavigationTasks(shots=3, queries=4)
    task = source.sample(torch.Generator().manual_seed(1))
    assert task.support_x.shape == (3, 2) and task.query_x.shape == (4, 2)
    assert (task.support_x == task.support_x[0]).all() and (task.query_x == task.support_x[0]).all()
    assert task.support_y.shape == (3, 0)
    goals = torch.stack(
        [source.sample(torch.Generator().manual_seed(i)).support_x[0] for i in range(2000)]
    )
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.min() < -0.49 and goals.max() > 0.49 and goals.mean().abs() < 0.02

    def test_goals() -> torch.Tensor:
        sizes = {"shots": 20, "queries": 20, "test_shots": 20, "test_queries": 20}
        sources = rl_sources(OmegaConf.create(sizes))
        fixed = FixedEpisodes(sources["test"], 40, TEST_STREAM)
        return torch.stack([fixed[i].support_x[0] for i in range(40)])

    first = test_goals()
    assert torch.equal(first, test_goals())  # a pure function of (split, index)
    assert len({tuple(g) for g in first.tolist()}) == 40
