"""A small stand-in for the PBX admin shell, for development, tests and the demo: a login
form (CSRF-protected), users with roles from a JSON file, a session cookie, and the `auth`
endpoint nginx asks with `auth_request` (200 plus the user headers, or 401)."""
from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from flask import (Blueprint, current_app, make_response, redirect, render_template, request,
                   session, url_for)

from mirror.queries import SCOPES
from mirror.settings import PBX_ID
from pbxmodule.nginx import CHECK_URL, location, templates_in
from web.auth import (EXTENSIONS_HEADER, LANGUAGE_HEADER, PBXS_HEADER, ROLE_HEADER, ROLES,
                      SCOPE_HEADER, USER_HEADER, User, refuse_forged_request)

standin = Blueprint("standin", __name__, template_folder="templates")
NGINX_TEMPLATES = Path(__file__).parent / "nginx"
# The nginx modules MikoPBX's nginx is built with that the module's locations need (the access
# check in lua, live updates in nchan), in load order, with Debian's packages.
NGINX_MODULES = {
    Path("/usr/lib/nginx/modules/ndk_http_module.so"): "libnginx-mod-http-ndk",
    Path("/usr/lib/nginx/modules/ngx_http_lua_module.so"): "libnginx-mod-http-lua",
    Path("/usr/lib/nginx/modules/ngx_nchan_module.so"): "libnginx-mod-nchan",
}


def missing_nginx_modules() -> str | None:
    """What to install for the nginx modules that are missing, or None."""
    missing = [package for path, package in NGINX_MODULES.items() if not path.exists()]
    return f"apt-get install {' '.join(missing)}" if missing else None

DEMO_USERS = (
    {"name": "admin", "password": "admin", "role": "admin", "extensions": []},
    {"name": "supervisor", "password": "supervisor", "role": "supervisor", "extensions": []},
    {"name": "operator201", "password": "operator201", "role": "operator",
     "extensions": ["201"], "language": "ru"},
)



def write_central_users(path: Path, pbx: str) -> None:
    """The central demo's users file: the demo users, and `pbx`/`pbx`, a supervisor who sees
    only PBX `pbx`'s calls."""
    limited = {"name": pbx, "password": pbx, "role": "supervisor", "extensions": [],
               "pbxs": [pbx]}
    path.write_text(json.dumps([*DEMO_USERS, limited], indent=1) + "\n")


