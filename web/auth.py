"""Who is asking. nginx (the PBX admin shell) authenticates each request through the module's
access check (a lua block asking the admin cabinet) and sets these headers; a request that does
not carry the shared proxy token did not come through it, and its identity headers are not
believed. Scripts send an API token instead (`Authorization: Bearer`, mirror.tokens), which
opens the API only."""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, replace
from typing import Protocol

from flask import abort, current_app, g, jsonify, make_response, redirect, render_template, request

from mirror import report_rows as report_data
from mirror.queries import GROUPS_SCOPE, SCOPES, Visibility
from mirror.tokens import PREFIX as TOKEN_PREFIX
from mirror.tokens import TokenHolder, TokenRefused, token_holder
from mirror.userdata import group_limit, group_members

ROLES = ("admin", "supervisor", "operator")
USER_HEADER = "X-Extcdr-User"
ROLE_HEADER = "X-Extcdr-Role"
EXTENSIONS_HEADER = "X-Extcdr-Extensions"
LANGUAGE_HEADER = "X-Extcdr-Language"
SCOPE_HEADER = "X-Extcdr-Scope"
PBXS_HEADER = "X-Extcdr-Pbxs"       # the PBXs whose calls the user sees (none: every PBX's)
TOKEN_HEADER = "X-Extcdr-Proxy-Token"
# Reachable without a user: static files, and a mailed report's signed download link.
PUBLIC_ENDPOINTS = ("static", "reports.mailed_file")
# What an API token may change — a CRM's work on the calls it sees: mark one handled (or not)
# and add a comment. Otherwise it reads: deleting calls or recordings, shared tags and every
# setting need a person signed in (a leaked token cannot wipe the history).
TOKEN_CHANGES = ("worklist.handled", "worklist.not_handled", "call_actions.add_comment")
READING = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    extensions: tuple[str, ...]
    language: str = ""          # the admin shell's language for this user, if it tells
    scope: str = "involved"     # how the extensions limit an operator (mirror.queries.SCOPES)
    token: str | None = None    # an API token's name, when a script sent one (no session)
    pbxs: tuple[str, ...] = ()  # the PBXs of a central history whose calls they see (): all

    @property
    def visible_to(self) -> Visibility | None:
        """The calls an operator, or a user limited to some PBXs, is limited to; None: every
        call (admin, supervisor)."""
        return Visibility.of(self.role, self.extensions, self.scope, self.pbxs)

    @property
    def owner(self) -> report_data.Owner:
        """This user as the owner of reports."""
        return report_data.Owner(self.name, self.role, self.extensions, self.scope, self.pbxs)


class Login(Protocol):
    """An in-process login for the app (development: the admin-shell stand-in) instead of the
    PBX's nginx: its own pages in the blueprint `blueprint`, and who is logged in."""
    blueprint: str
    login_url: str

    def install(self, app, home: str) -> None:
        """Add the login's pages to `app`; `home` is where a login leads."""

    def user(self) -> User | None:
        """The user logged in with this request, if any."""


def in_process_login() -> Login | None:
    return current_app.extensions.get("extcdr_login")


def on_login_page() -> bool:
    """Whether the request is for the in-process login's own pages."""
    login = in_process_login()
    return login is not None and request.blueprint == login.blueprint


