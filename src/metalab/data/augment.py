"""Training augmentation for image episodes, chosen by ``dataset.augment``.

``false`` (none), ``true`` or ``crop_flip`` (random crop with zero padding + horizontal flip,
below) and ``koch`` (Koch et al. 2015's random affine distortions, metalab.data.affine).
Each kind wraps a task source rather than a class pool so that it draws from the episode's own
generator: a training batch stays a pure function of (seed, rank, index), augmentation included,
and a resumed run sees the same augmented images. Only the training split is wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from metalab.data.affine import AffineRanges, DistortedTasks
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


def check_padding(padding: Any) -> int:
    """``dataset.crop_padding``, refused unless a whole number of pixels >= 0."""
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ConfigError(
            f"dataset.crop_padding={padding!r}: set it to a whole number of pixels >= 0."
        )
    return padding


class AugmentedTasks:
    """A TaskSource: the wrapped source's task with every support and query image augmented."""

    def __init__(self, source: TaskSource, padding: int) -> None:
        self.source, self.padding = source, check_padding(padding)

    def sample(self, generator: torch.Generator) -> Task:
        task = self.source.sample(generator)
        return Task(
            support_x=crop_and_flip(task.support_x, self.padding, generator),
            support_y=task.support_y,
            query_x=crop_and_flip(task.query_x, self.padding, generator),
            query_y=task.query_y,
        )


def augmentation_kind(value: Any) -> str | None:
    """``dataset.augment`` as a kind ("crop_flip" or "koch"), or None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return "crop_flip"
    if isinstance(value, str) and value in ("crop_flip", "koch"):
        return value
    raise ConfigError(
        f"dataset.augment={value!r} is not an augmentation: choose false, true (= crop_flip: "
        "random crop + horizontal flip), crop_flip or koch (Koch et al.'s affine distortions)."
    )


def augmentation(cfg: Any) -> Callable[[TaskSource], TaskSource]:
    """What wraps the training source, as ``cfg.augment`` says (the identity when off).

    Every setting is checked here, so a bad one is refused before any image is decoded."""
    kind = augmentation_kind(cfg.get("augment", False))
    if kind == "crop_flip":
        padding = check_padding(cfg.get("crop_padding", None))
        return lambda source: AugmentedTasks(source, padding)
    if kind == "koch":
        ranges = AffineRanges.from_config(cfg.get("affine", None))
        return lambda source: DistortedTasks(source, ranges)
    return lambda source: source
