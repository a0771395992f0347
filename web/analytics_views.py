"""The Analytics page: the six reports of `mirror.analytics` over a period, each a chart and a
table; their JSON (`api/v1/stats/<report>`, the same the page's chart is drawn from) and their
files (`analytics/export`: Excel, CSV, PDF). Every figure counts only the calls the user may
see: the filter carries their visibility, as on the history page and in `api/v1/calls`."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from flask import Blueprint, Response, g, jsonify, render_template, request, url_for

from exports.analytics_files import (ANALYTICS_FORMATS, TITLE_VALUES, ReportTable, report_about,
                                     report_file_name, write_report)
from exports.writers import MEDIA_TYPES
from i18n import LANGUAGES, PERIOD_LABELS, say_error, translated
from mirror.analytics import (GRAINS, OPTION_PARAMETERS, REPORT_OPTIONS, REPORT_TITLES, REPORTS,
                              Report, build_report, report_options)
from mirror.calls import DIRECTIONS
from mirror.queries import PERIODS, YEARS, CallFilter, QueryError, employee_choices, group_names
from mirror.records import iso_time
from web.context import clock, mirror
from web.history import page_filter
from web.present import attachment, filter_query, local_time, user_language

analytics = Blueprint("analytics", __name__)

DEFAULT_PERIOD = "this_month"
ANALYTICS_PERIODS = PERIODS + YEARS
GRAIN_LABELS = {grain: f"By {grain}" for grain in GRAINS}     # "By day", "By week", "By month"
# The form's own fields; any other parameter of the query is kept in it as a hidden field.
FORM_FIELDS = {"report", "period", "from", "to", "direction", "employee", "group"}


@analytics.errorhandler(QueryError)
def bad_request(error):
    """A readable 400 in the user's language: JSON for the API, a page otherwise."""
    message = say_error(str(error), _language())
    if request.endpoint == "analytics.stats":
        return jsonify(error=message), 400
    return render_template("message.html", title="Bad filter", message=message), 400


@analytics.get("/analytics")
def page():
    params = _params(request.args)
    if not any(params.get(name) for name in ("period", "from", "to")):
        params["period"] = DEFAULT_PERIOD
    params.setdefault("report", REPORTS[0])
    try:
        report, flt = _report(params)
    except QueryError as error:
        # The page, with the fields as typed and what is wrong with them; no report.
        return _page(params, error=say_error(str(error), user_language())), 400
    days = (local_time(flt.start_ms, "%Y-%m-%d"), local_time(flt.end_ms - 1, "%Y-%m-%d"))
    return _page(params, data=report_json(report, flt, user_language()), days=days,
                 summary=ReportTable(report, user_language()).summary())


def _page(params: dict[str, str], *, data: dict | None = None, error: str | None = None,
          days: tuple[str, str] | None = None, summary: list | None = None):
    report = params["report"] if params["report"] in REPORTS else REPORTS[0]
    shown = FORM_FIELDS | {REPORT_OPTIONS.get(report, "")}
    return render_template(
        "analytics/page.html", params=params, report=report, data=data, error=error, days=days,
        reports=REPORTS, report_titles=REPORT_TITLES, periods=ANALYTICS_PERIODS,
        period_labels=PERIOD_LABELS, directions=DIRECTIONS,
        grain_labels=GRAIN_LABELS,
        employees=employee_choices(mirror(), g.user.visible_to), groups=group_names(mirror()),
        hidden={k: v for k, v in params.items() if k not in shown},
        summary=summary or [],
        report_url=lambda **changes: url_for("analytics.page") + "?" + filter_query(
            {**params, **changes}),
        export_url=lambda fmt: url_for("analytics.export") + "?" + filter_query(
            {"format": fmt, **params}))


@analytics.get("/api/v1/stats/<name>")
def stats(name: str):
    """A report as JSON: titles in the user's language (or `lang`), keys in English, and the
    period in the PBX's time."""
    if name not in REPORTS:
        return jsonify(error=say_error(
            f"unknown report {name!r}; use one of: {', '.join(REPORTS)}", _language())), 404
    language = request.args.get("lang", "")
    if language and language not in LANGUAGES:
        raise QueryError(f"unknown language {language!r}; use one of: {', '.join(LANGUAGES)}")
    report, flt = _report({**_params(request.args), "report": name})
    return jsonify(report_json(report, flt, _language()))


@analytics.get("/analytics/export")
def export():
    """The report as a file; small (a row per employee, day or queue), so it is written whole
    to a temp folder, read, and the folder removed before it is sent."""
    params = _params(request.args)
    fmt = params.pop("format", "xlsx")
    if fmt not in ANALYTICS_FORMATS:
        raise QueryError(f"unknown format {fmt!r}; use one of: {', '.join(ANALYTICS_FORMATS)}")
    report, flt = _report(params)
    language = user_language()
    about = report_about(report, params, flt, clock(), language,
                         f"{g.user.name} ({g.user.role})", db=mirror())
    with tempfile.TemporaryDirectory(prefix="extcdr-analytics-") as folder:
        path = Path(folder) / f"report.{fmt}"
        write_report(path, fmt, report, language=language, about=about)
        body = path.read_bytes()
    return Response(body, mimetype=MEDIA_TYPES[fmt], headers={
        "Content-Disposition": attachment(report_file_name(report, fmt, flt, clock())),
        "Cache-Control": "no-store"})


def report_json(report: Report, flt: CallFilter, language: str) -> dict:
    """`Report.as_json()` with its titles in `language` and the period as ISO times."""
    table = ReportTable(report, language)
    data = copy.deepcopy(report.as_json())
    data["title"] = table.title
    for column, title in zip(data["columns"], table.titles):
        column["title"] = title
    data["chart"]["series"] = table.chart_series()
    data["chart"]["labels"] = table.chart_labels()
    for row in data["rows"]:
        for key in row.keys() & set(TITLE_VALUES):
            row[key] = translated(row[key], language)
    if "heatmap" in data:
        data["heatmap"]["days"] = [translated(day, language) for day in data["heatmap"]["days"]]
    tz = clock().tz
    data["period"] = {"from": iso_time(flt.start_ms, tz), "to": iso_time(flt.end_ms, tz)}
    return data


def _report(params: dict[str, str]) -> tuple[Report, CallFilter]:
    """The report the parameters ask for, over the calls this user may see (at most a year)."""
    name, options = report_options({k: params.get(k, "") for k in OPTION_PARAMETERS})
    flt = page_filter({k: v for k, v in params.items() if k not in OPTION_PARAMETERS})
    return build_report(name, flt, mirror(), clock(), options), flt


def _params(args) -> dict[str, str]:
    """The query's parameters but `lang`; repeated values (multi-selects) join with commas."""
    params = {}
    for name in args:
        value = ",".join(v.strip() for v in args.getlist(name) if v.strip())
        if value and name != "lang":
            params[name] = value
    return params


def _language() -> str:
    """`lang` of the request when it names a language, else the user's."""
    language = request.args.get("lang", "")
    return language if language in LANGUAGES else user_language()
