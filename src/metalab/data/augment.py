"""Training augmentation for image episodes: random crop with zero padding + horizontal flip.

It wraps a task source rather than a class pool so that it draws from the episode's own
generator: a training batch stays a pure function of (seed, rank, index), augmentation included,
and a resumed run sees the same augmented images. Only the training split is wrapped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.data.episodes import TaskSource
from metalab.data.tasks import Task
from metalab.errors import ConfigError


def crop_and_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of [n, C, H, W] zero-padded by ``padding``, cropped back at a random offset,
    and mirrored left-right with probability 1/2."""
    n, _, height, width = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(images, (padding, padding, padding, padding))
    out = torch.stack(
        [padded[i, :, r : r + height, c : c + width] for i, (r, c) in enumerate(offsets)]
    )
    out[flips] = out[flips].flip(-1)
    return out


class AugmentedTasks:
    """A TaskSource: the wrapped source's task with every support and query image augmented."""

    def __init__(self, source: TaskSource, padding: int) -> None:
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(
                f"dataset.crop_padding={padding!r}: set it to a whole number of pixels >= 0."
            )
        self.source, self.padding = source, padding

    def sample(self, generator: torch.Generator) -> Task:
        task = self.source.sample(generator)
        return Task(
            support_x=crop_and_flip(task.support_x, self.padding, generator),
            support_y=task.support_y,
            query_x=crop_and_flip(task.query_x, self.padding, generator),
            query_y=task.query_y,
        )
