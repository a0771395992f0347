"""Mailed reports end to end: defined in the page (real HTTP, CSRF), sent by the daemon's
scheduler with the PBX's mail settings through a real SMTP server (aiosmtpd), the files read
back (openpyxl, csv) and compared with what the owner sees in the API; links work until they
expire and then answer 410; bad input is refused with the form kept."""
import csv
import email
import io
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from email import policy
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from openpyxl import load_workbook

from i18n import translator
from mirror.pbxtime import PbxClock
from mirror.settings import load
from reports.definitions import ReportError, Timing, check_template, recipients, timing
from reports.scheduler import ReportScheduler
from standin.cli import main
from standin.shell import StandinLogin
from tests.conftest import ROOT, wait_for
from tests.stack import serving
from tests.webclient import Browser
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
BERLIN = ZoneInfo("Europe/Berlin")
# 08:00 in Berlin on Monday 2024-10-28, the day after the fall-back: "last week" ends with
# the 25-hour day.
DUE = datetime(2024, 10, 28, 7, 0, tzinfo=timezone.utc).timestamp()
LAST_WEEK = {"from": "2024-10-21", "to": "2024-10-27"}
USERS = [{"name": "boss", "password": "b0ss", "role": "admin", "extensions": []},
         {"name": "olga", "password": "o1ga", "role": "operator", "extensions": ["202"],
          "language": "ru"}]


class Inbox:
    """aiosmtpd handler keeping every mail it receives."""

    def __init__(self):
        self.mails: list[email.message.EmailMessage] = []
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        self.mails.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def take(self, count: int = 1, timeout: float = 10.0):
        assert wait_for(lambda: len(self.mails) >= count, timeout), f"{len(self.mails)} mails"
        taken, self.mails[:] = self.mails[:count], self.mails[count:]
        return taken


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


@pytest.fixture(scope="module")
def site(demo_pbx, smtp, tmp_path_factory):
    """A copy of the demo PBX whose mail settings name the test's SMTP server, its mirror, the
    pages (stand-in shell) and a scheduler the tests step by hand."""
    root = tmp_path_factory.mktemp("reports")
    pbx = root / "pbx"
    shutil.copytree(demo_pbx, pbx)
    set_pbx_mail(pbx, MailSMTPHost="127.0.0.1", MailSMTPPort=str(smtp.port),
                 MailSMTPUseTLS="none", MailSMTPSenderAddress="pbx@example.com",
                 MailSMTPFromUsername="Офис PBX")
    assert main(["sync", "--cdr-db", str(pbx / "cdr.db"), "--pbx-db", str(pbx / "mikopbx.db"),
                 "--db", str(root / "module.db"), "--once"]) == 0
    users = root / "users.json"
    users.write_text(json.dumps(USERS))
    settings = load(None, {"module.db": root / "module.db", "pbx.config_db": pbx / "mikopbx.db",
                           "reports.retries": 2, "reports.retry_delay": 1})
    app = create_app(settings, login=StandinLogin.from_file(users))
    with serving(app, threads=6) as server:
        scheduler = ReportScheduler(settings)
        yield {"base": f"http://127.0.0.1:{server.effective_port}", "pbx": pbx, "root": root,
               "db": root / "module.db", "scheduler": scheduler, "settings": settings,
               "users": users}
        scheduler.close()


@pytest.fixture(autouse=True)
def quiet(request):
    """Each test starts with the reports of earlier tests done and an empty inbox."""
    if "site" not in request.fixturenames:
        yield
        return
    site, smtp = request.getfixturevalue("site"), request.getfixturevalue("smtp")
    conn = sqlite3.connect(site["db"])
    with conn:
        conn.execute("UPDATE report SET next_run_ms = NULL, requested_ms = NULL")
        conn.execute("UPDATE report_send SET status = 'failed' "
                     "WHERE status IN ('sending', 'retrying')")
    conn.close()
    smtp.mails.clear()
    yield


