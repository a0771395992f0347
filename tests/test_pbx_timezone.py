"""The PBX's time, always: pages, API, exports, mailed reports, the CLI and the daemon take the
timezone from the PBX's config DB (or `pbx.timezone`) — also when the web worker starts before
the daemon's first sync — follow a change of `PBXTimezone` without a restart, and say so when
no timezone can be found anywhere instead of quietly showing UTC."""
import csv
import io
import json
import logging
import os
import re
import sqlite3
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from openpyxl import load_workbook

from daemon.resident import Daemon
from mirror.settings import load
from pbx import zone as pbxzone
from pbx.zone import PbxZone
from reports.scheduler import ReportScheduler
from standin.shell import StandinLogin
from tests.conftest import run_extcdr
from tests.pbxfixture import Pbx
from tests.stack import serving
from tests.test_reports import Inbox, due_at, free_port, new_report, saved_filter
from tests.webclient import Browser
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
DAY = {"from": "2024-03-05", "to": "2024-03-05"}
ANSWERED = """
    start    | answer   | end      | src          | dst
    10:00:00 | 10:00:06 | 10:02:06 | +79161234567 | 201
"""
MOSCOW_START = "2024-03-05T10:00:00+03:00"          # 07:00 UTC
VLADIVOSTOK_START = "2024-03-05T17:00:00+10:00"     # the same instant


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp())


def set_pbx_timezone(pbx: Pbx, name: str) -> None:
    """What the PBX's admin panel does when the timezone is changed."""
    with sqlite3.connect(pbx.pbx_db) as conn:
        conn.execute("UPDATE m_PbxSettings SET value = ? WHERE key = 'PBXTimezone'", (name,))
    conn.close()


@pytest.fixture
def pbx(tmp_path, capsys):
    """A Moscow PBX with one answered call at 10:00 local time; nothing mirrored yet."""
    pbx = Pbx(tmp_path / "pbx", capsys, tz="Europe/Moscow")
    pbx.linkedid = pbx.call(ANSWERED)
    return pbx


@pytest.fixture
def site(pbx):
    """The web worker started on an empty mirror, as on a fresh install: the daemon has not
    synced yet, so the mirror knows no timezone."""
    settings = load(None, {"module.db": pbx.module_db, "pbx.config_db": pbx.pbx_db})
    app = create_app(settings, login=StandinLogin.from_file(None))
    with serving(app, threads=4) as server:
        admin = Browser(f"http://127.0.0.1:{server.effective_port}")
        assert admin.login("admin", "admin")[0] == 302
        yield {"admin": admin, "settings": settings, "db": pbx.module_db}


def download(browser: Browser, fmt: str, **params) -> bytes:
    url = browser.base + PREFIX + "export?" + urllib.parse.urlencode({"format": fmt, **params})
    with browser.opener.open(urllib.request.Request(url)) as reply:
        assert reply.status == 200
        return reply.read()


def page(browser: Browser, path: str = "", **params) -> str:
    status, _, body = browser.request(PREFIX + path + "?" + urllib.parse.urlencode(params))
    assert status == 200, body[:300]
    return body


def assert_everything_shows(site, pbx, iso: str) -> None:
    """The page, the details, the API and every export show the call at local time `iso`."""
    admin, local = site["admin"], datetime.fromisoformat(iso).replace(tzinfo=None)
    text, clock = local.strftime("%Y-%m-%d %H:%M:%S"), local.strftime("%H:%M:%S")
    [call] = admin.calls(PREFIX, **DAY)
    assert call["start"] == iso
    status, _, body = admin.request(PREFIX + f"api/v1/calls/{pbx.linkedid}")
    assert status == 200 and json.loads(body)["call"]["start"] == iso
    row = re.search(r'<td class="[^"]*\btime">(.*?)</td>', page(admin, **DAY), re.S)[1]
    assert re.sub(r"<[^>]+>", "", row) == text
    assert clock in page(admin, f"calls/{pbx.linkedid}/details")
    rows = list(load_workbook(io.BytesIO(download(admin, "xlsx", **DAY)))
                .worksheets[1].iter_rows(values_only=True))
    assert rows[1][rows[0].index("Date")] == local
    table = list(csv.reader(io.StringIO(download(admin, "csv", **DAY).decode("utf-8-sig"))))
    assert table[1][table[0].index("Date")] == text
    assert json.loads(download(admin, "jsonl", **DAY))["start"] == iso
    from pypdf import PdfReader
    pdf = PdfReader(io.BytesIO(download(admin, "pdf", **DAY)))
    assert text in "\n".join(p.extract_text() for p in pdf.pages)


