"""Analytics' six reports: the figures summed from the rollups equal the same figures summed
from the calls — over random periods (whole days, partial hours, half hours, the DST fall-back
day), filters and service levels, and after deletions, late legs, a resync and a late callback;
a half-hour timezone, a restricted operator, and a small history checked by hand."""
from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import replace
from datetime import date, timedelta

import pytest

from mirror.analytics import GRAINS, REPORTS, Options, build_report
from mirror.calls import DIRECTIONS, STATUSES
from mirror.database import open_module_db
from mirror.deletions import delete_call
from mirror.pbxtime import PbxClock
from mirror.queries import CallFilter, Visibility, calls_query
from mirror.rollups import DAY_MS, HOUR_MS
from mirror.schema import CALL_MENUS, CALL_QUEUES
from pbx.recording_files import RecordingFiles
from tests.mirror import append_rows, dump, mirrored_demo, pbx_rows, rollups_off, sync_once
from tests.pbxfixture import DID, Pbx

BERLIN = PbxClock("Europe/Berlin")
KOLKATA = PbxClock("Asia/Kolkata")            # UTC+05:30 all year
WRITTEN_AS = "/storage/usbdisk1/mikopbx/astspool/monitor"
DST_DAY = date(2024, 10, 27)                  # Berlin falls back: a 25-hour day


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("analytics-pbx")
    mirrored_demo(out, 8000, seed=43)
    return out


def both_ways(name: str, f: CallFilter, db, clock, options: Options) -> tuple[dict, str]:
    """The report from the rollups (auto) and from the calls: the same figures, or fail; returns
    them (without `source`) and where the auto path took them from."""
    auto = build_report(name, f, db, clock, options).as_json()
    counted = build_report(name, f, db, clock, replace(options, source="calls")).as_json()
    assert counted.pop("source") == "calls"
    origin = auto.pop("source")
    assert auto == counted, (name, f, options)
    return auto, origin


