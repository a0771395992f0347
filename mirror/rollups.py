"""Counters of calls that need not count: sums of the calls' figures per UTC hour or day and a
few keys, kept in the transaction that changes a call, whoever writes it: by triggers, row by
row, and by the daemon's writer for a whole batch at once (`kept_by_writer`).

A rollup is declared once here, as what each call adds to it (`Part`s: its keys and measures as
SQL over the call row). From that one declaration come the table and its triggers (migrations
12 and 13), the writer's grouped upkeep, the same figures computed afresh from any set of
calls (the scan that serves a filter the keys cannot, and what tests check the tables
against), and `figures`, which reads a period's whole slots from the table and counts the
calls of its partial slots at each end: exact in any timezone and across DST changes, with no
per-PBX days. A released rollup is never edited:
a change is a new table in a new migration.

On PostgreSQL (a central history) there are no triggers: the writer's grouped upkeep is the only
one, so whatever changes calls there does it inside `kept_by_writer`. The declarations are SQL
both engines read alike (0/1 as CASE, JSON lists through `mirror.dialect.json_items`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from peewee import Database

from mirror.dialect import (SQLITE, Dialect, dialect_of, emptied, json_items, lock_shared_rows, run,
                            staged)
from mirror.stamps import EVERYWHERE, Span

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# While this table has a row (only inside the writer's transaction) the triggers stand idle:
# the writer takes a batch's calls away from the rollups before it upserts them and adds them
# back after, a few grouped statements instead of several per call (`kept_by_writer`).
PAUSE = "rollup_pause"
UNPAUSED = f"NOT EXISTS (SELECT 1 FROM {PAUSE})"
# The seconds from a returned missed call's end to the start of the call that returned it
# (`call.returned_after_s`, what the callbacks' rollup counts): see `returned_after`.
RETURNED_AFTER = ("(SELECT (r.start_ms - {m}.end_ms) / 1000 FROM call r "
                  "WHERE r.linkedid = {m}.returned_by{within})")


def returned_after(m: str, returners: Span = EVERYWHERE) -> str:
    """SQL: `returned_after_s` of the call row `m`, its returning call looked up where it
    starts (`returners`: on PostgreSQL, its months)."""
    return RETURNED_AFTER.format(m=m, within=returners.within("r.start_ms"))


@dataclass(frozen=True)
class Part:
    """What one call adds to a rollup: `keys` and `measures` are SQL over the call row `{c}`
    (and `j.value`, the items of `each`: a call counted once per item of one of its JSON
    lists). SQL both engines read alike: 0/1 figures as CASE, never a comparison's value."""
    keys: tuple[str, ...]
    measures: tuple[str, ...]
    when: str = "true"
    each: str = ""            # e.g. "{c}.missed_by"


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
        """The table, its filling from the calls there are, and the triggers that keep it
        (idle while the writer keeps it for a batch itself: `PAUSE`)."""
        columns = ", ".join(f"{name} {kind} NOT NULL" for name, kind in (
            (self.slot, "INTEGER"), *self.keys,
            *((m, "INTEGER") for m in self.measures)))
        # An upsert sets every column, changed or not: only a change moves the counts.
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in self.columns)
        return (
            f"CREATE TABLE {self.table} ({columns}, PRIMARY KEY ({self._key})) WITHOUT ROWID",
            f"INSERT INTO {self.table} ({self._key}, {', '.join(self.measures)}) "
            + self.afresh("call") + " ORDER BY 1",
            f"CREATE TRIGGER {self.table}_added AFTER INSERT ON call WHEN {UNPAUSED} BEGIN "
            f"{self._each_part(self.add, 'NEW')} END",
            f"CREATE TRIGGER {self.table}_removed AFTER DELETE ON call WHEN {UNPAUSED} BEGIN "
            f"{self._each_part(self.subtract, 'OLD')} END",
            f"CREATE TRIGGER {self.table}_changed AFTER UPDATE OF {', '.join(self.columns)} "
            f"ON call WHEN {UNPAUSED} AND ({changed}) BEGIN "
            f"{self._each_part(self.subtract, 'OLD')} {self._each_part(self.add, 'NEW')} END",
        )

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    def afresh(self, calls: str, dialect: Dialect = SQLITE) -> str:
        """The rollup's rows computed from the calls `calls` (a table or a subquery):
        (slot, *keys, *measures), grouped."""
        parts = " UNION ALL ".join(self._select(part, "c", calls, dialect)
                                   for part in self.parts)
        names = (self.slot, *self.key_names)
        sums = ", ".join(f"sum({m}) AS {m}" for m in self.measures)
        return (f"SELECT {', '.join(names)}, {sums} FROM ({parts}) AS p "
                f"GROUP BY {', '.join(names)}")

    def _select(self, part: Part, c: str, calls: str | None = None,
                dialect: Dialect = SQLITE) -> str:
        """A part's rows: of the calls `calls` (aliased `c`; `afresh` groups them), or of a
        trigger's row (grouped where `each` makes several that may share their keys)."""
        grouped = bool(part.each and not calls)
        measure = "sum({}) AS {}" if grouped else "{} AS {}"
        columns = [f"{c}.start_ms / {self.grain_ms} AS {self.slot}"]
        columns += [f"{sql.format(c=c)} AS {name}" for sql, name in zip(part.keys, self.key_names)]
        columns += [measure.format(sql.format(c=c), name)
                    for sql, name in zip(part.measures, self.measures)]
        sources = ([f"{calls} AS {c}"] if calls else []) + (
            [json_items(dialect, part.each.format(c=c), "j")] if part.each else [])
        source = f" FROM {', '.join(sources)}" if sources else ""
        group = " GROUP BY " + ", ".join(str(i + 1) for i in range(len(self.keys) + 1))
        return (f"SELECT {', '.join(columns)}{source} WHERE {part.when.format(c=c)}"
                + (group if grouped else ""))

    def add(self, rows: str) -> str:
        """The statement adding rollup rows `rows` (slot, *keys, *measures) to the table."""
        bumps = ", ".join(f"{m} = {self.table}.{m} + excluded.{m}" for m in self.measures)
        return (f"INSERT INTO {self.table} ({self._key}, {', '.join(self.measures)}) "
                f"SELECT * FROM ({rows}) AS v WHERE true ON CONFLICT ({self._key}) "
                f"DO UPDATE SET {bumps};")

    def subtract(self, rows: str) -> str:
        """The statement taking rollup rows `rows` away from the table's."""
        lowered = ", ".join(f"{m} = {self.table}.{m} - v.{m}" for m in self.measures)
        same = " AND ".join(f"{self.table}.{k} = v.{k}" for k in (self.slot, *self.key_names))
        return f"UPDATE {self.table} SET {lowered} FROM ({rows}) AS v WHERE {same};"

    @property
    def _key(self) -> str:
        return ", ".join((self.slot, *self.key_names))

    def _each_part(self, change, row: str) -> str:
        return " ".join(change(self._select(part, row)) for part in self.parts)


