"""Deleting what the history holds about a call — its recording files, or the whole call — for
requests such as GDPR erasure. Admins only (the caller's check); each deletion has a reason
and is kept in `deletion` (who, when, why, how many files), which is also the tombstone the
writer honours: a deleted call or recording does not come back on a resync or backfill.

A deletion is one short transaction of its own: the files are removed inside it (a file that
cannot be removed rolls it back, nothing listed as deleted that is not), and pages are told as
of a writer's change (a new revision; the call leaves open pages). Callbacks around a deleted
call are re-linked by the daemon's next pass (`deletion.relinked`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from peewee import Database

from mirror.dialect import dialect_of, run, write_transaction
from mirror.models import Call
from mirror.queries import CallFilter, call_rows, calls_query
from mirror.rollups import kept_by_writer
from mirror.store import next_revision

REASON_LIMIT = 200
BULK_CHUNK = 200          # calls per transaction when deleting the recordings of a filter
WHAT = ("call", "recordings")
Locate = Callable[[str], "Path | None"]     # a recording's file, if inside the recordings root


class DeletionError(ValueError):
    """A deletion refused for a reason users can correct; nothing was changed."""
    status = 400


class CallInProgress(DeletionError):
    status = 409


class OutsideRecordings(DeletionError):
    status = 403


@dataclass(frozen=True)
class Deleted:
    calls: int
    files: int


def deletion_reason(reason: str) -> str:
    reason = " ".join(str(reason or "").split())
    if not reason:
        raise DeletionError("give a reason for the deletion (it is kept with who deleted what)")
    if len(reason) > REASON_LIMIT:
        raise DeletionError(f"a reason has at most {REASON_LIMIT} characters")
    return reason


def delete_call(db: Database, linkedid: str, actor: str, reason: str, now_ms: int,
                locate: Locate) -> Deleted:
    """Remove a finished call from the mirror with its legs, recording files, comments and
    tags; LookupError when there is no such call."""
    reason = deletion_reason(reason)
    with write_transaction(db):
        call_id, recordings, employees, ext_key, start, end = _finished(db, linkedid)
        files = _remove_files(recordings, locate)
        revision = next_revision(db)
        run(db, "INSERT INTO call_gone (linkedid, revision, employees) VALUES (?, ?, ?) "
                "ON CONFLICT (linkedid) DO UPDATE SET revision = excluded.revision, "
                "employees = excluded.employees", (linkedid, revision, employees))
        run(db, "DELETE FROM call_employee WHERE call_id = ?", (call_id,))
        if dialect_of(db).postgresql:
            # No triggers there: the call's counters leave the rollups with it. Its linkedid
            # is the one gone at this revision (a whole number: no mark needed).
            gone = f"SELECT linkedid FROM call_gone WHERE revision = {int(revision)}"
            with kept_by_writer(db, gone, "scratch"):
                run(db, "DELETE FROM call WHERE linkedid = ?", (linkedid,))
        else:
            for statement in ("DELETE FROM call_number WHERE rowid = ?",
                              "DELETE FROM call_name WHERE rowid = ?",
                              "DELETE FROM call WHERE id = ?"):
                run(db, statement, (call_id,))
        for table in ("leg", "comment", "comment_audit", "call_tag", "call_hangup"):
            run(db, f"DELETE FROM {table} WHERE linkedid = ?", (linkedid,))
        run(db, "INSERT INTO deletion (linkedid, what, actor, at_ms, reason, files, ext_key, "
            "start_ms, end_ms, relinked) VALUES (?, 'call', ?, ?, ?, ?, ?, ?, ?, ?)",
            (linkedid, actor, now_ms, reason, files, ext_key, start, end, int(ext_key is None)))
    return Deleted(1, files)


def delete_recordings(db: Database, linkedids: Iterable[str], actor: str, reason: str,
                      now_ms: int, locate: Locate) -> Deleted:
    """Remove the recording files of these finished calls (one transaction); the calls stay,
    without recordings. DeletionError for a call without recordings, LookupError for an
    unknown one: nothing is deleted then."""
    reason = deletion_reason(reason)
    calls = files = 0
    with write_transaction(db):
        revision = None
        for linkedid in linkedids:
            _, recordings, *_ = _finished(db, linkedid)
            if not json.loads(recordings):
                raise DeletionError("this call has no recordings to delete")
            removed = _remove_files(recordings, locate)
            revision = revision or next_revision(db)
            run(db, "UPDATE call SET recordings = '[]', revision = ? WHERE linkedid = ?",
                (revision, linkedid))
            run(db, "UPDATE leg SET recordingfile = '' WHERE linkedid = ?", (linkedid,))
            run(db, "INSERT INTO deletion (linkedid, what, actor, at_ms, reason, files) "
                "VALUES (?, 'recordings', ?, ?, ?, ?)", (linkedid, actor, now_ms, reason, removed))
            calls, files = calls + 1, files + removed
    return Deleted(calls, files)


def deletions_of(db: Database, linkedid: str) -> list[dict]:
    """What was deleted of a call, oldest first: {what, actor, at_ms, reason, files}."""
    return [{"what": what, "actor": actor, "at_ms": at, "reason": reason, "files": files}
            for what, actor, at, reason, files in run(
                db, "SELECT what, actor, at_ms, reason, files FROM deletion WHERE linkedid = ? "
                "ORDER BY id", (linkedid,))]


def refuse_in_progress(db, linkedid: str) -> None:
    """CallInProgress for a call still in progress: it is not the history yet (and not a
    mirrored call: without this it would be 'not found')."""
    if run(db, "SELECT 1 FROM live_call WHERE linkedid = ?", (linkedid,)).fetchone():
        raise CallInProgress("this call is still in progress: delete it once it has ended")


def recorded(flt: CallFilter, db: Database):
    """The filter's calls that have recordings (a calls query, newest first)."""
    return calls_query(replace(flt, after=None, limit=None), db).where(Call.recordings != "[]")