def require_user():
    """before_request: set `g.user`, or answer 401. Behind nginx the user comes from the
    proxy's headers; with an in-process login, only from that login (identity headers are
    then never believed)."""
    if on_login_page() or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip().startswith(TOKEN_PREFIX):
        return _token_user(credentials.strip())
    login = in_process_login()
    if login is not None:
        g.user = login.user()
        if g.user is None:
            if request.endpoint == "history.page":
                return redirect(login.login_url)
            return jsonify(error="not authenticated: log in first"), 401
        g.user = within_groups(g.user)
        return None
    expected = current_app.config["EXTCDR_PROXY_TOKEN"]
    given = request.headers.get(TOKEN_HEADER, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return jsonify(error="not authenticated: open this page through the PBX admin "
                             "interface"), 401
    role = request.headers.get(ROLE_HEADER, "")
    name = request.headers.get(USER_HEADER, "")
    if role not in ROLES or not name:
        return jsonify(error="not authenticated: no user or role from the admin shell"), 401
    extensions = tuple(e.strip() for e in request.headers.get(EXTENSIONS_HEADER, "").split(",")
                       if e.strip())
    scope = request.headers.get(SCOPE_HEADER, "") or "involved"
    if scope not in SCOPES:
        return jsonify(error=f"not authenticated: unknown scope {scope!r} from the admin "
                             f"shell"), 401
    pbxs = tuple(p.strip() for p in request.headers.get(PBXS_HEADER, "").split(",")
                 if p.strip())
    g.user = within_groups(User(name, role, extensions, request.headers.get(LANGUAGE_HEADER, ""),
                                scope, pbxs=pbxs))
    return None


def _token_user(token: str):
    """Set `g.user` to whom an API token (`Authorization: Bearer`) speaks for, or answer 401.
    A token opens the API only, never the pages; the session and the admin shell's headers
    of such a request are not looked at."""
    if not request.path.startswith(current_app.config["EXTCDR_API_ROOT"]):
        return _no_token("an API token opens the API (api/v1) only, not the pages")
    db = current_app.config["EXTCDR_USER_DB"]
    if db is None:
        return jsonify(error=current_app.config["EXTCDR_DB_UNAVAILABLE"]), 503
    try:
        holder = token_holder(db, token, int(time.time() * 1000))
    except TokenRefused as refused:
        return _no_token(str(refused))
    g.user = token_user(holder, db)
    if request.method not in READING and request.endpoint not in TOKEN_CHANGES:
        return jsonify(error="forbidden: an API token reads the history and may only mark calls "
                             "handled and comment on them; this change needs a person signed "
                             "in"), 403
    return None


def token_user(holder: TokenHolder, db) -> User:
    """Whom a token speaks for. A supervisor's token is limited as a supervisor an admin
    limited to groups (`within_groups`): to the calls its extensions and its groups' members
    now took part in — never every call. A token limited to some PBXs sees only their calls."""
    user = User(f"token:{holder.name}", holder.role, holder.extensions, token=holder.name,
                pbxs=holder.pbxs)
    if holder.role != "supervisor":
        return user
    return replace(user, extensions=tuple(sorted(
        set(holder.extensions) | set(group_members(db, holder.groups)))), scope=GROUPS_SCOPE)


def _no_token(reason: str):
    reply = jsonify(error=f"not authenticated: {reason}")
    reply.headers["WWW-Authenticate"] = 'Bearer realm="extcdr"'
    return reply, 401


def within_groups(user: User) -> User:
    """A supervisor as the module's settings limit them: to their groups' members' calls."""
    db = current_app.config["EXTCDR_USER_DB"]
    if user.role != "supervisor" or db is None:
        return user
    extensions = group_limit(db, user.name)
    return user if extensions is None else replace(user, extensions=extensions,
                                                   scope=GROUPS_SCOPE)


def remember_owner():
    """before_request: reports follow their owner's role and extensions as the admin shell
    gives them now (written when they change, once per process and user otherwise)."""
    user = g.get("user")
    if user is None or user.token is not None:      # a token owns no reports
        return None
    seen = current_app.config.setdefault("EXTCDR_OWNERS_SEEN", {})
    if seen.get(user.name) != user.owner:
        report_data.remember_owner(current_app.config["EXTCDR_USER_DB"], user.owner)
        seen[user.name] = user.owner
    return None


def csrf_token() -> str:
    """The user's token for state-changing requests: an HMAC of the user with the app's
    secret, so a page of another site cannot know it."""
    key = current_app.config["SECRET_KEY"]
    key = key if isinstance(key, bytes) else key.encode()
    return hmac.new(key, f"csrf:{g.user.name}".encode(), hashlib.sha256).hexdigest()


def csrf_valid() -> bool:
    """Whether a state-changing request carries the user's CSRF token (form field or header).
    A request with an API token needs none: no cookie is involved, so another site's page
    cannot make a browser send it (and it opens no page where a form could be)."""
    if g.user.token is not None:
        return True
    given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    return hmac.compare_digest(given.encode(), csrf_token().encode())


def check_csrf() -> None:
    """Refuse a state-changing request without the user's CSRF token (a page's form)."""
    if not csrf_valid():
        refuse_forged_request()


def refuse_forged_request() -> None:
    """Stop a state-changing request whose CSRF token is missing or wrong (403 page)."""
    abort(make_response(render_template(
        "message.html", title="Request refused",
        message="The form expired or did not come from this page. Reload it and try again."),
        403))
