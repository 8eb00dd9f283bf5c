"""The web app in a real browser: Debian's Chromium driven by Playwright, against a Brain
served on a real socket. One browser for the session, one Brain for the module; every page
is opened at 1280×800 and at 390 px, checked for console errors, failed requests and
horizontal scroll, and screenshotted into test-output/screenshots/."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.web.analytics import ANALYSES
from smartstart.web.routes import PAGES
from tests.api.conftest import _FIXTURE_HASH, served
from tests.conftest import _fresh, drop_db
from tests.web.conftest import FIXTURE_PASSWORD, kept_databases

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
WIDTHS = {"wide": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
_n = itertools.count()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # One browser for every test of this module (they all live here). Not session-wide:
    # between calls Playwright's sync API leaves its event loop marked as running in this
    # thread, and later tests' asyncio.run() would refuse to start until it exits.
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def brain(pg_cluster: Any, seeded_template: str) -> Iterator[tuple[str, Settings]]:
    """A Brain on a real socket, on a seeded database of this module's own."""
    for settings in _fresh(pg_cluster, seeded_template):
        with served(create_app(settings)) as url:
            yield url, settings


@pytest.fixture(scope="module")
def person(brain: tuple[str, Settings]) -> Callable[..., dict[str, Any]]:
    """A new user of a role (password FIXTURE_PASSWORD)."""
    _, settings = brain

    def make(role: str = "MEMBER", xp: int = 0) -> dict[str, Any]:
        n = next(_n)
        email = f"browser{n}@example.com"
        with psycopg.connect(settings.url_for(), autocommit=True) as conn:
            row = conn.execute(
                'INSERT INTO "User" (email, username, name, password, role, xp)'
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                [email, f"browser{n}", f"Browser {n}", _FIXTURE_HASH, role, xp],
            ).fetchone()
        assert row is not None
        return {"id": row[0], "email": email}

    return make


