"""CUB-200-2011 (Wah et al. 2011, 200 bird species, 11,788 images) with the 100/50/50 class
split of Chen et al. 2019.

Why it looks like this:

- Source: the official release ``CUB_200_2011.tgz`` (Caltech; today on CaltechDATA,
  https://data.caltech.edu/records/65de6-vp158), extracted, read through its own metadata:
  ``classes.txt`` (``<class id> <NNN.Name>``), ``images.txt`` (``<image id> <NNN.Name>/<file>``)
  and ``image_class_labels.txt`` (``<image id> <class id>``), images under ``images/``.
  metalab does not download it: the archive has moved before (from vision.caltech.edu to
  CaltechDATA) and the few-shot split is not part of it.
- Split: the one of Chen et al., "A Closer Look at Few-shot Classification" (ICLR 2019),
  ``filelists/CUB/write_CUB_filelist.py`` in github.com/wyharveychen/CloserLookFewShot, which
  follows the 100/50/50 protocol of Hilliard et al. 2018 ("Few-Shot Learning with
  Metric-Agnostic Conditional Embeddings"): classes in name order, index i from 0; i even ->
  train (100: ids 001, 003, ...), i % 4 == 1 -> val (50: 002, 006, ...), i % 4 == 3 -> test
  (50: 004, 008, ...). Every image of a class is used (the official per-image
  train_test_split.txt is not read), as there. Classes are ragged (41 to 60 images).
- A copy is refused unless it has all 200 classes and 11,788 images, each listed image is
  present and sits in its class's folder: a partial copy would change the benchmark.
- Bounding boxes are not used (Chen et al. do not crop to them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metalab.data.imagefiles import cached_classes, check_resize, rows_of
from metalab.data.pools import check_image_size
from metalab.data.ragged import RaggedClasses, Shape, check_parts_fit, episode_shapes
from metalab.errors import ConfigError, DataError

FOLDER = "CUB_200_2011"
ARCHIVE = "CUB_200_2011.tgz"
CLASSES = 200
IMAGES = 11_788
SPLITS = ("chen",)
SIDE = 84
META = ("classes.txt", "images.txt", "image_class_labels.txt")

_FIX = (
    f"put the official {ARCHIVE} (CaltechDATA, https://data.caltech.edu/records/65de6-vp158), "
    f"extracted, into dataset.root ({FOLDER}/ with classes.txt, images.txt, "
    "image_class_labels.txt and images/)"
)


def chen_split(names: list[str]) -> dict[str, list[str]]:
    """Chen et al.'s rule over the class names in name order (see the module's notes)."""
    ordered = sorted(names)
    return {
        "train": [n for i, n in enumerate(ordered) if i % 2 == 0],
        "val": [n for i, n in enumerate(ordered) if i % 4 == 1],
        "test": [n for i, n in enumerate(ordered) if i % 4 == 3],
    }


def cub_pools(cfg: Any) -> dict[str, RaggedClasses]:
    """``load_cub`` with the settings of a ``dataset=cub`` config."""
    return load_cub(
        cfg.root,
        image_size=cfg.image_size,
        split=cfg.split,
        resize=cfg.resize,
        cache_dir=cfg.cache_dir,
        shapes=episode_shapes(cfg),
    )


def load_cub(
    root: str | os.PathLike[str],
    image_size: int = SIDE,
    split: str = "chen",
    resize: str = "stretch",
    cache_dir: str | os.PathLike[str] | None = None,
    shapes: Mapping[str, Shape] | None = None,
) -> dict[str, RaggedClasses]:
    """CUB's train/val/test pools from ``root`` (the folder holding ``CUB_200_2011/``, or that
    folder itself); ``shapes`` refuses a split too small for its episodes before decoding."""
    size = check_image_size(image_size, SIDE)
    resize = check_resize(resize)
    if split not in SPLITS:
        raise ConfigError(
            f"dataset.split={split!r}: CUB has one split here, chen (Chen et al. 2019's "
            "100/50/50 classes)."
        )
    base = find_release(Path(root).expanduser())
    classes = read_release(base)
    parts = chen_split(list(classes))
    counts = {name: len(files) for name, files in classes.items()}
    check_parts_fit(
        {p: (names, [counts[n] for n in names]) for p, names in parts.items()}, shapes, str(base)
    )
    names = sorted(classes)
    images = cached_classes(
        {n: classes[n] for n in names}, base, size, resize, cache_dir, "cub", "CUB", _FIX,
        extra=[base / m for m in META],
    )  # fmt: skip
    rows = dict(zip(names, rows_of([counts[n] for n in names]), strict=True))
    return {
        part: RaggedClasses(images, [rows[n] for n in chosen], chosen, str(base))
        for part, chosen in parts.items()
    }


def find_release(root: Path) -> Path:
    """The folder holding the metadata: ``root/CUB_200_2011`` or ``root`` itself."""
    for base in (root / FOLDER, root):
        if (base / "images.txt").is_file():
            return base
    if (root / ARCHIVE).is_file():
        raise DataError(
            f"{root} has {ARCHIVE} but not its contents: extract it there "
            f"(tar -xzf {root / ARCHIVE} -C {root}), then run again."
        )
    state = "does not exist" if not root.exists() else "holds no CUB_200_2011/images.txt"
    raise DataError(f"The CUB folder {root} {state}: {_FIX}.")


def _table(path: Path, what: str) -> list[tuple[int, str]]:
    """Lines ``<integer id> <value>`` of one metadata file, in file order."""
    if not path.is_file():
        raise DataError(f"{path} is missing: {_FIX}.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read as text ({err}): {_FIX}.") from err
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise DataError(
                f"Line {number} of {path} is {line[:80]!r}, not '<id> <{what}>': {_FIX}."
            )
        rows.append((int(fields[0]), fields[1].strip()))
    return rows


def _unique(rows: list[tuple[int, str]], path: Path) -> dict[int, str]:
    table: dict[int, str] = {}
    for key, value in rows:
        if key in table:
            raise DataError(f"{path} lists the id {key} twice: {_FIX}.")
        table[key] = value
    return table


def read_release(base: Path) -> dict[str, list[Path]]:
    """{class name: image files in images.txt order}, the release checked to be complete."""
    class_names = _unique(_table(base / "classes.txt", "class name"), base / "classes.txt")
    paths = _unique(_table(base / "images.txt", "image path"), base / "images.txt")
    labels_path = base / "image_class_labels.txt"
    labels = _unique(_table(labels_path, "class id"), labels_path)
    distinct = len(set(class_names.values()))
    if distinct != CLASSES or len(paths) != IMAGES:
        raise DataError(
            f"{base} lists {distinct} distinct classes and {len(paths)} images, not the "
            f"{CLASSES} classes and {IMAGES:,} images of CUB-200-2011: {_FIX}."
        )
    classes: dict[str, list[Path]] = {name: [] for name in class_names.values()}
    missing: list[str] = []
    for image_id, relative in paths.items():
        label = labels.get(image_id)
        name = class_names.get(int(label)) if label is not None and label.isdigit() else None
        if name is None:
            raise DataError(
                f"{labels_path} gives image {image_id} ({relative}) no class of classes.txt: "
                f"{_FIX}."
            )
        if relative.split("/")[0] != name:
            raise DataError(
                f"images.txt puts image {image_id} at {relative}, outside the folder of its "
                f"class {name}: {_FIX}."
            )
        path = base / "images" / relative
        if not path.is_file():
            missing.append(relative)
        classes[name].append(path)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(
            f"{len(missing)} image(s) listed in {base / 'images.txt'} are not under "
            f"{base / 'images'}: {', '.join(missing[:3])}{more}: {_FIX}."
        )
    return classes
