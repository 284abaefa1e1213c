"""dataset=imagefolder on generated folders: layout, splits, the ragged episode sampler, the
cache, refusals that name the file or the classes, and end-to-end metalab-train runs.

Every generated image is one flat colour: red = 10 * class id + 5 and green = 10 * image
number + 5, so class membership (and which image it is) survives JPEG and resizing and can be
read back from the decoded tensor.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from metalab.algorithms import algorithms_for
from metalab.assembly import build_data, build_module
from metalab.data import imagefiles
from metalab.data.datamodule import build_sources
from metalab.data.episodes import FixedEpisodes, NWayKShot
from metalab.data.imagefiles import decode_square
from metalab.data.imagefolder import apportion, load_imagefolder, split_by_ratio
from metalab.data.pools import ImageClasses
from metalab.data.ragged import RaggedClasses, RaggedNWayKShot, episode_source
from metalab.errors import ConfigError, DataError
from metalab.paths import config_dir
from metalab.trainer import make_trainer
from tests.helpers.cli import read_results, run_cli, train_run
from tests.helpers.fake_imagefolder import FORMATS, make_folder, write_image


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "env-cache"))


def red_class(x: torch.Tensor) -> list[int]:
    """The class id encoded in the red channel of each image of [n, 3, H, W]."""
    return ((x[:, 0].mean(dim=(-2, -1)) * 255 - 5) / 10).round().long().tolist()


def class_id(name: str) -> int:
    return int(name.removeprefix("c"))


def load(root: Path, tmp_path: Path, **kwargs) -> dict[str, RaggedClasses]:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("image_size", 16)
    return load_imagefolder(root, **kwargs)


# --- decoding --------------------------------------------------------------------------------


def test_every_format_size_and_mode_is_read_as_rgb_at_image_size(tmp_path: Path) -> None:
    root = tmp_path / "data"
    modes = {"c00": "RGB", "c01": "L", "c02": "RGBA", "c03": "P"}
    for class_index, (name, mode) in enumerate(modes.items()):
        for number, suffix in enumerate(FORMATS):
            if mode in ("RGBA", "P") and suffix in ("jpg", "jpeg"):
                suffix = "png"  # JPEG has no alpha or palette
            write_image(root / name / f"{number}.{suffix}", class_index, number,
                        (8 + 9 * number, 30 - 4 * number), mode)  # fmt: skip
    pools = load(root, tmp_path, split="ratio", split_ratios=[1.0, 0.0, 0.0])
    pool = pools["train"]
    assert pool.class_names == list(modes) and pool.counts == [5, 5, 5, 5]
    for index, name in enumerate(pool.class_names):
        x = pool.examples(index, torch.arange(5))
        assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32
        assert red_class(x) == [index] * 5
        if modes[name] == "L":
            assert torch.allclose(x[:, 0], x[:, 1]) and torch.allclose(x[:, 1], x[:, 2])
        else:
            greens = (x[:, 1].mean(dim=(-2, -1)) * 255).tolist()
            assert greens == pytest.approx([5, 15, 25, 35, 45], abs=3)  # file order kept


def test_resize_crop_keeps_the_centre_and_stretch_the_whole_picture() -> None:
    """A 3:1 picture, left third red, rest blue: crop keeps only blue, stretch keeps red."""
    array = np.zeros((10, 30, 3), dtype=np.uint8)
    array[:, :10, 0] = 255
    array[:, 10:, 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    stretched = decode_square(buffer.getvalue(), "x.png", 12, "stretch", "fix")
    cropped = decode_square(buffer.getvalue(), "x.png", 12, "crop", "fix")
    assert stretched.shape == cropped.shape == (12, 12, 3)
    assert stretched[:, 0, 0].min() > 200 and cropped[:, :, 0].max() < 30
    assert cropped[:, :, 2].min() > 200


def test_a_photos_exif_orientation_is_applied() -> None:
    """A JPEG stored sideways with EXIF orientation 6 decodes as the upright picture."""
    upright = np.zeros((20, 10, 3), dtype=np.uint8)
    upright[:10, :, 0] = 255  # top half red, bottom half blue (portrait)
    upright[10:, :, 2] = 255
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # as a camera writes it, rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", exif=exif, quality=95)
    decoded = decode_square(buffer.getvalue(), "x.jpg", 20, "stretch", "fix")
    assert decoded[:8, :, 0].mean() > 200 and decoded[12:, :, 2].mean() > 200


# --- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("total", range(0, 41))
def test_apportion_sums_to_the_total_and_stays_within_one_of_the_exact_share(total) -> None:
    for ratios in ([0.64, 0.16, 0.2], [0.5, 0.5, 0.0], [1 / 3] * 3, [0.7, 0.1, 0.2]):
        counts = apportion(total, ratios)
        assert sum(counts) == total
        assert all(abs(c - r * total) < 1 for c, r in zip(counts, ratios, strict=True))


def test_the_ratio_split_is_disjoint_complete_seeded_and_stable(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", [3] * 20, formats=("png",))
    pools = load(root, tmp_path, split_ratios=[0.6, 0.2, 0.2], split_seed=7)
    names = {part: set(pool.class_names) for part, pool in pools.items()}
    assert [len(names[p]) for p in ("train", "val", "test")] == [12, 4, 4]
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    assert set().union(*names.values()) == {f"c{i:02d}" for i in range(20)}
    again = load(root, tmp_path, split_ratios=[0.6, 0.2, 0.2], split_seed=7)
    assert {p: set(pool.class_names) for p, pool in again.items()} == names
    others = [split_by_ratio(sorted(names["train"] | names["val"] | names["test"]),
                             [0.6, 0.2, 0.2], seed) for seed in range(8)]  # fmt: skip
    assert len({tuple(o["test"]) for o in others}) > 1  # the seed matters
    for pool in pools.values():
        for index, name in enumerate(pool.class_names):
            assert red_class(pool.examples(index, torch.arange(3))) == [class_id(name)] * 3


@pytest.mark.parametrize("ratios", [[0.5, 0.6, 0.1], [0.5, 0.5], [1.2, -0.1, -0.1], ["a", 0, 1],
                                    0.5, [float("nan"), 0.5, 0.5]])  # fmt: skip
def test_bad_split_ratios_are_refused_with_the_fix(tmp_path: Path, ratios) -> None:
    root = make_folder(tmp_path / "data", [3] * 3, formats=("png",))
    with pytest.raises(ConfigError, match=r"dataset\.split_ratios=.*: give three shares"):
        load(root, tmp_path, split_ratios=ratios)


def test_a_data_set_only_tested_on_puts_every_class_in_test(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", [3] * 5, formats=("png",))
    pools = load(root, tmp_path, split_ratios=[0, 0, 1], shapes={"test": (5, 1, 2)})
    assert [pools[p].num_classes for p in ("train", "val", "test")] == [0, 0, 5]
    with pytest.raises(ConfigError, match=r"dataset\.ways=2 but the train split .* only 0 "):
        load(root, tmp_path, split_ratios=[0, 0, 1], shapes={"train": (2, 1, 2)})


def write_splits(folder: Path, parts: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for part, names in parts.items():
        (folder / f"{part}.txt").write_text("\n".join(names) + "\n\n")


def test_split_files_decide_the_classes_and_unlisted_ones_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_folder(tmp_path / "data", [3] * 7, formats=("png",))
    chosen = {"train": ["c00", "c03", "c05"], "val": ["c01", "c06/"], "test": ["c02"]}
    write_splits(root, chosen)
    with caplog.at_level(logging.WARNING):
        pools = load(root, tmp_path, split="files")
    assert {p: pool.class_names for p, pool in pools.items()} == {
        "train": ["c00", "c03", "c05"], "val": ["c01", "c06"], "test": ["c02"]
    }  # fmt: skip
    assert "c04" in caplog.text and "no split file" in caplog.text
    elsewhere = tmp_path / "splits"
    write_splits(elsewhere, {"train": ["c04"], "val": ["c05"], "test": ["c06"]})
    pools = load(root, tmp_path, split="files", split_dir=elsewhere)
    assert pools["train"].class_names == ["c04"]
    assert red_class(pools["test"].examples(0, torch.arange(3))) == [6, 6, 6]


@pytest.mark.parametrize(
    ("parts", "words"),
    [
        ({"train": ["c00", "dog"], "val": ["c01"], "test": ["c02"]},
         ["Line 2 of", "train.txt", "'dog'", "not a class folder"]),
        ({"train": ["c00"], "val": ["c01", "c00"], "test": ["c02"]},
         ["Line 2 of", "val.txt", "'c00'", "train.txt already lists"]),
        ({"train": ["c00"], "val": ["c01"]}, ["test.txt is missing", "dataset.split=files"]),
    ],
)  # fmt: skip
def test_bad_split_files_are_refused_naming_the_file_and_line(tmp_path, parts, words) -> None:
    root = make_folder(tmp_path / "data", [3] * 3, formats=("png",))
    write_splits(root, parts)
    with pytest.raises(DataError) as error:
        load(root, tmp_path, split="files")
    for word in words:
        assert word in str(error.value)


def test_split_folders_and_a_class_in_two_of_them(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for part, ids in {"train": [0, 1, 2], "val": [3, 4], "test": [5, 6]}.items():
        make_folder(root / part, [0] * ids[0] + [3] * len(ids), formats=("png",))  # c<ids>
    pools = load(root, tmp_path, split="folders")
    assert {p: pool.class_names for p, pool in pools.items()} == {
        "train": ["c00", "c01", "c02"], "val": ["c03", "c04"], "test": ["c05", "c06"]
    }  # fmt: skip
    assert red_class(pools["val"].examples(1, torch.arange(3))) == [4, 4, 4]
    write_image(root / "test" / "c01" / "a.png", 1, 0)
    with pytest.raises(DataError, match=r"c01 is in both .*train/c01 and .*test/c01"):
        load(root, tmp_path, split="folders")


# --- refusals --------------------------------------------------------------------------------


def test_bad_layouts_are_refused_naming_the_file_or_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", [3] * 3, formats=("png",))
    write_image(root / "stray.jpg", 0, 0)
    with pytest.raises(DataError, match=r"1 image\(s\) directly inside it \(stray\.jpg\)"):
        load(root, tmp_path)
    (root / "stray.jpg").unlink()
    write_image(root / "c01" / "more" / "x.png", 1, 9)
    with pytest.raises(DataError, match=r"c01/more is a folder inside the class folder"):
        load(root, tmp_path)
    for path in (root / "c01" / "more").iterdir():
        path.unlink()
    (root / "c01" / "more").rmdir()
    (root / "c03").mkdir()
    (root / "c03" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class folder .*c03 holds no images"):
        load(root, tmp_path)
    (root / "c03" / "notes.txt").unlink()
    (root / "c03").rmdir()
    (root / "c02" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"c02/broken\.png is not a readable image"):
        load(root, tmp_path)


def test_train_dir_inside_root_suggests_split_folders(tmp_path: Path) -> None:
    make_folder(tmp_path / "data" / "train", [3, 3], formats=("png",))
    with pytest.raises(DataError, match=r"dataset\.split=folders"):
        load(tmp_path / "data", tmp_path)


def test_a_missing_or_empty_root_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist: set dataset\.root .*<root>/<class>/"):
        load(tmp_path / "nothing", tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("x")
    with pytest.raises(DataError, match=r"no class folders: put the images in"):
        load(tmp_path / "empty", tmp_path)


def test_hidden_and_non_image_files_are_skipped(tmp_path: Path, caplog) -> None:
    root = make_folder(tmp_path / "data", [3, 3], formats=("png",))
    (root / "c00" / ".DS_Store").write_bytes(b"\0\1")
    (root / "c00" / "Thumbs.db").write_bytes(b"\0\1")
    (root / ".ipynb_checkpoints").mkdir()
    with caplog.at_level(logging.WARNING):
        pools = load(root, tmp_path, split_ratios=[1.0, 0.0, 0.0])
    assert pools["train"].counts == [3, 3]
    assert "c00/Thumbs.db" in caplog.text and ".DS_Store" not in caplog.text


def test_a_split_too_small_is_refused_with_names_and_counts_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratios = [0.6, 0.2, 0.2]
    train = split_by_ratio([f"c{i:02d}" for i in range(10)], ratios, 0)["train"]
    counts = [6] * 10
    counts[class_id(train[0])], counts[class_id(train[3])] = 2, 3
    root = make_folder(tmp_path / "data", counts, formats=("png",))
    monkeypatch.setattr(imagefiles, "decode_all", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path, split_ratios=ratios, shapes={"train": (2, 1, 3)})
    message = str(error.value)
    assert "dataset.shots + dataset.queries = 1 + 3 = 4 but the train split of" in message
    assert f"2 class(es) with fewer images: {train[0]} (2), {train[3]} (3)" in message
    assert "at most 2" in message
    only_two = r"dataset\.test_ways=3 but the val split of .* has only 2 classes \(c\d\d, c\d\d\)"
    with pytest.raises(ConfigError, match=only_two):
        load(root, tmp_path, split_ratios=ratios, shapes={"val": (3, 1, 1)})


# --- the sampler -----------------------------------------------------------------------------


def ragged_pool(counts: list[int]) -> RaggedClasses:
    """Class c's image j is a 1x1 image with value (c, j) in its first two channels."""
    images, rows, start = [], [], 0
    for c, n in enumerate(counts):
        images += [[[[c]], [[j]], [[0]]] for j in range(n)]
        rows.append(torch.arange(start, start + n))
        start += n
    tensor = torch.tensor(images, dtype=torch.uint8)
    return RaggedClasses(tensor, rows, [f"k{c}" for c in range(len(counts))])


