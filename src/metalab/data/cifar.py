"""CIFAR-FS and FC100: few-shot splits of CIFAR-100, built from the official python pickles.

Why it looks like this:

- Source: the official ``cifar-100-python.tar.gz`` (read without extracting) or the extracted
  ``cifar-100-python/{train,test,meta}`` beside it. Train and test images of a class are pooled
  (500 + 100 = 600 per class), as both benchmarks do.
- All 100 classes are decoded once into one uint8 tensor ``[100, 600, 3, 32, 32]`` (cached like
  Omniglot's); a split is a list of rows of it.
- The splits are carried here, not downloaded. Sources:
  CIFAR-FS (Bertinetto et al., "Meta-learning with differentiable closed-form solvers", ICLR
  2019): the class lists of the authors' ``cifar100/splits/bertinetto/{train,val,test}.txt``,
  64 / 16 / 20 classes, as reproduced in torchmeta's ``datasets/assets/cifar100/cifar-fs``.
  FC100 (Oreshkin et al., "TADAM", NeurIPS 2018): superclasses 12 / 4 / 4 (coarse labels
  1,2,3,4,5,6,9,10,15,17,18,19 / 8,11,13,16 / 0,7,12,14; 60 / 20 / 20 classes), as in the
  authors' code and torchmeta's ``datasets/assets/cifar100/fc100``.
  The superclass table is CIFAR-100's own (Krizhevsky 2009); a copy whose labels disagree with
  it is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from metalab.data import download as net
from metalab.data.archives import open_tree
from metalab.data.cache import TensorCache, cache_folder, fingerprint
from metalab.data.pickles import load_pickle, require, text_keys
from metalab.data.pools import ImageClasses, check_image_size, resize_images
from metalab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FOLDER = "cifar-100-python"
ARCHIVE = "cifar-100-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
SIDE = 32
IMAGES_PER_CLASS = 600
CACHE_FORMAT = 1
BENCHMARKS = ("cifar_fs", "fc100")
PARTS = ("train", "val", "test")

# CIFAR-100's superclasses (coarse labels, alphabetical = label order) and their classes.
# fmt: off
SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

CIFAR_FS: dict[str, tuple[str, ...]] = {
    "train": (
        "dolphin", "seal", "aquarium_fish", "ray", "trout", "orchid", "sunflower", "tulip",
        "bottle", "bowl", "can", "cup", "plate", "apple", "mushroom", "orange", "pear", "clock",
        "keyboard", "chair", "couch", "bee", "caterpillar", "cockroach", "bear", "lion", "tiger",
        "wolf", "bridge", "castle", "house", "road", "skyscraper", "cloud", "forest", "mountain",
        "elephant", "kangaroo", "porcupine", "possum", "raccoon", "skunk", "lobster", "spider",
        "boy", "girl", "dinosaur", "lizard", "snake", "turtle", "hamster", "mouse", "rabbit",
        "shrew", "squirrel", "oak_tree", "palm_tree", "pine_tree", "willow_tree", "bus", "train",
        "lawn_mower", "streetcar", "tank",
    ),
    "val": (
        "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly",
        "sea", "camel", "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
    ),
    "test": (
        "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe",
        "leopard", "plain", "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman",
        "bicycle", "pickup_truck", "rocket",
    ),
}

FC100: dict[str, tuple[str, ...]] = {
    "train": (
        "fish", "flowers", "food_containers", "fruit_and_vegetables",
        "household_electrical_devices", "household_furniture", "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes", "reptiles", "trees", "vehicles_1", "vehicles_2",
    ),
    "val": (
        "large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates",
        "small_mammals",
    ),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}
# fmt: on

FINE_NAMES = sorted(c for classes in SUPERCLASSES.values() for c in classes)

_FIX = (
    f"set dataset.download=true to fetch the official {ARCHIVE}, or put it (or the extracted "
    f"{FOLDER}/ with train, test and meta) into dataset.root"
)


def split_classes(benchmark: str) -> dict[str, list[str]]:
    """Class names of each part of a benchmark, in a fixed order."""
    if benchmark == "cifar_fs":
        return {part: list(CIFAR_FS[part]) for part in PARTS}
    if benchmark == "fc100":
        return {
            part: [c for superclass in FC100[part] for c in SUPERCLASSES[superclass]]
            for part in PARTS
        }
    raise ConfigError(f"Unknown CIFAR-100 benchmark {benchmark!r}: choose one of {BENCHMARKS}.")


def load_cifar(
    benchmark: str,
    root: str | os.PathLike[str],
    image_size: int = SIDE,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> dict[str, ImageClasses]:
    """CIFAR-FS (``benchmark="cifar_fs"``) or FC100 (``"fc100"``) as train/val/test pools."""
    parts = split_classes(benchmark)
    size = check_image_size(image_size, SIDE)
    holds = f"{ARCHIVE} or {FOLDER}/"
    root = net.data_root(Path(root).expanduser(), download, "CIFAR-100", holds)
    images = _all_classes(root, size, cache_folder(cache_dir), download)
    row = {name: i for i, name in enumerate(FINE_NAMES)}
    return {
        part: ImageClasses(images, [row[c] for c in names], names) for part, names in parts.items()
    }


def _find_source(root: Path) -> Path | None:
    for candidate in (root / FOLDER, root / ARCHIVE):
        if candidate.exists():
            return candidate
    return None


def _all_classes(root: Path, size: int, cache: Path, download: bool) -> torch.Tensor:
    """[100, 600, 3, size, size]; a missing or broken copy is re-fetched if download=True."""
    source = _find_source(root)
    if source is None:
        if not download:
            raise DataError(f"Neither {ARCHIVE} nor a folder {FOLDER}/ is in {root}: {_FIX}.")
        return _cached(net.download(URL, root / ARCHIVE, MD5), size, cache)
    try:
        return _cached(source, size, cache)
    except DataError as err:
        if not download:
            raise
        log.warning("%s Downloading a fresh copy because dataset.download=true.", err)
        return _cached(net.download(URL, root / ARCHIVE, MD5), size, cache)


def _cached(source: Path, size: int, cache: Path) -> torch.Tensor:
    key = (CACHE_FORMAT, size, IMAGES_PER_CLASS, fingerprint(source), repr(SUPERCLASSES))
    shape = (len(FINE_NAMES), IMAGES_PER_CLASS, 3, size, size)

    def build() -> dict:
        return {"images": resize_images(_decode(source), size)}

    stem = f"cifar100-{size}px-v{CACHE_FORMAT}"
    check = lambda blob: tuple(blob["images"].shape) == shape  # noqa: E731
    return TensorCache(cache, stem, key, "CIFAR-100", check).load_or_build(build)["images"]


def _decode(source: Path) -> torch.Tensor:
    """The official pickles as one uint8 tensor [class (alphabetical), 600, 3, 32, 32]."""
    with open_tree(source, _FIX) as (names, read):
        blobs = {}
        for part in ("meta", "train", "test"):
            name = f"{FOLDER}/{part}"
            if name not in names:
                raise DataError(f"{source} has no {name}: {_FIX}.")
            blobs[part] = text_keys(load_pickle(read(name), source, name, _FIX), source, name, _FIX)
    fine, coarse = _check_meta(source, blobs["meta"])
    data, labels = [], []
    for part in ("train", "test"):
        images, part_labels = _check_part(source, part, blobs[part], fine, coarse)
        data.append(images)
        labels.append(part_labels)
    images, label = np.concatenate(data), np.concatenate(labels)
    counts = np.bincount(label, minlength=len(fine))
    short = [f"{fine[i]} ({n})" for i, n in enumerate(counts) if n != IMAGES_PER_CLASS]
    if short:
        raise DataError(
            f"{source} has classes with other than {IMAGES_PER_CLASS} images (train + test): "
            f"{', '.join(short[:4])}{' and more' if len(short) > 4 else ''}: {_FIX}."
        )
    order = np.argsort(label, kind="stable")  # class by class, train before test, file order
    shaped = images[order].reshape(len(fine), IMAGES_PER_CLASS, 3, SIDE, SIDE)
    return torch.from_numpy(np.ascontiguousarray(shaped))


def _check_meta(source: Path, meta: dict) -> tuple[list[str], list[str]]:
    name = f"{FOLDER}/meta"
    require(meta, ("fine_label_names", "coarse_label_names"), source, name, _FIX)
    fine = [_text(n) for n in meta["fine_label_names"]]
    coarse = [_text(n) for n in meta["coarse_label_names"]]
    if fine != FINE_NAMES or coarse != list(SUPERCLASSES):
        raise DataError(
            f"{source}: {name} does not list CIFAR-100's 100 classes and 20 superclasses in "
            f"their official order (it has {len(fine)} and {len(coarse)}): {_FIX}."
        )
    return fine, coarse


def _check_part(
    source: Path, part: str, blob: dict, fine: list[str], coarse: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3, 32, 32] uint8 images and their fine labels, checked against the superclasses."""
    name = f"{FOLDER}/{part}"
    require(blob, ("data", "fine_labels", "coarse_labels"), source, name, _FIX)
    data = blob["data"]
    fine_labels = np.asarray(blob["fine_labels"], dtype=np.int64)
    coarse_labels = np.asarray(blob["coarse_labels"], dtype=np.int64)
    valid = (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3 * SIDE * SIDE
        and fine_labels.shape == coarse_labels.shape == (data.shape[0],)
    )
    if not valid:
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{source}: {name} holds data of shape {shape} and {len(fine_labels)} labels, not "
            f"uint8 rows of {3 * SIDE * SIDE} values with one label each: {_FIX}."
        )
    if fine_labels.size and (fine_labels.min() < 0 or fine_labels.max() >= len(fine)):
        raise DataError(f"{source}: {name} has fine labels outside 0..99: {_FIX}.")
    parent = {c: i for i, (s, classes) in enumerate(SUPERCLASSES.items()) for c in classes}
    expected = np.array([parent[c] for c in fine])[fine_labels]
    if not np.array_equal(expected, coarse_labels):
        raise DataError(
            f"{source}: {name} puts some classes under other superclasses than CIFAR-100 does, "
            f"so FC100's superclass split would be wrong: {_FIX}."
        )
    return data.reshape(-1, 3, SIDE, SIDE), fine_labels


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
