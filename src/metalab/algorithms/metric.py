"""What the metric-based methods (ProtoNets, Matching and Siamese networks) share.

They have no inner loop: a task is solved by comparing embeddings of its query set with
those of its support set. The model is therefore built without a head (``fixed_head =
False``): nothing in it depends on the number of ways, so training and test ways may differ.

Classes are scored without knowing the number of ways (a vmap-friendly static shape): the
score matrix has one column per support example, column ``c`` holding class ``c``; columns
of labels that do not occur (``c >= ways``) get -inf, which neither the softmax, the
cross-entropy nor the argmax can pick, so losses and accuracies equal those over ``ways``
columns.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from metalab.algorithms.base import TaskObjective
from metalab.errors import ConfigError
from metalab.inner_loop import InnerLoop, Params
from metalab.models.single_backward import backward_once


def class_onehot(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[examples, examples]: row i is the one-hot code of ``labels[i]`` (labels < examples)."""
    classes = torch.arange(labels.shape[0], device=labels.device)
    return (labels.unsqueeze(-1) == classes).to(dtype)


def mask_absent(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """-inf in the columns of classes with no support example."""
    return torch.where(counts > 0, scores, torch.full_like(scores, float("-inf")))


class MetricAlgorithm(TaskObjective):
    """Base of the metric methods: an embedding applied to a task's support and query sets.

    With no inner loop (``inner_loop`` None, ``eval_inner_steps`` 0), a replayed task has
    no inner steps: the NaN diagnosis can only blame its one loss."""

    fixed_head = False  # the model has no head: test ways may differ from training ways

    def __init__(self, inner_loop: InnerLoop) -> None:
        super().__init__()
        if inner_loop.kind.name != "classification":
            raise ConfigError(
                f"algorithm={self.name} classifies by comparing examples and cannot do "
                f"{inner_loop.kind.name}: use a classification dataset (dataset=omniglot)."
            )
        # The head-less model and the task kind (a plain object: the model is registered by
        # the caller). Not ``inner_loop``, which the contract keeps None for methods that
        # have none.
        self.embedding = inner_loop

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def embed(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.embedding.model, params, (x,))

    def embed_episode(
        self, params: Params, support_x: torch.Tensor, query_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query embeddings from one pass (batch norm sees the whole episode, as
        in the ProtoNets code; transductive at test time, like MAML's batch statistics).

        The pass is differentiated once (no inner loop), so Conv-4's first block may take the
        native kernel; a second backward through it would be refused, not answered wrongly."""
        with backward_once():
            both = self.embed(params, torch.cat([support_x, query_x]))
        return both[: support_x.shape[0]], both[support_x.shape[0] :]

    def class_scores(self, params, support_x, support_y, query_x) -> torch.Tensor:
        """[queries, support examples]: the method's score of each query for each class."""
        raise NotImplementedError

    def meta_objective(self, params, support_x, support_y, query_x, query_y):
        scores = self.class_scores(params, support_x, support_y, query_x)
        kind = self.embedding.kind
        return kind.loss(scores, query_y), kind.metric(scores.detach(), query_y)

    def evaluate(self, params, support_x, support_y, query_x, query_y, score_at=None):
        """A series of length 1 (step 0): there are no inner steps to report."""
        with torch.no_grad():
            loss, metric = self.meta_objective(params, support_x, support_y, query_x, query_y)
        return {"loss": loss.unsqueeze(0), "metric": metric.unsqueeze(0)}
