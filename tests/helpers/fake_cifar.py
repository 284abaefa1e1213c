"""A tiny CIFAR-100 in the official format: ``cifar-100-python.tar.gz`` (or the extracted
``cifar-100-python/``) with ``train``, ``test`` and ``meta`` pickles carrying the official keys,
dtypes and label order, all 100 classes but 3 train + 1 test image each (a test patches
``cifar.IMAGES_PER_CLASS`` to 4). Pixel (0, 0) of each image is its identity: red = fine
label, green = position in its file, blue = 0 for train and 1 for test."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from metalab.data.cifar import FINE_NAMES, SUPERCLASSES

TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 1


def part_blob(part: str) -> dict:
    """A train or test pickle's dict: data uint8 [N, 3072] (RGB planes), labels as lists."""
    per_class = TRAIN_PER_CLASS if part == "train" else TEST_PER_CLASS
    parent = {c: i for i, classes in enumerate(SUPERCLASSES.values()) for c in classes}
    fine = [label for _ in range(per_class) for label in range(100)]  # interleaved, as upstream
    data = np.zeros((len(fine), 3, 32, 32), dtype=np.uint8)
    data[:, :, 8:24, 8:24] = np.asarray(fine, dtype=np.uint8).reshape(-1, 1, 1, 1) * 2 + 40
    data[:, 0, 0, 0] = fine
    data[:, 1, 0, 0] = np.arange(len(fine))
    data[:, 2, 0, 0] = 0 if part == "train" else 1
    return {
        "filenames": [f"image_{i}.png" for i in range(len(fine))],
        "batch_label": f"{part}ing batch 1 of 1",
        "fine_labels": fine,
        "coarse_labels": [parent[FINE_NAMES[f]] for f in fine],
        "data": data.reshape(len(fine), 3072),
    }


def official_files() -> dict[str, bytes]:
    meta = {"fine_label_names": list(FINE_NAMES), "coarse_label_names": list(SUPERCLASSES)}
    blobs = {"meta": meta, "train": part_blob("train"), "test": part_blob("test")}
    return {f"cifar-100-python/{k}": pickle.dumps(v, protocol=2) for k, v in blobs.items()}


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        folder = tarfile.TarInfo("cifar-100-python")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def make_root(tmp_path: Path, files: dict[str, bytes] | None = None, folder: bool = False) -> Path:
    root = tmp_path / "cifar100"
    root.mkdir(parents=True)
    files = official_files() if files is None else files
    if folder:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    else:
        write_tar(root / "cifar-100-python.tar.gz", files)
    return root
