"""Koch et al. 2015's affine distortions (dataset.augment=koch): the geometry, the ranges, the
seeding, that only training episodes are distorted, the config switch and the Siamese presets."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import metalab.data.datamodule as datamodule
from metalab.data.affine import (
    COMPONENTS,
    IDENTITY,
    AffineRanges,
    DistortedTasks,
    affine_distort,
    distort,
    forward_maps,
    sample_parameters,
)
from metalab.data.augment import AugmentedTasks, augmentation_kind
from metalab.data.episodes import NWayKShot
from metalab.data.omniglot import OmniglotClasses
from metalab.errors import ConfigError
from metalab.preflight import check_config
from tests.helpers.configs import compose_train
from tests.helpers.paths import CONF

OMNIGLOT = Path(os.environ.get("METALAB_DATA", "/nonexistent")) / "omniglot"
SIAMESE = sorted(p.stem for p in (CONF / "experiment").glob("siamese_*.yaml"))


def identity(n: int = 1) -> torch.Tensor:
    return torch.tensor([IDENTITY] * n, dtype=torch.float64)


def with_(component: str, value: float, params: torch.Tensor | None = None) -> torch.Tensor:
    params = identity() if params is None else params.clone()
    params[:, COMPONENTS.index(component)] = value
    return params


# --- the geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(105, 105), (12, 20)])
def test_identity_parameters_give_back_the_image(shape: tuple[int, int]) -> None:
    images = torch.rand(3, 2, *shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(distort(images, identity(3)), images, atol=1e-5)


def test_a_quarter_turn_moves_a_pixel_clockwise_about_the_centre() -> None:
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 6] = 1.0  # two pixels right of the centre (4, 4)
    out = distort(image, with_("theta", 90.0))
    assert out[0, 0].nonzero().tolist() == [[6, 4]]  # two pixels below it (y points down)
    assert out.max().item() == pytest.approx(1.0, abs=1e-5)


def test_a_translation_moves_a_pixel_by_t_x_columns_and_t_y_rows() -> None:
    image = torch.zeros(1, 1, 7, 11)  # not square: x and y must not be mixed up
    image[0, 0, 3, 5] = 1.0
    out = distort(image, with_("t_y", -2.0, with_("t_x", 3.0)))
    assert out[0, 0].nonzero().tolist() == [[1, 8]]
    assert out.max().item() == pytest.approx(1.0, abs=1e-5)


def test_the_outside_is_filled_with_the_background_0() -> None:
    image = torch.zeros(1, 1, 10, 10)
    image[0, 0, :, 5:] = 1.0  # ink on the right half
    out = distort(image, with_("t_x", -5.0))  # moved left: the right half reads outside
    assert out[0, 0, :, :5].min().item() == pytest.approx(1.0, abs=1e-5)
    assert out[0, 0, :, 5:].abs().max().item() < 1e-6


# --- the ranges ---------------------------------------------------------------------------


def test_koch_defaults_are_the_papers_values() -> None:
    assert AffineRanges().bounds().tolist() == [
        [-10.0, 10.0], [-0.3, 0.3], [-0.3, 0.3], [0.8, 1.2], [0.8, 1.2], [-2.0, 2.0], [-2.0, 2.0],
    ]  # fmt: skip
    assert AffineRanges().probability == 0.5
    assert AffineRanges.from_config(OmegaConf.load(CONF / "dataset" / "omniglot.yaml").affine) == (
        AffineRanges()
    )


def test_sampled_parameters_stay_in_range_and_each_is_kept_with_probability_one_half() -> None:
    params = sample_parameters(4000, AffineRanges(), torch.Generator().manual_seed(0))
    bounds = AffineRanges().bounds()
    assert ((params >= bounds[:, 0]) & (params <= bounds[:, 1])).all()
    kept = (params != identity()).double().mean(0)
    assert ((kept - 0.5).abs() < 0.03).all(), kept
    never = sample_parameters(50, AffineRanges(probability=0.0), torch.Generator())
    always = sample_parameters(50, AffineRanges(probability=1.0), torch.Generator())
    assert torch.equal(never, identity(50)) and (always != identity()).all()


def blob(size: int, row: float, col: float, sigma: float = 2.0) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2)).float()


def centroid(image: torch.Tensor) -> torch.Tensor:
    """(x, y) = (column, row) of an image's mass."""
    rows, cols = torch.meshgrid(
        torch.arange(image.shape[0]), torch.arange(image.shape[1]), indexing="ij"
    )
    return torch.stack([(cols * image).sum(), (rows * image).sum()]).double() / image.sum()