def test_ragged_episodes_draw_distinct_classes_and_images_from_all_of_each_class() -> None:
    counts = [4, 10, 5, 3, 7]
    sampler = RaggedNWayKShot(ragged_pool(counts), ways=3, shots=1, queries=2)
    seen: dict[int, set[int]] = {c: set() for c in range(len(counts))}
    for seed in range(300):
        task = sampler.sample(torch.Generator().manual_seed(seed))
        assert task.support_y.tolist() == [0, 1, 2] and task.query_y.tolist() == [0, 0, 1, 1, 2, 2]
        pixels = [
            (round(float(v[0, 0, 0]) * 255), round(float(v[1, 0, 0]) * 255))
            for v in torch.cat([task.support_x, task.query_x])
        ]
        assert len(set(pixels)) == len(pixels)  # no image twice in an episode
        support_classes = [c for c, _ in pixels[:3]]
        assert len(set(support_classes)) == 3
        for label, (c, j) in zip(task.support_y.tolist() + task.query_y.tolist(), pixels,
                                 strict=True):  # fmt: skip
            assert c == support_classes[label] and 0 <= j < counts[c]
            seen[c].add(j)
    assert all(seen[c] == set(range(n)) for c, n in enumerate(counts))  # every image drawn


def test_on_equal_classes_the_ragged_sampler_draws_what_nwaykshot_draws() -> None:
    images = torch.randint(0, 256, (6, 5, 3, 4, 4), dtype=torch.uint8)
    uniform = ImageClasses(images, range(6), [f"k{i}" for i in range(6)])
    flat = images.reshape(30, 3, 4, 4)
    ragged = RaggedClasses(flat, [torch.arange(5 * c, 5 * c + 5) for c in range(6)],
                           uniform.class_names)  # fmt: skip
    assert isinstance(episode_source(uniform, 3, 2, 2), NWayKShot)
    assert isinstance(episode_source(ragged, 3, 2, 2), RaggedNWayKShot)
    for index in range(5):
        a = FixedEpisodes(NWayKShot(uniform, 3, 2, 2), 5, 1)[index]
        b = FixedEpisodes(RaggedNWayKShot(ragged, 3, 2, 2), 5, 1)[index]
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)


