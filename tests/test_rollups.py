"""The hourly counters (`call_rollup`): kept exact by the writer whoever changes a call, and the
page's tab counters read from them equal the calls counted one by one — for random periods
(partial hours, half-hour offsets, the DST fall-back day) and filters."""
import random
import sqlite3
from dataclasses import replace
from datetime import date

import pytest

from mirror.analytics import tab_counts
from mirror.calls import DIRECTIONS, STATUSES
from mirror.database import open_module_db
from mirror.deletions import delete_call
from mirror.pbxtime import PbxClock
from mirror.queries import (TABS, CallFilter, Visibility, call_filter, calls_query,
                            counted_by_the_hour)
from pbx.recording_files import RecordingFiles
from tests.mirror import mirrored_demo, rollups_off, sync_once

BERLIN = PbxClock("Europe/Berlin")
WRITTEN_AS = "/storage/usbdisk1/mikopbx/astspool/monitor"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    out = tmp_path_factory.mktemp("rollups-pbx")
    mirrored_demo(out, 500, seed=31)
    return out


def counted_one_by_one(f: CallFilter, db) -> dict[str, int]:
    counts = dict.fromkeys(TABS, 0)
    for call in calls_query(replace(f, tab="all"), db):
        counts["all"] += 1
        counts[call.direction] += 1
        counts["missed"] += call.status == "missed"
        counts["unreturned"] += call.status == "missed" and call.returned_by is None
    return counts


def test_the_checker_can_fail(pbx):
    conn = sqlite3.connect(pbx / "module.db")
    try:
        assert rollups_off(conn) == []
        conn.execute("UPDATE call_rollup SET calls = calls + 1 WHERE (hour, direction, status, "
                     "unreturned) = (SELECT hour, direction, status, unreturned FROM call_rollup "
                     "LIMIT 1)")
        assert len(rollups_off(conn)) == 1
    finally:
        conn.rollback()
        conn.close()


def test_the_counters_stay_exact_through_deletes_relinks_and_a_resync(pbx):
    db = open_module_db(pbx / "module.db")
    try:
        missed_returned = db.execute_sql(
            "SELECT returned_by FROM call WHERE status = 'missed' AND returned_by IS NOT NULL "
            "LIMIT 1").fetchone()
        doomed = [row[0] for row in db.execute_sql(
            "SELECT linkedid FROM call ORDER BY id DESC LIMIT 5")]
        if missed_returned:            # deleting a callback makes its missed call unreturned
            doomed.append(missed_returned[0])
        files = RecordingFiles(pbx / "monitor", WRITTEN_AS)
        for linkedid in dict.fromkeys(doomed):
            delete_call(db, linkedid, "admin", "test", 0, files.locate)
        assert rollups_off(db.connection()) == []
    finally:
        db.close()
    sync_once(pbx / "cdr.db", pbx / "mikopbx.db", pbx / "module.db")     # re-links them
    with sqlite3.connect(pbx / "module.db") as conn:
        conn.execute("UPDATE sync_state SET value = '0' WHERE key = 'cursor'")
    sync_once(pbx / "cdr.db", pbx / "mikopbx.db", pbx / "module.db")     # a whole resync
    with sqlite3.connect(pbx / "module.db") as conn:
        assert rollups_off(conn) == []
        if missed_returned:
            assert conn.execute("SELECT returned_by FROM call WHERE returned_by = ?",
                                missed_returned).fetchone() is None


def test_tab_counters_from_the_hourly_counters_equal_the_calls_counted(pbx):
    """Random periods with random bounds (minutes, half hours, DST fall-back) and filters."""
    db = open_module_db(pbx / "module.db", readonly=True)
    rng = random.Random(5)
    low, high = db.execute_sql("SELECT min(start_ms), max(start_ms) FROM call").fetchone()
    try:
        periods = [(start * 1000, end * 1000) for start, end in (     # the 25-hour day too
            BERLIN.local_day_bounds(date(2024, 10, 27)), BERLIN.local_day_bounds(date(2024, 10, 26)))]
        for _ in range(150):
            a, b = sorted(rng.randrange(low - 3_600_000, high + 3_600_000) for _ in range(2))
            if rng.random() < 0.3:                            # on a half hour
                a -= a % 1_800_000
            periods.append((a, max(b, a + 1)))
        checked = 0
        for start, end in periods:
            f = CallFilter(start_ms=start, end_ms=end,
                           directions=rng.sample(DIRECTIONS, rng.choice([0, 0, 1, 2])),
                           statuses=rng.sample(STATUSES, rng.choice([0, 0, 1, 3])),
                           unreturned=rng.random() < 0.15, tab=rng.choice(list(TABS)))
            assert counted_by_the_hour(f)
            assert tab_counts(f, db) == counted_one_by_one(f, db), (start, end, f)
            checked += tab_counts(f, db)["all"] > 0
        assert checked > 50
        # What the counters do not count (a user's scope, a talk range…) is counted one by one.
        assert not counted_by_the_hour(CallFilter(start_ms=low, end_ms=high,
                                                  visible_to=Visibility(("201",))))
        assert not counted_by_the_hour(CallFilter(start_ms=low, end_ms=high, min_talk=5))
    finally:
        db.close()


def test_the_page_filter_of_a_named_period_is_counted_by_the_hour(pbx):
    db = open_module_db(pbx / "module.db", readonly=True)
    try:
        end = db.execute_sql("SELECT max(start_ms) FROM call").fetchone()[0] / 1000
        f = call_filter({"period": "this_month"}, BERLIN, end)
        plan = " ".join(row[3] for row in db.execute_sql(
            "EXPLAIN QUERY PLAN SELECT direction, status, unreturned, sum(calls) FROM "
            "call_rollup WHERE hour >= ? AND hour < ? GROUP BY 1, 2, 3", (1, 2)))
        assert "SEARCH call_rollup USING PRIMARY KEY (hour>? AND hour<?)" in plan, plan
        assert tab_counts(f, db) == counted_one_by_one(f, db)
    finally:
        db.close()
