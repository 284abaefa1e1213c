"""Omniglot (Lake et al. 2015) as class pools for N-way K-shot episodes.

Why it looks like this:

- Every drawing is decoded exactly once (PNG -> grey -> Lanczos resize -> invert, so ink is 255)
  into one shared uint8 tensor ``[characters, 20, S, S]``; episodes then only index that tensor.
  The decoded tensor is cached with ``torch.save`` outside the data root (which may be
  read-only), keyed by a fingerprint of the source so that a changed copy is never served stale.
- PNGs are read straight out of the official zips (or the same trees already extracted), and a
  copy is refused unless every character of the official release is there with all 20
  drawings: a partial copy would silently change the splits and every number computed on them.
- A class is a (character, quarter turns) pair, as in Vinyals et al. and MAML; rotating happens
  per episode with ``torch.rot90`` rather than storing four copies.
- Three character splits are offered: ``vinyals`` (the split files of Prototypical Networks),
  ``lake`` (background / evaluation, 100 background characters held out for validation) and
  ``finn`` (MAML's seeded shuffle of all 1623 characters, 1100 / 100 / 423).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metalab.data import download as net
from metalab.data.archives import open_tree
from metalab.data.cache import TensorCache, cache_folder, fingerprint
from metalab.data.images import decode_image
from metalab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ARCHIVES = ("images_background", "images_evaluation")
SPLITS = ("vinyals", "lake", "finn")
ROTATIONS = (0, 90, 180, 270)
DRAWINGS = 20
SOURCE_SIDE = 105
CACHE_FORMAT = 1

_LAKE_VAL = 100
_FINN_TRAIN, _FINN_VAL = 1100, 100
_VINYALS_DIR = "splits_vinyals"
_VINYALS_PARTS = ("train", "val", "test")
_VINYALS_FILES = ("train", "val", "test", "trainval")

_ARCHIVE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{}.zip"
_SPLIT_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/"
    "data/omniglot/splits/vinyals/{}.txt"
)
# md5 of the zips as published upstream; checked only for files this module downloads itself.
_UPSTREAM_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}

# The official release: alphabet -> number of characters (character01 .. characterNN).
# fmt: off
_EXPECTED: dict[str, dict[str, int]] = {
    "images_background": {
        "Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 29, "Arcadian": 26, "Armenian": 41,
        "Asomtavruli_(Georgian)": 40, "Balinese": 24, "Bengali": 46,
        "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14, "Braille": 26, "Burmese_(Myanmar)": 34,
        "Cyrillic": 33, "Early_Aramaic": 22, "Futurama": 26, "Grantha": 43, "Greek": 24,
        "Gujarati": 48, "Hebrew": 22, "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16,
        "Japanese_(hiragana)": 52, "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26,
        "Malay_(Jawi_-_Arabic)": 40, "Mkhedruli_(Georgian)": 41, "N_Ko": 33,
        "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14, "Sanskrit": 42, "Syriac_(Estrangelo)": 23,
        "Tagalog": 17, "Tifinagh": 55,
    },  # 30 alphabets, 964 characters
    "images_evaluation": {
        "Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26, "Avesta": 26,
        "Ge_ez": 26, "Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41, "Keble": 26,
        "Malayalam": 47, "Manipuri": 40, "Mongolian": 30, "Old_Church_Slavonic_(Cyrillic)": 45,
        "Oriya": 46, "Sylheti": 28, "Syriac_(Serto)": 23, "Tengwar": 25, "Tibetan": 42,
        "ULOG": 26,
    },  # 20 alphabets, 659 characters
}
# fmt: on

_FIX = "re-download it with dataset.download=true, or point dataset.root at a complete copy"
_SPLIT_FIX = "delete the file and set dataset.download=true, or restore the original"


class OmniglotClasses:
    """A ClassPool over Omniglot: class ``i`` is character ``classes[i, 0]`` turned
    ``classes[i, 1]`` quarter turns counter-clockwise.

    All pools of one load share the same ``images`` tensor, so a split costs only its table.
    """

    def __init__(self, images: torch.Tensor, classes: torch.Tensor, class_names: list[str]):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [characters, drawings, S, S], not {images.dtype} "
                f"{list(images.shape)}"
            )
        if classes.dim() != 2 or classes.shape[1] != 2 or len(class_names) != len(classes):
            raise ValueError("classes must be [num_classes, 2] with one name per class")
        self.images = images
        self.classes = classes.to(torch.long)
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.examples_per_class = images.shape[1]
        # Plain ints: indexing a Python list is far cheaper than a tensor, once per class per task.
        self._lookup: list[tuple[int, int]] = [tuple(row) for row in self.classes.tolist()]

    def examples(self, class_index: int, example_indices: torch.Tensor) -> torch.Tensor:
        """Float32 drawings ``[n, 1, S, S]`` in [0, 1] (ink = 1), rotated as the class says."""
        character, turns = self._lookup[class_index]
        indices = torch.as_tensor(example_indices, dtype=torch.long)
        drawings = self.images[character].index_select(0, indices)
        if turns:
            drawings = torch.rot90(drawings, turns, dims=(-2, -1))
        out = drawings.unsqueeze(1).to(torch.float32, memory_format=torch.contiguous_format)
        return out.div_(255.0)

    def characters(self) -> set[int]:
        """Indices of the base characters this pool uses (to check that splits are disjoint)."""
        return set(self.classes[:, 0].tolist())

    def __repr__(self) -> str:
        size = self.images.shape[-1]
        return f"OmniglotClasses({self.num_classes} classes, {self.examples_per_class} x {size}px)"


def load_omniglot(
    root: str | os.PathLike[str],
    split: str = "vinyals",
    image_size: int = 28,
    rotations: Sequence[int] = ROTATIONS,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    seed: int = 0,
) -> dict[str, OmniglotClasses]:
    """Load Omniglot from ``root`` (the folder holding the two zips) as train/val/test pools.

    ``seed`` only matters for the ``lake`` and ``finn`` splits, which shuffle characters.
    Raises ConfigError for impossible settings and DataError for missing or broken data.
    """
    turns = _check_config(split, image_size, rotations)
    root = _check_root(Path(root).expanduser(), download)
    cache = cache_folder(cache_dir)
    parts = [_archive_images(root, a, image_size, cache, download) for a in ARCHIVES]
    images = torch.cat([images for images, _ in parts])
    names = [name for _, archive_names in parts for name in archive_names]
    if split == "vinyals":
        chosen = _vinyals_classes(root, names, turns, download)
    else:
        chosen = _shuffled_classes(split, names, len(parts[0][1]), turns, seed)
    return {part: _pool(images, names, classes) for part, classes in chosen.items()}


# --- configuration ---------------------------------------------------------------------------


def _check_config(split: str, image_size: int, rotations: Sequence[int]) -> list[int]:
    """Refuse impossible settings before any data is touched; returns the quarter turns."""
    if split not in SPLITS:
        raise ConfigError(
            f"Unknown Omniglot split {split!r}: set dataset.split to one of {', '.join(SPLITS)}."
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(
            f"dataset.image_size={image_size!r}: set it to a positive whole number of pixels "
            f"(28 is the usual for Omniglot)."
        )
    rotations = list(rotations)
    valid = all(not isinstance(r, bool) and r in ROTATIONS for r in rotations)
    if not rotations or not valid or len(set(rotations)) != len(rotations):
        raise ConfigError(
            f"dataset.rotations={rotations}: list each rotation once, in degrees, "
            f"from {list(ROTATIONS)} (multiples of 90 only)."
        )
    return [int(r) // 90 for r in rotations]


def _check_root(root: Path, download: bool) -> Path:
    """The data folder must exist, unless we are asked to download into it."""
    holds = "images_background.zip and images_evaluation.zip"
    return net.data_root(root, download, "Omniglot", holds)


# --- sources: a zip or an extracted folder --------------------------------------------------


def _find_source(root: Path, archive: str) -> Path | None:
    """The zip if there is one (the official form), else the extracted folder, else None."""
    for candidate in (root / f"{archive}.zip", root / archive):
        if candidate.exists():
            return candidate
    return None


# --- checking and decoding one archive ------------------------------------------------------


def _expected_characters(archive: str) -> list[str]:
    return [
        f"{alphabet}/character{number:02d}"
        for alphabet, count in _EXPECTED[archive].items()
        for number in range(1, count + 1)
    ]


def _index_drawings(source: Path, archive: str, names: list[str]) -> dict[str, list[str]]:
    """Drawing entries of each expected character; other files outside character folders
    (README, __MACOSX, unknown alphabets) are ignored."""
    wanted = set(_expected_characters(archive))
    found: dict[str, list[str]] = {}
    for name in names:
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != archive or parts[3].startswith("."):
            continue
        character = f"{parts[1]}/{parts[2]}"
        if character not in wanted:
            continue
        if not parts[3].lower().endswith(".png"):
            raise DataError(
                f"{source} has {name}, which is not a PNG drawing, in a character folder: {_FIX}."
            )
        found.setdefault(character, []).append(name)
    return {character: sorted(entries) for character, entries in found.items()}


def _check_complete(source: Path, archive: str, found: dict[str, list[str]]) -> None:
    """Refuse a partial copy, naming what is missing."""
    expected = _expected_characters(archive)
    missing = [c for c in expected if c not in found]
    counts = {c: len(found[c]) for c in expected if c in found}
    short = [f"{c} ({n} drawings)" for c, n in counts.items() if n != DRAWINGS]
    if not missing and not short:
        return
    problems = [_describe_missing(archive, missing)] if missing else []
    if short:
        problems.append(f"{len(short)} with other than {DRAWINGS} drawings: {_few(short)}")
    layout = f" (expected {archive}/<Alphabet>/characterNN/NNNN_DD.png)" if not found else ""
    raise DataError(
        f"{source} is incomplete: {len(expected) - len(missing) - len(short)} of the "
        f"{len(expected)} characters are complete{layout}; {'; '.join(problems)}. "
        f"Fix: {_FIX}."
    )


def _describe_missing(archive: str, missing: list[str]) -> str:
    """Whole missing alphabets by name, other missing characters one by one."""
    counts = Counter(c.split("/")[0] for c in missing)
    whole = [a for a, n in counts.items() if n == _EXPECTED[archive][a]]
    rest = [c for c in missing if c.split("/")[0] not in whole]
    named = [f"{a} (the whole alphabet)" for a in whole] + rest
    return f"{len(missing)} missing: {_few(named)}"


def _few(items: list[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _decode(data: bytes, source: Path, name: str, size: int) -> np.ndarray:
    """One drawing as uint8 [size, size] with ink = 255."""
    grey = decode_image(data, source, name, _FIX, "L", size, ("PNG",), SOURCE_SIDE)
    return 255 - grey


def _decode_archive(source: Path, archive: str, size: int) -> tuple[torch.Tensor, list[str]]:
    """Check that the source is complete, then decode every drawing once."""
    started = time.perf_counter()
    with open_tree(source, _FIX) as (names, read):
        found = _index_drawings(source, archive, names)
        _check_complete(source, archive, found)
        characters = _expected_characters(archive)
        images = np.empty((len(characters), DRAWINGS, size, size), dtype=np.uint8)
        for i, character in enumerate(characters):
            for j, entry in enumerate(found[character]):
                images[i, j] = _decode(read(entry), source, entry, size)
    log.info(
        "Decoded %d Omniglot drawings from %s in %.1f s",
        images.shape[0] * DRAWINGS,
        source,
        time.perf_counter() - started,
    )
    return torch.from_numpy(images), characters


# --- the decoded-tensor cache ---------------------------------------------------------------


def _cached_decode(
    source: Path, archive: str, size: int, cache: Path
) -> tuple[torch.Tensor, list[str]]:
    layout = repr(sorted(_EXPECTED[archive].items()))
    key = (CACHE_FORMAT, size, fingerprint(source), layout)

    def intact(blob: dict) -> bool:
        return tuple(blob["images"].shape) == (len(blob["names"]), DRAWINGS, size, size)

    def build() -> dict:
        images, names = _decode_archive(source, archive, size)
        return {"images": images, "names": names}

    stem = f"omniglot-{archive}-{size}px-v{CACHE_FORMAT}"
    blob = TensorCache(cache, stem, key, "Omniglot", intact).load_or_build(build)
    return blob["images"], list(blob["names"])


def _archive_images(
    root: Path, archive: str, size: int, cache: Path, download: bool
) -> tuple[torch.Tensor, list[str]]:
    """One archive's tensor; with download=True a missing or broken local copy is re-fetched."""
    source = _find_source(root, archive)
    if source is None:
        if not download:
            raise DataError(
                f"Neither {archive}.zip nor a folder {archive}/ is in {root}: set "
                f"dataset.download=true, or point dataset.root at a complete copy of Omniglot."
            )
        return _cached_decode(_download_archive(root, archive), archive, size, cache)
    try:
        return _cached_decode(source, archive, size, cache)
    except DataError as err:
        if not download:
            raise
        log.warning("%s Downloading a fresh copy because dataset.download=true.", err)
        return _cached_decode(_download_archive(root, archive), archive, size, cache)


