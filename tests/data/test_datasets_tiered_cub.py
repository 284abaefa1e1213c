"""dataset=tieredimagenet and dataset=cub from tiny copies in their real on-disk forms.

tieredImageNet: Ren et al.'s ``<split>_images_png.pkl`` (a protocol-2 pickled list of PNG
bytes as uint8 arrays) with ``<split>_labels.pkl`` (``label_specific``, ``label_specific_str``,
``label_general``, ``label_general_str``), and the npz form (``<split>_images.npz`` with
``images`` uint8 [N, 84, 84, 3]) with ``labels`` pickles of global class numbers. 3 / 2 / 2
classes of 4 to 6 images (``CLASSES`` patched).

CUB: a ``CUB_200_2011/`` tree with ``classes.txt``, ``images.txt``, ``image_class_labels.txt``,
``train_test_split.txt`` and ``images/<NNN.Name>/<file>.jpg`` of various sizes, 8 classes of 3
to 6 images (``CLASSES`` and ``IMAGES`` patched).

Every image is one flat colour whose red channel encodes its class (10 * id + 5) and green its
number, so membership can be read back exactly after PNG, JPEG and resizing.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from metalab.assembly import build_data, build_module
from metalab.data import cub, tiered
from metalab.data.cub import chen_split, load_cub
from metalab.data.ragged import RaggedNWayKShot
from metalab.data.tiered import load_tiered
from metalab.errors import ConfigError, DataError
from metalab.paths import config_dir
from metalab.trainer import make_trainer

TIERED = {"train": 3, "val": 2, "test": 2}
PER_CLASS = {"train": [4, 6, 5], "val": [5, 4], "test": [6, 4]}
NAMES = {"train": ["goldfish", "tench", "hen"], "val": ["crane", "ibis"], "test": ["cab", "van"]}
PUBLISHED = (dict(tiered.CLASSES), cub.CLASSES, cub.IMAGES)  # before any patching


@pytest.fixture(autouse=True)
def _tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setattr(tiered, "CLASSES", TIERED)


def pixels(class_id: int, number: int, side: int = 84, height: int | None = None) -> np.ndarray:
    return np.broadcast_to(
        np.array([10 * class_id + 5, 20 * number + 10, 128], dtype=np.uint8),
        (height or side, side, 3),
    ).copy()


def encoded(array: np.ndarray, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, kind, **({"quality": 95} if kind == "JPEG" else {}))
    return buffer.getvalue()


def red_class(x: torch.Tensor) -> list[int]:
    return ((x[:, 0].mean(dim=(-2, -1)) * 255 - 5) / 10).round().long().tolist()


# --- tieredImageNet ----------------------------------------------------------------------------


def tiered_images(part: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The split's images in a shuffled order, and each one's class index within the split."""
    offset = {"train": 0, "val": 3, "test": 5}[part]
    items = [(c, n) for c, count in enumerate(PER_CLASS[part]) for n in range(count)]
    order = np.random.default_rng(len(part)).permutation(len(items))
    arrays = [pixels(offset + items[i][0], items[i][1]) for i in order]
    return arrays, np.array([items[i][0] for i in order], dtype=np.int32)


def tiered_root(tmp_path: Path, form: str = "png", subfolder: bool = False) -> Path:
    root = tmp_path / "tiered"
    folder = root / "tiered-imagenet" if subfolder else root
    folder.mkdir(parents=True, exist_ok=True)
    for part in TIERED:
        arrays, labels = tiered_images(part)
        if form == "png":
            pngs = [np.frombuffer(encoded(a), dtype=np.uint8) for a in arrays]
            (folder / f"{part}_images_png.pkl").write_bytes(pickle.dumps(pngs, protocol=2))
            blob = {
                "label_specific": labels,
                "label_general": np.zeros_like(labels),
                "label_specific_str": NAMES[part],
                "label_general_str": ["category"],
            }
        else:
            np.savez(folder / f"{part}_images.npz", images=np.stack(arrays))
            offset = {"train": 0, "val": 351, "test": 448}[part]  # global class numbers
            blob = {"labels": [int(offset + label) for label in labels]}
        (folder / f"{part}_labels.pkl").write_bytes(pickle.dumps(blob, protocol=2))
    return root


def test_the_loaders_expect_the_published_sizes() -> None:
    assert PUBLISHED == ({"train": 351, "val": 97, "test": 160}, 200, 11_788)


