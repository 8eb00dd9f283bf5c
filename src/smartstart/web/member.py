"""Pages every signed-in user has: My journey and Profile (names, password, sessions)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

from smartstart.api.routes.auth import _clear_session_cookies, _set_session_cookies
from smartstart.db.models import LEVELS
from smartstart.domain import auth, journey, users
from smartstart.domain.errors import Invalid
from smartstart.web.core import View, page, redirect


@dataclass(frozen=True)
class LevelProgress:
    """Where an XP total stands between its level's floor and the next level's."""

    name: str
    xp: int
    floor: int
    next_name: str | None
    next_floor: int | None

    @property
    def to_next(self) -> int:
        return 0 if self.next_floor is None else self.next_floor - self.xp

    @property
    def done(self) -> int:
        return self.xp - self.floor

    @property
    def span(self) -> int:
        return 1 if self.next_floor is None else self.next_floor - self.floor


def level_progress(xp: int, level: str) -> LevelProgress:
    """The level (as the database derived it) and the next one's threshold."""
    names = [n for n, _ in LEVELS]
    i = names.index(level) if level in names else 0
    nxt = LEVELS[i + 1] if i + 1 < len(LEVELS) else None
    return LevelProgress(level, xp, LEVELS[i][1], nxt[0] if nxt else None, nxt[1] if nxt else None)


@page()
def my_journey(view: View) -> Response:
    """GET /journey: one's stages in order, XP and level."""
    mine = journey.journey(view.conn, view.principal.user_id)
    user = mine["user"]
    return view.render(
        "journey.html",
        title="My journey",
        journey=mine,
        level=level_progress(user["xp"], user["level"]),
    )


def _progress(view: View, action: str) -> Response:
    stage = view.request.path_params["stage"]
    done = journey.progress(view.conn, view.actor, view.principal.user_id, stage, action)
    if not done["changed"]:
        return view.done("/journey", f"{done['stage']}: already {done['status'].lower()}.")
    earned = (
        f" +{done['xpAwarded']} XP (now {done['xp']}, {done['level']})."
        if done["xpAwarded"]
        else "."
    )
    return view.done("/journey", f"{done['stage']}: {done['status'].lower()}{earned}")


@page()
def journey_action(view: View) -> Response:
    """POST /journey/{stage}/{action}: start, complete or skip one of one's stages."""
    return _progress(view, view.request.path_params["action"])


@page()
def profile(view: View) -> Response:
    """GET /profile: one's names, password change and sessions."""
    me = auth.me(view.conn, view.principal.user_id)
    sessions = auth.list_user_sessions(view.conn, view.principal.user_id, view.settings, limit=50)
    return view.render(
        "profile.html",
        title="Profile",
        me=me,
        sessions=sessions.items,
        more_sessions=sessions.next_cursor is not None,
        current_session=view.principal.session_id,
    )


@page()
def profile_save(view: View) -> Response:
    """POST /profile: change one's name and username."""
    changes: users.ProfileChanges = {
        "name": view.field("name").strip() or None,
        "username": view.field("username").strip(),
    }
    users.update_profile(view.conn, view.actor, view.principal.user_id, changes)
    return view.done("/profile", "Profile saved.")


@page()
def password_change(view: View) -> Response:
    """POST /profile/password: a new password (the current one required); every other
    session ends, this browser gets a new one."""
    new = view.field("new_password")
    if new != view.field("confirm_password"):
        raise Invalid("the two new passwords differ", details={"field": "confirm_password"})
    token, _ = auth.change_own_password(
        view.conn,
        view.actor,
        view.principal.user_id,
        view.field("current_password"),
        new,
        view.settings,
        refusals=auth.apart(view.conn),
    )
    response = view.done("/profile", "Password changed; your other sessions have ended.")
    _set_session_cookies(response, view.settings, token)
    return response


@page()
def session_revoke(view: View) -> Response:
    """POST /profile/sessions/{session}/revoke: end one of one's sessions."""
    session_id = view.request.path_params["session"]
    auth.revoke_session(view.conn, view.actor, session_id, user_id=view.principal.user_id)
    if session_id == view.principal.session_id:
        response = redirect("/login")
        _clear_session_cookies(response, view.settings)
        return response
    return view.done("/profile", "Session ended.")