# --- the web worker ------------------------------------------------------------------------------

def test_a_worker_started_before_the_first_sync_shows_pbx_local_time(site, pbx):
    pbx.sync()                       # the daemon's first sync, after the worker started
    assert_everything_shows(site, pbx, MOSCOW_START)


def test_today_and_yesterday_are_the_pbx_local_days(site, pbx):
    today = datetime.now(ZoneInfo("Europe/Moscow")).date()
    # 00:30 and 23:30 Moscow time lie on two different UTC days, whatever the hour now.
    ends = [pbx.call(ANSWERED.replace("10:0", f"{hour}:{minute}"), day=str(day))
            for day in (today - timedelta(days=1), today) for hour, minute in (("00", "3"),
                                                                               ("23", "3"))]
    pbx.sync()
    admin = site["admin"]
    assert {c["linkedid"] for c in admin.calls(PREFIX, period="today")} == set(ends[2:])
    assert {c["linkedid"] for c in admin.calls(PREFIX, period="yesterday")} == set(ends[:2])


def test_a_change_of_the_pbx_timezone_is_followed_by_the_next_request(site, pbx):
    pbx.sync()
    assert site["admin"].calls(PREFIX, **DAY)[0]["start"] == MOSCOW_START
    set_pbx_timezone(pbx, "Asia/Vladivostok")
    assert_everything_shows(site, pbx, VLADIVOSTOK_START)


def test_the_mailed_report_agrees_with_the_page(site, pbx):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    with sqlite3.connect(pbx.pbx_db) as conn:
        conn.executemany("INSERT OR REPLACE INTO m_PbxSettings (key, value) VALUES (?, ?)", [
            ("MailSMTPHost", "127.0.0.1"), ("MailSMTPPort", str(controller.port)),
            ("MailSMTPUseTLS", "none"), ("MailSMTPSenderAddress", "pbx@example.com")])
    conn.close()
    scheduler = ReportScheduler(site["settings"])
    try:
        pbx.sync()
        admin = site["admin"]
        report_id = new_report(admin, name="Yesterday", filter=saved_filter(
            admin, "All", "period=yesterday"), period="yesterday", format="csv")
        for tz_name, iso in (("Europe/Moscow", MOSCOW_START),
                             ("Asia/Vladivostok", VLADIVOSTOK_START)):
            set_pbx_timezone(pbx, tz_name)
            due = datetime(2024, 3, 6, 8, 0, tzinfo=ZoneInfo(tz_name)).timestamp()
            due_at(site, report_id, due)
            scheduler.step(due)
            [mail] = inbox.take()
            [part] = mail.iter_attachments()
            assert part.get_filename() == "Yesterday_2024-03-05.csv"
            content = part.get_payload(decode=True).decode("utf-8-sig")
            russian = "Дата звонка" in content                # the admin's language
            table = list(csv.reader(io.StringIO(content),
                                    delimiter=";" if russian else ","))
            [call] = admin.calls(PREFIX, **DAY)
            assert call["start"] == iso
            shown = datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
            date = table[0].index("Дата звонка" if russian else "Date")
            assert [row[date] for row in table[1:]] == [shown]
    finally:
        scheduler.close()
        controller.stop()


# --- the CLI and the daemon ----------------------------------------------------------------------

def test_cli_calls_and_export_follow_the_pbx_config_db(pbx, tmp_path):
    pbx.sync()
    set_pbx_timezone(pbx, "Asia/Vladivostok")
    rc, out, err = pbx.cli("calls", "--db", pbx.module_db, "--pbx-db", pbx.pbx_db,
                           "--format", "jsonl", "--from", DAY["from"], "--to", DAY["to"])
    assert rc == 0, err
    assert json.loads(out)["start"] == VLADIVOSTOK_START
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[pbx]\nconfig_db = "{pbx.pbx_db}"\n')
    out_file = tmp_path / "calls.jsonl"
    rc, _, err = pbx.cli("export", "--db", pbx.module_db, "--config", config, "--format",
                         "jsonl", "--out", out_file, "--from", DAY["from"], "--to", DAY["to"])
    assert rc == 0, err
    assert json.loads(out_file.read_text())["start"] == VLADIVOSTOK_START


