"""The API tokens page, for admins (linked from the settings page): the tokens with their
role, scope (an operator's extensions; a supervisor's extensions and groups; in a history
several PBXs write, the PBXs it is limited to), creation, last
use, expiry and revocation; a new token is shown once, on the page that created it (only its
digest is kept); a token is revoked, never deleted. Each change is a form post with the page's
CSRF token; a bad value shows the page again with what is wrong."""
from __future__ import annotations

import time

from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from mirror.queries import group_names, pbx_ids, whole_number
from mirror.tokens import (MAX_EXPIRY_DAYS, ROLES, TokenError, create_token, revoke_token,
                           token_list, token_pbxs)
from web.auth import check_csrf
from web.context import mirror, user_db

tokens_admin = Blueprint("tokens_admin", __name__)


@tokens_admin.before_request
def admins_only():
    if g.user.role != "admin":
        return render_template("message.html", title="Request refused",
                               message="Only an admin may manage API tokens."), 403
    if request.method == "POST":
        check_csrf()
    return None


@tokens_admin.get("/settings/tokens")
def page(error: str | None = None, status: int = 200, created: dict | None = None):
    tokens = token_list(user_db(), g.user.pbxs)
    pbxs = pbx_ids(mirror(), g.user.visible_to)
    return render_template("settings/tokens.html", tokens=tokens, roles=ROLES,
                           max_days=MAX_EXPIRY_DAYS, error=error, created=created,
                           groups=group_names(mirror()), now_ms=int(time.time() * 1000),
                           form=request.form, pbxs=pbxs,
                           pbx_column=len(pbxs) > 1 or any(t["pbxs"] for t in tokens)), status


@tokens_admin.post("/settings/tokens")
def create():
    """Create a token and show it, this once. An admin limited to some PBXs gives it theirs
    (or some of them)."""
    form = request.form
    try:
        days = form.get("expires_days", "").strip()
        expires = whole_number(days, "expires after (days)", 1, MAX_EXPIRY_DAYS) if days \
            else None
        token_id, token = create_token(
            user_db(), form.get("name", ""), form.get("role", ""),
            form.get("extensions", "").split(","), g.user.name, int(time.time() * 1000),
            expires, groups=form.getlist("groups"),
            pbxs=token_pbxs(form.getlist("pbxs"), g.user.pbxs))
    except (TokenError, ValueError) as error:
        return page(error=str(error), status=400)
    return page(created={"id": token_id, "token": token})


@tokens_admin.post("/settings/tokens/<int:token_id>/revoke")
def revoke(token_id: int):
    try:
        revoke_token(user_db(), token_id, int(time.time() * 1000), g.user.pbxs)
    except LookupError:
        abort(404)
    return redirect(url_for("tokens_admin.page"))
