"""The webhooks' page in real Chromium through real nginx: an admin creates a hook from the
settings, the daemon's sender delivers to a real receiver, the log shows it, Redeliver sends
it again with the same idempotency key; bad input is shown with what was typed. Any
JavaScript error fails a test."""
from __future__ import annotations

import re
import shutil
import sqlite3
import time
from contextlib import closing

import pytest

from mirror import webhooks
from mirror.settings import load
from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, chromium_binary, login, new_tab
from tests.mirror import sync_once
from tests.stack import PREFIX, admin_shell
from tests.test_webhooks import Receiver, deliver_due

ADMIN = next(user for user in DEMO_USERS if user["role"] == "admin")


@pytest.fixture(scope="module")
def stack(demo_pbx, tmp_path_factory):
    chromium_binary()
    root = tmp_path_factory.mktemp("webhooks-browser")
    pbx = root / "pbx"
    shutil.copytree(demo_pbx, pbx)
    db = root / "module.db"
    sync_once(pbx / "cdr.db", pbx / "mikopbx.db", db)
    receiver = Receiver()
    try:
        with admin_shell(db, pbx / "monitor", root / "nginx",
                         settings='[webhooks]\nallowed_hosts = "127.0.0.1"\n') as running:
            yield {**running, "db": db, "receiver": receiver,
                   "settings": load(None, {"module.db": db, "pbx.config_db": pbx / "mikopbx.db",
                                           "webhooks.retry_delay": "0.01",
                                           "webhooks.allowed_hosts": "127.0.0.1"})}
    finally:
        receiver.close()


@pytest.fixture
def tab(browser):
    with new_tab(browser) as page:
        yield page


def test_create_a_hook_see_its_log_and_redeliver(stack, tab):
    login(tab, stack, ADMIN["name"], ADMIN["password"])
    tab.wait_for_url(re.compile(re.escape(PREFIX)))
    tab.goto(f"{stack['base']}{PREFIX}settings")
    with tab.expect_navigation():
        tab.locator(".webhooks-link a").click()
    assert "No webhooks yet." in tab.locator("table.hook-list").inner_text()
    form = tab.locator("form.new-hook")
    form.locator("#hook-name").fill("Our CRM")
    form.locator("#hook-url").fill(stack["receiver"].url)
    form.locator("#hook-filters").fill("direction=incoming")
    form.locator("label[for=event-callback]").click()
    with tab.expect_navigation():
        form.locator("button[type=submit]").click()
    assert "Our CRM" in tab.locator("h1").inner_text()
    secret = tab.input_value("input.hook-secret")
    assert len(secret) >= 40 and "Nothing sent yet." in tab.inner_text("table.delivery-log")
    with tab.expect_navigation():
        tab.locator("form.renew-secret button").click()
    assert tab.input_value("input.hook-secret") not in (secret, "")
    secret = tab.input_value("input.hook-secret")
    with closing(sqlite3.connect(stack["db"])) as conn, conn:   # as the writer queues them
        hook_id, events = conn.execute("SELECT id, events FROM webhook").fetchone()
        assert events == '["missed", "callback"]'
        linkedid = conn.execute("SELECT linkedid FROM call WHERE status = 'missed' AND "
                                "direction = 'incoming' ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO outbox (hook_id, event, linkedid, created_ms, due_ms) "
                     "VALUES (?, ?, ?, 0, 0)", (hook_id, webhooks.MISSED, linkedid))
    deliver_due(stack["settings"])
    [got] = stack["receiver"].got
    assert webhooks.verify(secret, got["headers"][webhooks.TIMESTAMP_HEADER], got["body"],
                           got["headers"][webhooks.SIGNATURE_HEADER], time.time())
    tab.reload()
    row = tab.locator("tr.delivery").first
    assert row.get_attribute("data-state") == "delivered"
    assert linkedid in row.inner_text() and "200" in row.locator(".status").inner_text()
    assert "Missed call" in row.inner_text()
    with tab.expect_navigation():
        row.locator("form.redeliver button").click()
    assert tab.locator("tr.delivery").first.get_attribute("data-state") == "pending"
    deliver_due(stack["settings"])
    tab.reload()
    assert tab.locator("tr.delivery").first.get_attribute("data-state") == "delivered"
    keys = stack["receiver"].keys()
    assert keys == [f"{hook_id}:missed:{linkedid}"] * 2
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "webhooks.png"), full_page=True)
    with tab.expect_navigation():
        tab.locator("a", has_text="Webhooks").first.click()
    assert "Our CRM" in tab.locator("table.hook-list").inner_text()


def test_bad_input_is_shown_with_what_was_typed(stack, tab):
    login(tab, stack, ADMIN["name"], ADMIN["password"])
    tab.wait_for_url(re.compile(re.escape(PREFIX)))
    tab.goto(f"{stack['base']}{PREFIX}settings/webhooks")
    form = tab.locator("form.new-hook")
    form.locator("#hook-name").fill("Elsewhere")
    form.locator("#hook-url").fill("http://127.0.0.1:1/x")
    form.locator("#hook-filters").fill("direction=sideways")
    with tab.expect_navigation() as reply:
        form.locator("button[type=submit]").click()
    assert reply.value.status == 400
    assert "unknown direction" in tab.locator(".bad-setting").inner_text()
    assert tab.input_value("#hook-name") == "Elsewhere"
    assert tab.locator('tr.hook-row[data-name="Elsewhere"]').count() == 0
