"""Bulk load: the first sync of a long history into an empty SQLite mirror writes calls and legs
without what only readers need — the indexes of calls by filter, the triggers that keep the
rollups, the FTS5 rows of numbers and names, the callback links between calls of different
batches — and builds all of it once, set-wise, at the end.

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
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from peewee import Database

from mirror.calls import LINKABLE, LINKED_COLUMNS, CallbackLinks, changed_links, linking
from mirror.dialect import dialect_of, insert_rows, run
from mirror.rollups import ROLLED_COLUMNS, ROLLUPS, returned_after
from mirror.schema import CALL_NAMES

LOADING = "bulk_load"
_SET_ASIDE = "bulk_sql:"
# The calls' numbers as the batches staged them (rowid: the call's id), for `call_number`.
NUMBERS = "bulk_number"
# What the writer's merge does not need: indexes of filters and of numbers (its look-ups use
# the keys, `leg_linkedid`, `call_returned_by` and `call_employee_call`; callbacks are linked
# within each batch, across batches by the build; the page's `call_period` and `call_revision`,
# appended to in time order, keep the page quick meanwhile), and every trigger on calls
# (rollups and each returned call's wait, filled at the end).
DEFERRED_INDEXES = ("call_direction", "call_status", "call_queue", "call_recorded",
                    "call_unrecorded", "call_ext_key")


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


def link_and_roll_up(mirror: str, target: str, window_ms: int) -> str:
    """Work out, from the calls committed in the mirror file `mirror`, the callback links the
    load's batches could not see (each batch linked only its own calls): table `links`
    (linkedid, start_ms and the links of each call whose links change); then the rollups of
    the calls so linked, a table each. Written into a new SQLite file `target` (returned) by a
    helper process while the writer builds the search rows and indexes (`build_indexes`)."""
    with closing(sqlite3.connect(target, isolation_level=None, uri=True)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("ATTACH DATABASE ? AS m", (Path(mirror).resolve().as_uri() + "?mode=ro",))
        conn.execute("BEGIN")             # one snapshot of the calls throughout
        conn.execute("CREATE TABLE links (linkedid TEXT PRIMARY KEY, start_ms, callback_of, "
                     "returned_by, callback_attempts, status)")
        rows = conn.execute(
            f"SELECT {', '.join(LINKED_COLUMNS)} FROM m.call WHERE ext_key IN "
            f"(SELECT ext_key FROM m.call c WHERE {LINKABLE.format(m='c')}) "
            "ORDER BY ext_key, start_ms")
        for _key, group in groupby(map(linking, rows), key=itemgetter(0)):
            entries = [(facts, links) for _, facts, links in group]
            conn.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?, ?)", (
                (linkedid, start, new.callback_of, new.returned_by, new.callback_attempts,
                 new.status) for linkedid, (start, new) in changed_links(entries, window_ms)))
        conn.execute(f"CREATE TEMP VIEW linked_call AS {_LINKED_CALLS}")
        for rollup in ROLLUPS:
            conn.execute(f"CREATE TABLE {rollup.table} AS {rollup.afresh('linked_call')}")
        conn.execute("COMMIT")
    return target


# The mirror's calls (`m.call`) with the links of `links` (SQLite in `link_and_roll_up`), and
# each returned call's wait for its callback: what the rollups read of them.
_LINK_COLUMNS = ("callback_of", "returned_by", "callback_attempts", "status")
_LINKED_CALLS = (
    f"SELECT *, CASE WHEN v.returned_by IS NULL THEN NULL ELSE {returned_after('v')} END "
    "AS returned_after_s FROM (SELECT "
    + ", ".join(f"CASE WHEN l.linkedid IS NULL THEN c.{c} ELSE l.{c} END AS {c}"
                if c in _LINK_COLUMNS else f"c.{c}"
                for c in dict.fromkeys((*ROLLED_COLUMNS, *_LINK_COLUMNS))
                if c != "returned_after_s")
    + " FROM m.call c LEFT JOIN links l ON l.linkedid = c.linkedid) AS v")


def links(built: str) -> dict[str, tuple[int, CallbackLinks]]:
    """The links `link_and_roll_up` found (in its file `built`): linkedid -> (start, links)."""
    with closing(sqlite3.connect(built)) as conn:
        return {linkedid: (start, CallbackLinks(*found)) for linkedid, start, *found
                in conn.execute("SELECT * FROM links")}


def build_indexes(db: Database) -> None:
    """The FTS5 rows of the calls' numbers and names and the indexes set aside (inside the
    caller's transaction)."""
    for table in ("call_number", "call_name"):
        run(db, f"DELETE FROM {table}")
    run(db, "INSERT INTO call_name (rowid, names) " + CALL_NAMES.format(calls="true"))
    run(db, f"INSERT INTO call_number (rowid, numbers) SELECT n.id, n.numbers FROM {NUMBERS} n "
            "JOIN call c ON c.id = n.id ORDER BY n.id")
    run(db, f"DROP TABLE {NUMBERS}")
    _restore(db, "index")


def finish(db: Database, built: str) -> None:
    """Build the rest of what the load left out (inside the caller's transaction, after
    `build_indexes` and the links of `links`): each returned call's wait, the rollups (from
    `link_and_roll_up`'s file `built`), then the triggers as they were. The triggers come
    last: the build itself must not fire them."""
    returned = returned_after("call")
    run(db, f"UPDATE call SET returned_after_s = {returned} WHERE returned_by IS NOT NULL")
    with closing(sqlite3.connect(built)) as rolled:
        for rollup in ROLLUPS:
            columns = (rollup.slot, *rollup.key_names, *rollup.measures)
            run(db, f"DELETE FROM {rollup.table}")
            insert_rows(db, f"{rollup.table} ({', '.join(columns)})", len(columns),
                        rolled.execute(f"SELECT * FROM {rollup.table}"))
    _restore(db, "trigger")
    run(db, "DELETE FROM sync_state WHERE key = ?", (LOADING,))


def _restore(db: Database, kind: str) -> None:
    """Put the indexes or the triggers set aside back, with their own SQL."""
    for key, sql in run(db, "SELECT key, value FROM sync_state WHERE key LIKE ? "
                            "AND value LIKE ? ORDER BY key",
                        (_SET_ASIDE + "%", f"CREATE {kind.upper()}%")).fetchall():
        run(db, sql)
        run(db, "DELETE FROM sync_state WHERE key = ?", (key,))
