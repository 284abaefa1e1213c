"""Backbones: output shapes at every input size, published parameter counts, and ResNet-12's
MAML meta-gradient against a hand-written float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from metalab.algorithms.fomaml import FOMAML
from metalab.algorithms.maml import MAML
from metalab.data.episodes import NWayKShot
from metalab.data.tasks import TaskBatch
from metalab.errors import ConfigError
from metalab.execution import HybridStrategy, LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION
from metalab.models import build_model
from metalab.models.conv4 import Conv4
from metalab.models.layout import apply_memory_format
from metalab.models.resnet12 import DropBlock, ResNet12
from metalab.paths import config_dir
from tests.helpers.reference import maml_meta_gradient, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_config(name: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=[f"model={name}"]).model


# --- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 84)])
@pytest.mark.parametrize("name", ["conv4", "conv4_32", "resnet12"])
def test_output_shape_at_each_input_size(name: str, channels: int, size: int) -> None:
    cfg = model_config(name)
    if name == "resnet12":
        cfg.channels = [8, 8, 16, 16]  # the full widths at 84x84 are too slow for 2 CPU cores
    model = build_model(cfg, (channels, size, size), 5)
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_full_resnet12_at_84_gives_640_features() -> None:
    model = ResNet12(3, 5, image_size=84)
    with torch.no_grad():
        features = model.features(torch.rand(2, 3, 84, 84))
    assert features.shape == (2, 640, 5, 5)  # 84 -> 42 -> 21 -> 10 -> 5


# --- parameter counts -------------------------------------------------------------------------


def conv4_count(in_channels: int, width: int, side: int, ways: int) -> int:
    """Four [3x3 conv + bias, batch-norm scale + shift] blocks and a linear head."""
    convs = (in_channels * width * 9 + width) + 3 * (width * width * 9 + width)
    return convs + 4 * 2 * width + (width * side * side + 1) * ways


def resnet12_backbone_count(widths=(64, 160, 320, 640), in_channels: int = 3) -> int:
    """Per block: three bias-free 3x3 convs, a 1x1 shortcut conv, four batch norms."""
    total, previous = 0, in_channels
    for width in widths:
        total += previous * width * 9 + 2 * width * width * 9 + previous * width + 4 * 2 * width
        previous = width
    return total


@pytest.mark.parametrize(
    ("name", "in_shape", "expected"),
    [
        ("conv4_32", (3, 84, 84), 32_901),  # MAML mini-ImageNet, 5-way: 28,896 + 4,005 head
        ("conv4", (3, 84, 84), 121_093),  # ProtoNets' Conv-4-64: 113,088 + 8,005 head
        ("conv4", (1, 28, 28), 112_261),  # MAML Omniglot 5-way: 111,936 + 325 head
        ("resnet12", (3, 84, 84), 12_427_525),  # 12,424,320 (the published 12.4M) + 3,205 head
    ],
)
def test_parameter_counts_match_the_published_architectures(name, in_shape, expected) -> None:
    model = build_model(model_config(name), in_shape, 5)
    assert count(model) == expected
    if name == "resnet12":
        assert count(model.features) == resnet12_backbone_count() == 12_424_320
        assert count(model.head) == 640 * 5 + 5
    else:
        side = in_shape[-1] // 16
        assert expected == conv4_count(in_shape[0], model.head.in_features // side**2, side, 5)
        assert (
            count(model.features)
            == {32: 28_896, 64: 113_088 if in_shape[0] == 3 else 111_936}[
                model.head.in_features // side**2
            ]
        )


def test_conv4_32_preset_is_conv4_with_32_filters() -> None:
    cfg = model_config("conv4_32")
    assert (cfg.name, cfg.channels, cfg.blocks, cfg.norm) == ("conv4", 32, 4, "batch")
    assert isinstance(build_model(cfg, (3, 84, 84), 5), Conv4)


# --- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": (64, 160, 320)}, "ResNet-12 has 4 blocks, give 4 positive widths"),
        ({"image_size": 12}, "12x12 images are too small for ResNet-12"),
        ({"dropblock": 1.0}, "model.dropblock=1.0"),
    ],
)
def test_impossible_resnet12_settings_are_config_errors(kwargs, message) -> None:
    kwargs = {"image_size": 32, **kwargs}
    with pytest.raises(ConfigError, match=message):
        ResNet12(3, 5, **kwargs)


def test_resnet12_refuses_vector_inputs() -> None:
    with pytest.raises(ConfigError, match="model=resnet12 takes images .* use model=mlp"):
        build_model(model_config("resnet12"), (1,), 1)


# --- DropBlock --------------------------------------------------------------------------------


def test_dropblock_drops_square_blocks_only_in_training() -> None:
    torch.manual_seed(0)
    drop = DropBlock(0.2, 3)
    x = torch.ones(8, 4, 10, 10)
    dropped = drop(x)
    kept = dropped > 0
    assert 0.6 < kept.float().mean() < 0.95  # about 20% dropped
    assert torch.allclose(dropped[kept], dropped[kept][0].expand(kept.sum()))  # one rescale
    assert dropped.sum().item() == pytest.approx(x.sum().item(), rel=1e-5)
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(DropBlock(0.0, 3)(x), x)


# --- the meta-gradient through ResNet-12 ------------------------------------------------------


def resnet12_reference(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ResNet-12 from F ops; parameters in the module's order (conv, norm x3, shortcut, norm)."""
    *blocks, w_head, b_head = params

    def norm(h, weight, bias):
        return F.batch_norm(h, None, None, weight, bias, training=True)

    for i in range(0, len(blocks), 12):
        c1, g1, b1, c2, g2, b2, c3, g3, b3, cs, gs, bs = blocks[i : i + 12]
        h = F.leaky_relu(norm(F.conv2d(x, c1, padding=1), g1, b1), 0.1)
        h = F.leaky_relu(norm(F.conv2d(h, c2, padding=1), g2, b2), 0.1)
        h = norm(F.conv2d(h, c3, padding=1), g3, b3)
        x = F.max_pool2d(F.leaky_relu(h + norm(F.conv2d(x, cs), gs, bs), 0.1), 2)
    return F.linear(x.mean(dim=(-2, -1)), w_head, b_head)


