"""Retention (issue 22): `history.keep_months` keeps the current month and the N before it;
older months go whole — on PostgreSQL their partitions dropped, on SQLite their calls deleted a
chunk per transaction — with the notes, events and counters of their calls, and do not come
back on a resync. The months kept are exactly what a mirror synced with the cutoff in place
from the start holds.

Real parts: a demo PBX's SQLite files (September and October 2024), SQLite mirrors, the
session's PostgreSQL, `extcdr` processes.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import date

import pytest

from cli import main
from daemon.resident import Daemon
from daemon.sync import Sync, SyncOptions
from i18n import RUSSIAN, say_error
from mirror import retention, webhooks
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.pbxtime import PbxClock
from mirror.rollups import ROLLUPS
from mirror.settings import load
from mirror.store import Store
from mirror.worklist import mark_handled
from pbx.cdr import CdrSource
from pbx.config import read_pbx_config
from tests.conftest import ROOT, run_extcdr, wait_for
from tests.mirror import dump, rollups_off
from tests.pbxfixture import Pbx
from tests.stack import serving
from tests.test_supervisor_groups import PREFIX, TOKEN, request
from web import create_app

SEPTEMBER_2024 = 1_725_148_800_000       # 2024-09-01 00:00 UTC
OCTOBER_2024 = 1_727_740_800_000         # 2024-10-01 00:00 UTC
MID_NOVEMBER_2024 = 1_731_628_800_000    # 2024-11-15 00:00 UTC: keeping 1 month keeps October


@pytest.fixture(scope="module")
def two_months(tmp_path_factory):
    """A demo PBX whose calls run from late September to 2 October 2024 (Berlin)."""
    from standin import demo
    out = tmp_path_factory.mktemp("two-months")
    demo.generate(out, 3_000, seed=11, end_day=date(2024, 10, 2), timezone="Europe/Berlin")
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """module.db on either engine."""
    if request.param == "sqlite":
        return tmp_path / "module.db"
    return request.getfixturevalue("pg_schema_url")


def writer(pbx, db, pbx_id: str = "") -> Sync:
    config = read_pbx_config(pbx / "mikopbx.db")
    return Sync(Store(db, pbx_id), CdrSource(pbx / "cdr.db"), config, PbxClock(config.timezone),
                SyncOptions(batch_rows=700))


def synced(pbx, target, *, keep_months: int = 0, pbx_id: str = "") -> None:
    """Sync `pbx` into `target` with the retention `keep_months` (applied mid-November)
    before the first row."""
    db = open_module_db(target)
    try:
        sync = writer(pbx, db, pbx_id)
        if keep_months:
            retention.set_keep_months(db, keep_months)
            sync.retain(MID_NOVEMBER_2024)
        sync.catch_up()
    finally:
        db.close()


def of_month(rows, lo: int, hi: int) -> list:
    return [row for row in rows if lo <= row[1] < hi]


def test_older_months_go_and_the_kept_are_as_if_never_mirrored(two_months, target, tmp_path):
    db = open_module_db(target)
    try:                # a CRM's hook older than the history: every call queues its events
        webhooks.create_hook(db, {"name": "CRM", "url": "http://127.0.0.1:9/hook",
                                  "events": '["missed", "answered"]', "filters": "{}",
                                  "unreturned_after_min": 30, "enabled": 1}, "anna", now_ms=0)
    finally:
        db.close()
    synced(two_months, target)
    db = open_module_db(target)
    try:
        september, october = (run(db, "SELECT linkedid FROM call WHERE start_ms >= ? "
                                      "AND start_ms < ? AND status = 'missed' "
                                      "AND returned_by IS NULL ORDER BY start_ms LIMIT 1", span
                                  ).fetchone()[0]
                              for span in ((SEPTEMBER_2024, OCTOBER_2024),
                                           (OCTOBER_2024, OCTOBER_2024 + 86_400_000)))
        for linkedid in (september, october):
            mark_handled(db, linkedid, "anna", "no answer", MID_NOVEMBER_2024)
            run(db, "INSERT INTO delivery (outbox_id, at_ms, status, duration_ms) SELECT id, 1, "
                    "200, 5 FROM outbox WHERE linkedid = ?", (linkedid,))
        full = dump_db_calls(db)
        assert of_month(full, SEPTEMBER_2024, OCTOBER_2024) and of_month(full, OCTOBER_2024,
                                                                         2 * 10**12)
    finally:
        db.close()
    for linkedid in (september, october):
        assert main(["comment", "--db", str(target), linkedid, "called about the invoice"]) == 0
        assert main(["tag", "--db", str(target), "--create", f"t{linkedid[-3:]}"]) == 0
        assert main(["tag", "--db", str(target), linkedid, "--add", f"t{linkedid[-3:]}"]) == 0

    db = open_module_db(target)
    try:
        sync = writer(two_months, db)
        retention.set_keep_months(db, 1)
        assert sync.retain(MID_NOVEMBER_2024 - 40 * 86_400_000).dropped == []   # October: none
        done = sync.retain(MID_NOVEMBER_2024)
        assert [month.name for month in done.dropped] == ["2024-09"]
        assert done.dropped[0].calls == len(of_month(full, SEPTEMBER_2024, OCTOBER_2024))
        assert done.cutoff_ms == OCTOBER_2024
        assert sync.retain(MID_NOVEMBER_2024).dropped == []                  # once
        notes = {linkedid: [run(db, f"SELECT count(*) FROM {table} WHERE linkedid = ?",
                                (linkedid,)).fetchone()[0]
                            for table in ("comment", "call_tag", "call_handled", "outbox")]
                 for linkedid in (september, october)}
        assert notes == {september: [0, 0, 0, 0], october: [1, 1, 1, 1]}
        assert run(db, "SELECT count(*) FROM outbox o JOIN call c ON c.linkedid = o.linkedid"
                   ).fetchone()[0] == run(db, "SELECT count(*) FROM outbox").fetchone()[0]
        assert run(db, "SELECT count(*) FROM delivery").fetchone()[0] == 1
        if target != tmp_path / "module.db":            # PostgreSQL: the month's tables went
            assert run(db, "SELECT relname FROM pg_class WHERE relname LIKE '%2024_09' "
                           "AND relnamespace = current_schema()::regnamespace").fetchall() == []
            assert run(db, "SELECT count(*) FROM pg_class WHERE relname IN "
                           "('call_2024_10', 'leg_2024_10', 'call_employee_2024_10') "
                           "AND relnamespace = current_schema()::regnamespace").fetchone()[0] == 3
    finally:
        db.close()

    reference = tmp_path / "reference.db"          # October synced with the cutoff in place
    synced(two_months, reference, keep_months=1)
    expected = dump(reference)
    kept = dump(target)
    assert kept["rollups_off"] == [] and expected["rollups_off"] == []
    for part in ("calls", "legs", "employees", "numbers", "names"):
        assert kept[part] == expected[part], part
    assert kept["calls"] and all(row[1] >= OCTOBER_2024 for row in kept["calls"])
    changed = [row for row in kept["calls"] if (row[0], row[1], row[4], row[23]) not in full]
    assert changed and all(row[23] is None for row in changed), "callbacks of dropped calls"

    db = open_module_db(target)              # a resync (a replaced PBX file) brings none back
    try:
        run(db, "UPDATE sync_state SET value = '0' WHERE key = 'cursor'")
        writer(two_months, db).catch_up()
        assert rollups_before(db, OCTOBER_2024) == 0
    finally:
        db.close()
    assert dump(target)["calls"] == kept["calls"]

    assert cli_calls(target, "--from", "2024-09-01", "--to", "2024-09-30") == ""
    october = cli_calls(target, "--from", "2024-09-01", "--to", "2024-10-02")
    assert len(october.splitlines()) == len(kept["calls"])
    assert without_notes(october) == without_notes(
        cli_calls(reference, "--from", "2024-09-01", "--to", "2024-10-02"))
    for args in (("--format", "summary", "--from", "2024-09-01", "--to", "2024-10-02"),):
        assert cli_calls(target, *args) == cli_calls(reference, *args)
    for report in ("employees", "callbacks", "traffic"):
        for period in (("2024-09-01", "2024-09-30"), ("2024-09-01", "2024-10-02")):
            assert stats_json(target, report, *period) == stats_json(reference, report, *period)


def without_notes(jsonl: str) -> list[dict]:
    """Call records but their notes (the kept October call has some, the reference none)."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("tags", "comments")}
            for line in jsonl.splitlines()]


