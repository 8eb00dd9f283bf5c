"""The one error type every face knows how to show."""

from __future__ import annotations


class SmartStartError(Exception):
    """A failure with a cause a person can act on; `fix` says how."""

    code = "error"

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message


class ConfigurationError(SmartStartError):
    code = "configuration"


class ClusterError(SmartStartError):
    code = "cluster"


class DatabaseUnavailable(SmartStartError):
    code = "database_unavailable"
