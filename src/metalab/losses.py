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
TASK_KINDS = {kind.name: kind for kind in (CLASSIFICATION, REGRESSION)}