def set_pbx_mail(pbx, **values):
    conn = sqlite3.connect(pbx / "mikopbx.db")
    with conn:
        conn.executemany("INSERT OR REPLACE INTO m_PbxSettings (key, value) VALUES (?, ?)",
                         values.items())
    conn.close()


def logged_in(site, name) -> Browser:
    browser = Browser(site["base"])
    password = next(u["password"] for u in USERS if u["name"] == name)
    assert browser.login(name, password)[0] == 302
    return browser


@pytest.fixture(scope="module")
def boss(site):
    return logged_in(site, "boss")


@pytest.fixture(scope="module")
def olga(site):
    return logged_in(site, "olga")


def csrf(browser) -> str:
    status, _, body = browser.request(PREFIX + "reports/new")
    assert status == 200, body[:300]
    return re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)


def saved_filter(browser, name: str, query: str) -> int:
    """Save a filter on the history page; returns its id (from the report form's choices)."""
    status, _, _ = browser.request(PREFIX + "filters", {"name": name, "query": query,
                                                       "csrf_token": csrf(browser)})
    assert status == 302
    _, _, form = browser.request(PREFIX + "reports/new")
    return int(re.search(rf'<option value="(\d+)"[^>]*>{re.escape(name)}</option>', form)
               .group(1))


def post_report(browser, report_id=None, headers=None, **fields):
    data = {"name": "Daily", "period": "last_week", "frequency": "daily", "at": "08:00",
            "weekday": "0", "monthday": "1", "format": "xlsx", "delivery": "attach",
            "link_hours": "72", "recipients": "boss@example.com", "subject": "", "body": "",
            "enabled": "on", "csrf_token": csrf(browser), **fields}
    path = PREFIX + "reports" + (f"/{report_id}" if report_id else "")
    return browser.request(path, data, headers)


def new_report(browser, **fields) -> int:
    status, headers, body = post_report(browser, **fields)
    assert status == 302, body[:500]
    return int(re.search(r"/reports/(\d+)", headers["Location"]).group(1))


def report_row(site, report_id) -> dict:
    conn = sqlite3.connect(site["db"])
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("SELECT * FROM report WHERE id = ?", (report_id,)).fetchone())
    conn.close()
    return row


def sends(site, report_id) -> list[dict]:
    conn = sqlite3.connect(site["db"])
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(
        "SELECT * FROM report_send WHERE report_id = ? ORDER BY id", (report_id,))]
    conn.close()
    return rows


def due_at(site, report_id, epoch_s: float) -> None:
    """As if the report had been saved the day before: its next run is `epoch_s`."""
    conn = sqlite3.connect(site["db"])
    with conn:
        conn.execute("UPDATE report SET next_run_ms = ? WHERE id = ?",
                     (int(epoch_s * 1000), report_id))
    conn.close()


def attachment(mail) -> tuple[str, bytes]:
    parts = list(mail.iter_attachments())
    assert len(parts) == 1
    return parts[0].get_filename(), parts[0].get_content()


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- when reports go -----------------------------------------------------------------------------

def berlin(*args) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize("spec, after, expected", [
    # daily 08:00 across the fall-back (25-hour day) and the spring-forward (23-hour day)
    (("daily", "08:00"), berlin(2024, 10, 26, 12, 0), datetime(2024, 10, 27, 7, 0)),
    (("daily", "08:00"), berlin(2024, 3, 30, 12, 0), datetime(2024, 3, 31, 6, 0)),
    # 02:30 does not exist on 2024-03-31 in Berlin: the run is at 03:30 CEST
    (("daily", "02:30"), berlin(2024, 3, 30, 12, 0), datetime(2024, 3, 31, 1, 30)),
    # 02:30 happens twice on 2024-10-27: the first one (CEST)
    (("daily", "02:30"), berlin(2024, 10, 26, 12, 0), datetime(2024, 10, 27, 0, 30)),
    # exactly at the time: the next day's
    (("daily", "08:00"), berlin(2024, 10, 27, 8, 0), datetime(2024, 10, 28, 7, 0)),
    (("weekly", "09:15", 0), berlin(2024, 10, 23, 12, 0), datetime(2024, 10, 28, 8, 15)),
    # monthly on the 31st: the last day of shorter months
    (("monthly", "08:00", 31), berlin(2024, 2, 1, 0, 0), datetime(2024, 2, 29, 7, 0)),
    (("monthly", "08:00", 31), berlin(2024, 3, 31, 9, 0), datetime(2024, 4, 30, 6, 0)),
    (("once", "10:00", None, "2024-11-05"), berlin(2024, 10, 1, 0, 0), datetime(2024, 11, 5, 9, 0)),
])
def test_reports_go_at_their_pbx_local_time_across_dst(spec, after, expected):
    moment = timing(*spec).next_after(after, PbxClock("Europe/Berlin"))
    assert moment == expected.replace(tzinfo=timezone.utc).timestamp()


