"""Natural-image augmentation (dataset.augment=crop, flip, jitter, crop_flip, crop_flip_jitter):
each step against a direct computation, the seeding and resume, that only training episodes
change, the config switch, and a metalab-train run on a generated image folder."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import metalab.data.datamodule as datamodule
from metalab.data.augment import (
    KINDS,
    STEPS,
    AugmentedTasks,
    augmentation,
    augmentation_kind,
    crop_with,
    random_crop,
    random_flip,
)
from metalab.data.colour_jitter import (
    GREY_WEIGHTS,
    JitterStrengths,
    adjust,
    colour_jitter,
    jitter_with,
    sample_jitter,
)
from metalab.data.episodes import NWayKShot, TrainEpisodes
from metalab.data.pools import ImageClasses
from metalab.errors import ConfigError
from metalab.preflight import check_config
from tests.helpers.cli import read_results, train_run
from tests.helpers.configs import compose_train
from tests.helpers.fake_imagefolder import make_folder
from tests.helpers.paths import CONF

NATURAL = ("miniimagenet", "cifar_fs", "fc100", "imagefolder", "tieredimagenet", "cub")


def images(n: int = 6, channels: int = 3, size: tuple[int, int] = (7, 9), seed: int = 0):
    return torch.rand(n, channels, *size, generator=torch.Generator().manual_seed(seed))


# --- crop and flip -------------------------------------------------------------------------


def test_a_crop_at_each_offset_is_a_slice_of_the_zero_padded_image() -> None:
    x, padding = images(1), 2
    padded = torch.zeros(1, 3, 7 + 4, 9 + 4)
    padded[:, :, 2:9, 2:11] = x  # zero padding written out by hand
    for row, col in itertools.product(range(5), range(5)):
        out = crop_with(x, padding, torch.tensor([[row, col]]))
        assert torch.equal(out, padded[:, :, row : row + 7, col : col + 9]), (row, col)
    assert torch.equal(crop_with(x, padding, torch.tensor([[2, 2]])), x)  # centred: unchanged


def test_random_crops_are_the_drawn_offsets_and_every_offset_occurs() -> None:
    x, padding = images(200, size=(5, 6)), 1
    out = random_crop(x, padding, torch.Generator().manual_seed(3))
    offsets = torch.randint(0, 3, (200, 2), generator=torch.Generator().manual_seed(3))
    padded = F.pad(x, (1, 1, 1, 1))
    for i, (r, c) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, r : r + 5, c : c + 6])
    assert {tuple(o) for o in offsets.tolist()} == set(itertools.product(range(3), range(3)))


def test_a_flip_is_torch_flip_for_about_half_of_the_images() -> None:
    x = images(400)
    out = random_flip(x, torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert (flipped ^ kept).all()  # each image is one or the other
    assert 160 < int(flipped.sum()) < 240


# --- colour jitter ------------------------------------------------------------------------


def grey_reference(x: torch.Tensor) -> torch.Tensor:
    """Luma written out per channel, in float64."""
    r, g, b = x.double().unbind(1)
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(1)


def test_each_adjustment_is_its_blend_clamped_to_the_image_range() -> None:
    x = images(5)
    factors = torch.tensor([0.0, 0.6, 1.0, 1.4, 2.5])
    f = factors.double().view(-1, 1, 1, 1)
    grey = grey_reference(x)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    expected = {
        0: (f * x.double()).clamp(0, 1),  # brightness: blend with black
        1: (f * x.double() + (1 - f) * mean).clamp(0, 1),  # contrast: with the grey mean
        2: (f * x.double() + (1 - f) * grey).clamp(0, 1),  # saturation: with the grey image
    }
    for which, reference in expected.items():
        out = adjust(x, which, factors)
        assert out.min() >= 0 and out.max() <= 1
        assert torch.allclose(out.double(), reference, atol=1e-6), which
    assert (adjust(x, 0, factors)[4] == 1.0).any()  # 2.5 x brightness does reach the clamp


def test_factor_one_and_strength_zero_leave_the_image_unchanged() -> None:
    x = images(6)
    orders = torch.tensor([list(p) for p in itertools.permutations(range(3))])
    assert torch.allclose(jitter_with(x, torch.ones(6, 3), orders), x, atol=1e-6)
    off = JitterStrengths(0.0, 0.0, 0.0)
    assert torch.allclose(colour_jitter(x, off, torch.Generator().manual_seed(0)), x, atol=1e-6)


def test_the_adjustments_run_in_each_images_own_order() -> None:
    x = images(6)
    factors = torch.tensor([[0.7, 1.3, 0.5]]).repeat(6, 1)
    orders = torch.tensor([list(p) for p in itertools.permutations(range(3))])
    out = jitter_with(x, factors, orders)
    for i, order in enumerate(orders.tolist()):
        one = x[i : i + 1]
        for which in order:
            one = adjust(one, which, factors[i : i + 1, which])
        assert torch.allclose(out[i], one[0], atol=1e-6), order
    assert not torch.allclose(out[0], jitter_with(x[:1], factors[:1], orders[5:6])[0])


def test_factors_stay_in_range_and_every_order_occurs() -> None:
    strengths = JitterStrengths(brightness=0.4, contrast=1.5, saturation=0.1)
    factors, orders = sample_jitter(3000, strengths, torch.Generator().manual_seed(2))
    low = torch.tensor([0.6, 0.0, 0.9])
    high = torch.tensor([1.4, 2.5, 1.1])
    assert ((factors >= low) & (factors <= high)).all()
    assert ((factors.amin(0) - low).abs() < 0.01).all() and ((high - factors.amax(0)) < 0.01).all()
    assert torch.equal(orders.sort(1).values, torch.arange(3).expand(3000, 3))
    assert len({tuple(o) for o in orders.tolist()}) == 6


def test_a_grey_image_keeps_its_one_channel_and_its_saturation() -> None:
    x = images(4, channels=1)
    assert torch.equal(adjust(x, 2, torch.full((4,), 0.3)), x)
    mean = x.double().mean(dim=(1, 2, 3), keepdim=True)
    out = adjust(x, 1, torch.full((4,), 0.5))
    assert torch.allclose(out.double(), (0.5 * x.double() + 0.5 * mean).clamp(0, 1), atol=1e-6)
    assert colour_jitter(x, JitterStrengths(), torch.Generator()).shape == x.shape


# --- seeding, resume and splits -----------------------------------------------------------


def natural_pools() -> dict[str, ImageClasses]:
    """RGB pools of 4 classes x 6 images of 8x8 per split (uint8, random content)."""
    pixels = torch.randint(0, 256, (12, 6, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    images_u8 = pixels.to(torch.uint8)
    names = [f"c{c}" for c in range(12)]
    return {
        split: ImageClasses(images_u8, range(4 * k, 4 * k + 4), names[4 * k : 4 * k + 4])
        for k, split in enumerate(("train", "val", "test"))
    }


@pytest.mark.parametrize("kind", list(STEPS))
def test_same_seed_same_episode_next_episode_different_labels_kept(kind: str) -> None:
    plain = NWayKShot(natural_pools()["train"], ways=3, shots=2, queries=2)
    augmented = AugmentedTasks(plain, padding=2, steps=STEPS[kind])
    first = augmented.sample(torch.Generator().manual_seed(5))
    again = augmented.sample(torch.Generator().manual_seed(5))
    base = plain.sample(torch.Generator().manual_seed(5))
    for name in ("support_x", "query_x"):
        assert torch.equal(getattr(first, name), getattr(again, name))
        assert not torch.equal(getattr(first, name), getattr(base, name)), name  # both sets
    assert torch.equal(first.support_y, base.support_y) and torch.equal(first.query_y, base.query_y)
    generator = torch.Generator().manual_seed(5)
    one, two = augmented.sample(generator), augmented.sample(generator)
    assert not torch.equal(one.query_x, two.query_x)


def test_a_resumed_stream_draws_the_same_augmented_episodes() -> None:
    source = AugmentedTasks(
        NWayKShot(natural_pools()["train"], ways=2, shots=1, queries=2), 2,
        STEPS["crop_flip_jitter"],
    )  # fmt: skip
    stream = iter(TrainEpisodes(source, meta_batch=2, seed=7))
    uninterrupted = [next(stream) for _ in range(4)]
    resumed = next(iter(TrainEpisodes(source, meta_batch=2, seed=7, start_batch=3)))
    assert torch.equal(resumed.support_x, uninterrupted[3].support_x)
    assert torch.equal(resumed.query_x, uninterrupted[3].query_x)
    assert not torch.equal(uninterrupted[2].query_x, uninterrupted[3].query_x)


def natural_cfg(monkeypatch: pytest.MonkeyPatch, augment: object, name: str = "miniimagenet"):
    cfg = OmegaConf.load(CONF / "dataset" / f"{name}.yaml")
    cfg.augment, cfg.ways, cfg.shots, cfg.queries, cfg.crop_padding = augment, 3, 1, 2, 2
    monkeypatch.setattr(datamodule, "load_pools", lambda _: natural_pools())
    return cfg


@pytest.mark.parametrize("kind", list(STEPS))
def test_only_training_episodes_are_augmented(monkeypatch, kind: str) -> None:
    plain = datamodule.build_sources(natural_cfg(monkeypatch, False))
    augmented = datamodule.build_sources(natural_cfg(monkeypatch, kind))
    assert isinstance(augmented["train"], AugmentedTasks)
    assert augmented["train"].steps == STEPS[kind]
    for split in ("val", "test"):
        assert augmented[split] is not None and not isinstance(augmented[split], AugmentedTasks)
        a, b = (s[split].sample(torch.Generator().manual_seed(9)) for s in (plain, augmented))
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    a, b = (s["train"].sample(torch.Generator().manual_seed(9)) for s in (plain, augmented))
    assert not torch.equal(a.query_x, b.query_x)


@pytest.mark.parametrize("name", NATURAL)
def test_natural_data_sets_keep_augmentation_off_and_the_papers_jitter_ready(name: str) -> None:
    cfg = OmegaConf.load(CONF / "dataset" / f"{name}.yaml")
    assert cfg.augment is False
    assert JitterStrengths.from_config(cfg.jitter) == JitterStrengths(0.4, 0.4, 0.4)


# --- the config switch --------------------------------------------------------------------


def test_every_kind_passes_the_config_check_and_the_schema_lists_them() -> None:
    for kind in KINDS:
        check_config(compose_train("dataset=cifar_fs", "model=conv4", f"dataset.augment={kind}"))
    assert augmentation_kind(True) == "crop_flip" and augmentation_kind(False) is None


def test_a_bad_augment_value_is_refused_naming_the_new_choices() -> None:
    cfg = compose_train("dataset=cifar_fs", "model=conv4", "dataset.augment=crop_jitter")
    with pytest.raises(ConfigError, match=r"^dataset\.augment='crop_jitter': .*crop_flip_jitter"):
        check_config(cfg)
    with pytest.raises(ConfigError, match=r"crop_flip_jitter \(\+ colour jitter\), crop, flip"):
        augmentation_kind("crop_jitter")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.jitter.brightness=-0.1", r"^dataset\.jitter\.brightness=-0\.1: expected a num"),
        ("dataset.jitter.contrast=abc", r"^dataset\.jitter\.contrast='abc': it is text"),
        ("+dataset.jitter.hue=0.1", r"^dataset\.jitter\.hue is not a setting of the colour jit"),
    ],
)
def test_bad_jitter_settings_are_refused(override: str, message: str) -> None:
    cfg = compose_train(
        "dataset=cifar_fs", "model=conv4", "dataset.augment=crop_flip_jitter", override
    )
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_bad_jitter_settings_are_refused_before_any_image_is_decoded(monkeypatch) -> None:
    cfg = natural_cfg(monkeypatch, "jitter")
    cfg.jitter.saturation = -1
    monkeypatch.setattr(datamodule, "load_pools", lambda _: pytest.fail("decoded first"))
    with pytest.raises(ConfigError, match=r"dataset\.jitter\.saturation=-1: set it to a number"):
        datamodule.build_sources(cfg)
    cfg.augment = "crop_flip"  # the jitter settings do not matter when jitter is off
    assert augmentation(cfg) is not None


# --- end to end ---------------------------------------------------------------------------


def test_metalab_train_with_crop_flip_jitter_on_a_generated_image_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "my_images", [5, 6, 7, 8, 5, 6, 7, 8, 5, 6])
    run = train_run(
        tmp_path, "debug=tiny", "dataset=imagefolder", f"dataset.root={root}",
        "algorithm=protonet", "model=conv4", "model.channels=8", "dataset.image_size=16",
        "dataset.ways=2", "dataset.shots=1", "dataset.queries=2",
        "dataset.augment=crop_flip_jitter", "dataset.crop_padding=2",
        "dataset.jitter.brightness=0.2",
    )  # fmt: skip
    results = read_results(run)
    assert results["status"] == "completed"
    assert results["config"]["dataset"]["augment"] == "crop_flip_jitter"
    assert results["config"]["dataset"]["jitter"]["brightness"] == 0.2
    assert 0.0 <= results["metrics"]["test/acc"]["mean"] <= 1.0
