"""CIFAR-FS and FC100 from a tiny CIFAR-100 in the official format.

The fixture is ``cifar-100-python.tar.gz`` (or the extracted ``cifar-100-python/``) holding
``train``, ``test`` and ``meta`` pickles with the official keys, dtypes and label order, with
all 100 classes but only 3 train + 1 test image each (``IMAGES_PER_CLASS`` patched to 4).
Each image carries its identity in pixel (0, 0): red = fine label, green = position in its
file, blue = 0 for train and 1 for test, so every mapping can be checked exactly.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import stat
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from metalab.data import cifar, download
from metalab.data.cifar import CIFAR_FS, FC100, FINE_NAMES, SUPERCLASSES, load_cifar
from metalab.data.episodes import NWayKShot
from metalab.errors import ConfigError, DataError
from tests.helpers.fake_cifar import (
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    make_root,
    official_files,
    write_tar,
)


@pytest.fixture(autouse=True)
def _tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private default cache, and 4 images per class instead of 600."""
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setattr(cifar, "IMAGES_PER_CLASS", TRAIN_PER_CLASS + TEST_PER_CLASS)


def load(root: Path, tmp_path: Path, benchmark: str = "cifar_fs", **kwargs) -> dict:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    return load_cifar(benchmark, root, **kwargs)


def identity(x: torch.Tensor) -> torch.Tensor:
    """The fine label written into pixel (0, 0) of each image of [n, 3, 32, 32] in [0, 1]."""
    return (x[:, 0, 0, 0] * 255).round().long()


# --- the class lists carried in the package ---------------------------------------------------


def test_cifar100_table_has_100_classes_in_20_superclasses_of_5() -> None:
    assert len(SUPERCLASSES) == 20 and all(len(c) == 5 for c in SUPERCLASSES.values())
    assert len(FINE_NAMES) == len(set(FINE_NAMES)) == 100
    assert FINE_NAMES[:3] == ["apple", "aquarium_fish", "baby"]  # the meta file's order


@pytest.mark.parametrize(
    ("benchmark", "counts"), [("cifar_fs", [64, 16, 20]), ("fc100", [60, 20, 20])]
)
def test_split_lists_have_the_published_sizes_and_are_disjoint(benchmark, counts) -> None:
    parts = cifar.split_classes(benchmark)
    assert [len(parts[p]) for p in ("train", "val", "test")] == counts
    union = set().union(*parts.values())
    assert len(union) == 100 and union == set(FINE_NAMES)  # disjoint and complete


def test_fc100_splits_superclasses_12_4_4_by_their_published_coarse_labels() -> None:
    coarse = list(SUPERCLASSES)
    labels = {p: sorted(coarse.index(s) for s in FC100[p]) for p in FC100}
    assert labels == {
        "train": [1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19],
        "val": [8, 11, 13, 16],
        "test": [0, 7, 12, 14],
    }


def test_cifar_fs_spot_checks_against_bertinetto_lists() -> None:
    assert CIFAR_FS["val"][:4] == ("beaver", "otter", "flatfish", "shark")
    assert {"whale", "rocket", "pickup_truck"} <= set(CIFAR_FS["test"])


def test_unknown_benchmark_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown CIFAR-100 benchmark 'cifar10'"):
        load_cifar("cifar10", tmp_path / "nowhere")


# --- what a good copy gives -------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", ["cifar_fs", "fc100"])
def test_pools_hold_their_split_classes_with_all_images(tmp_path: Path, benchmark: str) -> None:
    pools = load(make_root(tmp_path), tmp_path, benchmark)
    for part, names in cifar.split_classes(benchmark).items():
        pool = pools[part]
        assert pool.class_names == names and pool.examples_per_class == 4
        for index in (0, pool.num_classes - 1):
            x = pool.examples(index, torch.arange(4))
            assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
            assert identity(x).tolist() == [FINE_NAMES.index(names[index])] * 4
            assert (x[:, 2, 0, 0] * 255).round().tolist() == [0, 0, 0, 1]  # train, then test
    assert pools["train"].images.shape == (100, 4, 3, 32, 32)
    assert pools["train"].images.dtype == torch.uint8
    assert pools["val"].images is pools["train"].images  # one shared tensor


def test_the_cached_tensor_is_uint8_in_class_order(tmp_path: Path) -> None:
    load(make_root(tmp_path), tmp_path)
    (path,) = (tmp_path / "cache").glob("cifar100-32px-*.pt")
    images = torch.load(path, weights_only=True)["images"]
    assert images.shape == (100, 4, 3, 32, 32) and images.dtype == torch.uint8
    assert images[:, :, 0, 0, 0].tolist() == [[c] * 4 for c in range(100)]