def delete_filter_recordings(db: Database, flt: CallFilter, expected: int, actor: str,
                             reason: str, now_ms: int, locate: Locate) -> Deleted:
    """Delete the recordings of every call of the filter, `expected` being how many calls
    with recordings the user was shown and confirmed: if the filter selects another number
    now, nothing is deleted. A chunk of calls per transaction."""
    reason = deletion_reason(reason)
    found = recorded(flt, db).count()
    if found != expected:
        raise DeletionError(f"the filter now selects {found:,} calls with recordings, not the "
                            f"{expected:,} you confirmed: check and confirm again")
    calls = files = 0
    while chunk := [row["linkedid"] for row in
                    call_rows(recorded(flt, db).limit(BULK_CHUNK), annotate=False)]:
        done = delete_recordings(db, chunk, actor, reason, now_ms, locate)
        calls, files = calls + done.calls, files + done.files
    return Deleted(calls, files)


def _finished(db, linkedid: str) -> tuple:
    """(id, recordings, employees, ext_key, start, end) of a mirrored call; a call still in
    progress is refused (it is not the history yet: delete it once it has ended)."""
    refuse_in_progress(db, linkedid)
    row = run(db, "SELECT id, recordings, employees, ext_key, start_ms, end_ms FROM call "
                  "WHERE linkedid = ?", (linkedid,)).fetchone()
    if row is None:
        raise LookupError(linkedid)
    return row


def _remove_files(recordings: str, locate: Locate) -> int:
    """Remove a call's recording files (several legs may share one); every path is checked
    before any is removed: one outside the recordings root refuses the whole deletion."""
    paths = []
    for written in dict.fromkeys(json.loads(recordings)):
        path = locate(written)
        if path is None:
            raise OutsideRecordings(f"a recording of this call lies outside the recordings folder "
                                f"({written[:80]!r}): nothing was deleted")
        paths.append(path)
    removed = 0
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass                                 # the PBX's retention removed it already
        except OSError as exc:
            raise DeletionError(f"cannot remove the recording {path.name}: "
                                f"{exc.strerror or exc}") from None
    return removed
