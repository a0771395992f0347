"""How the pages show things: the PBX's local time, durations, links that change one filter
value, and the per-page context (language, `_`, status labels, CSRF token)."""
from __future__ import annotations

import time
import unicodedata
from urllib.parse import quote, urlencode

from flask import current_app, g, request, url_for

from i18n import LANGUAGES, LIVE_LABELS, STATUS_LABELS, negotiate, say_error, translator
from i18n.hangup_words import hangup_words
from web import auth
from web.context import clock, user_prefs


def install(app) -> None:
    app.jinja_env.filters.update(local_time=local_time, duration=duration)
    app.jinja_env.globals.update(page_url=page_url, filter_query=filter_query,
                                 server_now_ms=lambda: int(time.time() * 1000),
                                 hangup_text=hangup_text, call_link=call_link,
                                 say_error=say_error)
    app.context_processor(page_context)


def user_language() -> str:
    """The user's language: their choice, else the admin shell's, else the browser's."""
    user = g.get("user")
    choice = user_prefs().get("language") \
        if user and current_app.config.get("EXTCDR_USER_DB") is not None else None
    return negotiate(choice, user.language if user else None,
                     request.headers.get("Accept-Language"))


def page_context() -> dict:
    user = g.get("user")
    language = user_language()
    return {"lang": language, "_": translator(language), "languages": LANGUAGES,
            "status_labels": STATUS_LABELS[language], "live_labels": LIVE_LABELS[language],
            "user": user,
            "csrf": auth.csrf_token() if user else "",
            "static": lambda path: current_app.config["EXTCDR_STATIC"] + path}


def hangup_text(hangup: dict | None) -> str:
    """Who hung up a call and why, in the user's language ('unknown' when not seen)."""
    hangup = hangup or {}
    return hangup_words(hangup.get("side"), hangup.get("cause"), hangup.get("cause_txt", ""),
                        user_language())


def call_link(linkedid: str) -> str:
    """The page opened on one call's details (the search finds it, whatever its day)."""
    return url_for("history.page") + "?" + urlencode({"number": linkedid, "call": linkedid})


def local_time(epoch_ms: int | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if epoch_ms is None:
        return ""
    return clock().to_local(epoch_ms / 1000).strftime(fmt)


def duration(seconds: int | None) -> str:
    """0:07, 12:30, 1:02:03."""
    if seconds is None:
        return ""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def page_url(params: dict[str, str], **changes) -> str:
    """The history page with `params`, some changed (None removes one)."""
    return url_for("history.page") + "?" + filter_query({**params, **changes})


def filter_query(params: dict[str, str]) -> str:
    """The query string of a filter (today when empty: an empty query restores the default)."""
    query = {k: v for k, v in params.items() if v not in (None, "")}
    return urlencode(query or {"period": "today"})


def attachment(name: str) -> str:
    """Content-Disposition of a download named `name`; a name with other than ASCII letters
    (a Cyrillic group or search) also goes as RFC 6266 `filename*`, which browsers prefer."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    header = f'attachment; filename="{plain}"'
    return header if plain == name else header + f"; filename*=UTF-8''{quote(name)}"
