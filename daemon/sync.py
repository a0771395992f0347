"""Brings the mirror up to date with the PBX: new rows by `id` cursor, changed linkedids, the
callbacks those calls touch. No full rebuild; the cursor commits with the rows it covers.
"""
from __future__ import annotations

import gc
import logging
from contextlib import contextmanager
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from daemon.calls import Call, Leg, classify, link_callbacks
from daemon.pbxtime import PbxClock
from daemon.source import CdrReader, CdrSource, PbxConfig, leg_from_row
from db.store import Store

log = logging.getLogger("extcdr.sync")

DAY_MS = 86_400_000


@dataclass(frozen=True)
class SyncOptions:
    callback_window_s: int = 86_400
    batch_rows: int = 20_000
    # Rows before the cursor that are re-read each pass: the PBX updates rows after insert.
    trailing_rows: int = 2_000


@dataclass
class _Batch:
    legs: list[Leg]
    calls: list[Call]
    legs_by_call: dict[str, dict[str, Leg]]   # every leg of every call in `calls`


class _Writer:
    """Commits prepared batches on its own thread and connection, one batch at a time, at
    most two behind the reader; the first error is raised in the caller's thread."""

    def __init__(self, sync: "Sync"):
        self.sync = sync
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extcdr-writer")
        self.pending: deque = deque()            # (future, batch)
        self.store: Store | None = None

    @property
    def in_flight(self) -> list[dict[str, dict[str, Leg]]]:
        """Legs of batches submitted but perhaps not committed yet."""
        return [batch.legs_by_call for _, batch in self.pending]

    def commit(self, batch: _Batch, cursor_row: tuple) -> None:
        while len(self.pending) >= 2:
            future, _ = self.pending.popleft()
            future.result()
        self.pending.append((self.pool.submit(self._commit, batch, cursor_row), batch))

    def _commit(self, batch: _Batch, cursor_row: tuple) -> None:
        if self.store is None:  # peewee gives this thread its own connection
            self.store = Store(self.sync.store.db)
        self.sync._commit(self.store, batch, cursor_row)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            while self.pending:
                future, _ = self.pending.popleft()
                if exc_type is None:
                    future.result()
                else:
                    future.cancel() or future.exception()
        finally:
            if self.store is not None:
                self.pool.submit(self.store.db.close).result()
            self.pool.shutdown()


