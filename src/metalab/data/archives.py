"""Reading a data set's files straight out of a zip, a tar(.gz) or an extracted folder.

Nothing is extracted, so a read-only data root works; and an entry whose name would land
outside the archive's folder (zip-slip: absolute, drive-lettered or climbing with '..') is
refused before anything is read, since such an archive is broken or hostile.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from metalab.errors import DataError

Reader = Callable[[str], bytes]


def is_archive(path: Path) -> bool:
    return path.name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))


@contextmanager
def open_tree(source: Path, fix: str) -> Iterator[tuple[list[str], Reader]]:
    """(file names, a reader of one name) for a zip, a tar or a folder.

    Names are relative to the folder holding ``source``, so ``x.zip`` holding ``x/a.png`` and
    the extracted ``x/a.png`` both give ``x/a.png``. ``fix`` ends every error message.
    """
    if source.is_dir():
        names = sorted(
            p.relative_to(source.parent).as_posix() for p in source.rglob("*") if p.is_file()
        )
        yield names, lambda name: (source.parent / name).read_bytes()
    elif source.name.endswith(".zip"):
        with _open_zip(source, fix) as tree:
            yield tree
    else:
        with _open_tar(source, fix) as tree:
            yield tree


@contextmanager
def _open_zip(source: Path, fix: str) -> Iterator[tuple[list[str], Reader]]:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{source} is not a readable zip file ({err}): {fix}.") from err
    with archive:
        for info in archive.infolist():
            refuse_escape(source, info.filename, fix)
        names = [info.filename for info in archive.infolist() if not info.is_dir()]

        def read(name: str) -> bytes:
            try:
                return archive.read(name)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
                raise _corrupt(source, name, err, fix) from err

        yield names, read


@contextmanager
def _open_tar(source: Path, fix: str) -> Iterator[tuple[list[str], Reader]]:
    try:
        archive = tarfile.open(source)  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{source} is not a readable tar archive ({err}): {fix}.") from err
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise DataError(f"{source} is not a readable tar archive ({err}): {fix}.") from err
        for member in members:
            refuse_escape(source, member.name, fix)
        files = {m.name: m for m in members if m.isfile()}

        def read(name: str) -> bytes:
            try:
                handle = archive.extractfile(files[name])
                assert handle is not None
                return handle.read()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
                raise _corrupt(source, name, err, fix) from err

        yield sorted(files), read


def _corrupt(source: Path, name: str, err: Exception, fix: str) -> DataError:
    return DataError(f"{source} is truncated or corrupt at {name} ({err}): {fix}.")


def refuse_escape(source: Path, name: str, fix: str) -> None:
    """Entries that are absolute or climb with '..' would land outside any extract folder."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise DataError(
            f"{source} has the entry {name!r}, which points outside the archive's folder, "
            f"so it is refused: {fix}."
        )