def test_the_distortion_recovered_from_an_image_is_the_sampled_one_and_in_range() -> None:
    """Three blobs (at the centre, 25 px right, 25 px down) locate A and t in each output."""
    size, arm = 105, 25.0
    centre = (size - 1) / 2
    spots = [(centre, centre), (centre, centre + arm), (centre + arm, centre)]
    images = torch.stack([blob(size, row, col) for row, col in spots]).unsqueeze(1)
    generator = torch.Generator().manual_seed(3)
    ranges = AffineRanges(probability=1.0)  # every component drawn: the widest maps
    bounds = ranges.bounds()
    for _ in range(12):
        params = sample_parameters(1, ranges, generator)
        assert ((params >= bounds[:, 0]) & (params <= bounds[:, 1])).all()
        out = distort(images, params.expand(3, -1))[:, 0]
        origin, right, down = (centroid(image) - centre for image in out)
        matrix, shift = forward_maps(params)
        recovered = torch.stack([(right - origin) / arm, (down - origin) / arm], -1)
        assert torch.allclose(origin, shift[0], atol=0.05), (origin, shift)
        assert torch.allclose(recovered, matrix[0], atol=0.005), (recovered, matrix)


def test_a_drawing_stays_inside_the_box_the_ranges_allow() -> None:
    """A centred 21x21 square under any Koch distortion reaches at most
    max_scale * (1 + shear) * sqrt(2) * 10 + translation pixels from the centre."""
    image = torch.zeros(64, 1, 105, 105)
    image[:, :, 42:63, 42:63] = 1.0
    out = affine_distort(image, AffineRanges(), torch.Generator().manual_seed(1))
    reach = 1.2 * 1.3 * math.sqrt(2) * 10.5 + 2 + 1  # + 1: bilinear spreads one pixel
    ink = (out[:, 0] > 1e-6).nonzero()[:, 1:].double()
    assert (ink - 52).abs().max().item() <= reach
    moved = (out - image).flatten(1).abs().amax(1) > 1e-3
    assert moved.float().mean() > 0.9  # only the rare all-identity draw leaves it in place


# --- seeding and splits -------------------------------------------------------------------


def tiny_pools(size: int = 16) -> dict[str, OmniglotClasses]:
    """Omniglot-like pools (uint8, ink 255 on 0) of 6 characters x 20 drawings per split."""
    images = torch.zeros(18, 20, size, size, dtype=torch.uint8)
    for character in range(18):
        images[character, :, 4:12, 4 + character % 6 : 6 + character % 6] = 255

    def pool(characters: range) -> OmniglotClasses:
        classes = torch.tensor([[c, 0] for c in characters])
        return OmniglotClasses(images, classes, [f"c{c}" for c in characters])

    return {"train": pool(range(6)), "val": pool(range(6, 12)), "test": pool(range(12, 18))}


def test_same_seed_gives_the_same_distorted_task_and_another_seed_another() -> None:
    plain = NWayKShot(tiny_pools()["train"], ways=3, shots=1, queries=2)
    distorted = DistortedTasks(plain, AffineRanges())
    first = distorted.sample(torch.Generator().manual_seed(5))
    again = distorted.sample(torch.Generator().manual_seed(5))
    other = distorted.sample(torch.Generator().manual_seed(6))
    unaugmented = plain.sample(torch.Generator().manual_seed(5))
    assert torch.equal(first.support_x, again.support_x)
    assert torch.equal(first.query_x, again.query_x)
    assert not torch.equal(first.query_x, other.query_x)
    assert torch.equal(first.query_y, unaugmented.query_y)  # same classes, same labels
    assert not torch.equal(first.query_x, unaugmented.query_x)


def omniglot_cfg(monkeypatch: pytest.MonkeyPatch, augment: object):
    cfg = OmegaConf.load(CONF / "dataset" / "omniglot.yaml")
    cfg.augment, cfg.ways, cfg.queries = augment, 3, 2
    monkeypatch.setattr(datamodule, "load_pools", lambda _: tiny_pools())
    return cfg


