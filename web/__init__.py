"""The module's pages and JSON API (Flask): thin views over `mirror.queries`, behind the PBX admin
shell's nginx, which authenticates every request and passes the user in headers."""
from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
from pathlib import Path

import peewee
from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.routing import IntegerConverter

from i18n import say_error
from mirror.database import ModuleDbError, open_module_db, readable_error
from mirror.queries import SQLITE_MAX, QueryError, sync_state
from mirror.settings import Settings, reports_dir
from pbx.mirror_context import MirrorContext
from pbxmodule.licence import LicenceCheck
from web import auth, licensing, present
from web.admin import admin
from web.analytics_views import analytics
from web.api import api
from web.call_actions import call_actions
from web.changes import ChangePublisher
from web.coalesce import Coalesced
from web.contact_pages import contacts_pages
from web.download import download
from web.history import history
from web.jobs import ExportJobs
from web.openapi import openapi
from web.recordings import recordings
from web.report_views import reports
from web.tokens_admin import tokens_admin
from web.webhook_views import webhook_settings
from web.worklist_api import worklist_api

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("extcdr.web")


def create_app(settings: Settings, *, login: auth.Login | None = None) -> Flask:
    """The WSGI app for one mirror; serve it with waitress (`extcdr web`). Users come from
    the PBX's nginx, or from `login` run in-process (development)."""
    prefix = "/" + settings["web.prefix"].strip("/")
    app = Flask(__name__, static_folder=str(STATIC), static_url_path=f"{prefix}/static")
    app.url_map.converters["int"] = RowId
    try:
        user_db, db = _open_mirror(settings["module.db"])
        unavailable = None
    except ModuleDbError as exc:
        # Served all the same, every page saying why (503): a web worker that exits would
        # only be restarted by the PBX in a loop. Its workers are restarted once it is fixed.
        log.error("%s", exc)
        user_db, db, unavailable = None, None, str(exc)
    token = settings["web.proxy_token"]
    # The PBX's timezone as it is at each request, not as the mirror had it at start.
    context = MirrorContext(settings, db)
    context.clock()                                       # logs which timezone times are in
    app.config.update(
        EXTCDR_DB=db, EXTCDR_USER_DB=user_db, EXTCDR_DB_UNAVAILABLE=unavailable,
        EXTCDR_CONTEXT=context,
        EXTCDR_PROXY_TOKEN=token,
        EXTCDR_API_ROOT=f"{prefix}/api/v1/",          # where API tokens are accepted
        EXTCDR_RECORDINGS_ROOT=settings["pbx.recordings_root"],
        EXTCDR_RECORDINGS_WRITTEN_AS=settings["pbx.recordings_written_as"],
        EXTCDR_STATIC=f"{prefix}/static/",
        SECRET_KEY=(hashlib.sha256(f"extcdr:{token}".encode()).digest() if token
                    else secrets.token_bytes(32)),
        SEND_FILE_MAX_AGE_DEFAULT=86_400,
        EXTCDR_EXPORT_JOBS=ExportJobs(),
        EXTCDR_REPORTS_DIR=reports_dir(settings),
        EXTCDR_LICENCE=LicenceCheck.of(settings),
        EXTCDR_CONFIG_DB=settings["pbx.config_db"],
        EXTCDR_WEBHOOK_HOSTS=settings["webhooks.allowed_hosts"],
        EXTCDR_CALLBACK_WINDOW_S=settings["calls.callback_window"],   # the worklist's period
        EXTCDR_SHARED=Coalesced(),       # answers many pages ask at once (web.history), by revision
    )
    app.extensions["extcdr_changes"] = ChangePublisher(db, settings)
    if login is not None:
        app.extensions["extcdr_login"] = login
        login.install(app, f"{prefix}/")
    app.before_request(auth.require_user)
    app.before_request(licensing.gate)
    app.before_request(_database_gate)
    app.before_request(auth.remember_owner)
    app.register_blueprint(api, url_prefix=f"{prefix}/api/v1")
    app.register_blueprint(call_actions, url_prefix=f"{prefix}/api/v1")
    app.register_blueprint(worklist_api, url_prefix=f"{prefix}/api/v1")
    app.register_blueprint(openapi, url_prefix=f"{prefix}/api/v1")
    app.register_blueprint(recordings, url_prefix=prefix)
    app.register_blueprint(history, url_prefix=prefix)
    app.register_blueprint(download, url_prefix=prefix)
    app.register_blueprint(reports, url_prefix=prefix)
    app.register_blueprint(admin, url_prefix=prefix)
    app.register_blueprint(tokens_admin, url_prefix=prefix)
    app.register_blueprint(webhook_settings, url_prefix=prefix)
    app.register_blueprint(analytics, url_prefix=prefix)
    app.register_blueprint(contacts_pages, url_prefix=prefix)
    present.install(app)

    @app.errorhandler(QueryError)
    def bad_filter(error):
        return _error(400, "Bad filter", str(error))

    @app.errorhandler(404)
    def not_found(_):
        return _error(404, "Not found", "not found")

    @app.errorhandler(405)
    def not_allowed(_):
        return _error(405, "Request refused", "method not allowed")

    @app.errorhandler(sqlite3.DatabaseError)
    @app.errorhandler(peewee.DatabaseError)
    def database_failed(error):
        log.error("%s", readable_error(settings["module.db"], error))
        return _error(503, "Call history unavailable",
                      readable_error("the call history database", error))

    @app.errorhandler(500)
    def failed(_):
        return _error(500, "Error", "internal error; see the module log")

    return app


def _open_mirror(path):
    """module.db for the users' tables (migrated here) and for reading calls, once it was
    found readable; ModuleDbError when it cannot be used."""
    user_db = open_module_db(path)
    try:
        db = open_module_db(path, readonly=True)
    except ModuleDbError:
        user_db.close()
        raise
    try:
        sync_state(db)
        return user_db, db
    except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:
        user_db.close()
        db.close()
        raise ModuleDbError(readable_error(path, exc)) from exc


def _database_gate():
    """before_request: a module.db that could not be opened is a 503 saying why."""
    unavailable = current_app.config["EXTCDR_DB_UNAVAILABLE"]
    if unavailable is None or auth.on_login_page() or request.endpoint == "static":
        return None
    return _error(503, "Call history unavailable", unavailable)


class RowId(IntegerConverter):
    """`<int:…>` in a URL: a row id, so at most SQLite's 64-bit range (a bigger one is no row,
    404, rather than an OverflowError in the query)."""

    def __init__(self, map, *args, **kwargs):
        super().__init__(map, *args, **{"max": SQLITE_MAX, **kwargs})


def _error(status: int, title: str, message: str):
    """JSON for the API and for the page's scripts, a readable page for people."""
    wants_page = (request.blueprint in ("history", "download", "reports", "admin", "analytics",
                                        "contacts", "tokens_admin", "webhooks")
                  and request.method == "GET"
                  and request.endpoint not in ("history.more_rows", "history.updates",
                                               "history.details", "analytics.stats"))
    if wants_page or (request.blueprint in ("history", "reports", "admin", "contacts",
                                            "tokens_admin", "webhooks")
                      and request.method == "POST"):
        return render_template("message.html", title=title,
                               message=say_error(message, present.user_language())), status
    return jsonify(error=message), status
