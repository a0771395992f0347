"""The OpenAPI 3.1 document of `api/v1` (served as `api/v1/openapi.json`): what integrators
build on. A test holds it to the app: every route documented with its methods, every
documented path served, and real answers valid against the schemas."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from mirror.analytics import REPORTS
from mirror.calls import DIRECTIONS, STATUSES
from mirror.queries import HANGUP_SIDES, PERIODS, TABS, YEARS
from mirror.records import LIVE_FIELDS, RECORD_FIELDS

openapi = Blueprint("openapi", __name__)

VERSION = "1.0.0"


@openapi.get("/openapi.json")
def document():
    """The document, with this server's API root."""
    return jsonify(api_document(current_app.config["EXTCDR_API_ROOT"].rstrip("/"),
                                current_app.config["EXTCDR_CALLBACK_WINDOW_S"]))


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> dict:
    return {"type": [kind, "null"]}


_TEXT, _WHOLE, _TIME = {"type": "string"}, {"type": "integer"}, {"type": "string",
                                                                  "format": "date-time"}
_TEXTS = {"type": "array", "items": _TEXT}


def _object(properties: dict, required=None, **more) -> dict:
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required), **more}


_CALL = {
    "linkedid": _TEXT, "start": _TIME, "end": _TIME,
    "direction": {"type": "string", "enum": list(DIRECTIONS)},
    "status": {"type": "string", "enum": list(STATUSES)}, "reason": _nullable("string"),
    "src": _TEXT, "src_name": _TEXT, "dst": _TEXT, "dst_name": _TEXT,
    "external_number": _nullable("string"), "did": _nullable("string"),
    "line": _nullable("string"), "answered_by": _nullable("string"), "missed_by": _TEXTS,
    "transferred_to": _TEXTS, "employees": _TEXTS, "wait_s": _WHOLE, "talk_s": _WHOLE,
    "duration_s": _WHOLE, "recordings": _TEXTS, "callback_of": _nullable("string"),
    "returned_by": _nullable("string"),
    "callback_attempts": {"type": "integer", "description": "unanswered calls placed to the "
                          "number to call it back (a missed call)"},
    "legs": {"type": "integer", "description": "how many legs the call has"},
    "queue": _nullable("string"), "queue_wait_s": _nullable("integer"),
    "tags": {"type": "array", "items": _TEXT, "description": "tag names"},
    "comments": {"type": "array", "items": _ref("Comment")},
    "hangup": {"oneOf": [{"type": "null"}, _object(
        {"side": {"type": "string", "enum": [s for s in HANGUP_SIDES if s != "unknown"]},
         "number": _TEXT, "cause": _nullable("integer"), "cause_txt": _TEXT})],
        "description": "who hung up; null: unknown"},
    "contact": {"oneOf": [{"type": "null"}, _object(
        {"name": _TEXT, "company": _TEXT,
         "source": {"type": "string", "enum": ["phonebook", "contact"]},
         "id": {"type": ["integer", "null"], "description": "the module's contact, if any"}})],
        "description": "who the outside number is: the PBX's phone book first, then the "
                       "module's contacts; null: neither knows it"},
    "external_name": {"type": "string", "description": "the outside party's name: the "
                      "contact's, else the caller id name the PBX recorded (\"\": none)"},
    "pbx": {"type": "string", "description": "the PBX of the call (its pbx.id) in a history "
            "several PBXs write; \"\": the only PBX"},
}
assert tuple(_CALL) == RECORD_FIELDS, "the document lists the call record's fields"

_LIVE = {
    "linkedid": _TEXT, "start": _TIME, "direction": {"type": "string", "enum": list(DIRECTIONS)},
    "state": _TEXT, "since": _TIME, "src": _TEXT, "src_name": _TEXT, "dst": _TEXT,
    "dst_name": _TEXT, "external_number": _nullable("string"), "did": _nullable("string"),
    "line": _nullable("string"), "employees": _TEXTS,
    "parties": {"type": "array", "items": {"type": "object", "properties": {"since": _TIME}}},
}
assert tuple(_LIVE) == LIVE_FIELDS, "the document lists the live record's fields"

