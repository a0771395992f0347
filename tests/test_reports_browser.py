"""Mailed reports in real Chromium through real nginx: from a saved filter on the history page
to a scheduled report, "Send now", the mail in a real SMTP server and the file in the send log;
bad input shown on the form with what was typed kept; the Russian operator's view. Any
JavaScript error fails a test."""
from __future__ import annotations

import io
import re
import shutil
import time

import pytest
from aiosmtpd.controller import Controller
from openpyxl import load_workbook

from mirror.settings import load
from reports.scheduler import ReportScheduler
from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, chromium_binary, login, new_tab
from tests.mirror import sync_once
from tests.stack import PREFIX, admin_shell
from tests.test_reports import Inbox, free_port, set_pbx_mail

REPORTER = {"name": "admin-reports", "password": "admin-reports", "role": "admin",
            "extensions": []}


@pytest.fixture(scope="module")
def stack(demo_pbx, tmp_path_factory):
    chromium_binary()
    root = tmp_path_factory.mktemp("reports-browser")
    pbx = root / "pbx"
    shutil.copytree(demo_pbx, pbx)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    set_pbx_mail(pbx, MailSMTPHost="127.0.0.1", MailSMTPPort=str(controller.port),
                 MailSMTPSenderAddress="pbx@example.com")
    db = root / "module.db"
    sync_once(pbx / "cdr.db", pbx / "mikopbx.db", db)
    scheduler = ReportScheduler(load(None, {"module.db": db, "pbx.config_db": pbx / "mikopbx.db"}))
    try:
        with admin_shell(db, pbx / "monitor", root / "nginx",
                         users=list(DEMO_USERS) + [REPORTER]) as running:
            yield {**running, "inbox": inbox, "scheduler": scheduler}
    finally:
        scheduler.close()
        controller.stop()


@pytest.fixture
def tab(browser):
    with new_tab(browser, accept_dialogs=True) as page:
        yield page


def logged_in(page, stack, user: dict):
    login(page, stack, user["name"], user["password"])
    page.wait_for_url(re.compile(re.escape(PREFIX)))


def test_a_saved_filter_becomes_a_mailed_report_that_is_sent_and_kept(stack, tab):
    logged_in(tab, stack, REPORTER)
    tab.goto(f"{stack['base']}{PREFIX}?from=2024-10-21&to=2024-10-27")
    tab.locator("details.save-filter summary").click()
    tab.locator("details.save-filter input[name=name]").fill("Last week, all")
    with tab.expect_navigation():
        tab.locator("details.save-filter button[type=submit]").click()
    with tab.expect_navigation():
        tab.locator('.saved-filter[data-name="Last week, all"] a.mail-saved').click()
    assert tab.locator("#filter option:checked").inner_text() == "Last week, all"
    tab.select_option("#frequency", "weekly")
    assert tab.locator("#weekday").is_visible()
    assert not tab.locator("#on_date").is_visible() and not tab.locator("#monthday").is_visible()
    tab.fill("#name", "Weekly digest")
    tab.select_option("#period", "last_week")
    tab.fill("#recipients", "boss@example.com; team@example.com")
    with tab.expect_navigation():
        tab.locator("form.report button[type=submit]").click()
    assert "Saved." in tab.locator(".message.saved").inner_text()
    with tab.expect_navigation():
        tab.locator(".pbx-sidebar a", has_text="Mailed reports").click()
    row = tab.locator('tr.report[data-name="Weekly digest"]')
    assert "weekly, Monday 08:00" in row.inner_text()
    assert "boss@example.com, team@example.com" in row.inner_text()
    with tab.expect_navigation():
        row.locator("button.send-now").click()
    stack["scheduler"].step(time.time())
    [mail] = stack["inbox"].take()
    [part] = list(mail.iter_attachments())
    assert load_workbook(io.BytesIO(part.get_content())).worksheets[1].max_row >= 1
    with tab.expect_navigation():
        tab.locator(".pbx-sidebar a", has_text="Mailed reports").click()
    with tab.expect_navigation():
        tab.locator('tr.report[data-name="Weekly digest"] a').first.click()
    assert tab.locator("tr.send .send-status").first.get_attribute("data-status") == "sent"
    with tab.expect_download() as download:
        tab.locator("a.sent-file").first.click()
    assert download.value.suggested_filename.startswith("Weekly_digest_")
    kept = load_workbook(io.BytesIO(download.value.path().read_bytes()))
    assert kept.worksheets[0].title == "Filter"
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "reports.png"), full_page=True)


def test_bad_input_shows_on_the_form_with_what_was_typed(stack, tab):
    logged_in(tab, stack, REPORTER)
    tab.goto(f"{stack['base']}{PREFIX}reports/new")
    tab.fill("#name", "Too many")
    tab.locator("#filter").select_option(index=1)
    tab.fill("#recipients", "; ".join(f"u{i}@example.com" for i in range(11)))
    with tab.expect_navigation() as reply:
        tab.locator("form.report button[type=submit]").click()
    assert reply.value.status == 400
    assert "at most 10 addresses" in tab.locator(".error.message").inner_text()
    assert tab.input_value("#name") == "Too many"
    tab.goto(f"{stack['base']}{PREFIX}reports")
    assert tab.locator('tr.report[data-name="Too many"]').count() == 0


def test_the_russian_operator_sees_russian_and_not_the_admins_reports(stack, tab):
    operator = next(u for u in DEMO_USERS if u["name"] == "operator201")
    logged_in(tab, stack, operator)
    tab.goto(f"{stack['base']}{PREFIX}reports")
    assert "Отчёты по почте" in tab.locator("h1").inner_text()
    assert tab.locator("table.other-reports").count() == 0
    reply = tab.goto(f"{stack['base']}{PREFIX}reports/1")
    assert reply.status == 404
