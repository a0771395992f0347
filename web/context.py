"""What every view needs from the app: the mirror, the users' tables, the PBX clock, and the
request's filter with the user's visibility applied in the query."""
from __future__ import annotations

import time

from flask import current_app, g

from db.queries import CallFilter, call_filter, state_value
from db.userdata import user_settings


def mirror():
    """module.db, read-only: the calls."""
    return current_app.config["EXTCDR_DB"]


def user_db():
    """module.db, writable: saved filters and user settings only."""
    return current_app.config["EXTCDR_USER_DB"]


def user_prefs() -> dict[str, str]:
    """The user's settings (columns, language), read once per request."""
    if "user_prefs" not in g:
        g.user_prefs = user_settings(user_db(), g.user.name)
    return g.user_prefs


def clock():
    """The PBX's clock, one for the whole request (the PBX's timezone may change meanwhile)."""
    if "clock" not in g:
        g.clock = current_app.config["EXTCDR_ZONE"].clock()
    return g.clock


def match_digits() -> int:
    """The trailing digits that identify a number, as the mirror was built (its sync state),
    read at each request: a worker started before the first sync, or before the setting
    changed, follows it. Until the first sync: the `calls.number_match_digits` setting."""
    found = state_value(mirror(), "number_match_digits")
    return int(found) if found else current_app.config["EXTCDR_MATCH_DIGITS"]


def request_filter(params: dict[str, str]) -> CallFilter:
    """The filter of the page or API parameters, limited to the calls this user may see."""
    return call_filter(params, clock(), time.time(), number_match_digits=match_digits(),
                       visible_to=g.user.visible_to)
