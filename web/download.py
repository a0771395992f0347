"""`export`: the page's filter as a file (Excel, CSV, PDF, JSON Lines) — every call of the filter
that the user may see, streamed; an Excel file is built in a temp file removed after sending,
also when the client goes away."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from flask import (Blueprint, Response, abort, current_app, g, request, send_file,
                   stream_with_context, url_for)

from db.queries import QueryError, calls_query
from db.userdata import user_settings
from web.auth import check_csrf
from web.context import clock, mirror, request_filter, user_db
from web.exports import (FORMATS, MEDIA_TYPES, PDF_LIMIT, CallCells, csv_chunks,
                         export_columns, export_file, jsonl_chunks, rows_of)
from web.history import page_columns, page_params, query_args
from web.present import page_context

download = Blueprint("download", __name__)

CHUNK = 256 * 1024


@download.get("/export")
def export():
    args = request.args.copy()
    fmt = args.pop("format", "xlsx")
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    params = page_params(args)
    flt = request_filter(params)
    language = page_context()["lang"]
    columns = page_columns(user_settings(user_db(), g.user.name))
    cells = CallCells(export_columns(columns), clock(), language)
    name = f"calls_{time.strftime('%Y-%m-%d_%H-%M')}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"',
               "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if fmt == "csv":
        delimiter = ";" if language == "ru" else ","
        body = csv_chunks(rows_of(flt, mirror()), cells, delimiter)
    elif fmt == "jsonl":
        body = jsonl_chunks(rows_of(flt, mirror()), clock().tz)
    else:
        if fmt == "pdf" and calls_query(flt, mirror(), counting=True).count() > PDF_LIMIT:
            raise QueryError(f"a PDF holds at most {PDF_LIMIT:,} calls; narrow the filter or "
                             f"export Excel or CSV")
        body = _built(fmt, flt, language, _about(params), columns)
    return Response(stream_with_context(body), mimetype=MEDIA_TYPES[fmt], headers=headers)


@download.post("/export/jobs")
def start_job():
    """Start building a big export; the page polls `job` and then fetches `job_file`."""
    check_csrf()
    fmt = request.form.get("format", "xlsx")
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    params = page_params(query_args(request.form.get("query", "")))
    flt = request_filter(params)
    total = calls_query(flt, mirror(), counting=True).count()
    if fmt == "pdf" and total > PDF_LIMIT:
        raise QueryError(f"a PDF holds at most {PDF_LIMIT:,} calls; narrow the filter or "
                         f"export Excel or CSV")
    db, pbx_clock, language = mirror(), clock(), page_context()["lang"]
    columns, about = page_columns(user_settings(user_db(), g.user.name)), _about(params)

    def build(path, progress):
        export_file(path, fmt, flt, db, pbx_clock, language, about, columns, progress)

    job_id = _jobs().start(g.user.name, fmt, total, build)
    return {"job": job_id, "total": total, "status": url_for("download.job", job_id=job_id)}


@download.get("/export/jobs/<job_id>")
def job(job_id: str):
    found = _job(job_id)
    reply = found.as_dict()
    if found.path is not None:
        reply["file"] = url_for("download.job_file", job_id=job_id)
    return reply


@download.get("/export/jobs/<job_id>/file")
def job_file(job_id: str):
    found = _job(job_id)
    if found.path is None:
        abort(404)
    return send_file(found.path, as_attachment=True, mimetype=MEDIA_TYPES[found.fmt],
                     download_name=f"calls_{time.strftime('%Y-%m-%d_%H-%M')}.{found.fmt}")


def _job(job_id: str):
    """The user's job, or 404 (another user's job does not exist for them)."""
    found = _jobs().get(g.user.name, job_id)
    if found is None:
        abort(404)
    return found


def _jobs():
    return current_app.config["EXTCDR_EXPORT_JOBS"]


def _built(fmt: str, flt, language: str, about, columns):
    """Build the workbook or PDF in a temp dir, send it in chunks, delete it whatever happens
    (a client that goes away closes this generator)."""
    with tempfile.TemporaryDirectory(prefix="extcdr-export-") as tmp:
        path = Path(tmp) / f"calls.{fmt}"
        export_file(path, fmt, flt, mirror(), clock(), language, about, columns)
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk


def _about(params: dict[str, str]) -> list[tuple[str, str]]:
    """The first sheet: the filter, the period and who exported it, when."""
    period = params.get("period") or f"{params.get('from', '')} — {params.get('to', '')}"
    return ([("Exported by", f"{g.user.name} ({g.user.role})"),
             ("Exported at", time.strftime("%Y-%m-%d %H:%M:%S")),
             ("Period", period)]
            + [(name, value) for name, value in params.items() if name not in
               ("period", "from", "to")])
