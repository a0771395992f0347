"""The admin panel of the stand-in shell, where a PBX administrator manages modules: the
installed modules with their enable switches and uninstall, what the marketplace offers
(install, upgrade), and "Module marketplace → Licence management" to activate a key or
coupon. Every action is a `pbxmodule.lifecycle` step; the supervisor then starts or stops the
module's workers and nginx location."""
from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

from flask import (Blueprint, Flask, abort, current_app, flash, g, redirect, render_template,
                   request, url_for)

import web
from pbxmodule import lifecycle
from pbxmodule.licence import LicenceError, masked
from pbxmodule.marketplace import MarketplaceError, version_key
from standin import shell
from standin.shell import Account, check_csrf, csrf_token, session_user
from web import present

shell_admin = Blueprint("shell_admin", __name__, template_folder="templates")
WEB = Path(web.__file__).parent           # the shell shows its pages in the module's look
FAILURES = (lifecycle.LifecycleError, LicenceError, MarketplaceError)


@shell_admin.before_request
def admins_only():
    g.user = session_user()
    if g.user is None:
        return redirect(url_for("standin.login_form"))
    if request.endpoint not in ("shell_admin.home", "shell_admin.module_page") \
            and g.user.role != "admin":
        abort(403)
    return None


def _tree() -> lifecycle.PbxTree:
    return current_app.config["EXTCDR_PBX"]


@shell_admin.get("/admin-cabinet/")
def home():
    """Administrators land on the modules; others on the first module page they may use."""
    if g.user.role == "admin":
        return redirect(url_for("shell_admin.modules"))
    entries = sidebar_entries()
    if entries:
        return redirect(entries[0]["href"])
    return render_template("message.html", title="Nothing to show",
                           message="No module is enabled yet. Ask your PBX administrator.")


@shell_admin.get("/admin-cabinet/pbx-extension-modules/index/")
def modules(error: str | None = None, status: int = 200):
    tree = _tree()
    installed = tree.installed()
    for row in installed:
        row["licence"] = _licence_state(tree, row["uniqid"])
    try:
        offers = tree.market(timeout=5).modules()
        versions = {row["uniqid"]: row["version"] for row in installed}
        for offer in offers:
            have = versions.get(offer["uniqid"])
            offer["action"] = ("install" if have is None else
                               "upgrade" if version_key(offer["version"]) > version_key(have)
                               else None)
        market_error = None
    except (lifecycle.LifecycleError, MarketplaceError) as exc:
        offers, market_error = [], str(exc)
    return render_template("standin/modules.html", title="Module marketplace",
                           installed=installed, offers=offers, market_error=market_error,
                           error=error, shell_csrf=csrf_token(),
                           sidebar=sidebar_entries()), status


@shell_admin.post("/admin-cabinet/pbx-extension-modules/<action>")
def change(action: str):
    check_csrf()
    tree, module_id = _tree(), request.form.get("module", "")
    supervisor = current_app.config["EXTCDR_SUPERVISOR"]
    try:
        if action in ("install", "upgrade"):
            with tempfile.TemporaryDirectory() as scratch:
                archive = lifecycle.fetch(tree, module_id, Path(scratch))
                step = lifecycle.install if action == "install" else lifecycle.upgrade
                done = step(tree, archive)
        elif action == "enable":
            done = lifecycle.enable(tree, module_id)
        elif action == "disable":
            done = lifecycle.disable(tree, module_id)
        elif action == "uninstall":
            done = lifecycle.uninstall(tree, module_id,
                                       keep_settings=request.form.get("keep_settings") == "on")
        else:
            abort(404)
    except FAILURES as exc:
        return modules(error=str(exc), status=400)
    supervisor.reconcile()
    if action in ("enable", "upgrade"):
        lifecycle.wait_for_pages(tree, module_id, meanwhile=supervisor.reconcile)
    flash(done)
    return redirect(url_for("shell_admin.modules"), 303)


