"""tieredImageNet (Ren et al. 2018): 608 ImageNet classes under 34 high-level categories,
split by category 20 / 6 / 8 into 351 / 97 / 160 classes (448,695 / 124,261 / 206,209
images), 84x84 RGB.

Why it looks like this:

- There is no stable download (the authors' ``tiered-imagenet.tar``, 12.9 GB, is a Google
  Drive file linked from the README of github.com/renmengye/few-shot-ssl-public, with no
  checksum), so the two common forms of the per-split files are read from ``root`` (or
  ``root/tiered-imagenet/``, where the tar extracts), and a missing copy gets a message saying
  which files go where:
  ``png``: the release's ``<split>_images_png.pkl`` (a pickled list of PNG-encoded images, one
  uint8 array each) with ``<split>_labels.pkl`` (a dict: ``label_specific``, one class index a
  image, and ``label_specific_str``, the class names; the category labels are not used);
  ``npz``: ``<split>_images.npz`` (key ``images``, uint8 [N, 84, 84, 3]: what the authors'
  code decompresses the PNGs into, and the form MetaOptNet and RFS distribute) with a labels
  pickle holding either the keys above or ``labels`` (one integer class per image).
- Channel order: the PNGs decode to RGB. The npz is taken as stored, as RGB, as MetaOptNet and
  RFS read it; the npz written by Ren et al.'s own ``decompress`` (OpenCV) holds BGR, so with
  both forms present ``source=auto`` reads the PNG pickles.
- Each split is decoded once into a uint8 tensor ``[images, 3, S, S]`` (a ragged pool: classes
  have 732 to 1,300 images) and cached outside the data root, keyed by the files' content. The
  PNG pickle (about 7 GB for train) is read as a stream and each PNG is dropped once decoded,
  so the peak is about one copy of the compressed split plus the decoded one.
- A split is refused unless it has the class count of Ren et al.'s split and no class name is
  in two splits; the number of images a split has is not checked (the forms in circulation
  are not all the same size).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metalab.data import pickles
from metalab.data.cache import TensorCache, cache_folder, fingerprint
from metalab.data.imagefiles import decode_all
from metalab.data.pickles import load_pickle, text_keys
from metalab.data.pools import check_image_size, resize_images
from metalab.data.ragged import PARTS, RaggedClasses, Shape, check_fits, episode_shapes
from metalab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SOURCES = ("auto", "png", "npz")
SPLITS = ("ren",)
SIDE = 84
CACHE_FORMAT = 1
CLASSES = {"train": 351, "val": 97, "test": 160}  # Ren et al.'s split
FOLDER = "tiered-imagenet"
FILES = {
    "png": "{}_images_png.pkl",
    "npz": "{}_images.npz",
    "labels": "{}_labels.pkl",
}
_RESIZE_CHUNK = 4096

_LAYOUT = (
    "train_images_png.pkl, val_images_png.pkl and test_images_png.pkl (Ren et al.'s "
    "tiered-imagenet.tar) or train_images.npz, val_images.npz and test_images.npz, each "
    "with its <split>_labels.pkl"
)
_FIX = f"put a complete copy into dataset.root: {_LAYOUT} (tieredImageNet has no official download)"


def tiered_pools(cfg: Any) -> dict[str, RaggedClasses]:
    """``load_tiered`` with the settings of a ``dataset=tieredimagenet`` config."""
    if cfg.split not in SPLITS:
        raise ConfigError(
            f"dataset.split={cfg.split!r}: tieredImageNet has one split, ren (Ren et al. "
            "2018's 351/97/160 classes)."
        )
    return load_tiered(
        cfg.root,
        source=cfg.source,
        image_size=cfg.image_size,
        cache_dir=cfg.cache_dir,
        shapes=episode_shapes(cfg),
    )


def load_tiered(
    root: str | os.PathLike[str],
    source: str = "auto",
    image_size: int = SIDE,
    cache_dir: str | os.PathLike[str] | None = None,
    shapes: Mapping[str, Shape] | None = None,
) -> dict[str, RaggedClasses]:
    """tieredImageNet's train/val/test pools from ``root`` (``source``: auto, png or npz).

    ``shapes`` ({split: (ways, shots, queries)}) refuses a split too small for its episodes
    once its labels are read, before its images are decoded."""
    if source not in SOURCES:
        raise ConfigError(
            f"Unknown tieredImageNet source {source!r}: set dataset.source to one of "
            f"{', '.join(SOURCES)}."
        )
    size = check_image_size(image_size, SIDE)
    folder = find_folder(Path(root).expanduser())
    form = choose_form(folder, source)
    labels: dict[str, tuple[np.ndarray, list[str]]] = {}
    owner: dict[str, str] = {}
    for part in PARTS:  # every split's labels checked before any image is decoded
        part_labels, names, named = read_labels(folder / FILES["labels"].format(part), part)
        counts = np.bincount(part_labels, minlength=len(names)).tolist()
        if shapes is not None and part in shapes:
            check_fits(names, counts, shapes[part], part, str(folder))
        if named:  # class names (not bare numbers, which may restart at 0): splits disjoint
            for name in names:
                if name in owner:
                    raise DataError(
                        f"The class {name} is in both the {owner[name]} and the {part} split "
                        f"of {folder}; Ren et al.'s splits are disjoint: {_FIX}."
                    )
                owner[name] = part
        labels[part] = (part_labels, names)
    pools: dict[str, RaggedClasses] = {}
    for part, (part_labels, names) in labels.items():
        paths = (folder / FILES[form].format(part), folder / FILES["labels"].format(part))
        images = _cached(*paths, form, part, size, len(part_labels), cache_dir)
        order = np.argsort(part_labels, kind="stable")  # class by class, file order within
        ends = np.cumsum(np.bincount(part_labels, minlength=len(names)))[:-1]
        rows = [torch.from_numpy(r) for r in np.split(order, ends)]
        pools[part] = RaggedClasses(images, rows, names, str(folder))
    return pools


def find_folder(root: Path) -> Path:
    """``root`` or ``root/tiered-imagenet`` (where the release's tar extracts)."""
    for folder in (root, root / FOLDER):
        if folder.is_dir() and any((folder / FILES["labels"].format(p)).is_file() for p in PARTS):
            return folder
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"The tieredImageNet folder {root} {state}: set dataset.root to the folder that "
            f"holds {_LAYOUT} (by default $METALAB_DATA/tieredimagenet)."
        )
    present = sorted(p.name for p in root.iterdir())[:6]
    raise DataError(
        f"{root} holds no tieredImageNet labels files (it has {present}): put into it "
        f"{_LAYOUT} (tieredImageNet has no official download)."
    )


