"""Parallel staging for a long catch-up: worker processes read id ranges of `cdr_general`,
classify them and write each range's rows to a scratch SQLite file; the single writer merges
the files in id order (`Sync.catch_up`). Classification is pure, so ranges are independent;
a call whose legs straddle two ranges is re-classified by the writer at merge time.
"""
from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sqlite3
import tempfile
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from mirror import bulk, staging
from mirror.calls import Directory, calls_of
from mirror.pbxtime import PbxClock
from pbx.cdr import CdrSource, legs_from_rows
from pbxmodule.pids import remove_orphaned_folders

# Worker process state, set once per worker by `_start_worker`.
_worker: dict = {}
_PR_SET_PDEATHSIG = 1
_SCRATCH_PREFIX = "extcdr-backfill-"


class StagedRange(NamedTuple):
    path: str | None          # scratch DB with the staged rows; None for a range without rows
    rows: int
    last_row: tuple | None    # (id, UNIQUEID) of the range's last row: the cursor after it


def _start_worker(cdr_path: str, busy_timeout_ms: int, tz_name: str,
                  directory: Directory, window_ms: int, pbx: str, parent: int) -> None:
    _die_with(parent)
    _worker.update(source=CdrSource(cdr_path, busy_timeout_ms), clock=PbxClock(tz_name),
                   directory=directory, window_ms=window_ms, pbx=pbx)


def _die_with(parent: int) -> None:
    """A writer killed with -9 must not leave its workers behind (Linux: parent-death signal)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: workers then end when their queue breaks
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _stage_range(first_id: int, last_id: int, scratch_dir: str) -> StagedRange:
    gc.disable()  # short-lived acyclic objects only; the process ends with the pool
    with _worker["source"].reading() as reader:
        rows = reader.rows_between(first_id, last_id)
    if not rows:
        return StagedRange(None, 0, None)
    legs = legs_from_rows(rows, _worker["clock"], _worker["pbx"])
    calls = calls_of(legs, _worker["directory"], _worker["window_ms"])
    path = str(Path(scratch_dir) / f"batch-{first_id}.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    staging.create(conn)
    staging.stage(conn, legs, calls)
    conn.execute("COMMIT")
    conn.close()
    return StagedRange(path, len(rows), (rows[-1][0], rows[-1][1] or ""))


def staged_ranges(source: CdrSource, clock: PbxClock, directory: Directory, window_ms: int,
                  after: int, last: int, batch_rows: int, workers: int,
                  pbx: str = "") -> Iterator[StagedRange]:
    """Stage the rows with `after < id <= last`, in id order, `workers` ranges at a time
    (their ids qualified with the PBX's id `pbx`, see `mirror.calls.qualified`; callbacks
    linked over `window_ms` among each range's calls).

    The scratch files live in a temporary directory removed when the generator ends.
    """
    # fork: workers start at once and need no importable __main__; they never touch the
    # parent's SQLite handles (they open their own and leave through os._exit).
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-") as scratch, \
            ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                initargs=(str(source.path), source.busy_timeout_ms,
                                          clock.tz_name, directory, window_ms, pbx,
                                          os.getpid())) as pool:
        pending: deque = deque()
        try:
            for first in range(after + 1, last + 1, batch_rows):
                pending.append(pool.submit(
                    _stage_range, first, min(first + batch_rows - 1, last), scratch))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # stopped early: drop the ranges not started, wait for the running ones
            for future in pending:
                future.cancel()


@contextmanager
def built_aside(mirror: str, window_ms: int) -> Iterator[Future]:
    """The callback links across a bulk load's batches and the rollups, worked out from the
    calls committed in the mirror file `mirror` (`mirror.bulk.link_and_roll_up`) by a helper
    process while the writer builds the rest: a future of the scratch file holding them,
    removed when the block ends."""
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-") as scratch, \
            ProcessPoolExecutor(1, mp_context=context, initializer=_die_with,
                                initargs=(os.getpid(),)) as pool:
        yield pool.submit(bulk.link_and_roll_up, mirror, str(Path(scratch) / "built.db"),
                          window_ms)


def remove_orphaned_scratch() -> None:
    """Scratch directories of syncs that were killed (their pid is gone)."""
    remove_orphaned_folders(_SCRATCH_PREFIX)
