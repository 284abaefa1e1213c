"""What a task is scored by: the loss the inner loop descends and the metric that is reported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def accuracy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction.argmax(dim=-1) == target).to(prediction.dtype).mean()


@dataclass(frozen=True)
class TaskKind:
    name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric_name: str
    higher_is_better: bool


CLASSIFICATION = TaskKind("classification", F.cross_entropy, accuracy, "acc", True)
REGRESSION = TaskKind("regression", F.mse_loss, F.mse_loss, "mse", False)


def no_supervised_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reinforcement-learning tasks are scored by rollouts (``metalab.algorithms.maml_rl``)."""
    raise NotImplementedError("a reinforcement-learning task has no supervised loss")


# The metric of an RL task is the average return of its episodes.
REINFORCEMENT = TaskKind("reinforcement", no_supervised_loss, no_supervised_loss, "return", True)
TASK_KINDS = {kind.name: kind for kind in (CLASSIFICATION, REGRESSION, REINFORCEMENT)}
