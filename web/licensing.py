"""The module's pages only work with a valid licence. Without one an administrator sees the
activation screen (what is wrong, where to activate), anyone else a short notice, and scripts
a 403 with the reason; the data stays untouched."""
from __future__ import annotations

from flask import current_app, g, jsonify, render_template, request

# Where MikoPBX activates keys and coupons: Module marketplace -> Licence management.
ACTIVATION_PAGE = "/admin-cabinet/licensing/modify/"


def gate():
    """before_request: answer in place of the page when the licence is missing or expired."""
    if request.blueprint == "standin" or request.endpoint == "static":
        return None
    problem = current_app.config["EXTCDR_LICENCE"].problem()
    if problem is None:
        return None
    wants_page = request.method == "GET" and request.blueprint in ("history", "reports")
    if not wants_page:
        return jsonify(error=f"the module is not licensed: {problem}"), 403
    user = g.get("user")
    return render_template("licence.html", problem=problem, activation_page=ACTIVATION_PAGE,
                           admin=user is not None and user.role == "admin"), 403
