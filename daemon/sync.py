"""Brings the mirror up to date with the PBX: new rows by `id` cursor, changed linkedids, the
callbacks those calls touch. No full rebuild; the cursor commits with the rows it covers.

A batch goes: PBX rows -> legs -> calls classified from the batch's legs (pure) -> staged rows
-> merged into module.db by the single writer, which re-classifies calls whose other legs it
already had and re-links the callbacks around every touched call, all in one transaction.

Calls in progress (a leg still in the PBX's `cdr` table, or, on a stock Asterisk, a channel up
on AMI) are held back: their finished legs are mirrored, the call is not, and `live_call` shows
them. The batch in which a call's last leg moves classifies it from all its legs.

In a central history shared by several PBXs each PBX's writer (its setting `pbx.id`) stores
the PBX's linkedids and uniqueids qualified (`mirror.calls.qualified`): wherever they come in —
its history rows, its calls in progress, AMI's hangups; AMI's refreshes name calls as the PBX
does and are read from it so — and keeps its own cursor (`mirror.store.PBX_STATE`).
"""
from __future__ import annotations

import gc
import logging
import os
import time
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from daemon import backfill
from mirror import bulk, webhooks
from mirror.calls import Leg, calls_of, changed_links, classify, qualified, qualified_legs
from mirror.dialect import run
from mirror.hangups import CallHangup
from mirror.live import live_calls
from mirror.pbxtime import PbxClock
from mirror.retention import Retained, apply_retention
from mirror.settings import Settings
from mirror.store import Store
from pbx.cdr import CdrReader, CdrSource, legs_from_rows
from pbx.config import PbxConfig, read_pbx_config

log = logging.getLogger("extcdr.sync")

@dataclass(frozen=True)
class SyncOptions:
    callback_window_s: int = 86_400
    batch_rows: int = 40_000
    # Rows before the cursor that are re-read each pass: the PBX updates rows after insert.
    trailing_rows: int = 2_000
    # Worker processes that classify ranges in parallel when many rows are pending: more
    # than two ranges' worth. A range is a batch, or for a smaller catch-up an equal share of
    # it per worker and round (at least `range_rows`): a 100,000-row history goes 1.5× as fast
    # as in one process, in half the memory.
    workers: int = min(2, os.cpu_count() or 1)
    range_rows: int = 10_000
    # A leg in the PBX's in-progress table longer than this is a leftover (a crash), not a call.
    live_max_age_s: int = 12 * 3600
    # A catch-up of this many rows or more ends with fresh statistics of a central history's
    # partitioned tables (`Store.analyze`).
    analyze_rows: int = 100_000


