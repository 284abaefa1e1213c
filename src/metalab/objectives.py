"""The shape of a per-task objective that execution strategies may exploit.

Most of the MAML family computes a task's objective as "adapt on the support set, then score
the query set once". Written as ``AdaptThenScore``, the two halves are visible, so the hybrid
strategy can vectorise the first over tasks and loop over the second. An algorithm that
overrides ``meta_objective`` (MAML++'s multi-step loss scores the query set after every
step) is no longer of this shape, and strategies then treat it as opaque, unless it says
(``scores_once``) that its objective is adapt-then-score at the current outer step (MAML++
once its multi-step loss has ended).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Params = dict[str, torch.Tensor]


class AdaptThenScore:
    """``meta_objective = query_objective(adapt_task(...))``; subclasses define the halves."""

    def adapt_task(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor):
        raise NotImplementedError

    def query_objective(self, adapted: Params, query_x: torch.Tensor, query_y: torch.Tensor):
        raise NotImplementedError

    def scores_once(self) -> bool:
        """Whether ``meta_objective`` is ``query_objective(adapt_task(...))`` now: always
        where it is not overridden; an override says when it is."""
        return type(self).meta_objective is AdaptThenScore.meta_objective

    def meta_objective(
        self,
        params: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's query loss at the adapted parameters, and its metric (for logging)."""
        return self.query_objective(self.adapt_task(params, support_x, support_y), query_x, query_y)


def split_objective(fn: Callable) -> AdaptThenScore | None:
    """The algorithm behind a bound ``meta_objective`` if it is adapt-then-score now."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, AdaptThenScore) and owner.scores_once():
        return owner
    return None
