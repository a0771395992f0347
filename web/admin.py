"""The module's settings page, for admins: the list of tags people set on calls (name, colour),
the supervisors limited to the calls of some employee groups, and the months of history kept
(`mirror.retention`). Each change is a form post with the page's CSRF token; a bad value shows
the page again with what is wrong, nothing changed."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from mirror import annotations, retention
from mirror.annotations import Actor, AnnotationError
from mirror.queries import group_names
from mirror.userdata import UserDataError, set_supervisor_groups, supervisor_groups
from web.auth import check_csrf
from web.context import mirror, user_db

admin = Blueprint("admin", __name__)


@admin.before_request
def admins_only():
    if g.user.role != "admin":
        return render_template("message.html", title="Request refused",
                               message="Only an admin may change the module's settings."), 403
    if request.method == "POST":
        check_csrf()
    return None


@admin.get("/settings")
def page(error: str | None = None, status: int = 200):
    return render_template("settings/page.html", tags=annotations.tag_list(mirror()),
                           colours=annotations.TAG_COLOURS, error=error,
                           groups=group_names(mirror()),
                           supervisors=supervisor_groups(user_db()),
                           keep_months=retention.keep_months(user_db()),
                           max_keep_months=retention.MAX_KEEP_MONTHS), status


@admin.post("/settings/tags")
def create_tag():
    return _changed(annotations.create_tag, request.form.get("name", ""),
                    request.form.get("colour", ""))


@admin.post("/settings/tags/<int:tag_id>")
def change_tag(tag_id: int):
    return _changed(annotations.change_tag, tag_id, request.form.get("name", ""),
                    request.form.get("colour", ""))


@admin.post("/settings/tags/<int:tag_id>/delete")
def delete_tag(tag_id: int):
    return _changed(annotations.delete_tag, tag_id)


def _changed(change, *args):
    try:
        change(user_db(), Actor(g.user.name, admin=True), *args)
    except AnnotationError as error:
        return page(error=str(error), status=400)
    except LookupError:
        abort(404)
    return redirect(url_for("admin.page"))


@admin.post("/settings/supervisors")
def limit_supervisor():
    """Limit a supervisor to some groups' calls (no group chosen: every call again)."""
    groups = [name for name in request.form.getlist("groups") if name]
    unknown = [name for name in groups if name not in group_names(mirror())]
    try:
        if unknown:
            raise UserDataError(f"unknown employee group {unknown[0][:40]!r}")
        set_supervisor_groups(user_db(), request.form.get("user", ""), groups)
    except UserDataError as error:
        return page(error=str(error), status=400)
    return redirect(url_for("admin.page"))


@admin.post("/settings/retention")
def keep_months():
    """The months of history kept (empty: all); the daemon drops older ones within the hour."""
    try:
        retention.set_keep_months(user_db(), request.form.get("keep_months", ""))
    except retention.RetentionError as error:
        return page(error=str(error), status=400)
    return redirect(url_for("admin.page"))
