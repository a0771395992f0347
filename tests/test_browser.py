"""The history page in real Chromium through real nginx: login, periods, tabs, number search,
details with recordings, saved filters, columns, live updates, languages, the operator's view
and hostile caller names — everything a user sees, checked against the JSON API or the mirror.

The module works on its own copy of the demo PBX and its own mirror, so live tests can append
calls and delete recordings without touching other tests. Users that change their settings
(saved filters, columns, language) are separate accounts, so no test depends on another's order.
"""
from __future__ import annotations

import re
import shutil
import sqlite3
import struct
import time
import urllib.parse
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from standin.demo import HOSTILE_NAMES
from standin.shell import DEMO_USERS
from tests.browser import (ARTIFACTS, PlaywrightError, PlaywrightTimeout, UserPage, chromium_binary,
                           login)
from tests.mirror import append_rows, sync_once
from tests.stack import PREFIX, admin_shell

PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}     # the demo PBX's calls end 2024-10-28
TABS = ("all", "incoming", "missed", "outgoing", "internal", "unreturned")
PAGE_ROWS = 50                                          # rows the page shows before "show more"
# Admins of their own, for the tests that change what a user keeps (one account per test).
EXTRA_USERS = [{"name": name, "password": name, "role": "admin", "extensions": []}
               for name in ("admin-filters", "admin-columns", "admin-lang")]
# A silent CBR MP3 (MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono): 200 frames, about 5.2 s —
# long enough to seek in (the demo's own files are two frames).
SILENT_MP3 = (b"\xff\xfb\x90\xc4" + bytes(413)) * 200


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pbx(demo_pbx, tmp_path_factory) -> Path:
    """This module's own copy of the demo PBX (live calls are appended, recordings deleted)."""
    copy = tmp_path_factory.mktemp("browser-pbx") / "pbx"
    shutil.copytree(demo_pbx, copy)
    return copy