def test_a_single_report_whose_time_passed_has_no_next_run():
    assert Timing("once", "10:00", None, "2024-11-05").next_after(
        berlin(2024, 11, 5, 10, 0), PbxClock("Europe/Berlin")) is None


def test_addresses_are_checked_deduplicated_and_at_most_ten():
    assert recipients("a@example.com; B@example.org,\nA@EXAMPLE.com  c@x.ru") == [
        "a@example.com", "B@example.org", "c@x.ru"]
    for bad, message in [("boss@example", "not an e-mail address"),
                         ("a@example.com\r\nBcc: evil@example.com", "not an e-mail address"),
                         ("<a@example.com>", "not an e-mail address"),
                         (" ; ", "at least one"),
                         (";".join(f"u{i}@example.com" for i in range(11)), "at most 10")]:
        with pytest.raises(ReportError, match=message):
            recipients(bad)


@pytest.mark.parametrize("template, message", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ config }}", "'config' is undefined"),
    ("{% for x in %}", "line 1"),
])
def test_message_templates_run_sandboxed_and_errors_are_readable(template, message):
    with pytest.raises(ReportError, match=message):
        check_template("message", template, 1000)


# --- the page and the scheduler ------------------------------------------------------------------

def test_a_daily_report_fires_at_its_local_time_with_only_the_owners_calls(site, smtp, olga,
                                                                          boss):
    filter_id = saved_filter(olga, "Мои звонки", "period=today")
    report_id = new_report(olga, name="Мои звонки", filter=filter_id, format="xlsx",
                           recipients="olga@example.com; boss@example.com")
    # Saved now: the next run is the next 08:00 in the PBX's timezone.
    now = datetime.now(BERLIN)
    expected = now.replace(hour=8, minute=0, second=0, microsecond=0)
    if expected <= now:
        expected = (expected.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=BERLIN)
    assert report_row(site, report_id)["next_run_ms"] == int(expected.timestamp() * 1000)

    due_at(site, report_id, DUE)
    site["scheduler"].step(DUE - 1)
    assert smtp.mails == [] and sends(site, report_id) == []
    site["scheduler"].step(DUE)
    [mail] = smtp.take()
    assert mail["To"] == "olga@example.com, boss@example.com"
    assert "Офис PBX" in str(mail["From"]) and "pbx@example.com" in str(mail["From"])
    expected_calls = olga.calls(PREFIX, **LAST_WEEK)
    assert str(len(expected_calls)) in mail["Subject"] and "звонков" in mail["Subject"]
    assert "Мои звонки" in mail["Subject"]
    name, content = attachment(mail)
    assert name == "Мои_звонки_2024-10-21_2024-10-27.xlsx"
    calls = load_workbook(io.BytesIO(content)).worksheets[1]
    rows = list(calls.iter_rows(values_only=True))
    say = translator("ru")
    at = {title: i for i, title in enumerate(rows[0])}
    assert [r[at[say("Call ID")]] for r in rows[1:]] == [c["linkedid"] for c in expected_calls]
    assert [r[at[say("Date")]] for r in rows[1:]] == [
        datetime.fromisoformat(c["start"]).replace(tzinfo=None) for c in expected_calls]
    assert 0 < len(expected_calls) < len(boss.calls(PREFIX, **LAST_WEEK))
    # The next run: tomorrow 08:00; the log says sent
    assert report_row(site, report_id)["next_run_ms"] == int(DUE * 1000) + 86_400_000
    [logged] = sends(site, report_id)
    assert logged["status"] == "sent" and logged["calls"] == len(expected_calls)
    assert logged["attempts"] == 1
    _, _, page = olga.request(PREFIX + f"reports/{report_id}")
    assert 'data-status="sent"' in page


