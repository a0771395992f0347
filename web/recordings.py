"""Recordings of a call: only files inside the recordings root are ever served — no `..`, no
absolute path elsewhere, no symlink out of the root. Behind nginx the file goes out through
`X-Accel-Redirect` (an internal location; nginx handles ranges); without nginx (the in-process
stand-in) Flask sends it with range support."""
from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from flask import Blueprint, abort, current_app, jsonify, make_response, request, send_file

from web.api import visible_call

recordings = Blueprint("recordings", __name__)

ACCEL_LOCATION = "/extcdr-recordings/"


def resolve(written: str, root: Path, written_as: str) -> Path | None:
    """The file a PBX recording path names, if it lies inside `root` (symlinks resolved)."""
    prefix = written_as.rstrip("/") + "/"
    if not written.startswith(prefix):
        return None
    relative = written[len(prefix):]
    if not relative or relative.startswith("/") or "\x00" in relative:
        return None
    root = root.resolve()
    target = (root / relative).resolve()
    if os.path.commonpath([root, target]) != str(root):
        return None
    return target


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
    if config["EXTCDR_STANDIN"]:
        return send_file(path, conditional=True, download_name=name, as_attachment=attachment)
    reply = make_response("")
    reply.headers["X-Accel-Redirect"] = ACCEL_LOCATION + str(
        path.relative_to(config["EXTCDR_RECORDINGS_ROOT"].resolve()))
    reply.headers["Content-Type"] = mimetypes.guess_type(path.name)[0] or "audio/mpeg"
    disposition = "attachment" if attachment else "inline"
    reply.headers["Content-Disposition"] = f"{disposition}; filename=\"{name}\""
    return reply


def recording_path(written: str) -> Path | None:
    """The file of a call's recording as the PBX wrote its path, if inside the root."""
    config = current_app.config
    return resolve(written, config["EXTCDR_RECORDINGS_ROOT"], config["EXTCDR_RECORDINGS_WRITTEN_AS"])


def recording_available(written: str) -> bool:
    path = recording_path(written)
    return path is not None and path.is_file()


def _download_name(row: dict, number: int, suffix: str) -> str:
    """A readable name: local date and time of the call, its two numbers, the part number."""
    clock = current_app.config["EXTCDR_CLOCK"]
    stamp = clock.to_local(row["start_ms"] / 1000).strftime("%Y-%m-%d_%H-%M-%S")
    return f"{stamp}_{_safe(row['src'])}-{_safe(row['dst'])}_{number}{suffix}"


def _safe(number: str | None) -> str:
    return "".join(ch for ch in number or "" if ch.isalnum())[:20] or "x"
