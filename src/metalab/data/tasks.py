"""The unit of meta-learning data: a batch of tasks, each with a support and a query set."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Task:
    """One few-shot task: adapt on the support set, evaluate on the query set."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


@dataclass
class TaskBatch:
    """Support and query tensors of several tasks, stacked along a leading task dimension.

    Shapes: ``support_x`` [tasks, support, ...], ``support_y`` [tasks, support, ...],
    and likewise for the query set. Every task in a batch has the same shapes, which is
    what lets the inner loop run over the tasks in one batched pass.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @classmethod
    def stack(cls, tasks: list[Task]) -> TaskBatch:
        return cls(
            support_x=torch.stack([t.support_x for t in tasks]),
            support_y=torch.stack([t.support_y for t in tasks]),
            query_x=torch.stack([t.query_x for t in tasks]),
            query_y=torch.stack([t.query_y for t in tasks]),
        )

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def task(self, index: int) -> Task:
        return Task(
            self.support_x[index], self.support_y[index], self.query_x[index], self.query_y[index]
        )

    def slice(self, start: int, stop: int) -> TaskBatch:
        return TaskBatch(
            self.support_x[start:stop],
            self.support_y[start:stop],
            self.query_x[start:stop],
            self.query_y[start:stop],
        )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to a device; ``dtype`` casts only the floating inputs (labels keep theirs)."""

        def move(t: torch.Tensor, is_input: bool) -> torch.Tensor:
            t = t.to(device, non_blocking=True)
            if dtype is not None and (is_input or t.is_floating_point()):
                t = t.to(dtype)
            return t

        return TaskBatch(
            move(self.support_x, True),
            move(self.support_y, False),
            move(self.query_x, True),
            move(self.query_y, False),
        )
