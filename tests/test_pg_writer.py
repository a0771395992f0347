"""The writer on PostgreSQL (issue 22): the demo PBX's history synced into a central module.db
gives the same calls, legs, employees, numbers, names and counters as into SQLite — in one
batch, by the daemon, and after calls are deleted. (Many batches, shuffled arrivals, worker
processes and `kill -9` run on both engines in tests/test_sync_properties.py and
tests/test_sync_faults.py.)

Each test writes into a fresh schema of the session's real PostgreSQL server (pg_schema_url).
"""
from __future__ import annotations

import logging
import re
import shutil
import sqlite3
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from cli import main
from daemon.locks import AlreadyRunning, CentralLock
from daemon.resident import Daemon
from daemon.sync import Sync, SyncOptions
from mirror.database import open_module_db
from mirror.deletions import delete_call
from mirror.dialect import run
from mirror.hangups import CallHangup
from mirror.pbxtime import PbxClock
from mirror.settings import load
from mirror.stamps import LINK_REACH, REACH
from mirror.store import Store
from pbx.cdr import CdrSource
from pbx.config import read_pbx_config
from pbx.recording_files import RecordingFiles
from tests.mirror import append_rows, dump, dump_db, rollups_off, sync_once
from tests.pbxfixture import DID, Pbx
from tests.test_in_progress import IVR_QUEUE_ANSWERED, move, under_way
from tests.test_pg_schema import password

SEPTEMBER_2024 = 1_725_148_800_000       # 2024-09-01 00:00 UTC
OCTOBER_2024 = 1_727_740_800_000         # 2024-10-01 00:00 UTC


def test_sync_once_mirrors_the_demo_pbx_as_sqlite_does(demo_pbx, demo_reference, pg_schema_url):
    assert main(["sync", "--cdr-db", str(demo_pbx / "cdr.db"), "--pbx-db",
                 str(demo_pbx / "mikopbx.db"), "--db", pg_schema_url, "--once"]) == 0
    mirrored = dump(pg_schema_url)
    reference = demo_reference["dump"]
    assert mirrored["rollups_off"] == []
    for part in ("calls", "legs", "employees", "numbers", "names"):
        assert mirrored[part] == reference[part], part
    assert len(mirrored["calls"]) > 1000


def test_calls_in_progress_and_sync_state_are_kept_as_on_sqlite(demo_pbx, pg_schema_url,
                                                                tmp_path):
    """What the pages read beside the calls: the calls in progress, the cursor, the
    revision, the directory."""
    cdr = tmp_path / "cdr.db"
    shutil.copy(demo_pbx / "cdr.db", cdr)
    with sqlite3.connect(cdr) as conn:           # the last two calls are still going on
        columns = ", ".join(column for (column,) in conn.execute(
            "SELECT name FROM pragma_table_info('cdr') WHERE name <> 'id'"))
        going_on = ("linkedid IN (SELECT linkedid FROM cdr_general ORDER BY id DESC LIMIT 2)")
        conn.execute(f"INSERT INTO cdr ({columns}) SELECT {columns} FROM cdr_general "
                     f"WHERE {going_on}")
        conn.execute(f"DELETE FROM cdr_general WHERE {going_on}")
    kept = {}
    for target in (tmp_path / "module.db", pg_schema_url):
        assert main(["sync", "--cdr-db", str(cdr), "--pbx-db",
                     str(demo_pbx / "mikopbx.db"), "--db", str(target), "--once"]) == 0
        db = open_module_db(target, readonly=True)
        try:
            kept[str(target)] = [
                [tuple(row) for row in run(db, f"SELECT * FROM {table} ORDER BY 1, 2")]
                for table in ("live_call", "sync_state", "employee", "group_member")]
        finally:
            db.close()
    on_sqlite, on_postgresql = kept.values()
    assert on_sqlite[0], "the demo has calls in progress"
    # PostgreSQL's own: where calls are (its month partitions, mirror.stamps)
    where = dict(row for row in on_postgresql[1] if row[0] in (REACH, LINK_REACH))
    assert int(where[REACH]) >= 0 and int(where[LINK_REACH]) > 0
    on_postgresql[1] = [row for row in on_postgresql[1] if row[0] not in where]
    assert on_postgresql == on_sqlite


