"""Fetching a data file: to a temporary name, md5-checked, renamed into place only if intact.

A half-downloaded or tampered file is never left under its real name, so the next load cannot
mistake it for the data set.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from metalab.errors import DataError

log = logging.getLogger(__name__)


def fetch(url: str, dest: Path) -> None:
    """Copy ``url`` to ``dest``: the only network access of metalab's data (tests replace it)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_folder(folder: Path, what: str) -> None:
    """Create a folder to download ``what`` into (only ever called when downloading)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Cannot create {folder} to download {what} into ({err}): "
            f"point dataset.root at a writable folder."
        ) from err


def download(url: str, dest: Path, md5: str | None = None) -> Path:
    """Fetch to a temporary name beside ``dest``, check the md5, then rename into place."""
    log.info("Downloading %s to %s", url, dest)
    try:
        fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
    except OSError as err:
        raise DataError(
            f"Cannot write into {dest.parent} to download {dest.name} ({err}): point "
            f"dataset.root at a writable folder."
        ) from err
    temp = Path(temp_name)
    try:
        fetch(url, temp)
        got = md5sum(temp) if md5 else None
    except (OSError, http.client.HTTPException, ValueError) as err:
        temp.unlink(missing_ok=True)
        raise DataError(
            f"Could not download {url} ({err}): check the network, or copy {dest.name} "
            f"into {dest.parent} by hand."
        ) from err
    if md5 and got != md5:
        temp.unlink(missing_ok=True)
        raise DataError(
            f"The downloaded {dest.name} has md5 {got}, not the expected {md5}, so it was "
            f"deleted: run again with dataset.download=true, or copy the official file to {dest}."
        )
    os.replace(temp, dest)
    return dest


def data_root(root: Path, download: bool, what: str, holds: str, downloadable: bool = True) -> Path:
    """The data folder must exist, unless we are asked to download into it.

    ``what`` names the data set and ``holds`` what the folder should contain, for the message.
    """
    if root.is_dir():
        return root
    if root.exists():
        raise DataError(
            f"{what} root {root} is a file, not a folder: set dataset.root (or METALAB_DATA) "
            f"to the folder that holds {holds}."
        )
    if not download or not downloadable:
        fetch_it = ", or set dataset.download=true to fetch it there" if downloadable else ""
        raise DataError(
            f"{what} folder {root} does not exist: set dataset.root (or the METALAB_DATA "
            f"environment variable, whose {root.name}/ subfolder is used) to the folder that "
            f"holds {holds}{fetch_it}."
        )
    make_folder(root, what)
    return root
