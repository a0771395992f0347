"""Mailed reports in the page: each user schedules their saved filters (or the report's own
filters: employees, groups, directions, statuses, tags) — the calls or one of the analytics
reports of them — sees when each goes
next and the log of what was sent, sends one now, downloads a sent file while it lasts. The
daemon's scheduler does the sending. The signed link in a mail is the one page here that needs
no login: its signature and expiry are the permission."""
from __future__ import annotations

import json
import time

from flask import (Blueprint, abort, current_app, g, redirect, render_template, request, send_file,
                   url_for)

from exports.writers import MEDIA_TYPES
from i18n import PERIOD_LABELS, say_error
from mirror.analytics import MAX_SERVICE_LEVEL_S, REPORT_TITLES, SERVICE_LEVEL_S
from mirror.annotations import tag_list
from mirror.calls import DIRECTIONS, STATUSES
from mirror.queries import (PERIODS, QueryError, calls_query, employee_choices, group_names,
                            whole_number)
from mirror.report_rows import (ReportError, delete_report, link_secret, report_of, reports_of,
                                request_send, send_of, send_row, sends_of)
from mirror.userdata import saved_filters
from pbx.config import SourceError, read_pbx_web_address
from reports.definitions import (DEFAULT_BODY, DEFAULT_SUBJECT, DELIVERIES, FREQUENCIES, LINK_HOURS,
                                 MAX_RECIPIENTS, REPORT_FILTERS, REPORT_FORMATS, TEMPLATE_VALUES,
                                 link_valid, report_form, save_report, split_filters)
from web.analytics_views import GRAIN_LABELS
from web.auth import check_csrf
from web.context import clock, mirror, user_db
from web.present import user_language

reports = Blueprint("reports", __name__)

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@reports.get("/reports")
def page():
    """The user's reports; an admin also sees everyone else's (and may delete them) — one
    limited to some PBXs, those of users limited to some of theirs."""
    everyone = reports_of(user_db(), None if g.user.role == "admin" else g.user.name,
                          g.user.pbxs)
    for report in everyone:
        report["own_filters"], report["analytics"] = split_filters(json.loads(report["filters"]))
    return render_template(
        "reports/list.html", reports=[r for r in everyone if r["owner"] == g.user.name],
        others=[r for r in everyone if r["owner"] != g.user.name], filters=_filter_names(),
        weekdays=WEEKDAYS, analytics_titles=REPORT_TITLES, grain_labels=GRAIN_LABELS,
        period_labels=PERIOD_LABELS)


@reports.get("/reports/new")
def new():
    return _form(None, _defaults(), status=200)


@reports.get("/reports/<int:report_id>")
def edit(report_id: int):
    report = _owned(report_of, report_id)
    values = {**report, **json.loads(report["filters"]), "filter": report["filter_id"] or "",
              "at": report["at_time"],
              "recipients": "; ".join(report["recipients"]),
              "weekday": report["on_day"] if report["frequency"] == "weekly" else 0,
              "monthday": report["on_day"] if report["frequency"] == "monthly" else 1,
              "enabled": "on" if report["enabled"] else "off"}
    return _form(report_id, values, status=200)


@reports.post("/reports")
def create():
    return _save(None)


@reports.post("/reports/<int:report_id>")
def update(report_id: int):
    _owned(report_of, report_id)
    return _save(report_id)


@reports.post("/reports/<int:report_id>/send")
def send_now(report_id: int):
    check_csrf()
    _owned(request_send, report_id, time.time())
    return redirect(url_for("reports.edit", report_id=report_id, sent=1))


@reports.post("/reports/<int:report_id>/delete")
def delete(report_id: int):
    check_csrf()
    try:
        delete_report(user_db(), None if g.user.role == "admin" else g.user.name, report_id,
                      g.user.pbxs)
    except LookupError:
        abort(404)
    return redirect(url_for("reports.page"))


@reports.get("/reports/sends/<int:send_id>/file")
def sent_file(send_id: int):
    """A file of the owner's report, while it is kept (the "download list")."""
    send = _owned(send_of, send_id)
    return _file(send)


@reports.get("/reports/file/<int:send_id>/<int:expires>/<signature>/<name>")
def mailed_file(send_id: int, expires: int, signature: str, name: str):
    """The download link of a mail: anyone holding it, until it expires (then 410)."""
    if not link_valid(link_secret(mirror()), send_id, expires, signature):
        abort(404)
    if time.time() >= expires:
        return _expired()
    send = send_row(mirror(), send_id)
    if send is None:
        abort(404)
    return _file(send)


