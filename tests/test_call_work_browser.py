"""Who hung up, supervisors limited to groups and mailed reports' own filters in real Chromium
through real nginx, in the order a PBX and its people do things: a daemon follows the PBX's AMI
(the emulator over TCP) while a page is open, and the calls that end arrive in it saying who
hung up, in English and Russian, while the history mirrored before stays "unknown"; an admin
limits a supervisor to one group in Settings and lifts it again; a user builds a report of two
employees, a direction and a tag, and the daemon's scheduler mails exactly the API's calls.

The module runs on a small demo PBX, a mirror and a daemon of its own: it plays calls, limits a
supervisor and sends mail. Screenshots go into test-artifacts/.
"""
from __future__ import annotations

import io
import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from i18n import translator
from i18n.hangup_words import hangup_words
from standin.amiemu import AmiEmulator
from standin.demo import GROUPS_DB, DemoPbx
from standin.shell import DEMO_USERS
from tests import test_reports
from tests.browser import UserPage, chromium_binary, expect
from tests.conftest import wait_for
from tests.mirror import call_count, mirrored_demo
from tests.stack import admin_shell
from tests.test_browser import TABS, first_rows
from tests.test_call_actions_browser import (WIDTH, apply_filters, change, details_of, link_of,
                                             pick, query_lists, row_of, screenshot,
                                             shows_what_the_api_gives, switch_language, wide)
from tests.test_hangup import ONE_LEG, daemon_process, expected_side
from tests.test_reports import attachment, due_at, set_pbx_mail
from tests.test_supervisor_groups import members

# The reports' SMTP server, on this module's stack.
smtp = test_reports.smtp

SEED = 23
TIMEZONE = "Europe/Berlin"                          # the small demo PBX's
DEMO_DAYS = {"from": "2024-10-25", "to": "2024-10-27"}
LAST_WEEK = {"from": "2024-10-21", "to": "2024-10-27"}
# 08:00 in Berlin on Monday 2024-10-28: a weekly report's "last week" is the demo's week.
DUE = datetime(2024, 10, 28, 7, 0, tzinfo=timezone.utc).timestamp()
GROUP = "Sales"
TAG = "Жалоба"
# Accounts of their own (each sees what its test changes), password = name.
USERS = list(DEMO_USERS) + [
    {"name": name, "password": name, "role": role, "extensions": []}
    for name, role in (("admin-hangup", "admin"), ("sveta", "supervisor"),
                       ("admin-reports", "admin"))]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory, smtp) -> Path:
    """The module's demo PBX (its history mirrored), mailing through the test's SMTP server."""
    out = tmp_path_factory.mktemp("call-work-pbx")
    mirrored_demo(out, 300, seed=SEED)
    set_pbx_mail(out, MailSMTPHost="127.0.0.1", MailSMTPPort=str(smtp.port),
                 MailSMTPUseTLS="none", MailSMTPSenderAddress="pbx@example.com")
    return out


@pytest.fixture(scope="module")
def mirror(pbx) -> Path:
    return pbx / "module.db"


@pytest.fixture(scope="module")
def ami(pbx, mirror, tmp_path_factory):
    """The PBX's AMI (the emulator, writing its cdr.db as calls go) and the daemon following
    it over TCP, as on a PBX: it mirrors calls, notes who hung up and mails reports."""
    work = tmp_path_factory.mktemp("call-work-daemon")
    history = call_count(mirror)
    with AmiEmulator(cdr_db=pbx / "cdr.db") as emulator:
        host, port = emulator.address
        config = work / "extcdr.toml"
        config.write_text(f'[ami]\nhost = "{host}"\nport = {port}\nsecret = "extcdr-demo"\n')
        with open(work / "daemon.log", "w") as log:
            daemon = daemon_process(
                config, pbx / "cdr.db", mirror, "--pbx-db", str(pbx / "mikopbx.db"),
                "--set", f"pbx.groups_db={pbx / GROUPS_DB}", "--set", "sync.poll_interval=600",
                "--set", "reports.check_interval=0.5", stderr=log)
            try:
                emulator.wait_for_listeners(1, timeout=15)
                assert call_count(mirror) == history
                yield emulator
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(10)
    assert "Traceback" not in (work / "daemon.log").read_text()


@pytest.fixture(scope="module")
def stack(mirror, pbx, ami, tmp_path_factory):
    chromium_binary()
    with admin_shell(mirror, pbx / "monitor", tmp_path_factory.mktemp("call-work-nginx"),
                     users=USERS, app_threads=8) as running:
        yield running


