"""Working with calls through the API (`api/v1`): comments, tags, and deleting a call or its
recordings. Every call is looked up as the user may see it (another's call is 404, as if it did
not exist); changes need the page's CSRF token (`X-CSRF-Token`); deleting and the tag list are
for admins. The page's scripts use these same requests."""
from __future__ import annotations

import time

from flask import Blueprint, g, jsonify, request

from i18n import say_error
from mirror import annotations, deletions
from mirror.annotations import Actor, AnnotationError, NotAllowed
from mirror.deletions import DeletionError
from mirror.queries import whole_number
from mirror.records import comment_record, iso_time
from web.api import visible_call
from web.auth import csrf_valid
from web.context import clock, mirror, page_params, request_filter, user_db
from web.present import user_language
from web.recordings import recording_files

call_actions = Blueprint("call_actions", __name__)



@call_actions.before_request
def forged_changes_refused():
    if request.method != "GET" and not csrf_valid():
        return _refused("request refused: no valid CSRF token (reload the page)", 403)
    return None


@call_actions.errorhandler(AnnotationError)
def bad_annotation(error):
    return _refused(str(error), 400)


@call_actions.errorhandler(DeletionError)
def refused_deletion(error):
    return _refused(str(error), error.status)


@call_actions.errorhandler(NotAllowed)
def not_allowed(error):
    return _refused(str(error), 403)


@call_actions.errorhandler(LookupError)
def unknown(_):
    return _refused("not found", 404)


def _refused(message: str, status: int):
    """A readable refusal, in the user's language (the page shows it as it comes)."""
    return jsonify(error=say_error(message, user_language())), status


# --- comments ------------------------------------------------------------------------------------

@call_actions.get("/calls/<linkedid>/comments")
def comments(linkedid: str):
    return jsonify(comments=[_comment(c) for c in visible_call(linkedid)["comments"]])


@call_actions.post("/calls/<linkedid>/comments")
def add_comment(linkedid: str):
    visible_call(linkedid)
    comment = annotations.add_comment(user_db(), linkedid, _actor(), _field("text"), _now())
    return jsonify(comment=_comment(comment)), 201


@call_actions.patch("/calls/<linkedid>/comments/<int:comment_id>")
def edit_comment(linkedid: str, comment_id: int):
    visible_call(linkedid)
    comment = annotations.edit_comment(user_db(), linkedid, comment_id, _actor(),
                                       _field("text"), _now())
    return jsonify(comment=_comment(comment))


@call_actions.delete("/calls/<linkedid>/comments/<int:comment_id>")
def delete_comment(linkedid: str, comment_id: int):
    visible_call(linkedid)
    annotations.delete_comment(user_db(), linkedid, comment_id, _actor(), _now())
    return jsonify(deleted=comment_id)


@call_actions.get("/calls/<linkedid>/comments/history")
def comment_history(linkedid: str):
    """The audit trail of the call's comments (who, when, old -> new)."""
    visible_call(linkedid)
    tz = clock().tz
    return jsonify(history=[{**change, "at": iso_time(change.pop("at_ms"), tz)}
                            for change in annotations.comment_history(mirror(), linkedid)])


# --- tags ----------------------------------------------------------------------------------------

@call_actions.get("/tags")
def tags():
    return jsonify(tags=annotations.tag_list(mirror()), colours=annotations.TAG_COLOURS)


@call_actions.post("/tags")
def create_tag():
    tag = annotations.create_tag(user_db(), _actor(), _field("name"), _field("colour"))
    return jsonify(tag=tag), 201


@call_actions.patch("/tags/<int:tag_id>")
def change_tag(tag_id: int):
    tag = annotations.change_tag(user_db(), _actor(), tag_id, _field("name"), _field("colour"))
    return jsonify(tag=tag)


@call_actions.delete("/tags/<int:tag_id>")
def delete_tag(tag_id: int):
    annotations.delete_tag(user_db(), _actor(), tag_id)
    return jsonify(deleted=tag_id)


