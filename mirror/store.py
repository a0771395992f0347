"""The single writer of module.db: merges staged batches, links callbacks, keeps sync state.

Batches arrive as rows in a staging schema (`mirror.staging`) and are merged with INSERT … SELECT,
so the writer spends no Python time per row; reads for pages and the CLI go through
`mirror.queries`.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterable

from peewee import SqliteDatabase

from mirror import staging
from mirror.calls import Call, CallbackFacts, CallbackLinks, Leg
from mirror.hangups import CallHangup
from mirror.live import LiveCall
from mirror.rollups import kept_by_writer
from mirror.schema import CALL_MENUS, CALL_NAMES, CALL_QUEUES
from mirror.staging import CALL_COLUMNS, CALL_EXTRAS, LEG_COLUMNS

_CHUNK = 900  # stays under SQLite's bound-parameter limit


def _chunks(values: list, size: int = _CHUNK):
    for i in range(0, len(values), size):
        yield values[i:i + size]


class Store:
    """Writes the mirror. One instance per writer process; every write inside `batch()`."""

    def __init__(self, db: SqliteDatabase):
        self.db = db
        self.conn = db.connection()
        self._revision: int | None = None
        if not self.conn.execute(
                "SELECT 1 FROM pragma_database_list WHERE name = 'scratch'").fetchone():
            for schema in ("scratch", "fixup"):
                self.conn.execute(f"ATTACH DATABASE ':memory:' AS {schema}")
                staging.create(self.conn, schema)
            self.conn.execute(
                "CREATE TABLE scratch.relink_window (ext_key PRIMARY KEY, lo, hi) WITHOUT ROWID")
            self.conn.execute("CREATE TABLE scratch.relinked (linkedid PRIMARY KEY, callback_of, "
                              "returned_by, callback_attempts, status) WITHOUT ROWID")

    @contextmanager
    def batch(self):
        """One transaction: rows and the sync cursor commit together, or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._revision = None
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

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
            for row in self.conn.execute(
                    f"SELECT {cols} FROM leg WHERE linkedid IN ({marks})", chunk):
                leg = Leg(*row[:19], bool(row[19]), *row[20:])
                found.setdefault(leg.linkedid, []).append(leg)
        return found

    # --- calls ---------------------------------------------------------------------------------

    @contextmanager
    def attached(self, path: str, schema: str = "batch"):
        """A staged batch in a scratch file (from a worker), readable as `schema`."""
        self.conn.execute("ATTACH DATABASE ? AS " + schema, (path,))
        try:
            yield schema
        finally:
            self.conn.execute("DETACH DATABASE " + schema)

    def stage(self, legs: list[Leg], calls: list[Call], schema: str = "scratch") -> str:
        """Stage rows in an in-memory schema (`scratch` or `fixup`), replacing what it held."""
        staging.clear(self.conn, schema)
        staging.stage(self.conn, legs, calls, schema)
        return schema

    def merge(self, schema: str) -> dict[str, tuple[str | None, int, int]]:
        """Upsert the staged legs and calls (with their employees, numbers and names); returns
        linkedid -> (ext_key, start, end) of the calls it replaced, as they were."""
        conn = self.conn
        replaced = f"SELECT c.id FROM {schema}.call s JOIN call c ON c.linkedid = s.linkedid"
        before = {linkedid: tuple(span) for linkedid, *span in conn.execute(
            f"SELECT c.linkedid, c.ext_key, c.start_ms, c.end_ms FROM {schema}.call s "
            f"JOIN call c ON c.linkedid = s.linkedid")}
        deleted = self._deleted()
        if "call" in deleted:                  # deleted calls stay deleted (tombstones)
            for table in ("leg", "call", "employee", "number"):
                conn.execute(f"DELETE FROM {schema}.{table} WHERE linkedid IN "
                             f"(SELECT linkedid FROM deletion WHERE what = 'call')")
        leg_cols = ", ".join(LEG_COLUMNS)
        conn.execute(
            f"INSERT INTO leg ({leg_cols}) SELECT {leg_cols} FROM {schema}.leg WHERE true "
            f"ON CONFLICT (uniqueid) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in LEG_COLUMNS if c != "uniqueid"))
        if before:
            self._forget_indexes(replaced)
        for extras in (CALL_QUEUES, CALL_MENUS):   # from all the calls' legs, before writing
            conn.execute(extras.format(table=f"{schema}.call", calls="true"))
        call_cols = ", ".join(CALL_COLUMNS + CALL_EXTRAS)
        with kept_by_writer(conn, f"SELECT linkedid FROM {schema}.call", "scratch"):
            conn.execute(
                f"INSERT INTO call ({call_cols}, revision) SELECT {call_cols}, ? "
                f"FROM {schema}.call WHERE true ON CONFLICT (linkedid) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in (*CALL_COLUMNS, *CALL_EXTRAS,
                                                            "revision") if c != "linkedid"),
                (self._stamp(),))
        staged = f"linkedid IN (SELECT linkedid FROM {schema}.call)"
        if "recordings" in deleted:            # deleted recordings are not listed again
            gone = "linkedid IN (SELECT linkedid FROM deletion WHERE what = 'recordings')"
            conn.execute(f"UPDATE call SET recordings = '[]' WHERE {staged} AND {gone}")
            conn.execute(f"UPDATE leg SET recordingfile = '' WHERE {staged} AND {gone}")
        conn.execute(f"DELETE FROM call_gone WHERE {staged}")
        conn.execute(
            f"INSERT OR IGNORE INTO call_employee (extension, start_ms, call_id, placed) "
            f"SELECT e.extension, e.start_ms, c.id, e.placed FROM {schema}.employee e "
            f"JOIN call c ON c.linkedid = e.linkedid")
        conn.execute(
            f"INSERT INTO call_number (rowid, numbers) SELECT c.id, n.numbers "
            f"FROM {schema}.number n JOIN call c ON c.linkedid = n.linkedid")
        conn.execute("INSERT INTO call_name (rowid, names) " + CALL_NAMES.format(
            calls=f"linkedid IN (SELECT linkedid FROM {schema}.call)"))
        return before

    def _deleted(self) -> set[str]:
        """What was ever deleted ('call', 'recordings'): a merge then keeps it deleted."""
        return {what for what in ("call", "recordings") if self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM deletion WHERE what = ?)", (what,)).fetchone()[0]}

    def unsettled_deletions(self) -> list[tuple[str | None, int, int]]:
        """(ext_key, start, end) of the calls deleted since callbacks were last re-linked
        around them (a deleted callback no longer returns its missed call); marks them done."""
        spans = self.conn.execute(
            "SELECT ext_key, start_ms, end_ms FROM deletion WHERE relinked = 0").fetchall()
        if spans:
            self.conn.execute("UPDATE deletion SET relinked = 1 WHERE relinked = 0")
        return spans

    def _forget_indexes(self, call_ids: str, params=()) -> None:
        """Remove what indexes these calls (`call_ids`: SQL giving their ids) by employee,
        number and name, before they are written again or removed."""
        self.conn.execute(f"DELETE FROM call_employee WHERE call_id IN ({call_ids})", params)
        for table in ("call_number", "call_name"):
            self.conn.execute(f"DELETE FROM {table} WHERE rowid IN ({call_ids})", params)

    # --- calls in progress --------------------------------------------------------------------

    def hold_back(self, schema: str, linkedids) -> None:
        """Drop the staged calls still in progress (their legs stay staged)."""
        for chunk in _chunks(list(linkedids)):
            marks = ",".join("?" * len(chunk))
            for table in ("call", "employee", "number"):
                self.conn.execute(
                    f"DELETE FROM {schema}.{table} WHERE linkedid IN ({marks})", chunk)

    def reopen(self, linkedids) -> list[tuple[str | None, int, int]]:
        """Remove mirrored calls that are in progress again (a leg of theirs reappeared in the
        PBX's in-progress table); returns their (ext_key, start, end) for re-linking."""
        spans = []
        for chunk in _chunks(list(linkedids)):
            marks = ",".join("?" * len(chunk))
            found = self.conn.execute(
                f"SELECT id, ext_key, start_ms, end_ms FROM call WHERE linkedid IN ({marks})",
                chunk).fetchall()
            if not found:
                continue
            ids = [row[0] for row in found]
            id_marks = ",".join("?" * len(ids))
            self._forget_indexes(id_marks, ids)
            self.conn.execute(
                f"INSERT OR REPLACE INTO call_gone (linkedid, revision, employees) "
                f"SELECT linkedid, ?, employees FROM call WHERE id IN ({id_marks})",
                (self._stamp(), *ids))
            self.conn.execute(f"DELETE FROM call WHERE id IN ({id_marks})", ids)
            spans += [tuple(row[1:]) for row in found]
        return spans

    def live_ids(self) -> set[str]:
        """The calls shown in progress by the last sync."""
        return {linkedid for (linkedid,) in self.conn.execute("SELECT linkedid FROM live_call")}

    def replace_live(self, calls: list[LiveCall]) -> None:
        self._stamp()
        self.conn.execute("DELETE FROM live_call")
        self.conn.executemany(
            "INSERT INTO live_call (linkedid, start_ms, direction, state, since_ms, src, "
            "src_name, dst, dst_name, external_number, did, line, employees, parties) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((c.linkedid, c.start, c.direction, c.state, c.since, c.src, c.src_name, c.dst,
              c.dst_name, c.external_number, c.did, c.line, json.dumps(c.employees),
              json.dumps(c.parties, ensure_ascii=False)) for c in calls))

    def spanning(self, schema: str, replaced) -> list[str]:
        """Replaced calls whose staged version missed some of their legs (those came in an
        earlier batch: a call that was not mirrored yet had no other legs to miss)."""
        partial = []
        for chunk in _chunks(list(replaced)):
            partial += [lid for (lid,) in self.conn.execute(
                f"SELECT s.linkedid FROM {schema}.call s WHERE s.linkedid IN "
                f"({','.join('?' * len(chunk))}) AND s.leg_count < "
                f"(SELECT count(*) FROM leg l WHERE l.linkedid = s.linkedid)", chunk)]
        return partial

    def spans(self, schema: str) -> list[tuple[str | None, int, int]]:
        """(ext_key, start, end) of the staged calls."""
        return self.conn.execute(f"SELECT ext_key, start_ms, end_ms FROM {schema}.call").fetchall()

    def callback_context(self, windows: dict[str, tuple[int, int]]):
        """(facts, current links) of the calls of each external key starting in its window.

        Only keys where linking can matter: with a missed call, or with links to clear.
        """
        self.conn.execute("DELETE FROM scratch.relink_window")
        self.conn.executemany("INSERT INTO scratch.relink_window VALUES (?, ?, ?)",
                              ((key, lo, hi) for key, (lo, hi) in windows.items()))
        rows = self.conn.execute(
            "SELECT c.ext_key, c.linkedid, c.start_ms, c.end_ms, c.direction, c.answered, "
            "c.status, c.transferred_to, c.callback_of, c.returned_by, c.callback_attempts "
            "FROM scratch.relink_window w "  # CROSS JOIN: the windows drive the loop
            "CROSS JOIN call c ON c.ext_key = w.ext_key AND c.start_ms BETWEEN w.lo AND w.hi "
            "WHERE EXISTS (SELECT 1 FROM call m WHERE m.ext_key = w.ext_key "
            "  AND m.start_ms BETWEEN w.lo AND w.hi AND (m.status = 'missed' "
            "  OR m.callback_of IS NOT NULL OR m.returned_by IS NOT NULL "
            "  OR m.callback_attempts > 0))")
        out: dict[str, list[tuple[CallbackFacts, CallbackLinks]]] = {}
        for (key, linkedid, start, end, direction, answered, status, transferred,
             callback_of, returned_by, attempts) in rows:
            facts = CallbackFacts(linkedid, start, end, direction, bool(answered),
                                  _base_status(direction, bool(answered), status, transferred))
            links = CallbackLinks(callback_of, returned_by, attempts, status)
            out.setdefault(key, []).append((facts, links))
        return out

    def update_links(self, changed: dict[str, CallbackLinks]) -> None:
        if not changed:
            return
        revision = self._stamp()
        self.conn.execute("DELETE FROM scratch.relinked")
        self.conn.executemany(
            "INSERT INTO scratch.relinked VALUES (?, ?, ?, ?, ?)",
            ((linkedid, l.callback_of, l.returned_by, l.callback_attempts, l.status)
             for linkedid, l in changed.items()))
        with kept_by_writer(self.conn, "SELECT linkedid FROM scratch.relinked",
                            "scratch"):
            self.conn.execute(
                "UPDATE call SET callback_of = r.callback_of, returned_by = r.returned_by, "
                "callback_attempts = r.callback_attempts, status = r.status, revision = ? "
                "FROM scratch.relinked r WHERE call.linkedid = r.linkedid", (revision,))

    def replace_directory(self, employees: dict[str, str], groups: dict[str, list[str]]) -> None:
        """The PBX's employees and groups as of this sync."""
        self.conn.execute("DELETE FROM employee")
        self.conn.executemany("INSERT INTO employee (extension, name) VALUES (?, ?)",
                              employees.items())
        self.conn.execute("DELETE FROM group_member")
        self.conn.executemany(
            "INSERT OR IGNORE INTO group_member (group_name, extension) VALUES (?, ?)",
            [(name, ext) for name, extensions in groups.items() for ext in extensions])

    # --- who hung up ----------------------------------------------------------------------------

    def record_hangups(self, hangups: Iterable[CallHangup]) -> int:
        """Keep who ended these calls; a call's first row stays (a resync never touches them).
        Mirrored calls that got one are stamped, so open pages show it. Returns rows added."""
        added = [h.linkedid for h in hangups if self.conn.execute(
            "INSERT OR IGNORE INTO call_hangup (linkedid, side, channel, number, cause, "
            "cause_txt, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (h.linkedid, h.side, h.channel, h.number, h.cause, h.cause_txt, h.at_ms)).rowcount]
        for chunk in _chunks(added):
            marks = ",".join("?" * len(chunk))
            if self.conn.execute(f"SELECT EXISTS (SELECT 1 FROM call WHERE linkedid IN ({marks}))",
                                 chunk).fetchone()[0]:
                self.conn.execute(f"UPDATE call SET revision = ? WHERE linkedid IN ({marks})",
                                  (self._stamp(), *chunk))
        return len(added)

    # --- sync state ----------------------------------------------------------------------------

    def state(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM sync_state"))

    def set_state(self, **values) -> None:
        self.conn.executemany(
            "INSERT INTO sync_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()])


def next_revision(db: SqliteDatabase) -> int:
    """Take the history's next revision, in the caller's transaction: a change of what pages
    show (the daemon's batches, and a deletion or a note written by the web or the CLI)."""
    db.execute_sql("INSERT INTO sync_state (key, value) VALUES ('revision', 1) "
                   "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
    return int(db.execute_sql("SELECT value FROM sync_state WHERE key = 'revision'").fetchone()[0])


def _base_status(direction: str, answered: bool, status: str, transferred_to: str) -> str:
    """The status a call has before callbacks (callback statuses replace answered/transferred)."""
    if status in ("client_called_back", "we_called_back"):
        return "transferred" if transferred_to != "[]" else "answered"
    return status