@pytest.mark.parametrize("benchmark", ["cifar_fs", "fc100"])
def test_every_episode_draws_only_classes_of_its_split(tmp_path: Path, benchmark: str) -> None:
    pools = load(make_root(tmp_path), tmp_path, benchmark)
    generator = torch.Generator().manual_seed(0)
    for part, pool in pools.items():
        allowed = {FINE_NAMES.index(n) for n in cifar.split_classes(benchmark)[part]}
        episodes = NWayKShot(pool, ways=5, shots=1, queries=2)
        seen = set()
        for _ in range(20):
            task = episodes.sample(generator)
            support, query = identity(task.support_x), identity(task.query_x)
            assert set(support.tolist()) <= allowed and set(query.tolist()) <= allowed
            assert len(set(support.tolist())) == 5  # five distinct classes
            for label in range(5):  # a label means one class in support and query alike
                assert set(query[task.query_y == label].tolist()) == {support[label].item()}
            seen |= set(support.tolist())
        assert len(seen) > 5


def test_extracted_folder_gives_the_same_tensor_as_the_tarball(tmp_path: Path) -> None:
    tarball = load(make_root(tmp_path / "a"), tmp_path)["train"].images
    folder = load(make_root(tmp_path / "b", folder=True), tmp_path)["train"].images
    assert torch.equal(tarball, folder)


def test_python2_style_bytes_keys_are_read_too(tmp_path: Path) -> None:
    files = {
        name: pickle.dumps({k.encode(): v for k, v in pickle.loads(data).items()}, protocol=2)
        for name, data in official_files().items()
    }
    pools = load(make_root(tmp_path, files), tmp_path, "fc100")
    assert pools["test"].num_classes == 20


def test_image_size_shrinks_the_images(tmp_path: Path) -> None:
    pools = load(make_root(tmp_path), tmp_path, image_size=16)
    assert pools["train"].examples(0, torch.tensor([0, 1])).shape == (2, 3, 16, 16)


def test_second_load_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path)
    first = load(root, tmp_path)["train"].images
    monkeypatch.setattr(cifar, "_decode", _must_not_decode)
    assert torch.equal(load(root, tmp_path, "fc100")["train"].images, first)


def _must_not_decode(*args: object) -> None:
    raise AssertionError("decoded again although a valid cache exists")


# --- broken copies ----------------------------------------------------------------------------


def test_missing_root_says_how_to_get_the_data(tmp_path: Path) -> None:
    root = tmp_path / "data" / "cifar100"
    with pytest.raises(DataError) as caught:
        load_cifar("cifar_fs", root)
    for words in (str(root), "dataset.root", "METALAB_DATA", "dataset.download=true"):
        assert words in str(caught.value)


def test_an_empty_root_names_both_forms(tmp_path: Path) -> None:
    root = tmp_path / "cifar100"
    root.mkdir()
    with pytest.raises(DataError, match=r"Neither cifar-100-python.tar.gz nor a folder"):
        load(root, tmp_path)


@pytest.mark.parametrize("kept", [0.0, 0.5], ids=["not-a-tarball", "truncated"])
def test_a_broken_tarball_is_named_and_kept(tmp_path: Path, kept: float) -> None:
    path = make_root(tmp_path) / "cifar-100-python.tar.gz"
    broken = path.read_bytes()[: int(path.stat().st_size * kept)] or b"<html>404</html>"
    path.write_bytes(broken)
    with pytest.raises(DataError, match="cifar-100-python.tar.gz is (not a readable|truncated)"):
        load(path.parent, tmp_path)
    assert path.read_bytes() == broken  # without download=true nothing is touched


@pytest.mark.parametrize("entry", ["../evil", "/tmp/evil", "cifar-100-python/../../evil"])
def test_tar_slip_entries_are_refused(tmp_path: Path, entry: str) -> None:
    root = make_root(tmp_path, {**official_files(), entry: b"x"})
    with pytest.raises(DataError, match="points outside") as caught:
        load(root, tmp_path)
    assert entry in str(caught.value)
    assert not (tmp_path / "evil").exists()


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    files = {**official_files(), "cifar-100-python/meta": pickle.dumps(Exploit(), protocol=2)}
    refused = r"meta is refused as a data pickle \(it asks for .*print, which is not data\)"
    with pytest.raises(DataError, match=refused):
        load(make_root(tmp_path, files), tmp_path)


def test_a_missing_member_is_named(tmp_path: Path) -> None:
    files = official_files()
    del files["cifar-100-python/test"]
    with pytest.raises(DataError, match="has no cifar-100-python/test: set dataset.download"):
        load(make_root(tmp_path, files), tmp_path)


def drop_otter_test_images(blob: dict) -> None:
    keep = [i for i, f in enumerate(blob["fine_labels"]) if f != FINE_NAMES.index("otter")]
    blob.update(
        data=blob["data"][keep],
        fine_labels=[blob["fine_labels"][i] for i in keep],
        coarse_labels=[blob["coarse_labels"][i] for i in keep],
    )