# --- downloading ----------------------------------------------------------------------------


def _download_archive(root: Path, archive: str) -> Path:
    url = _ARCHIVE_URL.format(archive)
    return net.download(url, root / f"{archive}.zip", _UPSTREAM_MD5[archive])


# --- splits ---------------------------------------------------------------------------------


def _pool(
    images: torch.Tensor, names: list[str], classes: list[tuple[int, int]]
) -> OmniglotClasses:
    table = torch.tensor(classes, dtype=torch.long).reshape(-1, 2)
    labels = [f"{names[c]}/rot{t * 90:03d}" for c, t in classes]
    return OmniglotClasses(images, table, labels)


def _shuffled_classes(
    split: str, names: list[str], num_background: int, turns: list[int], seed: int
) -> dict[str, list[tuple[int, int]]]:
    """lake: background minus 100 seeded held-out characters / those 100 / evaluation.
    finn: a seeded shuffle of all characters cut 1100 / 100 / rest (423)."""
    generator = torch.Generator().manual_seed(seed)
    if split == "lake":
        order = torch.randperm(num_background, generator=generator).tolist()
        groups = [order[_LAKE_VAL:], order[:_LAKE_VAL], range(num_background, len(names))]
    else:
        order = torch.randperm(len(names), generator=generator).tolist()
        cut = _FINN_TRAIN + _FINN_VAL
        groups = [order[:_FINN_TRAIN], order[_FINN_TRAIN:cut], order[cut:]]
    return {
        part: [(c, t) for c in sorted(group) for t in turns]
        for part, group in zip(("train", "val", "test"), groups, strict=True)
    }


