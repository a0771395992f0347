"""The single writer of module.db: merges staged batches, links callbacks, keeps sync state.

Batches arrive as rows in a staging area (`mirror.staging`) and are merged with INSERT … SELECT,
so the writer spends no Python time per row; reads for pages and the CLI go through
`mirror.queries`. The same statements run on SQLite and PostgreSQL (`mirror.dialect`); where
the engines differ: PostgreSQL's calls, legs and employees of calls are partitioned by month
(`start_ms` is part of their keys: a row whose start moved is moved first), a call row holds
its own `numbers` and `names` for search (SQLite: FTS5 tables), and the rollups are the
writer's to keep (SQLite: triggers, idle while the writer keeps them for a batch).

A central history (PostgreSQL) has one writer per PBX, at the same time: each stamps its calls,
legs, calls in progress and employees with its `pbx` id and keeps its own sync state; what
they all change is written under `mirror.dialect.lock_shared_rows`.

On PostgreSQL the writer looks a batch's calls up by linkedid only in the months they can be
in (`mirror.stamps`), not in every month's partition.

A history that keeps only some months (`mirror.retention`) has a cutoff, `RETAINED_FROM`: a
staged call that started before it is not written, with all its legs.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager, nullcontext
from typing import Iterable

from peewee import Database

from mirror import bulk, staging, stamps
from mirror.calls import LINKABLE, LINKED_COLUMNS, Call, CallbackFacts, CallbackLinks, Leg, linking
from mirror.dialect import (dialect_of, emptied, insert_rows, lock_shared_rows, ordered_join, run,
                            staged, write_transaction)
from mirror.hangups import CallHangup
from mirror.live import LiveCall
from mirror.pbxtime import linkedid_epoch_ms
from mirror.rollups import kept_by_writer
from mirror.schema import CALL_NAMES, PG_CALL_NAMES, month_partitions
from mirror.staging import CALL_COLUMNS, CALL_EXTRAS, LEG_COLUMNS
from mirror.stamps import ANYWHERE, EVERYWHERE, Span

_CHUNK = 900  # stays under SQLite's bound-parameter limit
_DAY_MS = 86_400_000
# The writer's own tables beside the staged batches: the windows of external keys whose
# callbacks are re-linked, and the links that changed (read by the webhooks' queue too).
_LINKING_DDL = ("CREATE TABLE {window} (ext_key PRIMARY KEY, lo, hi, alone) WITHOUT ROWID",
                "CREATE TABLE {relinked} (linkedid PRIMARY KEY, start_ms, callback_of, "
                "returned_by, callback_attempts, status) WITHOUT ROWID")
_PG_LINKING_DDL = ("CREATE TABLE IF NOT EXISTS {window} (ext_key text PRIMARY KEY, lo bigint, "
                   "hi bigint, alone integer)",
                   "CREATE TABLE IF NOT EXISTS {relinked} (linkedid text PRIMARY KEY, "
                   "start_ms bigint, callback_of text, returned_by text, "
                   "callback_attempts integer, status text)")


# The sync state that belongs to one PBX's history (its reading position, its file, its longest
# call, its timezone and number matching, how far its calls start from their stamps): kept as
# `<name>:<pbx id>` in a central history (one PBX's daemon never changes another's), as
# `<name>` for the only PBX.
PBX_STATE = frozenset({"cursor", "cursor_uniqueid", "resyncs", "cdr_db", "longest_call_ms",
                       "timezone", "number_match_digits", stamps.REACH})
# The first instant the history keeps (`mirror.retention`): calls starting before it are not
# written, whatever the PBX still has. The history's, shared by every PBX.
RETAINED_FROM = "retained_from_ms"


def state_key(name: str, pbx: str) -> str:
    """The `sync_state` key of the state `name` of PBX `pbx` ('' for the only one)."""
    return f"{name}:{pbx}" if pbx and name in PBX_STATE else name


def state_value(db: Database, key: str) -> str | None:
    """One value of `sync_state`. Every request and every open page's ask reads some: plain
    SQL, without building the query each time (a third of a cached ask's time)."""
    row = run(db, "SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _chunks(values: list, size: int = _CHUNK):
    for i in range(0, len(values), size):
        yield values[i:i + size]


class Store:
    """Writes the mirror. One instance per writer process; every write inside `batch()`.
    `pbx`: the PBX whose history it writes (the setting `pbx.id`; '' for the only one)."""

    def __init__(self, db: Database, pbx: str = ""):
        self.db = db
        self.pbx = pbx
        self.postgresql = dialect_of(db).postgresql
        self._revision: int | None = None
        self._known_reach: int | None = None     # this PBX's `stamps.REACH`, once read
        # A bulk load in progress (`mirror.bulk`): no FTS5 rows, no rollups until it is built.
        self.bulk = not self.postgresql and bulk.loading(db)
        self.relinked = staged(db, "scratch", "relinked")
        self._window = staged(db, "scratch", "relink_window")
        if self.postgresql or not run(
                db, "SELECT 1 FROM pragma_database_list WHERE name = 'scratch'").fetchone():
            self._make_staging()

    def _make_staging(self) -> None:
        """The writer's staging areas, once per connection (on PostgreSQL, where a lost
        connection is made again, also at each batch: they went with the old one)."""
        for schema in ("scratch", "fixup"):
            staging.create_area(self.db, schema)
        for statement in _PG_LINKING_DDL if self.postgresql else _LINKING_DDL:
            self._run(statement.format(window=self._window, relinked=self.relinked))

    def _run(self, text: str, params: tuple | list = ()):
        return run(self.db, text, params)

    @contextmanager
    def batch(self):
        """One transaction: rows and the sync cursor commit together, or not at all."""
        with write_transaction(self.db):
            if self.postgresql:
                self._make_staging()
            self._revision = None
            yield self

    def _stamp(self) -> int:
        """This transaction's revision (taken at its first change of what pages show): the
        calls it writes carry it, so open pages ask for what changed since theirs."""
        if self._revision is None:
            self._revision = next_revision(self.db)
        return self._revision

    # --- legs ----------------------------------------------------------------------------------

    def legs_of(self, linkedids) -> dict[str, list[Leg]]:
        found: dict[str, list[Leg]] = {}
        cols = ", ".join(LEG_COLUMNS)
        for chunk in _chunks(list(linkedids)):
            marks = ",".join("?" * len(chunk))
            within = self._span_of(chunk).within("start_ms")
            for row in self._run(f"SELECT {cols} FROM leg WHERE linkedid IN ({marks}){within}",
                                 chunk):
                leg = Leg(*row[:19], bool(row[19]), *row[20:])
                found.setdefault(leg.linkedid, []).append(leg)
        return found

    # --- calls ---------------------------------------------------------------------------------

    @contextmanager
    def attached(self, path: str, schema: str = "batch"):
        """A staged batch in a scratch file (from a worker), readable as `schema`: attached on
        SQLite, copied into the connection's staging tables on PostgreSQL."""
        if not self.postgresql:
            self._run("ATTACH DATABASE ? AS " + schema, (path,))
            try:
                yield schema
            finally:
                self._run("DETACH DATABASE " + schema)
            return
        staging.create_area(self.db, schema)
        staging.clear(self.db, schema)
        with closing(sqlite3.connect(path)) as scratch:
            for table, columns in staging.STAGED_COLUMNS.items():
                insert_rows(self.db, f"{staged(self.db, schema, table)} ({', '.join(columns)})",
                            len(columns),
                            scratch.execute(f"SELECT {', '.join(columns)} FROM {table}"))
        staging.analyze(self.db, schema)
        self._partitions(*(staged(self.db, schema, table) for table in ("leg", "call")))
        yield schema

    def stage(self, legs: list[Leg], calls: list[Call], schema: str = "scratch") -> str:
        """Stage rows in the writer's staging area (`scratch` or `fixup`), replacing what it
        held."""
        staging.clear(self.db, schema)
        staging.stage_in(self.db, legs, calls, schema)
        return schema

    def merge(self, schema: str) -> dict[str, tuple[str | None, int, int]]:
        """Upsert the staged legs and calls (with their employees, numbers and names); returns
        linkedid -> (ext_key, start, end) of the calls it replaced, as they were."""
        leg, call, employee, number = (staged(self.db, schema, table) for table in staging.TABLES)
        self._drop_unretained(leg, call, employee, number)
        months = self._reaching(leg, call)
        mirrored = months.within("c.start_ms")
        replaced = f"SELECT c.id FROM {call} s JOIN call c ON c.linkedid = s.linkedid{mirrored}"
        before = {linkedid: tuple(span) for linkedid, *span in self._run(
            f"SELECT c.linkedid, c.ext_key, c.start_ms, c.end_ms FROM {call} s "
            f"JOIN call c ON c.linkedid = s.linkedid{mirrored}")}
        deleted = self._deleted()
        if "call" in deleted:                  # deleted calls stay deleted (tombstones)
            for table in (leg, call, employee, number):
                self._run(f"DELETE FROM {table} WHERE linkedid IN "
                          f"(SELECT linkedid FROM deletion WHERE what = 'call')")
        if self.postgresql:
            self._partitions(leg, call)
            # A leg whose start moved moves to its month's partition (its key has start_ms).
            self._run(f"UPDATE leg SET start_ms = s.start_ms FROM {leg} s "
                      "WHERE leg.uniqueid = s.uniqueid AND leg.start_ms <> s.start_ms"
                      + months.within("leg.start_ms"))
        leg_cols = ", ".join(LEG_COLUMNS)
        self._run(
            f"INSERT INTO leg ({leg_cols}, pbx) SELECT {leg_cols}, ? FROM {leg} WHERE true "
            f"ON CONFLICT ({self._key('uniqueid')}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in LEG_COLUMNS if c != "uniqueid"),
            (self.pbx,))
        if before:
            self._forget_indexes(replaced, within=months)
        with self._rollups_kept(f"SELECT linkedid FROM {call}", months):
            self._write_calls(call, number, months)
        staged_calls = f"linkedid IN (SELECT linkedid FROM {call})"
        if "recordings" in deleted:            # deleted recordings are not listed again
            gone = "linkedid IN (SELECT linkedid FROM deletion WHERE what = 'recordings')"
            self._run(f"UPDATE call SET recordings = '[]' WHERE {staged_calls} AND {gone}")
            self._run(f"UPDATE leg SET recordingfile = '' WHERE {staged_calls} AND {gone}")
        if self._run("SELECT EXISTS (SELECT 1 FROM call_gone)").fetchone()[0]:
            self._run(f"DELETE FROM call_gone WHERE {staged_calls}")
        self._run(
            f"INSERT INTO call_employee (extension, start_ms, call_id, placed) "
            f"SELECT e.extension, e.start_ms, c.id, e.placed FROM {employee} e "
            f"JOIN call c ON c.linkedid = e.linkedid{months.within('c.start_ms')} "
            f"WHERE true ON CONFLICT DO NOTHING")
        for table in self._search_tables:
            if table == "call_name":
                self._run("INSERT INTO call_name (rowid, names) "
                          + CALL_NAMES.format(calls=staged_calls))
            else:
                self._run(f"INSERT INTO {table} (rowid, numbers) SELECT c.id, n.numbers "
                          f"FROM {number} n JOIN call c ON c.linkedid = n.linkedid")
        return before

    def _drop_unretained(self, leg: str, call: str, employee: str, number: str) -> None:
        """Drop the staged calls that started before the retained history (with all their
        legs): a resync or a late leg of an old call does not bring a dropped month back. A
        call whose first legs came in an earlier batch (and were left out) is known by the
        start its linkedid carries (`mikopbx-<unix>.<n>`), a whole second before the cutoff
        (looked at for the calls starting within a day, or the longest call, after it)."""
        retained = retained_from_ms(self.db)
        if not retained:
            return
        begun = [linkedid for (linkedid,) in self._run(
            f"SELECT linkedid FROM {call} WHERE start_ms < ?",
            (retained + max(self.longest_call_ms(), _DAY_MS),))
            if (linkedid_epoch_ms(linkedid.rpartition(":")[2]) or retained) < retained - 1000]
        old = (f"SELECT linkedid FROM {leg} WHERE start_ms < {retained} "
               f"UNION SELECT linkedid FROM {call} WHERE start_ms < {retained}")
        for table in (employee, number, call, leg):        # legs last: `old` reads them
            self._run(f"DELETE FROM {table} WHERE linkedid IN ({old})")
            for chunk in _chunks(begun):
                self._run(f"DELETE FROM {table} WHERE linkedid IN "
                          f"({','.join('?' * len(chunk))})", chunk)

    def _write_calls(self, call: str, number: str, months: Span) -> None:
        """Upsert the staged calls (their rollups kept around it by the caller; mirrored in
        `months`)."""
        columns = (*CALL_COLUMNS, *CALL_EXTRAS)
        updated = [*columns, "revision", "pbx"]
        if self.postgresql:
            # A call whose start moved moves to its month's partition, keeping its id and links.
            self._run(f"UPDATE call SET start_ms = s.start_ms FROM {call} s "
                      "WHERE call.linkedid = s.linkedid AND call.start_ms <> s.start_ms"
                      + months.within("call.start_ms"))
            values = (", ".join(f"s.{c}" for c in columns) + ", ?, ?, coalesce(n.numbers, ''), "
                      + PG_CALL_NAMES.format(c="s"))
            source = f"{call} s LEFT JOIN {number} n ON n.linkedid = s.linkedid"
            updated += ["numbers", "names"]
        else:
            values, source = f"{', '.join(columns)}, ?, ?", call
        self._run(
            f"INSERT INTO call ({', '.join(updated)}) SELECT {values} FROM {source} WHERE true "
            f"ON CONFLICT ({self._key('linkedid')}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in updated if c != "linkedid"),
            (self._stamp(), self.pbx))

    @property
    def _search_tables(self) -> tuple[str, ...]:
        """Where the calls' numbers and names go as they are written (SQLite's FTS5 tables;
        while loading in bulk only the numbers, kept aside; PostgreSQL: columns of the call)."""
        if self.postgresql:
            return ()
        return (bulk.NUMBERS,) if self.bulk else ("call_number", "call_name")

    def _rollups_kept(self, linkedids: str, within: Span):
        """The rollups kept around statements writing these calls (starting `within`);
        nothing while a bulk load leaves them to its build."""
        if self.bulk:
            return nullcontext()
        return kept_by_writer(self.db, linkedids, "scratch", within, self._link_reach())

    def _key(self, column: str) -> str:
        """The unique key of calls (linkedid) or legs (uniqueid) an upsert meets: on
        PostgreSQL with the partition key beside it."""
        return f"{column}, start_ms" if self.postgresql else column

    def months(self, starts_ms) -> None:
        """Before a batch: make the months' partitions rows starting at `starts_ms` go to
        (PostgreSQL; in a transaction of their own, see `mirror.schema.month_partitions`)."""
        if self.postgresql:
            retained = retained_from_ms(self.db)
            month_partitions(self.db, [start for start in starts_ms if start >= retained])

    def _reaching(self, *tables: str) -> Span:
        """Where the calls of these staged tables (linkedid, start_ms) are, staged or mirrored
        (PostgreSQL): this PBX's reach raised first when one of them starts farther from its
        stamp than any before (`mirror.stamps`)."""
        if not self.postgresql:
            return EVERYWHERE
        lowest, highest, farthest = stamps.measure(
            self.db, " UNION ALL ".join(f"SELECT linkedid, start_ms FROM {t}" for t in tables))
        reach = self._reach()
        if reach != ANYWHERE and (farthest == ANYWHERE or farthest > reach):
            self._keep_reach(farthest)
        return stamps.span(lowest, highest, self._reach())

    def _reach(self) -> int:
        """This PBX's `stamps.REACH`, read once (only this writer raises it): measured from
        its rows the first time (a history written before it was kept)."""
        if self._known_reach is None:
            known = state_value(self.db, state_key(stamps.REACH, self.pbx))
            if known is None:
                *_, measured = stamps.measure(
                    self.db, "SELECT linkedid, start_ms FROM leg WHERE pbx = ? "
                    "UNION ALL SELECT linkedid, start_ms FROM call WHERE pbx = ?",
                    (self.pbx, self.pbx))
                self._keep_reach(measured)
            else:
                self._known_reach = int(known)
        return self._known_reach

    def _keep_reach(self, reach: int) -> None:
        self.set_state(**{stamps.REACH: reach})
        self._known_reach = reach      # if the batch rolls back, a wider bound: still exact

    def _link_reach(self) -> int | None:
        """`stamps.LINK_REACH` (None: not known, any); every PBX's writer may raise it."""
        known = state_value(self.db, stamps.LINK_REACH) if self.postgresql else None
        return None if known is None else int(known)

    def _keep_link_reach(self, reach_ms: int) -> None:
        """Before callbacks are linked over `reach_ms`: `stamps.LINK_REACH` reaches that far
        (the first time, also as far as the links already there: a history written before it
        was kept)."""
        known = self._link_reach()
        if known is None:
            known = self._run("SELECT coalesce(max(abs(r.start_ms - m.start_ms)), 0) FROM call m "
                              "JOIN call r ON r.linkedid = m.returned_by").fetchone()[0]
        elif reach_ms <= known:
            return
        self.set_state(**{stamps.LINK_REACH: max(int(known), reach_ms)})

    def _span_of(self, linkedids) -> Span:
        """Where the rows of these calls of this PBX are (PostgreSQL)."""
        return stamps.span_of(linkedids, self._reach()) if self.postgresql else EVERYWHERE

    def analyze(self) -> None:
        """After a large catch-up, the statistics of the partitioned tables the pages read
        afresh (PostgreSQL): the server's autovacuum analyses each month's partition, never
        the tables they are partitions of, whose statistics plan the queries of several
        months. Legs are read by their call only: not theirs (it would double the time)."""
        if self.postgresql:
            with self.db.atomic():
                self._run("ANALYZE call, call_employee")

    def _partitions(self, leg: str, call: str) -> None:
        """Make the months' partitions the staged rows go to (PostgreSQL)."""
        days = self._run(f"SELECT DISTINCT start_ms / {_DAY_MS} FROM (SELECT start_ms FROM {leg} "
                         f"UNION ALL SELECT start_ms FROM {call}) AS s WHERE start_ms >= ?",
                         (retained_from_ms(self.db),))
        month_partitions(self.db, [day * _DAY_MS for (day,) in days])

    def _deleted(self) -> set[str]:
        """What was ever deleted ('call', 'recordings'): a merge then keeps it deleted."""
        return {what for what in ("call", "recordings") if self._run(
            "SELECT EXISTS (SELECT 1 FROM deletion WHERE what = ?)", (what,)).fetchone()[0]}

    def unsettled_deletions(self) -> list[tuple[str | None, int, int]]:
        """(ext_key, start, end) of the calls deleted since callbacks were last re-linked
        around them (a deleted callback no longer returns its missed call); marks them done
        (any PBX's writer: after `lock_shared_rows`, taken before every shared row)."""
        lock_shared_rows(self.db)
        spans = self._run(
            "SELECT ext_key, start_ms, end_ms FROM deletion WHERE relinked = 0").fetchall()
        if spans:
            self._run("UPDATE deletion SET relinked = 1 WHERE relinked = 0")
        return spans

    def _forget_indexes(self, call_ids: str, params=(), within: Span = EVERYWHERE) -> None:
        """Remove what indexes these calls (`call_ids`: SQL giving their ids; starting
        `within`) by employee, number and name, before they are written again or removed (on
        PostgreSQL numbers and names are columns of the call row)."""
        self._run(f"DELETE FROM call_employee WHERE call_id IN ({call_ids})"
                  + within.within("start_ms"), params)
        for table in self._search_tables:
            self._run(f"DELETE FROM {table} WHERE rowid IN ({call_ids})", params)

    # --- calls in progress --------------------------------------------------------------------

    def hold_back(self, schema: str, linkedids) -> None:
        """Drop the staged calls still in progress (their legs stay staged)."""
        for chunk in _chunks(list(linkedids)):
            marks = ",".join("?" * len(chunk))
            for table in ("call", "employee", "number"):
                self._run(f"DELETE FROM {staged(self.db, schema, table)} "
                          f"WHERE linkedid IN ({marks})", chunk)

    def reopen(self, linkedids) -> list[tuple[str | None, int, int]]:
        """Remove mirrored calls that are in progress again (a leg of theirs reappeared in the
        PBX's in-progress table); returns their (ext_key, start, end) for re-linking."""
        spans = []
        for chunk in _chunks(list(linkedids)):
            marks = ",".join("?" * len(chunk))
            span = self._span_of(chunk)
            within = span.within("start_ms")
            found = self._run(f"SELECT id, ext_key, start_ms, end_ms FROM call "
                              f"WHERE linkedid IN ({marks}){within}", chunk).fetchall()
            if not found:
                continue
            ids = [row[0] for row in found]
            id_marks = ",".join("?" * len(ids))
            self._forget_indexes(id_marks, ids, span)
            self._run(
                f"INSERT INTO call_gone (linkedid, revision, employees) "
                f"SELECT linkedid, ?, employees FROM call WHERE linkedid IN ({marks}){within} "
                f"ON CONFLICT (linkedid) DO UPDATE SET revision = excluded.revision, "
                f"employees = excluded.employees", (self._stamp(), *chunk))
            # the calls just listed as gone (by this revision, a whole number: no mark needed)
            gone = f"SELECT linkedid FROM call_gone WHERE revision = {int(self._stamp())}"
            with self._rollups_kept(gone, span):
                self._run(f"DELETE FROM call WHERE linkedid IN ({marks}){within}", chunk)
            spans += [tuple(row[1:]) for row in found]
        return spans

    def live_ids(self) -> set[str]:
        """The calls of this PBX shown in progress by its last sync."""
        return {linkedid for (linkedid,) in self._run(
            "SELECT linkedid FROM live_call WHERE pbx = ?", (self.pbx,))}

    def replace_live(self, calls: list[LiveCall]) -> None:
        """This PBX's calls in progress (another PBX's are its own writer's)."""
        self._stamp()
        self._run("DELETE FROM live_call WHERE pbx = ?", (self.pbx,))
        insert_rows(
            self.db, "live_call (linkedid, start_ms, direction, state, since_ms, src, "
            "src_name, dst, dst_name, external_number, did, line, employees, parties, pbx)", 15,
            ((c.linkedid, c.start, c.direction, c.state, c.since, c.src, c.src_name, c.dst,
              c.dst_name, c.external_number, c.did, c.line, json.dumps(c.employees),
              json.dumps(c.parties, ensure_ascii=False), self.pbx) for c in calls))

    def spanning(self, schema: str, replaced) -> list[str]:
        """Replaced calls whose staged version missed some of their legs (those came in an
        earlier batch: a call that was not mirrored yet had no other legs to miss)."""
        partial = []
        for chunk in _chunks(list(replaced)):
            within = self._span_of(chunk).within("l.start_ms")
            partial += [lid for (lid,) in self._run(
                f"SELECT s.linkedid FROM {staged(self.db, schema, 'call')} s WHERE s.linkedid IN "
                f"({','.join('?' * len(chunk))}) AND s.leg_count < "
                f"(SELECT count(*) FROM leg l WHERE l.linkedid = s.linkedid{within})", chunk)]
        return partial

    def spans(self, schema: str) -> dict[str, tuple[str | None, int, int]]:
        """linkedid -> (ext_key, start, end) of the staged calls."""
        return {linkedid: tuple(span) for linkedid, *span in self._run(
            f"SELECT linkedid, ext_key, start_ms, end_ms FROM {staged(self.db, schema, 'call')}")}

    def callback_context(self, windows: dict[str, tuple[int, int]], reach_ms: int,
                         alone: dict[str, int] | None = None):
        """(facts, current links) of the calls of each external key starting in its window,
        to link callbacks over `reach_ms` (the callback window and the longest call).

        Only keys where linking can matter: with a missed call, or with links to clear; and
        of the keys `alone` (key -> the calls of a batch just written, linked among
        themselves, all of its calls in the window), only those with any other call there.
        Read under `lock_shared_rows`: the calls of every PBX committed before, its own.
        """
        lock_shared_rows(self.db)
        if self.postgresql:
            self._keep_link_reach(reach_ms)
        months = Span(min(lo for lo, _ in windows.values()),
                      max(hi for _, hi in windows.values())) if windows else EVERYWHERE
        self._run(emptied(self.db, self._window))
        alone = alone or {}
        insert_rows(self.db, self._window, 4,
                    ((key, lo, hi, alone.get(key, 0)) for key, (lo, hi) in windows.items()))
        if alone:
            window = self._window
            self._run(
                f"DELETE FROM {window} WHERE alone > 0 AND (SELECT count(*) FROM call o "
                f"WHERE o.ext_key = {window}.ext_key AND o.start_ms BETWEEN {window}.lo AND "
                f"{window}.hi{months.within('o.start_ms')}) = alone")
        rows = self._run(
            f"SELECT {', '.join('c.' + column for column in LINKED_COLUMNS)} "
            f"FROM {self._window} w "  # the windows drive the loop
            f"{ordered_join(self.db)} call c "
            f"ON c.ext_key = w.ext_key AND c.start_ms BETWEEN w.lo AND w.hi"
            f"{months.within('c.start_ms')} "
            "WHERE EXISTS (SELECT 1 FROM call m WHERE m.ext_key = w.ext_key "
            f"  AND m.start_ms BETWEEN w.lo AND w.hi{months.within('m.start_ms')} "
            f"  AND {LINKABLE.format(m='m')})")
        out: dict[str, list[tuple[CallbackFacts, CallbackLinks]]] = {}
        for key, facts, links in map(linking, rows):
            out.setdefault(key, []).append((facts, links))
        return out

    def returning_the_dropped(self, cutoff: int, reach_ms: int) -> list[tuple[str, int, int]]:
        """(ext_key, start, end) of the calls that start within `reach_ms` of the retained
        history's first instant and return a call that is no longer there (retention dropped
        it): their callbacks are linked again among the calls kept."""
        return self._run(
            "SELECT c.ext_key, c.start_ms, c.end_ms FROM call c WHERE c.start_ms BETWEEN ? AND ? "
            "AND c.callback_of IS NOT NULL AND NOT EXISTS (SELECT 1 FROM call m "
            "WHERE m.linkedid = c.callback_of)", (cutoff, cutoff + reach_ms)).fetchall()

    def update_links(self, changed: dict[str, tuple[int, CallbackLinks]]) -> None:
        """Write the callback links that changed: linkedid -> (the call's start, its links)."""
        if not changed:
            return
        revision = self._stamp()
        self._run(emptied(self.db, self.relinked))
        insert_rows(
            self.db, self.relinked, 6,
            ((linkedid, start, l.callback_of, l.returned_by, l.callback_attempts, l.status)
             for linkedid, (start, l) in changed.items()))
        starts = [start for start, _ in changed.values()]
        months = Span(min(starts), max(starts))
        with self._rollups_kept(f"SELECT linkedid FROM {self.relinked}", months):
            self._run(
                "UPDATE call SET callback_of = r.callback_of, returned_by = r.returned_by, "
                "callback_attempts = r.callback_attempts, status = r.status, revision = ? "
                f"FROM {self.relinked} r WHERE call.linkedid = r.linkedid "
                "AND call.start_ms = r.start_ms" + months.within("call.start_ms"), (revision,))

    def replace_directory(self, employees: dict[str, str], groups: dict[str, list[str]]) -> None:
        """The PBX's employees and groups as of this sync (another PBX's stay)."""
        self._run("DELETE FROM employee WHERE pbx = ?", (self.pbx,))
        insert_rows(self.db, "employee (extension, name, pbx)", 3,
                    [(extension, name, self.pbx) for extension, name in employees.items()])
        self._run("DELETE FROM group_member WHERE pbx = ?", (self.pbx,))
        insert_rows(self.db, "group_member (group_name, extension, pbx)", 3,
                    [(name, ext, self.pbx) for name, extensions in groups.items()
                     for ext in extensions], then="ON CONFLICT DO NOTHING")

    # --- who hung up ----------------------------------------------------------------------------

    def record_hangups(self, hangups: Iterable[CallHangup]) -> int:
        """Keep who ended these calls; a call's first row stays (a resync never touches them).
        Mirrored calls that got one are stamped, so open pages show it. Returns rows added."""
        added = [h.linkedid for h in hangups if self._run(
            "INSERT INTO call_hangup (linkedid, side, channel, number, cause, "
            "cause_txt, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (h.linkedid, h.side, h.channel, h.number, h.cause, h.cause_txt, h.at_ms)).rowcount]
        for chunk in _chunks(added):
            marks = ",".join("?" * len(chunk))
            within = self._span_of(chunk).within("start_ms")
            if self._run(f"SELECT EXISTS (SELECT 1 FROM call WHERE linkedid IN ({marks})"
                         f"{within})", chunk).fetchone()[0]:
                self._run(f"UPDATE call SET revision = ? WHERE linkedid IN ({marks}){within}",
                          (self._stamp(), *chunk))
        return len(added)

    # --- sync state ----------------------------------------------------------------------------

    def state(self) -> dict[str, str]:
        """The sync state as this PBX's writer sees it: the shared keys, and its own
        (PBX_STATE) without the PBX in their names."""
        found = {}
        for key, value in self._run("SELECT key, value FROM sync_state"):
            name, _, pbx = key.partition(":")
            if name not in PBX_STATE:
                found[key] = value
            elif pbx == self.pbx:
                found[name] = value
        return found

    def set_state(self, **values) -> None:
        insert_rows(self.db, "sync_state (key, value)", 2,
                    [(state_key(k, self.pbx), str(v)) for k, v in values.items()],
                    then="ON CONFLICT (key) DO UPDATE SET value = excluded.value")

    def longest_call_ms(self) -> int:
        """The longest call of any PBX's (a callback may return a call of another PBX)."""
        return max((int(value) for key, value in self._run(
            "SELECT key, value FROM sync_state WHERE key LIKE 'longest_call_ms%'")
            if key.partition(":")[0] == "longest_call_ms"), default=0)


def retained_from_ms(db: Database) -> int:
    """The writer's cutoff (`RETAINED_FROM`); 0: the whole history is kept."""
    return int(state_value(db, RETAINED_FROM) or 0)


def next_revision(db: Database) -> int:
    """Take the history's next revision, in the caller's transaction: a change of what pages
    show (the daemon's batches, and a deletion or a note written by the web or the CLI). On
    PostgreSQL after `lock_shared_rows`: revisions go in commit order."""
    lock_shared_rows(db)
    db.execute_sql("INSERT INTO sync_state (key, value) VALUES ('revision', 1) "
                   "ON CONFLICT (key) DO UPDATE SET value = CAST(sync_state.value AS INTEGER) + 1")
    return int(db.execute_sql("SELECT value FROM sync_state WHERE key = 'revision'").fetchone()[0])
