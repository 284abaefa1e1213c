"""Omniglot loading: the real data set (marked ``data``) and tiny synthetic copies for every way
a copy can be missing, partial or broken.

The synthetic copies use the real entry naming but a shrunken layout (``TINY``), patched into
the module's table of expected characters, so each error path runs in milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import stat
import time
import urllib.error
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metalab.data import cache, download, omniglot
from metalab.data.episodes import NWayKShot
from metalab.data.omniglot import OmniglotClasses, load_omniglot
from metalab.errors import ConfigError, DataError

TINY = {
    "images_background": {"Alpha": 2, "Beta": 1},
    "images_evaluation": {"Gamma": 2},
}
TINY_SPLITS = {
    "train": ["Alpha/character01", "Alpha/character02"],
    "val": ["Beta/character01"],
    "test": ["Gamma/character01", "Gamma/character02"],
    "trainval": ["Alpha/character01", "Alpha/character02", "Beta/character01"],
}

Files = dict[str, bytes]


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may write into the developer's ~/.cache."""
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "env-cache"))


# --- synthetic copies ---------------------------------------------------------------------------


def drawing(seed: int, size: int = 105, fmt: str = "PNG") -> bytes:
    """A 1-bit drawing like Omniglot's: white paper, a black L-shaped (chiral) stroke."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size), 255, dtype=np.uint8)
    row, col = (int(v) for v in rng.integers(5, size - 40, 2))
    pixels[row : row + 30, col : col + 4] = 0
    pixels[row + 26 : row + 30, col : col + 15] = 0
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    (image.convert("1") if fmt == "PNG" else image).save(buffer, fmt)
    return buffer.getvalue()


def tiny_files(archive: str) -> Files:
    """Entries ``<archive>/<Alphabet>/characterNN/NNNN_DD.png`` as in the official zips."""
    files, number = {}, 0 if archive == "images_background" else 3
    for alphabet, count in TINY[archive].items():
        for character in range(1, count + 1):
            number += 1
            folder = f"{archive}/{alphabet}/character{character:02d}"
            for drawer in range(1, 21):
                files[f"{folder}/{number:04d}_{drawer:02d}.png"] = drawing(number * 100 + drawer)
    return files


def write_zip(path: Path, files: Files) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def write_splits(root: Path) -> None:
    folder = root / "splits_vinyals"
    folder.mkdir(parents=True, exist_ok=True)
    for part, characters in TINY_SPLITS.items():
        lines = [f"{c}/rot{d:03d}" for c in characters for d in (0, 90, 180, 270)]
        (folder / f"{part}.txt").write_text("\n".join(lines) + "\n")


def make_root(
    tmp_path: Path,
    edit: Callable[[str, Files], None] | None = None,
    folders: bool = False,
    splits: bool = True,
) -> Path:
    """A tiny Omniglot root; ``edit(archive, files)`` may break the entries first."""
    root = tmp_path / "omniglot"
    root.mkdir(parents=True)
    for archive in TINY:
        files = tiny_files(archive)
        if edit is not None:
            edit(archive, files)
        if folders:
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
        else:
            write_zip(root / f"{archive}.zip", files)
    if splits:
        write_splits(root)
    return root


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the loader expect the TINY layout instead of the 1623 real characters."""
    monkeypatch.setattr(omniglot, "_EXPECTED", TINY)
    monkeypatch.setattr(omniglot, "_LAKE_VAL", 1)
    monkeypatch.setattr(omniglot, "_FINN_TRAIN", 2)
    monkeypatch.setattr(omniglot, "_FINN_VAL", 1)


def load(root: Path, tmp_path: Path, **kwargs) -> dict[str, OmniglotClasses]:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    return load_omniglot(root, **kwargs)


def class_index(pool: OmniglotClasses, name: str) -> int:
    return pool.class_names.index(name)


# --- synthetic: what a good copy gives ----------------------------------------------------------


@pytest.mark.usefixtures("tiny")
def test_tiny_copy_loads_as_vinyals_pools(tmp_path: Path) -> None:
    pools = load(make_root(tmp_path), tmp_path)
    assert [pools[p].num_classes for p in ("train", "val", "test")] == [8, 4, 8]
    train = pools["train"]
    assert train.class_names[:2] == ["Alpha/character01/rot000", "Alpha/character01/rot090"]
    assert train.examples_per_class == 20 and train.images.shape == (5, 20, 28, 28)
    x = train.examples(0, torch.tensor([3, 0, 7]))
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() == 1.0 and x.mean() < 0.5  # ink is 1, paper is 0
    assert pools["val"].images is train.images  # one shared tensor
    task = NWayKShot(train, ways=3, shots=1, queries=2).sample(torch.Generator().manual_seed(0))
    assert task.support_x.shape == (3, 1, 28, 28)