def test_nwaykshot_given_a_ragged_pool_fails_loudly() -> None:
    with pytest.raises(AttributeError):
        NWayKShot(ragged_pool([3, 3]), 2, 1, 1)


# --- the cache -------------------------------------------------------------------------------


def test_images_are_decoded_once_cached_outside_root_and_rebuilt_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "data", [3] * 4, formats=("bmp",))  # size set by the pixels
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    first = load(root, tmp_path, split_ratios=[1.0, 0.0, 0.0])["train"]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing in root
    assert len(list((tmp_path / "cache").glob("imagefolder-16px-stretch-v1-*.pt"))) == 1

    calls = []
    real = imagefiles.decode_square
    monkeypatch.setattr(imagefiles, "decode_square", lambda *a: calls.append(a) or real(*a))
    again = load(root, tmp_path, split_ratios=[1.0, 0.0, 0.0])["train"]
    assert calls == [] and torch.equal(again.images, first.images)

    # the same size, other pixels: a key of names and sizes would not notice
    path = root / "c02" / "img01.bmp"
    size = path.stat().st_size
    write_image(path, 3, 1, size=(19, 16))  # c02's second image now looks like class 3
    assert path.stat().st_size == size
    changed = load(root, tmp_path, split_ratios=[1.0, 0.0, 0.0])["train"]
    assert len(calls) == 12
    assert red_class(changed.examples(2, torch.arange(3))) == [2, 3, 2]

    write_image(root / "c02" / "img09.bmp", 2, 9)  # an added image is picked up
    assert load(root, tmp_path, split_ratios=[1.0, 0.0, 0.0])["train"].counts == [3, 3, 4, 3]


