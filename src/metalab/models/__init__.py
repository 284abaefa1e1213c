"""Models by name: ``conf/model/<name>.yaml`` selects a class here."""

from __future__ import annotations

from typing import Any

from torch import nn

from metalab import native
from metalab.errors import ConfigError
from metalab.models.conv4 import Conv4
from metalab.models.embedding import without_head
from metalab.models.gaussian_mlp import GaussianMLP
from metalab.models.koch import KochNet
from metalab.models.mlp import MLP
from metalab.models.resnet12 import ResNet12


def build_model(
    cfg: Any, in_shape: tuple[int, ...], out_features: int, head: bool = True
) -> nn.Module:
    """Build the model for inputs of ``in_shape`` (one example) and ``out_features`` outputs;
    ``head=False``: the same backbone without its linear head (``without_head``). A run
    builds its model first, so the record of the native kernels it takes starts here."""
    native.reset()
    model = _build_with_head(cfg, in_shape, out_features)
    return model if head else without_head(model, tuple(in_shape))


def _build_with_head(cfg: Any, in_shape: tuple[int, ...], out_features: int) -> nn.Module:
    if cfg.name == "mlp":
        if len(in_shape) != 1:
            raise ConfigError(
                f"model=mlp takes flat inputs but this dataset gives {tuple(in_shape)}: "
                "use model=conv4 for images."
            )
        return MLP(in_shape[0], out_features, tuple(cfg.hidden))
    if cfg.name == "gaussian_mlp":
        if len(in_shape) != 1:
            raise ConfigError(
                f"model=gaussian_mlp is a policy on flat observations but this dataset gives "
                f"{tuple(in_shape)}: use it with an RL dataset (dataset=navigation2d)."
            )
        return GaussianMLP(
            in_shape[0], out_features, tuple(cfg.hidden), float(cfg.get("init_std", 1.0))
        )
    if cfg.name == "conv4":
        _require_images(cfg.name, in_shape)
        return Conv4(
            in_shape[0],
            out_features,
            image_size=in_shape[-1],
            channels=int(cfg.channels),
            blocks=int(cfg.blocks),
            norm=str(cfg.norm),
            downsample=str(cfg.get("downsample", "maxpool")),
            global_pool=bool(cfg.get("global_pool", False)),
            init=str(cfg.get("init", "torch")),
            head_init_std=cfg.get("head_init_std"),
        )
    if cfg.name == "resnet12":
        _require_images(cfg.name, in_shape)
        return ResNet12(
            in_shape[0],
            out_features,
            image_size=min(in_shape[-2:]),
            channels=tuple(cfg.channels),
            dropblock=float(cfg.dropblock),
            dropblock_size=int(cfg.dropblock_size),
        )
    if cfg.name == "koch":
        _require_images(cfg.name, in_shape)
        return KochNet(in_shape[0], out_features, image_size=in_shape[-1])
    raise ConfigError(
        f"model.name={cfg.name!r} is not known: choose mlp, gaussian_mlp, conv4, resnet12 or koch."
    )


def _require_images(name: str, in_shape: tuple[int, ...]) -> None:
    if len(in_shape) != 3:
        raise ConfigError(
            f"model={name} takes images [channels, height, width] but this dataset gives "
            f"{tuple(in_shape)}: use model=mlp for vector inputs."
        )