@pytest.mark.usefixtures("tiny")
def test_rotated_class_is_rot90_of_the_upright_one(tmp_path: Path) -> None:
    train = load(make_root(tmp_path), tmp_path)["train"]
    picks = torch.arange(20)
    upright = train.examples(class_index(train, "Alpha/character02/rot000"), picks)
    for turns in (1, 2, 3):
        name = f"Alpha/character02/rot{turns * 90:03d}"
        turned = train.examples(class_index(train, name), picks)
        assert torch.equal(turned, torch.rot90(upright, turns, dims=(-2, -1)))
        assert not torch.equal(turned, upright)


@pytest.mark.usefixtures("tiny")
def test_extracted_folders_give_the_same_tensor_as_zips(tmp_path: Path) -> None:
    zipped = load(make_root(tmp_path / "a"), tmp_path)["train"]
    folders = load(make_root(tmp_path / "b", folders=True), tmp_path)["train"]
    assert torch.equal(zipped.images, folders.images)
    assert zipped.class_names == folders.class_names


@pytest.mark.usefixtures("tiny")
def test_rotation_subset_keeps_only_those_lines(tmp_path: Path) -> None:
    train = load(make_root(tmp_path), tmp_path, rotations=(0, 180))["train"]
    assert train.class_names == [
        "Alpha/character01/rot000", "Alpha/character01/rot180",
        "Alpha/character02/rot000", "Alpha/character02/rot180",
    ]  # fmt: skip


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("split", ["lake", "finn"])
def test_shuffled_splits_are_seeded_and_disjoint(tmp_path: Path, split: str) -> None:
    root = make_root(tmp_path, splits=False)  # these splits need no split files
    first = load(root, tmp_path, split=split, seed=1)
    again = load(root, tmp_path, split=split, seed=1)
    chars = {part: pool.characters() for part, pool in first.items()}
    assert {p: pool.class_names for p, pool in again.items()} == {
        p: pool.class_names for p, pool in first.items()
    }
    assert not (chars["train"] & chars["val"] or chars["train"] & chars["test"])
    assert not chars["val"] & chars["test"]
    if split == "lake":
        assert (len(chars["train"]), len(chars["val"]), chars["test"]) == (2, 1, {3, 4})
    else:
        assert [len(chars[p]) for p in ("train", "val", "test")] == [2, 1, 2]
    assert first["train"].num_classes == 4 * len(chars["train"])


# --- configuration errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"split": "bogus"}, ["bogus", "vinyals, lake, finn", "dataset.split"]),
        ({"rotations": (0, 45)}, ["dataset.rotations", "90"]),
        ({"rotations": ()}, ["dataset.rotations"]),
        ({"rotations": (90, 90)}, ["once"]),
        ({"rotations": (360,)}, ["dataset.rotations"]),
        ({"image_size": 0}, ["dataset.image_size"]),
    ],
)
def test_impossible_settings_are_config_errors(tmp_path: Path, kwargs: dict, words: list) -> None:
    # The root does not exist: configuration is checked before any data is touched.
    with pytest.raises(ConfigError) as caught:
        load_omniglot(tmp_path / "nowhere", **kwargs)
    for word in words:
        assert word in str(caught.value)


# --- data errors --------------------------------------------------------------------------------


def test_missing_root_names_the_path_and_the_fixes(tmp_path: Path) -> None:
    root = tmp_path / "no" / "omniglot"
    with pytest.raises(DataError) as caught:
        load_omniglot(root)
    message = str(caught.value)
    for word in (str(root), "dataset.root", "METALAB_DATA", "dataset.download=true"):
        assert word in message


def test_missing_archive_says_how_to_get_it(tmp_path: Path) -> None:
    root = tmp_path / "omniglot"
    root.mkdir()
    with pytest.raises(DataError, match="images_background.zip.*dataset.download=true"):
        load_omniglot(root, cache_dir=tmp_path / "cache")


