"""What every view needs from the app: the mirror, the users' tables, the PBX clock, and the
request's filter with the user's visibility applied in the query."""
from __future__ import annotations

from flask import current_app, g

from mirror.contacts import with_contacts
from mirror.queries import CallFilter, QueryError
from mirror.userdata import user_settings

PAGE_PARAMETERS = ("period", "from", "to", "number", "employee", "group", "status", "min_talk",
                   "max_talk", "recording", "queue", "tag", "tag_mode", "comment", "hangup",
                   "pbx", "tab")


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
        g.clock = current_app.config["EXTCDR_CONTEXT"].clock()
    return g.clock


def request_filter(params: dict[str, str]) -> CallFilter:
    """The filter of the page or API parameters, limited to the calls this user may see."""
    return current_app.config["EXTCDR_CONTEXT"].call_filter(params, clock=clock(),
                                                            visible_to=g.user.visible_to)


def named(rows, flt: CallFilter | None = None) -> list[dict]:
    """Call rows with the names of their outside numbers (`contact`: the PBX's phone book,
    then the module's contacts), as the filter's reader saw the phone book."""
    phonebook = flt.phonebook if flt is not None and flt.phonebook is not None else \
        current_app.config["EXTCDR_CONTEXT"].phonebook_names()
    return list(with_contacts(rows, mirror(), phonebook))


def page_params(args) -> dict[str, str]:
    """The filter in a query string; repeated values (multi-selects) join with commas."""
    unknown = [name for name in args if name not in PAGE_PARAMETERS + ("cursor", "since", "now", "call")]
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0]!r}; use: {', '.join(PAGE_PARAMETERS)}")
    return typed_params(args)


def typed_params(args) -> dict[str, str]:
    """The page's parameters as the user typed them, not checked (to show them again)."""
    params = {}
    for name in PAGE_PARAMETERS:
        value = ",".join(v.strip() for v in args.getlist(name) if v.strip())
        if value:
            params[name] = value
    if params.get("period") == "custom":
        del params["period"]
    return params
