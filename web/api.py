"""The versioned JSON API (`api/v1`): the call record contract of call-semantics.md, with
the history page's filters, keyset paging, and the user's role applied in the query."""
from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, request

from mirror.queries import (call_rows, call_visible, calls_in_progress, calls_query, encode_cursor,
                            find_call, legs_of_call, whole_number)
from mirror.records import call_record, iso_time, leg_records, live_record
from mirror.worklist import handled
from web.context import clock, mirror, named, request_filter

api = Blueprint("api_v1", __name__)

PAGE = 50
MAX_PAGE = 500


@api.get("/calls")
def calls():
    """Calls newest first; `next_cursor` fetches the next page (keyset, no OFFSET)."""
    params = request.args.to_dict()
    page = page_size(params.pop("limit", None))
    flt = request_filter(params)
    flt.limit = page + 1                     # one more tells whether a next page exists
    rows = list(call_rows(calls_query(flt, mirror())))
    tz = clock().tz
    last = rows[page - 1] if len(rows) > page else None
    return jsonify(calls=[call_record(row, tz) for row in named(rows[:page], flt)],
                   next_cursor=encode_cursor(last["start_ms"], last["id"]) if last else None)


@api.get("/calls/in-progress")
def in_progress():
    """The calls under way now (not finished calls: no status yet), newest first."""
    tz = clock().tz
    return jsonify(calls=[live_record(row, tz)
                          for row in calls_in_progress(mirror(), g.user.visible_to)])


@api.get("/calls/<linkedid>")
def call(linkedid: str):
    """One call with its legs and its mark as handled; another user's call is 404, as if it
    did not exist."""
    row = named([visible_call(linkedid)])[0]
    tz = clock().tz
    return jsonify(call=call_record(row, tz),
                   legs=leg_records(legs_of_call(linkedid, mirror()), tz),
                   handled=handled_record(handled(mirror(), linkedid)))


def handled_record(mark: dict | None) -> dict | None:
    """A call's mark as handled (mirror.worklist) as the API gives it; None: not handled."""
    return None if mark is None else {"by": mark["handled_by"],
                                      "at": iso_time(mark["at_ms"], clock().tz),
                                      "note": mark["note"]}


def visible_call(linkedid: str) -> dict:
    """The call row, or 404 — also for a call this user may not see, as if it did not exist."""
    row = find_call(linkedid, mirror())
    if row is None or not call_visible(row["id"], g.user.visible_to, mirror()):
        abort(404)
    return row


def page_size(value: str | None) -> int:
    """The `limit` of a page: PAGE unless given, at most MAX_PAGE."""
    if value in (None, ""):
        return PAGE
    return whole_number(value, "limit", 1, MAX_PAGE)
