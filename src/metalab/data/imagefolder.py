"""Any folder of images as few-shot classes: ``<root>/<class>/<image>``.

Why it looks like this:

- One folder per class, any number of images each (png, jpg, jpeg, bmp, webp; any size; RGB
  or grey, all read as RGB), decoded once, resized and cached by ``metalab.data.imagefiles``
  (content-keyed, outside ``root``). Classes keep all their images: the pool is ragged
  (``metalab.data.ragged``).
- Classes are split into train/val/test one of three ways (``dataset.split``):
  ``ratio``: a seeded shuffle cut by ``split_ratios``. The shuffle orders classes by a hash of
  (seed, class name), so it is the same on every machine and Python version, and a class added
  later does not reorder the others. ``files``: ``train.txt``, ``val.txt`` and ``test.txt``
  with one class folder name a line (the format of Omniglot's ``splits_vinyals``), beside the
  class folders or in ``split_dir``; a class listed nowhere is not used. ``folders``:
  ``<root>/train/<class>/...``, ``<root>/val/...``, ``<root>/test/...``.
  No class may be in two splits.
- The layout is checked before anything is decoded, and a problem is one sentence naming the
  file or folder: images loose in ``root``, folders inside a class folder, an empty class
  folder, an unreadable image, a split file naming an unknown class or repeating one; and a
  split too small for its episodes is refused with its classes and their counts.
  Hidden entries (``.DS_Store``, ``.ipynb_checkpoints``) are skipped; other files that are not
  images (a README, ``Thumbs.db``) are skipped with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metalab.data.imagefiles import cached_classes, check_resize, is_image_name, rows_of
from metalab.data.pools import check_image_size
from metalab.data.ragged import PARTS, RaggedClasses, Shape, check_parts_fit, episode_shapes
from metalab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("ratio", "files", "folders")
SIDE = 84  # the usual side for natural images (mini-ImageNet's)

_LAYOUT = "one folder of images per class (<root>/<class>/<image>, png/jpg/jpeg/bmp/webp)"
_FIX = "fix or remove the file, then run again"


def imagefolder_pools(cfg: Any) -> dict[str, RaggedClasses]:
    """``load_imagefolder`` with the settings of a ``dataset=imagefolder`` config."""
    return load_imagefolder(
        cfg.root,
        image_size=cfg.image_size,
        split=cfg.split,
        split_ratios=cfg.split_ratios,
        split_seed=cfg.split_seed,
        split_dir=cfg.split_dir,
        resize=cfg.resize,
        cache_dir=cfg.cache_dir,
        shapes=episode_shapes(cfg),
    )


def load_imagefolder(
    root: str | os.PathLike[str],
    image_size: int = SIDE,
    split: str = "ratio",
    split_ratios: Sequence[float] = (0.64, 0.16, 0.2),
    split_seed: int = 0,
    split_dir: str | os.PathLike[str] | None = None,
    resize: str = "stretch",
    cache_dir: str | os.PathLike[str] | None = None,
    shapes: Mapping[str, Shape] | None = None,
) -> dict[str, RaggedClasses]:
    """The train/val/test pools of the class folders under ``root``.

    ``shapes`` ({split: (ways, shots, queries)}) refuses a split too small for its episodes
    before anything is decoded.
    """
    size = check_image_size(image_size, SIDE)
    resize = check_resize(resize)
    if split not in SPLITS:
        raise ConfigError(
            f"dataset.split={split!r}: choose ratio (a seeded shuffle of the classes by "
            "dataset.split_ratios), files (train.txt, val.txt, test.txt) or folders "
            "(<root>/train, val, test)."
        )
    ratios = check_ratios(split_ratios) if split == "ratio" else None
    root = _check_root(Path(root).expanduser())
    if split == "folders":
        classes, parts = _split_folders(root)
    else:
        classes = list_classes(root)
        if ratios is not None:
            parts = split_by_ratio(list(classes), ratios, int(split_seed))
        else:
            folder = root if split_dir is None else Path(split_dir).expanduser()
            parts = split_by_files(folder, list(classes), root)
    check_parts_fit(
        {p: (_shown(names), [len(classes[n]) for n in names]) for p, names in parts.items()},
        shapes,
        str(root),
    )
    used = sorted(name for names in parts.values() for name in names)
    images = cached_classes(
        {name: classes[name] for name in used}, root, size, resize, cache_dir,
        "imagefolder", "image folder", _FIX,
    )  # fmt: skip
    rows = dict(zip(used, rows_of([len(classes[n]) for n in used]), strict=True))
    return {
        part: RaggedClasses(images, [rows[n] for n in names], _shown(names), str(root))
        for part, names in parts.items()
    }


def _shown(names: Sequence[str]) -> list[str]:
    """Class names as the user knows them (``train/cat`` of split=folders is ``cat``)."""
    return [name.split("/")[-1] for name in names]


def _check_root(root: Path) -> Path:
    if root.is_dir():
        return root
    state = "is a file, not a folder" if root.exists() else "does not exist"
    raise DataError(
        f"The image folder {root} {state}: set dataset.root to the folder that holds "
        f"{_LAYOUT} (by default $METALAB_DATA/imagefolder)."
    )


# --- the layout ------------------------------------------------------------------------------


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as scan:
            return sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"{folder} cannot be listed ({err.strerror or err}).") from err


def _few(items: Sequence[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def list_classes(folder: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files}, both sorted by name; the layout checked."""
    classes: dict[str, list[Path]] = {}
    loose: list[str] = []
    skipped: list[str] = []
    for entry in _entries(folder):
        if entry.is_dir():
            classes[entry.name] = _list_images(Path(entry.path), folder, skipped)
        elif is_image_name(entry.name):
            loose.append(entry.name)
    if loose:
        raise DataError(
            f"{folder} has {len(loose)} image(s) directly inside it ({_few(loose)}), outside "
            f"any class folder: move each image into {folder}/<class>/, one folder per class."
        )
    if not classes:
        raise DataError(
            f"{folder} has no class folders: put the images in {folder}/<class>/<image> "
            "(png, jpg, jpeg, bmp or webp), one folder per class."
        )
    if skipped:
        log.warning(
            "Skipped %d file(s) in the class folders of %s that are not images (png, jpg, "
            "jpeg, bmp, webp): %s",
            len(skipped),
            folder,
            _few(skipped),
        )
    return classes


