"""Vanilla policy gradient, as MAML-RL's inner loop takes it (rllab's VPG): batched rollouts
of a Gaussian policy, discounted returns, rllab's linear feature baseline fitted per batch,
GAE advantages (lambda = 1: returns minus the baseline) and the REINFORCE loss.

Tensors are laid out [time, episodes, ...]; ``mask`` is 1 while an episode runs (the step
that reaches the goal included) and 0 after it ended.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# observation [..., obs] -> (mean, log_std), both [..., actions]
Policy = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Episodes:
    observations: torch.Tensor  # [time, episodes, obs]
    actions: torch.Tensor  # [time, episodes, actions]; the sampled (unclipped) action
    rewards: torch.Tensor  # [time, episodes], 0 after the episode ended
    mask: torch.Tensor  # [time, episodes], 1 while the episode runs
    # advantages by their settings: held trajectories are differentiated through many times
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def returns(self) -> torch.Tensor:
        """The undiscounted return of each episode, [episodes] (what the paper reports)."""
        return (self.rewards * self.mask).sum(0)

    def split(self, parts: int) -> list[Episodes]:
        """Consecutive groups of episodes (one per task when tasks were rolled out together)."""
        fields = (self.observations, self.actions, self.rewards, self.mask)
        chunks = [f.chunk(parts, dim=1) for f in fields]
        return [Episodes(*(c[i] for c in chunks)) for i in range(parts)]


@torch.no_grad()
def rollout(env, policy: Policy, goals: torch.Tensor, generator: torch.Generator) -> Episodes:
    """One episode per row of ``goals`` [episodes, goal], all stepping together for
    ``env.horizon`` steps; the action noise is drawn from ``generator`` (on the CPU, so the
    same seed gives the same episodes on any device)."""
    state = env.reset(goals, generator)
    alive = torch.ones(goals.shape[0], dtype=goals.dtype, device=goals.device)
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(env.horizon):
        mean, log_std = policy(state)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        action = mean + log_std.exp() * noise.to(mean.device)
        next_state, reward, done = env.step(state, action, goals)
        observations.append(state)
        actions.append(action)
        rewards.append(reward * alive)
        masks.append(alive)
        alive = alive * (~done).to(alive.dtype)
        state = next_state
    return Episodes(
        torch.stack(observations), torch.stack(actions), torch.stack(rewards), torch.stack(masks)
    )


def gaussian_log_prob(
    mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """log N(a; mean, exp(log_std)^2) of a diagonal Gaussian, summed over actions."""
    z = (actions - mean) / log_std.exp()
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_prob(policy: Policy, episodes: Episodes) -> torch.Tensor:
    """log pi(a_t | s_t), [time, episodes]."""
    return gaussian_log_prob(*policy(episodes.observations), episodes.actions)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_t = sum_k gamma^k r_{t+k}, within each episode, [time, episodes]."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running * mask[t]
        out[t] = running * mask[t]
    return out


def baseline_features(episodes: Episodes) -> torch.Tensor:
    """rllab's LinearFeatureBaseline features [obs, obs^2, t, t^2, t^3, 1] (t = step / 100,
    observations clipped to [-10, 10]), zero after an episode ended, [time, episodes, F]."""
    obs = episodes.observations.clamp(-10, 10)
    steps, count = obs.shape[:2]
    t = torch.arange(steps, dtype=obs.dtype, device=obs.device).view(-1, 1, 1) / 100.0
    t = t.expand(steps, count, 1)
    ones = torch.ones_like(t)
    features = torch.cat([obs, obs * obs, t, t * t, t**3, ones], dim=-1)
    return features * episodes.mask.unsqueeze(-1)


def linear_baseline(episodes: Episodes, gamma: float, reg: float = 1e-5) -> torch.Tensor:
    """The baseline's values [time, episodes], fitted to this batch's discounted returns by
    ridge regression (rllab: reg 1e-5, raised tenfold while the solve fails)."""
    features = baseline_features(episodes).double()
    flat = features.reshape(-1, features.shape[-1])
    target = discounted_returns(episodes.rewards, episodes.mask, gamma).double().reshape(-1, 1)
    gram, moment = flat.T @ flat, flat.T @ target
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    for _ in range(5):
        weights = torch.linalg.lstsq(gram + reg * eye, moment).solution
        if torch.isfinite(weights).all():
            break
        reg *= 10
    return (features @ weights).squeeze(-1).to(episodes.rewards.dtype)


def advantages(
    episodes: Episodes,
    gamma: float,
    gae_lambda: float = 1.0,
    reg: float = 1e-5,
    normalize: bool = True,
) -> torch.Tensor:
    """GAE(gamma, lambda) advantages on the linear baseline, [time, episodes]; normalised
    to mean 0 and std 1 over the batch's valid steps when ``normalize`` (rllab's
    ``center_adv``). With lambda = 1 they are the discounted returns minus the baseline."""
    values = linear_baseline(episodes, gamma, reg) * episodes.mask
    mask = episodes.mask
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])]) * torch.cat(
        [mask[1:], torch.zeros_like(mask[:1])]
    )
    deltas = (episodes.rewards + gamma * next_values - values) * mask
    out = discounted_returns(deltas, mask, gamma * gae_lambda)
    if normalize:
        count = mask.sum()
        mean = (out * mask).sum() / count
        std = (((out - mean) * mask).pow(2).sum() / count).sqrt()
        out = (out - mean) / (std + 1e-8) * mask
    return out.detach()


def reinforce_loss(policy: Policy, episodes: Episodes, advantage: torch.Tensor) -> torch.Tensor:
    """-mean over the valid steps of log pi(a|s) * A: its gradient is REINFORCE's."""
    mask = episodes.mask
    return -(log_prob(policy, episodes) * advantage * mask).sum() / mask.sum()


def gaussian_kl(
    old: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """KL(old || new) of diagonal Gaussians given as (mean, log_std), summed over actions."""
    (m0, s0), (m1, s1) = old, new
    return (s1 - s0 + ((2 * s0).exp() + (m0 - m1).pow(2)) / (2 * (2 * s1).exp()) - 0.5).sum(-1)