@pytest.mark.usefixtures("tiny")
def test_partial_copy_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    def remove(archive: str, files: Files) -> None:
        for name in list(files):
            if "/Beta/character01/" in name or name.endswith("0002_20.png"):
                del files[name]

    with pytest.raises(DataError) as caught:
        load(make_root(tmp_path, remove), tmp_path)
    message = str(caught.value)
    for word in (
        "images_background.zip", "1 of the 3 characters", "Beta (the whole alphabet)",
        "Alpha/character02 (19 drawings)", "dataset.download=true", "dataset.root",
    ):  # fmt: skip
        assert word in message


@pytest.mark.usefixtures("tiny")
def test_partial_extracted_folder_is_refused_too(tmp_path: Path) -> None:
    def drop_gamma(archive: str, files: Files) -> None:
        for name in [n for n in files if "/Gamma/character02/" in n]:
            del files[name]

    with pytest.raises(DataError, match=r"images_evaluation is incomplete.*Gamma/character02"):
        load(make_root(tmp_path, drop_gamma, folders=True), tmp_path)


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_file_that_is_not_a_zip_is_named(tmp_path: Path, damage: str) -> None:
    root = make_root(tmp_path)
    path = root / "images_evaluation.zip"
    data = path.read_bytes()
    path.write_bytes(b"<html>not found</html>" if damage == "garbage" else data[: len(data) // 2])
    before = {p.name: p.read_bytes() for p in root.glob("*.zip")}
    with pytest.raises(DataError) as caught:
        load(root, tmp_path)
    message = str(caught.value)
    assert "images_evaluation.zip is not a readable zip" in message
    assert "dataset.download=true" in message and "dataset.root" in message
    assert {p.name: p.read_bytes() for p in root.glob("*.zip")} == before  # nothing touched


@pytest.mark.usefixtures("tiny")
def test_a_corrupt_entry_is_named(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    path = root / "images_evaluation.zip"
    data = bytearray(path.read_bytes())
    data[100:140] = bytes(40)  # inside the first member's compressed data
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="images_evaluation.zip is truncated or corrupt at"):
        load(root, tmp_path)


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize(
    "entry",
    ["../evil.png", "/tmp/evil.png", "images_background/Alpha/../../../evil.png", "../outside/"],
)
def test_zip_slip_entries_are_refused(tmp_path: Path, entry: str) -> None:
    root = make_root(tmp_path)
    write_zip(root / "images_background.zip", {**tiny_files("images_background"), entry: b"x"})
    with pytest.raises(DataError, match="points outside .* so it is refused") as caught:
        load(root, tmp_path)
    assert entry in str(caught.value) and "dataset.download=true" in str(caught.value)
    assert not list(tmp_path.rglob("evil.png"))  # nothing was written anywhere


BAD_ENTRY = "images_background/Alpha/character01/0001_05.png"


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"this is not an image", "not a readable PNG"),
        (drawing(1, fmt="GIF"), "is a GIF file, not a PNG"),
        (drawing(1, size=100), "is 100x100 pixels, not the original 105x105"),
    ],
)
def test_bad_drawings_are_named(tmp_path: Path, data: bytes, words: str) -> None:
    def spoil(archive: str, files: Files) -> None:
        if archive == "images_background":
            files[BAD_ENTRY] = data

    with pytest.raises(DataError) as caught:
        load(make_root(tmp_path, spoil), tmp_path)
    assert BAD_ENTRY in str(caught.value) and words in str(caught.value)


@pytest.mark.usefixtures("tiny")
def test_a_stray_non_png_file_among_the_drawings_is_named(tmp_path: Path) -> None:
    stray = "images_background/Beta/character01/notes.txt"

    def add(archive: str, files: Files) -> None:
        if archive == "images_background":
            files[stray] = b"hello"

    with pytest.raises(DataError, match=f"{stray}, which is not a PNG drawing"):
        load(make_root(tmp_path, add), tmp_path)


@pytest.mark.usefixtures("tiny")
def test_missing_split_files_say_where_to_get_them(tmp_path: Path) -> None:
    root = make_root(tmp_path, splits=False)
    with pytest.raises(DataError) as caught:
        load(root, tmp_path)
    message = str(caught.value)
    for word in ("splits_vinyals", "data/omniglot/splits/vinyals/", "dataset.download=true"):
        assert word in message


@pytest.mark.usefixtures("tiny")
def test_a_split_line_naming_an_unknown_character_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    lines = "Beta/character01/rot000\nZeta/character07/rot090\n"
    (root / "splits_vinyals" / "val.txt").write_text(lines)
    with pytest.raises(DataError, match=r"Line 2 of .*val.txt names Zeta/character07"):
        load(root, tmp_path)