class UsersFileError(ValueError):
    """A users file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Account:
    user: User
    password: str


def load_users(path: Path | None) -> dict[str, Account]:
    """Accounts from a JSON list of {name, password, role, extensions[, language, scope,
    pbxs]} (pbxs: the PBXs of a central history whose calls they see; none: every PBX's);
    demo users without."""
    entries = DEMO_USERS
    if path is not None:
        try:
            entries = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise UsersFileError(f"{path}: {exc}") from None
    accounts = {}
    for entry in entries:
        try:
            name, password, role = entry["name"], entry["password"], entry["role"]
            extensions = tuple(str(e) for e in entry.get("extensions", []))
            language = str(entry.get("language", ""))
            scope = str(entry.get("scope", "involved"))
            pbxs = tuple(str(p) for p in entry.get("pbxs", []))
        except (KeyError, TypeError):
            raise UsersFileError(f"{path}: each user needs name, password and role") from None
        if role not in ROLES:
            raise UsersFileError(f"{path}: user {name!r} has role {role!r}; use one of "
                                 f"{', '.join(ROLES)}")
        if scope not in SCOPES:
            raise UsersFileError(f"{path}: user {name!r} has scope {scope!r}; use one of "
                                 f"{', '.join(SCOPES)}")
        unknown = [p for p in pbxs if not PBX_ID.fullmatch(p)]
        if unknown:
            raise UsersFileError(f"{path}: user {name!r} has pbx {unknown[0]!r}; a PBX id is "
                                 f"1-32 of a-z, 0-9 and '-'")
        accounts[name] = Account(User(name, role, extensions, language, scope, pbxs=pbxs),
                                 password)
    return accounts


SESSION_HOURS = 12      # a login lasts this long at most


def session_user() -> User | None:
    """The user logged in to the stand-in shell: the signed session cookie names a session
    this shell still holds (a cookie kept from before a logout, or from an earlier run of the
    shell, is worth nothing)."""
    sessions = current_app.config["EXTCDR_SESSIONS"]
    name, until = sessions.get(session.get("sid", ""), (None, 0.0))
    if name is None or name != session.get("user") or until < time.time():
        return None
    account = current_app.config["EXTCDR_ACCOUNTS"].get(name)
    return account.user if account else None


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    """State-changing requests must carry the session's CSRF token."""
    given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    if not session.get("csrf") or not hmac.compare_digest(given, session["csrf"]):
        refuse_forged_request()


@dataclass(frozen=True)
class StandinLogin:
    """The stand-in shell's login run inside the module's app (`extcdr web --standin`):
    the app's `web.auth.Login`."""
    accounts: dict[str, Account]
    blueprint: str = "standin"
    login_url: str = "/login"

    @classmethod
    def from_file(cls, path: Path | None) -> "StandinLogin":
        return cls(load_users(path))

    def install(self, app, home: str) -> None:
        install(app, self.accounts, home)

    def user(self) -> User | None:
        return session_user()


def install(app, accounts: dict[str, Account], home: str) -> None:
    """Add the stand-in shell to an app: its pages, accounts and a signed session cookie."""
    app.config.update(EXTCDR_ACCOUNTS=accounts, EXTCDR_HOME=home, EXTCDR_SESSIONS={},
                      SECRET_KEY=secrets.token_bytes(32), SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax")
    app.register_blueprint(standin)


def nginx_config(*, run_dir: Path, listen: str, shell: str, app: str, prefix: str,
                 proxy_token: str, recordings_root: Path, user: str | None = None) -> str:
    """nginx.conf of the stand-in shell with the module's location (tests and the demo)."""
    module_location = location(prefix=prefix, proxy_token=proxy_token, app=app,
                               recordings_root=recordings_root, login_url="/login")
    return templates_in(NGINX_TEMPLATES).get_template("standin-server.conf.j2").render(
        run_dir=run_dir, listen=listen, shell=shell, home=prefix, module_location=module_location,
        modules_locations="", user=user, nginx_modules=list(NGINX_MODULES),
        check_url=CHECK_URL)


def pbx_nginx_config(*, run_dir: Path, listen: str, shell: str, modules_locations: Path,
                     user: str | None = None) -> str:
    """nginx.conf of the stand-in PBX: the shell's pages plus the enabled modules' locations."""
    return templates_in(NGINX_TEMPLATES).get_template("standin-server.conf.j2").render(
        run_dir=run_dir, listen=listen, shell=shell, home="/admin-cabinet/", module_location="",
        modules_locations=f"{modules_locations}/*.conf", user=user,
        nginx_modules=list(NGINX_MODULES), check_url=CHECK_URL)


@standin.get("/login")
def login_form():
    return render_template("login.html", csrf_token=csrf_token(), error=None)


@standin.post("/login")
def login():
    check_csrf()
    account = current_app.config["EXTCDR_ACCOUNTS"].get(request.form.get("username", ""))
    password = request.form.get("password", "")
    if account is None or not hmac.compare_digest(password.encode(), account.password.encode()):
        return render_template("login.html", csrf_token=csrf_token(),
                               error="Wrong user name or password."), 401
    sessions = current_app.config["EXTCDR_SESSIONS"]
    now = time.time()
    for sid, (_, until) in list(sessions.items()):
        if until < now:
            sessions.pop(sid, None)
    session.clear()
    session["sid"] = secrets.token_urlsafe(24)
    session["user"] = account.user.name
    sessions[session["sid"]] = (account.user.name, now + SESSION_HOURS * 3600)
    return redirect(current_app.config["EXTCDR_HOME"])


@standin.get("/logout")
def logout_form():
    return render_template("message.html", title="Log out", message="",
                           logout_csrf=csrf_token())


@standin.post("/logout")
def logout():
    check_csrf()
    current_app.config["EXTCDR_SESSIONS"].pop(session.get("sid", ""), None)
    session.clear()
    return redirect(url_for("standin.login_form"))


@standin.get("/auth")
def auth():
    """The access check nginx's lua block captures: 200 with the user headers, or 401."""
    user = session_user()
    if user is None:
        return "", 401
    reply = make_response("", 200)
    reply.headers[USER_HEADER] = user.name
    reply.headers[ROLE_HEADER] = user.role
    reply.headers[EXTENSIONS_HEADER] = ",".join(user.extensions)
    reply.headers[LANGUAGE_HEADER] = user.language
    reply.headers[SCOPE_HEADER] = user.scope
    reply.headers[PBXS_HEADER] = ",".join(user.pbxs)
    return reply
