"""Probes the doctor uses: who listens on a port, which client binaries would run, and
how their version compares with the server's. Knows nothing of users."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLIENTS = ("psql", "pg_dump", "pg_restore")


@dataclass(frozen=True)
class Listener:
    """A process listening on a TCP port (when /proc lets us see it)."""

    pid: int | None
    program: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "a program this user cannot see"
        return f"{self.program or 'a process'} (pid {self.pid})"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
                listening = len(fields) > 9 and fields[3] == "0A"
                if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def listener(port: int) -> Listener | None:
    """The process listening on port, or None when /proc shows no listener."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        program = (entry / "comm").read_text().strip()
                        return Listener(int(entry.name), program)
    return Listener(None, None)


def resolves(host: str) -> str | None:
    """None when host resolves (or is a socket directory); the resolver's error otherwise."""
    if not host or host.startswith("/"):
        return None
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as e:
        return str(e)
    return None


def reachable(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to host:port opens; why it did not otherwise."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return e.strerror or str(e)


def major(version_text: str) -> int | None:
    """The major version in `psql (PostgreSQL) 15.18 …` or `150018`-style numbers."""
    match = re.search(r"(\d+)(?:\.(\d+))?", version_text)
    if match is None:
        return None
    number = int(match.group(1))
    return number // 10000 if number >= 10000 else number


def client_versions(bin_dir: Path | None) -> dict[str, str]:
    """`--version` of each client binary SmartStart would run (bin_dir first, then PATH)."""
    found: dict[str, str] = {}
    for name in CLIENTS:
        candidate = bin_dir / name if bin_dir is not None else None
        path = str(candidate) if candidate and candidate.exists() else shutil.which(name)
        if path is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            found[path] = out
    return found


def older_clients(versions: dict[str, str], server_major: int) -> dict[str, str]:
    """The clients whose major version is below the server's (pg_dump refuses to dump it)."""
    return {
        path: text
        for path, text in versions.items()
        if (m := major(text)) is not None and m < server_major
    }