# --- the cache ----------------------------------------------------------------------------------


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("omniglot-*.pt"))


@pytest.mark.usefixtures("tiny")
def test_cache_goes_to_metalab_cache_by_default(tmp_path: Path) -> None:
    load_omniglot(make_root(tmp_path))
    assert len(cache_files(tmp_path / "env-cache")) == 2


@pytest.mark.usefixtures("tiny")
def test_second_load_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path)
    first = load(root, tmp_path)["train"]
    monkeypatch.setattr(omniglot, "_decode_archive", _must_not_decode)
    assert torch.equal(load(root, tmp_path)["train"].images, first.images)


def _must_not_decode(*args: object) -> None:
    raise AssertionError("decoded again although a valid cache exists")


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("damage", ["garbage", "truncated", "tampered"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    root = make_root(tmp_path)
    expected = load(root, tmp_path)["train"].images.clone()
    for path in cache_files(tmp_path / "cache"):
        if damage == "tampered":  # a loadable file whose tensor no longer matches its hash
            blob = torch.load(path, weights_only=True)
            blob["images"][0, 0, 0, 0] += 1
            torch.save(blob, path)
        else:
            data = path.read_bytes()
            path.write_bytes(b"\0" * 64 if damage == "garbage" else data[: len(data) // 3])
    with caplog.at_level(logging.WARNING, logger="metalab.data.omniglot"):
        again = load(root, tmp_path)["train"].images
    assert torch.equal(again, expected)
    assert "rebuilding" in caplog.text
    for path in cache_files(tmp_path / "cache"):  # rewritten intact
        assert torch.load(path, weights_only=True)["content_hash"] == cache.tensor_hash(
            torch.load(path, weights_only=True)["images"]
        )


@pytest.mark.usefixtures("tiny")
def test_a_changed_source_is_not_served_from_a_stale_cache(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    before = load(root, tmp_path)["val"].images.clone()
    files = tiny_files("images_background")
    files["images_background/Alpha/character01/0001_01.png"] = drawing(999)
    write_zip(root / "images_background.zip", files)
    after = load(root, tmp_path)["val"].images
    assert not torch.equal(after[0, 0], before[0, 0]) and torch.equal(after[1:], before[1:])


@pytest.mark.usefixtures("tiny")
def test_an_unwritable_cache_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        pools = load_omniglot(make_root(tmp_path), cache_dir=blocker / "cache")
    assert pools["train"].num_classes == 8
    assert f"Could not write the Omniglot cache in {blocker / 'cache'}" in caplog.text
    assert "METALAB_CACHE" in caplog.text
    assert len(cache_files(tmp_path / "env-cache")) == 2  # written to the writable fallback


@pytest.mark.usefixtures("tiny")
def test_with_no_writable_cache_folder_the_data_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("METALAB_CACHE", str(blocker / "env"))
    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(blocker / "tmp"))
    with caplog.at_level(logging.WARNING):
        pools = load_omniglot(make_root(tmp_path), cache_dir=blocker / "cache")
    assert pools["test"].num_classes == 8 and "it stays uncached" in caplog.text


@pytest.mark.usefixtures("tiny")
def test_a_read_only_data_root_works_and_is_left_untouched(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
    for path in modes:
        path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
    try:
        pools = load_omniglot(root, cache_dir=tmp_path / "cache")
        load_omniglot(root, cache_dir=tmp_path / "cache")  # warm
    finally:
        for path, mode in modes.items():
            path.chmod(stat.S_IMODE(mode))
    assert pools["test"].num_classes == 8
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before


# --- downloading --------------------------------------------------------------------------------


class FakeNet:
    """Stands in for ``_fetch``: serves bytes by URL file name and records every request."""

    def __init__(self, served: dict[str, bytes]) -> None:
        self.served, self.requests = served, []

    def __call__(self, url: str, dest: Path) -> None:
        self.requests.append(url.rsplit("/", 1)[-1])
        name = url.rsplit("/", 1)[-1]
        if name not in self.served:
            raise urllib.error.URLError("no route to host")
        dest.write_bytes(self.served[name])


def official_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Tiny zips and split files posing as the upstream release (their md5s become upstream)."""
    source = make_root(tmp_path / "upstream")
    served = {p.name: p.read_bytes() for p in source.glob("*.zip")}
    served.update({p.name: p.read_bytes() for p in (source / "splits_vinyals").glob("*.txt")})
    md5s = {a: hashlib.md5(served[f"{a}.zip"]).hexdigest() for a in TINY}
    monkeypatch.setattr(omniglot, "_UPSTREAM_MD5", md5s)
    return served


@pytest.mark.usefixtures("tiny")
def test_download_fetches_what_is_missing_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = FakeNet(official_files(tmp_path, monkeypatch))
    monkeypatch.setattr(download, "fetch", net)
    root = tmp_path / "data" / "omniglot"
    pools = load(root, tmp_path, download=True)
    assert pools["train"].num_classes == 8
    assert sorted(net.requests) == sorted(
        ["images_background.zip", "images_evaluation.zip", "train.txt", "val.txt", "test.txt",
         "trainval.txt"]
    )  # fmt: skip
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temp files left
    net.requests.clear()
    load(root, tmp_path, download=True)
    assert net.requests == []


@pytest.mark.usefixtures("tiny")
def test_download_accepts_a_complete_local_copy_with_another_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = FakeNet({})
    monkeypatch.setattr(download, "fetch", net)
    pools = load(make_root(tmp_path), tmp_path, download=True)  # md5s are not the upstream ones
    assert pools["val"].num_classes == 4 and net.requests == []


@pytest.mark.usefixtures("tiny")
def test_download_with_wrong_md5_deletes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "fetch", lambda url, dest: dest.write_bytes(b"junk"))
    root = tmp_path / "omniglot"
    with pytest.raises(DataError, match=r"md5 .* so it was deleted.*dataset.download=true"):
        load(root, tmp_path, download=True)
    assert list(root.iterdir()) == []  # neither the zip nor a temp file stays behind


@pytest.mark.usefixtures("tiny")
def test_a_bad_download_leaves_the_earlier_local_copy_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "fetch", lambda url, dest: dest.write_bytes(b"junk"))

    def drop(archive: str, files: Files) -> None:
        for name in [n for n in files if "/Gamma/" in n]:
            del files[name]

    root = make_root(tmp_path, drop)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match=r"images_evaluation.zip has md5 .* so it was deleted"):
        load(root, tmp_path, download=True)
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.usefixtures("tiny")
def test_download_replaces_a_partial_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    net = FakeNet(official_files(tmp_path, monkeypatch))
    monkeypatch.setattr(download, "fetch", net)

    def drop(archive: str, files: Files) -> None:
        for name in [n for n in files if "/Gamma/" in n]:
            del files[name]

    with caplog.at_level(logging.WARNING, logger="metalab.data.omniglot"):
        pools = load(make_root(tmp_path, drop), tmp_path, download=True)
    assert pools["test"].num_classes == 8 and net.requests == ["images_evaluation.zip"]
    assert "incomplete" in caplog.text


@pytest.mark.usefixtures("tiny")
def test_download_failure_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "fetch", FakeNet({}))
    root = tmp_path / "omniglot"
    with pytest.raises(DataError, match="Could not download .*images_background.zip.*by hand"):
        load(root, tmp_path, download=True)
    assert list(root.iterdir()) == []


# --- the real data set --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """(root, cache dir, vinyals pools); the one cold decode of the session happens here."""
    if not os.environ.get("METALAB_DATA"):
        pytest.skip("METALAB_DATA is not set: point it at the folder holding omniglot/")
    root = Path(os.environ["METALAB_DATA"]) / "omniglot"
    if not root.is_dir():
        pytest.skip(f"{root} does not exist: METALAB_DATA must hold omniglot/")
    cache = tmp_path_factory.mktemp("omniglot-cache")
    # set up before the autouse fixture's METALAB_CACHE: keep the developer's cache out here too
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALAB_CACHE", str(tmp_path_factory.mktemp("real-env-cache")))
        return root, cache, load_omniglot(root, cache_dir=cache)


@pytest.mark.data
def test_real_vinyals_class_counts(real: tuple[Path, Path, dict]) -> None:
    pools = real[2]
    assert [pools[p].num_classes for p in ("train", "val", "test")] == [4112, 688, 1692]
    assert [len(pools[p].characters()) for p in ("train", "val", "test")] == [1028, 172, 423]
    assert all(pool.examples_per_class == 20 for pool in pools.values())
    assert pools["train"].images.shape == (1623, 20, 28, 28)
    assert pools["train"].class_names[0] == "Angelic/character01/rot000"


@pytest.mark.data
def test_real_vinyals_rotation_subset(real: tuple[Path, Path, dict]) -> None:
    root, cache, _ = real
    pools = load_omniglot(root, rotations=(0,), cache_dir=cache)
    assert [pools[p].num_classes for p in ("train", "val", "test")] == [1028, 172, 423]
    assert all(name.endswith("/rot000") for name in pools["test"].class_names)


@pytest.mark.data
@pytest.mark.parametrize(
    ("split", "characters"), [("lake", [864, 100, 659]), ("finn", [1100, 100, 423])]
)
def test_real_shuffled_split_counts(
    real: tuple[Path, Path, dict], split: str, characters: list[int]
) -> None:
    root, cache, _ = real
    pools = load_omniglot(root, split=split, cache_dir=cache, seed=3)
    assert [len(pools[p].characters()) for p in ("train", "val", "test")] == characters
    assert [pools[p].num_classes for p in ("train", "val", "test")] == [4 * n for n in characters]
    other = load_omniglot(root, split=split, cache_dir=cache, seed=4)
    assert other["val"].characters() != pools["val"].characters()  # the seed matters
    if split == "lake":  # test is exactly the evaluation alphabets
        assert pools["test"].characters() == set(range(964, 1623))


@pytest.mark.data
@pytest.mark.parametrize("split", ["vinyals", "lake", "finn"])
def test_real_splits_are_disjoint_characters(real: tuple[Path, Path, dict], split: str) -> None:
    root, cache, _ = real
    pools = load_omniglot(root, split=split, cache_dir=cache)
    train, val, test = (pools[p].characters() for p in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    if split != "lake":
        assert len(train | val | test) == 1623


@pytest.mark.data
def test_real_examples_shape_dtype_range(real: tuple[Path, Path, dict]) -> None:
    test = real[2]["test"]
    x = test.examples(5, torch.tensor([0, 19, 7]))
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.02 < x.mean() < 0.4  # strokes are bright on a dark background


@pytest.mark.data
def test_real_rotated_class_is_rot90_of_upright(real: tuple[Path, Path, dict]) -> None:
    val = real[2]["val"]
    upright = val.examples(class_index(val, "Hebrew/character05/rot000"), torch.arange(20))
    for turns in (1, 2, 3):
        index = class_index(val, f"Hebrew/character05/rot{turns * 90:03d}")
        assert torch.equal(
            val.examples(index, torch.arange(20)), torch.rot90(upright, turns, dims=(-2, -1))
        )


@pytest.mark.data
def test_real_braille_duplicate_drawing(real: tuple[Path, Path, dict]) -> None:
    """Upstream ships 0192_03.png and 0192_19.png of Braille/character01 as the same file."""
    train = real[2]["train"]
    index = train.class_names.index("Braille/character01/rot000")
    drawings = train.examples(index, torch.tensor([2, 18, 0]))
    assert torch.equal(drawings[0], drawings[1]) and not torch.equal(drawings[0], drawings[2])


@pytest.mark.data
def test_real_partial_copy_is_refused_before_decoding(
    real: tuple[Path, Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real background zip without Tifinagh and Latin/character07 is refused by name."""
    root = tmp_path / "omniglot"
    root.mkdir()
    shutil.copy(real[0] / "images_evaluation.zip", root)
    with (
        zipfile.ZipFile(real[0] / "images_background.zip") as full,
        zipfile.ZipFile(root / "images_background.zip", "w") as partial,
    ):
        for info in full.infolist():
            if "/Tifinagh/" not in info.filename and "/Latin/character07/" not in info.filename:
                partial.writestr(info, full.read(info))
    monkeypatch.setattr(omniglot, "_decode", _must_not_decode)
    with pytest.raises(DataError) as caught:
        load_omniglot(root, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    for word in ("images_background.zip", "908 of the 964", "56 missing", "Tifinagh (the whole"):
        assert word in message
    assert "Latin/character07" in message and "dataset.download=true" in message


@pytest.mark.data
def test_real_second_load_hits_the_cache(
    real: tuple[Path, Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cache, pools = real
    monkeypatch.setattr(omniglot, "_decode_archive", _must_not_decode)
    started = time.perf_counter()
    again = load_omniglot(root, cache_dir=cache)
    assert time.perf_counter() - started < 5.0  # a cold decode takes 10+ s
    assert torch.equal(again["train"].images, pools["train"].images)
    assert again["test"].class_names == pools["test"].class_names