# The calls of each UTC hour by direction, status and whether a missed call is unreturned
# (migration 12 wrote its table and first triggers out before this declaration; migration 13
# replaced the triggers with the declaration's).
CALLS = Rollup(
    "call_rollup", "hour", HOUR_MS,
    keys=(("direction", "TEXT"), ("status", "TEXT"), ("unreturned", "INTEGER")),
    measures=("calls", "talk_s", "wait_s"),
    parts=(Part(("{c}.direction", "{c}.status",
                 "CASE WHEN {c}.status = 'missed' AND {c}.returned_by IS NULL THEN 1 ELSE 0 END"),
                ("1", "{c}.talk_s", "{c}.wait_s")),),
    columns=("start_ms", "direction", "status", "returned_by", "talk_s", "wait_s"),
    filters=frozenset({"direction", "status"}))

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
             when="{c}.answered <> 0 AND {c}.direction <> 'outgoing' "
                  "AND {c}.answered_by IS NOT NULL"),
        Part(("j.value", "'missed'", "coalesce({c}.queue, '')", "{c}.direction"),
             ("1", "0", "0", "{c}.wait_s", "CASE WHEN {c}.returned_by IS NULL THEN 0 ELSE 1 END"),
             when="{c}.status = 'missed'", each="{c}.missed_by"),
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
                ("1", "{c}.answered", "CASE WHEN {c}.status = 'missed' THEN 1 ELSE 0 END",
                 "{c}.talk_s", "{c}.wait_s"),
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


# What every rollup reads of a call, and what its wait for a callback is worked out from.
ROLLED_COLUMNS = tuple(dict.fromkeys(
    (*(c for rollup in ROLLUPS for c in rollup.columns), "linkedid", "end_ms", "returned_by")))
