"""Koch et al. 2015's affine distortions of training images, as a task-source wrapper.

Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image Recognition" (ICML
Deep Learning Workshop 2015), section 3.2, paragraph "Affine distortions": each image of a
training pair gets its own transform T = (theta, rho_x, rho_y, s_x, s_y, t_x, t_y) drawn
uniformly with theta in [-10, 10] degrees, rho in [-0.3, 0.3], s in [0.8, 1.2], t in [-2, 2]
pixels, each component included with probability 0.5. The paper does not say how the parts
compose; here A = R(theta) Sh(rho_x, rho_y) S(s_x, s_y) about the image centre, then t.

Like the crop+flip wrapper, the draws come from the episode's own generator, so a training
batch stays a pure function of (seed, rank, index) and a resumed run sees the same images.
Outside the image is filled with 0: metalab's Omniglot holds ink = 1 on a 0 background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from metalab.data.episodes import TaskSource
from metalab.data.tasks import Task
from metalab.errors import ConfigError

# Columns of a parameter table, in this order, and each one's "left out" value.
COMPONENTS = ("theta", "rho_x", "rho_y", "s_x", "s_y", "t_x", "t_y")
IDENTITY = (0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)


@dataclass(frozen=True)
class AffineRanges:
    """The uniform ranges of Koch's distortions (defaults: the paper's)."""

    rotation: float = 10.0  # theta ~ U[-rotation, rotation], degrees
    shear: float = 0.3  # rho_x, rho_y ~ U[-shear, shear]
    scale: tuple[float, float] = (0.8, 1.2)  # s_x, s_y ~ U[scale]
    translation: float = 2.0  # t_x, t_y ~ U[-translation, translation], pixels
    probability: float = 0.5  # each component is included with this probability

    def __post_init__(self) -> None:
        _check("rotation", self.rotation, 0.0, 180.0, "degrees, e.g. 10")
        # |shear| < 1 keeps the map invertible: det Sh = 1 - rho_x rho_y > 0
        _check("shear", self.shear, 0.0, 0.999, "e.g. 0.3")
        _check("translation", self.translation, 0.0, math.inf, "pixels, e.g. 2")
        _check("probability", self.probability, 0.0, 1.0, "e.g. 0.5")
        low, high = _pair(self.scale)
        if not 0 < low <= high:
            raise ConfigError(
                f"dataset.affine.scale={list(self.scale)}: set it to [low, high] with "
                "0 < low <= high, e.g. [0.8, 1.2]."
            )

    def bounds(self) -> torch.Tensor:
        """[7, 2]: the low and high end of each component's range, in COMPONENTS order."""
        low, high = _pair(self.scale)
        r, p, t = self.rotation, self.shear, self.translation
        return torch.tensor(
            [[-r, r], [-p, p], [-p, p], [low, high], [low, high], [-t, t], [-t, t]],
            dtype=torch.float64,
        )

    @classmethod
    def from_config(cls, node: Any) -> AffineRanges:
        """From a ``dataset.affine`` node (keys as the fields); missing keys keep Koch's values."""
        if node is None:
            return cls()
        known = {f: node[f] for f in cls.__dataclass_fields__ if f in node}
        unknown = sorted(set(node) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"dataset.affine.{unknown[0]} is not a setting of the affine distortions: "
                f"choose among {', '.join(cls.__dataclass_fields__)}."
            )
        if "scale" in known:
            known["scale"] = tuple(float(v) for v in _pair(known["scale"]))
        return cls(**{k: v if k == "scale" else _number(k, v) for k, v in known.items()})


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"dataset.affine.{key}={value!r}: set it to a number.")
    return float(value)


def _check(key: str, value: float, low: float, high: float, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        span = f"between {low:g} and {high:g}" if high < math.inf else f"at least {low:g}"
        raise ConfigError(f"dataset.affine.{key}={value!r}: set it {span} ({hint}).")


def _pair(value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"dataset.affine.scale={value!r}: set it to [low, high], e.g. [0.8, 1.2]."
        ) from None
    return low, high


def sample_parameters(n: int, ranges: AffineRanges, generator: torch.Generator) -> torch.Tensor:
    """[n, 7] float64 parameters (COMPONENTS order, theta in degrees), one row per image:
    each component uniform in its range with probability ``ranges.probability``, else identity."""
    bounds = ranges.bounds()
    uniform = torch.rand(n, len(COMPONENTS), generator=generator, dtype=torch.float64)
    included = torch.rand(n, len(COMPONENTS), generator=generator) < ranges.probability
    drawn = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * uniform
    return torch.where(included, drawn, torch.tensor(IDENTITY, dtype=torch.float64))


def forward_maps(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel-space map of each row: x' = A (x - c) + c + t, with x = (column, row), y down.

    Returns A [n, 2, 2] = R(theta) Sh(rho) S(s) and t [n, 2]. A positive theta turns the +x
    axis towards +y, i.e. clockwise on screen."""
    theta = torch.deg2rad(params[:, 0])
    cos, sin = theta.cos(), theta.sin()
    rotation = torch.stack([cos, -sin, sin, cos], -1).view(-1, 2, 2)
    ones = torch.ones_like(theta)
    shear = torch.stack([ones, params[:, 1], params[:, 2], ones], -1).view(-1, 2, 2)
    scale = torch.diag_embed(params[:, 3:5])
    return rotation @ shear @ scale, params[:, 5:7]


def sampling_grid(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """affine_grid's [n, 2, 3] theta: for each output pixel, where to read the input
    (the inverse of the forward map, in normalised coordinates, align_corners=False)."""
    matrix, shift = forward_maps(params)
    to_unit = torch.diag(torch.tensor([2.0 / width, 2.0 / height], dtype=params.dtype))
    inverse = to_unit @ torch.linalg.inv(matrix) @ torch.linalg.inv(to_unit)
    offset = -(inverse @ (to_unit @ shift.unsqueeze(-1)))
    return torch.cat([inverse, offset], -1)


def distort(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Each image of [n, C, H, W] moved by its own row of ``params`` (bilinear, 0 outside)."""
    n, channels, height, width = images.shape
    theta = sampling_grid(params, height, width).to(images.dtype)
    grid = F.affine_grid(theta, [n, channels, height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_distort(
    images: torch.Tensor, ranges: AffineRanges, generator: torch.Generator
) -> torch.Tensor:
    """Each image of [n, C, H, W] under its own random Koch distortion."""
    return distort(images, sample_parameters(len(images), ranges, generator))


class DistortedTasks:
    """A TaskSource: the wrapped source's task with every support and query image distorted
    independently (Koch distorts both images of a pair, each with its own T)."""

    def __init__(self, source: TaskSource, ranges: AffineRanges) -> None:
        self.source, self.ranges = source, ranges

    def sample(self, generator: torch.Generator) -> Task:
        task = self.source.sample(generator)
        return Task(
            support_x=affine_distort(task.support_x, self.ranges, generator),
            support_y=task.support_y,
            query_x=affine_distort(task.query_x, self.ranges, generator),
            query_y=task.query_y,
        )