SCHEMAS = {
    "Error": _object({"error": {"type": "string", "description": "what is wrong, readable"}}),
    "Comment": _object({"id": _WHOLE, "author": _TEXT, "text": _TEXT, "created": _TIME,
                        "edited": {"type": ["string", "null"], "format": "date-time"}}),
    "Call": _object(_CALL),
    "CallList": _object({"calls": {"type": "array", "items": _ref("Call")},
                         "next_cursor": {"type": ["string", "null"], "description":
                                         "pass as `cursor` for the next page; null: the last"}}),
    "Leg": {"type": "object", "description": "one channel leg as the PBX wrote it",
            "properties": {"uniqueid": _TEXT, "linkedid": _TEXT, "start": _TIME,
                           "answer": {"type": ["string", "null"], "format": "date-time"},
                           "end": {"type": ["string", "null"], "format": "date-time"},
                           "src_num": _TEXT, "dst_num": _TEXT, "disposition": _TEXT},
            "required": ["uniqueid", "linkedid", "start", "answer", "end"]},
    "Handled": _object({"by": {"type": "string", "description": "the API token's name or the "
                               "user who marked it"},
                        "at": _TIME, "note": _TEXT}),
    "CallDetails": _object({"call": _ref("Call"), "legs": {"type": "array", "items": _ref("Leg")},
                            "handled": {"oneOf": [{"type": "null"}, _ref("Handled")]}}),
    "LiveCall": _object(_LIVE),
    "LiveCalls": _object({"calls": {"type": "array", "items": _ref("LiveCall")}}),
    "Attempt": _object({"linkedid": _TEXT, "start": _TIME,
                        "by": {"type": "string", "description": "the extension that called"},
                        "by_name": _TEXT}),
    "WorklistCall": {"allOf": [_ref("Call"), _object(
        {"last_attempt": {"oneOf": [{"type": "null"}, _ref("Attempt")]}})]},
    "Worklist": _object({"calls": {"type": "array", "items": _ref("WorklistCall")},
                         "next_cursor": _nullable("string")}),
    "HandledAnswer": _object({"handled": {"oneOf": [{"type": "null"}, _ref("Handled")]}}),
    "Report": _object({
        "report": {"type": "string", "enum": list(REPORTS)}, "title": _TEXT,
        "source": {"type": "string", "enum": ["rollups", "calls"]},
        "columns": {"type": "array", "items": _object({"key": _TEXT, "title": _TEXT,
                                                        "kind": _TEXT})},
        "rows": {"type": "array", "items": {"type": "object"}},
        "totals": {"type": ["object", "null"]}, "chart": {"type": "object"},
        "period": _object({"from": _TIME, "to": _TIME})}),
    "Tag": _object({"id": _WHOLE, "name": _TEXT, "colour": _TEXT}),
    "TagAnswer": _object({"tag": _ref("Tag")}),
    "Tags": _object({"tags": {"type": "array", "items": _ref("Tag")}}, ["tags"]),
    "CallTags": _object({"tags": {"type": "array", "items": _ref("Tag")}}),
    "CommentAnswer": _object({"comment": _ref("Comment")}),
    "Comments": _object({"comments": {"type": "array", "items": _ref("Comment")}}),
    "CommentHistory": _object({"history": {"type": "array", "items": {"type": "object"}}}),
    "Deleted": _object({"deleted": {}}),
    "DeletedFiles": _object({"deleted": _object({"calls": _WHOLE, "files": _WHOLE})}),
    "Count": _object({"calls": _WHOLE}),
}


