"""Tiny mini-ImageNet copies in both real on-disk forms: Ravi & Larochelle's CSVs with the
images they list (``images/`` or ``images.zip``), and the ``mini-imagenet-cache-<part>.pkl``
pickles. 3 / 2 / 2 classes of 4 images (a test patches ``miniimagenet.CLASSES`` and
``IMAGES_PER_CLASS`` to ``TINY`` and ``PER_CLASS``); every image is one flat colour whose red
channel encodes its class."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

TINY = {"train": 3, "val": 2, "test": 2}
PER_CLASS = 4
WNIDS = {
    "train": ["n01532829", "n01558993", "n01704323"],
    "val": ["n01855672", "n02091244"],
    "test": ["n01930112", "n01981276"],
}
CLASS_ID = {w: i for i, w in enumerate(w for part in WNIDS.values() for w in part)}


def pixels(wnid: str, number: int) -> np.ndarray:
    """84x84x3 of one colour: red = 20 * class id + 10, green = 30 * number + 20."""
    return np.broadcast_to(
        np.array([20 * CLASS_ID[wnid] + 10, 30 * number + 20, 128], dtype=np.uint8), (84, 84, 3)
    ).copy()


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def csv_root(tmp_path: Path, images_zip: bool = False) -> Path:
    """Ravi & Larochelle's CSVs and the images they list."""
    root = tmp_path / "miniimagenet"
    (root / "images").mkdir(parents=True)
    files = {}
    for part, wnids in WNIDS.items():
        lines = ["filename,label"]
        for wnid in wnids:
            for number in range(1, PER_CLASS + 1):
                name = f"{wnid}{number:08d}.jpg"
                files[f"images/{name}"] = jpeg(pixels(wnid, number))
                lines.append(f"{name},{wnid}")
        (root / f"{part}.csv").write_text("\n".join(lines) + "\n")
    if images_zip:
        (root / "images").rmdir()
        with zipfile.ZipFile(root / "images.zip", "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        for name, data in files.items():
            (root / name).write_bytes(data)
    return root


def pickle_blob(part: str) -> dict:
    """The shared pickle: rows in a shuffled order, class_dict lists each class's rows."""
    arrays = [(w, n) for w in WNIDS[part] for n in range(1, PER_CLASS + 1)]
    order = np.random.default_rng(1).permutation(len(arrays))
    image_data = np.stack([pixels(*arrays[i]) for i in order])
    row = {arrays[i]: r for r, i in enumerate(order)}
    class_dict = {w: [row[w, n] for n in range(1, PER_CLASS + 1)] for w in WNIDS[part]}
    return {"image_data": image_data, "class_dict": class_dict}


def pickle_root(tmp_path: Path, blobs: dict[str, dict] | None = None) -> Path:
    root = tmp_path / "miniimagenet"
    root.mkdir(parents=True, exist_ok=True)
    for part in TINY:
        blob = (blobs or {}).get(part, pickle_blob(part))
        (root / f"mini-imagenet-cache-{part}.pkl").write_bytes(pickle.dumps(blob, protocol=4))
    return root