@pytest.mark.parametrize("form", ["png", "npz"])
def test_each_tiered_form_gives_its_classes_and_all_their_images(tmp_path, form) -> None:
    pools = load_tiered(tiered_root(tmp_path, form), image_size=84, cache_dir=tmp_path / "c")
    offset = {"train": 0, "val": 3, "test": 5}
    for part, pool in pools.items():
        assert pool.counts == PER_CLASS[part]
        if form == "png":
            assert pool.class_names == NAMES[part]
        for index, count in enumerate(PER_CLASS[part]):
            x = pool.examples(index, torch.arange(count))
            assert x.shape == (count, 3, 84, 84)
            assert red_class(x) == [offset[part] + index] * count
            greens = sorted(round(float(g) * 255) for g in x[:, 1].mean(dim=(-2, -1)))
            assert greens == [20 * n + 10 for n in range(count)]  # each image once


def test_png_and_npz_give_the_same_tensors_at_any_size(tmp_path: Path) -> None:
    for size in (84, 20):
        a = load_tiered(tiered_root(tmp_path / "a", "png"), image_size=size, cache_dir=tmp_path)
        b = load_tiered(tiered_root(tmp_path / "b", "npz"), image_size=size, cache_dir=tmp_path)
        for part in TIERED:
            assert a[part].images.shape == (sum(PER_CLASS[part]), 3, size, size)
            assert torch.equal(a[part].images, b[part].images)
            assert [r.tolist() for r in a[part].rows] == [r.tolist() for r in b[part].rows]


def test_auto_prefers_the_pngs_and_the_release_subfolder_is_found(tmp_path: Path) -> None:
    root = tiered_root(tmp_path, "png", subfolder=True)
    arrays, _ = tiered_images("train")
    folder = root / "tiered-imagenet"
    for part in TIERED:  # an npz beside them, all black: auto must not read it
        count = len(tiered_images(part)[0])
        np.savez(folder / f"{part}_images.npz", images=np.zeros((count, 84, 84, 3), np.uint8))
    pools = load_tiered(root, cache_dir=tmp_path / "c", image_size=84)
    assert red_class(pools["train"].examples(1, torch.arange(6))) == [1] * 6
    black = load_tiered(root, source="npz", cache_dir=tmp_path / "c", image_size=84)
    assert black["train"].images.max() == 0


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("no labels", ["holds no tieredImageNet labels files", "train_images_png.pkl"]),
        ("npz only asked", ["dataset.source=npz", "lacks train_images.npz"]),
        ("a fourth class", ["train_labels.pkl has 4 classes, not the 3"]),
        ("shared class", ["The class hen is in both the train and the val split"]),
        ("short png list", ["train_images_png.pkl holds a list of 14, not the list of 15"]),
        ("not data", ["train_labels.pkl is refused as a data pickle", "posix.system"]),
        ("no root", ["does not exist: set dataset.root", "$METALAB_DATA/tieredimagenet"]),
    ],
)
def test_bad_tiered_copies_are_refused_naming_the_file(tmp_path: Path, damage, words) -> None:
    root = tiered_root(tmp_path, "png")
    source = "auto"
    if damage == "no labels":
        for part in TIERED:
            (root / f"{part}_labels.pkl").unlink()
    elif damage == "npz only asked":
        source = "npz"
    elif damage == "a fourth class":
        _, labels = tiered_images("train")
        blob = {"label_specific": labels, "label_specific_str": [*NAMES["train"], "owl"]}
        (root / "train_labels.pkl").write_bytes(pickle.dumps(blob, protocol=2))
    elif damage == "shared class":
        _, labels = tiered_images("val")
        blob = {"label_specific": labels, "label_specific_str": ["hen", "ibis"]}
        (root / "val_labels.pkl").write_bytes(pickle.dumps(blob, protocol=2))
    elif damage == "short png list":
        arrays, _ = tiered_images("train")
        pngs = [np.frombuffer(encoded(a), dtype=np.uint8) for a in arrays[:-1]]
        (root / "train_images_png.pkl").write_bytes(pickle.dumps(pngs, protocol=2))
    elif damage == "not data":

        class Exploit:
            def __reduce__(self):
                import os

                return (os.system, ("echo pwned",))

        (root / "train_labels.pkl").write_bytes(pickle.dumps(Exploit(), protocol=2))
    elif damage == "no root":
        root = tmp_path / "absent"
    with pytest.raises(DataError) as error:
        load_tiered(root, source=source, cache_dir=tmp_path / "c")
    for word in words:
        assert word in str(error.value)