def test_the_daemon_reads_new_legs_in_the_pbx_timezone_it_has_now(pbx, tmp_path):
    daemon = Daemon(load(None, {"pbx.cdr_db": pbx.cdr_db, "pbx.config_db": pbx.pbx_db,
                                "module.db": pbx.module_db, "ami.enabled": "false"}))
    try:
        daemon.step(0.0)
        set_pbx_timezone(pbx, "Asia/Vladivostok")
        later = pbx.call(ANSWERED, day="2024-03-06")     # written by the PBX in its new time
        daemon.changed()
        daemon.step(1.0)
        daemon.step(2.0)
    finally:
        daemon.db.close()
    with sqlite3.connect(pbx.module_db) as conn:
        starts = dict(conn.execute("SELECT linkedid, start_ms / 1000 FROM call"))
    conn.close()
    assert starts == {pbx.linkedid: utc("2024-03-05 07:00"), later: utc("2024-03-06 00:00")}


# --- where the timezone comes from ---------------------------------------------------------------

def test_the_config_db_is_read_again_only_when_it_changes(pbx, monkeypatch):
    reads = []
    real = pbxzone.read_pbx_timezone
    monkeypatch.setattr(pbxzone, "read_pbx_timezone", lambda *a, **k: reads.append(1) or real(
        *a, **k))
    zone = PbxZone(pbx.pbx_db)
    first = zone.clock()
    assert first.tz_name == "Europe/Moscow"
    assert all(zone.clock() is first for _ in range(1000)) and len(reads) == 1
    set_pbx_timezone(pbx, "Asia/Vladivostok")
    assert zone.clock().tz_name == "Asia/Vladivostok" and len(reads) == 2


def test_the_setting_wins_and_a_wrong_one_is_refused(pbx):
    assert PbxZone(pbx.pbx_db, "Europe/Berlin").clock().tz_name == "Europe/Berlin"
    with pytest.raises(ValueError, match="Mars/Olympus"):
        PbxZone(pbx.pbx_db, "Mars/Olympus")


def test_without_a_config_db_the_mirrors_timezone_then_a_warning(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, "extcdr")
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.setattr(pbxzone, "_SYSTEM_TIMEZONE_FILE", tmp_path / "no-timezone")
    mirrored = [None]
    now = [0.0]
    zone = PbxZone(tmp_path / "missing.db", mirror_timezone=lambda: mirrored[0],
                   monotonic=lambda: now[0])
    assert zone.clock().tz_name == "UTC"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no PBX timezone found" in warning.message and "missing.db" in warning.message
    mirrored[0] = "Europe/Moscow"                  # the daemon's first sync stored it
    assert zone.clock().tz_name == "UTC"           # looked at again only after a while
    now[0] += pbxzone.RECHECK_S
    assert zone.clock().tz_name == "Europe/Moscow"
    assert "as the mirror was last synced" in caplog.records[-1].message


def test_a_wrong_pbx_timezone_is_said_not_used(pbx, tmp_path, caplog):
    caplog.set_level(logging.INFO, "extcdr")
    set_pbx_timezone(pbx, "Mars/Olympus")
    zone = PbxZone(pbx.pbx_db, mirror_timezone=lambda: "Europe/Moscow")
    assert zone.clock().tz_name == "Europe/Moscow"
    assert "'Mars/Olympus' is not an IANA timezone" in caplog.records[-1].message


def test_a_sync_that_finds_no_timezone_says_so(tmp_path):
    pbx = Pbx(tmp_path / "pbx", None, config=False)
    pbx.call(ANSWERED)
    done = run_extcdr("sync", "--cdr-db", pbx.cdr_db, "--db", tmp_path / "m.db", "--once",
                      env={**os.environ, "TZ": ""})
    assert done.returncode == 0
    assert "no PBX timezone found" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_worker_follows_how_the_mirror_matches_numbers_without_a_restart(site, pbx):
    """Searches match numbers by as many trailing digits as the mirror was built with (its sync
    state), read at each request, not as the worker found it at start (the caller is
    +79161234567: its last 7 digits are in +7 999 123 45 67, its last 9 are not)."""
    pbx.sync()
    admin = site["admin"]
    assert admin.calls(PREFIX, **DAY, number="+7 999 123 45 67") == []
    with sqlite3.connect(pbx.module_db) as conn:        # as a sync with 7 match digits leaves it
        conn.execute("UPDATE sync_state SET value = '7' WHERE key = 'number_match_digits'")
    conn.close()
    assert [c["linkedid"] for c in admin.calls(PREFIX, **DAY, number="+7 999 123 45 67")] == [
        pbx.linkedid]
