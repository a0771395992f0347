"""Helpers for tests that build and compare whole mirrors."""
from __future__ import annotations

import random
import sqlite3
from datetime import date
from pathlib import Path

from peewee import Database

from daemon.sync import Sync, SyncOptions
from mirror import bulk
from mirror.database import ModuleDbError, open_module_db
from mirror.dialect import SQLITE, dialect_of, run
from mirror.pbxtime import PbxClock
from mirror.rollups import ROLLUPS, returned_after
from mirror.staging import LEG_COLUMNS
from mirror.store import Store
from pbx import tables as pbxschema
from pbx.cdr import CdrSource
from pbx.config import read_pbx_config

# Everything a user can see of a mirror; row ids and PBX row ids depend on arrival order.
_CALL_COLUMNS = """linkedid, start_ms, end_ms, direction, status, reason, answered, src, src_name,
    dst, dst_name, external_number, ext_key, did, line, answered_by, missed_by, transferred_to,
    employees, wait_s, talk_s, duration_s, recordings, callback_of, returned_by,
    callback_attempts, leg_count, queue, queue_wait_s, ivr, ivr_digits, ivr_left,
    returned_after_s"""


def dump(target: Path | str) -> dict:
    """The content of a mirror (a file or a `postgresql://` URL), independent of the order
    rows arrived in and of the engine."""
    db = open_module_db(target, readonly=True)
    try:
        return dump_db(db)
    finally:
        db.close()


def dump_db(db: Database) -> dict:
    """`dump` of an opened module.db: SQLite keeps numbers and names in FTS5 tables,
    PostgreSQL in columns of the call row ('' for none)."""
    def rows(sql: str) -> list[tuple]:
        return [tuple(row) for row in run(db, sql).fetchall()]
    if dialect_of(db).postgresql:
        numbers = "SELECT linkedid, numbers FROM call WHERE numbers <> '' ORDER BY 1"
        names = "SELECT linkedid, names FROM call WHERE names <> '' ORDER BY 1"
    else:
        numbers = ("SELECT c.linkedid, n.numbers FROM call_number n JOIN call c ON c.id = n.rowid "
                   "WHERE n.numbers <> '' ORDER BY 1")
        names = ("SELECT c.linkedid, n.names FROM call_name n JOIN call c ON c.id = n.rowid "
                 "ORDER BY 1")
    leg_columns = ", ".join(["uniqueid", "linkedid", *LEG_COLUMNS[3:]])
    return {
        "calls": rows(f"SELECT {_CALL_COLUMNS} FROM call ORDER BY linkedid"),
        # leg columns but id and source_id
        "legs": rows(f"SELECT {leg_columns} FROM leg ORDER BY uniqueid"),
        "employees": rows(
            "SELECT ce.extension, ce.start_ms, c.linkedid, ce.placed FROM call_employee ce "
            "JOIN call c ON c.id = ce.call_id ORDER BY 1, 2, 3"),
        "numbers": rows(numbers),
        "names": rows(names),
        "rollups_off": rollups_off(db),
    }


def query(target: Path | str, sql: str, params=()) -> list[tuple]:
    """The rows of one statement (`mirror.dialect.run`'s marks) on a mirror of either engine."""
    db = open_module_db(target)
    try:
        return [tuple(row) for row in run(db, sql, params).fetchall()]
    finally:
        db.close()


def committed_cursor(target: Path | str) -> int:
    """A mirror's committed sync cursor (0 before its first commit, or before it exists)."""
    return int(committed_state(target, "cursor") or 0)