def choose_form(folder: Path, source: str) -> str:
    labels = all((folder / FILES["labels"].format(p)).is_file() for p in PARTS)
    has = {
        form: labels and all((folder / FILES[form].format(p)).is_file() for p in PARTS)
        for form in ("png", "npz")
    }
    if source != "auto":
        if not has[source]:
            wanted = [FILES[key].format(p) for p in PARTS for key in (source, "labels")]
            absent = [w for w in wanted if not (folder / w).is_file()]
            raise DataError(
                f"dataset.source={source} but {folder} lacks {', '.join(absent)}: add them, or "
                "set dataset.source=auto."
            )
        return source
    for form in ("png", "npz"):
        if has[form]:
            return form
    wanted = [FILES[key].format(p) for p in PARTS for key in ("png", "npz", "labels")]
    absent = [w for w in wanted if not (folder / w).is_file()]
    raise DataError(
        f"{folder} holds neither form of tieredImageNet completely (missing "
        f"{', '.join(absent)}): put into it {_LAYOUT} (tieredImageNet has no official download)."
    )


# --- labels ------------------------------------------------------------------------------------


def read_labels(path: Path, part: str) -> tuple[np.ndarray, list[str], bool]:
    """(class index 0..C-1 of each image, class names, whether the file names them) from one
    labels pickle."""
    blob = text_keys(load_pickle(_read(path), path, path.name, _FIX), path, path.name, _FIX)
    if "label_specific" in blob:
        raw = _integers(blob["label_specific"], path, "label_specific")
        names_raw = blob.get("label_specific_str")
        named = names_raw is not None
        if names_raw is None:
            names = [f"class {c}" for c in range(int(raw.max()) + 1 if raw.size else 0)]
        else:
            names = [_text(n) for n in names_raw]
        if raw.size and (raw.min() < 0 or raw.max() >= len(names)):
            raise DataError(
                f"{path}: label_specific has class indices outside the {len(names)} names of "
                f"label_specific_str: {_FIX}."
            )
        labels = raw
    elif "labels" in blob:
        raw = _integers(blob["labels"], path, "labels")
        values, labels = np.unique(raw, return_inverse=True)
        names = [f"class {v}" for v in values.tolist()]
        named = False
    else:
        raise DataError(
            f"{path}: {path.name} has neither label_specific (Ren et al.'s labels) nor labels "
            f"(it has {', '.join(sorted(blob)) or 'no keys'}): {_FIX}."
        )
    if len(names) != CLASSES[part]:
        raise DataError(
            f"{path} has {len(names)} classes, not the {CLASSES[part]} of Ren et al.'s {part} "
            f"split: {_FIX}."
        )
    counts = np.bincount(labels, minlength=len(names))
    empty = [names[c] for c in np.flatnonzero(counts == 0).tolist()]
    if empty:
        raise DataError(f"{path} names classes with no image: {', '.join(empty[:3])}: {_FIX}.")
    return labels.astype(np.int64).reshape(-1), names, named


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}): {_FIX}.") from err


def _integers(value: Any, path: Path, key: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - ragged or odd content: one message
        raise DataError(f"{path}: {key} is not a list of class numbers ({err}): {_FIX}.") from err
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(
            f"{path}: {key} is {array.dtype} {list(array.shape)}, not one integer class per "
            f"image: {_FIX}."
        )
    return array.astype(np.int64)


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


# --- images ------------------------------------------------------------------------------------


def _cached(
    images_path: Path,
    labels_path: Path,
    form: str,
    part: str,
    size: int,
    count: int,
    cache_dir: str | os.PathLike[str] | None,
) -> torch.Tensor:
    key = (CACHE_FORMAT, form, part, size, count, fingerprint(images_path))
    key += (fingerprint(labels_path),)
    shape = (count, 3, size, size)

    def check(blob: dict) -> bool:
        return tuple(blob["images"].shape) == shape

    def build() -> dict:
        started = time.perf_counter()
        decode = _from_png if form == "png" else _from_npz
        images = decode(images_path, count)
        log.info("Decoded tieredImageNet %s in %.1f s", part, time.perf_counter() - started)
        return {"images": _resized(images, size)}

    stem = f"tieredimagenet-{form}-{part}-{size}px-v{CACHE_FORMAT}"
    cache = TensorCache(cache_folder(cache_dir), stem, key, "tieredImageNet", check)
    return cache.load_or_build(build)["images"]


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``resize_images`` a chunk at a time (it works in float32: 9 GB of uint8 would be 38)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    chunks = [
        resize_images(images[i : i + _RESIZE_CHUNK], size)
        for i in range(0, len(images), _RESIZE_CHUNK)
    ]
    return torch.cat(chunks) if chunks else images.new_empty((0, 3, size, size))


def _stream_pickle(path: Path) -> Any:
    """The restricted unpickler of ``metalab.data.pickles`` on the open file: reading the
    whole file first (``load_pickle`` takes bytes) would hold the PNG pickle twice."""
    try:
        with open(path, "rb") as handle:
            return pickles._ArraysOnly(handle, encoding="latin1").load()
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}): {_FIX}.") from err
    except pickle.UnpicklingError as err:
        raise DataError(f"{path} is refused as a data pickle ({err}): {_FIX}.") from err
    except Exception as err:  # truncated or garbled: any failure means the same to the user
        raise DataError(f"{path} is not a readable pickle ({err!r}): {_FIX}.") from err


def _from_png(path: Path, count: int) -> torch.Tensor:
    entries = _stream_pickle(path)
    if not isinstance(entries, list) or len(entries) != count:
        what = f"a list of {len(entries)}" if isinstance(entries, list) else type(entries).__name__
        raise DataError(
            f"{path} holds {what}, not the list of {count} PNG images its labels file "
            f"describes: {_FIX}."
        )

    def load(index: int) -> tuple[bytes, str]:
        entry, entries[index] = entries[index], None  # dropped once decoded
        data = entry.tobytes() if isinstance(entry, np.ndarray) else entry
        if not isinstance(data, bytes):
            raise DataError(f"{path}: entry {index} is not an encoded image: {_FIX}.")
        return data, f"{path} (image {index})"

    return decode_all(count, load, SIDE, "stretch", _FIX)


def _from_npz(path: Path, count: int) -> torch.Tensor:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise DataError(
                    f"{path} has no 'images' array (it has {', '.join(archive.files)}): {_FIX}."
                )
            data = archive["images"]
    except DataError:
        raise
    except Exception as err:  # a damaged zip, or an object array (pickles are not allowed)
        raise DataError(f"{path} is not a readable npz of images ({err}): {_FIX}.") from err
    if not (data.dtype == np.uint8 and data.ndim == 4 and data.shape[1:] == (SIDE, SIDE, 3)):
        raise DataError(
            f"{path}: images is {data.dtype} {list(data.shape)}, not uint8 [N, {SIDE}, {SIDE}, "
            f"3]: {_FIX}."
        )
    if len(data) != count:
        raise DataError(
            f"{path} has {len(data)} images but its labels file has {count} labels: {_FIX}."
        )
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