def test_a_tiered_split_too_small_is_refused_before_any_image_is_read(tmp_path: Path) -> None:
    root = tiered_root(tmp_path, "png")
    (root / "train_images_png.pkl").write_bytes(b"garbage: never read")
    with pytest.raises(ConfigError, match=r"1 \+ 4 = 5 but the train split .*: goldfish \(4\):"):
        load_tiered(root, shapes={"train": (3, 1, 4)}, cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match=r"test_ways=3 but the val split .* 2 classes"):
        load_tiered(root, shapes={"val": (3, 1, 1)}, cache_dir=tmp_path / "c")


def test_tiered_is_cached_and_rebuilt_when_its_file_changes(tmp_path, monkeypatch) -> None:
    root = tiered_root(tmp_path, "png")
    first = load_tiered(root, image_size=84, cache_dir=tmp_path / "c")
    decoded = []
    real = tiered._from_png
    monkeypatch.setattr(tiered, "_from_png", lambda *a: decoded.append(a) or real(*a))
    again = load_tiered(root, image_size=84, cache_dir=tmp_path / "c")
    assert decoded == [] and torch.equal(again["train"].images, first["train"].images)
    arrays, labels = tiered_images("val")
    arrays[0] = pixels(9, 0)  # the first val image now looks like class 9
    pngs = [np.frombuffer(encoded(a), dtype=np.uint8) for a in arrays]
    (root / "val_images_png.pkl").write_bytes(pickle.dumps(pngs, protocol=2))
    changed = load_tiered(root, image_size=84, cache_dir=tmp_path / "c")
    assert len(decoded) == 1 and 9 in red_class(changed["val"].images.float() / 255)


# --- CUB ---------------------------------------------------------------------------------------

CUB_COUNTS = [3, 4, 5, 6, 3, 4, 5, 6]
CUB_NAMES = [f"{i + 1:03d}.Bird_{chr(65 + i)}" for i in range(len(CUB_COUNTS))]


