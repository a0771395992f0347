"""The history page: filter bar with tab counters, call rows, call details, keyset "show more",
saved filters, column choice and live updates. Views only gather; `db.queries` filters,
templates format."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from urllib.parse import parse_qsl

from flask import (Blueprint, Response, abort, g, redirect, render_template, request,
                   stream_with_context, url_for)
from werkzeug.datastructures import MultiDict

from daemon.calls import STATUSES
from db.models import Call, Employee, GroupMember
from db.queries import (DAY_MS, PERIODS, QueryError, TABS, call_rows, calls_in_progress,
                        calls_query, decode_cursor, encode_cursor, legs_of_call, tab_counts,
                        whole_number)
from db.reports import reports_using
from db.userdata import (UserDataError, default_filter, delete_filter, make_default,
                         save_filter, saved_filters, set_user_setting)
from web.api import visible_call
from web.auth import check_csrf
from web.context import mirror, request_filter, user_db, user_prefs
from web.exports import PAGE_COLUMNS, chosen_columns
from web.i18n import LANGUAGES, say_error
from web.present import page_url, user_language
from web.recordings import recording_available

history = Blueprint("history", __name__)

PAGE = 50
# The page's own parameters (a subset of db.queries.FILTER_PARAMETERS, plus paging).
PAGE_PARAMETERS = ("period", "from", "to", "number", "employee", "group", "status", "min_talk",
                   "tab")
LIVE_SECONDS = 600            # an event stream ends after this; the browser reconnects
LIVE_CHECK = 0.5              # how often a stream looks for a new commit of the mirror
LIVE_KEEPALIVE = 15
RECENT_MS = 3_600_000         # calls this recent may still change (legs arriving late)
RECENT_LIMIT = 200
BACKGROUND_FROM = 20_000      # calls: a bigger export is built in the background, with progress
MAX_PERIOD_DAYS = 366         # the page counts every call of its period: a year at most


def page_params(args) -> dict[str, str]:
    """The filter in a query string; repeated values (multi-selects) join with commas."""
    unknown = [name for name in args if name not in PAGE_PARAMETERS + ("cursor", "after")]
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0]!r}; use: {', '.join(PAGE_PARAMETERS)}")
    return typed_params(args)


def typed_params(args) -> dict[str, str]:
    """The page's parameters as the user typed them, not checked (to show them again)."""
    params = {}
    for name in PAGE_PARAMETERS:
        value = ",".join(v.strip() for v in args.getlist(name) if v.strip())
        if value:
            params[name] = value
    if params.get("period") == "custom":
        del params["period"]
    return params


def page_filter(params: dict[str, str]):
    """The request's filter for the page, whose period is bounded (its tabs count it all)."""
    flt = request_filter(params)
    if flt.end_ms - flt.start_ms > MAX_PERIOD_DAYS * DAY_MS:
        raise QueryError(f"the period is too long: at most {MAX_PERIOD_DAYS} days on this "
                         f"page; choose a shorter one")
    return flt


@history.get("/")
def page():
    try:
        params = page_params(request.args)
        restored = default_filter(user_db(), g.user.name) if not request.args else None
        try:
            flt = page_filter(restored["params"] if restored else params)
            params = restored["params"] if restored else params
        except QueryError:      # a saved filter that no longer opens (a group was removed)
            restored, flt = None, page_filter(params)
        counts = tab_counts(flt, mirror())
        rows, next_cursor = _rows(flt, request.args.get("cursor"))
    except QueryError as error:
        # The whole page, with the fields as typed and what is wrong beside them; no calls.
        return _page(typed_params(request.args),
                     error=say_error(str(error), user_language())), 400
    return _page(params, counts=counts, rows=rows, next_cursor=next_cursor, restored=restored)