def test_calls_go_to_the_partitions_of_their_months(demo_pbx, pg_schema_url):
    sync_once(demo_pbx / "cdr.db", demo_pbx / "mikopbx.db", pg_schema_url, workers=1)
    db = open_module_db(pg_schema_url, readonly=True)
    try:
        months = dict(run(db, "SELECT tableoid::regclass::text, count(*) FROM call GROUP BY 1"))
        first, last = run(db, "SELECT min(start_ms), max(start_ms) FROM call").fetchone()
        state = dict(run(db, "SELECT key, value FROM sync_state"))
    finally:
        db.close()
    assert set(months) >= {"call_2024_10"}
    assert sum(months.values()) == len(dump(pg_schema_url)["calls"])
    assert int(state["cursor"]) > 0 and int(state["revision"]) > 0
    assert first < OCTOBER_2024 or "call_2024_09" not in months


def test_a_call_whose_start_moved_moves_to_its_new_month(demo_pbx, demo_reference,
                                                         pg_schema_url, tmp_path):
    """The PBX rewrites a row (here: its first leg starts a month earlier): the call moves to
    the partition of its new month, once, with its counters."""
    cols, rows = demo_reference["rows"]
    cdr = tmp_path / "cdr.db"
    append_rows(cdr, cols, rows)
    sync_once(cdr, demo_pbx / "mikopbx.db", pg_schema_url, workers=1)
    start = cols.index("start")
    linkedid = rows[0][cols.index("linkedid")]
    moved = rows[0][start].replace("2024-10", "2024-09", 1)
    assert moved != rows[0][start]
    with sqlite3.connect(cdr) as conn:
        conn.execute("UPDATE cdr_general SET start = ? WHERE id = 1", (moved,))
    db = open_module_db(pg_schema_url)
    try:
        config = read_pbx_config(demo_pbx / "mikopbx.db")
        Sync(Store(db), CdrSource(cdr), config, PbxClock(config.timezone or "UTC")
             ).refresh([linkedid])
        where = dict(run(db, "SELECT tableoid::regclass::text, count(*) FROM call "
                             "WHERE linkedid = ? GROUP BY 1", (linkedid,)))
        assert where == {"call_2024_09": 1}
        assert dump_db(db)["rollups_off"] == []
    finally:
        db.close()


def test_deletions_stay_deleted_and_relink_callbacks_as_on_sqlite(demo_pbx, pg_schema_url,
                                                                  tmp_path):
    """`extcdr delete`'s deletion of calls (one returned a missed call) on both engines, then
    the daemon's pass that re-links around them and a whole resync: the same mirror, its
    counters exact, the deleted calls not back."""
    copy = shutil.copytree(demo_pbx, tmp_path / "pbx")    # deleting calls deletes their files
    cdr, pbx = copy / "cdr.db", copy / "mikopbx.db"
    files = RecordingFiles(copy / "monitor", "/storage/usbdisk1/mikopbx/astspool/monitor")
    mirrors = {}
    for target in (tmp_path / "module.db", pg_schema_url):
        sync_once(cdr, pbx, target, workers=1)
        db = open_module_db(target)
        try:
            callback = run(db, "SELECT returned_by FROM call WHERE status = 'missed' AND "
                               "returned_by IS NOT NULL ORDER BY linkedid LIMIT 1").fetchone()[0]
            doomed = [callback] + [linkedid for (linkedid,) in run(
                db, "SELECT linkedid FROM call ORDER BY linkedid DESC LIMIT 5")]
            for linkedid in doomed:
                delete_call(db, linkedid, "admin", "test", 0, files.locate)
            assert rollups_off(db) == []
            returned = run(db, "SELECT count(*) FROM call WHERE returned_by = ?",
                           (callback,)).fetchone()[0]
        finally:
            db.close()
        assert returned == 1                     # until the daemon re-links around it
        sync_once(cdr, pbx, target, workers=1)
        db = open_module_db(target)
        try:
            run(db, "UPDATE sync_state SET value = '0' WHERE key = 'cursor'")
        finally:
            db.close()
        sync_once(cdr, pbx, target, workers=1)   # a whole resync: deleted calls stay deleted
        mirrors[target] = dump(target)
        linkedids = {call[0] for call in mirrors[target]["calls"]}
        assert linkedids.isdisjoint(doomed)
        assert callback not in {call[24] for call in mirrors[target]["calls"]}
    on_sqlite, on_postgresql = mirrors.values()
    assert on_postgresql["rollups_off"] == [] == on_sqlite["rollups_off"]
    assert on_postgresql == on_sqlite