@call_actions.get("/calls/<linkedid>/tags")
def call_tags(linkedid: str):
    return jsonify(tags=visible_call(linkedid)["tags"])


@call_actions.put("/calls/<linkedid>/tags")
def set_call_tags(linkedid: str):
    """Make the call's tags exactly the given names (`tags`: a list, or repeated fields)."""
    visible_call(linkedid)
    body = request.get_json(silent=True)
    names = body.get("tags") if isinstance(body, dict) else request.form.getlist("tags")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise AnnotationError("tags: give a list of tag names")
    annotations.set_call_tags(user_db(), linkedid, _actor(), names, _now())
    return jsonify(tags=visible_call(linkedid)["tags"])


@call_actions.post("/calls/<linkedid>/tags")
def add_call_tag(linkedid: str):
    visible_call(linkedid)
    annotations.add_call_tag(user_db(), linkedid, _actor(), _field("tag"), _now())
    return jsonify(tags=visible_call(linkedid)["tags"]), 201


@call_actions.delete("/calls/<linkedid>/tags/<int:tag_id>")
def remove_call_tag(linkedid: str, tag_id: int):
    visible_call(linkedid)
    annotations.remove_call_tag(user_db(), linkedid, tag_id)
    return jsonify(tags=visible_call(linkedid)["tags"])


# --- deleting ------------------------------------------------------------------------------------

@call_actions.delete("/calls/<linkedid>")
def delete_call(linkedid: str):
    """Delete a call from the history with its recordings (admins; a reason is required)."""
    _admin_only()
    _known_call(linkedid)
    deleted = deletions.delete_call(user_db(), linkedid, g.user.name, _field("reason"), _now(),
                                    recording_files().locate)
    return jsonify(deleted={"calls": deleted.calls, "files": deleted.files})


@call_actions.delete("/calls/<linkedid>/recordings")
def delete_recordings(linkedid: str):
    _admin_only()
    _known_call(linkedid)
    deleted = deletions.delete_recordings(user_db(), [linkedid], g.user.name, _field("reason"),
                                          _now(), recording_files().locate)
    return jsonify(deleted={"calls": deleted.calls, "files": deleted.files})


@call_actions.get("/recordings/count")
def recordings_count():
    """How many calls of the filter (query string, as the page's) have recordings: shown
    before a bulk deletion is confirmed."""
    _admin_only()
    return jsonify(calls=deletions.recorded(request_filter(page_params(request.args)),
                                            mirror()).count())


@call_actions.post("/recordings/delete")
def delete_filter_recordings():
    """Delete the recordings of every call of the filter (query string). `expected` is the
    count the admin confirmed: if the filter selects another number now, nothing is deleted."""
    _admin_only()
    flt = request_filter(page_params(request.args))
    expected = whole_number(_field("expected") or "-", "expected (the count you confirmed)")
    deleted = deletions.delete_filter_recordings(user_db(), flt, expected, g.user.name,
                                                 _field("reason"), _now(),
                                                 recording_files().locate)
    return jsonify(deleted={"calls": deleted.calls, "files": deleted.files})


def _known_call(linkedid: str) -> dict:
    """The call to delete; a call still in progress is refused readably, not 'not found'."""
    deletions.refuse_in_progress(mirror(), linkedid)
    return visible_call(linkedid)


def _admin_only() -> None:
    if g.user.role != "admin":
        raise NotAllowed("only an admin may delete calls or recordings")


# --- helpers -------------------------------------------------------------------------------------

def _actor() -> Actor:
    return Actor(g.user.name, g.user.role == "admin")


def _field(name: str) -> str:
    """A field of a JSON body or a form; "" when absent."""
    body = request.get_json(silent=True)
    value = body.get(name, "") if isinstance(body, dict) else request.form.get(name, "")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise AnnotationError(f"{name}: give it as text")
    return str(value)


def _comment(comment: dict) -> dict:
    return comment_record(comment, clock().tz)


def _now() -> int:
    return int(time.time() * 1000)
