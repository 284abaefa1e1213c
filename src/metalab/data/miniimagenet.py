"""mini-ImageNet (Vinyals et al. 2016) with Ravi & Larochelle's split: 64 / 16 / 20 classes
of 600 images, 84x84 RGB.

Why it looks like this:

- There is no official public download, so two common on-disk forms are read, and a missing
  copy gets a message that says which files go where:
  ``csv``: Ravi & Larochelle's ``train.csv``, ``val.csv``, ``test.csv`` (columns
  ``filename,label``) beside an ``images/`` folder (or ``images.zip``) of the listed files;
  ``pickle``: the widely shared ``mini-imagenet-cache-{train,val,test}.pkl``, each a dict with
  ``image_data`` (uint8 [N, 84, 84, 3]) and ``class_dict`` ({class: [row indices]}).
- Each split is decoded once into a uint8 tensor ``[classes, 600, 3, S, S]`` and cached outside
  the data root, keyed by a fingerprint of its files (as for Omniglot).
- A copy is refused unless every split has its official number of classes, each with 600
  images, and no class is in two splits: anything else silently changes the benchmark.
- Images of other sizes in ``images/`` are resized to 84x84 (Lanczos), as Ravi & Larochelle's
  script does; ``dataset.image_size`` can shrink them further (tests, quick runs).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from metalab.data import download as net
from metalab.data.archives import open_tree
from metalab.data.cache import TensorCache, cache_folder, fingerprint
from metalab.data.images import decode_image
from metalab.data.pickles import load_pickle, require, text_keys
from metalab.data.pools import ImageClasses, check_image_size, resize_images
from metalab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
SOURCES = ("auto", "csv", "pickle")
SIDE = 84
CACHE_FORMAT = 1
# Ravi & Larochelle's split: classes per part, images per class.
CLASSES = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600
PICKLE = "mini-imagenet-cache-{}.pkl"

_LAYOUT = (
    "either train.csv, val.csv and test.csv (columns filename,label, from Ravi & Larochelle) "
    "with the listed images in images/ (or images.zip), or mini-imagenet-cache-train.pkl, "
    "mini-imagenet-cache-val.pkl and mini-imagenet-cache-test.pkl"
)
_FIX = (
    "put a complete copy into dataset.root: Ravi & Larochelle's train.csv, val.csv and test.csv "
    "with images/, or the three mini-imagenet-cache-{train,val,test}.pkl (mini-ImageNet has no "
    "official download)"
)


def load_miniimagenet(
    root: str | os.PathLike[str],
    source: str = "auto",
    image_size: int = SIDE,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, ImageClasses]:
    """mini-ImageNet from ``root`` as train/val/test pools (``source``: auto, csv or pickle)."""
    if source not in SOURCES:
        raise ConfigError(
            f"Unknown mini-ImageNet source {source!r}: set dataset.source to one of "
            f"{', '.join(SOURCES)}."
        )
    size = check_image_size(image_size, SIDE)
    root = net.data_root(Path(root).expanduser(), False, "mini-ImageNet", _LAYOUT, False)
    form = _choose_form(root, source)
    cache = cache_folder(cache_dir)
    pools, owner = {}, {}
    for part in PARTS:
        images, names = _cached(root, form, part, size, cache)
        for name in names:
            if name in owner:
                raise DataError(
                    f"Class {name} is in both the {owner[name]} and the {part} split of {root}; "
                    f"Ravi & Larochelle's splits are disjoint: {_FIX}."
                )
            owner[name] = part
        pools[part] = ImageClasses(images, range(len(names)), names)
    return pools


def _choose_form(root: Path, source: str) -> str:
    has = {
        "pickle": all((root / PICKLE.format(p)).is_file() for p in PARTS),
        "csv": all((root / f"{p}.csv").is_file() for p in PARTS),
    }
    if source != "auto":
        if not has[source]:
            wanted = (
                ", ".join(PICKLE.format(p) for p in PARTS)
                if source == "pickle"
                else "train.csv, val.csv, test.csv and images/"
            )
            raise DataError(
                f"dataset.source={source} but {root} lacks some of {wanted}: add them, or set "
                f"dataset.source=auto."
            )
        return source
    for form in ("pickle", "csv"):
        if has[form]:
            return form
    present = sorted(p.name for p in root.iterdir())[:6]
    raise DataError(
        f"{root} holds neither form of mini-ImageNet (it has {present}): put into it {_LAYOUT} "
        f"(mini-ImageNet has no official download)."
    )


def _part_files(root: Path, form: str, part: str) -> list[Path]:
    if form == "pickle":
        return [root / PICKLE.format(part)]
    return [root / f"{part}.csv", _image_source(root)]


def _image_source(root: Path) -> Path:
    for candidate in (root / "images", root / "images.zip"):
        if candidate.exists():
            return candidate
    raise DataError(f"{root} has the split CSVs but no images/ folder or images.zip: {_FIX}.")


def _cached(
    root: Path, form: str, part: str, size: int, cache: Path
) -> tuple[torch.Tensor, list[str]]:
    files = _part_files(root, form, part)
    key = (CACHE_FORMAT, form, part, size, CLASSES[part], IMAGES_PER_CLASS)
    key += tuple(fingerprint(f) for f in files)
    shape = (CLASSES[part], IMAGES_PER_CLASS, 3, size, size)

    def check(blob: dict) -> bool:
        return tuple(blob["images"].shape) == shape and len(blob["names"]) == shape[0]

    def build() -> dict:
        started = time.perf_counter()
        decode = _from_pickle if form == "pickle" else _from_csv
        images, names = decode(*files)
        _check_counts(files[0], part, names, images)
        log.info("Decoded mini-ImageNet %s in %.1f s", part, time.perf_counter() - started)
        return {"images": resize_images(images, size), "names": names}

    stem = f"miniimagenet-{form}-{part}-{size}px-v{CACHE_FORMAT}"
    blob = TensorCache(cache, stem, key, "mini-ImageNet", check).load_or_build(build)
    return blob["images"], list(blob["names"])


def _check_counts(source: Path, part: str, names: list[str], images: torch.Tensor) -> None:
    expected = (CLASSES[part], IMAGES_PER_CLASS)
    if (len(names), images.shape[1]) != expected:
        raise DataError(
            f"{source} has {len(names)} classes of {images.shape[1]} images, not the "
            f"{expected[0]} classes of {expected[1]} of Ravi & Larochelle's {part} split: {_FIX}."
        )


def _grouped(source: Path, rows: dict[str, list], what: str) -> list[str]:
    """Class names in order, refusing classes with other than IMAGES_PER_CLASS entries."""
    uneven = [f"{c} ({len(r)})" for c, r in rows.items() if len(r) != IMAGES_PER_CLASS]
    if uneven:
        more = f" and {len(uneven) - 4} more" if len(uneven) > 4 else ""
        raise DataError(
            f"{source} lists classes with other than {IMAGES_PER_CLASS} {what}: "
            f"{', '.join(uneven[:4])}{more}: {_FIX}."
        )
    return list(rows)


# --- the pickle form -------------------------------------------------------------------------


def _from_pickle(path: Path) -> tuple[torch.Tensor, list[str]]:
    blob = text_keys(load_pickle(path.read_bytes(), path, path.name, _FIX), path, path.name, _FIX)
    require(blob, ("image_data", "class_dict"), path, path.name, _FIX)
    data, classes = blob["image_data"], blob["class_dict"]
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 4
        and data.shape[1:] == (SIDE, SIDE, 3)
    ):
        raise DataError(
            f"{path}: image_data is {getattr(data, 'dtype', type(data).__name__)} "
            f"{list(getattr(data, 'shape', []))}, not uint8 [N, {SIDE}, {SIDE}, 3]: {_FIX}."
        )
    if not isinstance(classes, dict):
        raise DataError(f"{path}: class_dict is not a dict of class -> row indices: {_FIX}.")
    rows = {str(c): [int(i) for i in indices] for c, indices in classes.items()}
    names = _grouped(path, rows, "rows")
    flat = np.array([i for name in names for i in rows[name]], dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= len(data)):
        raise DataError(
            f"{path}: class_dict points at rows outside image_data's {len(data)}: {_FIX}."
        )
    images = data[flat].reshape(len(names), IMAGES_PER_CLASS, SIDE, SIDE, 3)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3))), names


# --- the CSV + images form -------------------------------------------------------------------


def _read_csv(path: Path) -> dict[str, list[str]]:
    """label -> file names, in file order."""
    text = path.read_text(encoding="utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["filename", "label"]:
        raise DataError(
            f"{path} starts with {header}, not the header filename,label of Ravi & "
            f"Larochelle's split files: {_FIX}."
        )
    rows: dict[str, list[str]] = {}
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"Line {number} of {path} is {row}, not filename,label: {_FIX}.")
        rows.setdefault(row[1].strip(), []).append(row[0].strip())
    return rows


def _from_csv(path: Path, images_source: Path) -> tuple[torch.Tensor, list[str]]:
    rows = _read_csv(path)
    names = _grouped(path, rows, "images")
    folder = images_source.name.removesuffix(".zip")
    with open_tree(images_source, _FIX) as (entries, read):
        present = set(entries)
        wanted = [f"{folder}/{f}" for name in names for f in rows[name]]
        missing = [w for w in wanted if w not in present]
        if missing:
            raise DataError(
                f"{len(missing)} image(s) listed in {path} are not in {images_source}, e.g. "
                f"{', '.join(missing[:3])}: {_FIX}."
            )
        images = np.empty((len(wanted), SIDE, SIDE, 3), dtype=np.uint8)
        for i, entry in enumerate(wanted):
            images[i] = decode_image(read(entry), images_source, entry, _FIX, "RGB", SIDE)
    shaped = images.reshape(len(names), IMAGES_PER_CLASS, SIDE, SIDE, 3).transpose(0, 1, 4, 2, 3)
    return torch.from_numpy(np.ascontiguousarray(shaped)), names
