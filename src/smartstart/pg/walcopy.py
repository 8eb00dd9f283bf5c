"""archive_command of the embedded cluster: copy one WAL file into the archive, durably.

Run by the PostgreSQL server (as its OS user) for each finished segment:
`python -I walcopy.py SOURCE DESTINATION`. Standard library only, and nothing imported from
SmartStart: the server starts it with a bare interpreter, from a copy in $SMARTSTART_HOME.

Exit status 0 only when DESTINATION holds SOURCE's bytes on disk; anything else exits
non-zero with one line on stderr (the server's log), and the server retries the segment.
"""

from __future__ import annotations

import os
import sys

CHUNK = 1 << 20


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same(a: str, b: str) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def copy(source: str, destination: str) -> None:
    """Copy source to destination: temporary file, fsync, rename, fsync the directory.

    An existing destination with the same bytes is success (the server may archive a
    segment twice after a crash); with different bytes it is refused, never overwritten.
    """
    directory = os.path.dirname(destination) or "."
    if os.path.exists(destination):
        if _same(source, destination):
            return
        raise FileExistsError(f"{destination} exists with different contents: not overwritten")
    tmp = os.path.join(directory, f".{os.path.basename(destination)}.partial-{os.getpid()}")
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        # link() fails if another copy won the race: never replace a segment.
        os.link(tmp, destination)
    except FileExistsError:
        if not _same(source, destination):
            raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(directory)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: walcopy.py SOURCE DESTINATION", file=sys.stderr)
        return 2
    try:
        copy(argv[1], argv[2])
    except OSError as e:
        print(f"SmartStart archive_command: cannot archive {argv[1]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