def test_a_download_link_works_until_it_expires_then_answers_410(site, smtp, boss):
    filter_id = saved_filter(boss, "Missed, all", "period=today&tab=missed")
    report_id = new_report(boss, name="Missed by link", filter=filter_id, format="csv",
                           delivery="link", link_hours="24",
                           body="{{ calls }} missed: {{ link }} until {{ link_expires }}")
    due_at(site, report_id, DUE)
    site["scheduler"].step(time.time())           # late (the daemon was down): still sent
    [mail] = smtp.take()
    assert list(mail.iter_attachments()) == []
    link = re.search(r"(http://\S+)", mail.get_content()).group(1)
    assert link.startswith(site["base"] + PREFIX + "reports/file/")
    status, body = fetch(link)                    # no login: the signature is the permission
    assert status == 200
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    missed = boss.calls(PREFIX, **LAST_WEEK, tab="missed")
    assert [r[-1] for r in rows[1:]] == [c["linkedid"] for c in missed] and missed
    assert mail.get_content().startswith(f"{len(missed)} missed: ")
    # A forged signature or a longer life is not a link
    send_id, expires, signature = re.search(r"file/(\d+)/(\d+)/(\w+)/", link).groups()
    assert fetch(link.replace(signature, "0" * len(signature)))[0] == 404
    assert fetch(link.replace(f"/{expires}/", f"/{int(expires) + 86400}/"))[0] == 404
    # The owner downloads it from the log too; nobody else
    assert boss.request(PREFIX + f"reports/sends/{send_id}/file")[0] == 200
    # A send made 25 hours ago: its 24-hour link has expired
    due_at(site, report_id, DUE)
    site["scheduler"].step(time.time() - 25 * 3600)
    [old] = smtp.take()
    old_link = re.search(r"(http://\S+)", old.get_content()).group(1)
    status, body = fetch(old_link)
    assert status == 410 and b"no longer kept" in body
    old_send = sends(site, report_id)[-1]
    folder = site["root"] / "reports" / str(old_send["id"])
    assert folder.is_dir()
    site["scheduler"].step(time.time())           # the sweep deletes the expired file
    assert not folder.exists()
    assert boss.request(PREFIX + f"reports/sends/{old_send['id']}/file")[0] == 410


def test_bad_input_is_refused_with_a_clear_message_and_the_form_kept(site, boss):
    filter_id = saved_filter(boss, "Everything", "period=today")
    cases = [
        ({"recipients": "boss@example"}, "&#39;boss@example&#39; is not an e-mail address"),
        ({"recipients": "; ".join(f"u{i}@example.com" for i in range(11))}, "at most 10"),
        ({"recipients": "a@example.com\r\nBcc: evil@example.com"}, "not an e-mail address"),
        ({"link_hours": "200"}, "24 to 120 hours"),
        ({"at": "25:00"}, "HH:MM"),
        ({"frequency": "weekly", "weekday": "9"}, "weekday"),
        ({"frequency": "once", "on_date": "2020-01-01"}, "have passed"),
        ({"format": "exe"}, "choose the format"),
        ({"body": "{{ ''.__class__ }}"}, "unsafe"),
        ({"filter": "999999"}, "your saved filters"),
    ]
    for fields, message in cases:
        status, _, body = post_report(boss, **{"name": "Refused report", "filter": filter_id,
                                               **fields})
        assert status == 400, fields
        assert message in body, (fields, body[:2000])
        assert 'value="Refused report"' in body                    # what was typed stays
    _, _, listing = boss.request(PREFIX + "reports")
    assert "Refused report" not in listing


