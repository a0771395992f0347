"""A prepared batch — legs and classified calls as plain rows — in a staging area.

Whoever classifies a batch writes it here (a worker process into its own scratch SQLite file,
or the writer itself into its staging area: attached in-memory schemas on SQLite, temporary
tables on PostgreSQL); the single writer then merges it into module.db with a few INSERT …
SELECT statements that run entirely inside the database.
"""
from __future__ import annotations

import sqlite3
from dataclasses import fields
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import Iterable

from peewee import Database

from mirror.calls import Call, Leg
from mirror.dialect import dialect_of, emptied, insert_rows, run, staged

LEG_FIELDS = [f.name for f in fields(Leg) if f.init]
LEG_COLUMNS = [name if name not in ("start", "answer", "end") else f"{name}_ms"
               for name in LEG_FIELDS]
# A staged call's callback links, among the calls of its batch (`mirror.calls.calls_of`).
CALLBACK_COLUMNS = ("callback_of", "returned_by", "callback_attempts")
CALL_COLUMNS = ("linkedid", "start_ms", "end_ms", "direction", "status", "reason", "answered",
                "src", "src_name", "dst", "dst_name", "external_number", "ext_key", "did",
                "line", "answered_by", "missed_by", "transferred_to", "employees", "wait_s",
                "talk_s", "duration_s", "recordings", "leg_count", *CALLBACK_COLUMNS)
# A call's queue and first menu (`mirror.calls.Call`; migrations 10 and 13 filled them in SQL).
CALL_EXTRAS = ("queue", "queue_wait_s", "ivr", "ivr_digits", "ivr_left")

EMPLOYEE_COLUMNS = ("linkedid", "extension", "start_ms", "placed")
NUMBER_COLUMNS = ("linkedid", "numbers")
TABLES = ("leg", "call", "employee", "number")
# What a batch stages in each table.
STAGED_COLUMNS = {"leg": tuple(LEG_COLUMNS), "call": CALL_COLUMNS + CALL_EXTRAS,
                  "employee": EMPLOYEE_COLUMNS, "number": NUMBER_COLUMNS}
STAGING_DDL = (
    f"CREATE TABLE {{schema}}.leg ({', '.join(LEG_COLUMNS)})",
    f"CREATE TABLE {{schema}}.call ({', '.join(CALL_COLUMNS + CALL_EXTRAS)})",
    f"CREATE TABLE {{schema}}.employee ({', '.join(EMPLOYEE_COLUMNS)})",
    f"CREATE TABLE {{schema}}.number ({', '.join(NUMBER_COLUMNS)})",
)
# PostgreSQL: temporary tables of the writer's connection, typed as the mirror's columns.
PG_STAGING_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {{leg}} AS SELECT {', '.join(LEG_COLUMNS)} FROM leg "
    "WITH NO DATA",
    f"CREATE TEMP TABLE IF NOT EXISTS {{call}} AS SELECT "
    f"{', '.join(CALL_COLUMNS + CALL_EXTRAS)} FROM call WITH NO DATA",
    "CREATE TEMP TABLE IF NOT EXISTS {employee} "
    "(linkedid text, extension text, start_ms bigint, placed integer)",
    "CREATE TEMP TABLE IF NOT EXISTS {number} (linkedid text, numbers text)",
)
_leg_row = attrgetter(*LEG_FIELDS)


def create(conn: sqlite3.Connection, schema: str = "main") -> None:
    """The staging tables in a worker's scratch file (an SQLite connection)."""
    for statement in STAGING_DDL:
        conn.execute(statement.format(schema=schema))


def stage(conn: sqlite3.Connection, legs: list[Leg], calls: list[Call],
          schema: str = "main") -> None:
    """Write a batch's rows into a worker's scratch file (no indexes, no look-ups: as fast as
    SQLite appends)."""
    for table, columns, rows in batch_rows(legs, calls):
        conn.executemany(f"INSERT INTO {schema}.{table} ({', '.join(columns)}) "
                         f"VALUES ({', '.join('?' * len(columns))})", rows)


def create_area(db: Database, schema: str) -> None:
    """The writer's staging area `schema`, made once per connection."""
    if dialect_of(db).postgresql:
        names = {table: staged(db, schema, table) for table in TABLES}
        for statement in PG_STAGING_DDL:
            run(db, statement.format(**names))
    else:
        db.execute_sql(f"ATTACH DATABASE ':memory:' AS {schema}")
        create(db.connection(), schema)


def clear(db: Database, schema: str) -> None:
    for table in TABLES:
        run(db, emptied(db, staged(db, schema, table)))


def stage_in(db: Database, legs: list[Leg], calls: list[Call], schema: str) -> None:
    """Write a batch's rows into the writer's staging area `schema`."""
    for table, columns, rows in batch_rows(legs, calls):
        insert_rows(db, f"{staged(db, schema, table)} ({', '.join(columns)})", len(columns),
                    rows)
    analyze(db, schema)


def analyze(db: Database, schema: str) -> None:
    """Let PostgreSQL's planner know the staged batch (temporary tables have no statistics
    of their own: it would guess, and join them with a month of calls the slow way)."""
    if dialect_of(db).postgresql:           # a small sample: row counts matter, not histograms
        run(db, "SET default_statistics_target = 10")
        run(db, "ANALYZE " + ", ".join(staged(db, schema, table) for table in TABLES))
        run(db, "RESET default_statistics_target")


def batch_rows(legs: list[Leg], calls: list[Call]
               ) -> Iterable[tuple[str, tuple[str, ...], Iterable[tuple]]]:
    """(staging table, its columns, its rows) of a batch."""
    rows = {"leg": map(_leg_row, legs), "call": map(call_row, calls),
            "employee": ((c.linkedid, ext, c.start, int(ext in c.callers))
                         for c in calls for ext in c.employees),
            "number": ((c.linkedid, searchable_numbers(c)) for c in calls)}
    return ((table, STAGED_COLUMNS[table], rows[table]) for table in TABLES)


def _json_list(values: list[str]) -> str:
    """JSON array of strings (the C string encoder, without json.dumps' per-call overhead)."""
    return "[" + ",".join(map(encode_basestring_ascii, values)) + "]" if values else "[]"


def call_row(call: Call) -> tuple:
    """A call as a row of CALL_COLUMNS + CALL_EXTRAS."""
    return (call.linkedid, call.start, call.end, call.direction, call.status, call.reason,
            int(call.answered), call.src, call.src_name, call.dst, call.dst_name,
            call.external_number, call.ext_key, call.did, call.line, call.answered_by,
            _json_list(call.missed_by), _json_list(call.transferred_to),
            _json_list(call.employees), call.wait_s, call.talk_s, call.duration_s,
            _json_list(call.recordings), call.leg_count, call.callback_of, call.returned_by,
            call.callback_attempts, call.queue, call.queue_wait_s, call.ivr, call.ivr_digits,
            call.ivr_left)


_DIGITS_ONLY = str.maketrans("", "", "+-() .#*")


def searchable_numbers(call: Call) -> str:
    """Every number of the call as bare digits (searches are digits too)."""
    numbers = {call.src, call.dst, call.external_number or "", call.did or "", *call.employees}
    return " ".join(sorted({n.translate(_DIGITS_ONLY) for n in numbers} - {""}))
