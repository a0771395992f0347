"""Bulk load: the first sync of a long history into an empty SQLite mirror writes calls and legs
without what only readers need — the indexes of calls by filter, the triggers that keep the
rollups, the FTS5 rows of numbers and names — and builds all of it once, set-wise, at the end.

The load's state is in `sync_state`, committed with the batches: `bulk_load` while it is under
way and `bulk_sql:<name>` the SQL of each index and trigger set aside, restored word for word (the
schema after the build is that of a mirror written call by call). A sync killed at any moment
resumes the load; the build is one transaction. While the history is loading readers count from
the calls (`mirror.analytics.figures`) and a search says so (`mirror.queries`) instead of finding
only what is indexed so far. PostgreSQL keeps its indexes: it never loads in bulk.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Callable

from peewee import Database

from mirror.dialect import dialect_of, insert_rows, run
from mirror.rollups import ROLLUPS, returned_after
from mirror.schema import CALL_NAMES

LOADING = "bulk_load"
_SET_ASIDE = "bulk_sql:"
# The calls' numbers as the batches staged them (rowid: the call's id), for `call_number`.
NUMBERS = "bulk_number"
# What the writer's merge does not need: indexes of filters (its look-ups use the keys,
# `leg_linkedid`, `call_ext_key`, `call_returned_by` and `call_employee_call`; the page's
# `call_period` and `call_revision`, appended to in time order, keep the page quick meanwhile),
# and every trigger on calls (rollups and each returned call's wait, filled at the end).
DEFERRED_INDEXES = ("call_direction", "call_status", "call_queue", "call_recorded",
                    "call_unrecorded")


def loading(db: Database) -> bool:
    """Whether the history is still being loaded in bulk (its indexes are not built yet)."""
    return bool(run(db, "SELECT EXISTS (SELECT 1 FROM sync_state WHERE key = ?)",
                    (LOADING,)).fetchone()[0])


def can_begin(db: Database) -> bool:
    """A bulk load starts only on an empty SQLite mirror (nothing to keep indexed meanwhile)."""
    return not dialect_of(db).postgresql and not run(
        db, "SELECT EXISTS (SELECT 1 FROM call) OR EXISTS (SELECT 1 FROM leg)").fetchone()[0]


def begin(db: Database) -> None:
    """Set the deferred indexes and the triggers on calls aside (inside the caller's
    transaction)."""
    marks = ", ".join("?" * len(DEFERRED_INDEXES))
    objects = run(db, "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'call' AND "
                      f"(type = 'trigger' OR (type = 'index' AND name IN ({marks})))",
                  DEFERRED_INDEXES).fetchall()
    for kind, name, sql in objects:
        run(db, "INSERT INTO sync_state (key, value) VALUES (?, ?)", (_SET_ASIDE + name, sql))
        run(db, f'DROP {kind.upper()} "{name}"')
    run(db, f"CREATE TABLE {NUMBERS} (id INTEGER PRIMARY KEY, numbers TEXT)")
    run(db, "INSERT INTO sync_state (key, value) VALUES (?, '1')", (LOADING,))


@contextmanager
def sorting_on_disk(db: Database):
    """Around the build's transaction: its sorts (an index of millions of calls) spill to
    temporary files, not to the writer's memory (`temp_store`, set outside transactions)."""
    kept = int(run(db, "PRAGMA temp_store").fetchone()[0])
    run(db, "PRAGMA temp_store = FILE")
    try:
        yield
    finally:
        run(db, f"PRAGMA temp_store = {kept}")


def wait_for_callbacks(db: Database) -> None:
    """Each returned call's wait for its callback (inside the caller's transaction; committed
    before the build, which reads the calls as committed)."""
    returned = returned_after("call")
    run(db, f"UPDATE call SET returned_after_s = {returned} WHERE returned_by IS NOT NULL")


def roll_up(mirror: str, target: str) -> str:
    """The rollups of the calls committed in the mirror file `mirror`, written as tables of a
    new SQLite file `target` (returned): a helper process works them out while the writer
    builds the rest (`finish`)."""
    with closing(sqlite3.connect(target, isolation_level=None, uri=True)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("ATTACH DATABASE ? AS m", (Path(mirror).resolve().as_uri() + "?mode=ro",))
        conn.execute("BEGIN")             # one snapshot of the calls for every rollup
        for rollup in ROLLUPS:
            conn.execute(f"CREATE TABLE {rollup.table} AS {rollup.afresh('m.call')}")
        conn.execute("COMMIT")
    return target


def finish(db: Database, rolled_up: Callable[[], str]) -> None:
    """Build what the load left out, from the calls (inside the caller's transaction): the
    FTS5 rows, the rollups (`rolled_up` waits for the file of `roll_up`), then the indexes and
    triggers as they were. The triggers come last: the build itself must not fire them."""
    for table in ("call_number", "call_name"):
        run(db, f"DELETE FROM {table}")
    run(db, "INSERT INTO call_name (rowid, names) " + CALL_NAMES.format(calls="true"))
    run(db, f"INSERT INTO call_number (rowid, numbers) SELECT n.id, n.numbers FROM {NUMBERS} n "
            "JOIN call c ON c.id = n.id ORDER BY n.id")
    run(db, f"DROP TABLE {NUMBERS}")
    with closing(sqlite3.connect(rolled_up())) as rolled:
        for rollup in ROLLUPS:
            columns = (rollup.slot, *rollup.key_names, *rollup.measures)
            run(db, f"DELETE FROM {rollup.table}")
            insert_rows(db, f"{rollup.table} ({', '.join(columns)})", len(columns),
                        rolled.execute(f"SELECT * FROM {rollup.table}"))
    set_aside = run(db, "SELECT key, value FROM sync_state WHERE key LIKE ? "
                        "ORDER BY value LIKE 'CREATE TRIGGER%', key",
                    (_SET_ASIDE + "%",)).fetchall()
    for _key, sql in set_aside:
        run(db, sql)
    run(db, "DELETE FROM sync_state WHERE key = ? OR key LIKE ?", (LOADING, _SET_ASIDE + "%"))
