"""The worklist API (`api/v1/worklist`): the open missed calls to call back, oldest first, for
a CRM pulling them with an API token (or a page's session), and marking one handled. The
user's visibility applies as everywhere: a call they may not see is 404."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, jsonify, request

from mirror.queries import QueryError, decode_cursor, encode_cursor, names_by_pbx, pbx_of_linkedid
from mirror.records import call_record, iso_time
from mirror.worklist import WorklistError, mark_handled, unmark_handled, worklist
from web.api import handled_record, page_size, visible_call
from web.auth import csrf_valid
from web.context import clock, mirror, named, request_filter, user_db

worklist_api = Blueprint("worklist", __name__)

NOT_HERE = ("tab", "status", "unreturned")      # the worklist chooses these itself


@worklist_api.before_request
def forged_changes_refused():
    if request.method != "GET" and not csrf_valid():
        return jsonify(error="request refused: no valid CSRF token (reload the page)"), 403
    return None


@worklist_api.errorhandler(WorklistError)
def bad_request(error):
    return jsonify(error=str(error)), 400


@worklist_api.errorhandler(LookupError)
def not_on_the_worklist(_):
    return jsonify(error="not found: no such unreturned missed call"), 404


@worklist_api.get("/worklist/unreturned")
def unreturned():
    """The open missed calls (missed, nobody called back, not handled), oldest first, with
    their attempts to call back; `next_cursor` fetches the next page. Unless `period` or
    `from`/`to` say, those that started within the callback window (`calls.callback_window`):
    a call placed now may still return them."""
    params = request.args.to_dict()
    chosen = [name for name in NOT_HERE if name in params]
    if chosen:
        raise QueryError(f"the worklist has no parameter {chosen[0]!r}: it lists the "
                         f"unreturned missed calls")
    page = page_size(params.pop("limit", None))
    after = decode_cursor(params.pop("cursor", None))
    if not any(params.get(name) for name in ("period", "from", "to")):
        window_s = current_app.config["EXTCDR_CALLBACK_WINDOW_S"]
        params["from"] = clock().to_local(time.time() - window_s).isoformat(timespec="seconds")
    flt = request_filter(params)
    rows = worklist(flt, mirror(), page + 1, after)
    tz, names = clock().tz, names_by_pbx(mirror())
    last = rows[page - 1] if len(rows) > page else None
    return jsonify(calls=[_item(row, tz, names) for row in named(rows[:page], flt)],
                   next_cursor=encode_cursor(last["start_ms"], last["id"]) if last else None)


def _item(row: dict, tz, names: dict[str, dict[str, str]]) -> dict:
    """A call of the worklist; who tried to call back named as their PBX names them (a
    callback may come from another PBX of a central history)."""
    attempt = row["last_attempt"]
    return {**call_record(row, tz), "last_attempt": None if attempt is None else {
        "linkedid": attempt["linkedid"], "start": iso_time(attempt["start_ms"], tz),
        "by": attempt["by"], "by_name": names.get(pbx_of_linkedid(attempt["linkedid"]), {})
        .get(attempt["by"], "")}}


@worklist_api.post("/worklist/unreturned/<linkedid>/handled")
def handled(linkedid: str):
    """Mark the call handled (again: nothing changes); who: the user, or `token:<name>` for
    an API token (as its comments are signed). 201 when newly marked, 200 when it was
    already."""
    visible_call(linkedid)
    mark, new = mark_handled(user_db(), linkedid, g.user.name, _note(),
                             int(time.time() * 1000))
    return jsonify(handled=handled_record(mark)), 201 if new else 200


@worklist_api.delete("/worklist/unreturned/<linkedid>/handled")
def not_handled(linkedid: str):
    """Put the call back on the worklist (it was not handled after all)."""
    visible_call(linkedid)
    unmark_handled(user_db(), linkedid)
    return jsonify(handled=None)


def _note():
    body = request.get_json(silent=True)
    if body is not None and not isinstance(body, dict):
        raise WorklistError("give a JSON object: {\"note\": \"...\"} (the note is optional)")
    return body.get("note", "") if body is not None else request.form.get("note", "")