def dump_db_calls(db) -> list[tuple]:
    return [tuple(row) for row in run(db, "SELECT linkedid, start_ms, status, callback_of "
                                          "FROM call ORDER BY linkedid")]


def rollups_before(db, before: int) -> int:
    """Rows of any counter before `before` (none once dropped)."""
    return sum(run(db, f"SELECT count(*) FROM {r.table} WHERE {r.slot} < ?",
                   (before // r.grain_ms,)).fetchone()[0] for r in ROLLUPS)


def cli_calls(target, *args) -> str:
    """`extcdr calls` (JSON lines unless `args` say otherwise), what a user reads."""
    code, out = extcdr("calls", "--db", str(target), "--format", "jsonl", "--limit", "100000",
                       *args)
    assert code == 0
    return out


def stats_json(target, report: str, day_from: str, day_to: str) -> dict:
    code, out = extcdr("stats", "--db", str(target), "--report", report, "--from", day_from,
                       "--to", day_to, "--format", "json")
    assert code == 0
    return json.loads(out)


def extcdr(*args: str) -> tuple[int, str]:
    code, out, _ = extcdr_run(*args)
    return code, out


def test_the_settings_page_keeps_the_months_and_refuses_what_is_not_a_number(two_months,
                                                                              target, tmp_path):
    synced(two_months, target)
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    app = create_app(load(config, {"module.db": target}))
    with serving(app, threads=2) as http:
        base = f"http://127.0.0.1:{http.effective_port}{PREFIX}"
        for typed in ("abc", "601", "-1", "1.5", "١"):
            status, body = request(base, "/settings/retention", user="anna", role="admin",
                                   data={"keep_months": typed})
            assert status == 400, typed
            assert b"months of history to keep must be a whole number from 1 to 600" in body
        status, _ = request(base, "/settings/retention", user="olga", role="supervisor",
                            data={"keep_months": "1"})
        assert status == 403
        status, _ = request(base, "/settings/retention", user="anna", role="admin",
                            data={"keep_months": " 1 "})
        assert status == 302
        status, body = request(base, "/settings", user="anna", role="admin")
        assert status == 200 and b'name="keep_months"' in body and b'value="1"' in body
        september = {"from": "2024-09-01", "to": "2024-09-30", "limit": 500}
        assert calls_of(base, september)
        assert page_of(base, "2024-09-01", "2024-09-30") > (500, 49)
        db = open_module_db(target)
        try:
            done = writer(two_months, db).retain(MID_NOVEMBER_2024)      # the daemon's hour
        finally:
            db.close()
        assert [month.name for month in done.dropped] == ["2024-09"]
        assert calls_of(base, september) == []
        assert page_of(base, "2024-09-01", "2024-09-30") == (0, 0)
        assert page_of(base, "2024-09-01", "2024-10-02") == (kept_calls(target), 50)
        status, body = request(base, "/api/v1/stats/traffic", user="anna", role="admin",
                               params={"from": "2024-09-01", "to": "2024-09-30"})
        assert status == 200 and json.loads(body)["totals"]["calls"] == 0
        status, _ = request(base, "/settings/retention", user="anna", role="admin",
                            data={"keep_months": ""})
        assert status == 302
    db = open_module_db(target)
    try:
        assert retention.keep_months(db) == 0
        assert writer(two_months, db).retain(MID_NOVEMBER_2024).cutoff_ms is None
    finally:
        db.close()


def kept_calls(target) -> int:
    db = open_module_db(target)
    try:
        return run(db, "SELECT count(*) FROM call").fetchone()[0]
    finally:
        db.close()


def page_of(base, day_from: str, day_to: str) -> tuple[int, int]:
    """(the count the history page shows for the period, the rows it lists)."""
    status, body = request(base, "/", user="anna", role="admin",
                           params={"from": day_from, "to": day_to})
    assert status == 200
    html = body.decode()
    count = re.search(r'class="ui mini basic buttons export" data-count="(\d+)"', html)
    return int(count[1]), html.count('<tr class="call ')


def calls_of(base, params) -> list:
    status, body = request(base, "/api/v1/calls", user="anna", role="admin", params=params)
    assert status == 200, body
    return json.loads(body)["calls"]


def months_back_to(year: int, month: int) -> int:
    """The keep-months value that keeps calls from that month on, today."""
    today = date.today()
    return today.year * 12 + today.month - (year * 12 + month)


def test_the_command_line_shows_sets_and_applies_the_months_kept(two_months, target):
    synced(two_months, target)
    for typed in ("abc", "601", "-3"):
        code, out, err = extcdr_run("retention", "--db", str(target), "--keep-months", typed)
        assert code == 2 and out == ""
        assert err.startswith("extcdr: months of history to keep must be a whole number") \
            and len(err.splitlines()) == 1, err
    code, out, _ = extcdr_run("retention", "--db", str(target))
    assert code == 0 and out == "keeps: every month (history.keep_months is not set)\n"
    keep = months_back_to(2024, 10)
    code, out, _ = extcdr_run("retention", "--db", str(target), "--keep-months", str(keep))
    assert code == 0
    first, to_drop = out.splitlines()
    assert first == f"keeps: {keep} months, calls from 2024-10-01 (UTC)"
    assert to_drop.startswith("to drop 2024-09: ") and " calls (--apply" in to_drop
    code, out, _ = extcdr_run("retention", "--db", str(target), "--apply", "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["kept_from"] == "2024-10-01" and report["to_drop"] == []
    assert [month["month"] for month in report["dropped"]] == ["2024-09"]
    assert f"{report['dropped'][0]['calls']:,} calls" in to_drop
    assert cli_calls(target, "--from", "2024-09-01", "--to", "2024-09-30") == ""
    code, out, _ = extcdr_run("retention", "--db", str(target), "--apply")
    assert (code, out) == (0, f"keeps: {keep} months, calls from 2024-10-01 (UTC)\n")
    code, out, _ = extcdr_run("status", "--db", str(target), "--format", "json")
    status = json.loads(out)
    assert (status["keep_months"], status["kept_from"]) == (keep, "2024-10-01")


@pytest.fixture(scope="module")
def september_mirror(tmp_path_factory):
    """A demo PBX with some ten thousand September calls, and its SQLite mirror."""
    from standin import demo
    out = tmp_path_factory.mktemp("september")
    demo.generate(out, 12_000, seed=12, end_day=date(2024, 10, 2), timezone="Europe/Berlin")
    synced(out, out / "module.db")
    return out


def test_kill_9_while_dropping_leaves_a_consistent_mirror_and_the_next_run_goes_on(
        september_mirror, tmp_path):
    db_path = tmp_path / "module.db"
    shutil.copy(september_mirror / "module.db", db_path)
    before = september_calls(db_path)
    assert before > 3 * retention.CHUNK_CALLS
    keep = str(months_back_to(2024, 10))
    process = subprocess.Popen([sys.executable, "-m", "cli", "retention", "--db", str(db_path),
                                "--keep-months", keep, "--apply"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: september_calls(db_path) < before or process.poll() is not None,
                        timeout=120)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    left = september_calls(db_path)
    assert 0 < left < before, "the kill landed while months were being dropped"
    with closing(sqlite3.connect(db_path)) as conn:
        assert rollups_off(conn) == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert orphans(conn) == (0, 0, 0, 0)
    db = open_module_db(db_path)              # the daemon's next look goes on from there
    try:
        writer(september_mirror, db).catch_up()    # and the PBX's rows do not come back
        assert september_calls(db_path) == left
        assert retention.keep_months(db) == int(keep)
        assert writer(september_mirror, db).retain(int(time.time() * 1000)).dropped
        assert rollups_before(db, OCTOBER_2024) == 0
    finally:
        db.close()
    assert september_calls(db_path) == 0
    reference = tmp_path / "reference.db"
    synced(september_mirror, reference, keep_months=1)
    assert dump(db_path)["calls"] == dump(reference)["calls"]


def september_calls(db_path) -> int:
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT count(*) FROM call WHERE start_ms < ?",
                            (OCTOBER_2024,)).fetchone()[0]


def orphans(conn) -> tuple[int, ...]:
    """Rows of calls no longer there: employees, numbers, names, legs of finished calls."""
    return tuple(conn.execute(sql).fetchone()[0] for sql in (
        "SELECT count(*) FROM call_employee WHERE call_id NOT IN (SELECT id FROM call)",
        "SELECT count(*) FROM call_number WHERE rowid NOT IN (SELECT id FROM call)",
        "SELECT count(*) FROM call_name WHERE rowid NOT IN (SELECT id FROM call)",
        "SELECT count(*) FROM leg WHERE linkedid NOT IN (SELECT linkedid FROM call) "
        "AND linkedid NOT IN (SELECT linkedid FROM live_call)"))


def extcdr_run(*args: str) -> tuple[int, str, str]:
    result = run_extcdr(*args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


def test_two_pbxs_of_one_central_history_drop_its_old_months_once(two_months, pg_schema_url,
                                                                 tmp_path):
    """Both PBXs' daemons look at the history's retention at once, while one of them resyncs:
    the month goes once, nobody waits for ever, and no PBX brings it back."""
    other = tmp_path / "pbx-b"
    other.mkdir()
    for name in ("cdr.db", "mikopbx.db"):
        shutil.copy(two_months / name, other / name)
    folders = {"a": two_months, "b": other}
    for pbx_id, folder in folders.items():
        synced(folder, pg_schema_url, pbx_id=pbx_id)
    connections = {name: open_module_db(pg_schema_url) for name in ("a", "b", "resync")}
    try:
        retention.set_keep_months(connections["a"], 1)
        run(connections["a"], "UPDATE sync_state SET value = '0' WHERE key = 'cursor:b'")
        dropped, failed = {}, []

        def retain(pbx_id: str) -> None:
            try:
                sync = writer(folders[pbx_id], connections[pbx_id], pbx_id)
                dropped[pbx_id] = sync.retain(MID_NOVEMBER_2024).dropped
            except Exception as exc:        # reported by the test's thread
                failed.append(exc)

        def resync() -> None:
            try:
                writer(other, connections["resync"], "b").catch_up()
            except Exception as exc:
                failed.append(exc)

        threads = [threading.Thread(target=work, args=args)
                   for work, args in ((resync, ()), (retain, ("a",)), (retain, ("b",)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not any(thread.is_alive() for thread in threads), "a writer waits for ever"
        assert failed == []
        assert sorted(month.name for months in dropped.values() for month in months) == \
            ["2024-09"]
        # A resync that read the history's cutoff before it moved may have written September
        # again: the daemon's next look drops it (nothing is due otherwise).
        writer(two_months, connections["a"], "a").retain(MID_NOVEMBER_2024)
        writer(other, connections["resync"], "b").catch_up()
        assert writer(other, connections["b"], "b").retain(MID_NOVEMBER_2024).dropped == []
        db = connections["a"]
        assert run(db, "SELECT count(*) FROM call WHERE start_ms < ?",
                   (OCTOBER_2024,)).fetchone()[0] == 0
        assert run(db, "SELECT count(*) FROM pg_class WHERE relname LIKE '%2024_09' "
                       "AND relnamespace = current_schema()::regnamespace").fetchone()[0] == 0
        reference = tmp_path / "reference.db"
        synced(two_months, reference, keep_months=1)
        october = sorted(row[0] for row in dump(reference)["calls"])
        for pbx_id in folders:
            assert sorted(linkedid.split(":", 1)[1] for (linkedid,) in run(
                db, "SELECT linkedid FROM call WHERE pbx = ?", (pbx_id,))) == october
        assert rollups_off(db) == []
    finally:
        for db in connections.values():
            db.close()


def test_the_daemon_drops_the_months_at_start_with_a_line_each_then_looks_hourly(
        two_months, tmp_path, caplog):
    db_path = tmp_path / "module.db"
    synced(two_months, db_path)
    before = september_calls(db_path)
    db = open_module_db(db_path)
    try:
        retention.set_keep_months(db, months_back_to(2024, 10))
    finally:
        db.close()
    daemon = Daemon(load(None, {"pbx.cdr_db": two_months / "cdr.db",
                                "pbx.config_db": two_months / "mikopbx.db",
                                "module.db": db_path, "ami.enabled": "false"}))
    try:
        with caplog.at_level(logging.INFO, logger="extcdr.daemon"):
            daemon.step(0.0)
            assert september_calls(db_path) == 0
            daemon.step(3_600.0)                       # the next look: nothing is due
        lines = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
        assert lines == [f"retention: dropped 2024-09 ({before} calls); the history keeps "
                         f"calls from 2024-10-01 UTC"]
        assert daemon.next_retention == 7_200.0
    finally:
        daemon.db.close()


def test_every_word_of_the_settings_page_has_its_russian():
    page = (ROOT / "web" / "templates" / "settings" / "page.html").read_text()
    words = ["".join(quoted) for quoted in re.findall(r"""_\((?:"([^"]+)"|'([^']+)')\)""", page)]
    assert "History kept" in words and [word for word in words if word not in RUSSIAN] == []
    refusal = say_error(str(pytest.raises(retention.RetentionError,
                                          retention.keep_months_value, "x").value), "ru")
    assert refusal == "сколько месяцев хранить — целое число от 1 до 600 (пусто: хранить всё), " \
                      "а не 'x'"


def test_a_call_begun_before_the_cutoff_is_not_written_from_its_later_legs(tmp_path, capsys):
    """Its first leg came in one batch and was left out; its last, after the cutoff, comes in
    the next one: the start its linkedid carries leaves it out too."""
    pbx = Pbx(tmp_path / "pbx", capsys, tz="UTC", day="2024-09-30")
    pbx.call("""
        start               | answer              | end                 | src          | dst
        23:59:50            | 23:59:50            | 2024-10-01 00:00:20 | +79161234567 | 2020
        2024-10-01 00:00:20 | 2024-10-01 00:00:25 | 2024-10-01 00:03:00 | +79161234567 | 202
        """)
    kept = pbx.call("""
        start    | answer   | end      | src          | dst
        10:00:00 | 10:00:05 | 10:01:00 | +79161234567 | 202
        """, day="2024-10-01")
    config = read_pbx_config(pbx.pbx_db)
    db = open_module_db(pbx.module_db)
    try:
        sync = Sync(Store(db), CdrSource(pbx.cdr_db), config, PbxClock("UTC"),
                    SyncOptions(batch_rows=1, workers=1))
        retention.set_keep_months(db, 1)
        sync.retain(MID_NOVEMBER_2024)
        sync.catch_up()
        assert [tuple(row) for row in run(db, "SELECT linkedid FROM call")] == [(kept,)]
        assert run(db, "SELECT count(*) FROM leg").fetchone()[0] == 1
    finally:
        db.close()