def whole_slot_inside(start_ms: int, end_ms: int, grain_ms: int) -> bool:
    return -(-start_ms // grain_ms) < end_ms // grain_ms


def expected_origin(name: str, f: CallFilter) -> str:
    """Where the auto path must take a report from: the rollups whenever the period holds a
    whole slot of its rollups (traffic: an hour, this period and the one before; the others: a
    UTC day) and the rollups' keys answer the filter."""
    if name == "traffic":
        span = f.end_ms - f.start_ms
        whole = (whole_slot_inside(f.start_ms, f.end_ms, HOUR_MS)
                 and whole_slot_inside(f.start_ms - span, f.start_ms, HOUR_MS))
        # the hourly rollups keep no handled marks, which `unreturned` leaves out
        return "rollups" if whole and not f.unreturned else "calls"
    answerable = not f.statuses and not f.unreturned       # the daily rollups keep no status
    return "rollups" if answerable and whole_slot_inside(f.start_ms, f.end_ms, DAY_MS) else "calls"


def random_periods(rng: random.Random, low: int, high: int, n: int) -> list[tuple[int, int]]:
    """Whole local days (one, a week, a month), the DST day and the day before, random
    bounds (partial hours), bounds on a half hour, short and long."""
    periods = [tuple(s * 1000 for s in BERLIN.local_day_bounds(day))
               for day in (DST_DAY, DST_DAY - timedelta(days=1))]
    periods.append((low - HOUR_MS, high + HOUR_MS))
    first_day, last_day = (BERLIN.to_local(ms / 1000).date() for ms in (low, high))
    while len(periods) < n:
        kind = rng.choice(("days", "random", "half hours", "short"))
        if kind == "days":
            day = first_day + timedelta(days=rng.randrange((last_day - first_day).days + 1))
            days = rng.choice((1, 1, 2, 7, 31))
            periods.append((BERLIN.local_day_bounds(day)[0] * 1000,
                            BERLIN.local_day_bounds(day + timedelta(days=days - 1))[1] * 1000))
            continue
        a, b = sorted(rng.randrange(low - HOUR_MS, high + HOUR_MS) for _ in range(2))
        if kind == "half hours":
            a, b = a - a % 1_800_000, b - b % 1_800_000 + 1_800_000
        elif kind == "short":
            b = a + rng.randrange(60_000, 3 * HOUR_MS)
        periods.append((a, max(b, a + 1)))
    return periods


def random_filter(rng: random.Random, start: int, end: int) -> CallFilter:
    return CallFilter(start_ms=start, end_ms=end,
                      directions=rng.sample(DIRECTIONS, rng.choice((0, 0, 1, 2))),
                      statuses=rng.sample(STATUSES, 2) if rng.random() < 0.1 else [],
                      unreturned=rng.random() < 0.05)


def random_options(rng: random.Random) -> Options:
    return Options(grain=rng.choice(GRAINS), service_level_s=rng.choice((0, 5, 15, 20, 30, 60,
                                                                         3600)))


def test_every_report_is_the_same_from_the_rollups_and_from_the_calls(demo):
    db = open_module_db(demo / "module.db", readonly=True)
    rng = random.Random(20)
    try:
        low, high = db.execute_sql("SELECT min(start_ms), max(start_ms) FROM call").fetchone()
        origins, figures = Counter(), 0
        for start, end in random_periods(rng, low, high, 200):
            f, options = random_filter(rng, start, end), random_options(rng)
            for name in REPORTS:
                report, origin = both_ways(name, f, db, BERLIN, options)
                assert origin == expected_origin(name, f), (name, f)
                origins[origin] += 1
                figures += bool(report["rows"] and any(
                    v for row in report["rows"] for v in row.values() if isinstance(v, int)))
        assert origins["rollups"] > 400 and origins["calls"] > 100, origins
        assert figures > 500, "most cases should count something"
    finally:
        db.close()


# --- the same after the history changes ---------------------------------------------------------

def check_all(db_path, seed: int, periods: int = 12) -> None:
    """The rollups match the calls, and every report is the same both ways (random periods)."""
    with sqlite3.connect(db_path) as conn:
        assert rollups_off(conn) == []
    db = open_module_db(db_path, readonly=True)
    rng = random.Random(seed)
    try:
        low, high = db.execute_sql("SELECT min(start_ms), max(start_ms) FROM call").fetchone()
        for start, end in random_periods(rng, low, high, periods):
            f, options = random_filter(rng, start, end), random_options(rng)
            for name in REPORTS:
                both_ways(name, f, db, BERLIN, options)
    finally:
        db.close()


def whole_history(db) -> CallFilter:
    low, high = db.execute_sql("SELECT min(start_ms), max(start_ms) FROM call").fetchone()
    return CallFilter(start_ms=low - DAY_MS, end_ms=high + DAY_MS)


def report(db_path, name: str) -> dict:
    db = open_module_db(db_path, readonly=True)
    try:
        return build_report(name, whole_history(db), db, BERLIN).as_json()
    finally:
        db.close()


@pytest.fixture(scope="module")
def changing(demo, tmp_path_factory):
    """A mirror of the demo PBX's legs but some, held back to arrive later: the legs of calls
    that return missed calls, and the last leg of a few calls of several legs."""
    cols, rows = pbx_rows(demo / "cdr.db")
    with sqlite3.connect(demo / "module.db") as conn:
        callbacks = [row[0] for row in conn.execute(
            "SELECT DISTINCT returned_by FROM call WHERE returned_by IS NOT NULL "
            "ORDER BY returned_by LIMIT 3")]
        several = [row[0] for row in conn.execute(
            "SELECT linkedid FROM call WHERE leg_count >= 3 AND linkedid NOT IN "
            f"({','.join('?' * len(callbacks))}) ORDER BY linkedid LIMIT 4", callbacks)]
    linked, start, uniqueid = (cols.index(c) for c in ("linkedid", "start", "UNIQUEID"))
    late_legs = [max((r for r in rows if r[linked] == lid), key=lambda r: (r[start], r[uniqueid]))
                 for lid in several]
    late_callbacks = [r for r in rows if r[linked] in callbacks]
    assert callbacks and len(several) == 4
    out = tmp_path_factory.mktemp("analytics-changing")
    append_rows(out / "cdr.db", cols, [r for r in rows
                                       if r not in late_legs and r not in late_callbacks])
    sync_once(out / "cdr.db", demo / "mikopbx.db", out / "module.db")
    return {"dir": out, "db": out / "module.db", "cdr": out / "cdr.db", "cols": cols,
            "pbx": demo / "mikopbx.db", "whole": demo / "module.db", "callbacks": callbacks,
            "late_legs": late_legs, "late_callbacks": late_callbacks}


def test_late_callbacks_and_late_legs_change_the_figures_the_same_both_ways(changing):
    db_path, callbacks = changing["db"], changing["callbacks"]
    returned_by_them = (f"SELECT count(*), min(returned_after_s) FROM call WHERE returned_by IN "
                        f"({','.join('?' * len(callbacks))})")
    check_all(db_path, seed=1)
    before = report(db_path, "callbacks")["totals"]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute(returned_by_them, callbacks).fetchone()[0] == 0
    append_rows(changing["cdr"], changing["cols"], changing["late_callbacks"])
    sync_once(changing["cdr"], changing["pbx"], db_path)
    check_all(db_path, seed=2)
    after = report(db_path, "callbacks")["totals"]
    with sqlite3.connect(db_path) as conn:
        returned, soonest = conn.execute(returned_by_them, callbacks).fetchone()
    assert returned >= len(callbacks) and soonest is not None
    # The missed calls they return left "not called back" for the bands of the time it took.
    assert after["called_back"] - before["called_back"] == returned
    assert before["unreturned"] - after["unreturned"] == returned
    assert after["missed"] == before["missed"]
    assert after["median_callback_s"] is not None

    append_rows(changing["cdr"], changing["cols"], changing["late_legs"])
    sync_once(changing["cdr"], changing["pbx"], db_path)
    check_all(db_path, seed=3)
    # Every leg has come: the calls are those of the mirror that had them all at once.
    assert dump(db_path)["calls"] == dump(changing["whole"])["calls"]


def test_deleting_calls_and_a_resync_keep_the_figures_the_same_both_ways(changing):
    db_path = changing["db"]
    db = open_module_db(db_path)
    try:
        doomed = [row[0] for row in db.execute_sql(
            "SELECT linkedid FROM call ORDER BY id DESC LIMIT 4")]
        doomed += [row[0] for row in db.execute_sql(       # a callback: its missed call reopens
            "SELECT returned_by FROM call WHERE returned_by IS NOT NULL LIMIT 1")]
        doomed += [row[0] for row in db.execute_sql(       # through a queue, and a menu
            "SELECT linkedid FROM call WHERE queue IS NOT NULL OR ivr IS NOT NULL LIMIT 2")]
        files = RecordingFiles(changing["dir"] / "monitor", WRITTEN_AS)
        before = report(db_path, "employees")["totals"]
        for linkedid in dict.fromkeys(doomed):
            delete_call(db, linkedid, "admin", "test", 0, files.locate)
    finally:
        db.close()
    check_all(db_path, seed=4)
    assert report(db_path, "employees")["totals"] != before
    sync_once(changing["cdr"], changing["pbx"], db_path)     # re-links callbacks
    check_all(db_path, seed=5)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE sync_state SET value = '0' WHERE key = 'cursor'")
    sync_once(changing["cdr"], changing["pbx"], db_path)     # a whole resync
    check_all(db_path, seed=6)


# --- a timezone with a half-hour offset ---------------------------------------------------------

def test_the_heat_map_in_a_half_hour_timezone_is_the_calls_by_local_hour(demo):
    db = open_module_db(demo / "module.db", readonly=True)
    try:
        low, high = db.execute_sql("SELECT min(start_ms), max(start_ms) FROM call").fetchone()
        first = KOLKATA.to_local(low / 1000).date()
        periods = [(KOLKATA.local_day_bounds(first)[0] * 1000,
                    KOLKATA.local_day_bounds(first + timedelta(days=n))[1] * 1000)
                   for n in (0, 6, 30, 400)]
        periods.append((low + 1_800_000 + 123, high - 7 * 60_000))
        for start, end in periods:
            f = CallFilter(start_ms=start, end_ms=end)
            heat = [[0] * 24 for _ in range(7)]
            for call in calls_query(f, db):
                local = KOLKATA.to_local(call.start_ms / 1000)
                heat[local.weekday()][local.hour] += 1
            traffic, _ = both_ways("traffic", f, db, KOLKATA, Options())
            assert traffic["heatmap"]["values"] == heat
            assert traffic["totals"]["calls"] == calls_query(f, db).count() > 0
            for name in REPORTS:
                both_ways(name, f, db, KOLKATA, Options(service_level_s=30))
    finally:
        db.close()


# --- a restricted operator -------------------------------------------------------------------

def test_an_operator_counts_only_the_calls_their_extension_took_part_in(demo):
    db = open_module_db(demo / "module.db", readonly=True)
    try:
        everyone = whole_history(db)
        admin = {name: build_report(name, everyone, db, BERLIN) for name in REPORTS}
        seen = 0
        for extension in ("201", "202", "205"):
            f = replace(everyone, visible_to=Visibility.of("operator", [extension]))
            theirs = [c for c in calls_query(f, db)]
            assert theirs and all(extension in json.loads(c.employees) for c in theirs)
            reports = {}
            for name in REPORTS:
                reports[name], origin = both_ways(name, f, db, BERLIN, Options())
                assert origin == "calls"           # the rollups do not know who may see what
            totals = {name: r["totals"] for name, r in reports.items()}
            assert totals["traffic"]["calls"] == len(theirs)
            assert totals["traffic"]["missed"] == sum(c.status == "missed" for c in theirs)
            assert [r["extension"] for r in reports["employees"]["rows"]] == [extension]
            # Their own row: every call that counts on it is one they took part in.
            mine = next(r for r in admin["employees"].rows if r["extension"] == extension)
            assert reports["employees"]["rows"][0] == mine
            external = [c for c in theirs if c.direction != "internal"]
            assert (totals["lines"]["incoming"] + totals["lines"]["outgoing"]) == len(external)
            assert totals["queues"]["offered"] == sum(c.queue is not None for c in theirs)
            assert totals["menus"]["calls"] == sum(c.ivr is not None for c in theirs)
            assert totals["callbacks"]["missed"] == sum(c.status == "missed" for c in theirs)
            assert totals["traffic"]["calls"] < admin["traffic"].totals["calls"]
            seen += len(theirs)
        assert seen > 50
    finally:
        db.close()


# --- a small history, checked by hand -----------------------------------------------------------

MOSCOW = PbxClock("Europe/Moscow")
# A week apart: each report's period (the local day before to the day after) holds one.
QUEUE_DAY, MENU_DAY, CALLBACK_DAY = date(2024, 3, 5), date(2024, 3, 12), date(2024, 3, 19)


def hms(seconds: int) -> str:
    """Seconds after local midnight as the fixture's `HH:MM:SS` cell."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def queue_call(pbx: Pbx, at: int, wait_s: int, answered: bool, caller: str) -> None:
    """At `at` (seconds of the day) a caller waits `wait_s` seconds in queue 2000, which rings
    201; then 201 answers (and talks 5 minutes), or the caller hangs up."""
    t0, t1 = hms(at), hms(at + wait_s)
    if answered:
        pbx.call(f"""
            start | answer | end                | src      | dst  | dialstatus
            {t0}  | {t1}   | {t1}               | {caller} | 2000 | ANSWER
            {t0}  | {t1}   | {hms(at + wait_s + 300)} | {caller} | 201  | ANSWER
            """, day=QUEUE_DAY.isoformat(), did=DID)
    else:
        pbx.call(f"""
            start | end  | src      | dst  | dialstatus
            {t0}  | {t1} | {caller} | 2000 | NOANSWER
            {t0}  | {t1} | {caller} | 201  | CANCEL
            """, day=QUEUE_DAY.isoformat(), did=DID)


def menu_call(pbx: Pbx, at: int, digits: str, caller: str) -> None:
    """A caller hears menu 2020 for 10 s and presses `digits` (then 203 answers), or hangs
    up there pressing nothing."""
    then = "" if not digits else (
        f"{hms(at + 10)} | {hms(at + 15)} | {hms(at + 120)} | {caller} | 203 | ANSWER | ''")
    pbx.call(f"""
        start     | answer    | end            | src      | dst  | dialstatus | dtmf_digits
        {hms(at)} | {hms(at)} | {hms(at + 10)} | {caller} | 2020 | ANSWER     | {digits or "''"}
        {then}
        """, day=MENU_DAY.isoformat(), did=DID)


def missed_and_returned(pbx: Pbx, at: int, after_s: int | None, number: str) -> None:
    """A missed call (30 s ringing 201) from `number`, returned by 202 `after_s` seconds after
    it ended; or never (`None`): 202 tries once, 10 minutes later, and nobody answers."""
    day = CALLBACK_DAY.isoformat()
    pbx.call(f"""
        start     | end            | src       | dst | dialstatus
        {hms(at)} | {hms(at + 30)} | +{number} | 201 | NOANSWER
        """, day=day, did=DID)
    back = at + 30 + (600 if after_s is None else after_s)
    if after_s is None:
        pbx.call(f"""
            start       | end              | src | dst      | dialstatus
            {hms(back)} | {hms(back + 20)} | 202 | {number} | NOANSWER
            """, day=day)
    else:
        pbx.call(f"""
            start       | answer      | end              | src | dst
            {hms(back)} | {hms(back)} | {hms(back + 60)} | 202 | {number}
            """, day=day)


def around(day: date) -> CallFilter:
    """The local day before to the day after: a whole UTC day inside, for the rollups."""
    start = MOSCOW.local_day_bounds(day - timedelta(days=1))[0]
    end = MOSCOW.local_day_bounds(day + timedelta(days=1))[1]
    return CallFilter(start_ms=start * 1000, end_ms=end * 1000)


def hand_checked_report(pbx: Pbx, name: str, day: date, **options) -> dict:
    db = open_module_db(pbx.module_db, readonly=True)
    try:
        figures, origin = both_ways(name, around(day), db, MOSCOW, Options(**options))
        assert origin == "rollups"
        return figures
    finally:
        db.close()


@pytest.fixture
def small(tmp_path, capsys):
    pbx = Pbx(tmp_path / "pbx", capsys)
    # Queue 2000: ten answered callers who waited 3..48 s (5 s apart), two who gave up.
    for i in range(10):
        queue_call(pbx, 9 * 3600 + i * 600, 3 + 5 * i, True, f"+7903555{i:04d}")
    queue_call(pbx, 12 * 3600, 40, False, "+79035559998")
    queue_call(pbx, 12 * 3600 + 600, 70, False, "+79035559999")
    # Menu 2020: options 1, 1, 2, and a caller who hung up there.
    for i, digits in enumerate(("1", "1", "2", "")):
        menu_call(pbx, 10 * 3600 + i * 600, digits, f"+7905111000{i}")
    # Missed calls returned 3 min 20 s, 10 min and 70 min after; one never (one attempt).
    for i, after_s in enumerate((200, 600, 4200, None)):
        missed_and_returned(pbx, (9 + 2 * i) * 3600, after_s, f"7916222000{i}")
    pbx.sync()
    return pbx


def test_figures_of_a_small_history_checked_by_hand(small):
    queues = hand_checked_report(small, "queues", QUEUE_DAY, service_level_s=20)
    (row,) = queues["rows"]
    waits = [3 + 5 * i for i in range(10)]                   # 3, 8, ..., 48
    assert (row["queue"], row["offered"], row["answered"], row["abandoned"]) == ("2000", 12, 10, 2)
    assert row["answered_within"] == 4                         # 3, 8, 13, 18
    assert row["service_level"] == round(100 * 4 / 12, 1) == 33.3
    assert row["p90_wait_s"] == sorted(waits)[9 - 1] == 43      # nearest rank: the 9th of 10
    assert row["average_wait_s"] == round(sum(waits) / 10)
    assert row["average_abandon_s"] == (40 + 70) // 2
    assert row["answered_by"] == "201 Иван Петров (10)"
    strict = hand_checked_report(small, "queues", QUEUE_DAY, service_level_s=3)
    assert strict["rows"][0]["answered_within"] == 1

    menus = hand_checked_report(small, "menus", MENU_DAY)
    assert [(r["menu"], r["option"], r["calls"], r["answered"], r["left_in_menu"])
            for r in menus["rows"]] == [("2020", "", 1, 0, 1), ("2020", "1", 2, 2, 0),
                                        ("2020", "2", 1, 1, 0)]

    callbacks = hand_checked_report(small, "callbacks", CALLBACK_DAY)
    totals = callbacks["totals"]
    assert (totals["missed"], totals["called_back"], totals["unreturned"]) == (4, 3, 1)
    assert totals["attempts_unreturned"] == 1
    assert totals["callback_rate"] == 75.0
    assert totals["median_callback_s"] == 600     # minutes 3, 10, 70: the 2nd, in whole minutes
    bands = {b["band"]: b["calls"] for b in callbacks["rows"]}
    assert bands == {"Within 5 min": 1, "5 to 15 min": 1, "15 to 60 min": 0, "1 to 4 hours": 1,
                     "4 to 24 hours": 0, "Later": 0, "Not called back": 1}


def test_each_calls_queue_and_menu_are_what_the_migrations_work_out_from_its_legs(demo_mirror,
                                                                                 tmp_path):
    """The queue, the wait there, the first menu, its digits and whether the caller left in
    it, as the classifier writes them, are what migrations 10 and 13 work out in SQL from the
    call's legs: an upgraded mirror and one synced afresh agree."""
    db = tmp_path / "module.db"
    shutil.copy(demo_mirror, db)
    columns = "linkedid, queue, queue_wait_s, ivr, ivr_digits, ivr_left"
    with closing(sqlite3.connect(db)) as conn, conn:
        written = conn.execute(f"SELECT {columns} FROM call ORDER BY linkedid").fetchall()
        assert sum(row[1] is not None for row in written) > 50            # through a queue
        assert sum(row[3] is not None for row in written) > 50            # through a menu
        assert {row[5] for row in written} == {None, 0, 1}
        assert any(row[4] for row in written)                             # digits pressed
        conn.execute("UPDATE call SET queue = NULL, queue_wait_s = NULL, ivr = NULL, "
                     "ivr_digits = NULL, ivr_left = NULL")
        conn.execute(CALL_QUEUES.format(table="call", calls="true"))
        conn.execute(CALL_MENUS.format(table="call", calls="true"))
        assert conn.execute(f"SELECT {columns} FROM call ORDER BY linkedid").fetchall() == written
