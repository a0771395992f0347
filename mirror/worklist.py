"""The worklist of missed calls to call back, for a CRM or a script (`api/v1/worklist`): the
open unreturned missed calls oldest first, with the attempts to call back so far, and marking
one handled (who, when, a note) so that it leaves the worklist and the Unreturned tab.

A call marked handled stays what it is — missed, not called back — in the reports' figures
(the Missed tab, the callback report); as unreturned, it is gone: "unreturned" means missed,
not called back and not handled in the worklist, the Unreturned tab, its counter and the filter
`unreturned=yes` alike (`mirror.queries.TABS`). The web process and the CLI write
`call_handled` in short transactions, each a change open pages are told of.
"""
from __future__ import annotations

import unicodedata
from dataclasses import replace

from peewee import Database, Tuple

from mirror.dialect import run, write_transaction
from mirror.models import Call
from mirror.queries import CallFilter, call_rows, calls_query
from mirror.store import next_revision

NOTE_LIMIT = 500


class WorklistError(ValueError):
    """A request about the worklist users can correct; the message says how."""


def worklist(f: CallFilter, db: Database, limit: int,
             after: tuple[int, int] | None = None) -> list[dict]:
    """Up to `limit` open missed calls of the filter, oldest first (keyset: after the
    (start_ms, id) of the last one seen), each with `last_attempt`."""
    query = calls_query(replace(f, tab="unreturned", unreturned=False, after=None, limit=None),
                        db)
    if after is not None:
        query = query.where(Tuple(Call.start_ms, Call.id) > Tuple(*after))
    rows = list(call_rows(query.order_by(Call.start_ms, Call.id).limit(limit)))
    for row in rows:
        row["last_attempt"] = last_attempt(row, db)
    return rows


def last_attempt(call: dict, db: Database) -> dict | None:
    """The latest unanswered call placed to the number of a missed call to call it back:
    {linkedid, start_ms, by} (by: the extension that placed it). Its attempts are the first
    `callback_attempts` such calls after it ended (`mirror.calls.link_callbacks`)."""
    attempts = call["callback_attempts"]
    if not attempts or not call["ext_key"]:
        return None
    row = run(
        db, "SELECT linkedid, start_ms, src FROM call WHERE ext_key = ? AND start_ms >= ? "
        "AND direction = 'outgoing' AND answered = 0 ORDER BY start_ms, linkedid "
        "LIMIT 1 OFFSET ?", (call["ext_key"], call["end_ms"], attempts - 1)).fetchone()
    return None if row is None else {"linkedid": row[0], "start_ms": row[1], "by": row[2]}


def handled_note(note) -> str:
    """A note as kept: one paragraph of printable text, at most NOTE_LIMIT characters."""
    if not isinstance(note, str):
        raise WorklistError("note: give it as text")
    note = " ".join("".join(ch if unicodedata.category(ch)[0] != "C" else " "
                            for ch in note).split())
    if len(note) > NOTE_LIMIT:
        raise WorklistError(f"a note has at most {NOTE_LIMIT} characters, this one has "
                            f"{len(note)}")
    return note


def mark_handled(db: Database, linkedid: str, handled_by: str, note: str,
                 now_ms: int) -> tuple[dict, bool]:
    """Mark an unreturned missed call handled: (the mark, whether it is new). Marking it again
    changes nothing. LookupError when the call is not an unreturned missed call."""
    note = handled_note(note)
    with write_transaction(db):
        found = handled(db, linkedid)
        if found is not None:
            return found, False
        call = run(db, "SELECT start_ms FROM call WHERE linkedid = ? AND "
                   "status = 'missed' AND returned_by IS NULL",
                   (linkedid,)).fetchone()
        if call is None:
            raise LookupError(linkedid)
        run(db, "INSERT INTO call_handled (linkedid, start_ms, handled_by, at_ms, note) "
            "VALUES (?, ?, ?, ?, ?)", (linkedid, call[0], handled_by, now_ms, note))
        _shown_again(db, linkedid)
    return {"handled_by": handled_by, "at_ms": now_ms, "note": note}, True


def unmark_handled(db: Database, linkedid: str) -> bool:
    """Put a call back on the worklist; whether it was marked handled."""
    with write_transaction(db):
        gone = run(db, "DELETE FROM call_handled WHERE linkedid = ?",
                   (linkedid,)).rowcount
        if gone:
            _shown_again(db, linkedid)
    return bool(gone)


def handled(db: Database, linkedid: str) -> dict | None:
    """Who marked the call handled, when, and their note; None: not handled."""
    row = run(db, "SELECT handled_by, at_ms, note FROM call_handled WHERE linkedid = ?",
              (linkedid,)).fetchone()
    return None if row is None else {"handled_by": row[0], "at_ms": row[1], "note": row[2]}


def _shown_again(db: Database, linkedid: str) -> None:
    """Open pages showing the call get its row again (it left or rejoined a tab)."""
    run(db, "UPDATE call SET revision = ? WHERE linkedid = ?",
        (next_revision(db), linkedid))
