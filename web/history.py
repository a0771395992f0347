"""The history page: filter bar with tab counters, call rows, call details, keyset "show more",
saved filters, column choice and live updates. Views only gather; `mirror.queries` filters,
templates format."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from urllib.parse import parse_qsl

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from exports.writers import PAGE_COLUMNS, chosen_columns, with_pbx_column
from i18n import LANGUAGES, say_error
from mirror.analytics import tab_counts
from mirror.annotations import tag_list
from mirror.calls import STATUSES
from mirror.deletions import deletions_of
from mirror.queries import (DAY_MS, HANGUP_SIDES, PERIODS, TABS, QueryError, call_rows,
                            calls_in_progress, calls_query, changes_since, decode_cursor,
                            employee_choices, encode_cursor, group_names, legs_of_call,
                            mirror_revision, names_by_pbx, pbx_ids, tag_counts, whole_number)
from mirror.report_rows import reports_using
from mirror.userdata import (UserDataError, default_filter, delete_filter, make_default,
                             save_filter, saved_filters, set_user_setting)
from mirror.worklist import handled
from web.api import visible_call
from web.auth import check_csrf
from web.context import (mirror, named, page_params, request_filter, typed_params, user_db,
                         user_prefs)
from web.present import page_url, user_language
from web.recordings import recording_available

history = Blueprint("history", __name__)

PAGE = 50
# The page's own parameters (a subset of mirror.queries.FILTER_PARAMETERS, plus paging).
BACKGROUND_FROM = 20_000      # calls: a bigger export is built in the background, with progress
MAX_PERIOD_DAYS = 366         # the page counts every call of its period: a year at most


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
        revision = _revision()                        # before the reads: nothing is missed
        counts = counts_at(revision, flt)
        rows, next_cursor = _rows(flt, request.args.get("cursor"))
    except QueryError as error:
        # The whole page, with the fields as typed and what is wrong beside them; no calls.
        return _page(typed_params(request.args), revision=0,
                     error=say_error(str(error), user_language())), 400
    return _page(params, revision=revision, counts=counts, rows=rows, next_cursor=next_cursor,
                 restored=restored)


def _page(params: dict[str, str], *, revision: int, counts: dict | None = None,
          rows: list | None = None, next_cursor: str | None = None,
          restored: dict | None = None, error: str | None = None) -> str:
    names = _employee_names()
    live = calls_in_progress(mirror(), g.user.visible_to)
    return render_template(
        "history/page.html", params=params, counts=counts or {}, rows=rows or [],
        tags=tag_list(mirror()), queues=_queues(), pbxs=_pbxs(),
        hangup_sides=HANGUP_SIDES, open_call=request.args.get("call", "")[:200],
        next_cursor=next_cursor, error=error,
        tabs=TABS, periods=PERIODS, statuses=STATUSES, columns=page_columns(),
        all_columns=PAGE_COLUMNS, employees=employee_choices(mirror(), g.user.visible_to),
        groups=group_names(mirror()),
        saved=saved_filters(user_db(), g.user.name), restored=restored,
        pbx_names=names, revision=revision, background_from=BACKGROUND_FROM,
        live=live, now_key=now_key(live))


@history.get("/rows")
def more_rows():
    """The next page of rows (keyset) as HTML for "show more"."""
    params = page_params(request.args)
    rows, next_cursor = _rows(page_filter(params), request.args.get("cursor"))
    html = render_template("history/rows.html", rows=rows, columns=page_columns(),
                           params=params, pbx_names=_employee_names())
    return {"html": html, "next_cursor": next_cursor}


@history.get("/calls/<linkedid>/details")
def details(linkedid: str):
    row = named([visible_call(linkedid)])[0]
    legs = legs_of_call(linkedid, mirror())
    recordings = [{"number": n, "available": recording_available(path)}
                  for n, path in enumerate(row["recordings"], start=1)]
    recording_of_leg = {path: n for n, path in enumerate(row["recordings"], start=1)}
    return render_template("history/details.html", call=row, legs=legs, recordings=recordings,
                           recording_of_leg=recording_of_leg, pbx_names=_employee_names(),
                           all_tags=tag_list(mirror()), deletions=deletions_of(mirror(), linkedid),
                           handled=handled(mirror(), linkedid))


@history.get("/calls/<linkedid>/row")
def call_row(linkedid: str):
    """One call's row as the page shows it (after a comment or a tag changed it)."""
    row = named([visible_call(linkedid)])[0]
    params = page_params(request.args)
    return {"html": render_template("history/rows.html", rows=[row], columns=page_columns(),
                                    params=params, pbx_names=_employee_names())}


@history.get("/updates")
def updates():
    """What changed for this page since the revision it shows (nginx told it that calls
    changed): the new and changed calls of its filter as rows, the calls that left it, the
    counters, and the calls in progress unless the page shows them already (`now`, their key).
    Every open page asks at each change, so it reads only the calls written since, and pages
    asking the same (filter, visibility, role, columns, language) share one answer."""
    params = page_params(request.args)
    flt = page_filter(params)
    since = whole_number(request.args.get("since") or "0", "since (a revision)")
    revision = mirror_revision(mirror())              # before the reads: nothing is missed
    if since > revision:                              # a history started afresh
        shared_answers().clear()
        return {"revision": revision, "reload": True}
    columns, language = page_columns(), user_language()
    key = ("updates", revision, since, repr(flt), tuple(sorted(params.items())), columns,
           language, g.user.role, request.args.get("now"))
    return shared_answers().get(key, lambda: _update(params, flt, since, revision, columns))


