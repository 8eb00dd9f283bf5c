"""The one create/read/update/delete of the two catalogue tables, roles and permissions.

Both behave alike (an id and a unique name, a description, `roles:manage` to change,
some rows the Brain relies on that cannot be renamed or deleted, an audit row per
change); a `Kind` says what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql

from smartstart.config import Settings
from smartstart.domain import audit, paging
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict, NotFound
from smartstart.domain.rbac.common import Param, description, fetch_all, fetch_one, mapped, usable
from smartstart.domain.rbac.rows import PermissionRow, RoleRow

R = TypeVar("R", RoleRow, PermissionRow)
Conn = psycopg.Connection[Any]
MANAGE = "roles:manage"
Columns = dict[str, Param]


class _Unset:
    """The default of an argument that was not given (None clears a description)."""


UNSET: Any = _Unset()


class Kind(Generic[R]):
    """What differs between roles and permissions: subclasses name their table and
    override the hooks."""

    noun: str  # "role": the audit resource, NotFound's detail
    table: str  # "Role"
    alias: str  # the table's alias in `select`
    select: str  # the row with its relations, without WHERE
    row: type[R]

    @property
    def plural(self) -> str:
        """ "roles": the audit action's prefix and the listing's name."""
        return self.noun + "s"

    @property
    def by_ref(self) -> str:
        return f"{self.select} WHERE {self.alias}.id = %s OR {self.alias}.name = %s"

    def name_columns(self, name: str) -> Columns:
        """The columns a (validated) name sets; Invalid when it is malformed."""
        raise NotImplementedError

    def refuse(self, row: R, verb: str) -> None:
        """Raise when the row cannot be `verb` ("renamed", "deleted")."""

    def snapshot(self, row: R) -> dict[str, object]:
        """What the audit log keeps of a row."""
        return {"name": row["name"], "description": row["description"]}

    def gone(self, row: R) -> dict[str, object]:
        """What the audit log keeps of a deleted row."""
        return self.snapshot(row)

    def created(self, conn: Conn, row_id: str) -> None:
        """What else a new row needs, in its transaction."""

    def in_use(self, conn: Conn, row: R) -> None:
        """Raise when something else still needs the row (a delete is refused)."""


def resolve(conn: Conn, kind: Kind[R], ref: str) -> R:
    """One row by id or name, or NotFound."""
    if not usable(ref):
        raise NotFound(f"no such {kind.noun}", details={kind.noun: None})
    row = fetch_one(conn, kind.row, kind.by_ref, [ref, ref])
    if row is None:
        raise NotFound(f"no {kind.noun} {ref!r}", details={kind.noun: ref})
    return row


def list_page(
    conn: Conn, settings: Settings, kind: Kind[R], limit: int, cursor: str | None
) -> paging.Page[R]:
    """A page of rows by name (unique: the whole key)."""
    limit = paging.check_limit(limit)
    keyset = paging.Keyset(kind.plural, ("str",), {})
    after = keyset.after(settings, cursor)
    query, params = kind.select, list[Param]()
    if after is not None:
        query += f" WHERE {kind.alias}.name > %s"
        params.extend(after)
    query += f" ORDER BY {kind.alias}.name LIMIT %s"
    params.append(limit + 1)
    return keyset.page(settings, fetch_all(conn, kind.row, query, params), limit, _name_key)


def _name_key(row: RoleRow | PermissionRow) -> tuple[str]:
    return (row["name"],)


def _audit(
    conn: Conn,
    actor: Actor,
    kind: Kind[R],
    verb: str,
    row_id: str,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
) -> None:
    """One audit row ("roles.update" …) in the change's transaction."""
    audit.record(
        conn,
        actor,
        f"{kind.plural}.{verb}",
        resource=kind.noun,
        resource_id=row_id,
        before=before,
        after=after,
    )


def _refuse_taken(conn: Conn, kind: Kind[R], name: object) -> None:
    query = sql.SQL("SELECT 1 FROM {} WHERE name = %s").format(sql.Identifier(kind.table))
    if conn.execute(query, [name]).fetchone():
        raise Conflict(f"a {kind.noun} named {name!r} already exists", field="name")


def create(
    conn: Conn,
    actor: Actor,
    kind: Kind[R],
    name: str,
    desc: str | None,
    *,
    check: Callable[[Columns], None] | None = None,
) -> R:
    """A new row named `name` (409 if taken); `check` may refuse its columns first."""
    authorize(conn, actor, MANAGE)
    values = kind.name_columns(name)
    if check is not None:
        check(values)
    values["description"] = description(desc)
    _refuse_taken(conn, kind, values["name"])
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(kind.table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    with mapped("name"):
        inserted = conn.execute(query, list(values.values())).fetchone()
    assert inserted is not None
    kind.created(conn, inserted[0])
    row = resolve(conn, kind, inserted[0])
    _audit(conn, actor, kind, "create", row["id"], after=kind.snapshot(row))
    return row


def update(
    conn: Conn,
    actor: Actor,
    kind: Kind[R],
    ref: str,
    *,
    name: str | None = None,
    desc: str | None = UNSET,
) -> R:
    """Rename a row (unless it is refused) or describe it (None clears the description)."""
    authorize(conn, actor, MANAGE)
    before = resolve(conn, kind, ref)
    changes: Mapping[str, Param] = {}
    if name is not None and name != before["name"]:
        changes = kind.name_columns(name)
        kind.refuse(before, "renamed")
        _refuse_taken(conn, kind, name)
    if desc is not UNSET and desc != before["description"]:
        changes = {**changes, "description": description(desc)}
    if changes:
        query = sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
            sql.Identifier(kind.table),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes),
        )
        with mapped("name"):
            conn.execute(query, [*changes.values(), before["id"]])
    after = resolve(conn, kind, before["id"])
    _audit(conn, actor, kind, "update", after["id"], kind.snapshot(before), kind.snapshot(after))
    return after


def deletable(conn: Conn, actor: Actor, kind: Kind[R], ref: str) -> R:
    """The row a delete would remove, every rule checked; nothing written."""
    authorize(conn, actor, MANAGE)
    row = resolve(conn, kind, ref)
    kind.refuse(row, "deleted")
    kind.in_use(conn, row)
    return row


def delete(conn: Conn, actor: Actor, kind: Kind[R], row: R) -> R:
    """Delete a row `deletable` returned in this transaction (its relations go with it)."""
    query = sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(kind.table))
    with mapped(kind.noun):
        conn.execute(query, [row["id"]])
    _audit(conn, actor, kind, "delete", row["id"], before=kind.gone(row))
    return row
