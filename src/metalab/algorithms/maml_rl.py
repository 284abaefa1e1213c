"""MAML for reinforcement learning (Finn et al. 2017, section 5.3), with TRPO as the outer
optimiser, as in the paper and its code (cbfinn/maml_rl; the PyTorch port
tristandeleu/pytorch-maml-rl).

Per task of the meta-batch (a goal): roll out ``shots`` trajectories with the policy, take a
vanilla policy-gradient step (REINFORCE on GAE advantages over rllab's linear baseline)
through the functional policy, differentiably (second order unless ``first_order``), and
repeat for ``inner_steps`` steps, each on fresh trajectories of the policy so far; then
roll out ``queries`` trajectories with the adapted policy. The meta-objective is TRPO's
surrogate on those query trajectories, a function of the initial parameters through the
adaptation (trajectories held fixed); its natural-gradient step with line search
(``metalab.algorithms.trpo``) is the outer update.

The update is a finished step, not a gradient: it is written as ``theta - theta_new`` into
``.grad`` and applied by the outer optimiser, which must be ``optimizer.name=sgd
optimizer.lr=1`` (``writes_step``; the module refuses anything else), so checkpoints,
resume and logging stay the module's. Rollout noise is drawn from (sampling_seed, outer
step): a resumed run continues as an uninterrupted one, and ``replay`` recomputes a task.

``pretrain``: the paper's "pretrained" baseline (section 5.3, figure 5): one policy trained
with the same TRPO step on the returns of all goals of the meta-batch, without adaptation
(the surrogate at the unadapted policy), then fine-tuned at test like MAML-RL's.

Evaluation on a fixed test goal: the return of ``test_queries`` trajectories before
adaptation and after each of ``eval_inner_steps`` policy-gradient steps (each on
``test_shots`` fresh trajectories), the paper's curve of return against test-time steps.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar

import torch
from torch.func import functional_call, vmap

from metalab.algorithms import policy_gradient as pg
from metalab.algorithms.base import Algorithm, Backward, Replay, Scores
from metalab.algorithms.trpo import StepInfo, trpo_step
from metalab.data.episodes import derive_seed
from metalab.data.rl import environment
from metalab.data.tasks import TaskBatch
from metalab.distributed import average_gradients, rank_and_world
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params
from metalab.models.vectorised import is_vectorised

EVAL_STREAM = 7  # the rollout noise of evaluation, apart from training's


def refuse_vectorised(strategy: str) -> None:
    """Rollouts draw from a generator and read their returns: no ``vmap`` over tasks."""
    if strategy.startswith(("vmap", "hybrid")):  # vmap's name carries its chunk size
        raise ConfigError(
            f"strategy={strategy.split('(')[0]}: algorithm=maml_rl rolls out all tasks of a "
            "meta-batch together itself and evaluates test tasks one by one; use strategy=loop "
            "(or auto)."
        )


class MAMLRL(Algorithm):
    writes_step: ClassVar[bool] = True
    task_kinds: ClassVar[tuple[str, ...]] = ("reinforcement",)

    def __init__(
        self,
        inner_loop: InnerLoop,
        inner_steps: int = 1,
        inner_lr: float = 0.1,
        eval_inner_steps: int = 3,
        eval_inner_lr: float = 0.1,
        first_order: bool = False,
        env: str = "navigation2d",
        horizon: int = 100,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        normalize_advantages: bool = True,
        baseline_reg: float = 1e-5,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_max_steps: int = 15,
        ls_backtrack_ratio: float = 0.8,
        sampling_seed: int = 0,
        pretrain: bool = False,
    ) -> None:
        super().__init__()
        for key, value in [("inner_steps", inner_steps), ("eval_inner_steps", eval_inner_steps)]:
            if value < 1:
                raise ConfigError(f"algorithm.{key}={value}: set it to at least 1.")
        positive = [("inner_lr", inner_lr), ("eval_inner_lr", eval_inner_lr), ("max_kl", max_kl)]
        for key, value in positive:
            if not value > 0:
                raise ConfigError(f"algorithm.{key}={value}: it must be positive.")
        for key, value in [("gamma", gamma), ("gae_lambda", gae_lambda)]:
            if not 0 <= value <= 1:
                raise ConfigError(f"algorithm.{key}={value}: it must be in [0, 1].")
        if not 0 < ls_backtrack_ratio < 1:
            raise ConfigError(
                f"algorithm.ls_backtrack_ratio={ls_backtrack_ratio}: it must be in (0, 1)."
            )
        self.inner_loop = inner_loop
        self.env = environment(env, horizon)
        self.inner_steps, self.inner_lr, self.first_order = inner_steps, inner_lr, first_order
        self.eval_inner_steps, self.eval_inner_lr = eval_inner_steps, eval_inner_lr
        self.gamma, self.gae_lambda, self.normalize = gamma, gae_lambda, normalize_advantages
        self.baseline_reg = baseline_reg
        self.trpo = dict(
            max_kl=max_kl,
            cg_iters=cg_iters,
            cg_damping=cg_damping,
            ls_max_steps=ls_max_steps,
            ls_backtrack_ratio=ls_backtrack_ratio,
        )
        self.pretrain = pretrain
        self.sampling_seed, self.step = sampling_seed, 0
        self.last: dict[str, float] = {}

    # --- the pieces -----------------------------------------------------------------------

    def policy(self, params: Params) -> pg.Policy:
        return lambda obs: functional_call(self.inner_loop.model, params, (obs,))

    def advantages(self, episodes: pg.Episodes) -> torch.Tensor:
        settings = (self.gamma, self.gae_lambda, self.baseline_reg, self.normalize)
        if settings not in episodes.cache:
            episodes.cache[settings] = pg.advantages(episodes, *settings)
        return episodes.cache[settings]

    def inner_step(
        self, params: Params, episodes: pg.Episodes, lr: float, create_graph: bool
    ) -> Params:
        """One REINFORCE step; differentiable w.r.t. ``params`` when ``create_graph`` (else
        the gradient is a constant and only the identity path remains: first order)."""
        at = params
        if not create_graph:  # the gradient at these values, from a graph of its own
            at = {k: p.detach().requires_grad_() for k, p in params.items()}
        with torch.enable_grad():
            loss = pg.reinforce_loss(self.policy(at), episodes, self.advantages(episodes))
            grads = torch.autograd.grad(loss, list(at.values()), create_graph=create_graph)
        return {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}

    def adapt(self, params: Params, support: list[pg.Episodes], create_graph: bool) -> Params:
        """The inner steps on held trajectories: step i on ``support[i]``."""
        for episodes in support:
            params = self.inner_step(params, episodes, self.inner_lr, create_graph)
        return params

    def surrogate(
        self,
        params: Params,
        data: list[tuple[list[pg.Episodes], pg.Episodes, torch.Tensor]],
        old: list[tuple[torch.Tensor, ...]] | None,
        create_graph: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, ...]]]:
        """TRPO's surrogate -mean(ratio * A) on the query trajectories of the adapted policy,
        and the mean KL(old || new), averaged over tasks; ``old`` None: at the old policy
        (ratio 1), whose (mean, log_std, log-prob) per task are returned."""
        losses, kls, olds = [], [], []
        for i, (support, query, advantage) in enumerate(data):
            adapted = self.adapt(params, support, create_graph)
            mean, log_std = self.policy(adapted)(query.observations)
            logp = pg.gaussian_log_prob(mean, log_std, query.actions)
            if old is None:
                olds.append((mean.detach(), log_std.detach(), logp.detach()))
            m0, s0, logp0 = olds[i] if old is None else old[i]
            mask = query.mask
            ratio = (logp - logp0).exp()
            losses.append(-(ratio * advantage * mask).sum() / mask.sum())
            kl = pg.gaussian_kl((m0, s0), (mean, log_std))
            kls.append((kl * mask).sum() / mask.sum())
        return torch.stack(losses).mean(), torch.stack(kls).mean(), olds

    def generator(self, *stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.sampling_seed, *stream))

    def task_policies(self, per_task: list[Params], episodes: int) -> pg.Policy:
        """Each task's policy on its own ``episodes`` consecutive rows of the observations
        (``vmap`` over the tasks' parameters), so all tasks' episodes step together."""
        stacked = {k: torch.stack([p[k] for p in per_task]) for k in per_task[0]}
        model = self.inner_loop.model
        call = vmap(lambda p, obs: functional_call(model, p, (obs,)))

        def policy(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean, log_std = call(stacked, obs.view(len(per_task), episodes, -1))
            return mean.flatten(0, 1), log_std.flatten(0, 1)

        return policy

    def training_inner_steps(self) -> int:
        """Inner steps of meta-training: none for the pretrained baseline."""
        return 0 if self.pretrain else self.inner_steps

    def sample_batch(self, params: Params, batch: TaskBatch):
        """Every task's data, (support per inner step, query, query advantages), rolled out
        for all tasks at once: support step i with the policies adapted by the steps before
        it, the query with the fully adapted ones; and the returns before and after (the
        same, with no inner step)."""
        rank, _ = rank_and_world()
        generator = self.generator(self.step, rank)
        tasks, shots, queries = len(batch), batch.support_x.shape[1], batch.query_x.shape[1]
        goals = batch.support_x[:, 0]
        adapted = [{k: p.detach() for k, p in params.items()} for _ in range(tasks)]
        support: list[list[pg.Episodes]] = [[] for _ in range(tasks)]
        pre = None
        for step in range(self.training_inner_steps()):
            policy = self.task_policies(adapted, shots)
            rolled = pg.rollout(self.env, policy, goals.repeat_interleave(shots, 0), generator)
            episodes = rolled.split(tasks)
            if step == 0:
                pre = torch.stack([e.returns().mean() for e in episodes])
            for t in range(tasks):
                support[t].append(episodes[t])
                new = self.inner_step(adapted[t], episodes[t], self.inner_lr, False)
                adapted[t] = {k: p.detach() for k, p in new.items()}
        policy = self.task_policies(adapted, queries)
        rolled = pg.rollout(self.env, policy, goals.repeat_interleave(queries, 0), generator)
        query = rolled.split(tasks)
        data = [(support[t], query[t], self.advantages(query[t])) for t in range(tasks)]
        post = torch.stack([q.returns().mean() for q in query])
        return data, (post if pre is None else pre), post

    # --- the contract -----------------------------------------------------------------------

    def on_outer_step(self, step: int, total_steps: int) -> None:
        self.step = step

    def outer_step(self, params: Params, batch: TaskBatch, strategy, backward: Backward) -> Scores:
        """Sample, adapt, and write TRPO's step as ``theta - theta_new`` into ``.grad`` (the
        tasks run in one loop here: ``strategy`` is not used, nor ``backward``)."""
        refuse_vectorised(getattr(strategy, "name", "loop"))
        names = list(params)
        leaves = list(params.values())
        data, pre, post = self.sample_batch(params, batch)
        with torch.enable_grad():
            loss, kl, old = self.surrogate(params, data, None, not self.first_order)

            def search(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
                trial = {n: v.requires_grad_() for n, v in zip(names, values, strict=True)}
                new_loss, new_kl, _ = self.surrogate(trial, data, old, False)
                return new_loss.detach(), new_kl.detach()

            values, info = trpo_step(leaves, loss, kl, search, **self.trpo)
        for p, v in zip(leaves, values, strict=True):
            p.grad = (p.detach() - v.detach()).to(p.dtype)
        average_gradients(leaves)
        self.last = self._metrics(pre, post, info)
        returns = post.to(leaves[0].dtype)
        return -returns, returns

    def _metrics(self, pre: torch.Tensor, post: torch.Tensor, info: StepInfo) -> dict[str, float]:
        return {
            "return_pre": float(pre.mean()),
            "return_post": float(post.mean()),
            "trpo_kl": info.kl,
            "trpo_step_fraction": info.step_size,
        }

    def step_metrics(self) -> dict[str, float]:
        """The last outer step's returns before and after adaptation, and TRPO's step."""
        return dict(self.last)

    def evaluate(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        score_at: Collection[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return of ``len(query_x)`` trajectories after 0..eval_inner_steps steps, each step
        on ``len(support_x)`` fresh trajectories; noise seeded by the goal (fixed tasks give
        the same numbers in every evaluation). ``loss`` is minus the return."""
        if is_vectorised():
            refuse_vectorised("vmap")
        goal = support_x[0]
        bits = [int(v) + 2**40 for v in (goal.detach().double().cpu() * 2**30).round().long()]
        generator = self.generator(EVAL_STREAM, *bits)
        params = {k: p.detach() for k, p in params.items()}
        returns = []
        for step in range(self.eval_inner_steps + 1):
            if score_at is None or step in score_at:
                query = pg.rollout(
                    self.env, self.policy(params), goal.expand(len(query_x), -1), generator
                )
                returns.append(query.returns().mean())
            if step < self.eval_inner_steps:
                support = pg.rollout(
                    self.env, self.policy(params), goal.expand(len(support_x), -1), generator
                )
                adapted = self.inner_step(params, support, self.eval_inner_lr, False)
                params = {k: p.detach() for k, p in adapted.items()}
        metric = torch.stack(returns)
        return {"loss": -metric, "metric": metric}

    def replay(self, params: Params, batch: TaskBatch, task: int) -> Replay:
        """The last outer step's task ``task``: the same rollouts (the same noise stream), its
        loss minus the query return after adaptation."""
        detached = {k: p.detach() for k, p in params.items()}
        _, _, post = self.sample_batch(detached, batch)
        return Replay(float(-post[task]))

    def inner_gradient(
        self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> Params | None:
        """No supervised support loss to take a gradient of (the monitor skips it)."""
        return None