def test_failed_mailing_is_retried_and_every_attempt_logged(site, smtp, boss):
    filter_id = saved_filter(boss, "Retry filter", "period=today")
    report_id = new_report(boss, name="Retried", filter=filter_id, format="pdf")
    closed = free_port()
    set_pbx_mail(site["pbx"], MailSMTPPort=str(closed))
    try:
        due_at(site, report_id, DUE)
        now = time.time()
        site["scheduler"].step(now)
        [first] = sends(site, report_id)
        assert first["status"] == "retrying" and first["attempts"] == 1
        assert f"127.0.0.1:{closed}" in first["error"]
        site["scheduler"].step(now + 0.5)                      # not yet: 1 s delay
        assert sends(site, report_id)[0]["attempts"] == 1
        site["scheduler"].step(now + 1.1)
        assert sends(site, report_id)[0]["attempts"] == 2      # then 2 s
        _, _, page = boss.request(PREFIX + f"reports/{report_id}")
        assert 'data-status="retrying"' in page and f"127.0.0.1:{closed}" in page
    finally:
        set_pbx_mail(site["pbx"], MailSMTPPort=str(smtp.port))
    site["scheduler"].step(now + 3.2)
    [mail] = smtp.take()
    name, content = attachment(mail)
    assert name.endswith(".pdf") and content.startswith(b"%PDF")
    [logged] = sends(site, report_id)
    assert logged["status"] == "sent" and logged["attempts"] == 3 and logged["error"] is None


def test_mailing_gives_up_after_the_retries_and_says_why(site, boss):
    filter_id = saved_filter(boss, "Give up", "period=today")
    report_id = new_report(boss, name="Given up", filter=filter_id)
    set_pbx_mail(site["pbx"], MailSMTPHost="")
    try:
        due_at(site, report_id, DUE)
        now = time.time()
        for offset in (0, 1.1, 3.2, 7.3, 15.4):
            site["scheduler"].step(now + offset)
        [logged] = sends(site, report_id)
        assert logged["status"] == "failed" and logged["attempts"] == 3
        assert "mail is not set up" in logged["error"]
    finally:
        set_pbx_mail(site["pbx"], MailSMTPHost="127.0.0.1")


def test_the_modules_mail_settings_override_the_pbxs(site, smtp, boss):
    filter_id = saved_filter(boss, "Override", "period=today")
    report_id = new_report(boss, name="Overridden", filter=filter_id, format="csv")
    set_pbx_mail(site["pbx"], MailSMTPPort=str(free_port()))    # the PBX's server is down
    settings = load(None, {"module.db": site["db"], "pbx.config_db": site["pbx"] / "mikopbx.db",
                           "mail.host": "127.0.0.1", "mail.port": smtp.port,
                           "mail.sender": "reports@example.net", "mail.sender_name": "Reports"})
    scheduler = ReportScheduler(settings)
    try:
        due_at(site, report_id, DUE)
        scheduler.step(time.time())
    finally:
        scheduler.close()
        set_pbx_mail(site["pbx"], MailSMTPPort=str(smtp.port))
    [mail] = smtp.take()
    assert mail["From"] == "Reports <reports@example.net>"
    assert smtp.envelopes[-1].mail_from == "reports@example.net"


def test_send_now_mails_at_once_and_keeps_the_schedule(site, smtp, boss):
    filter_id = saved_filter(boss, "Now", "period=today")
    report_id = new_report(boss, name="Right now", filter=filter_id, format="csv")
    next_run = report_row(site, report_id)["next_run_ms"]
    status, headers, _ = boss.request(PREFIX + f"reports/{report_id}/send",
                                      {"csrf_token": csrf(boss)})
    assert status == 302
    site["scheduler"].step(time.time())
    [mail] = smtp.take()
    assert mail["Subject"].startswith("Right now: ")
    assert report_row(site, report_id)["next_run_ms"] == next_run
    assert report_row(site, report_id)["requested_ms"] is None