def committed_state(target: Path | str, key: str) -> str | None:
    """A mirror's committed sync state (None before it is written, or the mirror exists)."""
    try:
        db = open_module_db(target, readonly=True)
    except ModuleDbError:
        return None
    try:
        row = run(db, "SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None
    finally:
        db.close()


def damage(target: Path | str) -> list:
    """What is wrong with a mirror as committed (none: sound): an SQLite file's integrity
    check's findings, then counters that differ from the calls (`rollups_off`; none yet while
    it loads in bulk: they are built at its end)."""
    db = open_module_db(target, readonly=True)
    try:
        found = [] if dialect_of(db).postgresql else [
            row[0] for row in run(db, "PRAGMA integrity_check") if row[0] != "ok"]
        return found + ([] if bulk.loading(db) else rollups_off(db))
    finally:
        db.close()


def pbx_rows(cdr: Path) -> tuple[list[str], list[tuple]]:
    """Columns (without id) and rows of a cdr_general, in id order."""
    conn = sqlite3.connect(cdr)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(cdr_general)") if r[1] != "id"]
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM cdr_general ORDER BY id").fetchall()
    conn.close()
    return cols, rows


def append_rows(cdr: Path, cols: list[str], rows: list[tuple]) -> None:
    conn = pbxschema.create(str(cdr), pbxschema.cdr_ddl())
    with conn:
        conn.executemany(f"INSERT INTO cdr_general ({', '.join(cols)}) "
                         f"VALUES ({', '.join('?' * len(cols))})", rows)
    conn.close()


def rollups_off(db: Database | sqlite3.Connection) -> list[tuple]:
    """Where the counters (every rollup, and each returned call's wait for its callback) differ
    from the calls counted afresh (none: exact); a slot whose calls all went may keep its rows
    at zero."""
    if isinstance(db, sqlite3.Connection):
        dialect, execute = SQLITE, db.execute
    else:
        dialect, execute = dialect_of(db), lambda sql: run(db, sql)
    off = []
    for rollup in ROLLUPS:
        n = len(rollup.keys) + 1
        kept = {tuple(row[:n]): tuple(row[n:]) for row in execute(
            f"SELECT {rollup.slot}, {', '.join(rollup.key_names)}, {', '.join(rollup.measures)} "
            f"FROM {rollup.table}") if any(row[n:])}
        counted = {tuple(row[:n]): tuple(int(value) for value in row[n:])
                   for row in execute(rollup.afresh("call", dialect))}
        off += sorted((rollup.table, key, kept.get(key), counted.get(key))
                      for key in kept.keys() | counted.keys() if kept.get(key) != counted.get(key))
    off += [tuple(row) for row in execute(
        f"SELECT 'returned_after_s', linkedid, returned_after_s, afresh FROM (SELECT linkedid, "
        f"returned_after_s, {returned_after('call')} AS afresh FROM call) AS c "
        "WHERE returned_after_s IS DISTINCT FROM afresh")]
    return off


def mirrored_demo(directory: Path, calls: int, seed: int) -> Path:
    """A small demo PBX of a test module's own in `directory` (up to 2024-10-27 in Berlin: the
    DST week), mirrored by `extcdr sync --once` into `directory/module.db`; returns that."""
    from cli import main
    from standin import demo
    demo.generate(directory, calls, seed, end_day=date(2024, 10, 27), timezone="Europe/Berlin")
    db = directory / "module.db"
    assert main(["sync", "--cdr-db", str(directory / "cdr.db"), "--pbx-db",
                 str(directory / "mikopbx.db"), "--db", str(db), "--once"]) == 0
    return db


def sync_once(cdr: Path, pbx: Path, db: Path, batch_rows: int = 20_000,
              workers: int = SyncOptions.workers, range_rows: int = SyncOptions.range_rows,
              should_stop=lambda: False) -> None:
    """One catch-up; `range_rows` small enough sends a small history to the worker
    processes (and into an empty mirror, to a bulk load), `should_stop` stops it early."""
    config = read_pbx_config(pbx)
    database = open_module_db(db)
    try:
        Sync(Store(database), CdrSource(cdr), config, PbxClock(config.timezone or "UTC"),
             SyncOptions(batch_rows=batch_rows, workers=workers, range_rows=range_rows)
             ).catch_up(should_stop=should_stop)
    finally:
        database.close()


def schema(db: Path) -> list[tuple]:
    """The tables, indexes and triggers of a SQLite mirror, with their SQL."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def shuffled(rows: list, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def call_count(db: Path) -> int | None:
    """Calls in a mirror, read-only; None while it does not exist (or is not migrated) yet."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM call").fetchone()[0]
    except sqlite3.Error:
        return None