def _vinyals_classes(
    root: Path, names: list[str], turns: list[int], download: bool
) -> dict[str, list[tuple[int, int]]]:
    folder = root / _VINYALS_DIR
    missing = [part for part in _VINYALS_FILES if not (folder / f"{part}.txt").is_file()]
    if download and missing:
        net.make_folder(folder, "the Vinyals split files")
        for part in missing:
            net.download(_SPLIT_URL.format(part), folder / f"{part}.txt")
    index = {name: i for i, name in enumerate(names)}
    return {part: _read_split(folder / f"{part}.txt", index, turns) for part in _VINYALS_PARTS}


_SPLIT_LINE = re.compile(r"^(?P<character>[^/]+/character\d+)/rot(?P<degrees>\d{3})$")


def _read_split(path: Path, index: dict[str, int], turns: list[int]) -> list[tuple[int, int]]:
    """The classes listed in one Vinyals split file, kept in file order, filtered to ``turns``."""
    if not path.is_file():
        raise DataError(
            f"Vinyals split file {path} is missing: copy train.txt, val.txt and test.txt from the "
            f"Prototypical Networks repository's data/omniglot/splits/vinyals/ into {path.parent}, "
            f"or set dataset.download=true."
        )
    classes, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        entry = _parse_split_line(path, number, line.strip(), index)
        if entry in seen:
            raise DataError(f"Line {number} of {path} repeats {line.strip()!r}: {_SPLIT_FIX}.")
        seen.add(entry)
        if entry[1] in turns:
            classes.append(entry)
    if not seen:
        raise DataError(f"Vinyals split file {path} lists no classes: {_SPLIT_FIX}.")
    return classes


def _parse_split_line(path: Path, number: int, line: str, index: dict[str, int]) -> tuple[int, int]:
    match = _SPLIT_LINE.match(line)
    degrees = int(match["degrees"]) if match else -1
    if match is None or degrees not in ROTATIONS:
        raise DataError(
            f"Line {number} of {path} is {line[:80]!r}, not 'Alphabet/characterNN/rotDDD' with "
            f"DDD in 000/090/180/270: {_SPLIT_FIX}."
        )
    if match["character"] not in index:
        raise DataError(
            f"Line {number} of {path} names {match['character']}, which is not an Omniglot "
            f"character: {_SPLIT_FIX}."
        )
    return index[match["character"]], degrees // 90