def test_reports_belong_to_their_owner_and_changes_need_the_csrf_token(site, boss, olga):
    filter_id = saved_filter(boss, "Private", "period=today")
    report_id = new_report(boss, name="Private report", filter=filter_id)
    olga_token = csrf(olga)
    assert olga.request(PREFIX + f"reports/{report_id}")[0] == 404
    for action in ("", "/send", "/delete"):
        assert olga.request(PREFIX + f"reports/{report_id}{action}",
                            {"csrf_token": olga_token, "name": "x"})[0] == 404
    _, _, listing = olga.request(PREFIX + "reports")
    assert "Private report" not in listing
    # Someone else's saved filter cannot be mailed
    status, _, body = post_report(olga, name="Stolen", filter=filter_id)
    assert status == 400 and "your saved filters" in body
    for forged in ({}, {"csrf_token": "forged"}, {"csrf_token": olga_token}):
        assert boss.request(PREFIX + f"reports/{report_id}/delete", forged)[0] == 403
    # A filter a report mails is not deleted from under it
    status, _, body = boss.request(PREFIX + f"filters/{filter_id}/delete",
                                   {"csrf_token": csrf(boss)})
    assert status == 400 and "Private report" in body
    assert boss.request(PREFIX + f"reports/{report_id}/delete",
                        {"csrf_token": csrf(boss)})[0] == 302
    assert boss.request(PREFIX + f"reports/{report_id}")[0] == 404


def test_a_report_follows_its_owners_extensions_as_the_admin_shell_gives_them(site, smtp, olga):
    filter_id = saved_filter(olga, "Follow", "period=today")
    report_id = new_report(olga, name="Follows", filter=filter_id, format="csv")
    # The admin moves olga to extension 203, in an access group that sees only the calls its
    # employees placed (ModuleUsersUI 'outgoing-selected'): her next visit tells the module.
    moved = site["root"] / "moved.json"
    moved.write_text(json.dumps([{**USERS[1], "extensions": ["203"], "scope": "placed"}]))
    app = create_app(site["settings"], login=StandinLogin.from_file(moved))
    with serving(app, threads=2) as server:
        there = Browser(f"http://127.0.0.1:{server.effective_port}")
        assert there.login("olga", "o1ga")[0] == 302
        assert there.request(PREFIX + "reports")[0] == 200
        expected = there.calls(PREFIX, **LAST_WEEK)
    assert json.loads(report_row(site, report_id)["owner_extensions"]) == ["203"]
    assert report_row(site, report_id)["owner_scope"] == "placed"
    due_at(site, report_id, DUE)
    site["scheduler"].step(time.time())
    [mail] = smtp.take()
    [part] = mail.iter_attachments()
    assert part.get_content_type() == "text/csv" and part.get_content_charset() == "utf-8"
    rows = list(csv.reader(io.StringIO(part.get_content().lstrip("\ufeff")), delimiter=";"))
    assert [r[-1] for r in rows[1:]] == [c["linkedid"] for c in expected] and expected
    assert all("203" in c["employees"] for c in expected)
    assert expected != olga.calls(PREFIX, **LAST_WEEK)          # not what 202 had


