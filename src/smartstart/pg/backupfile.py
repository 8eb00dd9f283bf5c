"""Handing a backup file (or its manifest) out for download, and nothing else.

Only a backup the directory lists (a manifest beside it) is handed out, by its bare name:
no path separators, no dot-files, no NUL, no symbolic link (opened with O_NOFOLLOW, so a
link swapped in after the listing is refused too), only a regular file. The file is
opened here and streamed from that descriptor: what was checked is what is sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from smartstart.pg.backup import list_backups, manifest_path

# A backup's file name as `choose_path` and pg_dump users write them; anything else is unknown.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
CHUNK = 1024 * 1024


class NoSuchBackup(LookupError):
    """Not a backup this directory lists (or not one that can be handed out)."""


@dataclass(frozen=True)
class Opened:
    """An open backup (or manifest) file: what to call it, its size and type."""

    file: BinaryIO
    filename: str
    size: int
    media_type: str
    sha256: str | None  # the dump's, from its manifest (None for the manifest itself)

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes in chunks; closes it at the end (or when abandoned)."""
        with self.file:
            while chunk := self.file.read(CHUNK):
                yield chunk


def _media_type(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".gz"):
        return "application/gzip"
    if name.endswith(".sql"):
        return "application/sql"
    return "application/octet-stream"


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # missing, a symbolic link (ELOOP), unreadable
        raise NoSuchBackup(path.name) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NoSuchBackup(path.name)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def open_backup(directory: Path, name: str, *, manifest: bool = False) -> Opened:
    """The listed backup `name` in directory (its manifest with manifest=True), open."""
    if "\0" in name or NAME.fullmatch(name) is None:
        raise NoSuchBackup(name[:80])
    found = next((b for b in list_backups(directory) if b.path.name == name), None)
    if found is None or found.path.parent != directory:
        raise NoSuchBackup(name)
    with contextlib.suppress(OSError):
        # The directory itself may be a link (a mount elsewhere); its entries may not.
        if found.path.resolve().parent != directory.resolve():
            raise NoSuchBackup(name)
    # The dump is checked even when its manifest is asked for: never half of a link.
    file, size = _open_regular(found.path)
    if size != found.manifest.size:
        file.close()  # being rewritten, or altered: not what the listing describes
        raise NoSuchBackup(name)
    if not manifest:
        return Opened(file, found.path.name, size, _media_type(name), found.manifest.sha256)
    file.close()
    path = manifest_path(found.path)
    file, size = _open_regular(path)
    return Opened(file, path.name, size, _media_type(path.name), None)