@pytest.fixture(scope="module")
def mirror(pbx, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("browser-mirror") / "module.db"
    sync_once(pbx / "cdr.db", pbx / "mikopbx.db", db)
    return db


@pytest.fixture(scope="module")
def stack(pbx, mirror, tmp_path_factory):
    chromium_binary()
    run_dir = tmp_path_factory.mktemp("browser-nginx")
    with admin_shell(mirror, pbx / "monitor", run_dir, users=list(DEMO_USERS) + EXTRA_USERS,
                     app_threads=8) as running:
        yield running


def first_rows(calls: list[dict]) -> list[str]:
    return [c["linkedid"] for c in calls[:PAGE_ROWS]]


def local_day(call: dict) -> str:
    return call["start"][:10]           # ISO time with the PBX offset: the PBX's local day


def recording_file(pbx: Path, call: dict, number: int = 1) -> Path:
    return pbx / "monitor" / call["recordings"][number - 1].split("/monitor/", 1)[1]


def choose_period(tab: UserPage, value: str):
    """Pick an entry of the period dropdown (Fomantic over <select name=period>); a preset
    loads its page at once, "custom" shows the date fields."""
    tab.page.click(".filters .ui.dropdown.period")
    item = tab.page.locator(f'.filters .ui.dropdown.period .menu .item[data-value="{value}"]')
    if value == "custom":
        item.click()
    else:
        tab.navigate_by(item)


# ----------------------------------------------------------------------------------- tests


def test_login_form_lands_on_the_history_page_and_a_wrong_password_is_refused(browser, stack):
    tab = UserPage(browser, stack)                      # nobody logged in yet
    page = tab.page
    try:
        # No session: the page sends to the login form.
        page.goto(f"{stack['base']}{PREFIX}")
        assert page.url.endswith("/login")
        assert page.locator("#calls").count() == 0
        login(page, stack, "admin", "wrong")
        assert page.url.endswith("/login")
        error = page.locator(".ui.error.message")
        assert error.is_visible() and "Wrong user name or password" in error.inner_text()
        assert page.locator("#password").input_value() == ""
        login(page, stack, "admin", "admin")
        page.wait_for_url(re.compile(re.escape(PREFIX) + r"$"))
        assert "Extended call history" in page.locator("h1").inner_text()
        assert "admin" in page.locator(".pbx-user .header").inner_text()
        today = tab.api(period="today")                 # the landing period is today
        assert tab.count("all") == len(today) and tab.shown() == first_rows(today)
        tab.open(**PERIOD)
        calls = tab.api(**PERIOD)
        assert len(calls) > PAGE_ROWS
        assert tab.shown() == first_rows(calls) and tab.count("all") == len(calls)
        assert page.locator(".show-more").is_visible()
        assert tab.errors == [] and tab.dialogs == []
    finally:
        tab.context.close()


def test_a_custom_period_shows_only_calls_of_that_period(open_as):
    tab = open_as("admin").open(period="today")
    assert tab.page.locator(".custom-period").first.is_hidden()
    choose_period(tab, "custom")
    assert tab.page.locator(".custom-period").first.is_visible()
    day = "2024-10-25"
    tab.page.fill('input[name="from"]', day)
    tab.page.fill('input[name="to"]', day)
    tab.navigate_by(tab.page.locator(".filters button.apply"))
    assert tab.query() == {"from": day, "to": day}
    calls = tab.api(**{"from": day, "to": day})
    assert calls and all(local_day(c) == day for c in calls)
    assert tab.shown() == first_rows(calls) and tab.count("all") == len(calls)
    assert all(t.startswith(day) for t in tab.column("time"))
    assert tab.page.locator(".filters .ui.dropdown.period .text").inner_text() == "Custom"


def test_a_preset_period_from_the_dropdown_changes_the_url_and_the_rows(open_as):
    tab = open_as("admin").open(**PERIOD)
    before = tab.shown()
    assert before
    choose_period(tab, "yesterday")
    assert tab.query() == {"period": "yesterday"}
    assert tab.page.locator(".filters .ui.dropdown.period .text").inner_text() == "Yesterday"
    assert tab.page.locator(".custom-period").first.is_hidden()
    yesterday = tab.api(period="yesterday")
    assert tab.shown() == first_rows(yesterday) and tab.count("all") == len(yesterday)
    assert tab.shown() != before
    assert tab.page.locator(".ui.message.empty").is_visible() == (not yesterday)


def test_each_tab_counts_and_shows_the_calls_the_api_gives_for_it(open_as):
    tab = open_as("admin").open(**PERIOD)
    expected = {name: tab.api(**PERIOD, tab=name) for name in TABS}
    assert {name: tab.count(name) for name in TABS} == {n: len(c) for n, c in expected.items()}
    assert all(expected.values())
    checks = {"incoming": lambda c: c["direction"] == "incoming",
              "outgoing": lambda c: c["direction"] == "outgoing",
              "internal": lambda c: c["direction"] == "internal",
              "missed": lambda c: c["status"] == "missed",
              "unreturned": lambda c: c["status"] == "missed" and not c["returned_by"],
              "all": lambda c: True}
    for name in ("incoming", "missed", "outgoing", "internal", "unreturned", "all"):
        tab.navigate_by(tab.page.locator(f".tabs a.tab-{name}"))
        assert tab.query().get("tab", "all") == name
        assert tab.page.locator(f".tabs a.tab-{name}.active").count() == 1
        assert tab.shown() == first_rows(expected[name]), name
        assert all(checks[name](c) for c in expected[name]), name
        if name in ("incoming", "outgoing", "internal"):       # the row's direction icon
            titles = tab.page.eval_on_selector_all(
                "#calls tr.call td.direction", "cells => cells.map(c => c.title)")
            assert set(titles) == {name}
        assert {n: tab.count(n) for n in TABS} == {n: len(c) for n, c in expected.items()}


def test_clicking_a_number_searches_for_it(open_as):
    tab = open_as("admin").open(**PERIOD)
    number = tab.page.locator("#calls tr.call td.src a.number").first
    wanted = number.get_attribute("data-number")
    tab.navigate_by(number)
    assert tab.page.locator('.filters input[name="number"]').input_value() == wanted
    assert {k: v for k, v in tab.query().items() if k != "number"} == PERIOD
    calls = tab.api(**PERIOD, number=wanted)
    assert calls and tab.shown() == first_rows(calls) and tab.count("all") == len(calls)
    key = re.sub(r"\D", "", wanted)[-9:]

    def involves(call):
        numbers = [call["src"], call["dst"], call["external_number"] or "", call["did"] or "",
                   *call["employees"]]
        return any(key in re.sub(r"\D", "", n) for n in numbers)
    assert all(involves(c) for c in calls)


def test_a_row_opens_its_legs_and_facts(open_as):
    tab = open_as("admin").open(**PERIOD)
    calls = tab.api(**PERIOD)
    shown = set(tab.shown())
    call = next(c for c in calls if c["linkedid"] in shown and c["legs"] > 2 and c["missed_by"]
                and c["answered_by"])
    details = tab.expand(call["linkedid"])
    legs = tab.call(call["linkedid"])["legs"]
    assert details.locator("table.legs tr.leg").count() == len(legs) == call["legs"]
    facts = details.locator("table.facts")
    assert call["linkedid"] in facts.locator("code").inner_text()
    assert facts.locator(".answered-by").inner_text().startswith(call["answered_by"])
    missed = facts.locator(".missed-by .label").all_inner_texts()
    assert [m.split()[0] for m in missed] == call["missed_by"]
    tab.page.locator(f'#calls tr.call[data-linkedid="{call["linkedid"]}"] td.time').click()
    assert details.count() == 0                      # a second click closes the details


def test_a_recording_plays_and_seeks_through_nginx(open_as, pbx):
    tab = open_as("admin")
    calls = tab.api(**PERIOD)
    call = next(c for c in calls if len(c["recordings"]) == 1
                and recording_file(pbx, c).is_file())
    recording_file(pbx, call).write_bytes(SILENT_MP3)
    replies = []
    tab.page.on("response", lambda r: "/recordings/" in r.url and replies.append(
        (r.status, r.headers.get("content-type", ""))))
    tab.open(**{"from": local_day(call), "to": local_day(call),
                "number": f"linkedid:{call['linkedid']}"})
    assert tab.shown() == [call["linkedid"]]
    tab.page.click("#calls tr.call button.play")        # the row's play button
    audio = "document.querySelector('#calls tr.details audio')"
    tab.page.wait_for_function(f"() => {audio} && {audio}.currentTime > 0")
    state = tab.page.evaluate(f"() => {{ const a = {audio}; a.pause(); "
                              "return {ready: a.readyState, duration: a.duration, "
                              "error: a.error && a.error.code}; }")
    assert state["ready"] >= 2 and state["error"] is None and state["duration"] > 4
    seeked = tab.page.evaluate(f"""() => new Promise(done => {{
        const a = {audio};
        a.addEventListener("seeked", () => done(a.currentTime), {{once: true}});
        a.currentTime = 3; }})""")
    assert abs(seeked - 3) < 0.1
    tab.page.evaluate(f"() => {audio}.play()")
    tab.page.wait_for_function(f"() => {audio}.currentTime > 3.05")
    assert replies and all(s in (200, 206) and t.startswith("audio/") for s, t in replies)
    download = tab.page.locator("#calls tr.details a.download")
    assert download.get_attribute("href").endswith("?download=1")


def test_a_call_whose_recording_file_is_gone_says_so(open_as, pbx):
    tab = open_as("admin")
    calls = tab.api(**PERIOD)
    call = next(c for c in reversed(calls) if len(c["recordings"]) == 1
                and recording_file(pbx, c).is_file())
    recording_file(pbx, call).unlink()
    tab.open(**{"from": local_day(call), "to": local_day(call),
                "number": f"linkedid:{call['linkedid']}"})
    details = tab.expand(call["linkedid"])
    assert details.locator(".recording .unavailable").inner_text().strip() \
        == "Recording unavailable"
    assert details.locator("audio").count() == 0


def test_a_saved_filter_is_restored_made_default_and_deleted(open_as):
    tab = open_as("admin-filters")
    day = {"from": "2024-10-24", "to": "2024-10-25"}
    number = tab.api(**day, tab="incoming")[0]["src"]
    first = {**day, "tab": "incoming", "number": number}
    second = {"period": "last_month", "tab": "missed"}

    def save(params, name, default):
        tab.open(**params)
        tab.page.click(".toolbar details.save-filter > summary")
        form = tab.page.locator(".toolbar details.save-filter form")
        form.locator('input[name="name"]').fill(name)
        box = form.locator('input[name="default"]')
        if box.is_checked() != default:
            form.locator('label[for="save-default"]').click()
        assert box.is_checked() == default
        tab.navigate_by(form.locator('button[type="submit"]'))

    def reopened() -> dict[str, str]:
        """Open the page without parameters: what the filter bar and tabs show."""
        tab.page.goto(tab.url())
        form = tab.page.locator("#filters")
        return {"period": form.locator(".ui.dropdown.period .text").inner_text(),
                "from": form.locator('input[name="from"]').input_value(),
                "to": form.locator('input[name="to"]').input_value(),
                "number": form.locator('input[name="number"]').input_value(),
                "tab": tab.page.locator(".tabs a.item.active").get_attribute("data-tab")}

    def labels() -> dict[str, bool]:
        return {label.get_attribute("data-name"): "default" in label.get_attribute("class")
                for label in tab.page.locator(".saved-filters .saved-filter").all()}

    save(first, "Incoming from one client", default=True)
    assert reopened() == {"period": "Custom", **first}
    assert tab.shown() == first_rows(tab.api(**first))
    assert labels() == {"Incoming from one client": True}
    assert tab.page.locator(".saved-filter.default .star.icon").count() == 1

    save(second, "Missed last month", default=False)
    assert reopened() == {"period": "Custom", **first}            # still the default one
    assert labels() == {"Incoming from one client": True, "Missed last month": False}

    label = tab.page.locator('.saved-filter[data-name="Missed last month"]')
    tab.navigate_by(label.locator('button[title="Make default"]'))
    assert reopened() == {"period": "Last month", "from": "", "to": "", "number": "",
                          "tab": "missed"}
    assert tab.shown() == first_rows(tab.api(**second))
    assert labels() == {"Incoming from one client": False, "Missed last month": True}

    label = tab.page.locator('.saved-filter[data-name="Incoming from one client"]')
    tab.navigate_by(label.locator("button.delete"))
    assert labels() == {"Missed last month": True}
    assert reopened()["tab"] == "missed" and labels() == {"Missed last month": True}


def test_chosen_columns_are_the_table_header_after_saving_and_reloading(open_as):
    tab = open_as("admin-columns").open(**PERIOD)
    tab.page.click(".toolbar details.columns-chooser > summary")
    form = tab.page.locator(".toolbar details.columns-chooser form")
    boxes = form.locator('input[type="checkbox"][name="columns"]')
    offered = [boxes.nth(i).get_attribute("value") for i in range(boxes.count())]
    before = [c for c in offered if form.locator(f"#column-{c}").is_checked()]
    assert header(tab) == before
    # toggle three columns: two shown ones off, a hidden one on
    flip = [before[2], before[-2]] + [c for c in offered if c not in before][:1]
    for column in flip:
        form.locator(f'label[for="column-{column}"]').click()
    chosen = [c for c in offered if (c in before) != (c in flip)]
    assert [c for c in offered if form.locator(f"#column-{c}").is_checked()] == chosen
    tab.navigate_by(form.locator('button[type="submit"]'))
    assert tab.query() == PERIOD                           # back on the same page
    assert header(tab) == chosen
    assert tab.page.eval_on_selector_all(
        "#calls tr.call", "rows => rows.map(r => r.children.length)") == [len(chosen)] * PAGE_ROWS
    tab.page.reload()
    assert header(tab) == chosen
    tab.open(period="today")
    assert header(tab) == chosen


def header(tab: UserPage) -> list[str]:
    return tab.page.eval_on_selector_all("table.calls thead th",
                                         "cells => cells.map(c => c.className)")


def test_a_screenshot_of_the_history_page(open_as):
    tab = open_as("admin").open(**PERIOD)
    calls = tab.api(**PERIOD)
    shown = set(tab.shown())
    call = next(c for c in calls if c["linkedid"] in shown and c["recordings"])
    tab.expand(call["linkedid"])
    shoot(tab, "history.png")


def shoot(tab: UserPage, name: str) -> Path:
    """A full-page screenshot into test-artifacts/; checks a real PNG of the page came out."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    tab.page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    page_height = tab.page.evaluate("() => document.documentElement.scrollHeight")
    assert width >= 1400 and height >= page_height > 900
    assert len(data) > 50_000
    return path


@pytest.mark.slow
def test_a_new_call_appears_live_and_not_while_paused(open_as, pbx, mirror):
    watching = open_as("admin")
    control = open_as("admin")        # a second tab that stays live: proof an update went out
    for tab in (watching, control):
        with tab.page.expect_response(lambda r: "/updates?" in r.url):
            tab.open(**PERIOD)
    all_before = watching.count("all")
    assert all_before == len(watching.api(**PERIOD))

    first = append_call(pbx, mirror, "2024-10-28 23:40:00", "79990000001", "Live caller")
    for tab in (watching, control):
        tab.page.wait_for_function(
            "id => document.querySelector('#calls tr.call').dataset.linkedid === id",
            arg=first)
        tab.page.wait_for_function(f"() => document.querySelector('.tabs .tab-all .count')"
                                   f".innerText === '{all_before + 1}'")
    assert watching.shown()[0] == first
    assert watching.count("all") == len(watching.api(**PERIOD)) == all_before + 1
    row = watching.page.locator(f'#calls tr.call[data-linkedid="{first}"]')
    assert "79990000001" in row.locator("td.src").inner_text()

    watching.page.click(".toolbar .ui.checkbox.live label")          # pause
    assert watching.page.locator(".ui.checkbox.live.paused").count() == 1
    hostile = next(n for n in HOSTILE_NAMES if "onerror" in n)
    second = append_call(pbx, mirror, "2024-10-28 23:50:00", "79990000002", hostile)
    control.page.wait_for_function(
        "id => document.querySelector('#calls tr.call').dataset.linkedid === id", arg=second)
    time.sleep(1.0)                    # the paused tab had every chance the live one had
    assert watching.shown()[0] == first and watching.count("all") == all_before + 1
    assert watching.page.locator(f'tr.call[data-linkedid="{second}"]').count() == 0

    watching.page.click(".toolbar .ui.checkbox.live label")          # resume
    assert watching.page.locator(".ui.checkbox.live.paused").count() == 0
    watching.page.wait_for_function(
        "id => document.querySelector('#calls tr.call').dataset.linkedid === id", arg=second)
    watching.page.wait_for_function(f"() => document.querySelector('.tabs .tab-all .count')"
                                    f".innerText === '{all_before + 2}'")
    assert watching.shown()[:2] == [second, first]
    assert watching.count("all") == len(watching.api(**PERIOD)) == all_before + 2
    # a live row with a hostile caller name is text, like a rendered one
    name = watching.page.locator(f'#calls tr.call[data-linkedid="{second}"] td.src .name')
    assert name.inner_text() == hostile
    assert watching.page.locator('img[src="x"]').count() == 0
    assert watching.dialogs == [] and control.dialogs == []


def append_call(pbx: Path, mirror: Path, start: str, caller: str, name: str) -> str:
    """Append a one-leg incoming answered call (a copy of a demo one with a new id, linkedid,
    caller and times, local PBX time `start`) to the PBX's cdr_general; sync the mirror."""
    with closing(sqlite3.connect(mirror)) as db:
        template_id, = db.execute(
            "SELECT linkedid FROM call WHERE leg_count = 1 AND direction = 'incoming' AND "
            "status = 'answered' AND recordings = '[]' ORDER BY start_ms LIMIT 1").fetchone()
    begin = datetime.fromisoformat(start)
    stamp = f"{int(begin.timestamp())}.{int(begin.timestamp()) % 100000}"
    times = {"start": begin, "answer": begin + timedelta(seconds=6),
             "endtime": begin + timedelta(seconds=66)}
    with closing(sqlite3.connect(pbx / "cdr.db")) as cdr:
        cdr.row_factory = sqlite3.Row
        row = dict(cdr.execute("SELECT * FROM cdr_general WHERE linkedid = ?",
                               (template_id,)).fetchone())
    row.pop("id")                              # a new, higher id
    linkedid = f"mikopbx-{stamp}"
    row.update({column: t.strftime("%Y-%m-%d %H:%M:%S.000") for column, t in times.items()},
               UNIQUEID=f"{stamp}_live", linkedid=linkedid, src_num=caller, src_name=name,
               duration=66, billsec=60, recordingfile="")
    append_rows(pbx / "cdr.db", list(row), [tuple(row.values())])
    sync_once(pbx / "cdr.db", pbx / "mikopbx.db", mirror)
    return linkedid


def test_switching_the_language_to_russian_and_back(open_as):
    tab = open_as("admin-lang").open(**PERIOD, tab="missed")
    assert tab.page.locator("html").get_attribute("lang") == "en"
    assert "Incoming" in tab.page.locator(".tabs .tab-incoming").inner_text()
    tab.navigate_by(tab.page.locator('.pbx-sidebar form.language button[value="ru"]'))
    assert tab.query() == {**PERIOD, "tab": "missed"}
    assert tab.page.locator("html").get_attribute("lang") == "ru"
    assert "Входящие" in tab.page.locator(".tabs .tab-incoming").inner_text()
    statuses = tab.page.locator("#calls tr.call td.status .label").all_inner_texts()
    assert statuses and set(statuses) == {"пропущен"}
    missed = tab.api(**PERIOD, tab="missed")
    assert tab.shown() == first_rows(missed) and tab.count("missed") == len(missed)
    tab.expand(tab.shown()[0])
    shoot(tab, "history-ru.png")
    tab.navigate_by(tab.page.locator('.pbx-sidebar form.language button[value="en"]'))
    assert tab.page.locator("html").get_attribute("lang") == "en"
    assert "Incoming" in tab.page.locator(".tabs .tab-incoming").inner_text()
    assert set(tab.page.locator("#calls tr.call td.status .label").all_inner_texts()) \
        == {"missed"}


def test_an_operator_sees_only_calls_of_their_extension(open_as):
    operator = open_as("operator201").open(**PERIOD)
    admin = open_as("admin")
    mine = operator.api(**PERIOD)
    assert mine and all("201" in c["employees"] for c in mine)
    assert [c["linkedid"] for c in mine] == [c["linkedid"] for c in
                                            admin.api(**PERIOD, employee="201")]
    assert operator.shown() == first_rows(mine)
    counts = {name: len(operator.api(**PERIOD, tab=name)) for name in TABS}
    assert {name: operator.count(name) for name in TABS} == counts
    assert counts["all"] < len(admin.api(**PERIOD))
    # the admin shell says this operator reads Russian
    assert "Входящие" in operator.page.locator(".tabs .tab-incoming").inner_text()
    employees = operator.page.eval_on_selector_all(
        'select[name="employee"] option', "options => options.map(o => o.value)")
    assert [e for e in employees if e] == ["201"]
    # another call's details, API record and recording: as if it did not exist
    other = next(c for c in admin.api(**PERIOD) if "201" not in c["employees"]
                 and c["recordings"])
    for path in (f"calls/{other['linkedid']}/details", f"api/v1/calls/{other['linkedid']}",
                 f"recordings/{other['linkedid']}/1"):
        assert operator.page.goto(operator.url(path)).status == 404, path
    assert operator.page.goto(operator.url(f"calls/{mine[0]['linkedid']}/details")).status \
        == 200


def test_hostile_caller_names_are_shown_as_text(open_as):
    tab = open_as("admin")
    calls = tab.api(**PERIOD)
    hostile = {}
    for call in calls:
        for field in ("src_name", "dst_name"):
            if call[field] in HOSTILE_NAMES and "<" in call[field]:
                hostile.setdefault(call[field], (call, field))
    assert any("<script" in name for name in hostile), "the demo has a <script> caller name"
    for name, (call, field) in hostile.items():
        tab.open(**{"from": local_day(call), "to": local_day(call),
                    "number": f"linkedid:{call['linkedid']}"})
        row = tab.page.locator(f'#calls tr.call[data-linkedid="{call["linkedid"]}"]')
        cell = row.locator(f"td.{field[:3]} .name")
        assert cell.inner_text() == name
        details = tab.expand(call["linkedid"])
        assert name in details.locator("table.legs").inner_text()
        injected = tab.page.evaluate("""() => ({
            img: document.querySelectorAll('img[src="x"]').length,
            bold: document.querySelectorAll('#calls b').length,
            script: [...document.scripts].filter(s => s.text.includes('alert')).length})""")
        assert injected == {"img": 0, "bold": 0, "script": 0}, name
    assert tab.dialogs == []


def test_leaving_pages_does_not_block_the_module(browser, mirror, pbx, tmp_path_factory):
    """A page that was left gives its server thread back: with a pool of 4 threads, open and
    leave the page four times (as a user clicking through tabs does), then the module must
    still answer at once."""
    run_dir = tmp_path_factory.mktemp("browser-nginx-4")
    with admin_shell(mirror, pbx / "monitor", run_dir, app_threads=4) as small:
        context = browser.new_context(locale="en-US")
        try:
            page = context.new_page()
            page.set_default_timeout(10_000)
            login(page, small, "admin", "admin")            # lands on the page: one view
            for tab in ("incoming", "missed", "outgoing"):
                page.goto(f"{small['base']}{PREFIX}?" + urllib.parse.urlencode(
                    {**PERIOD, "tab": tab}))
            page.goto("about:blank")                        # every page is left
            time.sleep(1.5)                # a stream looks twice a second whether it was left
            reply = context.request.get(
                f"{small['base']}{PREFIX}api/v1/calls?" + urllib.parse.urlencode(PERIOD),
                timeout=5_000)
            assert reply.ok
        except PlaywrightError as error:
            if "Timeout" in str(error):
                raise PlaywrightTimeout(str(error)) from None
            raise
        finally:
            context.close()


@pytest.mark.parametrize("big", [False, True])
def test_the_excel_button_downloads_what_is_filtered(open_as, monkeypatch, tmp_path, big):
    """Small exports download at once; big ones show a progress bar, then download."""
    import sys

    from openpyxl import load_workbook
    if big:                       # make this filter "big" for the page
        monkeypatch.setattr(sys.modules["web.history"], "BACKGROUND_FROM", 1)
    tab = open_as("admin").open(**PERIOD, tab="missed")
    expected = tab.api(**PERIOD, tab="missed")
    with tab.page.expect_download(timeout=30_000) as started:
        tab.page.click('.buttons.export a[data-format="xlsx"]')
    saved = tmp_path / "calls.xlsx"
    started.value.save_as(saved)
    assert tab.page.locator(".export-progress").is_visible() == big
    rows = list(load_workbook(saved).worksheets[1].iter_rows(values_only=True))[1:]
    assert [r[-1] for r in rows] == [c["linkedid"] for c in expected]