# --- through the config and metalab-train ----------------------------------------------------


def compose_dataset(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=["dataset=imagefolder", *overrides])


def test_the_config_builds_augmented_ragged_sources(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", [5, 6, 7, 5, 6, 7, 5, 6, 7, 8])
    cfg = compose_dataset(
        f"dataset.root={root}", "dataset.image_size=8", "dataset.ways=2", "dataset.queries=2",
        "dataset.augment=true", "dataset.crop_padding=1", f"dataset.cache_dir={tmp_path / 'c'}",
    )  # fmt: skip
    sources = build_sources(cfg.dataset)
    task = sources["train"].sample(torch.Generator().manual_seed(0))
    assert task.support_x.shape == (2, 3, 8, 8) and task.query_x.shape == (4, 3, 8, 8)
    assert isinstance(sources["val"], RaggedNWayKShot)


def generated_folder(tmp_path: Path) -> Path:
    """10 classes of 5 to 8 images (ratio split 6/2/2), all formats, sizes 12 to 61 pixels."""
    return make_folder(tmp_path / "my_images", [5, 6, 7, 8, 5, 6, 7, 8, 5, 6])


TINY = ["debug=tiny", "model=conv4", "model.channels=8", "dataset.image_size=16",
        "dataset.ways=2", "dataset.shots=1", "dataset.queries=2"]  # fmt: skip


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_metalab_train_on_a_generated_image_folder(tmp_path: Path, algorithm: str) -> None:
    root = generated_folder(tmp_path)
    run = train_run(tmp_path, "dataset=imagefolder", f"dataset.root={root}",
                    f"algorithm={algorithm}", *TINY)  # fmt: skip
    results = read_results(run)
    assert results["status"] == "completed"
    assert results["protocol"]["dataset"] == "imagefolder"
    assert results["protocol"]["data_split"] == "ratio"
    assert 0.0 <= results["metrics"]["test/acc"]["mean"] <= 1.0
    assert not any(p.suffix == ".pt" for p in root.rglob("*"))  # the cache is elsewhere
    if algorithm != "protonet":
        return
    out = run_cli(
        "metalab-eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "shots=3",
        "queries=1", "eval.tasks=3", "eval.batch=3", f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    evaluated = read_results(tmp_path / "eval")
    assert (evaluated["protocol"]["shots"], evaluated["protocol"]["queries"]) == (3, 1)
    assert evaluated["metrics"]["test/acc"]["tasks"] == 3


ALGORITHMS = algorithms_for("classification")  # every one that learns from image episodes
INNER_STEPS = {"inner_steps": "algorithm.inner_steps=1",
               "eval_inner_steps": "algorithm.eval_inner_steps=1"}  # fmt: skip


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains_and_tests_on_an_image_folder(tmp_path, algorithm) -> None:
    root = generated_folder(tmp_path)
    with initialize_config_dir(config_dir(), version_base="1.3"):
        keys = compose("train", overrides=[f"algorithm={algorithm}"]).algorithm
        steps = [o for key, o in INNER_STEPS.items() if key in keys]
        cfg = compose("train", overrides=[
            f"algorithm={algorithm}", "dataset=imagefolder", f"dataset.root={root}",
            "logger=none", *TINY, *steps,
        ])  # fmt: skip
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    before = [p.detach().clone() for p in module.parameters()]
    trainer, _, _ = make_trainer(cfg, tmp_path / "run", [], "val/acc", "max")
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    assert 0.0 <= module.test_summary["mean"] <= 1.0
