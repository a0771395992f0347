"""Counters of calls that need not count: sums of the calls' figures per UTC hour or day and a
few keys, kept by triggers in the transaction that changes a call, whoever writes it.

A rollup is declared once here, as what each call adds to it (`Part`s: its keys and measures as
SQL over the call row). From that one declaration come the table and its triggers (migrations
12 and 13), the same figures computed afresh from any set of calls (the scan that serves a
filter the keys cannot, and what tests check the tables against), and `figures`, which reads a
period's whole slots from the table and counts the calls of its partial slots at each end: exact
in any timezone and across DST changes, with no per-PBX days. A released rollup is never edited:
a change is a new table in a new migration.
"""
from __future__ import annotations

from dataclasses import dataclass


HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Part:
    """What one call adds to a rollup: `keys` and `measures` are SQL over the call row `{c}`
    (and `j`, the items of `each`: a call counted once per item of one of its lists)."""
    keys: tuple[str, ...]
    measures: tuple[str, ...]
    when: str = "1"
    each: str = ""            # e.g. "json_each({c}.missed_by) AS j"


@dataclass(frozen=True)
class Rollup:
    table: str
    slot: str                     # the time column: hour or day (UTC) of the call's start
    grain_ms: int
    keys: tuple[tuple[str, str], ...]   # (column, type) in order: never NULL (a primary key)
    measures: tuple[str, ...]     # summed columns
    parts: tuple[Part, ...]
    columns: tuple[str, ...]      # the call columns its parts read
    filters: frozenset = frozenset()   # the filter fields its keys answer (`by_table`)

    def ddl(self) -> tuple[str, ...]:
        """The table, its filling from the calls there are, and the triggers that keep it."""
        columns = ", ".join(f"{name} {kind} NOT NULL" for name, kind in (
            (self.slot, "INTEGER"), *self.keys,
            *((m, "INTEGER") for m in self.measures)))
        key = ", ".join((self.slot, *self.key_names))
        return (
            f"CREATE TABLE {self.table} ({columns}, PRIMARY KEY ({key})) WITHOUT ROWID",
            f"INSERT INTO {self.table} ({key}, {', '.join(self.measures)}) "
            + self.afresh("call") + " ORDER BY 1",
            f"CREATE TRIGGER {self.table}_added AFTER INSERT ON call BEGIN "
            f"{self._add('NEW')} END",
            f"CREATE TRIGGER {self.table}_removed AFTER DELETE ON call BEGIN "
            f"{self._subtract('OLD')} END",
            f"CREATE TRIGGER {self.table}_changed AFTER UPDATE OF {', '.join(self.columns)} "
            f"ON call BEGIN {self._subtract('OLD')} {self._add('NEW')} END",
        )

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    def afresh(self, calls: str) -> str:
        """The rollup's rows computed from the calls `calls` (a table or a subquery):
        (slot, *keys, *measures), grouped."""
        parts = " UNION ALL ".join(self._select(part, "c", calls) for part in self.parts)
        names = (self.slot, *self.key_names)
        sums = ", ".join(f"sum({m}) AS {m}" for m in self.measures)
        return (f"SELECT {', '.join(names)}, {sums} FROM ({parts}) "
                f"GROUP BY {', '.join(names)}")

    def _select(self, part: Part, c: str, calls: str | None = None) -> str:
        """A part's rows, grouped: of the calls `calls` (aliased `c`), or of a trigger's row."""
        columns = [f"{c}.start_ms / {self.grain_ms} AS {self.slot}"]
        columns += [f"{sql.format(c=c)} AS {name}" for sql, name in zip(part.keys, self.key_names)]
        columns += [f"sum({sql.format(c=c)}) AS {name}"
                    for sql, name in zip(part.measures, self.measures)]
        sources = ([f"{calls} AS {c}"] if calls else []) + (
            [part.each.format(c=c)] if part.each else [])
        source = f" FROM {', '.join(sources)}" if sources else ""
        group = ", ".join(str(i + 1) for i in range(len(self.keys) + 1))
        return (f"SELECT {', '.join(columns)}{source} WHERE {part.when.format(c=c)} "
                f"GROUP BY {group}")

    def _add(self, row: str) -> str:
        key = ", ".join((self.slot, *self.key_names))
        bumps = ", ".join(f"{m} = {m} + excluded.{m}" for m in self.measures)
        return " ".join(
            f"INSERT INTO {self.table} ({key}, {', '.join(self.measures)}) "
            f"SELECT * FROM ({self._select(part, row)}) WHERE true "
            f"ON CONFLICT ({key}) DO UPDATE SET {bumps};" for part in self.parts)

    def _subtract(self, row: str) -> str:
        lowered = ", ".join(f"{m} = {self.table}.{m} - v.{m}" for m in self.measures)
        same = " AND ".join(f"{self.table}.{k} = v.{k}" for k in (self.slot, *self.key_names))
        return " ".join(
            f"UPDATE {self.table} SET {lowered} FROM ({self._select(part, row)}) AS v "
            f"WHERE {same};" for part in self.parts)