_ROLLED = "rolled_call"


@contextmanager
def kept_by_writer(db: Database, linkedids: str, schema: str, within: Span = EVERYWHERE,
                   link_ms: int | None = None):
    """Around statements (in one transaction) that write only the calls whose linkedids the
    query `linkedids` selects: their old figures leave every rollup before, the new come after,
    grouped; the triggers (SQLite's; PostgreSQL has none) stand idle in between. With them go
    the calls they returned, whose wait for it (`returned_after_s`) follows their times: worked
    out here for all of them. The figures are read from a copy of those calls in the writer's
    staging area `schema`: one pass over the mirror's calls for all the rollups' parts.
    On PostgreSQL only the months of `within` (where the calls start, `mirror.stamps`) and
    those of the calls a callback away (`link_ms`; None: any) are read."""
    dialect = dialect_of(db)
    lock_shared_rows(db)       # the counters are every PBX's (a central history)
    copy = staged(db, schema, _ROLLED)
    columns = ", ".join(ROLLED_COLUMNS)
    if dialect.postgresql:
        returned = within.widened(link_ms, link_ms)      # the calls they returned, and those
        returners = returned.widened(link_ms, link_ms)   # that returned those
        run(db, f"CREATE TEMP TABLE IF NOT EXISTS {copy} AS SELECT id, {columns} FROM call "
                "WITH NO DATA")
        # the calls by their linkedid (call ids are unique only with start_ms, the partition key)
        chosen = (f"INSERT INTO {copy} SELECT id, {columns} FROM call "
                  f"WHERE linkedid IN ({linkedids}){within.within('start_ms')} UNION "
                  f"SELECT id, {columns} FROM call WHERE returned_by IN ({linkedids})"
                  + returned.within("start_ms"))
        chosen_now = (chosen, f"ANALYZE {copy}")     # a temporary table: no statistics else
    else:
        run(db, f"CREATE TABLE IF NOT EXISTS {copy} (id INTEGER PRIMARY KEY, {columns})")
        chosen = (f"INSERT INTO {copy} SELECT id, {columns} FROM call WHERE id IN ("
                  f"SELECT id FROM call WHERE linkedid IN ({linkedids}) "
                  f"UNION SELECT id FROM call WHERE returned_by IN ({linkedids}))")
        chosen_now = (chosen,)
    run(db, emptied(db, copy))
    for statement in chosen_now:
        run(db, statement)
    for rollup in ROLLUPS:
        run(db, rollup.subtract(rollup.afresh(copy, dialect)))
    if not dialect.postgresql:         # its triggers stand idle (PostgreSQL has none)
        run(db, f"INSERT INTO {PAUSE} VALUES (1)")
    try:
        yield
        run(db, emptied(db, copy))
        for statement in chosen_now:   # as they are now, with the calls the statements added
            run(db, statement)
        # The copy's few returned calls (or no longer returned): their wait worked out in the
        # copy and written back (SQLite: written back, then copied; PostgreSQL would work it
        # out once per partition of `call` in the first statement).
        waited = "returned_by IS NOT NULL OR returned_after_s IS NOT NULL"
        after = returned_after(copy.rsplit(".", 1)[-1],
                               returners if dialect.postgresql else EVERYWHERE)
        copied = f"UPDATE {copy} SET returned_after_s = {after} WHERE {waited}"
        if dialect.postgresql:
            run(db, copied)
            run(db, f"UPDATE call SET returned_after_s = r.returned_after_s FROM {copy} AS r "
                    "WHERE call.linkedid = r.linkedid AND call.start_ms = r.start_ms "
                    f"AND call.returned_after_s IS DISTINCT FROM r.returned_after_s"
                    + returned.within("call.start_ms"))
        else:
            run(db, f"UPDATE call SET returned_after_s = r.s FROM (SELECT id, {after} AS s "
                    f"FROM {copy} WHERE {waited}) AS r "
                    "WHERE call.id = r.id AND call.returned_after_s IS DISTINCT FROM r.s")
            run(db, copied)
    finally:
        if not dialect.postgresql:
            run(db, f"DELETE FROM {PAUSE}")
    for rollup in ROLLUPS:
        run(db, rollup.add(rollup.afresh(copy, dialect)))