class RandomImages:
    def __init__(self) -> None:
        self.data = torch.rand(4, 3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        self.num_classes, self.examples_per_class = 4, 3

    def examples(self, class_index, example_indices):
        return self.data[class_index, example_indices]


RUNNERS = {
    "loop": LoopStrategy,
    "vmap": lambda: VmapStrategy(chunk=2),
    "hybrid": HybridStrategy,
    "loop-channels-last": LoopStrategy,
}


@pytest.mark.parametrize("strategy", sorted(RUNNERS))
@pytest.mark.parametrize(("steps", "first_order"), [(1, False), (2, False), (1, True)])
def test_resnet12_meta_gradient_matches_the_reference(strategy, steps, first_order) -> None:
    torch.manual_seed(0)
    model = ResNet12(3, 2, image_size=16, channels=(3, 4, 4, 5)).double()
    if strategy.endswith("channels-last"):
        assert apply_memory_format(model, "channels_last")
    generator = torch.Generator().manual_seed(3)
    episodes = NWayKShot(RandomImages(), ways=2, shots=1, queries=2)
    batch = TaskBatch.stack([episodes.sample(generator) for _ in range(2)]).to("cpu", torch.float64)
    algorithm = (FOMAML if first_order else MAML)(
        InnerLoop(model, CLASSIFICATION), steps, 0.3, steps, 0.3, first_order=first_order
    )
    runner = RUNNERS[strategy]()
    model.zero_grad()
    runner.meta_gradient(
        algorithm.meta_objective,
        dict(model.named_parameters()),
        batch,
        lambda loss: loss.backward(),
    )
    ours = [p.grad.clone() for p in model.parameters()]
    reference = maml_meta_gradient(
        resnet12_reference,
        [p.detach().contiguous().requires_grad_() for p in model.parameters()],
        batch,
        CLASSIFICATION.loss,
        steps,
        0.3,
        first_order,
    )
    assert relative_error(ours, reference) < 1e-8
    assert all(g.abs().sum() > 0 for g in ours)  # every parameter gets a gradient
