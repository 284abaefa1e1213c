"""Colour jitter of natural training images, torchvision's ColorJitter written in torch ops.

The ResNet-12 few-shot papers (MetaOptNet, Lee et al. 2019; RFS, Tian et al. 2020) train on
mini-ImageNet, CIFAR-FS and FC100 with ``ColorJitter(brightness=0.4, contrast=0.4,
saturation=0.4)``: each factor uniform in [max(0, 1 - b), 1 + b], the three adjustments applied
in a random order drawn per image, each a blend clamped to the image range [0, 1]:

- brightness f: blend(x, 0, f) = f x
- contrast f:   blend(x, m, f) with m the mean of x's greyscale (one value per image)
- saturation f: blend(x, grey(x), f) with grey = 0.2989 R + 0.587 G + 0.114 B (ITU-R 601-2,
  torchvision's weights); a one-channel image has no saturation and is left as it is.

torchvision does not install here, so this is the same arithmetic batched over an episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from metalab.errors import ConfigError

GREY_WEIGHTS = (0.2989, 0.587, 0.114)
ADJUSTMENTS = ("brightness", "contrast", "saturation")  # the columns of a factor table


@dataclass(frozen=True)
class JitterStrengths:
    """How far each factor may move from 1 (defaults: the papers' ColorJitter(0.4, 0.4, 0.4))."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4

    def __post_init__(self) -> None:
        for key in ADJUSTMENTS:
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ConfigError(
                    f"dataset.jitter.{key}={value!r}: set it to a number >= 0 (the factor is "
                    f"drawn from [max(0, 1 - {key}), 1 + {key}]; 0 switches it off), e.g. 0.4."
                )

    def bounds(self) -> torch.Tensor:
        """[3, 2]: each factor's low and high end, in ADJUSTMENTS order."""
        return torch.tensor(
            [[max(0.0, 1.0 - s), 1.0 + s] for s in (getattr(self, k) for k in ADJUSTMENTS)]
        )

    @classmethod
    def from_config(cls, node: Any) -> JitterStrengths:
        """From a ``dataset.jitter`` node (keys as the fields); missing keys keep 0.4."""
        if node is None:
            return cls()
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(node) - set(names))
        if unknown:
            raise ConfigError(
                f"dataset.jitter.{unknown[0]} is not a setting of the colour jitter: choose "
                f"among {', '.join(names)}."
            )
        return cls(**{k: node[k] for k in names if k in node})


def blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * images + (1 - factor) * other, clamped to [0, 1]; factor is one per image."""
    f = factor.view(-1, 1, 1, 1).to(images.device, images.dtype)
    return (f * images + (1 - f) * other).clamp_(0.0, 1.0)


def greyscale(images: torch.Tensor) -> torch.Tensor:
    """[n, 1, H, W]: the luma of RGB images (a one-channel image is its own)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(GREY_WEIGHTS, dtype=images.dtype, device=images.device)
    return (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def adjust(images: torch.Tensor, which: int, factor: torch.Tensor) -> torch.Tensor:
    """One adjustment (an index into ADJUSTMENTS) of each image by its own factor."""
    if which == 0:
        return blend(images, torch.zeros_like(images), factor)
    if which == 1:
        mean = greyscale(images).mean(dim=(1, 2, 3), keepdim=True)
        return blend(images, mean, factor)
    if images.shape[1] == 1:
        return images
    return blend(images, greyscale(images), factor)


def sample_jitter(
    n: int, strengths: JitterStrengths, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 3] factors (ADJUSTMENTS order) and [n, 3] orders (a permutation of 0..2 per image)."""
    bounds = strengths.bounds()
    factors = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * torch.rand(n, 3, generator=generator)
    orders = torch.rand(n, 3, generator=generator).argsort(dim=1)
    return factors, orders


def jitter_with(images: torch.Tensor, factors: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Each image of [n, C, H, W] adjusted by its row of factors, in its row's order."""
    out, factors, orders = images.clone(), factors.to(images.device), orders.to(images.device)
    for step in range(len(ADJUSTMENTS)):
        for which in range(len(ADJUSTMENTS)):
            chosen = orders[:, step] == which
            if chosen.any():
                out[chosen] = adjust(out[chosen], which, factors[chosen, which])
    return out


def colour_jitter(
    images: torch.Tensor, strengths: JitterStrengths, generator: torch.Generator
) -> torch.Tensor:
    """Each image of [n, C, H, W] (values in [0, 1]) under its own random colour jitter."""
    factors, orders = sample_jitter(len(images), strengths, generator)
    return jitter_with(images, factors, orders)