# ---------------------------------------------------------------------------------- helpers


def today() -> dict:
    """Yesterday and today on the PBX: the calls happening now (at any hour)."""
    now = datetime.now(ZoneInfo(TIMEZONE))
    return {"from": (now - timedelta(days=1)).strftime("%Y-%m-%d"),
            "to": now.strftime("%Y-%m-%d")}


def opened_live(tab: UserPage, **params) -> UserPage:
    """Open the page and wait until it follows changes (its first ask for updates)."""
    with tab.page.expect_response(lambda r: "/updates?" in r.url):
        tab.open(**params)
    return tab


def words(call: dict, language: str) -> str:
    hangup = call["hangup"] or {}
    return hangup_words(hangup.get("side"), hangup.get("cause"), hangup.get("cause_txt", ""),
                        language)


def counts(tab: UserPage) -> dict[str, int]:
    return {name: tab.count(name) for name in TABS}


def api_counts(tab: UserPage, **params) -> dict[str, int]:
    return {name: len(tab.api(**params, tab=name)) for name in TABS}


def chosen(tab: UserPage, select: str) -> list[str]:
    return tab.page.eval_on_selector_all(f"{select} option:checked",
                                         "options => options.map(o => o.value)")


def send_statuses(mirror: Path, report_id: int) -> list[str]:
    with closing(sqlite3.connect(mirror)) as db:
        return [status for (status,) in db.execute(
            "SELECT status FROM report_send WHERE report_id = ? ORDER BY id", (report_id,))]


def mailed_ids(mail) -> list[str]:
    """The call IDs of a mailed XLSX, in its order."""
    _, content = attachment(mail)
    rows = list(load_workbook(io.BytesIO(content)).worksheets[1].iter_rows(values_only=True))
    at = rows[0].index("Call ID")
    return [row[at] for row in rows[1:]]


# ------------------------------------------------------------------------------------ tests


def test_calls_that_end_while_the_page_is_open_say_who_hung_up(open_as, ami):
    period = today()
    watching = opened_live(wide(open_as("admin-hangup")), **period)
    assert watching.shown() == []
    history = watching.api(**DEMO_DAYS)
    assert history and all(c["hangup"] is None for c in history)

    # A call ends on the PBX: its row comes, its talk cell says who hung up.
    phones = DemoPbx(SEED, TIMEZONE)
    played: dict[str, str] = {}                       # linkedid -> the side the emulator chose

    def play(kind: str) -> str:
        legs = phones.call_legs(kind, time.time() - 600)
        ami.play_call(legs, speed=0).result(10)
        played[legs[0].row["linkedid"]] = expected_side(legs[0])
        return legs[0].row["linkedid"]

    first = play("internal_answered")
    side = played[first]
    assert side in ("caller", "callee")
    icon = row_of(watching, first).locator(f"td.talk i.hangup.{side}")
    expect(icon).to_have_count(1, timeout=20_000)
    assert icon.get_attribute("title") == f"{side} hung up (Normal clearing)"

    # More calls of every kind one leg makes: each row names the side the emulator chose.
    for kind in ONE_LEG[1:]:
        play(kind)
    for _ in range(20):                     # the emulator picks caller or callee by uniqueid
        if {"caller", "callee"} <= set(played.values()):
            break
        play("internal_answered")
    for linkedid, side in played.items():
        expect(row_of(watching, linkedid).locator(f"td.talk i.hangup.{side}")).to_have_count(
            1, timeout=20_000)
    assert set(played.values()) == {"caller", "callee", "pbx"}, played
    calls = {c["linkedid"]: c for c in watching.api(**period)}
    assert calls.keys() == played.keys() and watching.count("all") == len(played)
    for linkedid, side in played.items():
        assert calls[linkedid]["hangup"]["side"] == side
        icon = row_of(watching, linkedid).locator("td.talk i.hangup")
        assert icon.get_attribute("title") == words(calls[linkedid], "en"), linkedid

    # Its details say it in words; a call of the history before the daemon: unknown.
    hung_up = details_of(watching, first).locator("td.hangup")
    watching.expand(first)
    assert hung_up.inner_text() \
        == f"{words(calls[first], 'en')} · {calls[first]['hangup']['number']}"
    screenshot(watching, f"hangup-{WIDTH}-en.png", at_row=first)
    before = wide(open_as("admin-hangup")).open(**DEMO_DAYS)
    old = before.shown()[0]
    assert before.expand(old).locator("td.hangup").inner_text() == "unknown"
    assert before.page.locator("#calls td.talk i.hangup").count() == 0

    # The same in Russian.
    switch_language(watching, "ru")
    watching.expand(first)
    ru = words(calls[first], "ru")
    assert ru == {"caller": "положил звонящий (Нормальное завершение)",
                  "callee": "положил вызываемый (Нормальное завершение)"}[played[first]]
    assert row_of(watching, first).locator("td.talk i.hangup").get_attribute("title") == ru
    assert hung_up.inner_text().startswith(ru)
    screenshot(watching, f"hangup-{WIDTH}-ru.png", at_row=first)
    before.page.reload()
    assert before.expand(old).locator("td.hangup").inner_text() == "неизвестно"
    options = before.page.eval_on_selector_all(
        "#filters select[name=hangup] option", "options => options.map(o => o.textContent)")
    assert options[1:] == ["положил звонящий", "положил вызываемый", "завершила АТС",
                           "неизвестно"], options
    switch_language(watching, "en")

    # The filter: the calls the caller hung up, the others', and those nobody saw end.
    for days, sides in ((period, ["caller"]), (period, ["callee", "pbx"]),
                        (DEMO_DAYS, ["unknown"]), (period, ["unknown"])):
        watching.open(**days)
        pick(watching.page.locator("#filters .ui.dropdown.hangups"), *sides)
        apply_filters(watching)
        assert query_lists(watching)["hangup"] == sides
        found = {c["linkedid"] for c in shows_what_the_api_gives(
            watching, **days, hangup=",".join(sides))}
        if days is DEMO_DAYS:
            assert found == {c["linkedid"] for c in history}
        else:
            assert found == {lid for lid, side in played.items() if side in sides}
            icons = watching.page.eval_on_selector_all(
                "#calls tr.call td.talk i.hangup", "icons => icons.map(i => i.classList[1])")
            assert set(icons) <= set(sides) and len(icons) == len(found)


