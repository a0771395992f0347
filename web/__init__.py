"""The module's pages and JSON API (Flask): thin views over `db.queries`, behind the PBX admin
shell's nginx, which authenticates every request and passes the user in headers."""
from __future__ import annotations

from flask import Flask, jsonify

from daemon.pbxtime import PbxClock
from daemon.settings import Settings
from db.database import open_module_db
from db.queries import QueryError, sync_state
from web import auth
from web.api import api
from web.recordings import recordings


def create_app(settings: Settings, *, standin_accounts: dict | None = None) -> Flask:
    """The WSGI app for one mirror; serve it with waitress (`extcdr web`). With
    `standin_accounts` the admin-shell stand-in (login, session, `auth`) runs in-process."""
    app = Flask(__name__)
    db = open_module_db(settings["module.db"], readonly=True)
    state = sync_state(db)
    app.config.update(
        EXTCDR_DB=db,
        EXTCDR_CLOCK=PbxClock(settings["pbx.timezone"] or state.get("timezone") or "UTC"),
        EXTCDR_MATCH_DIGITS=int(state.get("number_match_digits", 9)),
        EXTCDR_PROXY_TOKEN=settings["web.proxy_token"],
        EXTCDR_STANDIN=standin_accounts is not None,
        EXTCDR_RECORDINGS_ROOT=settings["pbx.recordings_root"],
        EXTCDR_RECORDINGS_WRITTEN_AS=settings["pbx.recordings_written_as"],
    )
    prefix = "/" + settings["web.prefix"].strip("/")
    if standin_accounts is not None:
        from web import standin
        standin.install(app, standin_accounts, f"{prefix}/api/v1/calls")
    app.before_request(auth.require_user)
    app.register_blueprint(api, url_prefix=f"{prefix}/api/v1")
    app.register_blueprint(recordings, url_prefix=prefix)

    @app.errorhandler(QueryError)
    def bad_filter(error):
        return jsonify(error=str(error)), 400

    @app.errorhandler(404)
    def not_found(_):
        return jsonify(error="not found"), 404

    @app.errorhandler(405)
    def not_allowed(_):
        return jsonify(error="method not allowed"), 405

    @app.errorhandler(500)
    def failed(_):
        return jsonify(error="internal error; see the module log"), 500

    return app
