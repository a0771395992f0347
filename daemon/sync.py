"""Brings the mirror up to date with the PBX: new rows by `id` cursor, changed linkedids, the
callbacks those calls touch. No full rebuild; the cursor commits with the rows it covers.
"""
from __future__ import annotations

import gc
import logging
from contextlib import contextmanager
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
        """Read every new row, then re-check the trailing window; returns rows read."""
        with self.store.batch():
            self.store.replace_directory(self.config.directory.employees, self.config.groups)
            self.store.set_state(timezone=self.clock.tz_name,
                                 cdr_db=str(self.source.path.resolve()),
                                 number_match_digits=self.config.directory.number_match_digits)
        total = 0
        while True:
            read, pending = self.step()
            total += read
            if progress:
                progress(read, pending)
            if not read:
                break
        self.recheck_tail()
        return total

    def step(self) -> tuple[int, int]:
        """One batch of new rows: (rows read, rows still pending after it)."""
        with _no_cycle_collection(), self.source.reading() as reader:
            cursor = self._cursor(reader)
            rows = reader.rows_after(cursor, self.options.batch_rows)
            if rows:
                self._apply(rows, cursor_row=rows[-1])
                return len(rows), max(0, reader.max_id() - rows[-1][0])
            return 0, 0

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
            with self.store.batch():
                self._write(changed)
        return len(changed)

    def _apply(self, rows: list[tuple], cursor_row: tuple) -> None:
        legs = self._legs(rows)
        with self.store.batch():
            self._write(legs)
            self.store.set_state(cursor=cursor_row[0], cursor_uniqueid=cursor_row[1] or "")

    def _legs(self, rows: list[tuple]) -> list[Leg]:
        legs = [leg_from_row(row, self.clock) for row in rows]
        return [leg for leg in legs if leg is not None]

    def _write(self, legs: list[Leg]) -> None:
        """Upsert legs, re-classify every call they belong to, re-link the callbacks touched."""
        by_call: dict[str, dict[str, Leg]] = {}
        linkedids = {leg.linkedid for leg in legs}
        for linkedid, mirrored in self.store.legs_of(linkedids).items():
            by_call[linkedid] = {leg.uniqueid: leg for leg in mirrored}
        for leg in legs:
            by_call.setdefault(leg.linkedid, {})[leg.uniqueid] = leg
        self.store.upsert_legs(legs)
        before = self.store.call_spans(linkedids)
        directory = self.config.directory
        calls = [classify(list(call_legs.values()), directory)
                 for call_legs in by_call.values()]
        self.store.upsert_calls(calls, existing={lid: span[0] for lid, span in before.items()})
        self._relink(calls, [span[1:] for span in before.values()])

    def _relink(self, calls: list[Call], before) -> None:
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
        for key, entries in self.store.callback_context(spans.keys(), lo, hi).items():
            key_lo, key_hi = spans[key][0] - self.reach_ms, spans[key][1] + self.reach_ms
            links = link_callbacks([facts for facts, _ in entries], self.window_ms)
            for facts, current in entries:
                new = links[facts.linkedid]
                if key_lo <= facts.start <= key_hi and new != current:
                    changed[facts.linkedid] = new
        self.store.update_links(changed)
