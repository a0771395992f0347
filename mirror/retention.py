"""Retention: the history keeps the calls of the last `history.keep_months` months and drops
older months whole (empty or 0: everything is kept, the default).

The setting belongs to the history, not to a PBX: it is kept in module.db (`sync_state`), so a
central history written by several PBXs has one, which every PBX's daemon applies — the first
to get to it (`mirror.dialect.hold`), once. Months are UTC months, as PostgreSQL's partitions
are; keeping N months keeps the current month and the N whole months before it.

What goes with a month: its calls, legs and employees of calls (PostgreSQL: the month's
partitions dropped, one statement a table; SQLite: a chunk of calls per transaction, found by
the period index), what people wrote about those calls (comments and their audit, tags,
handled marks, who hung up), the webhooks' outbox of them with its log, the search index
(SQLite's FTS tables) and the counters of those hours and days: analytics of a dropped period
say nothing rather than half. Recording files are the PBX's and stay; so does the audit of
deletions (who deleted which call, why).

`retained_from_ms` (`sync_state`) is the writer's cutoff (`mirror.store.Store.merge`): set
before anything is dropped, it keeps a resync, a rebuild or a late leg of an old call from
bringing a dropped month back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from peewee import Database

from mirror.dialect import dialect_of, hold, let_go, lock_shared_rows, run, write_transaction
from mirror.rollups import PAUSE, ROLLUPS
from mirror.schema import PARTITIONED, month_start_ms
from mirror.store import RETAINED_FROM, retained_from_ms

KEEP_MONTHS = "history.keep_months"
MAX_KEEP_MONTHS = 600
CHUNK_CALLS = 2_000          # SQLite: calls deleted per transaction (the writer waits between)
DROP_WAIT = "10s"            # PostgreSQL: how long a DROP waits for the readers of the table
_PARTITION = re.compile(r"^(call|leg|call_employee)_(\d{4})_(\d{2})$")


class RetentionError(ValueError):
    """A keep-months value that cannot be used; nothing was changed."""
    status = 400


@dataclass(frozen=True)
class Month:
    """A UTC month of the history: its first instant and the calls it holds."""
    start_ms: int
    calls: int

    @property
    def name(self) -> str:
        return datetime.fromtimestamp(self.start_ms / 1000, timezone.utc).strftime("%Y-%m")


@dataclass(frozen=True)
class Retained:
    """What retention did: the calls kept start at `cutoff_ms` (None: all are kept), and the
    months dropped."""
    cutoff_ms: int | None
    dropped: list[Month]


def utc_day(ms: int) -> str:
    """The UTC day of an instant (the first day a history keeps), `YYYY-MM-DD`."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")


def keep_months_value(raw) -> int:
    """A keep-months value as typed (form, command line): empty or 0 (keep everything), else
    a whole number of months, 1..MAX_KEEP_MONTHS."""
    text = "" if raw is None else str(raw).strip()
    if text in ("", "0"):
        return 0
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_KEEP_MONTHS:
        raise RetentionError(f"months of history to keep must be a whole number from 1 to "
                             f"{MAX_KEEP_MONTHS} (empty: keep everything), not {text[:20]!r}")
    return int(text)


def keep_months(db: Database) -> int:
    """The history's setting: months kept (0: everything)."""
    row = run(db, "SELECT value FROM sync_state WHERE key = ?", (KEEP_MONTHS,)).fetchone()
    return int(row[0]) if row else 0


def set_keep_months(db: Database, raw) -> int:
    """Change the history's setting (applied by the daemon within the hour, or by
    `extcdr retention --apply`); returns the value kept."""
    months = keep_months_value(raw)
    _set_state(db, KEEP_MONTHS, months or None)
    return months


