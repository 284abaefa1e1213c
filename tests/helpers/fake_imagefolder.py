"""Generated image folders for dataset=imagefolder: class ``c{id:02d}`` holds flat-colour
images (red = 10 * class id + 5, green = 10 * image number + 5) of varied sizes and formats,
so class membership survives JPEG and resizing and can be read back from a decoded tensor."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

FORMATS = ("png", "jpg", "jpeg", "bmp", "webp")


def colour(class_id: int, number: int) -> tuple[int, int, int]:
    return (10 * class_id + 5, 10 * number + 5, 128)


def write_image(path: Path, class_id: int, number: int, size=(24, 16), mode="RGB") -> None:
    """One flat-colour image; grey images hold the red value in their one channel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = colour(class_id, number)
    image = Image.new("RGB", size, rgb)
    if mode == "L":
        image = Image.new("L", size, rgb[0])
    elif mode in ("RGBA", "P"):
        image = image.convert(mode)
    image.save(path, quality=95) if path.suffix in (".jpg", ".jpeg") else image.save(path)


def make_folder(root: Path, counts: list[int], formats=FORMATS) -> Path:
    """Class ``c{id:02d}`` with counts[id] images of varied sizes and formats."""
    for class_id, count in enumerate(counts):
        for number in range(count):
            suffix = formats[(class_id + number) % len(formats)]
            size = (12 + 7 * number, 10 + 3 * class_id)
            write_image(root / f"c{class_id:02d}" / f"img{number:02d}.{suffix}", class_id, number,
                        size)  # fmt: skip
    return root
