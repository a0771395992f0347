"""The module's nginx locations on the PBX: what the PBX's nginx adds for the module's pages
(MikoPBX: `createNginxLocations()`), rendered from the template the module ships in
`web/nginx/`. MikoPBX's nginx has lua and nchan, not auth_request: a lua block asks the module's
access check in the admin cabinet who the user is."""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from mirror.tokens import PREFIX as TOKEN_PREFIX

LOCATION_TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "nginx"
ACCEL_LOCATION = "/extcdr-recordings/"     # internal: nginx sends recordings the app allowed
# The access check: the module controller's `check` action, behind Core's own login
# (Phalcon's URL of ModuleExtendedCDR is its uncamelized id).
CHECK_URL = "/admin-cabinet/module-extended-c-d-r/check"
LOGIN_URL = "/admin-cabinet/session/index"  # where the admin cabinet logs people in
CHECK_CACHE_S = 10        # how long the check's answer serves an open page's asks
CHECK_CACHE_SIZE = 10_000  # answers each nginx worker keeps at most


def location_config(settings, *, templates: Path = LOCATION_TEMPLATES,
                    login_url: str = LOGIN_URL) -> str:
    """The module's nginx locations for its settings, from the template in `templates`."""
    prefix = "/" + settings["web.prefix"].strip("/") + "/"
    return location(prefix=prefix, proxy_token=settings["web.proxy_token"],
                    app=settings["web.listen"], recordings_root=settings["pbx.recordings_root"],
                    templates=templates, login_url=login_url)


def location(*, prefix: str, proxy_token: str, app: str, recordings_root,
             templates: Path = LOCATION_TEMPLATES, login_url: str = LOGIN_URL) -> str:
    """The locations for a module app at `app` (HOST:PORT) under the URL `prefix`."""
    return templates_in(templates).get_template("location.conf.j2").render(
        prefix=prefix, check_url=CHECK_URL, proxy_token=proxy_token, app=app,
        login_url=login_url, accel_location=ACCEL_LOCATION, check_cache_s=CHECK_CACHE_S,
        check_cache_size=CHECK_CACHE_SIZE, token_prefix=TOKEN_PREFIX,
        recordings_root=Path(recordings_root).resolve())


def templates_in(folder: Path) -> Environment:
    """Jinja for nginx configuration files in `folder` (every name must be given)."""
    return Environment(loader=FileSystemLoader(folder), undefined=StrictUndefined,
                       keep_trailing_newline=True)
