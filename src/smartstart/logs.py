"""The Brain's log: JSON lines for machines (and `smartstart logs`), plain lines for a person.

Every record is one line. In JSON: `time` (UTC, ISO 8601), `level`, `logger`, `message`,
and for a request (the access log, api/wire.py) `request_id`, `method`, `path`, `route`,
`status`, `duration_ms`, `actor` and `client`; a traceback is `exc`, inside the line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from smartstart.config import Settings

# The fields a record may carry besides its message (set by the access log).
REQUEST_FIELDS = (
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "actor",
    "client",
)


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request fields a record carries (none for an ordinary record)."""
    return {k: v for k in REQUEST_FIELDS if (v := record.__dict__.get(k)) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL message key=value …`, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extra = fields(record)
        line = f"{_time(record)[:23].replace('T', ' ')} {record.levelname:<7} {record.getMessage()}"
        if "duration_ms" in extra:
            line += f" {extra['duration_ms']} ms"
        line += "".join(
            f" {k}={extra[k]}" for k in ("actor", "request_id") if extra.get(k) is not None
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def json_lines(settings: Settings) -> bool:
    """Whether the Brain writes JSON lines (auto: unless its stderr is a terminal)."""
    if settings.log_format == "auto":
        return not sys.stderr.isatty()
    return settings.log_format == "json"


def log_config(settings: Settings) -> dict[str, Any]:
    """The Brain's logging (uvicorn's `log_config`): its loggers and ours, one format."""
    formatter = JsonFormatter if json_lines(settings) else TextFormatter
    handler = {"class": "logging.StreamHandler", "formatter": "brain", "stream": "ext://sys.stderr"}
    own = {"handlers": ["brain"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"brain": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"brain": handler},
        "loggers": {
            "uvicorn": own,
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": own,
            "smartstart": own,
        },
    }
