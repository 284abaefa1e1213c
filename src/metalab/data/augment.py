"""Training augmentation for image episodes, chosen by ``dataset.augment``.

``false`` (none); for natural images ``crop`` (zero-pad by ``dataset.crop_padding`` and crop
back at a random offset), ``flip`` (mirror left-right with probability 1/2), ``jitter`` (colour
jitter, metalab.data.colour_jitter, strengths ``dataset.jitter``) and the papers' combinations
``crop_flip`` (``true`` means this one) and ``crop_flip_jitter``, applied in that order; for
Omniglot ``koch`` (Koch et al. 2015's random affine distortions, metalab.data.affine).
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
from metalab.data.colour_jitter import JitterStrengths, colour_jitter
from metalab.data.episodes import TaskSource
from metalab.data.tasks import Task
from metalab.errors import ConfigError

# Each natural-image kind as the steps it runs, in this order (the order of the draws too).
STEPS: dict[str, tuple[str, ...]] = {
    "crop_flip": ("crop", "flip"),
    "crop_flip_jitter": ("crop", "flip", "jitter"),
    "crop": ("crop",),
    "flip": ("flip",),
    "jitter": ("jitter",),
}
KINDS = (*STEPS, "koch")


def crop_with(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Image i of [n, C, H, W], zero-padded by ``padding``, cropped back to H x W with its
    top-left corner at offsets[i] = (row, column) of the padded image; one gather for all."""
    n, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    offsets = offsets.to(device)
    rows = offsets[:, 0:1] + torch.arange(height, device=device)  # [n, H]
    cols = offsets[:, 1:2] + torch.arange(width, device=device)  # [n, W]
    return padded[
        torch.arange(n, device=device).view(n, 1, 1, 1),
        torch.arange(channels, device=device).view(1, channels, 1, 1),
        rows.view(n, 1, height, 1),
        cols.view(n, 1, 1, width),
    ]


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``padding`` and cropped back at a uniformly random offset."""
    offsets = torch.randint(0, 2 * padding + 1, (len(images), 2), generator=generator)
    return crop_with(images, padding, offsets)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flips = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flips.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


def crop_and_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of [n, C, H, W] zero-padded by ``padding``, cropped back at a random offset,
    and mirrored left-right with probability 1/2."""
    return random_flip(random_crop(images, padding, generator), generator)


def check_padding(padding: Any) -> int:
    """``dataset.crop_padding``, refused unless a whole number of pixels >= 0."""
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ConfigError(
            f"dataset.crop_padding={padding!r}: set it to a whole number of pixels >= 0."
        )
    return padding


class AugmentedTasks:
    """A TaskSource: the wrapped source's task with every support and query image augmented by
    ``steps`` (crop, flip, jitter), support first, each step's draws for all images at once."""

    def __init__(
        self,
        source: TaskSource,
        padding: int,
        steps: tuple[str, ...] = STEPS["crop_flip"],
        jitter: JitterStrengths | None = None,
    ) -> None:
        unknown = [s for s in steps if s not in STEPS["crop_flip_jitter"]]
        if unknown:
            raise ConfigError(f"augmentation step {unknown[0]!r}: choose crop, flip or jitter.")
        self.source, self.padding, self.steps = source, check_padding(padding), tuple(steps)
        self.jitter = JitterStrengths() if jitter is None else jitter

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            if step == "crop":
                images = random_crop(images, self.padding, generator)
            elif step == "flip":
                images = random_flip(images, generator)
            else:
                images = colour_jitter(images, self.jitter, generator)
        return images

    def sample(self, generator: torch.Generator) -> Task:
        task = self.source.sample(generator)
        return Task(
            support_x=self.augment(task.support_x, generator),
            support_y=task.support_y,
            query_x=self.augment(task.query_x, generator),
            query_y=task.query_y,
        )


def augmentation_kind(value: Any) -> str | None:
    """``dataset.augment`` as a kind (one of KINDS), or None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return "crop_flip"
    if isinstance(value, str) and value in KINDS:
        return value
    raise ConfigError(
        f"dataset.augment={value!r} is not an augmentation: choose false, true (= crop_flip: "
        "random crop + horizontal flip), crop_flip, crop_flip_jitter (+ colour jitter), crop, "
        "flip, jitter or koch (Koch et al.'s affine distortions)."
    )


def augmentation(cfg: Any) -> Callable[[TaskSource], TaskSource]:
    """What wraps the training source, as ``cfg.augment`` says (the identity when off).

    Every setting is checked here, so a bad one is refused before any image is decoded."""
    kind = augmentation_kind(cfg.get("augment", False))
    if kind == "koch":
        ranges = AffineRanges.from_config(cfg.get("affine", None))
        return lambda source: DistortedTasks(source, ranges)
    if kind is None:
        return lambda source: source
    steps = STEPS[kind]
    padding = check_padding(cfg.get("crop_padding", None)) if "crop" in steps else 0
    jitter = JitterStrengths.from_config(cfg.get("jitter", None)) if "jitter" in steps else None
    return lambda source: AugmentedTasks(source, padding, steps, jitter)
