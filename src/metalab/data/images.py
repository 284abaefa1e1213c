"""Decoding one image file of a data set, with one clear error for anything that is not one."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metalab.errors import DataError


def decode_image(
    data: bytes,
    source: Path,
    name: str,
    fix: str,
    mode: str,
    size: int,
    formats: tuple[str, ...] = (),
    original: int | None = None,
) -> np.ndarray:
    """``name`` (bytes ``data`` from ``source``) as uint8 [size, size(, 3)] in PIL ``mode``.

    ``formats`` and ``original`` (the side in pixels) refuse files that cannot be part of the
    official release; ``fix`` ends every message. Resizing uses Lanczos (antialiased).
    """
    kind = f"{'/'.join(formats)} image" if formats else "image"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if formats and image.format not in formats:
                raise DataError(
                    f"{source}: {name} is a {image.format} file, not a {'/'.join(formats)}: {fix}."
                )
            if original is not None and image.size != (original, original):
                width, height = image.size
                raise DataError(
                    f"{source}: {name} is {width}x{height} pixels, not the original "
                    f"{original}x{original}: {fix}."
                )
            converted = image.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        why = "" if isinstance(err, UnidentifiedImageError) else f" ({err})"
        raise DataError(f"{source}: {name} is not a readable {kind}{why}: {fix}.") from err
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.LANCZOS)
    return np.asarray(converted, dtype=np.uint8)
