"""`smartstart logs`: the PostgreSQL and Brain logs, filtered by time, level and text.

PostgreSQL's lines carry the cluster's `log_line_prefix` (`%m [%p] %q%u@%d `, UTC) and a
severity; DETAIL, HINT, STATEMENT and CONTEXT lines belong to the entry before them. The
Brain writes JSON lines (smartstart/logs.py); a line that is not JSON (the supervisor's,
an older log) is shown as it is.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from smartstart.cli.common import WHEN_HELP, console, fail, handle_errors, parse_when, settings
from smartstart.config import Settings

TAIL_BYTES = 8 << 20  # without --since, the history is read from the file's last 8 MiB
LEVELS = ("debug", "info", "warning", "error", "critical")
_PG_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?P<zone>[A-Z]{1,5}|[+-]\d\d) "
    r"\[(?P<pid>\d+)\] (?:(?P<user>[^@\s]*)@(?P<db>\S*) )?"
    r"(?P<severity>[A-Z]+\d?):\s+(?P<message>.*)"
)
_PG_LEVEL = {
    "DEBUG": "debug",
    "LOG": "info",
    "INFO": "info",
    "NOTICE": "info",
    "WARNING": "warning",
    "ERROR": "error",
    "FATAL": "critical",
    "PANIC": "critical",
}
_PG_MORE = ("DETAIL", "HINT", "STATEMENT", "CONTEXT", "QUERY", "LOCATION")
_TEXT_LEVEL = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b:?")


class Source(StrEnum):
    postgres = "postgres"
    brain = "brain"


class Level(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


@dataclass
class Entry:
    """One log entry (with the lines that continue it)."""

    source: str
    time: datetime | None
    level: str
    message: str
    fields: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "time": self.time.isoformat() if self.time else None,
            "level": self.level,
            "message": self.message,
            **self.fields,
        }

    def text(self, prefix: bool) -> str:
        when = self.time.astimezone(UTC).strftime("%F %T.%f")[:23] if self.time else " " * 23
        extra = self.fields
        tail = f" {extra['duration_ms']} ms" if "duration_ms" in extra else ""
        tail += "".join(f" {k}={extra[k]}" for k in ("actor", "request_id") if extra.get(k))
        line = f"{when} {self.level.upper():<8} {self.message}{tail}"
        return f"{self.source:8} | {line}" if prefix else line


def _postgres(line: str, last: Entry | None) -> Entry | None:
    """The entry a PostgreSQL line starts, or None when it continues `last`."""
    m = _PG_LINE.fullmatch(line)
    if m is None or m["severity"] in _PG_MORE:
        if last is not None:
            last.message += "\n" + (f"{m['severity']}:  {m['message']}" if m else line)
            return None
        return Entry("postgres", None, "info", line)
    severity = m["severity"].rstrip("0123456789")
    stamp = datetime.fromisoformat(m["time"]).replace(tzinfo=UTC)  # log_timezone is UTC
    fields: dict[str, object] = {"pid": int(m["pid"])}
    if m["user"]:
        fields.update(user=m["user"], database=m["db"])
    return Entry("postgres", stamp, _PG_LEVEL.get(severity, "info"), m["message"], fields)


def _brain(line: str, last: Entry | None) -> Entry | None:
    """The entry of a Brain line (a JSON object, or plain text)."""
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if isinstance(data, dict):
            stamp = None
            with contextlib.suppress(ValueError):
                stamp = datetime.fromisoformat(str(data.pop("time", "")))
            level = str(data.pop("level", "info")).lower()
            message = str(data.pop("message", ""))
            if "exc" in data:
                message += "\n" + str(data.pop("exc"))
            return Entry("brain", stamp, level if level in LEVELS else "info", message, data)
    if last is not None and (line[:1].isspace() or line.startswith("Traceback")):
        last.message += "\n" + line
        return None
    found = _TEXT_LEVEL.match(line)
    level = found[1].lower() if found else "info"
    return Entry("brain", None, level, line[found.end() :].strip() if found else line)


def parse(source: Source, lines: Iterable[str]) -> Iterator[Entry]:
    """The entries of a log's lines, each complete with its continuation lines."""
    parse_line = _postgres if source is Source.postgres else _brain
    pending: Entry | None = None
    for line in lines:
        if not line.strip():
            continue
        entry = parse_line(line, pending)
        if entry is not None:
            if pending is not None:
                yield pending
            pending = entry
    if pending is not None:
        yield pending


@dataclass(frozen=True)
class Filter:
    since: datetime | None = None
    level: str = "debug"
    grep: str | None = None

    def __call__(self, entry: Entry) -> bool:
        if self.since is not None and (entry.time is None or entry.time < self.since):
            return False
        if LEVELS.index(entry.level) < LEVELS.index(self.level):
            return False
        if self.grep is not None:
            haystack = entry.message + " " + " ".join(map(str, entry.fields.values()))
            return self.grep.lower() in haystack.lower()
        return True


def _path(s: Settings, source: Source) -> Path:
    if source is Source.postgres:
        from smartstart.pg.cluster import Cluster

        return Cluster.from_settings(s).log_file
    from smartstart.services import brain

    return brain.log_file(s)


def _read(path: Path, whole: bool) -> tuple[list[str], int]:
    """The file's lines (its last TAIL_BYTES unless whole) and its size."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        start = 0 if whole else max(0, size - TAIL_BYTES)
        f.seek(start)
        data = f.read(size - start)
    lines = data.decode(errors="replace").splitlines()
    return (lines[1:] if start else lines), size


def _show(entries: Iterable[Entry], as_json: bool, prefix: bool) -> None:
    for e in entries:
        if as_json:
            typer.echo(json.dumps(e.as_json(), default=str, ensure_ascii=False))
        else:
            color = {"warning": "yellow", "error": "red", "critical": "red"}.get(e.level)
            typer.echo(typer.style(e.text(prefix), fg=color) if color else e.text(prefix))


def _follow(
    paths: dict[Source, Path], sizes: dict[Source, int], keep: Filter, as_json: bool
) -> None:
    """Print what is appended to each log, entry by entry, until interrupted."""
    partial = {src: "" for src in paths}
    while True:
        time.sleep(0.25)
        for src, path in paths.items():
            try:
                with path.open("rb") as f:
                    size = f.seek(0, 2)
                    if size < sizes[src]:  # truncated or replaced: start again
                        sizes[src] = 0
                    f.seek(sizes[src])
                    chunk = f.read(size - sizes[src])
            except FileNotFoundError:
                continue
            sizes[src] += len(chunk)
            text = partial[src] + chunk.decode(errors="replace")
            *complete, partial[src] = text.split("\n")
            _show(filter(keep, parse(src, complete)), as_json, len(paths) > 1)


@handle_errors
def logs(
    source: Annotated[Source | None, typer.Argument(help="Which log; both when omitted.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries.")
    ] = False,
    since: Annotated[
        datetime | None,
        typer.Option(parser=parse_when, metavar="WHEN", help="Entries from then on: " + WHEN_HELP),
    ] = None,
    level: Annotated[
        Level, typer.Option("--level", help="Entries of this level and worse.")
    ] = Level.debug,
    grep: Annotated[
        str | None, typer.Option("--grep", help="Entries containing this text (any case).")
    ] = None,
    lines: Annotated[
        int | None,
        typer.Option(
            "--lines", "-n", min=0, help="Entries of history (default 50, all with --since)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per entry.")] = False,
) -> None:
    """Show the PostgreSQL and Brain logs (under $SMARTSTART_HOME/logs), filtered."""
    if grep is not None and len(grep) > 10_000:
        raise fail("--grep is longer than 10000 characters")
    s = settings()
    sources = [source] if source else list(Source)
    if not s.embedded and Source.postgres in sources:
        if source is Source.postgres:
            raise fail(
                "PostgreSQL is external (SMARTSTART_DATABASE_URL): its logs are on that server"
            )
        sources.remove(Source.postgres)
    keep = Filter(since, level.value, grep)
    count = lines if lines is not None else (None if since else 50)
    paths = {src: _path(s, src) for src in sources}
    sizes: dict[Source, int] = {}
    timed: list[tuple[datetime, Entry]] = []
    for src, path in paths.items():
        if not path.exists():
            if not as_json:
                console.print(f"[dim]{src.value}: no log yet ({path})[/]", highlight=False)
            sizes[src] = 0
            continue
        text, sizes[src] = _read(path, whole=since is not None)
        when = datetime.min.replace(tzinfo=UTC)
        for entry in filter(keep, parse(src, text)):
            when = entry.time or when  # a line without a time sorts after the one before
            timed.append((when, entry))
    if len(paths) > 1:  # both logs, in time order
        timed.sort(key=lambda pair: pair[0])
    shown = [entry for _, entry in timed]
    if count is not None:
        shown = shown[-count:] if count else []
    _show(shown, as_json, len(paths) > 1)
    if follow:
        _follow(paths, sizes, keep, as_json)


def register(app: typer.Typer) -> None:
    app.command()(logs)