def _query(name: str, description: str, kind: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": kind or _TEXT}


def _path(name: str, description: str, kind: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": kind or _TEXT}


_LINKEDID = _path("linkedid", "the call's linkedid (mikopbx-1700000000.123)")
_PERIOD = [
    _query("period", "a named period (instead of from/to)",
           {"type": "string", "enum": list(PERIODS + YEARS)}),
    _query("from", "YYYY-MM-DD (the whole day) or an ISO date-time, PBX time"),
    _query("to", "YYYY-MM-DD (the whole day) or an ISO date-time, PBX time"),
]
_FILTER = _PERIOD + [
    _query("direction", "comma-separated: " + ", ".join(DIRECTIONS)),
    _query("number", "≥ 3 digits of a number, two numbers, ≥ 3 letters of a name, a linkedid, "
           "or linkedid: / src: / dst: / did: prefixes"),
    _query("employee", "comma-separated extensions: calls they took part in (`office:201`: "
                       "that PBX's 201; `201`: every PBX's)"),
    _query("group", "comma-separated employee groups (ModuleUsersGroups)"),
    _query("min_talk", "seconds", _WHOLE), _query("max_talk", "seconds", _WHOLE),
    _query("recording", "yes: with a recording, no: without"),
    _query("queue", "comma-separated queues"), _query("tag", "comma-separated tag names"),
    _query("tag_mode", "any or all of the tags", {"type": "string", "enum": ["any", "all"]}),
    _query("comment", "a part of a comment's text"),
    _query("hangup", "comma-separated: " + ", ".join(HANGUP_SIDES)),
    _query("pbx", "one PBX's calls of a history several PBXs write (its pbx.id)"),
]
_CALL_FILTER = _FILTER + [
    _query("status", "comma-separated: " + ", ".join(STATUSES)),
    _query("unreturned", "yes: missed calls nobody called back and nobody marked handled "
           "(the Unreturned tab's calls)"),
    _query("tab", "the history page's tab (unreturned: missed, not called back, not handled)",
           {"type": "string", "enum": list(TABS)}),
]
_PAGING = [_query("limit", "calls per page, 1 to 500 (default 50)",
                  {"type": "integer", "minimum": 1, "maximum": 500}),
           _query("cursor", "the `next_cursor` of the previous page")]


def _answer(description: str, schema: str | None = None) -> dict:
    answer = {"description": description}
    if schema:
        answer["content"] = {"application/json": {"schema": _ref(schema)}}
    return answer


_ERRORS = {
    "400": _answer("bad input: what is wrong, readable", "Error"),
    "401": _answer("not authenticated: no session, or an unknown, malformed, revoked or "
                   "expired API token", "Error"),
    "403": _answer("not allowed (role), no CSRF token with a session, or no licence", "Error"),
    "404": _answer("not found, or a call this user may not see", "Error"),
    "503": _answer("the call history database is unavailable", "Error"),
}


def _operation(summary: str, answers: dict, *, parameters=(), body: dict | None = None,
               changes: bool = False) -> dict:
    operation = {"summary": summary, "parameters": list(parameters),
                 "responses": {**answers, **_ERRORS}}
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": body}}}
    if changes:
        operation["description"] = ("With a session, send the page's CSRF token in "
                                    "`X-CSRF-Token`; with an API token, none is needed.")
    return operation


def _fields(**fields) -> dict:
    return {"type": "object", "properties": {name: _TEXT for name in fields}}


_OK = "200"


def _paths(callback_window_s: int) -> dict:
    return {
        "/calls": {"get": _operation(
            "Calls, newest first, of a filter (keyset paging)",
            {_OK: _answer("a page of calls", "CallList")}, parameters=_CALL_FILTER + _PAGING)},
        "/calls/in-progress": {"get": _operation(
            "The calls under way now", {_OK: _answer("calls in progress", "LiveCalls")})},
        "/calls/{linkedid}": {
            "get": _operation("One call with its legs and its mark as handled",
                              {_OK: _answer("the call", "CallDetails")}, parameters=[_LINKEDID]),
            "delete": _operation("Delete a call and its recordings (admins)",
                                 {_OK: _answer("deleted", "DeletedFiles")},
                                 parameters=[_LINKEDID], body=_fields(reason=1), changes=True)},
        "/calls/{linkedid}/comments": {
            "get": _operation("The call's comments", {_OK: _answer("comments", "Comments")},
                              parameters=[_LINKEDID]),
            "post": _operation("Add a comment", {"201": _answer("added", "CommentAnswer")},
                               parameters=[_LINKEDID], body=_fields(text=1), changes=True)},
        "/calls/{linkedid}/comments/{comment_id}": {
            "patch": _operation("Edit a comment (its author or an admin)",
                                {_OK: _answer("edited", "CommentAnswer")},
                                parameters=[_LINKEDID, _path("comment_id", "", _WHOLE)],
                                body=_fields(text=1), changes=True),
            "delete": _operation("Delete a comment (its author or an admin)",
                                 {_OK: _answer("deleted", "Deleted")},
                                 parameters=[_LINKEDID, _path("comment_id", "", _WHOLE)],
                                 changes=True)},
        "/calls/{linkedid}/comments/history": {"get": _operation(
            "Every change of the call's comments", {_OK: _answer("changes", "CommentHistory")},
            parameters=[_LINKEDID])},
        "/calls/{linkedid}/tags": {
            "get": _operation("The call's tags", {_OK: _answer("tags", "CallTags")},
                              parameters=[_LINKEDID]),
            "put": _operation("Make the call's tags exactly these",
                              {_OK: _answer("tags", "CallTags")}, parameters=[_LINKEDID],
                              body={"type": "object", "properties": {"tags": _TEXTS}},
                              changes=True),
            "post": _operation("Set a tag on the call", {"201": _answer("tags", "CallTags")},
                               parameters=[_LINKEDID], body=_fields(tag=1), changes=True)},
        "/calls/{linkedid}/tags/{tag_id}": {"delete": _operation(
            "Clear a tag from the call", {_OK: _answer("tags", "CallTags")},
            parameters=[_LINKEDID, _path("tag_id", "", _WHOLE)], changes=True)},
        "/calls/{linkedid}/recordings": {"delete": _operation(
            "Delete the call's recordings (admins)", {_OK: _answer("deleted", "DeletedFiles")},
            parameters=[_LINKEDID], body=_fields(reason=1), changes=True)},
        "/tags": {
            "get": _operation("The list of tags", {_OK: _answer("tags", "Tags")}),
            "post": _operation("Add a tag to the list (admins)",
                               {"201": _answer("added", "TagAnswer")},
                               body=_fields(name=1, colour=1), changes=True)},
        "/tags/{tag_id}": {
            "patch": _operation("Rename or recolour a tag (admins)",
                                {_OK: _answer("changed", "TagAnswer")},
                                parameters=[_path("tag_id", "", _WHOLE)],
                                body=_fields(name=1, colour=1), changes=True),
            "delete": _operation("Remove a tag from the list and every call (admins)",
                                 {_OK: _answer("deleted", "Deleted")},
                                 parameters=[_path("tag_id", "", _WHOLE)], changes=True)},
        "/recordings/count": {"get": _operation(
            "How many calls of a filter have recordings (admins)",
            {_OK: _answer("count", "Count")}, parameters=_CALL_FILTER)},
        "/recordings/delete": {"post": _operation(
            "Delete the recordings of a filter's calls (admins)",
            {_OK: _answer("deleted", "DeletedFiles")}, parameters=_CALL_FILTER,
            body=_fields(reason=1, expected=1), changes=True)},
        "/stats/{name}": {"get": _operation(
            "An analytics report of a filter's calls", {_OK: _answer("the report", "Report")},
            parameters=[_path("name", "the report", {"type": "string", "enum": list(REPORTS)}),
                        *_CALL_FILTER,
                        _query("grain", "traffic: day, week or month"),
                        _query("service_level", "queues: answered within N seconds", _WHOLE),
                        _query("lang", "titles in en or ru")])},
        "/worklist/unreturned": {"get": _operation(
            "The open missed calls to call back (missed, nobody called back, not handled), "
            "oldest first, with the attempts so far; unless `period` or `from`/`to` say, "
            "those that started within the callback window (`calls.callback_window`, "
            f"{callback_window_s:,} s on this server): a call now may still return them",
            {_OK: _answer("a page of the worklist", "Worklist")},
            parameters=_FILTER + _PAGING)},
        "/worklist/unreturned/{linkedid}/handled": {
            "post": _operation(
                "Mark an unreturned missed call handled (who: the API token's name or the "
                "user); marking it again changes nothing",
                {"201": _answer("marked", "HandledAnswer"),
                 _OK: _answer("it was marked already", "HandledAnswer")},
                parameters=[_LINKEDID], body=_fields(note=1), changes=True),
            "delete": _operation("Put the call back on the worklist",
                                 {_OK: _answer("not handled", "HandledAnswer")},
                                 parameters=[_LINKEDID], changes=True)},
        "/openapi.json": {"get": _operation("This document",
                                            {_OK: {"description": "OpenAPI 3.1"}})},
    }


def api_document(root: str, callback_window_s: int = 86_400) -> dict:
    """The OpenAPI document for the API at `root` (its path on this server), whose
    worklist's default period is the callback window `callback_window_s`."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "ModuleExtendedCDR call history API", "version": VERSION,
                 "description": "Calls of the MikoPBX call history as the module classifies "
                                "them. Times are ISO 8601 with the PBX timezone's offset. "
                                "Operators (and operators' tokens) see only their calls, "
                                "supervisors' tokens only those of their extensions and "
                                "groups: another's is 404."},
        "servers": [{"url": root}],
        "security": [{"session": []}, {"token": []}],
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "session",
                        "description": "the PBX admin interface's session (through its "
                                       "nginx); changes need the page's X-CSRF-Token"},
            "token": {"type": "http", "scheme": "bearer",
                      "description": "an API token an admin created (Settings → API tokens): "
                                     "`Authorization: Bearer extcdr_…`; no CSRF token"}}},
        "paths": _paths(callback_window_s),
    }