def _page(params: dict[str, str], *, counts: dict | None = None, rows: list | None = None,
          next_cursor: str | None = None, restored: dict | None = None,
          error: str | None = None) -> str:
    names = _employee_names()
    visible = g.user.visible_to
    employees = [(ext, name) for ext, name in sorted(names.items())
                 if visible is None or ext in visible]
    return render_template(
        "history/page.html", params=params, counts=counts or {}, rows=rows or [],
        next_cursor=next_cursor, error=error,
        tabs=TABS, periods=PERIODS, statuses=STATUSES, columns=page_columns(),
        all_columns=PAGE_COLUMNS, employees=employees, groups=_groups(),
        saved=saved_filters(user_db(), g.user.name), restored=restored,
        names=names, live_after=_newest_call_id(), background_from=BACKGROUND_FROM,
        live=calls_in_progress(mirror(), visible))


@history.get("/rows")
def more_rows():
    """The next page of rows (keyset) as HTML for "show more"."""
    params = page_params(request.args)
    rows, next_cursor = _rows(page_filter(params), request.args.get("cursor"))
    html = render_template("history/rows.html", rows=rows, columns=page_columns(),
                           params=params, names=_employee_names())
    return {"html": html, "next_cursor": next_cursor}


@history.get("/calls/<linkedid>/details")
def details(linkedid: str):
    row = visible_call(linkedid)
    legs = legs_of_call(linkedid, mirror())
    recordings = [{"number": n, "available": recording_available(path)}
                  for n, path in enumerate(row["recordings"], start=1)]
    recording_of_leg = {path: n for n, path in enumerate(row["recordings"], start=1)}
    return render_template("history/details.html", call=row, legs=legs, recordings=recordings,
                           recording_of_leg=recording_of_leg, names=_employee_names())


@history.get("/events")
def events():
    """Server-sent events: new and changed calls of the current filter, and the counters."""
    params = page_params(request.args)
    flt = page_filter(params)
    after = whole_number(request.headers.get("Last-Event-ID") or request.args.get("after") or "0",
                         "after (a call id)")
    columns = page_columns()
    names = _employee_names()
    # waitress (with channel_request_lookahead) tells when the page was left: stop at once,
    # giving the thread back, instead of finding out at the next write.
    left = request.environ.get("waitress.client_disconnected", lambda: False)

    def stream():
        newest, seen, sent_counts, sent_live = after, _recent(flt), None, None
        version, deadline, quiet = None, time.monotonic() + LIVE_SECONDS, time.monotonic()
        yield "retry: 2000\n\n"
        while time.monotonic() < deadline and not left():
            current = mirror().execute_sql("PRAGMA data_version").fetchone()[0]
            if current != version:     # the daemon committed: look for new and changed calls
                version = current
                recent = _recent(flt)
                fresh = _new_calls(flt, newest) + [
                    row for linkedid, row in recent.items()
                    if row["id"] <= newest and seen.get(linkedid, row) != row]
                gone = _gone(seen, recent)
                seen = recent
                counts = tab_counts(flt, mirror())
                live = calls_in_progress(mirror(), g.user.visible_to)
                if fresh or gone or counts != sent_counts or live != sent_live:
                    newest = max([newest] + [row["id"] for row in fresh])
                    payload = {"counts": counts, "gone": gone, "calls": [
                        {"linkedid": row["linkedid"], "start": row["start_ms"], "id": row["id"],
                         "html": render_template("history/rows.html", rows=[row],
                                                 columns=columns, params=params, names=names)}
                        for row in fresh]}
                    if live != sent_live:
                        payload["now"] = render_template("history/now.html", live=live)
                    sent_counts, sent_live = counts, live
                    quiet = time.monotonic()
                    yield f"id: {newest}\ndata: {json.dumps(payload)}\n\n"
            if time.monotonic() - quiet > LIVE_KEEPALIVE:
                quiet = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(LIVE_CHECK)

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@history.post("/filters")
def save():
    check_csrf()
    params = page_params(query_args(request.form.get("query", "")))
    page_filter(params)                              # refuse a filter that would not open
    try:
        save_filter(user_db(), g.user.name, request.form.get("name", ""), params,
                    default=request.form.get("default") == "on")
    except UserDataError as exc:
        raise QueryError(str(exc)) from None
    return redirect(page_url(params))


@history.post("/filters/<int:filter_id>/default")
def set_default(filter_id: int):
    check_csrf()
    _owned(make_default, filter_id)
    return redirect(_back())


