"""A class pool over one shared uint8 image tensor, and the checks every image data set needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from metalab.errors import ConfigError


class ImageClasses:
    """A ClassPool: class ``i`` is row ``classes[i]`` of ``images`` [rows, examples, C, H, W].

    Splits of one load share the tensor, so a split costs only its list of rows.
    """

    def __init__(self, images: torch.Tensor, classes: Sequence[int], class_names: list[str]):
        if images.dtype != torch.uint8 or images.dim() != 5:
            raise ValueError(
                f"images must be uint8 [classes, examples, channels, height, width], not "
                f"{images.dtype} {list(images.shape)}"
            )
        if len(classes) != len(class_names):
            raise ValueError("give one name per class")
        self.images = images
        self.rows = [int(c) for c in classes]
        self.class_names = list(class_names)
        self.num_classes = len(self.rows)
        self.examples_per_class = images.shape[1]

    def examples(self, class_index: int, example_indices: torch.Tensor) -> torch.Tensor:
        """Float32 images ``[n, C, H, W]`` in [0, 1]."""
        indices = torch.as_tensor(example_indices, dtype=torch.long)
        chosen = self.images[self.rows[class_index]].index_select(0, indices)
        return chosen.to(torch.float32).div_(255.0)

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.images.shape[2:])
        return f"ImageClasses({self.num_classes} classes, {self.examples_per_class} x {shape})"


def check_image_size(image_size: object, usual: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(
            f"dataset.image_size={image_size!r}: set it to a positive whole number of pixels "
            f"({usual} is the usual for this data set)."
        )
    return image_size


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [..., C, H, W] resized to size x size (antialiased bilinear), still uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:]).to(torch.float32)
    out = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.reshape(*lead, *out.shape[1:])
