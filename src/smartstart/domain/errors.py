"""Domain errors: each knows the HTTP status and error code the API answers with."""

from __future__ import annotations

from typing import Any

from smartstart.errors import SmartStartError


class DomainError(SmartStartError):
    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, fix: str | None = None
    ) -> None:
        super().__init__(message, fix)
        self.details = details or {}


class Invalid(DomainError):
    status = 422
    code = "invalid"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    """A unique value already taken; `field` names it."""

    status = 409
    code = "conflict"

    def __init__(self, message: str, *, field: str | None = None, **kw: Any) -> None:
        details = kw.pop("details", None) or {}
        if field:
            details["field"] = field
        super().__init__(message, details=details, **kw)
        self.field = field


class LastSuperAdmin(Conflict):
    """The change would leave no ACTIVE SUPER_ADMIN (the database refuses it too)."""

    code = "last_super_admin"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class TooManyRequests(DomainError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, **kw: Any) -> None:
        details = kw.pop("details", None) or {}
        details["retry_after"] = retry_after
        super().__init__(message, details=details, **kw)
        self.retry_after = retry_after
