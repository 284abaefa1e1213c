"""The one-time preprocessing cache: decoded uint8 tensors saved outside the data root.

Why it looks like this:

- A cache file is named by a hash of everything that shaped it (format, settings, and a
  fingerprint of the source files), so a changed source or setting never meets a stale file.
- Each file also stores a content hash (BLAKE2b) of its tensor: a truncated, garbled or edited
  cache is detected on load, logged, and rebuilt from the source instead of being trusted.
  BLAKE2b rather than sha256 or md5 because it is the fastest of them in pure software (about
  3x sha256 on CPUs without SHA instructions) and a 1.3 GB mini-ImageNet cache is hashed on
  every load.
- The data root may be read-only, so caches live in ``dataset.cache_dir``, else
  ``$METALAB_CACHE``, else ``~/.cache/metalab``; when that folder cannot be written, the next
  writable one of those (and finally the system temp folder) is used, with a warning.
- Files are loaded with ``torch.load(weights_only=True)``: a cache file cannot run code.
- One process builds a missing cache while the others that need it wait (an ``flock`` on a
  lock file beside it): the parallel jobs of a sweep, DDP's ranks or test workers on a fresh
  machine would otherwise each decode the same data at once, for the same file. The lock is
  the kernel's, so a builder that dies releases it and the next waiter builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

Blob = dict[str, Any]


def default_cache_folder() -> Path:
    if os.environ.get("METALAB_CACHE"):
        return Path(os.environ["METALAB_CACHE"]).expanduser()
    return Path.home() / ".cache" / "metalab"


def cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    """cache_dir, else $METALAB_CACHE, else ~/.cache/metalab; never the data root by default."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return default_cache_folder()


def fallback_folders(preferred: Path) -> list[Path]:
    """Where to look and write, in order: the preferred folder, the default, the temp folder."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = str(os.getuid())
    temporary = Path(tempfile.gettempdir()) / f"metalab-{user}"
    candidates = [preferred, default_cache_folder(), temporary]
    unique: list[Path] = []
    for folder in candidates:
        if folder not in unique:
            unique.append(folder)
    return unique


def fingerprint(source: Path) -> str:
    """Content identity of a source: a file's size + hash, or a folder's sorted paths and sizes."""
    digest = hashlib.blake2b(digest_size=16)
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            digest.update(
                f"{path.relative_to(source).as_posix()}\0{path.stat().st_size}\n".encode()
            )
        return f"dir-{digest.hexdigest()}"
    return f"file-{source.stat().st_size}-{_file_hash(source)}"


def _file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_hash(images: torch.Tensor) -> str:
    return hashlib.blake2b(np.ascontiguousarray(images.numpy()).data, digest_size=32).hexdigest()


class TensorCache:
    """One cached build of ``what``: a dict holding a uint8 ``images`` tensor and plain values.

    ``key`` is every input that shaped the build (settings and source fingerprints);
    ``check`` says whether a loaded blob has the layout the caller expects.
    """

    def __init__(
        self,
        folder: Path,
        stem: str,
        key: Sequence[Any],
        what: str,
        check: Callable[[Blob], bool] = lambda blob: True,
    ) -> None:
        self.key = "|".join(str(part) for part in key)
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        self.name = f"{stem}-{digest}.pt"
        self.folders = fallback_folders(folder)
        self.what, self.check = what, check

    def load_or_build(self, build: Callable[[], Blob]) -> Blob:
        """The cached blob if one is intact, else ``build()``, saved for next time; while
        another process builds it, wait and read its file rather than build it again."""
        hit = self._find()
        if hit is not None:
            return hit
        with self._build_lock():
            hit = self._find()  # built by the process this one waited for
            if hit is not None:
                return hit
            blob = build()
            self._write(blob)
        return blob

    def _find(self) -> Blob | None:
        for folder in self.folders:
            hit = self._read(folder / self.name)
            if hit is not None:
                return hit
        return None

    @contextlib.contextmanager
    def _build_lock(self) -> Iterator[None]:
        """An exclusive lock on ``.<name>.lock`` in the first folder that takes one; none
        where no folder can (the build then only risks being done twice)."""
        for folder in self.folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                handle = open(folder / f".{self.name}.lock", "a")  # noqa: SIM115
            except OSError:
                continue
            with handle:
                try:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        log.info(
                            "Another process is building the %s cache %s; waiting for it "
                            "instead of decoding the data a second time.",
                            self.what,
                            folder / self.name,
                        )
                        fcntl.flock(handle, fcntl.LOCK_EX)
                except OSError:  # a file system without locks (some network mounts)
                    pass
                yield
            return
        yield

    def _read(self, path: Path) -> Blob | None:
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            images = blob["images"]
            intact = (
                blob["key"] == self.key
                and images.dtype == torch.uint8
                and blob["content_hash"] == tensor_hash(images)
                and self.check(blob)
            )
        except Exception as err:  # any unreadable file only means "decode again"
            log.warning("The %s cache %s is unreadable (%s); rebuilding it.", self.what, path, err)
            return None
        if not intact:
            log.warning("The %s cache %s is corrupt or stale; rebuilding it.", self.what, path)
            return None
        return blob

    def _write(self, blob: Blob) -> None:
        """Atomic write into the first writable folder; no writable folder is only a warning."""
        stored = {**blob, "key": self.key, "content_hash": tensor_hash(blob["images"])}
        for number, folder in enumerate(self.folders):
            try:
                _save_atomically(stored, folder / self.name)
            except OSError as err:
                following = self.folders[number + 1 :]
                then = f"trying {following[0]} instead" if following else "it stays uncached"
                log.warning(
                    "Could not write the %s cache in %s (%s); %s. Set dataset.cache_dir or "
                    "METALAB_CACHE to a writable folder, or the data is decoded again on every "
                    "load.",
                    self.what,
                    folder,
                    err,
                    then,
                )
                continue
            blob.update(key=self.key, content_hash=stored["content_hash"])
            return


def _save_atomically(blob: Blob, path: Path) -> None:
    """temp file + os.replace: a crash mid-write never leaves a half file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(blob, handle)
        os.chmod(temp, 0o644)  # mkstemp makes it private; a cache is shareable
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