@shell_admin.get("/admin-cabinet/licensing/modify/")
def licence(error: str | None = None, status: int = 200, typed: str = ""):
    tree = _tree()
    module_id = lifecycle.MODULE_ID
    return render_template("standin/licence.html", title="Licence management",
                           host_id=tree.host_id(), module_id=module_id,
                           state=_licence_state(tree, module_id), error=error, typed=typed,
                           shell_csrf=csrf_token(), sidebar=sidebar_entries()), status


@shell_admin.post("/admin-cabinet/licensing/activate")
def activate():
    check_csrf()
    typed = request.form.get("key", "")
    try:
        grant = lifecycle.activate(_tree(), lifecycle.MODULE_ID, typed)
    except FAILURES as exc:
        return licence(error=str(exc), status=400, typed=typed)
    flash(f"{masked(grant.key)} activated for this PBX until {_day(grant.expires)}")
    return redirect(url_for("shell_admin.licence"), 303)


def sidebar_entries() -> list[dict]:
    """The sidebar items enabled modules registered; each leads, as in MikoPBX, to the
    module controller's index (`/admin-cabinet/<uncamelized id>/index`)."""
    tree, entries = _tree(), []
    language = (g.user.language if g.get("user") else "")[:2] or "en"
    for row in tree.installed():
        folder = tree.module_dir(row["uniqid"])
        if row["disabled"] == "0" and (folder / "registration.json").is_file():
            item = json.loads((folder / "registration.json").read_text())["sidebar"]
            caption = item["caption"].get(language) or item["caption"].get("en") or row["name"]
            entries.append({"caption": caption, "icon": item["icon"],
                            "href": f"/admin-cabinet/{uncamelized(row['uniqid'])}/index"})
    return entries


def uncamelized(module_id: str) -> str:
    """Phalcon's controller path of a module: ModuleExtendedCDR -> module-extended-c-d-r."""
    return re.sub(r"(?<!^)([A-Z])", r"-\1", module_id).lower()


@shell_admin.get("/admin-cabinet/<path>/index")
def module_page(path: str):
    """A module's sidebar page: its controller's indexAction, run by the PBX's Core."""
    tree = _tree()
    for row in tree.installed():
        if uncamelized(row["uniqid"]) == path and row["disabled"] == "0":
            try:
                answer = tree.core("index", row["uniqid"])
            except lifecycle.LifecycleError as exc:
                return render_template("message.html", title="The module's page failed",
                                       message=str(exc)), 500
            if answer.get("redirect"):
                return redirect(answer["redirect"])
    abort(404)


def _licence_state(tree: lifecycle.PbxTree, module_id: str) -> dict:
    try:
        grant = lifecycle.licence_check(tree, module_id).grant()
    except FAILURES as exc:
        return {"valid": False, "text": str(exc)}
    return {"valid": True, "text": f"{masked(grant.key)}, valid until {_day(grant.expires)}"}


def _day(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s))


def create_shell_app(accounts: dict[str, Account], home: str, *, pbx=None, supervisor=None):
    """The stand-in shell alone (behind nginx, beside the module's app). With `pbx` (a
    `pbxmodule.lifecycle.PbxTree`) it is the PBX's admin panel too: modules, marketplace,
    licences, with its own copy of the static files."""
    if pbx is None:
        app = Flask(__name__, static_folder=None, template_folder=str(WEB / "templates"))
        app.config["EXTCDR_STATIC"] = home.rstrip("/") + "/static/"
    else:
        app = Flask(__name__, static_folder=str(WEB / "static"),
                    static_url_path="/admin-cabinet/assets",
                    template_folder=str(WEB / "templates"))
        app.config.update(EXTCDR_STATIC="/admin-cabinet/assets/", EXTCDR_PBX=pbx,
                          EXTCDR_SUPERVISOR=supervisor)
        app.register_blueprint(shell_admin)

        @app.errorhandler(404)
        def no_such_page(_):
            return render_template("message.html", title="Not found", message=(
                "This page is not available: its module is disabled or not installed.")), 404

        @app.errorhandler(403)
        def admins_only(_):
            return render_template("message.html", title="Request refused", message=(
                "Only PBX administrators manage modules and licences.")), 403
    shell.install(app, accounts, home)
    present.install(app)
    return app