def cutoff_ms(months: int, now_ms: int) -> int | None:
    """The first instant kept: the start of the UTC month `months` before the current one
    (None: 0 months, everything is kept)."""
    if not months:
        return None
    now = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
    index = now.year * 12 + now.month - 1 - months
    return month_start_ms(index // 12, index % 12 + 1)


def old_months(db: Database, cutoff: int) -> list[Month]:
    """The months before `cutoff` the history still holds, oldest first, with their calls."""
    if not dialect_of(db).postgresql:
        return [Month(_start_of(name), calls) for name, calls in run(
            db, "SELECT strftime('%Y-%m', start_ms / 1000, 'unixepoch'), count(*) FROM call "
                "WHERE start_ms < ? GROUP BY 1 ORDER BY 1", (cutoff,))]
    months = []
    for start, tables in sorted(_partitions_before(db, cutoff).items()):
        calls = run(db, f"SELECT count(*) FROM {tables['call']}").fetchone()[0] \
            if "call" in tables else 0
        months.append(Month(start, calls))
    return months


def due(db: Database, cutoff: int) -> bool:
    """Whether anything before `cutoff` is left to drop: a few index seeks (or a look at the
    catalog), cheap enough for the daemon to ask every hour."""
    if dialect_of(db).postgresql:
        if _partitions_before(db, cutoff):
            return True
    elif run(db, "SELECT EXISTS (SELECT 1 FROM call WHERE start_ms < ?)", (cutoff,)).fetchone()[0]:
        return True
    return any(run(db, f"SELECT EXISTS (SELECT 1 FROM {r.table} WHERE {r.slot} < ?)",
                   (cutoff // r.grain_ms,)).fetchone()[0] for r in ROLLUPS)


def apply_retention(db: Database, now_ms: int) -> Retained:
    """Apply the history's setting at `now_ms`: move the writer's cutoff, then drop the months
    before it (nothing when none is due, or another PBX's daemon is dropping them now)."""
    cutoff = cutoff_ms(keep_months(db), now_ms)
    _move_cutoff(db, cutoff)
    if cutoff is None or not due(db, cutoff) or not hold(db, "retention", 0):
        return Retained(cutoff, [])
    try:
        months = old_months(db, cutoff)
        if dialect_of(db).postgresql:
            _drop_partitions(db, cutoff)
        else:
            _delete_calls(db, cutoff)
        with write_transaction(db):
            lock_shared_rows(db)
            for rollup in ROLLUPS:           # a dropped period's counters say nothing
                run(db, f"DELETE FROM {rollup.table} WHERE {rollup.slot} < ?",
                    (cutoff // rollup.grain_ms,))
    finally:
        let_go(db, "retention", 0)
    return Retained(cutoff, months)


def _move_cutoff(db: Database, cutoff: int | None) -> None:
    """The writer's cutoff follows the setting (written only when it changes)."""
    if retained_from_ms(db) != (cutoff or 0):
        _set_state(db, RETAINED_FROM, cutoff)


def _set_state(db: Database, key: str, value: int | None) -> None:
    """A history-wide `sync_state` value, or none (one short transaction)."""
    with write_transaction(db):
        if value is None:
            run(db, "DELETE FROM sync_state WHERE key = ?", (key,))
        else:
            run(db, "INSERT INTO sync_state (key, value) VALUES (?, ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = excluded.value", (key, str(value)))


def _forget_notes(db: Database, linkedids: str, params: tuple = ()) -> None:
    """Remove what refers to the calls `linkedids` (SQL) selects: notes, marks, who hung up,
    the webhooks' events of them and their log."""
    for table in ("comment", "comment_audit", "call_tag", "call_hangup", "call_handled"):
        run(db, f"DELETE FROM {table} WHERE linkedid IN ({linkedids})", params)
    # by the outbox's key (hook, linkedid, event): its hooks are few
    events = (f"SELECT id FROM outbox WHERE hook_id IN (SELECT id FROM webhook) "
              f"AND linkedid IN ({linkedids})")
    run(db, f"DELETE FROM delivery WHERE outbox_id IN ({events})", params)
    run(db, f"DELETE FROM outbox WHERE id IN ({events})", params)


def _delete_calls(db: Database, cutoff: int) -> None:
    """SQLite: the calls before `cutoff`, oldest first, a chunk per transaction — each a whole
    set of calls with everything that goes with them, and their counters taken away grouped
    (the triggers stand idle meanwhile), so a kill -9 at any instant leaves a consistent
    mirror and the next run goes on."""
    chunk = (f"SELECT id FROM call WHERE start_ms < {int(cutoff)} "
             f"ORDER BY start_ms, id LIMIT {CHUNK_CALLS}")
    linkedids = f"SELECT linkedid FROM call WHERE id IN ({chunk})"
    while True:
        with write_transaction(db):
            if not run(db, f"SELECT EXISTS ({chunk})").fetchone()[0]:
                return
            _forget_notes(db, linkedids)
            for rollup in ROLLUPS:
                run(db, rollup.subtract(rollup.afresh(f"(SELECT * FROM call WHERE id IN "
                                                      f"({chunk}))")))
            run(db, f"INSERT INTO {PAUSE} VALUES (1)")
            for statement in (f"DELETE FROM leg WHERE linkedid IN ({linkedids})",
                              f"DELETE FROM call_employee WHERE call_id IN ({chunk})",
                              f"DELETE FROM call_number WHERE rowid IN ({chunk})",
                              f"DELETE FROM call_name WHERE rowid IN ({chunk})",
                              f"DELETE FROM call WHERE id IN ({chunk})"):
                run(db, statement)
            run(db, f"DELETE FROM {PAUSE}")


def _drop_partitions(db: Database, cutoff: int) -> None:
    """PostgreSQL: each month before `cutoff`, oldest first — the notes of its calls and its
    calls' partition in one transaction, then its legs' and its employees' partitions, one
    DROP each in a transaction of its own: a DROP locks its parent table, and holding one
    while waiting for another would deadlock with a writer that touched them the other way
    round. A DROP that waits longer than DROP_WAIT for readers fails (retried later) rather
    than hold every page back."""
    for start, tables in sorted(_partitions_before(db, cutoff).items()):
        for parent in PARTITIONED:                  # calls first: then nothing shows the month
            if parent not in tables:
                continue
            with write_transaction(db):
                run(db, f"SET LOCAL lock_timeout = '{DROP_WAIT}'")
                if parent == "call":
                    _forget_notes(db, f"SELECT linkedid FROM {tables[parent]}")
                run(db, f"DROP TABLE IF EXISTS {tables[parent]}")


def _partitions_before(db: Database, cutoff: int) -> dict[int, dict[str, str]]:
    """PostgreSQL: the month partitions of the current schema before `cutoff`: by month, by
    the table they part ({'call': 'call_2024_09', …})."""
    found: dict[int, dict[str, str]] = {}
    for (name,) in run(db, "SELECT c.relname FROM pg_inherits i "
                           "JOIN pg_class c ON c.oid = i.inhrelid "
                           "JOIN pg_class p ON p.oid = i.inhparent "
                           "JOIN pg_namespace n ON n.oid = p.relnamespace "
                           "WHERE n.nspname = current_schema() AND p.relname IN (?, ?, ?)",
                       PARTITIONED):
        match = _PARTITION.match(name)
        if match and (start := month_start_ms(int(match[2]), int(match[3]))) < cutoff:
            found.setdefault(start, {})[match[1]] = name
    return found


def _start_of(name: str) -> int:
    year, month = name.split("-")
    return month_start_ms(int(year), int(month))