def test_only_the_training_split_is_distorted(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = datamodule.build_sources(omniglot_cfg(monkeypatch, False))
    koch = datamodule.build_sources(omniglot_cfg(monkeypatch, "koch"))
    assert isinstance(koch["train"], DistortedTasks) and koch["train"].ranges == AffineRanges()
    for split in ("val", "test"):
        assert isinstance(koch[split], NWayKShot)
        a, b = (s[split].sample(torch.Generator().manual_seed(9)) for s in (plain, koch))
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    a, b = (s["train"].sample(torch.Generator().manual_seed(9)) for s in (plain, koch))
    assert not torch.equal(a.query_x, b.query_x)


def test_true_still_means_crop_and_flip(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (True, "crop_flip"):
        train = datamodule.build_sources(omniglot_cfg(monkeypatch, value))["train"]
        assert isinstance(train, AugmentedTasks) and train.padding == 2
    assert augmentation_kind(False) is None and augmentation_kind(None) is None


# --- the config switch --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["kock", "affine", "1", "yes"])
def test_a_bad_augment_value_is_refused_naming_the_choices(value: str) -> None:
    cfg = compose_train("experiment=siamese_omniglot_5w1s", f"dataset.augment={value}")
    choices = r"expected one of false, true, crop_flip, crop_flip_jitter, crop, flip, jitter, koch"
    with pytest.raises(
        ConfigError, match=rf"^dataset\.augment=.*: it is not one of the choices; {choices}"
    ):
        check_config(cfg)


def test_a_bad_value_is_refused_before_any_image_is_decoded(monkeypatch) -> None:
    cfg = omniglot_cfg(monkeypatch, "kock")
    monkeypatch.setattr(datamodule, "load_pools", lambda _: pytest.fail("decoded first"))
    with pytest.raises(ConfigError, match="dataset.augment='kock' is not an augmentation"):
        datamodule.build_sources(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.affine.scale=[1.2,0.8]", r"dataset.affine.scale=\[1.2, 0.8\]: set it to "),
        ("dataset.affine.rotation=-5", r"dataset.affine.rotation=-5: expected a number >= 0 and "),
        (
            "dataset.affine.shear=1.5",
            r"dataset.affine.shear=1.5: expected a number >= 0 and",
        ),
        ("dataset.affine.probability=2", r"dataset.affine.probability=2: expected a number >= 0"),
        ("dataset.affine.rotation=abc", r"dataset.affine.rotation='abc': it is text, not a number"),
        ("+dataset.affine.zoom=2", r"dataset.affine.zoom is not a setting of the affine"),
    ],
)
def test_bad_affine_settings_are_refused(override: str, message: str) -> None:
    cfg = compose_train("experiment=siamese_omniglot_5w1s", override)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


# --- the Siamese presets ------------------------------------------------------------------


def test_every_siamese_preset_distorts_its_training_images() -> None:
    assert SIAMESE == [
        "siamese_koch_omniglot", "siamese_omniglot_20w1s", "siamese_omniglot_20w5s",
        "siamese_omniglot_5w1s", "siamese_omniglot_5w5s",
    ]  # fmt: skip
    for preset in SIAMESE:
        cfg = compose_train(f"experiment={preset}")
        check_config(cfg)
        assert cfg.dataset.augment == "koch"
        ranges = AffineRanges.from_config(cfg.dataset.affine)
        koch_size = cfg.dataset.image_size == 105
        assert ranges == AffineRanges(translation=2.0 if koch_size else 0.5), preset


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("preset", SIAMESE)
def test_siamese_presets_train_two_steps_with_distortions(
    preset, tmp_path_factory, one_thread
) -> None:
    from tests.helpers.configs import shared_root, small, small_run

    if not OMNIGLOT.is_dir():
        pytest.skip("set METALAB_DATA to the folder holding omniglot/")
    cfg = small(preset)
    assert cfg.dataset.augment == "koch"
    # the same two-step run as tests/configs/test_presets_run.py's: trained once for both
    run = small_run(preset, shared_root(tmp_path_factory), cfg)
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and results["train"]["steps"] == 2
    assert results["config"]["dataset"]["augment"] == "koch"
