"""One page of any listing, one limit rule, and the one cursor every listing uses.

Every listing pages by keyset (WHERE (key, id) > last seen, never OFFSET), so
pages neither skip nor repeat rows while others write. The cursor that carries
the last position is opaque and signed (`smartstart.signing`) with a purpose per
listing: a client can neither edit it nor replay a users cursor on the audit log.
It also records a digest of the sort and filters it was made for, so a cursor
used with another sort or filter is refused instead of silently skipping rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from smartstart import signing
from smartstart.config import Settings
from smartstart.domain.errors import Invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Far above any cursor we make (a key value is bounded by its column), so a
# pasted megabyte is refused before it is decoded.
MAX_CURSOR_LENGTH = 1024

T = TypeVar("T")
KeyKind = Literal["int", "str", "ts"]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the cursor of the next one (None on the last page)."""

    items: list[T]
    next_cursor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The shape every face prints: {"items": [...], "next_cursor": ...}."""
        return {"items": list(self.items), "next_cursor": self.next_cursor}


def check_limit(limit: object) -> int:
    """The page size, or the one error every face gives for a bad one."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid(
            f"limit must be a whole number from 1 to {MAX_LIMIT}",
            details={"field": "limit", "min": 1, "max": MAX_LIMIT},
        )
    return limit


def _bad_cursor() -> Invalid:
    return Invalid(
        "the cursor is invalid: pass the next_cursor of a previous page of this listing unchanged",
        details={"field": "cursor"},
    )


def _scope_digest(scope: Mapping[str, Any]) -> str:
    text = json.dumps(scope, sort_keys=True, separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:9]).decode()


def _encode_value(value: Any, kind: KeyKind) -> Any:
    if kind == "ts":
        if not isinstance(value, datetime):
            raise TypeError(f"a ts key needs a datetime, not {type(value).__name__}")
        return value.isoformat()
    return value


def _decode_value(value: Any, kind: KeyKind) -> Any:
    """A key value of the expected kind; ValueError otherwise."""
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str) and "\x00" not in value:
        return value
    if kind == "ts" and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            return parsed
    raise ValueError(value)


@dataclass(frozen=True)
class Keyset:
    """How one listing pages: its name (the signing purpose), the sort and filters a
    cursor is bound to, and the kind of each part of its key (e.g. ("ts", "str"))."""

    listing: str
    kinds: tuple[KeyKind, ...]
    scope: Mapping[str, Any]

    @property
    def purpose(self) -> str:
        return f"cursor:{self.listing}"

    def after(self, settings: Settings, cursor: str | None) -> tuple[Any, ...] | None:
        """The position a cursor continues after (None: the first page); Invalid when the
        cursor is not one this listing made, or was made for another sort or filter."""
        if cursor is None:
            return None
        if (
            not isinstance(cursor, str)
            or not 0 < len(cursor) <= MAX_CURSOR_LENGTH
            or "\x00" in cursor
        ):
            raise _bad_cursor()
        payload = signing.unsign(settings, self.purpose, cursor)
        if payload is None:
            raise _bad_cursor()
        try:
            data = json.loads(payload)
            key = data["k"]
            if data["f"] != _scope_digest(self.scope):
                raise Invalid(
                    "the cursor was made for another sort or filter: start again without it",
                    details={"field": "cursor"},
                )
            if not isinstance(key, list) or len(key) != len(self.kinds):
                raise ValueError(key)
            return tuple(_decode_value(v, k) for v, k in zip(key, self.kinds, strict=True))
        except (ValueError, TypeError, KeyError):
            raise _bad_cursor() from None

    def cursor(self, settings: Settings, key: Sequence[Any]) -> str:
        """The cursor of the page after the row whose key is `key`."""
        values = [_encode_value(v, k) for v, k in zip(key, self.kinds, strict=True)]
        payload = json.dumps(
            {"f": _scope_digest(self.scope), "k": values}, separators=(",", ":")
        ).encode()
        return signing.sign(settings, self.purpose, payload)

    def page(
        self,
        settings: Settings,
        rows: list[T],
        limit: int,
        key: Callable[[T], Sequence[Any]],
    ) -> Page[T]:
        """A page from up to limit + 1 rows fetched in order (the extra one says there is more)."""
        if len(rows) <= limit:
            return Page(rows, None)
        items = rows[:limit]
        return Page(items, self.cursor(settings, key(items[-1])))
