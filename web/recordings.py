"""Recordings of a call: only files inside the recordings root are ever served — no `..`, no
absolute path elsewhere, no symlink out of the root. Behind nginx the file goes out through
`X-Accel-Redirect` (an internal location; nginx handles ranges); without nginx (the in-process
stand-in) Flask sends it with range support. The recordings of a whole filter go out as one
ZIP, streamed as it is written."""
from __future__ import annotations

import io
import mimetypes
import zipfile
from pathlib import Path
from typing import Iterator

from flask import (Blueprint, Response, abort, current_app, jsonify, make_response, render_template,
                   request, send_file, stream_with_context)

from exports.writers import file_name, rows_of
from mirror.models import Call
from mirror.queries import calls_query
from pbx.recording_files import RecordingFiles
from pbxmodule.nginx import ACCEL_LOCATION
from web.api import visible_call
from web.auth import in_process_login
from web.context import clock, mirror, page_params, request_filter
from web.present import attachment

recordings = Blueprint("recordings", __name__)



@recordings.get("/recordings/<linkedid>/<int:number>")
def recording(linkedid: str, number: int):
    row = visible_call(linkedid)
    if not 1 <= number <= len(row["recordings"]):
        abort(404)
    path = recording_path(row["recordings"][number - 1])
    if path is None:
        return jsonify(error="this recording is outside the recordings folder"), 403
    if not path.is_file():
        return jsonify(error="recording unavailable: the PBX no longer has the file"), 404
    name = _download_name(row, number, path.suffix)
    attachment = request.args.get("download") == "1"
    config = current_app.config
    if in_process_login() is not None:            # no nginx in front to send the file
        return send_file(path, conditional=True, download_name=name, as_attachment=attachment)
    reply = make_response("")
    reply.headers["X-Accel-Redirect"] = ACCEL_LOCATION + str(
        path.relative_to(config["EXTCDR_RECORDINGS_ROOT"].resolve()))
    reply.headers["Content-Type"] = mimetypes.guess_type(path.name)[0] or "audio/mpeg"
    disposition = "attachment" if attachment else "inline"
    reply.headers["Content-Disposition"] = f"{disposition}; filename=\"{name}\""
    return reply


class NoRecordings(Exception):
    """The filter's calls have no recordings: there is nothing to put in an archive."""


@recordings.errorhandler(NoRecordings)
def no_recordings(_):
    message = "No call of this filter has a recording. Change the filter and try again."
    return render_template("message.html", title="No recordings", message=message), 404


@recordings.get("/recordings.zip")
def recordings_zip():
    """Every recording of the calls of the page's filter that this user may see, named
    `date_time_from-to_n.ext`; files the PBX no longer has are listed in `unavailable.txt`.
    A filter without recordings gets a message instead of an empty archive."""
    params = page_params(request.args)
    flt = request_filter(params)
    if not calls_query(flt, mirror()).where(Call.recordings != "[]").exists():
        raise NoRecordings()
    name = file_name("recordings", "zip", params, flt, clock())
    return Response(stream_with_context(_zip_chunks(_files(flt))), mimetype="application/zip",
                    headers={"Content-Disposition": attachment(name),
                             "Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _files(flt):
    """(name in the archive, file or None when unavailable) of the filter's recordings."""
    names = set()
    for row in rows_of(flt, mirror()):
        for number, written in enumerate(row["recordings"], start=1):
            path = recording_path(written)
            available = path if path is not None and path.is_file() else None
            name = _download_name(row, number, Path(written).suffix)
            if name in names:                    # two calls of the same second and numbers
                name = f"{Path(name).stem}_{row['id']}{Path(name).suffix}"
            names.add(name)
            yield name, available


class _Pipe(io.RawIOBase):
    """A write-only stream whose bytes are taken out as they come (ZipFile writes into it)."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def _zip_chunks(files) -> Iterator[bytes]:
    """A ZIP written while it is sent: audio is already compressed, so stored as it is."""
    pipe, unavailable = _Pipe(), []
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, path in files:
            if path is None:
                unavailable.append(name)
                continue
            with open(path, "rb") as source, archive.open(name, "w", force_zip64=True) as target:
                while chunk := source.read(256 * 1024):
                    target.write(chunk)
                    yield pipe.take()
            yield pipe.take()
        if unavailable:
            archive.writestr("unavailable.txt", "The PBX no longer has these recordings:\n"
                             + "\n".join(unavailable) + "\n")
    yield pipe.take()


def recording_files() -> RecordingFiles:
    config = current_app.config
    return RecordingFiles(config["EXTCDR_RECORDINGS_ROOT"], config["EXTCDR_RECORDINGS_WRITTEN_AS"])


def recording_path(written: str) -> Path | None:
    """The file of a call's recording as the PBX wrote its path, if inside the root."""
    return recording_files().locate(written)


def recording_available(written: str) -> bool:
    path = recording_path(written)
    return path is not None and path.is_file()


def _download_name(row: dict, number: int, suffix: str) -> str:
    """A readable name: local date and time of the call, its two numbers, the part number."""
    stamp = clock().to_local(row["start_ms"] / 1000).strftime("%Y-%m-%d_%H-%M-%S")
    return f"{stamp}_{_safe(row['src'])}-{_safe(row['dst'])}_{number}{suffix}"


def _safe(number: str | None) -> str:
    return "".join(ch for ch in number or "" if ch.isalnum())[:20] or "x"
