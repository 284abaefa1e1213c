"""mini-ImageNet from tiny copies in both real on-disk forms, and the training augmentation.

The fixtures use the real names and formats (``train.csv``/``val.csv``/``test.csv`` with the
header ``filename,label`` and ``images/n<wnid><number>.jpg``; ``mini-imagenet-cache-<part>.pkl``
holding ``image_data`` uint8 [N, 84, 84, 3] and ``class_dict``) with 3 / 2 / 2 classes of 4
images (``CLASSES`` and ``IMAGES_PER_CLASS`` patched). Every image is one flat colour whose red
channel encodes its class, so class membership survives JPEG and can be checked exactly.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from metalab.data import miniimagenet
from metalab.data.augment import AugmentedTasks, crop_and_flip
from metalab.data.datamodule import build_sources
from metalab.data.episodes import NWayKShot
from metalab.data.miniimagenet import load_miniimagenet
from metalab.errors import ConfigError, DataError
from tests.helpers.fake_miniimagenet import (
    CLASS_ID,
    PER_CLASS,
    TINY,
    WNIDS,
    csv_root,
    jpeg,
    pickle_blob,
    pickle_root,
    pixels,
)
from tests.helpers.paths import CONF

PUBLISHED = (dict(miniimagenet.CLASSES), miniimagenet.IMAGES_PER_CLASS)  # before any patching


@pytest.fixture(autouse=True)
def _tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setattr(miniimagenet, "CLASSES", TINY)
    monkeypatch.setattr(miniimagenet, "IMAGES_PER_CLASS", PER_CLASS)


def load(root: Path, tmp_path: Path, **kwargs) -> dict:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    return load_miniimagenet(root, **kwargs)


def class_of(x: torch.Tensor) -> list[int]:
    """The class id encoded in the red channel of each image of [n, 3, H, W]."""
    return ((x[:, 0].mean(dim=(-2, -1)) * 255 - 10) / 20).round().long().tolist()


# --- both forms -------------------------------------------------------------------------------


def test_the_loader_expects_ravi_and_larochelles_split_sizes() -> None:
    assert PUBLISHED == ({"train": 64, "val": 16, "test": 20}, 600)
    assert (miniimagenet.SIDE, miniimagenet.PARTS) == (84, ("train", "val", "test"))


@pytest.mark.parametrize("form", ["csv", "pickle", "images.zip"])
def test_each_form_gives_the_split_classes_and_images(tmp_path: Path, form: str) -> None:
    root = pickle_root(tmp_path) if form == "pickle" else csv_root(tmp_path, form == "images.zip")
    pools = load(root, tmp_path)
    for part, wnids in WNIDS.items():
        pool = pools[part]
        assert pool.class_names == wnids and pool.examples_per_class == PER_CLASS
        assert pool.images.shape == (len(wnids), PER_CLASS, 3, 84, 84)
        for index, wnid in enumerate(wnids):
            x = pool.examples(index, torch.arange(PER_CLASS))
            assert x.shape == (PER_CLASS, 3, 84, 84) and x.dtype == torch.float32
            assert class_of(x) == [CLASS_ID[wnid]] * PER_CLASS
            greens = (x[:, 1].mean(dim=(-2, -1)) * 255).tolist()
            assert greens == pytest.approx([50, 80, 110, 140], abs=2)  # file order kept


def test_the_cache_holds_uint8_tensors_per_split(tmp_path: Path) -> None:
    load(pickle_root(tmp_path), tmp_path)
    paths = sorted((tmp_path / "cache").glob("miniimagenet-pickle-*.pt"))
    assert [p.name.split("-")[2] for p in paths] == ["test", "train", "val"]
    for path in paths:
        images = torch.load(path, weights_only=True)["images"]
        assert images.dtype == torch.uint8 and images.shape[1:] == (PER_CLASS, 3, 84, 84)


def test_every_episode_draws_only_classes_of_its_split(tmp_path: Path) -> None:
    pools = load(csv_root(tmp_path), tmp_path)
    generator = torch.Generator().manual_seed(0)
    for part, pool in pools.items():
        allowed = {CLASS_ID[w] for w in WNIDS[part]}
        episodes = NWayKShot(pool, ways=2, shots=1, queries=2)
        for _ in range(10):
            task = episodes.sample(generator)
            support, query = class_of(task.support_x), class_of(task.query_x)
            assert set(support) <= allowed and set(query) <= allowed and len(set(support)) == 2
            assert [support[y] for y in task.query_y.tolist()] == query


def test_auto_prefers_the_pickles_and_source_can_force_the_csvs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pickle_root(csv_root(tmp_path).parent)
    monkeypatch.setattr(miniimagenet, "_from_csv", _must_not_decode)
    assert load(root, tmp_path)["val"].num_classes == 2
    monkeypatch.undo()
    monkeypatch.setattr(miniimagenet, "_from_pickle", _must_not_decode)
    monkeypatch.setattr(miniimagenet, "CLASSES", TINY)
    monkeypatch.setattr(miniimagenet, "IMAGES_PER_CLASS", PER_CLASS)
    assert load(root, tmp_path, source="csv")["val"].num_classes == 2


def _must_not_decode(*args: object) -> None:
    raise AssertionError("decoded although it should not have been")


def test_second_load_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = csv_root(tmp_path)
    first = load(root, tmp_path)["train"].images
    monkeypatch.setattr(miniimagenet, "_from_csv", _must_not_decode)
    assert torch.equal(load(root, tmp_path)["train"].images, first)


def test_image_size_shrinks_the_images(tmp_path: Path) -> None:
    pools = load(pickle_root(tmp_path), tmp_path, image_size=20)
    x = pools["test"].examples(1, torch.arange(2))
    assert x.shape == (2, 3, 20, 20) and class_of(x) == [CLASS_ID[WNIDS["test"][1]]] * 2


# --- errors -----------------------------------------------------------------------------------


def test_missing_root_says_which_files_go_where(tmp_path: Path) -> None:
    root = tmp_path / "data" / "miniimagenet"
    with pytest.raises(DataError) as caught:
        load_miniimagenet(root)
    message = str(caught.value)
    for words in (str(root), "dataset.root", "METALAB_DATA", "train.csv", "images/",
                  "mini-imagenet-cache-train.pkl"):  # fmt: skip
        assert words in message
    assert "download" not in message  # there is no official download to offer


def test_an_empty_root_names_both_forms(tmp_path: Path) -> None:
    root = tmp_path / "miniimagenet"
    root.mkdir()
    (root / "README").write_text("todo")
    with pytest.raises(DataError) as caught:
        load(root, tmp_path)
    message = str(caught.value)
    assert "holds neither form of mini-ImageNet (it has ['README'])" in message
    assert "has no official download" in message and "filename,label" in message


@pytest.mark.parametrize(("source", "missing"), [("csv", "train.csv"), ("pickle", "cache-val")])
def test_a_forced_source_that_is_absent_is_named(tmp_path: Path, source, missing) -> None:
    root = pickle_root(tmp_path) if source == "csv" else csv_root(tmp_path)
    with pytest.raises(DataError, match=f"dataset.source={source} but .*{missing}"):
        load(root, tmp_path, source=source)


def test_unknown_source_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set dataset.source to one of auto, csv, pickle"):
        load_miniimagenet(tmp_path, source="h5")


def test_a_class_in_two_splits_is_refused(tmp_path: Path) -> None:
    blobs = {"test": pickle_blob("val")}
    with pytest.raises(DataError, match="Class n01855672 is in both the val and the test split"):
        load(pickle_root(tmp_path, blobs), tmp_path)


def test_a_split_with_the_wrong_number_of_classes_is_refused(tmp_path: Path) -> None:
    blob = pickle_blob("train")
    del blob["class_dict"]["n01704323"]
    with pytest.raises(DataError) as caught:
        load(pickle_root(tmp_path, {"train": blob}), tmp_path)
    message = str(caught.value)
    assert "mini-imagenet-cache-train.pkl has 2 classes of 4 images, not the 3 classes" in message
    assert "Ravi & Larochelle's train split" in message


def test_a_class_with_missing_images_is_named(tmp_path: Path) -> None:
    root = csv_root(tmp_path)
    lines = (root / "val.csv").read_text().splitlines()
    (root / "val.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"val.csv lists classes with other than 4 images: "):
        load(root, tmp_path)


def test_a_csv_without_the_header_is_refused(tmp_path: Path) -> None:
    root = csv_root(tmp_path)
    lines = (root / "test.csv").read_text().splitlines()
    (root / "test.csv").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match="not the header filename,label"):
        load(root, tmp_path)


def test_a_listed_image_that_is_missing_is_named(tmp_path: Path) -> None:
    root = csv_root(tmp_path)
    (root / "images" / "n0153282900000003.jpg").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) listed in .*train.csv are not in .*images"):
        load(root, tmp_path)


def test_a_file_that_is_not_an_image_is_named(tmp_path: Path) -> None:
    root = csv_root(tmp_path)
    (root / "images" / "n0185567200000002.jpg").write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(DataError) as caught:
        load(root, tmp_path)
    assert "images/n0185567200000002.jpg is not a readable image" in str(caught.value)
    assert "has no official download" in str(caught.value)


def test_images_of_another_size_are_resized_to_84(tmp_path: Path) -> None:
    root = csv_root(tmp_path)
    big = np.broadcast_to(pixels("n01930112", 1)[:1, :1], (100, 120, 3)).copy()
    (root / "images" / "n0193011200000001.jpg").write_bytes(jpeg(big))
    x = load(root, tmp_path)["test"].examples(0, torch.tensor([0]))
    assert x.shape == (1, 3, 84, 84) and class_of(x) == [CLASS_ID["n01930112"]]


def test_a_zip_slip_entry_in_images_zip_is_refused(tmp_path: Path) -> None:
    root = csv_root(tmp_path, images_zip=True)
    with zipfile.ZipFile(root / "images.zip", "a") as archive:
        archive.writestr("../../escape.jpg", b"x")
    with pytest.raises(DataError, match=r"'../../escape.jpg', which points outside"):
        load(root, tmp_path)
    assert not list(tmp_path.rglob("escape.jpg"))


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        ({"image_data": np.zeros((12, 84, 84), np.uint8), "class_dict": {}}, "not uint8 [N, 84"),
        ({"images": np.zeros((12, 84, 84, 3), np.uint8)}, "lacks the key(s) image_data"),
        ([1, 2, 3], "holds a list, not the expected dict"),
    ],
)
def test_a_pickle_of_another_layout_is_refused(tmp_path: Path, blob, message) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        load(pickle_root(tmp_path, {"val": blob}), tmp_path)


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (exec, ("import os",))

    with pytest.raises(DataError, match=r"refused as a data pickle \(it asks for builtins.exec"):
        load(pickle_root(tmp_path, {"test": Exploit()}), tmp_path)


def test_a_corrupt_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = pickle_root(tmp_path)
    expected = load(root, tmp_path)["val"].images.clone()
    for path in (tmp_path / "cache").glob("*.pt"):
        path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert torch.equal(load(root, tmp_path)["val"].images, expected)
    assert "The mini-ImageNet cache" in caplog.text and "rebuilding it" in caplog.text


# --- augmentation -----------------------------------------------------------------------------


def test_crop_and_flip_moves_content_by_at_most_the_padding() -> None:
    images = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    out = crop_and_flip(images, 2, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and not torch.equal(out, images)
    for original, augmented in zip(images, out, strict=True):
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        windows = [padded[:, r : r + 12, c : c + 12] for r in range(5) for c in range(5)]
        assert any(torch.equal(augmented, w) or torch.equal(augmented, w.flip(-1)) for w in windows)


def test_augmented_episodes_are_a_function_of_the_episode_seed(tmp_path: Path) -> None:
    pools = load(pickle_root(tmp_path), tmp_path)
    plain = NWayKShot(pools["train"], ways=3, shots=1, queries=1)
    augmented = AugmentedTasks(plain, padding=8)
    first = augmented.sample(torch.Generator().manual_seed(5))
    again = augmented.sample(torch.Generator().manual_seed(5))
    other = augmented.sample(torch.Generator().manual_seed(6))
    unaugmented = plain.sample(torch.Generator().manual_seed(5))
    assert torch.equal(first.support_x, again.support_x)
    assert torch.equal(first.query_x, again.query_x)
    assert not torch.equal(first.support_x, other.support_x)
    assert torch.equal(first.support_y, unaugmented.support_y)  # same classes, same labels
    assert class_of(first.support_x[:, :, 20:60, 20:60]) == class_of(unaugmented.support_x)
    assert not torch.equal(first.support_x, unaugmented.support_x)


def test_the_switch_augments_only_the_training_split(tmp_path: Path) -> None:
    cfg = OmegaConf.load(CONF / "dataset" / "miniimagenet.yaml")
    root = pickle_root(tmp_path)
    cfg.root, cfg.cache_dir, cfg.ways, cfg.queries = str(root), str(tmp_path / "cache"), 2, 2
    assert build_sources(cfg)["train"].__class__ is NWayKShot  # off by default
    cfg.augment = True
    sources = build_sources(cfg)
    assert isinstance(sources["train"], AugmentedTasks) and sources["train"].padding == 8
    assert isinstance(sources["val"], NWayKShot) and isinstance(sources["test"], NWayKShot)


def test_a_negative_padding_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dataset.crop_padding=-1: set it to a whole number"):
        AugmentedTasks(NWayKShot.__new__(NWayKShot), -1)
