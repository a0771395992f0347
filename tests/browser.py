"""Real Chromium for the page tests: Debian's package driven by Playwright (a test extra —
missing, a module that imports this one is skipped, or fails under CI=true), one tab of a
logged-in user with what its page shows and what the API says, and the login form. The
fixtures `browser`, `sessions` and `open_as` (tests/conftest.py) use the requesting module's
`stack` (the nginx + web stack it serves the pages from)."""
from __future__ import annotations

import os
import re
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.stack import PREFIX, required_binary

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:                                 # pragma: no cover - depends on the venv
    if os.environ.get("CI") == "true":
        pytest.fail("playwright is missing: ./bin/test installs the test extras", pytrace=False)
    pytest.skip("playwright is not installed", allow_module_level=True)

# What a page shows after a request (a comment saved, a row updated) may take seconds on a
# loaded CI machine: expectations wait as long as the pages' actions do.
expect.set_options(timeout=10_000)

__all__ = ["ARTIFACTS", "PlaywrightError", "PlaywrightTimeout", "UserPage", "chromium",
           "chromium_binary", "expect", "login", "new_tab", "user_sessions"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def chromium_binary() -> str:
    return required_binary("Chromium", ("/usr/bin/chromium",),
                           "apt-get install chromium (Playwright drives the Debian package)")


@contextmanager
def chromium():
    """A headless Chromium (Debian's), closed after."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_binary(), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def new_tab(browser, *, accept_dialogs: bool = False):
    """One page in a context of its own (English, 1400×900); no JavaScript error allowed."""
    context = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if accept_dialogs:
        page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def login(page, stack, user: str, password: str):
    page.goto(f"{stack['base']}/login")
    page.fill("#username", user)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def user_sessions(browser, stack):
    """session(user) -> the browser storage (session cookie) after logging in through the
    form as `user` (password: the name), kept for the next asks."""
    known: dict[str, dict] = {}

    def session(user: str) -> dict:
        if user not in known:
            context = browser.new_context(locale="en-US")
            page = context.new_page()
            login(page, stack, user, user)
            page.wait_for_url(re.compile(re.escape(PREFIX)))
            known[user] = context.storage_state()
            context.close()
        return known[user]
    return session


class UserPage:
    """One browser tab of a user (in its own context), with what the page showed and what
    the API says."""

    def __init__(self, browser, stack, storage: dict | None = None):
        self.stack = stack
        self.context = browser.new_context(locale="en-US", storage_state=storage,
                                           viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def url(self, path: str = "", **params) -> str:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        return f"{self.stack['base']}{PREFIX}{path}{query}"

    def open(self, **params):
        reply = self.page.goto(self.url(**params))
        assert reply.status == 200, reply.text()
        return self

    def api(self, **params) -> list[dict]:
        """Every call of the filter from the JSON API as this user (keyset pages of 500)."""
        calls, cursor = [], None
        while True:
            query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
            reply = self.context.request.get(self.url("api/v1/calls", **query))
            assert reply.ok, reply.text()
            body = reply.json()
            calls += body["calls"]
            cursor = body["next_cursor"]
            if not cursor:
                return calls

    def call(self, linkedid: str) -> dict:
        reply = self.context.request.get(self.url(f"api/v1/calls/{linkedid}"))
        assert reply.ok, reply.text()
        return reply.json()

    # what the page shows
    def shown(self) -> list[str]:
        return self.page.eval_on_selector_all("#calls tr.call",
                                              "rows => rows.map(r => r.dataset.linkedid)")

    def count(self, tab: str) -> int:
        return int(self.page.locator(f".tabs .tab-{tab} .count").inner_text())

    def column(self, name: str) -> list[str]:
        return self.page.eval_on_selector_all(f"#calls tr.call td.{name}",
                                              "cells => cells.map(c => c.innerText.trim())")

    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.page.url).query))

    def navigate_by(self, locator):
        """Click something that loads a page (a link, a form, the period dropdown's script)."""
        with self.page.expect_navigation():
            locator.click()

    def expand(self, linkedid: str):
        """Click a row (not on a number) and wait for its details."""
        row = self.page.locator(f'#calls tr.call[data-linkedid="{linkedid}"]')
        row.locator("td.time").click()
        details = self.page.locator(f'#calls tr.call[data-linkedid="{linkedid}"] + tr.details')
        details.locator(".call-details").wait_for()
        return details
