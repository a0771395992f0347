"""A prepared batch — legs and classified calls as plain rows — in a scratch SQLite schema.

Whoever classifies a batch writes it here (a worker process into its own scratch file, or the
writer itself into an attached in-memory schema); the single writer then merges it into
module.db with a few INSERT … SELECT statements that run entirely inside SQLite.
"""
from __future__ import annotations

import sqlite3
from dataclasses import fields
from json.encoder import encode_basestring_ascii
from operator import attrgetter

from mirror.calls import Call, Leg

LEG_FIELDS = [f.name for f in fields(Leg) if f.init]
LEG_COLUMNS = [name if name not in ("start", "answer", "end") else f"{name}_ms"
               for name in LEG_FIELDS]
CALL_COLUMNS = ("linkedid", "start_ms", "end_ms", "direction", "status", "reason", "answered",
                "src", "src_name", "dst", "dst_name", "external_number", "ext_key", "did",
                "line", "answered_by", "missed_by", "transferred_to", "employees", "wait_s",
                "talk_s", "duration_s", "recordings", "leg_count")
# What the writer works out for the staged calls from all of their legs in the mirror, just
# before it writes them (mirror.schema CALL_QUEUES, CALL_MENUS): empty when staged.
CALL_EXTRAS = ("queue", "queue_wait_s", "ivr", "ivr_digits", "ivr_left")

STAGING_DDL = (
    f"CREATE TABLE {{schema}}.leg ({', '.join(LEG_COLUMNS)})",
    f"CREATE TABLE {{schema}}.call ({', '.join(CALL_COLUMNS + CALL_EXTRAS)})",
    "CREATE TABLE {schema}.employee (linkedid, extension, start_ms, placed)",
    "CREATE TABLE {schema}.number (linkedid, numbers)",
)
_leg_row = attrgetter(*LEG_FIELDS)


def create(conn: sqlite3.Connection, schema: str = "main") -> None:
    for statement in STAGING_DDL:
        conn.execute(statement.format(schema=schema))


def clear(conn: sqlite3.Connection, schema: str) -> None:
    for table in ("leg", "call", "employee", "number"):
        conn.execute(f"DELETE FROM {schema}.{table}")


def stage(conn: sqlite3.Connection, legs: list[Leg], calls: list[Call],
          schema: str = "main") -> None:
    """Write a batch's rows (no indexes, no look-ups: as fast as SQLite appends)."""
    conn.executemany(f"INSERT INTO {schema}.leg VALUES ({', '.join('?' * len(LEG_COLUMNS))})",
                     map(_leg_row, legs))
    conn.executemany(f"INSERT INTO {schema}.call ({', '.join(CALL_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(CALL_COLUMNS))})",
                     map(call_row, calls))
    conn.executemany(f"INSERT INTO {schema}.employee VALUES (?, ?, ?, ?)",
                     ((c.linkedid, ext, c.start, int(ext in c.callers))
                      for c in calls for ext in c.employees))
    conn.executemany(f"INSERT INTO {schema}.number VALUES (?, ?)",
                     ((c.linkedid, searchable_numbers(c)) for c in calls))


def _json_list(values: list[str]) -> str:
    """JSON array of strings (the C string encoder, without json.dumps' per-call overhead)."""
    return "[" + ",".join(map(encode_basestring_ascii, values)) + "]"


def call_row(call: Call) -> tuple:
    """A call as a row of CALL_COLUMNS."""
    return (call.linkedid, call.start, call.end, call.direction, call.status, call.reason,
            int(call.answered), call.src, call.src_name, call.dst, call.dst_name,
            call.external_number, call.ext_key, call.did, call.line, call.answered_by,
            _json_list(call.missed_by), _json_list(call.transferred_to),
            _json_list(call.employees), call.wait_s, call.talk_s, call.duration_s,
            _json_list(call.recordings), call.leg_count)


_DIGITS_ONLY = str.maketrans("", "", "+-() .#*")


def searchable_numbers(call: Call) -> str:
    """Every number of the call as bare digits (searches are digits too)."""
    numbers = {call.src, call.dst, call.external_number or "", call.did or "", *call.employees}
    return " ".join(sorted({n.translate(_DIGITS_ONLY) for n in numbers} - {""}))
