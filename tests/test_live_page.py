"""The page while calls are still happening, in real Chromium through real nginx: calls in
progress show in the "Calls in progress" strip (never as missed rows or in the counters) and
turn into finished rows; with Live on the list stays in time order — a changed call replaces
its own row, a late-finishing one goes where its start puts it, a call that leaves the filter
leaves the list, and the counters follow. At 1024 px and 1440 px, in English and Russian.

Calls are written as the PBX writes them (legs under way in `cdr`, moved to `cdr_general` when
they end) at times around now, and the mirror is synced as the daemon would after each write
— into an SQLite file and into a PostgreSQL schema (conftest's `engine`).
"""
from __future__ import annotations

import sqlite3
from contextlib import ExitStack
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, UserPage, chromium_binary, login
from tests.conftest import new_mirror_target
from tests.mirror import sync_once
from tests.pbxfixture import DID, Pbx
from tests.stack import admin_shell

TZ = "Europe/Moscow"


class LivePbx:
    """A PBX whose calls happen now: legs under way in `cdr`, ended legs in `cdr_general`."""

    def __init__(self, root, module_db):
        self.pbx = Pbx(root, None, tz=TZ)
        self.module_db = module_db
        self.now = datetime.now(ZoneInfo(TZ)).replace(tzinfo=None, microsecond=0)
        self.sync()

    def at(self, minutes_ago: float) -> str:
        return (self.now - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%d %H:%M:%S")

    def build(self, legs: list[tuple], **defaults):
        """legs: (start, answer or None, end, src, dst) with times in minutes before now."""
        lines = ["start | answer | end | src | dst"] + [
            f"{self.at(s)} | {self.at(a) if a is not None else ''} | {self.at(e)} | {src} | {dst}"
            for s, a, e, src, dst in legs]
        return self.pbx.build("\n".join(lines), **defaults)

    def finished(self, call) -> str:
        self.pbx.write(call.rows)
        self.sync()
        return call.linkedid

    def under_way(self, rows: list[dict], *, answered: bool = False) -> None:
        self.pbx.write([{**row, "endtime": "", "disposition": "", "dialstatus": "",
                         "billsec": 0, "duration": 0, "work_completed": "",
                         **({} if answered else {"answer": ""})} for row in rows], table="cdr")

    def answer(self, row: dict) -> None:
        with sqlite3.connect(self.pbx.cdr_db) as conn:
            conn.execute("UPDATE cdr SET answer = ? WHERE UNIQUEID = ?",
                         (row["answer"], row["UNIQUEID"]))

    def move(self, rows: list[dict]) -> None:
        with sqlite3.connect(self.pbx.cdr_db) as conn:
            for row in rows:
                conn.execute("DELETE FROM cdr WHERE UNIQUEID = ?", (row["UNIQUEID"],))
        self.pbx.write(rows)

    def sync(self) -> None:
        sync_once(self.pbx.cdr_db, self.pbx.pbx_db, self.module_db)

    def period(self) -> dict:
        return {"from": (self.now - timedelta(days=1)).strftime("%Y-%m-%d"),
                "to": self.now.strftime("%Y-%m-%d")}


@pytest.fixture(scope="module")
def live(engine, tmp_path_factory, request):
    """The PBX of now, its mirror on the engine: an SQLite file, or a PostgreSQL schema whose
    history revision the page follows through nginx just the same."""
    root = tmp_path_factory.mktemp("live-page") / "pbx"
    with ExitStack() as cleanup:
        yield LivePbx(root, new_mirror_target(request, engine, root, cleanup))


@pytest.fixture(scope="module")
def stack(live, tmp_path_factory):
    chromium_binary()
    with admin_shell(live.module_db, live.pbx.root, tmp_path_factory.mktemp("live-nginx"),
                     users=list(DEMO_USERS), app_threads=8) as running:
        yield running


def open_page(browser, stack, user: str, width: int, language: str, **params) -> UserPage:
    tab = UserPage(browser, stack)
    tab.context.close()
    tab.context = browser.new_context(locale="ru-RU" if language == "ru" else "en-US",
                                      viewport={"width": width, "height": 900})
    tab.page = tab.context.new_page()
    tab.page.set_default_timeout(10_000)
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
    login(tab.page, stack, user, user)
    with tab.page.expect_response(lambda r: "/updates?" in r.url):
        tab.open(**params)
    return tab


def in_time_order(tab: UserPage) -> bool:
    keys = tab.page.eval_on_selector_all(
        "#calls tr.call", "rows => rows.map(r => [Number(r.dataset.start), Number(r.dataset.id)])")
    return keys == sorted(keys, reverse=True)


def wait_count(tab: UserPage, tab_name: str, value: int) -> None:
    tab.page.wait_for_function(
        "([name, value]) => document.querySelector('.tabs .tab-' + name + ' .count')"
        ".innerText === String(value)", arg=[tab_name, value])


@pytest.mark.slow
@pytest.mark.parametrize("width, language", [(1024, "en"), (1440, "ru")])
def test_calls_in_progress_then_finished_rows_in_time_order(browser, stack, live, width,
                                                            language):
    period = live.period()
    caller = f"+7916123{width:04d}"          # each run its own client (callbacks link by number)
    # Finished calls of the last hour: answered 50 min ago, missed from the client 30 min ago.
    live.finished(live.build([(50, 49.9, 45, "+79035550001", "201")], did=DID))
    missed = live.finished(live.build([(30, None, 29.5, caller, "203")], did=DID))
    watching = open_page(browser, stack, "admin", width, language, **period)
    unreturned = open_page(browser, stack, "admin", width, language, **period, tab="unreturned")
    operator = open_page(browser, stack, "operator201", width, language, **period)
    counts = {name: watching.count(name) for name in ("all", "missed", "unreturned")}
    assert missed in unreturned.shown()
    assert watching.page.locator("#now").is_hidden()

    # A long call that began 40 min ago is still talking; a new call went through the IVR
    # (its IVR leg has ended and moved) and rings 201 and 202 from the queue.
    long_call = live.build([(40, 39.8, 0, "+79035550002", "202")], did=DID)
    live.under_way(long_call.rows, answered=True)
    queued = live.build([(3, 3, 2, "+79035550003", "2020"), (2, 1, 1, "+79035550003", "2000"),
                         (2, None, 1, "+79035550003", "201"), (2, 1, 0, "+79035550003", "202")],
                        did=DID)
    ivr, queue, ring201, ring202 = queued.rows
    live.pbx.write([ivr])
    live.under_way([queue, ring201, ring202])
    live.sync()
    for tab in (watching, operator):
        tab.page.locator("#now").wait_for(state="visible")
    watching.page.wait_for_function("() => document.querySelectorAll('#now .now-call').length == 2")
    queue_label = {"en": "in queue", "ru": "в очереди"}[language]
    talking_label = {"en": "talking", "ru": "разговор"}[language]
    item = watching.page.locator(f'#now .now-call[data-linkedid="{queued.linkedid}"]')
    assert item.locator(".state").inner_text() == queue_label
    assert "201" in item.inner_text() and "202" in item.inner_text()
    assert watching.page.locator(f'#now .now-call[data-linkedid="{long_call.linkedid}"] '
                                 f'.state').inner_text() == talking_label
    # The operator of 201 sees the call ringing them, not the one of 202.
    assert operator.page.locator("#now .now-call").count() == 1
    assert operator.page.locator(f'#now .now-call[data-linkedid="{queued.linkedid}"]').count()
    # Neither is a row or counted: no missed call appeared.
    for tab in (watching, unreturned):
        assert queued.linkedid not in tab.shown() and long_call.linkedid not in tab.shown()
    assert {name: watching.count(name) for name in counts} == counts
    timer = item.locator(".timer")
    first_tick = timer.inner_text()
    watching.page.wait_for_function(
        "([id, text]) => document.querySelector('#now .now-call[data-linkedid=\"' + id + '\"]"
        " .timer').innerText !== text", arg=[queued.linkedid, first_tick], timeout=4000)
    shoot(watching, f"live-now-{width}-{language}.png")

    # 202 answers; then the queued call ends, answered, and the long call ends too.
    live.answer(ring202)
    live.move([queue, ring201])
    live.sync()
    watching.page.wait_for_function(
        "([id, label]) => { const e = document.querySelector("
        "'#now .now-call[data-linkedid=\"' + id + '\"] .state'); return e && e.innerText === label; }",
        arg=[queued.linkedid, talking_label])
    live.move([ring202])
    live.move(long_call.rows)
    live.sync()
    watching.page.locator("#now").wait_for(state="hidden")
    wait_count(watching, "all", counts["all"] + 2)
    assert watching.count("missed") == counts["missed"]
    shown = watching.shown()
    assert queued.linkedid in shown
    # The long call began 40 min ago: it goes between the calls of 50 and 30 minutes ago.
    assert shown.index(missed) < shown.index(long_call.linkedid)
    assert in_time_order(watching)
    row = watching.page.locator(f'#calls tr.call[data-linkedid="{queued.linkedid}"]')
    assert "status-answered" in row.get_attribute("class")

    # We call the client back: the missed call changes (returned) and keeps its place; on the
    # unreturned tab it leaves the list and the counter follows.
    back = live.finished(live.build([(0.5, 0.4, 0.1, "204", caller[2:])]))
    wait_count(watching, "all", counts["all"] + 3)
    wait_count(unreturned, "unreturned", counts["unreturned"] - 1)
    unreturned.page.wait_for_function(
        "id => !document.querySelector('#calls tr.call[data-linkedid=\"' + id + '\"]')",
        arg=missed)
    shown = watching.shown()
    assert shown[0] == back and len(shown) == len(set(shown))
    assert in_time_order(watching) and in_time_order(unreturned)
    assert shown == [c["linkedid"] for c in watching.api(**period)][:len(shown)]
    shoot(watching, f"live-rows-{width}-{language}.png")
    for tab in (watching, unreturned, operator):
        assert not tab.errors, tab.errors
        tab.context.close()


def shoot(tab: UserPage, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    tab.page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_long_list_of_calls_in_progress_folds_and_stays_unfolded(browser, stack, live):
    tab = open_page(browser, stack, "supervisor", 1024, "en", **live.period())
    ringing = [live.build([(1 + i / 10, None, 0, f"+7903777000{i}", "205")], did=DID)
               for i in range(8)]
    for call in ringing[:7]:
        live.under_way(call.rows)
    live.sync()
    tab.page.wait_for_function("() => document.querySelectorAll('#now .now-call').length == 7")
    visible = "() => [...document.querySelectorAll('#now .now-call')].filter(e => e.offsetParent).length"
    assert tab.page.evaluate(visible) == 6
    tab.page.click("#now .more-now")
    assert tab.page.evaluate(visible) == 7
    live.under_way(ringing[7].rows)                     # an update keeps it unfolded
    live.sync()
    tab.page.wait_for_function("() => document.querySelectorAll('#now .now-call').length == 8")
    assert tab.page.evaluate(visible) == 8
    assert tab.page.locator("#now .more-now").inner_text() == "Show fewer"
    live.move([row for call in ringing for row in call.rows])
    live.sync()
    tab.page.locator("#now").wait_for(state="hidden")
    assert not tab.errors, tab.errors
    tab.context.close()