def _list_images(class_dir: Path, folder: Path, skipped: list[str]) -> list[Path]:
    images: list[Path] = []
    for entry in _entries(class_dir):
        if entry.is_dir():
            hint = (
                "if it holds train/, val/ and test/ folders of classes, set dataset.split=folders"
                if class_dir.name in PARTS
                else f"if the folders inside {class_dir.name}/ are the classes, point "
                f"dataset.root at {class_dir}"
            )
            raise DataError(
                f"{entry.path} is a folder inside the class folder {class_dir}: the classes are "
                f"the folders directly under {folder} and hold only images; {hint}."
            )
        if is_image_name(entry.name):
            images.append(Path(entry.path))
        else:
            skipped.append(f"{class_dir.name}/{entry.name}")
    if not images:
        raise DataError(
            f"The class folder {class_dir} holds no images (png, jpg, jpeg, bmp or webp): add "
            "some, or remove the folder."
        )
    return images


def _split_folders(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[str]]]:
    """split=folders: classes keyed ``<part>/<class>``; a class name in two parts is refused."""
    classes: dict[str, list[Path]] = {}
    parts: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for part in PARTS:
        folder = root / part
        if not folder.is_dir():
            raise DataError(
                f"With dataset.split=folders, {folder} must be a folder of class folders "
                f"({folder}/<class>/<image>) but it is missing: add it, or set "
                "dataset.split=ratio or files."
            )
        for name, files in list_classes(folder).items():
            if name in owner:
                raise DataError(
                    f"The class {name} is in both {root / owner[name] / name} and "
                    f"{folder / name}: a class may be in one split only; rename or remove one."
                )
            owner[name] = part
            classes[f"{part}/{name}"] = files
        parts[part] = [key for key in classes if key.startswith(f"{part}/")]
    return classes, parts


# --- splits ----------------------------------------------------------------------------------


def check_ratios(value: Any) -> tuple[float, float, float]:
    """``dataset.split_ratios``: three shares >= 0 for train, val and test summing to 1. A
    share may be 0 (a data set only tested on is [0, 0, 1]); a split then too small for its
    episodes is refused by ``check_fits``."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    numbers = [
        v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]  # fmt: skip
    valid = (
        len(values) == 3
        and len(numbers) == 3
        and all(math.isfinite(v) and v >= 0 for v in numbers)
        and abs(sum(numbers) - 1) <= 1e-6
    )
    if not valid:
        raise ConfigError(
            f"dataset.split_ratios={values or value!r}: give three shares of the classes for "
            "train, val and test, each >= 0 and summing to 1, e.g. [0.64,0.16,0.2] ([0,0,1] puts "
            "every class in the test split, for a data set used only to test on)."
        )
    return (float(numbers[0]), float(numbers[1]), float(numbers[2]))


def apportion(total: int, ratios: Sequence[float]) -> list[int]:
    """Whole class counts in proportion to ``ratios`` summing to ``total`` (largest
    remainders get the classes left over; ties go to the earlier split)."""
    exact = [r * total for r in ratios]
    counts = [math.floor(e + 1e-9) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def split_by_ratio(names: Sequence[str], ratios: Sequence[float], seed: int) -> dict[str, list]:
    """Classes ordered by a hash of (seed, name), cut into train/val/test by ``ratios``."""

    def rank(name: str) -> bytes:
        return hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=16).digest()

    order = sorted(names, key=rank)
    counts = apportion(len(order), ratios)
    ends = [0, counts[0], counts[0] + counts[1], len(order)]
    return {part: sorted(order[ends[i] : ends[i + 1]]) for i, part in enumerate(PARTS)}


def split_by_files(folder: Path, names: Sequence[str], root: Path) -> dict[str, list[str]]:
    """``<folder>/{train,val,test}.txt``: one class folder name a line, each in one file."""
    known = set(names)
    owner: dict[str, Path] = {}
    parts: dict[str, list[str]] = {}
    for part in PARTS:
        path = folder / f"{part}.txt"
        if not path.is_file():
            raise DataError(
                f"The split file {path} is missing: with dataset.split=files put train.txt, "
                f"val.txt and test.txt (one class folder name a line) in {folder} (or set "
                "dataset.split_dir), or use dataset.split=ratio."
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"The split file {path} cannot be read as text ({err}).") from err
        listed: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            name = line.strip().rstrip("/")
            if not name:
                continue
            if name not in known:
                raise DataError(
                    f"Line {number} of {path} names {name[:80]!r}, which is not a class folder "
                    f"of {root}: correct the line, or add the folder."
                )
            if name in owner:
                raise DataError(
                    f"Line {number} of {path} lists {name!r}, which {owner[name]} already "
                    "lists: a class may be in one split only (and once); remove one line."
                )
            owner[name] = path
            listed.append(name)
        parts[part] = listed
    unused = [n for n in names if n not in owner]
    if unused:
        log.warning(
            "%d class folder(s) of %s are in no split file and are not used: %s",
            len(unused),
            root,
            _few(unused),
        )
    return parts
