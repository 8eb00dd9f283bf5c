"""Who acts: a signed-in user, the CLI operator or an anonymous client, and from where."""

from __future__ import annotations

import getpass
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting (the audit log's `actor`), from where, and the permissions they hold.

    The CLI operator already holds the database, so it holds every permission and
    outranks every user; it is explicit (`Actor.operator()`), never a missing actor.
    """

    label: str
    user_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    permissions: frozenset[str] = frozenset()
    is_operator: bool = False

    @classmethod
    def operator(cls) -> Actor:
        """The operator at the CLI, labelled with the OS user (`cli:<name>`)."""
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "unknown"
        return cls(label=f"cli:{name}", is_operator=True)

    # The CLI's name for the operator before the kernel existed; kept for callers.
    cli = operator

    @classmethod
    def user(
        cls,
        user_id: str,
        ip: str | None = None,
        user_agent: str | None = None,
        *,
        permissions: frozenset[str] = frozenset(),
    ) -> Actor:
        """A signed-in user holding `permissions` (their effective set)."""
        return cls(
            label=user_id, user_id=user_id, ip=ip, user_agent=user_agent, permissions=permissions
        )

    @classmethod
    def anonymous(cls, ip: str | None = None, user_agent: str | None = None) -> Actor:
        return cls(label="anonymous", ip=ip, user_agent=user_agent)

    def holds(self, permission: str) -> bool:
        return self.is_operator or permission in self.permissions

    def lacks(self, permissions: frozenset[str] | set[str]) -> list[str]:
        """The permissions of `permissions` this actor does not hold, sorted."""
        if self.is_operator:
            return []
        return sorted(set(permissions) - self.permissions)