def test_the_running_daemon_mails_a_due_report(site, smtp, boss, tmp_path):
    filter_id = saved_filter(boss, "Daemon", "period=today")
    report_id = new_report(boss, name="From the daemon", filter=filter_id, format="csv")
    due_at(site, report_id, time.time() - 60)
    pbx = site["pbx"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "daemon", "--cdr-db", str(pbx / "cdr.db"),
         "--pbx-db", str(pbx / "mikopbx.db"), "--db", str(site["db"]),
         "--set", "ami.enabled=false", "--set", "reports.check_interval=0.2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        [mail] = smtp.take(timeout=30)
        assert mail["Subject"].startswith("From the daemon: ")
        assert wait_for(lambda: sends(site, report_id)[-1]["status"] == "sent", 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "report 'From the daemon' of boss sent to boss@example.com" in err


def test_through_nginx_a_mailed_link_needs_no_login_and_expires(site, smtp, tmp_path):
    from tests.stack import admin_shell
    with admin_shell(site["db"], site["pbx"] / "monitor", tmp_path) as stack:
        admin = Browser(stack["base"])
        assert admin.login("admin", "admin")[0] == 302
        filter_id = saved_filter(admin, "Via nginx", "period=today")
        report_id = new_report(admin, name="Via nginx", filter=filter_id, format="xlsx",
                               delivery="link", link_hours="120")
        due_at(site, report_id, DUE)
        site["scheduler"].step(time.time())
        [mail] = smtp.take()
        link = re.search(r"(http://\S+)", mail.get_content()).group(1)
        assert link.startswith(stack["base"] + PREFIX + "reports/file/")   # where admin was
        status, body = fetch(link)
        assert status == 200 and body.startswith(b"PK")
        assert load_workbook(io.BytesIO(body)).worksheets[1].max_row > 1
        # Everything else of the module still needs the admin session
        assert fetch(stack["base"] + PREFIX + "reports")[0] in (401, 302)
        due_at(site, report_id, DUE)
        site["scheduler"].step(time.time() - 121 * 3600)
        [old] = smtp.take()
        status, body = fetch(re.search(r"(http://\S+)", old.get_content()).group(1))
        assert status == 410 and b"no longer kept" in body


def test_an_admin_sees_and_may_delete_everyone_s_reports_others_only_their_own(site, boss, olga):
    filter_id = saved_filter(olga, "Departed", "period=today")
    report_id = new_report(olga, name="Left behind", filter=filter_id)
    _, _, listing = boss.request(PREFIX + "reports")
    assert 'data-owner="olga"' in listing and "Left behind" in listing
    assert boss.request(PREFIX + f"reports/{report_id}")[0] == 404     # not theirs to edit
    assert boss.request(PREFIX + f"reports/{report_id}/delete",
                        {"csrf_token": csrf(boss)})[0] == 302
    _, _, mine = olga.request(PREFIX + "reports")
    assert "Left behind" not in mine


def test_the_demo_mail_catcher_keeps_each_mail_as_a_file(tmp_path):
    import smtplib
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "standin", "mail-catcher", "--listen",
                             f"127.0.0.1:{port}", "--out", str(tmp_path / "mail")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("mail catcher listening on")
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("pbx@example.com", ["boss@example.com"],
                            "Subject: Отчёт\r\n\r\nbody".encode())
        assert wait_for(lambda: list((tmp_path / "mail").glob("*.eml")), 5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
    [kept] = (tmp_path / "mail").glob("*.eml")
    assert email.message_from_bytes(kept.read_bytes(), policy=policy.default)["Subject"] == "Отчёт"


def test_a_forged_host_header_never_becomes_the_start_of_mailed_links(site, smtp, tmp_path):
    """A user who sends the page a Host header of their choosing must not get the PBX to mail
    links to that site: links start at the PBX's own address (here: where nginx was reached)."""
    from tests.stack import admin_shell
    with admin_shell(site["db"], site["pbx"] / "monitor", tmp_path) as stack:
        admin = Browser(stack["base"])
        assert admin.login("admin", "admin")[0] == 302
        filter_id = saved_filter(admin, "Forged host", "period=today")
        status, headers, body = post_report(
            admin, name="Forged host", filter=filter_id, delivery="link",
            headers={"Host": "evil.example:8443", "X-Forwarded-Host": "evil.example"})
        assert status == 302, body[:300]
        report_id = int(re.search(r"/reports/(\d+)", headers["Location"]).group(1))
        assert report_row(site, report_id)["link_base"] == stack["base"]
        due_at(site, report_id, DUE)
        site["scheduler"].step(time.time())
        [mail] = smtp.take()
        assert "evil.example" not in mail.get_content()
        assert re.search(r"(http://\S+)", mail.get_content()).group(1).startswith(stack["base"])


def test_the_pbx_s_own_web_address_starts_mailed_links(tmp_path):
    """On a PBX, its internet interface's external name and HTTPS port (config DB)."""
    from pbx.config import read_pbx_web_address
    config = tmp_path / "mikopbx.db"
    with sqlite3.connect(config) as conn:
        conn.execute("CREATE TABLE m_LanInterfaces (id INTEGER PRIMARY KEY, ipaddr TEXT, "
                     "exthostname TEXT, extipaddr TEXT, internet TEXT, disabled TEXT)")
        conn.execute("CREATE TABLE m_PbxSettings (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO m_LanInterfaces VALUES (1, '10.0.0.5', '', '', '0', '0'), "
                     "(2, '192.168.1.10', 'pbx.example.com', '203.0.113.7:5060', '1', '0')")
        conn.execute("INSERT INTO m_PbxSettings VALUES ('WEBHTTPSPort', '8443')")
    assert read_pbx_web_address(config) == "https://pbx.example.com:8443"
    with sqlite3.connect(config) as conn:
        conn.execute("UPDATE m_LanInterfaces SET exthostname = '' WHERE id = 2")
        conn.execute("UPDATE m_PbxSettings SET value = '443'")
    assert read_pbx_web_address(config) == "https://203.0.113.7"


def test_a_report_carries_its_own_filters_instead_of_a_saved_one(site, smtp, boss):
    """Employees, directions and tags chosen in the report's form (no saved filter): the mail
    holds exactly the calls the API gives for the same filter."""
    token = csrf(boss)
    status, _, _ = boss.request(PREFIX + "api/v1/tags", {"name": "Жалоба", "colour": "red",
                                                        "csrf_token": token})
    assert status == 201
    with sqlite3.connect(site["db"]) as conn:
        first, second = (ext for (ext,) in conn.execute(
            "SELECT extension FROM employee ORDER BY extension LIMIT 2"))
    support = boss.calls(PREFIX, **LAST_WEEK, employee=f"{first},{second}", direction="incoming")
    for call in support[:3]:
        status, _, body = boss.request(PREFIX + f"api/v1/calls/{call['linkedid']}/tags",
                                       {"tag": "Жалоба", "csrf_token": token})
        assert status == 201, body
    fields = [("name", "Жалобы поддержки"), ("filter", ""), ("period", "last_week"),
              ("frequency", "daily"), ("at", "08:00"), ("weekday", "0"), ("monthday", "1"),
              ("format", "xlsx"), ("delivery", "attach"), ("link_hours", "72"),
              ("recipients", "boss@example.com"), ("subject", ""), ("body", ""),
              ("enabled", "on"), ("employee", first), ("employee", second),
              ("direction", "incoming"),
              ("direction", "outgoing"), ("tag", "Жалоба"), ("csrf_token", token)]
    status, headers, body = boss.request(PREFIX + "reports", fields)
    assert status == 302, body[:800]
    report_id = int(re.search(r"/reports/(\d+)", headers["Location"]).group(1))
    _, _, form = boss.request(PREFIX + f"reports/{report_id}")
    assert re.search(rf'<option value="{second}" selected>', form)
    assert re.search(r'<option value="outgoing" selected>', form)

    due_at(site, report_id, DUE)
    site["scheduler"].step(DUE)
    [mail] = smtp.take()
    expected = boss.calls(PREFIX, **LAST_WEEK, employee=f"{first},{second}",
                          direction="incoming,outgoing",
                          tag="Жалоба")
    assert [c["linkedid"] for c in expected] == [c["linkedid"] for c in support[:3]]
    _, content = attachment(mail)
    rows = list(load_workbook(io.BytesIO(content)).worksheets[1].iter_rows(values_only=True))
    at = {title: i for i, title in enumerate(rows[0])}
    assert [r[at["Call ID"]] for r in rows[1:]] == [c["linkedid"] for c in expected]
    assert [r[at["Tags"]] for r in rows[1:]] == ["Жалоба"] * len(expected)

    fields = [(k, "Nobody" if k == "tag" else v) for k, v in fields if k != "name"]
    status, _, body = boss.request(PREFIX + "reports", [("name", "Refused"), *fields])
    assert status == 400 and "unknown tag" in body
