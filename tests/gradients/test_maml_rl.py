"""MAML-RL's gradients in float64 against references written from the equations: the inner
REINFORCE step, the baseline and GAE advantages, the meta-gradient through one inner step
(second and first order, trajectories held fixed) by central differences per task, TRPO's
conjugate-gradient direction against a direct solve of the KL-Hessian (Fisher) system, and
the line search's KL bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from metalab.algorithms.maml_rl import MAMLRL
from metalab.algorithms.policy_gradient import Episodes, advantages, rollout
from metalab.algorithms.trpo import conjugate_gradient, flat, kl_hessian_product, trpo_step, unflat
from metalab.data.navigation import NavigationTasks
from metalab.data.tasks import TaskBatch
from metalab.inner_loop import InnerLoop
from metalab.losses import REINFORCEMENT
from metalab.models.gaussian_mlp import GaussianMLP
from tests.helpers.reference import relative_error


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny(hidden=(3,), **settings) -> tuple[MAMLRL, GaussianMLP]:
    torch.manual_seed(0)
    model = GaussianMLP(2, 2, hidden, init_std=0.5).double()
    settings.setdefault("horizon", 12)
    return MAMLRL(InnerLoop(model, REINFORCEMENT), **settings), model


def goal_batch(tasks: int = 2, shots: int = 4, queries: int = 3) -> TaskBatch:
    source = NavigationTasks(shots, queries)
    batch = TaskBatch.stack([source.sample(torch.Generator().manual_seed(i)) for i in range(tasks)])
    return batch.to("cpu", torch.float64)


def detached(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def hand_reinforce_gradient(model, params, episodes: Episodes, adv: torch.Tensor):
    """d/dtheta of -(1/N) sum A log pi(a|s), from d log N/d mean = (a - mean) / sigma^2 and
    d log N / d log_std = (a - mean)^2 / sigma^2 - 1 (N: the valid steps)."""
    leaves = {k: p.detach().clone().requires_grad_() for k, p in params.items()}
    mean, log_std = functional_call(model, leaves, (episodes.observations,))
    sigma2 = (2 * log_std.detach()).exp()
    diff = episodes.actions - mean.detach()
    weight = (-(adv * episodes.mask) / episodes.mask.sum()).unsqueeze(-1)
    mean_keys = [k for k in leaves if k != "log_std"]
    mean_grads = torch.autograd.grad(
        (weight * diff / sigma2 * mean).sum(), [leaves[k] for k in mean_keys]
    )
    grads = dict(zip(mean_keys, mean_grads, strict=True))
    grads["log_std"] = (weight * (diff.pow(2) / sigma2 - 1)).sum((0, 1))
    return grads


def some_episodes(algo: MAMLRL, params, episodes: int = 6, seed: int = 0) -> Episodes:
    goal = torch.tensor([0.3, -0.2])
    return rollout(
        algo.env,
        algo.policy(params),
        goal.expand(episodes, -1),
        torch.Generator().manual_seed(seed),
    )


def test_inner_step_is_the_hand_written_reinforce_gradient():
    algo, model = tiny(hidden=(5, 4))
    params = detached(model)
    episodes = some_episodes(algo, params)
    adapted = algo.inner_step(params, episodes, lr=0.1, create_graph=False)
    implied = [(params[k] - adapted[k]) / 0.1 for k in params]
    reference = hand_reinforce_gradient(model, params, episodes, algo.advantages(episodes))
    assert relative_error(implied, [reference[k] for k in params]) < 1e-10


def reference_advantages(episodes: Episodes, gamma: float, lam: float, reg: float) -> torch.Tensor:
    """rllab's per-path recipe in numpy: features per valid step, ridge fit of the discounted
    returns, deltas, discounted sums by gamma * lambda, then centred and scaled."""
    obs, rew, mask = (t.numpy() for t in (episodes.observations, episodes.rewards, episodes.mask))
    paths = []
    for e in range(obs.shape[1]):
        n = int(mask[:, e].sum())
        o = np.clip(obs[:n, e], -10, 10)
        t = np.arange(n).reshape(-1, 1) / 100.0
        feats = np.concatenate([o, o**2, t, t**2, t**3, np.ones((n, 1))], axis=1)
        ret = np.array([sum(gamma**k * rew[s + k, e] for k in range(n - s)) for s in range(n)])
        paths.append((feats, ret, rew[:n, e]))
    x = np.concatenate([p[0] for p in paths])
    y = np.concatenate([p[1] for p in paths])
    w = np.linalg.solve(x.T @ x + reg * np.eye(x.shape[1]), x.T @ y)
    out = np.zeros_like(rew)
    for e, (feats, _, r) in enumerate(paths):
        v = np.append(feats @ w, 0.0)
        deltas = r + gamma * v[1:] - v[:-1]
        for s in range(len(r)):
            out[s, e] = sum((gamma * lam) ** k * deltas[s + k] for k in range(len(r) - s))
    valid = out[mask > 0]
    out = (out - valid.mean()) / (valid.std() + 1e-8) * mask
    return torch.from_numpy(out)


@pytest.mark.parametrize("lam", [1.0, 0.9])
def test_advantages_match_rllabs_baseline_and_gae(lam):
    algo, model = tiny()
    # episodes that end early, so the masks matter
    goal = torch.tensor([[0.05, 0.02], [0.3, -0.2], [-0.1, 0.1]])
    mean_fn = lambda s: (0.9 * (goal - s), torch.full_like(s, -7.0))  # noqa: E731
    episodes = rollout(algo.env, mean_fn, goal, torch.Generator().manual_seed(0))
    assert episodes.mask[:, 0].sum() < 12
    got = advantages(episodes, 0.99, lam, 1e-5, normalize=True)
    assert relative_error([got], [reference_advantages(episodes, 0.99, lam, 1e-5)]) < 1e-8


def per_task_loss(algo, model, task_data, old, theta, inner_gradient_at=None):
    """TRPO's surrogate of one task at ``theta``: one inner step with the hand-written
    REINFORCE gradient (at ``inner_gradient_at`` when given: first order), then
    -mean(ratio * A) on the held query trajectories."""
    (support,), query, adv = task_data
    at = theta if inner_gradient_at is None else inner_gradient_at
    grad = hand_reinforce_gradient(model, at, support, algo.advantages(support))
    adapted = {k: theta[k] - algo.inner_lr * grad[k] for k in theta}
    mean, log_std = functional_call(model, adapted, (query.observations,))
    z = (query.actions - mean) / log_std.exp()
    logp = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    ratio = (logp - old[2]).exp()
    return float(-(ratio * adv * query.mask).sum() / query.mask.sum())


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_through_one_inner_step_matches_central_differences(first_order):
    algo, model = tiny(first_order=first_order)
    batch = goal_batch()
    params = dict(model.named_parameters())
    algo.on_outer_step(0, 1)
    data, _, _ = algo.sample_batch(detached(model), batch)
    loss, _, old = algo.surrogate(params, data, None, not first_order)
    grads = torch.autograd.grad(loss, list(params.values()))
    theta0 = detached(model)
    names, like = list(theta0), list(theta0.values())
    base = flat(like)
    reference = torch.zeros_like(base)
    eps = 1e-6
    for i, task in enumerate(data):  # per task, then the mean over the meta-batch
        for j in range(base.numel()):
            values = []
            for sign in (1, -1):
                shifted = base.clone()
                shifted[j] += sign * eps
                theta = dict(zip(names, unflat(shifted, like), strict=True))
                at = theta0 if first_order else None
                values.append(per_task_loss(algo, model, task, old[i], theta, at))
            reference[j] += (values[0] - values[1]) / (2 * eps) / len(data)
    assert relative_error([flat(grads)], [reference]) < 1e-6


def fisher_setup():
    algo, model = tiny()
    batch = goal_batch()
    algo.on_outer_step(0, 1)
    params = dict(model.named_parameters())
    data, _, _ = algo.sample_batch(detached(model), batch)
    return algo, model, params, data


def test_conjugate_gradient_solves_the_fisher_system():
    """CG on KL-Hessian-vector products (through the inner step) against the explicit
    Hessian of the mean KL and a direct solve."""
    algo, model, params, data = fisher_setup()
    leaves = list(params.values())
    loss, kl, old = algo.surrogate(params, data, None, True)
    g = flat(torch.autograd.grad(loss, leaves, retain_graph=True))
    damping = 1e-3
    direction = conjugate_gradient(kl_hessian_product(kl, leaves, damping), g, iters=300, tol=1e-30)
    names, base = list(params), flat([p.detach() for p in leaves])

    def kl_at(vector: torch.Tensor) -> torch.Tensor:
        theta = dict(zip(names, unflat(vector, leaves), strict=True))
        return algo.surrogate(theta, data, old, True)[1]

    hessian = torch.autograd.functional.hessian(kl_at, base)
    assert relative_error([hessian], [hessian.T]) < 1e-10
    direct = torch.linalg.solve(hessian + damping * torch.eye(len(base)), g)
    assert relative_error([direction], [direct]) < 1e-6
    assert len(base) > 10  # a system, not a scalar


@pytest.mark.parametrize("max_kl", [1e-4, 1e-2])
def test_line_search_keeps_the_step_within_the_kl_bound(max_kl):
    algo, model, params, data = fisher_setup()
    names, leaves = list(params), list(params.values())
    loss, kl, old = algo.surrogate(params, data, None, True)

    def surrogate_at(values):
        theta = {n: v.detach().requires_grad_() for n, v in zip(names, values, strict=True)}
        new_loss, new_kl, _ = algo.surrogate(theta, data, old, False)
        return new_loss.detach(), new_kl.detach()

    values, info = trpo_step(leaves, loss, kl, surrogate_at, max_kl=max_kl)
    assert info.accepted
    new_loss, new_kl = surrogate_at(values)
    assert float(new_kl) <= max_kl and float(new_loss) < float(loss.detach())
    moved = relative_error([flat(values)], [flat([p.detach() for p in leaves])])
    assert moved > 0
    # a surrogate that never improves: every trial is refused and the parameters stay
    worse = lambda values: (loss.detach() + 1.0, torch.tensor(0.0))  # noqa: E731
    values, info = trpo_step(leaves, loss, kl, worse, max_kl=max_kl)
    assert not info.accepted
    assert all(torch.equal(v, p.detach()) for v, p in zip(values, leaves, strict=True))


def test_outer_step_writes_the_trpo_step_and_stays_in_the_trust_region():
    algo, model = tiny(max_kl=1e-3)
    batch = goal_batch(tasks=3)
    params = dict(model.named_parameters())
    theta0 = detached(model)
    algo.on_outer_step(5, 10)
    losses, returns = algo.outer_step(params, batch, None, None)
    assert losses.shape == returns.shape == (3,) and torch.equal(losses, -returns)
    new = {k: theta0[k] - params[k].grad for k in params}
    data, _, _ = algo.sample_batch(theta0, batch)  # the same rollouts: seeded by the step
    before, _, old = algo.surrogate(
        {k: v.clone().requires_grad_() for k, v in theta0.items()}, data, None, False
    )
    after, kl, _ = algo.surrogate(
        {k: v.clone().requires_grad_() for k, v in new.items()}, data, old, False
    )
    assert float(kl) <= 1e-3 and float(after) < float(before.detach())
    assert set(algo.step_metrics()) >= {"return_pre", "return_post"}
    assert algo.replay(params, batch, 1).loss == pytest.approx(float(losses[1]))


def test_pretrain_steps_on_the_unadapted_policys_reinforce_gradient():
    """The pretrained baseline: no support rollouts, the same return before and after, and
    the surrogate's gradient at the old policy is the hand-written REINFORCE gradient of the
    query trajectories, averaged over the tasks."""
    algo, model = tiny(hidden=(5, 4), pretrain=True)
    theta = detached(model)
    data, pre, post = algo.sample_batch(theta, goal_batch(tasks=3))
    assert all(support == [] for support, _, _ in data) and torch.equal(pre, post)
    leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
    loss, kl, _ = algo.surrogate(leaves, data, None, True)
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
    per_task = [hand_reinforce_gradient(model, theta, query, adv) for _, query, adv in data]
    for key, grad in grads.items():
        expected = torch.stack([g[key] for g in per_task]).mean(0)
        assert relative_error(grad, expected) < 1e-10, key
    assert float(kl) == 0.0