def cub_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CUB_200_2011/ tree; images.txt lists them out of class order, as ids go."""
    monkeypatch.setattr(cub, "CLASSES", len(CUB_COUNTS))
    monkeypatch.setattr(cub, "IMAGES", sum(CUB_COUNTS))
    base = tmp_path / "cub" / "CUB_200_2011"
    (base / "images").mkdir(parents=True)
    entries = [(c, n) for c, count in enumerate(CUB_COUNTS) for n in range(count)]
    order = np.random.default_rng(0).permutation(len(entries))
    images, labels, splits = [], [], []
    for image_id, index in enumerate(order, start=1):
        c, n = entries[index]
        relative = f"{CUB_NAMES[c]}/{CUB_NAMES[c][4:]}_{n:04d}_{image_id}.jpg"
        path = base / "images" / relative
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encoded(pixels(c, n, side=30 + 5 * n, height=20 + 3 * c), "JPEG"))
        images.append(f"{image_id} {relative}")
        labels.append(f"{image_id} {c + 1}")
        splits.append(f"{image_id} {image_id % 2}")
    (base / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CUB_NAMES)))
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    return tmp_path / "cub"


def test_chens_rule_gives_100_50_50_classes_by_id() -> None:
    names = [f"{i:03d}.Species_{i}" for i in range(200, 0, -1)]  # any order in, name order used
    parts = chen_split(names)
    ids = {part: [int(n[:3]) for n in chosen] for part, chosen in parts.items()}
    assert [len(ids[p]) for p in ("train", "val", "test")] == [100, 50, 50]
    assert ids["train"] == list(range(1, 201, 2))  # 001, 003, ...
    assert ids["val"] == list(range(2, 201, 4))  # 002, 006, ...
    assert ids["test"] == list(range(4, 201, 4))  # 004, 008, ...
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["val"]) & set(ids["test"])


def test_cub_gives_chens_classes_with_all_their_images(tmp_path, monkeypatch) -> None:
    root = cub_root(tmp_path, monkeypatch)
    for where in (root, root / "CUB_200_2011"):  # the folder holding the release, or itself
        pools = load_cub(where, image_size=16, cache_dir=tmp_path / "c")
        expected = {"train": [0, 2, 4, 6], "val": [1, 5], "test": [3, 7]}
        for part, pool in pools.items():
            assert pool.class_names == [CUB_NAMES[c] for c in expected[part]]
            assert pool.counts == [CUB_COUNTS[c] for c in expected[part]]
            for index, c in enumerate(expected[part]):
                x = pool.examples(index, torch.arange(CUB_COUNTS[c]))
                assert x.shape == (CUB_COUNTS[c], 3, 16, 16) and red_class(x) == [c] * len(x)
    sampler = RaggedNWayKShot(pools["train"], 4, 1, 2, "train")
    task = sampler.sample(torch.Generator().manual_seed(3))
    assert sorted(red_class(task.support_x)) == [0, 2, 4, 6]


def test_bad_cub_copies_are_refused_naming_the_file(tmp_path, monkeypatch) -> None:
    root = cub_root(tmp_path, monkeypatch)
    base = root / "CUB_200_2011"
    first = (base / "images.txt").read_text().splitlines()[0].split()[1]
    (base / "images" / first).unlink()
    with pytest.raises(DataError, match=rf"1 image\(s\) listed in .*images.txt .*{first}"):
        load_cub(root, cache_dir=tmp_path / "c")
    (base / "images" / first).write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=rf"{first} is not a readable image"):
        load_cub(root, cache_dir=tmp_path / "c")
    labels = (base / "image_class_labels.txt").read_text()
    (base / "image_class_labels.txt").write_text("one 1\n" + labels)
    with pytest.raises(DataError, match=r"Line 1 of .*image_class_labels.txt is 'one 1'"):
        load_cub(root, cache_dir=tmp_path / "c")
    rows = labels.splitlines()
    wrong = 1 + (int(rows[0].split()[1]) % len(CUB_NAMES))  # another class than image 1's
    (base / "image_class_labels.txt").write_text("\n".join([f"1 {wrong}", *rows[1:]]))
    with pytest.raises(DataError, match=rf"image 1 at .*, outside the folder of its class "
                                        rf"{CUB_NAMES[wrong - 1]}"):  # fmt: skip
        load_cub(root, cache_dir=tmp_path / "c")
    monkeypatch.setattr(cub, "CLASSES", 200)
    with pytest.raises(DataError, match=r"lists 8 distinct classes .* not the 200 classes"):
        load_cub(root, cache_dir=tmp_path / "c")


def test_a_cub_archive_not_extracted_or_a_missing_root_says_what_to_do(tmp_path) -> None:
    (tmp_path / "cub").mkdir()
    (tmp_path / "cub" / "CUB_200_2011.tgz").write_bytes(b"x")
    with pytest.raises(DataError, match=r"has CUB_200_2011.tgz but not its contents.*tar -xzf"):
        load_cub(tmp_path / "cub")
    with pytest.raises(DataError, match=r"does not exist: put the official CUB_200_2011.tgz"):
        load_cub(tmp_path / "none")


def test_a_cub_split_too_small_is_refused_before_decoding(tmp_path, monkeypatch) -> None:
    root = cub_root(tmp_path, monkeypatch)
    monkeypatch.setattr(cub, "cached_classes", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ConfigError) as error:
        load_cub(root, shapes={"train": (2, 2, 2)})
    assert "001.Bird_A (3)" in str(error.value) and "2 + 2 = 4" in str(error.value)


def test_cub_is_rebuilt_when_an_image_changes(tmp_path, monkeypatch) -> None:
    root = cub_root(tmp_path, monkeypatch)
    base = root / "CUB_200_2011"
    load_cub(root, image_size=8, cache_dir=tmp_path / "c")
    line = next(
        line for line in (base / "images.txt").read_text().splitlines() if "002.Bird_B" in line
    )
    (base / "images" / line.split()[1]).write_bytes(encoded(pixels(7, 0, 30), "JPEG"))
    val = load_cub(root, image_size=8, cache_dir=tmp_path / "c")["val"]
    assert sorted(red_class(val.examples(0, torch.arange(4)))) == [1, 1, 1, 7]


# --- training runs -----------------------------------------------------------------------------


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("dataset", "algorithm"), [("tieredimagenet", "protonet"),
                                                    ("cub", "maml")])  # fmt: skip
def test_tiny_training_run(tmp_path, monkeypatch, dataset, algorithm) -> None:
    root = tiered_root(tmp_path) if dataset == "tieredimagenet" else cub_root(tmp_path, monkeypatch)
    overrides = [
        f"dataset={dataset}", f"dataset.root={root}", f"algorithm={algorithm}",
        "model=conv4", "model.channels=8", "dataset.image_size=16", "dataset.ways=2",
        "dataset.shots=1", "dataset.queries=2", "debug=tiny", "logger=none",
    ]  # fmt: skip
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    data, in_shape, out_features = build_data(cfg)
    assert (in_shape, out_features) == ((3, 16, 16), 2)
    module = build_module(cfg, in_shape, out_features)
    trainer, _, _ = make_trainer(cfg, tmp_path / "run", [], "val/acc", "max")
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    assert trainer.global_step == 2 and 0.0 <= module.test_summary["mean"] <= 1.0