@contextmanager
def _no_cycle_collection():
    """A batch makes ~10^5 short-lived acyclic objects; the cycle collector would rescan them
    over and over (it doubles the time of a backfill). Reference counting frees them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Sync:
    """One writer's view of the PBX history: call `step()` until it returns 0."""

    def __init__(self, store: Store, source: CdrSource, config: PbxConfig, clock: PbxClock,
                 options: SyncOptions = SyncOptions()):
        self.store = store
        self.source = source
        self.config = config
        self.clock = clock
        self.options = options
        self.window_ms = options.callback_window_s * 1000
        # How far a change can reach: the callback window plus the longest plausible call.
        self.reach_ms = self.window_ms + DAY_MS

    # --- passes --------------------------------------------------------------------------------

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Read every new row, then re-check the trailing window; returns rows read.

        Batches are pipelined: while a writer thread commits batch N (SQLite works without
        the GIL), this thread reads and classifies batch N+1 — a backfill uses both cores.
        """
        with self.store.batch():
            self.store.replace_directory(self.config.directory.employees, self.config.groups)
            self.store.set_state(timezone=self.clock.tz_name,
                                 cdr_db=str(self.source.path.resolve()),
                                 number_match_digits=self.config.directory.number_match_digits)
        total = 0
        with _no_cycle_collection(), _Writer(self) as writer:
            cursor = None
            while True:
                with self.source.reading() as reader:
                    if cursor is None:
                        cursor = self._cursor(reader)
                    rows = reader.rows_after(cursor, self.options.batch_rows)
                    pending = max(0, reader.max_id() - rows[-1][0]) if rows else 0
                if not rows:
                    break
                writer.commit(self._prepare(self._legs(rows), writer.in_flight), rows[-1])
                cursor = rows[-1][0]
                total += len(rows)
                if progress:
                    progress(len(rows), pending)
        self.recheck_tail()
        return total

    def step(self) -> tuple[int, int]:
        """One batch of new rows, committed before returning: (rows read, rows pending)."""
        with _no_cycle_collection(), self.source.reading() as reader:
            cursor = self._cursor(reader)
            rows = reader.rows_after(cursor, self.options.batch_rows)
            if not rows:
                return 0, 0
            batch = self._prepare(self._legs(rows))
            self._commit(self.store, batch, cursor_row=rows[-1])
            return len(rows), max(0, reader.max_id() - rows[-1][0])

    def recheck_tail(self) -> int:
        """Re-read the last rows before the cursor; apply those the PBX changed since."""
        with _no_cycle_collection(), self.source.reading() as reader:
            cursor = self._cursor(reader)
            rows = reader.rows_between(cursor - self.options.trailing_rows + 1, cursor)
            return self._apply_changed(rows)

    def refresh(self, linkedids) -> int:
        """Re-read these calls from the PBX (an AMI event said they changed)."""
        with _no_cycle_collection(), self.source.reading() as reader:
            return self._apply_changed(reader.rows_of(linkedids))

    # --- internals -----------------------------------------------------------------------------

    def _cursor(self, reader: CdrReader) -> int:
        """The id cursor, reset to 0 when the PBX file was replaced (e.g. a restored backup)."""
        state = self.store.state()
        cursor = int(state.get("cursor", 0))
        if cursor == 0:
            return 0
        expected = state.get("cursor_uniqueid", "")
        found = reader.uniqueid_at(cursor)
        if found == expected or (found is None and reader.max_id() > cursor):
            return cursor  # unchanged, or only that row was purged by retention
        log.warning("%s: history file was replaced (row %d is no longer %s); re-reading it "
                    "all, keeping every call already mirrored", self.source.path, cursor,
                    expected)
        with self.store.batch():
            self.store.set_state(cursor=0, cursor_uniqueid="",
                                 resyncs=int(state.get("resyncs", 0)) + 1)
        return 0

    def _apply_changed(self, rows: list[tuple]) -> int:
        legs = self._legs(rows)
        known = self.store.legs_of({leg.linkedid for leg in legs})
        mirrored = {leg.uniqueid: leg for group in known.values() for leg in group}
        changed = [leg for leg in legs if mirrored.get(leg.uniqueid) != leg]
        if changed:
            self._commit(self.store, self._prepare(changed))
        return len(changed)

    def _legs(self, rows: list[tuple]) -> list[Leg]:
        legs = [leg_from_row(row, self.clock) for row in rows]
        return [leg for leg in legs if leg is not None]

    def _prepare(self, legs: list[Leg], in_flight=()) -> _Batch:
        """Classify every call these legs belong to, with the call's other legs from the
        mirror and from batches still being committed (`in_flight`)."""
        linkedids = {leg.linkedid for leg in legs}
        by_call: dict[str, dict[str, Leg]] = {}
        for linkedid, mirrored in self.store.legs_of(linkedids).items():
            by_call[linkedid] = {leg.uniqueid: leg for leg in mirrored}
        for earlier in in_flight:
            for linkedid in linkedids & earlier.keys():
                by_call.setdefault(linkedid, {}).update(earlier[linkedid])
        for leg in legs:
            by_call.setdefault(leg.linkedid, {})[leg.uniqueid] = leg
        directory = self.config.directory
        calls = [classify(list(call_legs.values()), directory) for call_legs in by_call.values()]
        return _Batch(legs, calls, by_call)

    def _commit(self, store: Store, batch: _Batch, cursor_row: tuple | None = None) -> None:
        """Write a batch, re-link the callbacks it touches and move the cursor: one transaction."""
        with store.batch():
            store.upsert_legs(batch.legs)
            before = store.call_spans(batch.legs_by_call.keys())
            store.upsert_calls(batch.calls, existing={lid: s[0] for lid, s in before.items()})
            self._relink(store, batch.calls, [span[1:] for span in before.values()])
            if cursor_row is not None:
                store.set_state(cursor=cursor_row[0], cursor_uniqueid=cursor_row[1] or "")

    def _relink(self, store: Store, calls: list[Call], before) -> None:
        """Recompute callback links near every touched call, on its old and new number."""
        spans: dict[str, list[int]] = {}
        for key, start, end in [(c.ext_key, c.start, c.end) for c in calls] + list(before):
            if key:
                lo_hi = spans.setdefault(key, [start, end])
                lo_hi[0], lo_hi[1] = min(lo_hi[0], start), max(lo_hi[1], end)
        if not spans:
            return
        lo = min(s[0] for s in spans.values()) - 2 * self.reach_ms
        hi = max(s[1] for s in spans.values()) + 2 * self.reach_ms
        changed = {}
        for key, entries in store.callback_context(spans.keys(), lo, hi).items():
            key_lo, key_hi = spans[key][0] - self.reach_ms, spans[key][1] + self.reach_ms
            links = link_callbacks([facts for facts, _ in entries], self.window_ms)
            for facts, current in entries:
                new = links[facts.linkedid]
                if key_lo <= facts.start <= key_hi and new != current:
                    changed[facts.linkedid] = new
        store.update_links(changed)