# The calls of each UTC hour by direction, status and whether a missed call is unreturned
# (migration 12, whose statements were written out before this declaration: the same SQL).
CALLS = Rollup(
    "call_rollup", "hour", HOUR_MS,
    keys=(("direction", "TEXT"), ("status", "TEXT"), ("unreturned", "INTEGER")),
    measures=("calls", "talk_s", "wait_s"),
    parts=(Part(("{c}.direction", "{c}.status", "{c}.status = 'missed' AND {c}.returned_by IS NULL"),
                ("1", "{c}.talk_s", "{c}.wait_s")),),
    columns=("start_ms", "direction", "status", "returned_by", "talk_s", "wait_s"),
    filters=frozenset({"direction", "status", "unreturned"}))

# Per UTC day (migration 13): what each employee did — answered (incoming and internal calls,
# with the queue they came through), missed (a missed call that rang them; returned or not),
# placed outgoing calls.
EMPLOYEES = Rollup(
    "employee_rollup", "day", DAY_MS,
    keys=(("extension", "TEXT"), ("role", "TEXT"), ("queue", "TEXT"), ("direction", "TEXT")),
    measures=("calls", "answered", "talk_s", "wait_s", "returned"),
    parts=(
        Part(("{c}.answered_by", "'answered'", "coalesce({c}.queue, '')", "{c}.direction"),
             ("1", "1", "{c}.talk_s", "{c}.wait_s", "0"),
             when="{c}.answered AND {c}.direction <> 'outgoing' AND {c}.answered_by IS NOT NULL"),
        Part(("j.value", "'missed'", "coalesce({c}.queue, '')", "{c}.direction"),
             ("1", "0", "0", "{c}.wait_s", "{c}.returned_by IS NOT NULL"),
             when="{c}.status = 'missed'", each="json_each({c}.missed_by) AS j"),
        Part(("{c}.src", "'outgoing'", "''", "{c}.direction"),
             ("1", "{c}.answered", "{c}.talk_s", "0", "0"),
             when="{c}.direction = 'outgoing'"),
    ),
    columns=("start_ms", "direction", "status", "answered", "answered_by", "missed_by", "src",
             "queue", "talk_s", "wait_s", "returned_by"),
    filters=frozenset({"direction"}))

# Per UTC day: the external calls of each line (provider) and DID.
LINES = Rollup(
    "line_rollup", "day", DAY_MS,
    keys=(("line", "TEXT"), ("did", "TEXT"), ("direction", "TEXT")),
    measures=("calls", "answered", "missed", "talk_s", "wait_s"),
    parts=(Part(("coalesce({c}.line, '')", "coalesce({c}.did, '')", "{c}.direction"),
                ("1", "{c}.answered", "{c}.status = 'missed'", "{c}.talk_s", "{c}.wait_s"),
                when="{c}.direction <> 'internal'"),),
    columns=("start_ms", "line", "did", "direction", "answered", "status", "talk_s", "wait_s"),
    filters=frozenset({"direction"}))

# Per UTC day: the calls of each queue by whether they were answered and how long the caller
# waited there, to the second (service level for any threshold, exact percentiles).
QUEUES = Rollup(
    "queue_rollup", "day", DAY_MS,
    keys=(("queue", "TEXT"), ("direction", "TEXT"), ("answered", "INTEGER"),
          ("wait_s", "INTEGER")),
    measures=("calls",),
    parts=(Part(("{c}.queue", "{c}.direction", "{c}.answered", "coalesce({c}.queue_wait_s, 0)"),
                ("1",), when="{c}.queue IS NOT NULL"),),
    columns=("start_ms", "queue", "direction", "answered", "queue_wait_s"),
    filters=frozenset({"direction"}))

# Per UTC day: missed calls by the whole minutes until they were called back (-1: unreturned),
# with the unanswered attempts to call them back.
CALLBACKS = Rollup(
    "callback_rollup", "day", DAY_MS,
    keys=(("direction", "TEXT"), ("after_min", "INTEGER")),
    measures=("calls", "attempts"),
    parts=(Part(("{c}.direction", "CASE WHEN {c}.returned_by IS NULL THEN -1 "
                                  "ELSE coalesce({c}.returned_after_s, 0) / 60 END"),
                ("1", "{c}.callback_attempts"), when="{c}.status = 'missed'"),),
    columns=("start_ms", "direction", "status", "returned_by", "returned_after_s",
             "callback_attempts"),
    filters=frozenset({"direction"}))

# Per UTC day: incoming calls by the first menu (IVR or other dialplan application) they
# entered, the digits the caller pressed there (where the PBX records them), answered later or
# left in the menu.
MENUS = Rollup(
    "menu_rollup", "day", DAY_MS,
    keys=(("menu", "TEXT"), ("digits", "TEXT"), ("direction", "TEXT")),
    measures=("calls", "answered", "left_in_menu"),
    parts=(Part(("{c}.ivr", "coalesce({c}.ivr_digits, '')", "{c}.direction"),
                ("1", "{c}.answered", "coalesce({c}.ivr_left, 0)"), when="{c}.ivr IS NOT NULL"),),
    columns=("start_ms", "ivr", "ivr_digits", "ivr_left", "direction", "answered"),
    filters=frozenset({"direction"}))

ROLLUPS = (CALLS, EMPLOYEES, LINES, QUEUES, CALLBACKS, MENUS)