def test_the_daemon_mirrors_into_postgresql_step_by_step(demo_pbx, demo_reference,
                                                         pg_schema_url, tmp_path):
    """The resident loop on a central history: rows the PBX adds between steps, then the
    lock that keeps a second daemon off the same database."""
    cols, rows = demo_reference["rows"]
    cdr = tmp_path / "cdr.db"
    append_rows(cdr, cols, [])
    daemon = Daemon(load(None, {"pbx.cdr_db": cdr, "pbx.config_db": demo_pbx / "mikopbx.db",
                                "module.db": pg_schema_url, "ami.enabled": "false",
                                "sync.poll_interval": "30", "sync.debounce": "0.05"}))
    third = len(rows) // 3
    for step, now in enumerate((0.0, 30.0, 60.0)):
        append_rows(cdr, cols, rows[step * third:(step + 1) * third if step < 2 else None])
        daemon.step(now)
    daemon.db.close()
    assert dump(pg_schema_url) == demo_reference["dump"]
    with CentralLock(pg_schema_url):
        with pytest.raises(AlreadyRunning, match="another extcdr daemon is running on "
                                                 "postgresql://extcdr:\\*\\*\\*@"):
            with CentralLock(pg_schema_url):
                pass
    with CentralLock(pg_schema_url):          # released with its connection
        pass