@history.post("/filters/<int:filter_id>/delete")
def delete(filter_id: int):
    check_csrf()
    mailing = reports_using(user_db(), g.user.name, filter_id)
    if mailing:
        raise QueryError(f"this filter is mailed by the report {mailing[0]!r}; change or delete "
                         f"the report first")
    _owned(delete_filter, filter_id)
    return redirect(_back())


@history.post("/settings")
def settings():
    """The user's columns and language."""
    check_csrf()
    if "language" in request.form:
        language = request.form["language"]
        if language not in LANGUAGES:
            raise QueryError(f"unknown language {language!r}; use one of: {', '.join(LANGUAGES)}")
        set_user_setting(user_db(), g.user.name, "language", language)
    if "columns" in request.form:
        chosen = [c for c in request.form.getlist("columns") if c]
        unknown = [c for c in chosen if c not in PAGE_COLUMNS]
        if unknown:
            raise QueryError(f"unknown column {unknown[0]!r}; use: {', '.join(PAGE_COLUMNS)}")
        set_user_setting(user_db(), g.user.name, "columns",
                         ",".join(c for c in PAGE_COLUMNS if c in chosen) or "time")
    return redirect(_back())


def _owned(action, filter_id: int) -> None:
    try:
        action(user_db(), g.user.name, filter_id)
    except LookupError:
        abort(404)


def _rows(flt, cursor: str | None) -> tuple[list[dict], str | None]:
    if cursor:
        flt.after = decode_cursor(cursor)
    flt.limit = PAGE + 1
    rows = list(call_rows(calls_query(flt, mirror())))
    last = rows[PAGE - 1] if len(rows) > PAGE else None
    return rows[:PAGE], encode_cursor(last["start_ms"], last["id"]) if last else None


def _recent(flt) -> dict[str, dict]:
    """Calls of the filter that began within the last hour (they may still change)."""
    since = max(flt.start_ms, int(time.time() * 1000) - RECENT_MS)
    if since >= flt.end_ms:
        return {}
    recent = replace(flt, start_ms=since, after=None, limit=RECENT_LIMIT)
    return {r["linkedid"]: r for r in call_rows(calls_query(recent, mirror()))}


def _gone(seen: dict[str, dict], recent: dict[str, dict]) -> list[str]:
    """Recent calls that left the filter (a missed call returned since, a call found to be
    still in progress), not those that only grew older than the recent window."""
    oldest = int(time.time() * 1000) - RECENT_MS
    if len(recent) >= RECENT_LIMIT:
        oldest = max(oldest, min(row["start_ms"] for row in recent.values()))
    return [linkedid for linkedid, row in seen.items()
            if linkedid not in recent and row["start_ms"] >= oldest]


def _new_calls(flt, after_id: int) -> list[dict]:
    """Calls of the filter added to the mirror after `after_id`, of any age."""
    newer = replace(flt, after=None, limit=200)
    query = calls_query(newer, mirror()).where(Call.id > after_id)
    return list(call_rows(query))


def _newest_call_id() -> int:
    return Call.select(Call.id).order_by(Call.id.desc()).limit(1).bind(mirror()).scalar() or 0


def page_columns() -> tuple[str, ...]:
    """The user's chosen columns, in the page's order."""
    return chosen_columns(user_prefs().get("columns"))


def _employee_names() -> dict[str, str]:
    return dict(Employee.select(Employee.extension, Employee.name).bind(mirror()).tuples())


def _groups() -> list[str]:
    return [name for (name,) in GroupMember.select(GroupMember.group_name).distinct()
            .order_by(GroupMember.group_name).bind(mirror()).tuples()]


def query_args(query: str) -> MultiDict:
    """A query string (a form field holding the page's filter) as request arguments."""
    return MultiDict(parse_qsl(query.lstrip("?")))


def _back() -> str:
    """Where a settings form came from, if it is this page (never another site)."""
    back = request.form.get("back", "")
    home = url_for("history.page")
    return back if back.startswith(home) and "//" not in back and "\\" not in back else home