def _file(send: dict):
    if not send["file"] or (send["expires_ms"] or 0) <= time.time() * 1000:
        return _expired()
    folder = current_app.config["EXTCDR_REPORTS_DIR"].resolve()
    path = (folder / send["file"]).resolve()
    if path.parent != folder / str(send["id"]) or not path.is_file():
        return _expired()
    return send_file(path, as_attachment=True, download_name=path.name,
                     mimetype=MEDIA_TYPES[path.suffix.lstrip(".")])


def _expired():
    return render_template("message.html", title="Link expired",
                           message="This report is no longer kept. Ask for it to be sent "
                                   "again."), 410


def _save(report_id: int | None):
    check_csrf()
    language = user_language()
    try:
        form = report_form(_form_values(), language)
        try:      # its own filters must open for its owner (a known group, tag, status...)
            calls_query(current_app.config["EXTCDR_CONTEXT"].call_filter(
                {**form.filters, "period": form.period}, clock=clock(),
                visible_to=g.user.visible_to), mirror())
        except QueryError as exc:
            raise ReportError(str(exc)) from None
        saved = save_report(user_db(), g.user.owner, form, link_base=_link_base(),
                            clock=clock(), report_id=report_id,
                            pbx=current_app.config["EXTCDR_CONTEXT"].pbx)
    except ReportError as exc:
        return _form(report_id, _form_values(), error=say_error(str(exc), language),
                     status=400)
    return redirect(url_for("reports.edit", report_id=saved, saved=1))


def _form_values() -> dict[str, str]:
    values = request.form.to_dict()
    for name in REPORT_FILTERS:          # multiple choices: comma-separated, as the page's
        values[name] = ",".join(v for v in request.form.getlist(name) if v)
    values["on_day"] = values.get("weekday") if values.get("frequency") == "weekly" \
        else values.get("monthday")
    return values


def _form(report_id: int | None, values: dict, *, error: str | None = None, status: int):
    """The report's form (with what was typed, after an error) and its send log."""
    sends = sends_of(user_db(), g.user.name, report_id) if report_id is not None else []
    return render_template(
        "reports/form.html", report_id=report_id, values=values, error=error, sends=sends,
        employees=employee_choices(mirror(), g.user.visible_to), groups=group_names(mirror()),
        directions=DIRECTIONS, statuses=STATUSES,
        tags=tag_list(mirror()),
        filters=_filter_names(), periods=PERIODS, period_labels=PERIOD_LABELS,
        frequencies=FREQUENCIES, formats=REPORT_FORMATS,
        deliveries=DELIVERIES, link_hours=LINK_HOURS, weekdays=WEEKDAYS,
        max_recipients=MAX_RECIPIENTS, template_values=TEMPLATE_VALUES,
        analytics_titles=REPORT_TITLES, grain_labels=GRAIN_LABELS,
        service_levels=(SERVICE_LEVEL_S, MAX_SERVICE_LEVEL_S),
        now_ms=int(time.time() * 1000)), status


def _defaults() -> dict:
    language = user_language()
    try:
        chosen = whole_number(request.args.get("filter", ""), "filter", 1)
    except QueryError:
        chosen = ""                       # no saved filter chosen yet
    return {"filter": chosen, "period": "yesterday",
            "frequency": "daily", "at": "08:00", "weekday": 0, "monthday": 1,
            "format": "xlsx", "delivery": "attach", "link_hours": 72, "enabled": "on",
            "subject": DEFAULT_SUBJECT[language], "body": DEFAULT_BODY[language],
            "recipients": ""}


def _filter_names() -> dict[int, str]:
    return {f["id"]: f["name"] for f in saved_filters(user_db(), g.user.name)}


def _link_base() -> str:
    """Where the mails' links start: the PBX's own web address (its config DB), else the
    address its nginx was reached on. Never the client's Host header, which a user could point
    at any site to have the PBX mail links there. (`reports.link_base` overrides both.)"""
    try:
        own = read_pbx_web_address(current_app.config["EXTCDR_CONFIG_DB"])
    except SourceError:           # no config DB (development, tests): nginx's own address
        own = None
    if own:
        return own
    scheme = request.headers.get("X-Forwarded-Proto") or request.scheme
    address = request.headers.get("X-Extcdr-Server-Address")
    if not address:               # no nginx in front: `extcdr web --standin`, development only
        return f"{scheme}://{request.host}"
    port = request.headers.get("X-Extcdr-Server-Port", "")
    host = f"[{address}]" if ":" in address else address
    default = {"http": "80", "https": "443"}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def _owned(action, *args):
    try:
        return action(user_db(), g.user.name, *args)
    except LookupError:
        abort(404)
