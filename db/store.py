"""The single writer of module.db: batched upserts of legs and calls, callback links, state.

The hot path of a backfill, so it talks SQL through the peewee-managed sqlite3 connection
with `executemany`; reads for pages and the CLI go through `db.queries`.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import fields
from operator import attrgetter

from peewee import SqliteDatabase

from daemon.calls import Call, CallbackFacts, CallbackLinks, Leg

LEG_FIELDS = [f.name for f in fields(Leg) if f.init]
_LEG_COLUMNS = [name if name not in ("start", "answer", "end") else f"{name}_ms"
                for name in LEG_FIELDS]
_CALL_COLUMNS = ("linkedid", "start_ms", "end_ms", "direction", "status", "reason", "answered",
                 "src", "src_name", "dst", "dst_name", "external_number", "ext_key", "did",
                 "line", "answered_by", "missed_by", "transferred_to", "employees", "wait_s",
                 "talk_s", "duration_s", "recordings", "leg_count")
_leg_row = attrgetter(*LEG_FIELDS)
_CHUNK = 900  # stays under SQLite's bound-parameter limit


def _chunks(values: list, size: int = _CHUNK):
    for i in range(0, len(values), size):
        yield values[i:i + size]


class Store:
    """Writes the mirror. One instance per writer process; every write inside `batch()`."""

    def __init__(self, db: SqliteDatabase):
        self.db = db
        self.conn = db.connection()

    @contextmanager
    def batch(self):
        """One transaction: rows and the sync cursor commit together, or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- legs ----------------------------------------------------------------------------------

    def legs_of(self, linkedids) -> dict[str, list[Leg]]:
        found: dict[str, list[Leg]] = {}
        cols = ", ".join(_LEG_COLUMNS)
        for chunk in _chunks(list(linkedids)):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                    f"SELECT {cols} FROM leg WHERE linkedid IN ({marks})", chunk):
                leg = Leg(*row[:19], bool(row[19]), *row[20:])
                found.setdefault(leg.linkedid, []).append(leg)
        return found

    def upsert_legs(self, legs: list[Leg]) -> None:
        cols = ", ".join(_LEG_COLUMNS)
        marks = ", ".join("?" * len(_LEG_COLUMNS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in _LEG_COLUMNS if c != "uniqueid")
        self.conn.executemany(
            f"INSERT INTO leg ({cols}) VALUES ({marks}) "
            f"ON CONFLICT (uniqueid) DO UPDATE SET {updates}",
            map(_leg_row, legs))

    # --- calls ---------------------------------------------------------------------------------

    def call_spans(self, linkedids) -> dict[str, tuple[int, str | None, int, int]]:
        """linkedid -> (id, ext_key, start, end) of calls already mirrored."""
        spans = {}
        for chunk in _chunks(list(linkedids)):
            marks = ",".join("?" * len(chunk))
            for linkedid, *span in self.conn.execute(
                    f"SELECT linkedid, id, ext_key, start_ms, end_ms FROM call "
                    f"WHERE linkedid IN ({marks})", chunk):
                spans[linkedid] = tuple(span)
        return spans

    def upsert_calls(self, calls: list[Call], existing: dict[str, int]) -> None:
        """Write calls (base fields), their employees and their searchable numbers.

        `existing` maps the linkedids already mirrored to their ids; new calls get the next
        ids explicitly (this is the only writer, inside its transaction), which spares a
        look-up of every id after the insert.
        """
        cols = ", ".join(_CALL_COLUMNS)
        marks = ", ".join("?" * len(_CALL_COLUMNS))
        new = [c for c in calls if c.linkedid not in existing]
        known = [c for c in calls if c.linkedid in existing]
        next_id = self.conn.execute("SELECT coalesce(max(id), 0) + 1 FROM call").fetchone()[0]
        ids = dict(existing)
        ids.update((c.linkedid, next_id + i) for i, c in enumerate(new))
        self.conn.executemany(
            f"INSERT INTO call (id, {cols}) VALUES (?, {marks})",
            ((ids[c.linkedid], *_call_row(c)) for c in new))
        if known:
            self.conn.executemany(
                f"UPDATE call SET ({cols}) = ({marks}) WHERE id = ?",
                ((*_call_row(c), ids[c.linkedid]) for c in known))
            stale = [(ids[c.linkedid],) for c in known]
            self.conn.executemany("DELETE FROM call_employee WHERE call_id = ?", stale)
            self.conn.executemany("DELETE FROM call_number WHERE rowid = ?", stale)
        self.conn.executemany(
            "INSERT OR IGNORE INTO call_employee (extension, start_ms, call_id) VALUES (?, ?, ?)",
            ((ext, c.start, ids[c.linkedid]) for c in calls for ext in c.employees))
        self.conn.executemany(
            "INSERT INTO call_number (rowid, numbers) VALUES (?, ?)",
            ((ids[c.linkedid], _searchable_numbers(c)) for c in calls))

    def callback_context(self, keys, lo: int, hi: int):
        """(facts, current links) of calls with these external keys starting in [lo, hi].

        Only keys where linking can matter: with a missed call, or with links to clear.
        """
        out: dict[str, list[tuple[CallbackFacts, CallbackLinks]]] = {}
        for chunk in _chunks(sorted(keys), _CHUNK // 2):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT ext_key, linkedid, start_ms, end_ms, direction, answered, status, "
                f"transferred_to, callback_of, returned_by, callback_attempts FROM call "
                f"WHERE start_ms BETWEEN ? AND ? AND ext_key IN ("
                f"  SELECT DISTINCT ext_key FROM call WHERE ext_key IN ({marks}) "
                f"  AND start_ms BETWEEN ? AND ? AND (status = 'missed' OR callback_of IS NOT NULL"
                f"  OR returned_by IS NOT NULL OR callback_attempts > 0))",
                [lo, hi, *chunk, lo, hi])
            for (key, linkedid, start, end, direction, answered, status, transferred,
                 callback_of, returned_by, attempts) in rows:
                facts = CallbackFacts(linkedid, start, end, direction, bool(answered),
                                      _base_status(direction, bool(answered), status,
                                                   transferred))
                links = CallbackLinks(callback_of, returned_by, attempts, status)
                out.setdefault(key, []).append((facts, links))
        return out

    def update_links(self, changed: dict[str, CallbackLinks]) -> None:
        self.conn.executemany(
            "UPDATE call SET callback_of = ?, returned_by = ?, callback_attempts = ?, status = ? "
            "WHERE linkedid = ?",
            ((l.callback_of, l.returned_by, l.callback_attempts, l.status, linkedid)
             for linkedid, l in changed.items()))

    def replace_directory(self, employees: dict[str, str], groups: dict[str, list[str]]) -> None:
        """The PBX's employees and groups as of this sync."""
        self.conn.execute("DELETE FROM employee")
        self.conn.executemany("INSERT INTO employee (extension, name) VALUES (?, ?)",
                              employees.items())
        self.conn.execute("DELETE FROM group_member")
        self.conn.executemany(
            "INSERT OR IGNORE INTO group_member (group_name, extension) VALUES (?, ?)",
            [(name, ext) for name, extensions in groups.items() for ext in extensions])

    # --- sync state ----------------------------------------------------------------------------

    def state(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM sync_state"))

    def set_state(self, **values) -> None:
        self.conn.executemany(
            "INSERT INTO sync_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()])


def _base_status(direction: str, answered: bool, status: str, transferred_to: str) -> str:
    """The status a call has before callbacks (callback statuses replace answered/transferred)."""
    if status in ("client_called_back", "we_called_back"):
        return "transferred" if transferred_to != "[]" else "answered"
    return status


def _json_list(values: list[str]) -> str:
    return json.dumps(values) if values else "[]"


def _call_row(call: Call) -> tuple:
    return (call.linkedid, call.start, call.end, call.direction, call.status, call.reason,
            int(call.answered), call.src, call.src_name, call.dst, call.dst_name,
            call.external_number, call.ext_key, call.did, call.line, call.answered_by,
            _json_list(call.missed_by), _json_list(call.transferred_to),
            _json_list(call.employees), call.wait_s, call.talk_s, call.duration_s,
            _json_list(call.recordings), call.leg_count)


_DIGITS_ONLY = str.maketrans("", "", "+-() .#*")


def _searchable_numbers(call: Call) -> str:
    """Every number of the call as bare digits (searches are digits too)."""
    numbers = {call.src, call.dst, call.external_number or "", call.did or "", *call.employees}
    return " ".join(sorted({n.translate(_DIGITS_ONLY) for n in numbers} - {""}))