def test_a_server_that_drops_the_daemon_mid_run_costs_a_retry_not_a_call(
        demo_pbx, demo_reference, pg_schema_url, pg_admin, tmp_path, caplog):
    """The server ends the daemon's session (a restart, a network cut): the step says so in
    one line, the next one connects again and nothing is lost."""
    caplog.set_level(logging.INFO, "extcdr")
    cols, rows = demo_reference["rows"]
    cdr = tmp_path / "cdr.db"
    append_rows(cdr, cols, rows[:len(rows) // 2])
    daemon = Daemon(load(None, {"pbx.cdr_db": cdr, "pbx.config_db": demo_pbx / "mikopbx.db",
                                "module.db": pg_schema_url, "ami.enabled": "false",
                                "sync.poll_interval": "30", "sync.debounce": "0.05"}))
    daemon.step(0.0)
    pg_admin.execute_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'extcdr' AND pid <> pg_backend_pid()")
    append_rows(cdr, cols, rows[len(rows) // 2:])
    daemon.step(30.0)
    complaints = [r.message for r in caplog.records if "module DB not written" in r.message]
    assert len(complaints) == 1 and "\n" not in complaints[0], complaints
    assert password(pg_schema_url) not in complaints[0]
    daemon.step(60.0)
    assert any("back to normal" in r.message for r in caplog.records)
    daemon.db.close()
    assert dump(pg_schema_url) == demo_reference["dump"]


def test_a_call_taken_back_while_it_goes_on_leaves_as_on_sqlite(tmp_path, capsys,
                                                                pg_schema_url):
    """A call mirrored too early (its next legs appear in the PBX's in-progress table) is
    taken back, counters and all, then mirrored once it ends: the same on both engines."""
    seen = {}
    for name, target in (("sqlite", tmp_path / "module.db"), ("postgresql", pg_schema_url)):
        pbx = Pbx(tmp_path / name, capsys)
        pbx.module_db = target
        call = pbx.build(IVR_QUEUE_ANSWERED, did=DID)
        ivr, *later = call.rows
        pbx.write([ivr])
        pbx.sync()
        too_early = dump(target)
        pbx.write(under_way(later), table="cdr")
        pbx.sync()
        taken_back = dump(target)
        move(pbx, later)
        pbx.sync()
        seen[name] = (too_early, taken_back, dump(target))
    too_early, taken_back, ended = seen["postgresql"]
    assert [c[4] for c in too_early["calls"]] == ["missed"]
    assert taken_back["calls"] == [] and taken_back["rollups_off"] == []
    assert [c[4] for c in ended["calls"]] == ["answered"] and ended["rollups_off"] == []
    assert seen["postgresql"] == seen["sqlite"]


def test_who_hung_up_is_kept_once_and_stamps_the_call(demo_pbx, pg_schema_url):
    """AMI's hangups on a central history: a call's first row stays, a repeat adds nothing,
    the mirrored call gets a new revision (open pages show it)."""
    sync_once(demo_pbx / "cdr.db", demo_pbx / "mikopbx.db", pg_schema_url, workers=1)
    db = open_module_db(pg_schema_url)
    try:
        linkedid, revision = run(db, "SELECT linkedid, revision FROM call ORDER BY linkedid "
                                     "LIMIT 1").fetchone()
        store = Store(db)
        first = CallHangup(linkedid, "client", "PJSIP/SIP-1", "79161234567", 16,
                           "Normal Clearing", 1_729_663_725_392)
        with store.batch():
            assert store.record_hangups([first, CallHangup("unknown-call", "us", "PJSIP/201",
                                                           "201", None, "", 1)]) == 2
        with store.batch():
            assert store.record_hangups([replace(first, side="us")]) == 0
        kept = run(db, "SELECT side, cause FROM call_hangup WHERE linkedid = ?",
                   (linkedid,)).fetchall()
        stamped = run(db, "SELECT revision FROM call WHERE linkedid = ?",
                      (linkedid,)).fetchone()[0]
    finally:
        db.close()
    assert [tuple(row) for row in kept] == [("client", 16)]
    assert stamped > revision


# --- where a batch looks (mirror.stamps) -----------------------------------------------------

_DAY_S = 86_400
_STAMPED = re.compile(r"(?<![0-9])([0-9]{9,})(?=\.)")


def _shifted(cols: list[str], rows: list[tuple], days: int) -> list[tuple]:
    """The rows `days` later: their times, and the moments in their ids (new ids)."""
    times = [cols.index(name) for name in ("start", "endtime", "answer")]
    ids = [cols.index(name) for name in ("UNIQUEID", "linkedid")]

    def moved(row: tuple) -> tuple:
        cells = list(row)
        for i in times:
            if cells[i]:
                at = datetime.fromisoformat(cells[i]) + timedelta(days=days)
                cells[i] = at.isoformat(sep=" ", timespec="milliseconds")
        for i in ids:
            cells[i] = _STAMPED.sub(lambda m: str(int(m.group(1)) + days * _DAY_S), cells[i])
        return tuple(cells)
    return [moved(row) for row in rows]


class _Watched(Store):
    """The writer, noting which month partitions each of its batches read (PostgreSQL's
    statistics of the transaction, taken just before it commits)."""

    def __init__(self, db):
        super().__init__(db)
        self.read: set[str] = set()

    @contextmanager
    def batch(self):
        with super().batch():
            before = self._scans()
            yield self
            self.read |= {name for name, scans in self._scans().items()
                          if scans > before.get(name, 0)}

    def _scans(self) -> dict[str, int]:
        return dict(run(self.db, "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
                                 "FROM pg_stat_xact_user_tables WHERE schemaname = "
                                 "current_schema() AND relname ~ '_[0-9]{4}_[0-9]{2}$'"))


def test_a_batch_reads_the_months_its_calls_can_be_in_not_every_month(
        demo_pbx, demo_reference, pg_schema_url, tmp_path):
    """A history of months (the demo's calls, and the same calls five months before), then its
    newest calls (a late leg of one of them in a batch of its own): their batches look calls and
    legs up in the partitions of their months only, not in every month's, and write the same
    calls as anywhere else."""
    cols, rows = demo_reference["rows"]
    linkedid = cols.index("linkedid")
    newest = {row[linkedid] for row in rows[-60:]}
    history = _shifted(cols, rows, days=-150) + [row for row in rows if row[linkedid] not in newest]
    later = [row for row in rows if row[linkedid] in newest]
    late_leg = max(range(len(later)), key=lambda i: later[i][cols.index("start")])
    cdr = tmp_path / "cdr.db"
    append_rows(cdr, cols, history)
    sync_once(cdr, demo_pbx / "mikopbx.db", pg_schema_url, workers=1)
    db = open_module_db(pg_schema_url)
    try:
        months_before = [name for (name,) in run(
            db, "SELECT DISTINCT tableoid::regclass::text FROM call WHERE start_ms < ?",
            (_ms(min(row[cols.index("start")] for row in rows)) - _DAY_S * 1000,))]
        config = read_pbx_config(demo_pbx / "mikopbx.db")
        store = _Watched(db)
        sync = Sync(store, CdrSource(cdr), config, PbxClock(config.timezone or "UTC"),
                    SyncOptions(workers=1))
        append_rows(cdr, cols, later[:late_leg] + later[late_leg + 1:])
        sync.catch_up()
        append_rows(cdr, cols, [later[late_leg]])
        sync.catch_up()
        found = run(db, "SELECT count(*), count(DISTINCT linkedid) FROM call").fetchone()
        assert dump_db(db)["rollups_off"] == []
    finally:
        db.close()
    assert months_before and store.read
    assert not {name.replace("leg_", "call_").replace("call_employee_", "call_")
                for name in store.read} & set(months_before), "the newest months only"
    assert found[0] == found[1] == 2 * len(demo_reference["dump"]["calls"])


def _ms(local: str) -> int:
    """A PBX time as ms (read as UTC: callers keep a day's margin for the PBX's timezone)."""
    return int(datetime.fromisoformat(local).replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_a_call_far_from_the_moment_in_its_id_is_found_in_its_month(
        demo_pbx, demo_reference, pg_schema_url, tmp_path):
    """A call whose id names a moment months before its legs (not how MikoPBX names calls,
    but a PBX may): its late leg, in a later batch, still joins it, once — also in a history
    written before the writer kept how far calls lie from their ids (measured then)."""
    cols, rows = demo_reference["rows"]
    linkedid = cols.index("linkedid")
    counts = Counter(row[linkedid] for row in rows)
    odd = next(row[linkedid] for row in rows if counts[row[linkedid]] >= 2)
    renamed = _STAMPED.sub(lambda m: str(int(m.group(1)) - 100 * _DAY_S), odd)
    rows = [row[:linkedid] + (renamed,) + row[linkedid + 1:] if row[linkedid] == odd else row
            for row in rows]
    last = max(i for i, row in enumerate(rows) if row[linkedid] == renamed)
    cdr = tmp_path / "cdr.db"
    append_rows(cdr, cols, rows[:last] + rows[last + 1:])
    sync_once(cdr, demo_pbx / "mikopbx.db", pg_schema_url, workers=1)
    db = open_module_db(pg_schema_url)
    try:
        reach = int(run(db, "SELECT value FROM sync_state WHERE key = ?", (REACH,)).fetchone()[0])
        assert reach >= 99 * _DAY_S * 1000
        run(db, "DELETE FROM sync_state WHERE key = ?", (REACH,))    # as an older writer left it
    finally:
        db.close()
    append_rows(cdr, cols, [rows[last]])
    sync_once(cdr, demo_pbx / "mikopbx.db", pg_schema_url, workers=1)
    db = open_module_db(pg_schema_url, readonly=True)
    try:
        assert run(db, "SELECT count(*), max(leg_count) FROM call WHERE linkedid = ?",
                   (renamed,)).fetchone() == (1, counts[odd])
        assert dump_db(db)["rollups_off"] == []
    finally:
        db.close()


def test_a_large_catch_up_ends_with_statistics_of_the_partitioned_tables(
        demo_pbx, demo_reference, pg_schema_url, tmp_path):
    """PostgreSQL's autovacuum analyses each month's partition, never the tables they are
    partitions of (whose statistics plan the queries of several months): a catch-up of
    `analyze_rows` rows or more ends by analysing those the pages read, a smaller one leaves
    them be."""
    cols, rows = demo_reference["rows"]
    cdr = tmp_path / "cdr.db"
    config = read_pbx_config(demo_pbx / "mikopbx.db")
    db = open_module_db(pg_schema_url)
    try:
        def catch_up(new_rows: list[tuple], analyze_rows: int) -> set[str]:
            append_rows(cdr, cols, new_rows)
            Sync(Store(db), CdrSource(cdr), config, PbxClock(config.timezone or "UTC"),
                 SyncOptions(workers=1, analyze_rows=analyze_rows)).catch_up()
            return {table for (table,) in run(
                db, "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = "
                    "current_schema() AND tablename IN ('call', 'leg', 'call_employee')")}
        half = len(rows) // 2
        assert catch_up(rows[:half], analyze_rows=half + 1) == set()
        assert catch_up(rows[half:], analyze_rows=len(rows) - half) == {"call", "call_employee"}
    finally:
        db.close()