def _update(params: dict[str, str], flt, since: int, revision: int, columns) -> dict:
    changes = changes_since(flt, since, mirror()) if since < revision else ([], [])
    if changes is None:                               # back after a long pause
        return {"revision": revision, "reload": True}
    rows, gone = changes
    rows = named(rows, flt)
    names = _employee_names()
    update = {"revision": revision, "counts": counts_at(revision, flt), "gone": gone,
              "calls": [{"linkedid": row["linkedid"], "start": row["start_ms"], "id": row["id"],
                         "html": render_template("history/rows.html", rows=[row],
                                                 columns=columns, params=params, pbx_names=names)}
                        for row in rows]}
    live = calls_in_progress(mirror(), flt.visible_to)
    key = now_key(live)
    if request.args.get("now") != key:
        update["now"] = render_template("history/now.html", live=live, now_key=key)
    return update


def counts_at(revision: int, flt) -> dict[str, int]:
    """The tab counters of `flt` as of `revision`: one count for all the pages that ask at
    once with the same filter and visibility (every open page asks when a call is written)."""
    key = ("counts", revision, repr(replace(flt, tab="all", after=None, limit=None)))
    return shared_answers().get(key, lambda: tab_counts(flt, mirror()))


@history.get("/tag-counts")
def tag_count_labels():
    """How many calls of the page's filter carry each tag, as the labels under its tabs. The
    page asks once it is shown: counting the tagged calls of a long period takes as long as a
    page, and the page need not wait for it."""
    params = page_params(request.args)
    flt = page_filter(params)
    revision = mirror_revision(mirror())
    key = ("tag counts", revision, repr(replace(flt, tab="all", after=None, limit=None)),
           tuple(sorted(params.items())), user_language())

    def labels() -> dict:
        counts = tag_counts(flt, mirror(), counts_at(revision, flt)[flt.tab]) \
            if mirror().execute_sql("SELECT EXISTS (SELECT 1 FROM call_tag)").fetchone()[0] \
            else {}
        return {"html": render_template("history/tag_counts.html", tags=tag_list(mirror()),
                                        tag_counts=counts, params=params)}
    return shared_answers().get(key, labels)


def shared_answers():
    return current_app.config["EXTCDR_SHARED"]


def now_key(live: list[dict]) -> str:
    """Names the calls in progress as a page shows them (it sends the key back to be spared
    an unchanged list)."""
    return hashlib.sha1(json.dumps(live, sort_keys=True).encode()).hexdigest()[:16]


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
    rows = named(call_rows(calls_query(flt, mirror())), flt)
    last = rows[PAGE - 1] if len(rows) > PAGE else None
    return rows[:PAGE], encode_cursor(last["start_ms"], last["id"]) if last else None


def page_columns() -> tuple[str, ...]:
    """The user's chosen columns, in the page's order (and the PBX's, see `with_pbx_column`)."""
    return with_pbx_column(chosen_columns(user_prefs().get("columns")), _pbxs())


def _pbxs() -> list[str]:
    """The PBXs whose calls the user sees, once per request (the history's, once per revision:
    a look at every month's partition of a central history)."""
    if "pbxs" not in g:
        every = shared_answers().get(("pbxs", _revision()), lambda: pbx_ids(mirror()))
        visible = g.user.visible_to
        g.pbxs = [pbx for pbx in every if visible is None or visible.shows_pbx(pbx)]
    return g.pbxs


def _revision() -> int:
    """The history's revision, once per request."""
    if "revision" not in g:
        g.revision = mirror_revision(mirror())
    return g.revision


def _employee_names() -> dict[str, dict[str, str]]:
    """Each PBX's employees' names (a call's are its PBX's, see `names_by_pbx`)."""
    return names_by_pbx(mirror())


def _queues() -> list[str]:
    """The queues calls went through (one index seek per queue, and month: once a revision)."""
    return shared_answers().get(("queues", _revision()), lambda: [
        queue for (queue,) in mirror().execute_sql(
            "WITH RECURSIVE q (queue) AS (SELECT min(queue) FROM call WHERE queue IS NOT NULL "
            "UNION ALL SELECT (SELECT min(queue) FROM call WHERE queue > q.queue) FROM q "
            "WHERE q.queue IS NOT NULL) SELECT queue FROM q WHERE queue IS NOT NULL")])


def query_args(query: str) -> MultiDict:
    """A query string (a form field holding the page's filter) as request arguments."""
    return MultiDict(parse_qsl(query.lstrip("?")))


def _back() -> str:
    """Where a settings form came from, if it is this page (never another site)."""
    back = request.form.get("back", "")
    home = url_for("history.page")
    return back if back.startswith(home) and "//" not in back and "\\" not in back else home