def mirror_sync(settings: Settings, db, clock: PbxClock, *, busy_timeout_ms: int = 1_000,
                live_legs: Callable[[], list[Leg]] | None = None) -> Sync:
    """The mirror's writer as the settings make it: the daemon's and `extcdr sync`'s. Without
    the PBX config DB, numbers of up to `calls.extension_length` digits count as internal."""
    config_db = settings["pbx.config_db"] if settings["pbx.config_db"].is_file() else None
    config = read_pbx_config(config_db, settings["pbx.groups_db"],
                             extension_length=settings["calls.extension_length"],
                             number_match_digits=settings["calls.number_match_digits"])
    return Sync(Store(db, settings["pbx.id"]),
                CdrSource(settings["pbx.cdr_db"], busy_timeout_ms=busy_timeout_ms),
                config, clock,
                SyncOptions(callback_window_s=settings["calls.callback_window"],
                            batch_rows=settings["sync.batch_rows"]),
                live_legs=live_legs)


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
                 options: SyncOptions = SyncOptions(), *,
                 live_legs: Callable[[], list[Leg]] | None = None):
        """`live_legs` gives the legs in progress where the PBX has no `cdr` table (AMI)."""
        self.store = store
        self.pbx = store.pbx
        self.source = source
        self.config = config
        self.clock = clock
        self.options = options
        self.window_ms = options.callback_window_s * 1000
        self.live_legs = live_legs
        self._live_shown: tuple | None = None    # what live_call holds, to skip equal writes

    # --- passes --------------------------------------------------------------------------------

    def catch_up(self, progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> int:
        """Read every new row, then re-check the trailing window; returns rows read.

        Many pending rows are classified by worker processes in parallel (see `backfill`);
        the last few batches, and every live update, go through `step()`. Into an empty
        mirror they load in bulk (`mirror.bulk`), built when the catch-up is complete.
        `should_stop` is asked between batches: a stopping daemon leaves after the batch it
        is committing (a bulk load it leaves is resumed by the next catch-up).
        """
        with self.store.batch():
            self.store.replace_directory(self.config.directory.employees, self.config.groups)
            self.store.set_state(timezone=self.clock.tz_name,
                                 cdr_db=str(self.source.path.resolve()),
                                 number_match_digits=self.config.directory.number_match_digits)
        backfill.remove_orphaned_scratch()
        total = 0
        while not should_stop():
            with self.source.reading() as reader:
                cursor, last = self._cursor(reader), reader.max_id()
            if self.options.workers > 1 and last - cursor > 2 * self.options.range_rows:
                self._begin_bulk()
                total += self._parallel(cursor, last, progress, should_stop)
                continue
            read, pending = self.step()
            total += read
            if progress:
                progress(read, pending)
            if not read:
                break
        if not should_stop():
            self._finish_bulk()
            self.recheck_tail()
        if total >= self.options.analyze_rows:
            self.store.analyze()
        return total

    def step(self) -> tuple[int, int]:
        """One batch of new rows, committed before returning: (rows read, rows pending)."""
        with _no_cycle_collection(), self.source.reading() as reader:
            cursor = self._cursor(reader)
            rows = reader.rows_after(cursor, self.options.batch_rows)
            live = self._live(reader)
            if not rows:
                self._follow(live)
                self._settle_deletions()
                return 0, 0
            self._apply_legs(legs_from_rows(rows, self.clock, self.pbx), live,
                             (rows[-1][0], rows[-1][1] or ""))
            return len(rows), max(0, reader.max_id() - rows[-1][0])

    def recheck_tail(self) -> int:
        """Re-read the last rows before the cursor; apply those the PBX changed since."""
        with _no_cycle_collection(), self.source.reading() as reader:
            cursor = self._cursor(reader)
            rows = reader.rows_between(cursor - self.options.trailing_rows + 1, cursor)
            return self._apply_changed(rows, self._live(reader))

    def refresh(self, linkedids) -> int:
        """Re-read these calls from the PBX (an AMI event said they changed)."""
        with _no_cycle_collection(), self.source.reading() as reader:
            return self._apply_changed(reader.rows_of(linkedids), self._live(reader))

    def record_hangups(self, hangups: list[CallHangup]) -> int:
        """Keep who ended these calls (AMI names them as the PBX does): one transaction."""
        with self.store.batch():
            return self.store.record_hangups(
                replace(hangup, linkedid=qualified(self.pbx, hangup.linkedid))
                for hangup in hangups)

    def apply_rows(self, rows: list[tuple]) -> int:
        """Mirror rows that did not come from the history file (AMI `Cdr` events), in
        LEG_SOURCE_COLUMNS order; returns the legs applied."""
        with _no_cycle_collection():
            return self._apply_changed(rows, self._live(None))

    def follow_live(self) -> None:
        """Bring the calls in progress up to date (no new finished legs needed)."""
        if self.live_legs is not None:
            self._follow(self._live(None))
            return
        with self.source.reading() as reader:
            self._follow(self._live(reader))

    def retain(self, now_ms: int) -> Retained:
        """Apply the history's retention at `now_ms` (`mirror.retention`); then the kept calls
        that returned a dropped missed call are linked among the calls kept, as if the dropped
        months had never been mirrored (also after another PBX's writer dropped them)."""
        retained = apply_retention(self.store.db, now_ms)
        if retained.cutoff_ms is not None:
            spans = self.store.returning_the_dropped(retained.cutoff_ms, self._reach_ms())
            if spans:
                with self.store.batch():
                    self._relink(spans, self._reach_ms())
                    self._queue_events([])
        return retained

    # --- internals -----------------------------------------------------------------------------

    def _live(self, reader: CdrReader | None) -> list[Leg]:
        """The legs in progress now: the PBX's `cdr` table, or the AMI channels that are up.

        A leg that began `live_max_age_s` before the PBX's newest activity (the newest leg in
        progress or moved) is a leftover of a crash and holds nothing back. The PBX's own
        times are the measure, not this machine's clock: a history restored or replayed from
        another day keeps its calls in progress as the PBX left them.
        """
        if self.live_legs is not None:
            legs = qualified_legs(self.pbx, self.live_legs())
        elif reader is not None:
            legs = legs_from_rows(reader.live_rows(), self.clock, self.pbx)
        else:
            return []
        if not legs:
            return legs
        newest = max(leg.start for leg in legs)
        if reader is not None:
            newest = max(newest, self.clock.to_utc_ms(reader.newest_start()) or newest)
        oldest = newest - self.options.live_max_age_s * 1000
        return [leg for leg in legs if leg.start >= oldest]

    def _follow(self, live: list[Leg]) -> None:
        """Write the calls in progress when they changed (and finish the calls that ended)."""
        if self._live_key(live) != self._live_shown:
            self._apply_legs([], live)

    def _settle_deletions(self) -> None:
        """Re-link callbacks around calls deleted since the last batch (none: no write)."""
        if run(self.store.db, "SELECT EXISTS (SELECT 1 FROM deletion WHERE relinked = 0)"
               ).fetchone()[0]:
            with self.store.batch():
                self._relink(self.store.unsettled_deletions(), self._reach_ms())
                self._queue_events([])

    def _queue_events(self, schemas: list[str]) -> None:
        """Queue the webhooks' events of the calls just merged (staged in `schemas`) and of
        the links just changed."""
        webhooks.queue_events(self.store.db, schemas, self.store.relinked,
                              int(time.time() * 1000))

    def _reach_ms(self) -> int:
        return self.window_ms + self.store.longest_call_ms()

    @staticmethod
    def _live_key(live: list[Leg]) -> tuple:
        return tuple(sorted((leg.uniqueid, leg.answer, leg.dst_chan) for leg in live))

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

    def _begin_bulk(self) -> None:
        """A long catch-up into an empty mirror loads in bulk (`mirror.bulk`)."""
        if not self.store.bulk and bulk.can_begin(self.store.db):
            with self.store.batch():
                bulk.begin(self.store.db)
            self.store.bulk = True

    def _finish_bulk(self) -> None:
        """Build what a bulk load left out (one transaction; the callback links across its
        batches and the rollups worked out meanwhile by a helper process), once it has every
        row."""
        if self.store.bulk:
            db = self.store.db
            with backfill.built_aside(db.database, self.window_ms) as helper, \
                    bulk.sorting_on_disk(db), self.store.batch():
                bulk.build_indexes(db)
                built = helper.result()
                self.store.update_links(bulk.links(built))
                bulk.finish(db, built)
                self._queue_events([])
            self.store.bulk = False

    def _parallel(self, cursor: int, last: int, progress, should_stop) -> int:
        """Catch up to row `last` with worker processes; returns rows read."""
        total = 0
        with self.source.reading() as reader:
            live = self._live(reader)
        with _no_cycle_collection(), closing(backfill.staged_ranges(
                self.source, self.clock, self.config.directory, self.window_ms, cursor, last,
                self._range_rows(last - cursor), self.options.workers, self.pbx)) as ranges:
            for staged in ranges:
                if staged.path is not None:
                    with self.store.attached(staged.path) as schema:
                        self._commit(schema, live, staged.last_row)
                    Path(staged.path).unlink()
                total += staged.rows
                if progress:
                    progress(staged.rows, max(0, last - cursor - total))
                if should_stop():
                    break
        return total

    def _range_rows(self, pending: int) -> int:
        """Rows a worker stages at a time: a batch, or a share of a smaller catch-up."""
        options = self.options
        return max(options.range_rows, min(options.batch_rows, pending // (2 * options.workers)))

    def _apply_changed(self, rows: list[tuple], live: list[Leg]) -> int:
        legs = legs_from_rows(rows, self.clock, self.pbx)
        known = self.store.legs_of({leg.linkedid for leg in legs})
        mirrored = {leg.uniqueid: leg for group in known.values() for leg in group}
        changed = [leg for leg in legs if mirrored.get(leg.uniqueid) != leg]
        if changed:
            self._apply_legs(changed, live)
        else:
            self._follow(live)
        return len(changed)

    def _apply_legs(self, legs, live: list[Leg], cursor_row: tuple | None = None) -> None:
        """Classify and stage legs in this process, then merge them: one transaction."""
        self.store.months(leg.start for leg in legs)
        with self.store.batch():
            schema = self.store.stage(legs, calls_of(legs, self.config.directory,
                                                     self.window_ms))
            self._merge(schema, live, cursor_row)
        self._live_shown = self._live_key(live)

    def _commit(self, schema: str, live: list[Leg], cursor_row: tuple | None) -> None:
        """Merge a batch a worker staged: one transaction."""
        with self.store.batch():
            self._merge(schema, live, cursor_row)
        self._live_shown = self._live_key(live)

    def _merge(self, schema: str, live: list[Leg], cursor_row: tuple | None) -> None:
        """Merge a staged batch, hold back the calls still in progress, complete the calls it
        only partly had and those that just ended, re-link callbacks and move the cursor
        (inside the caller's transaction)."""
        store = self.store
        directory = self.config.directory
        arrived = store.spans(schema)
        in_progress = {leg.linkedid for leg in live}
        store.hold_back(schema, in_progress)
        reopened = store.reopen(in_progress)
        before = store.merge(schema)
        written = store.spans(schema)
        ended = store.live_ids() - in_progress
        partial = set(store.spanning(schema, before.keys())) | ended
        fixed = []
        if partial:
            complete = [classify(legs, directory) for legs in store.legs_of(partial).values()]
            store.merge(store.stage([], complete, "fixup"))
            fixed = store.spans("fixup").values()  # a superseded span only widens the windows
        store.replace_live(live_calls(live, store.legs_of(in_progress), directory))
        # The batch came linked among its own calls (`calls_of`): what it replaced or completed,
        # and the calls it left out (in progress, deleted, before the retained history), whose
        # links its calls may name, are linked again; its other calls only where they meet the
        # calls around them.
        left_out = [span for linkedid, span in arrived.items() if linkedid not in written]
        spans = [*before.values(), *fixed, *left_out, *reopened, *store.unsettled_deletions()]
        longest = max([int(store.state().get("longest_call_ms", 0))]
                      + [end - start for _, start, end in [*spans, *written.values()]])
        store.set_state(longest_call_ms=longest)
        self._relink(spans, reach_ms=self.window_ms + max(longest, store.longest_call_ms()),
                     batch=list(written.values()))
        self._queue_events([schema, "fixup"] if partial else [schema])
        if cursor_row is not None:
            store.set_state(cursor=cursor_row[0], cursor_uniqueid=cursor_row[1])

    def _relink(self, spans: list[tuple[str | None, int, int]], reach_ms: int,
                batch: list[tuple[str | None, int, int]] | None = None) -> None:
        """Recompute callback links near every touched call (old and new number and time),
        and near the calls of a `batch` just written (their spans), linked among themselves,
        where other calls are near them.

        A call's links depend on calls starting within the window plus a call's length of it
        (`reach_ms`, from the longest call mirrored): links are recomputed for calls within
        that reach of a touched call, from the calls within twice that reach. While a bulk
        load is under way its build links them (`mirror.bulk`): nothing to do here.
        """
        if self.store.bulk:
            return
        linked = batch or []
        windows: dict[str, tuple[int, int]] = {}
        for key, start, end in [*spans, *linked]:
            if key:
                lo, hi = windows.get(key, (start, end))
                windows[key] = (min(lo, start), max(hi, end))
        if not windows:
            return
        touched = {key for key, _, _ in spans}
        alone = Counter(key for key, _, _ in linked if key not in touched)
        context = self.store.callback_context(
            {key: (lo - 2 * reach_ms, hi + 2 * reach_ms) for key, (lo, hi) in windows.items()},
            reach_ms, alone)
        changed = {}
        for key, entries in context.items():
            changed.update(changed_links(entries, self.window_ms,
                                         windows[key][0] - reach_ms, windows[key][1] + reach_ms))
        self.store.update_links(changed)