def test_an_admin_limits_a_supervisor_to_a_group_then_lifts_the_limit(open_as, mirror):
    admin = wide(open_as("admin")).open(**DEMO_DAYS)
    everything = admin.api(**DEMO_DAYS)
    sveta = open_as("sveta").open(**DEMO_DAYS)
    assert counts(sveta) == counts(admin) and sveta.shown() == first_rows(everything)

    # The admin limits her to the group in Settings.
    admin.navigate_by(admin.page.locator(".pbx-sidebar a.settings"))
    assert admin.page.locator(".supervisor-list .no-supervisors").is_visible()
    form = admin.page.locator("form.limit-supervisor")
    form.locator('input[name="user"]').fill("sveta")
    pick(form.locator(".ui.dropdown"), GROUP)
    admin.navigate_by(form.locator("button[type=submit]"))
    limited = admin.page.locator('.supervisor-list tr.supervisor[data-user="sveta"]')
    assert limited.locator("td").first.inner_text() == "sveta"
    assert chosen(admin, '.supervisor-list tr.supervisor[data-user="sveta"] '
                         'select[name=groups]') == [GROUP]
    label = limited.locator(".ui.dropdown a.label")
    assert label.all_inner_texts() == [GROUP]
    expect(label).to_have_css("opacity", "1")           # shown, not half-way in
    assert admin.page.locator(".supervisor-list .no-supervisors").count() == 0
    screenshot(admin, f"settings-groups-{WIDTH}-en.png")

    # Her page: the group's calls only, counted as the API counts them for her.
    sveta.page.reload()
    group = members(mirror, GROUP)
    mine = sveta.api(**DEMO_DAYS)
    assert [c["linkedid"] for c in mine] == [
        c["linkedid"] for c in everything if group & set(c["employees"])]
    assert 0 < len(mine) < len(everything)
    assert sveta.shown() == first_rows(mine)
    assert counts(sveta) == api_counts(sveta, **DEMO_DAYS) and counts(sveta)["all"] == len(mine)
    # another call's link opens nothing, its details neither
    outside = next(c for c in everything if not group & set(c["employees"]))
    sveta.page.goto(link_of(sveta, outside["linkedid"]))
    assert sveta.shown() == [] and sveta.page.locator("#calls tr.details").count() == 0
    assert sveta.context.request.get(
        sveta.url(f"calls/{outside['linkedid']}/details")).status == 404

    # "Every call": she sees every call again.
    admin.navigate_by(limited.locator("button.unlimit"))
    assert admin.page.locator(".supervisor-list .no-supervisors").is_visible()
    sveta.open(**DEMO_DAYS)
    assert sveta.shown() == first_rows(everything) and counts(sveta) == counts(
        admin.open(**DEMO_DAYS))