def move_to_next_superclass(blob: dict) -> None:
    blob["coarse_labels"][0] = (blob["coarse_labels"][0] + 1) % 20


def drop_a_class_name(blob: dict) -> None:
    blob["fine_label_names"] = blob["fine_label_names"][:99]


def store_floats(blob: dict) -> None:
    blob["data"] = blob["data"].astype(np.float32)


@pytest.mark.parametrize(
    ("member", "edit", "message"),
    [
        ("test", drop_otter_test_images, r"other than 4 images .*: otter \(3\)"),
        ("train", move_to_next_superclass, "other superclasses than CIFAR-100"),
        ("meta", drop_a_class_name, r"does not list CIFAR-100's 100 classes .*has 99"),
        ("train", store_floats, "not uint8 rows of 3072 values"),
    ],
)
def test_a_pickle_with_other_contents_is_refused(tmp_path: Path, member, edit, message) -> None:
    files = official_files()
    name = f"cifar-100-python/{member}"
    blob = pickle.loads(files[name])
    edit(blob)
    files[name] = pickle.dumps(blob, protocol=2)
    with pytest.raises(DataError, match=message) as caught:
        load(make_root(tmp_path, files), tmp_path, "fc100")
    assert "set dataset.download=true" in str(caught.value)


# --- the cache --------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "tampered"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    root = make_root(tmp_path)
    expected = load(root, tmp_path)["train"].images.clone()
    (path,) = (tmp_path / "cache").glob("cifar100-*.pt")
    if damage == "tampered":
        blob = torch.load(path, weights_only=True)
        blob["images"][5, 0, 0, 3, 3] ^= 1
        torch.save(blob, path)
    else:
        path.write_bytes(b"\0" * 64)
    with caplog.at_level(logging.WARNING):
        again = load(root, tmp_path)["train"].images
    assert torch.equal(again, expected) and "rebuilding it" in caplog.text
    assert torch.equal(torch.load(path, weights_only=True)["images"], expected)


def test_a_read_only_cache_dir_falls_back_to_a_writable_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_root(tmp_path)
    blocker = tmp_path / "a-file"  # a folder below a file cannot be created, even by root
    blocker.write_text("not a folder")
    locked = blocker / "cache"
    with caplog.at_level(logging.WARNING):
        pools = load(root, tmp_path, cache_dir=locked)
    assert pools["train"].num_classes == 64 and blocker.read_text() == "not a folder"
    assert len(list((tmp_path / "env-cache").glob("cifar100-*.pt"))) == 1
    assert f"Could not write the CIFAR-100 cache in {locked}" in caplog.text
    assert f"trying {tmp_path / 'env-cache'} instead" in caplog.text


def test_a_read_only_data_root_is_read_and_left_untouched(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    paths = [root, *root.rglob("*")]
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in paths}
    for path in paths:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    try:
        pools = load_cifar("fc100", root)  # default cache: $METALAB_CACHE
    finally:
        for path in paths:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
    assert pools["val"].num_classes == 20
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in paths} == before
    assert list((tmp_path / "env-cache").glob("cifar100-*.pt"))


# --- downloading ------------------------------------------------------------------------------


def test_the_official_url_and_md5_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cifar.URL == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert cifar.MD5 == "eb9058c3a382ffc7106e4002c42a8d85"
    tarball = write_tar(tmp_path / "served.tar.gz", official_files()).read_bytes()
    requests = []

    def serve(url: str, dest: Path) -> None:
        requests.append(url)
        dest.write_bytes(tarball)

    monkeypatch.setattr(download, "fetch", serve)
    monkeypatch.setattr(cifar, "MD5", hashlib.md5(tarball).hexdigest())
    root = tmp_path / "data" / "cifar100"
    pools = load(root, tmp_path, download=True)
    assert requests == [cifar.URL] and pools["test"].num_classes == 20
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python.tar.gz"]  # no temp file
    load(root, tmp_path, download=True)
    assert requests == [cifar.URL]  # not fetched again


def test_a_download_with_the_wrong_md5_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "fetch", lambda url, dest: dest.write_bytes(b"<html>"))
    root = tmp_path / "cifar100"
    with pytest.raises(DataError) as caught:
        load(root, tmp_path, download=True)
    message = str(caught.value)
    assert "cifar-100-python.tar.gz has md5 " in message and "so it was deleted" in message
    assert "eb9058c3a382ffc7106e4002c42a8d85" in message
    assert list(root.iterdir()) == []


def test_a_download_failure_keeps_the_broken_copy_and_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, dest: Path) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(download, "fetch", offline)
    root = make_root(tmp_path)
    (root / "cifar-100-python.tar.gz").write_bytes(b"partial")
    with pytest.raises(DataError, match="Could not download .*cifar-100-python.tar.gz.*by hand"):
        load(root, tmp_path, download=True)
    assert (root / "cifar-100-python.tar.gz").read_bytes() == b"partial"