class Watched:
    """A page whose console errors and failed requests are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)
        page.on(
            "response",
            lambda r: (
                self.problems.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 and r.request.resource_type != "document"
                else None
            ),
        )

    def _failed(self, request: Any) -> None:
        # A load the next navigation cancels (the logo of a page left at once) is no failure.
        if request.failure != "net::ERR_ABORTED":
            self.problems.append(f"failed: {request.url} ({request.failure})")

    def open(self, url: str, expect_status: int = 200) -> None:
        response = self.page.goto(url)
        assert response is not None and response.status == expect_status, url
        assert self.problems == [], self.problems

    def fits(self) -> None:
        width = self.page.viewport_size["width"] if self.page.viewport_size else 0
        scroll = self.page.evaluate("document.scrollingElement.scrollWidth")
        assert scroll <= width, f"{self.page.url}: {scroll} px wide in a {width} px window"


@pytest.fixture
def open_as(browser: Browser, brain: tuple[str, Settings]) -> Iterator[Callable[..., Watched]]:
    contexts = []

    def sign_in(email: str, size: str = "wide") -> Watched:
        context = browser.new_context(viewport=WIDTHS[size], base_url=brain[0])
        contexts.append(context)
        watched = Watched(context.new_page())
        watched.open("/login")
        page = watched.page
        page.get_by_label("Email or username").fill(email)
        page.get_by_label("Password").fill(FIXTURE_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        assert "/login" not in page.url, page.content()
        return watched

    yield sign_in
    for context in contexts:
        context.close()


def shot(watched: Watched, name: str, size: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=str(SCREENSHOTS / f"{name}-{size}.png"), full_page=True)


@pytest.mark.parametrize("size", list(WIDTHS))
def test_every_page_renders_clean_and_fits(
    open_as: Callable[..., Watched], person: Callable[..., dict[str, Any]], size: str
) -> None:
    admin = person("SUPER_ADMIN")
    watched = open_as(admin["email"], size)
    pages = {p: p.strip("/").replace("/", "_") for p in PAGES}
    pages[f"/admin/users/{admin['id']}"] = "admin_user_detail"
    pages["/admin/data/User"] = "admin_data_table"
    for analysis in ANALYSES:
        pages[f"/analytics?analysis={analysis}"] = f"analytics_{analysis}"
    pages["/admin/database?idle=yes"] = "admin_database_idle"
    for path, name in pages.items():
        watched.open(path)
        watched.fits()
        shot(watched, name, size)
    watched.open("/login")  # signed in: straight on
    watched.page.context.clear_cookies()
    watched.open("/login")
    watched.fits()
    shot(watched, "login", size)


def test_a_member_completes_a_stage_and_sees_xp_and_level_change(
    open_as: Callable[..., Watched], person: Callable[..., dict[str, Any]]
) -> None:
    member = person("MEMBER", xp=95)
    watched = open_as(member["email"])
    page = watched.page
    assert page.url.endswith("/journey")
    page.keyboard.press("Tab")  # the first stop is the skip link, then the content
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    expect(page.locator("#xp-total")).to_have_text("95")
    expect(page.locator("#level-name")).to_have_text("Owlet")
    page.get_by_role("button", name="Complete Welcome").click()
    expect(page.get_by_role("status")).to_contain_text("+10 XP")
    expect(page.locator("#xp-total")).to_have_text("105")
    expect(page.locator("#level-name")).to_have_text("Fledgling")
    assert watched.problems == []


def test_an_operator_searches_suspends_reactivates_and_grants(
    open_as: Callable[..., Watched],
    person: Callable[..., dict[str, Any]],
    brain: tuple[str, Settings],
) -> None:
    admin = person("SUPER_ADMIN")
    target = person("GUEST")
    watched = open_as(admin["email"])
    page = watched.page
    page.goto("/admin/users")
    page.get_by_label("Search").fill(target["email"])
    page.get_by_role("button", name="Apply").click()
    page.get_by_role("link", name=target["email"]).click()
    page.get_by_role("button", name="Suspend…").click()
    expect(page.locator("#question")).to_contain_text("Suspend")
    page.get_by_role("button", name="Suspend", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("is suspended")
    page.get_by_role("button", name="Activate…").click()
    page.get_by_role("button", name="Activate", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("is active")

    url = brain[0]
    login = httpx.post(
        f"{url}/api/auth/login",
        json={"identifier": target["email"], "password": FIXTURE_PASSWORD},
    )
    bearer = {"Authorization": f"Bearer {login.json()['token']}"}
    assert httpx.get(f"{url}/api/audit", headers=bearer).status_code == 403
    page.goto("/admin/roles")
    page.get_by_role("button", name="Grant audit:read to GUEST").click()
    expect(page.get_by_role("button", name="Revoke audit:read from GUEST")).to_be_visible()
    assert httpx.get(f"{url}/api/audit", headers=bearer).status_code == 200
    page.get_by_role("button", name="Revoke audit:read from GUEST").click()
    expect(page.get_by_role("button", name="Grant audit:read to GUEST")).to_be_visible()
    assert httpx.get(f"{url}/api/audit", headers=bearer).status_code == 403
    assert watched.problems == []


def create_backup(page: Page, note: str) -> str:
    """A backup made through the Backups page; its file name."""
    page.goto("/admin/backups")
    page.get_by_label("Note").fill(note)
    page.get_by_role("button", name="Create a backup").click()
    message = page.get_by_role("status")
    expect(message).to_contain_text("its progress is shown below")
    found = re.search(r"Writing (\S+):", message.inner_text())
    assert found
    name = found.group(1)
    # The page refreshes itself while the backup is written, then lists it with its actions.
    expect(page.get_by_role("button", name=f"Verify {name}")).to_be_visible(timeout=120_000)
    expect(page.get_by_role("heading", name=f"Writing {name}")).to_have_count(0)
    return name


def test_an_operator_creates_and_verifies_a_backup(
    open_as: Callable[..., Watched], person: Callable[..., dict[str, Any]]
) -> None:
    admin = person("SUPER_ADMIN")
    watched = open_as(admin["email"])
    page = watched.page
    name = create_backup(page, "browser test")
    page.get_by_role("button", name=f"Verify {name}").click()
    expect(page.get_by_role("status")).to_contain_text(f"{name} verified")
    assert watched.problems == []


def test_dark_mode_follows_the_system(browser: Browser, brain: tuple[str, Settings]) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme, base_url=brain[0])
        page = context.new_page()
        page.goto("/login")
        colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        context.close()
    assert colours == {"light": "rgb(246, 247, 249)", "dark": "rgb(18, 21, 28)"}


def test_a_chart_renders_with_data_and_its_csv_downloads(
    open_as: Callable[..., Watched], person: Callable[..., dict[str, Any]]
) -> None:
    admin = person("SUPER_ADMIN")
    for _ in range(3):
        person("MEMBER")  # registered today: today's bar is at least 4 high
    watched = open_as(admin["email"])
    watched.open("/analytics?analysis=registrations")
    page = watched.page
    chart = page.locator("section.chart svg").first
    expect(chart).to_be_visible()
    bars = chart.locator("rect.bar")
    assert bars.count() == 30
    today = bars.nth(29)
    assert float(today.get_attribute("height") or 0) > 0
    assert int((today.locator("title").text_content() or "").rsplit(": ", 1)[1]) >= 4
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == "registrations.csv"
    assert watched.problems == []


def test_a_member_cannot_see_or_open_operator_pages(
    open_as: Callable[..., Watched], person: Callable[..., dict[str, Any]]
) -> None:
    member = person("MEMBER")
    watched = open_as(member["email"], "phone")
    page = watched.page
    page.get_by_text("Menu").click()
    expect(page.get_by_role("link", name="Profile").first).to_be_visible()
    assert page.locator('a[href^="/admin"]').count() == 0
    # Analytics is not an operator page: the catalog gives members analytics:read.
    for path in (p for p, perm in PAGES.items() if perm and p.startswith("/admin")):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    watched.fits()


def test_an_operator_restores_a_backup_by_typing_the_database_name(
    open_as: Callable[..., Watched],
    person: Callable[..., dict[str, Any]],
    brain: tuple[str, Settings],
    pg_cluster: Any,
) -> None:
    # Last in the module: it puts the module's database back as it was at the backup.
    _, settings = brain
    admin = person("SUPER_ADMIN")
    target = person("MEMBER")
    watched = open_as(admin["email"])
    page = watched.page
    name = create_backup(page, "before the suspension")
    # A row changes after the backup: the member is suspended.
    page.goto(f"/admin/users/{target['id']}")
    page.get_by_role("button", name="Suspend…").click()
    page.get_by_role("button", name="Suspend", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("is suspended")

    watched.open("/admin/backups")
    watched.fits()
    shot(watched, "admin_backups_listed", "wide")
    page.get_by_role("link", name=f"Restore {name}").click()
    plan = page.locator("#restore-plan")
    expect(plan).to_contain_text(name)
    expect(plan).to_contain_text(settings.db_name)
    expect(page.get_by_text("_before_restore_<timestamp>").first).to_be_visible()
    watched.fits()
    shot(watched, "admin_backups_restore", "wide")
    phone = open_as(admin["email"], "phone")
    for path, shot_name in (
        ("/admin/backups", "admin_backups_listed"),
        (f"/admin/backups/restore?file={name}", "admin_backups_restore"),
        ("/admin/backups/prune?keep=1000", "admin_backups_prune"),
    ):
        phone.open(path)
        phone.fits()
        shot(phone, shot_name, "phone")
    watched.open("/admin/backups/prune?keep=1000")
    expect(page.locator("#prune-plan")).to_contain_text(name)
    shot(watched, "admin_backups_prune", "wide")
    page.goto(f"/admin/backups/restore?file={name}")

    confirm = page.get_by_label("Type the database's name")
    confirm.fill(settings.db_name + "x")
    page.get_by_role("button", name="Restore this backup").click()
    expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")
    # The refusal is a 422 page, which Chromium reports on the console: that, and only that.
    assert all("422" in p for p in watched.problems), watched.problems
    watched.problems.clear()
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        status = conn.execute('SELECT status FROM "User" WHERE id = %s', [target["id"]]).fetchone()
    assert status == ("SUSPENDED",)
    page.get_by_label("Type the database's name").fill(settings.db_name)
    page.get_by_role("button", name="Restore this backup").click()
    try:
        expect(page.get_by_role("status")).to_contain_text(
            f"Restored {settings.db_name} from {name}", timeout=180_000
        )
        page.goto(f"/admin/users/{target['id']}")
        expect(page.locator("main")).to_contain_text("ACTIVE")
        with psycopg.connect(settings.url_for(), autocommit=True) as conn:
            row = conn.execute('SELECT status FROM "User" WHERE id = %s', [target["id"]]).fetchone()
        assert row == ("ACTIVE",)
        assert watched.problems == [] and phone.problems == []
    finally:
        for db_name in kept_databases(pg_cluster, settings):
            drop_db(pg_cluster, db_name)