def test_a_report_of_chosen_employees_direction_and_tag_mails_the_apis_calls(
        open_as, mirror, smtp):
    boss = wide(open_as("admin-reports")).open(**LAST_WEEK)
    assert change(boss, "POST", "tags", {"name": TAG, "colour": "red"}).status == 201
    incoming = boss.api(**LAST_WEEK, direction="incoming")
    busiest = Counter(e for c in incoming for e in c["employees"]).most_common(2)
    first, second = sorted(extension for extension, _ in busiest)
    theirs = boss.api(**LAST_WEEK, employee=f"{first},{second}", direction="incoming")
    others = [c for c in boss.api(**LAST_WEEK, tab="outgoing") if first in c["employees"]] + [
        c for c in incoming if not {first, second} & set(c["employees"])]
    assert len(theirs) >= 3 and len(others) >= 2
    for call in theirs[:3] + others[:2]:          # the tag alone is not the report's filter
        assert change(boss, "POST", f"calls/{call['linkedid']}/tags", {"tag": TAG}).status == 201

    # The form: no saved filter, two employees, a direction and the tag.
    page = boss.page
    page.goto(boss.url("reports/new"))
    page.fill("#name", "Complaints of two")
    assert page.locator("#filter").input_value() == ""
    page.select_option("#report-employee", [first, second])
    page.select_option("#report-direction", ["incoming"])
    page.select_option("#report-tag", [TAG])
    page.select_option("#period", "last_week")
    page.select_option("#frequency", "weekly")
    page.fill("#recipients", "boss@example.com")
    boss.navigate_by(page.locator("form.report button[type=submit]"))
    assert "Saved." in page.locator(".message.saved").inner_text()
    report_id = int(boss.page.url.split("/reports/")[1].split("?")[0])
    assert chosen(boss, "#report-employee") == [first, second]
    assert chosen(boss, "#report-direction") == ["incoming"]
    assert chosen(boss, "#report-tag") == [TAG]
    assert chosen(boss, "#report-group") == [] and chosen(boss, "#report-status") == []
    assert page.locator("#filter").input_value() == ""

    # The list shows the choices.
    boss.navigate_by(page.locator(".pbx-sidebar a", has_text="Mailed reports"))
    row = page.locator('tr.report[data-name="Complaints of two"]')
    labels = {name: row.locator(f'td.report-filter .label[data-filter="{name}"]')
              .all_inner_texts() for name in ("employee", "group", "direction", "status", "tag")}
    assert labels == {"employee": [first, second], "group": [], "direction": ["incoming"],
                      "status": [], "tag": [TAG]}
    screenshot(boss, f"report-filters-{WIDTH}-en.png")
    switch_language(boss, "ru")
    assert row.locator('td.report-filter .label[data-filter="direction"]').inner_text() \
        == translator("ru")("incoming") != "incoming"
    switch_language(boss, "en")

    # "Send now": the daemon mails the period it covers now, as the API gives it.
    boss.navigate_by(row.locator("button.send-now"))
    [mail] = smtp.take(timeout=20)
    page.goto(boss.url(f"reports/{report_id}"))
    sent = page.locator("tr.send")
    expect(sent).to_have_count(1)
    start, end = sent.locator("td").nth(1).inner_text().split(" — ")
    assert mailed_ids(mail) == [c["linkedid"] for c in boss.api(
        **{"from": start, "to": end}, employee=f"{first},{second}", direction="incoming",
        tag=TAG)]

    # Its weekly run came on Monday 2024-10-28 08:00 (the daemon sends it late, still for that
    # week): exactly the employees' incoming calls with the tag.
    due_at({"db": mirror}, report_id, DUE)
    [mail] = smtp.take(timeout=20)
    expected = boss.api(**LAST_WEEK, employee=f"{first},{second}", direction="incoming",
                        tag=TAG)
    assert [c["linkedid"] for c in expected] == [c["linkedid"] for c in theirs[:3]]
    assert mailed_ids(mail) == [c["linkedid"] for c in expected]
    assert wait_for(lambda: send_statuses(mirror, report_id) == ["sent", "sent"], 5)
    page.reload()
    assert page.eval_on_selector_all("tr.send", "rows => rows.map(r => r.dataset.status)") \
        == ["sent", "sent"]
