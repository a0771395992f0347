"""`export`: the page's filter as a file (Excel, CSV, PDF, JSON Lines) — every call of the filter
that the user may see. CSV and JSON Lines stream as they are produced; an Excel or PDF file is
built in a temp file removed after sending, also when the client goes away. A big export runs
as a background job (`export/jobs`) whose progress the page shows."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from flask import (Blueprint, Response, abort, current_app, g, request, send_file,
                   stream_with_context, url_for)

from exports.writers import (FORMATS, MEDIA_TYPES, CallCells, about, check_pdf_size, export_columns,
                             export_file, file_name, rows_of, text_chunks)
from mirror.pbxtime import PbxClock
from mirror.queries import CallFilter, QueryError, calls_query
from web.auth import check_csrf
from web.context import clock, mirror, page_params, request_filter
from web.history import page_columns, query_args
from web.jobs import JobRefused
from web.present import attachment, user_language

download = Blueprint("download", __name__)

CHUNK = 256 * 1024


@dataclass(frozen=True)
class ExportRequest:
    """What an export of the page holds: format, filter, the user's language and columns."""
    fmt: str
    flt: CallFilter
    language: str
    columns: tuple[str, ...]
    about: list[tuple[str, str]]
    clock: PbxClock
    name: str                 # the file's name, as the user will keep it

    def write(self, path: Path, db, progress=None) -> int:
        return export_file(path, self.fmt, self.flt, db, self.clock, self.language, self.about,
                           self.columns, progress)


def export_request(fmt: str, args) -> ExportRequest:
    """The export the page asks for; a PDF too long to print is refused before anything."""
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    params = page_params(args)
    flt = request_filter(params)
    if fmt == "pdf":
        check_pdf_size(calls_query(flt, mirror(), counting=True).count())
    language = user_language()
    return ExportRequest(fmt, flt, language, page_columns(),
                         about(f"{g.user.name} ({g.user.role})", params, flt, clock(), language,
                               mirror()),
                         clock(), file_name("calls", fmt, params, flt, clock()))


@download.get("/export")
def export():
    args = request.args.copy()
    wanted = export_request(args.pop("format", "xlsx"), args)
    if wanted.fmt in ("csv", "jsonl"):
        cells = CallCells(export_columns(wanted.columns), wanted.clock, wanted.language)
        body = text_chunks(wanted.fmt, rows_of(wanted.flt, mirror()), cells)
    else:
        body = _built(wanted)
    return Response(stream_with_context(body), mimetype=MEDIA_TYPES[wanted.fmt], headers={
        "Content-Disposition": attachment(wanted.name),
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@download.post("/export/jobs")
def start_job():
    """Start building a big export; the page polls `job` and then fetches `job_file`."""
    check_csrf()
    wanted = export_request(request.form.get("format", "xlsx"),
                            query_args(request.form.get("query", "")))
    total = calls_query(wanted.flt, mirror(), counting=True).count()
    db = mirror()
    try:
        job_id = _jobs().start(g.user.name, wanted.fmt, total,
                               lambda path, progress: wanted.write(path, db, progress),
                               wanted.name)
    except JobRefused as refused:
        return {"error": str(refused)}, 429
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
                     download_name=found.download_name)


def _job(job_id: str):
    """The user's job, or 404 (another user's job does not exist for them)."""
    found = _jobs().get(g.user.name, job_id)
    if found is None:
        abort(404)
    return found


def _jobs():
    return current_app.config["EXTCDR_EXPORT_JOBS"]


def _built(wanted: ExportRequest):
    """Build the workbook or PDF in a temp dir, send it in chunks, delete it whatever happens
    (a client that goes away closes this generator)."""
    with tempfile.TemporaryDirectory(prefix="extcdr-export-") as tmp:
        path = Path(tmp) / f"calls.{wanted.fmt}"
        wanted.write(path, mirror())
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk
