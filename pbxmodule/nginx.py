"""The module's nginx location on the PBX: what the admin shell's nginx adds for the module's
pages, rendered from the template the module ships in `web/nginx/`."""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

LOCATION_TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "nginx"
ACCEL_LOCATION = "/extcdr-recordings/"     # internal: nginx sends recordings the app allowed
AUTH_LOCATION = "/extcdr-auth"             # the admin shell's session check nginx asks
LOGIN_URL = "/login"


def location_config(settings, *, templates: Path = LOCATION_TEMPLATES,
                    auth_location: str = AUTH_LOCATION) -> str:
    """The module's nginx location for its settings, from the template in `templates`."""
    prefix = "/" + settings["web.prefix"].strip("/") + "/"
    return location(prefix=prefix, proxy_token=settings["web.proxy_token"],
                    app=settings["web.listen"], recordings_root=settings["pbx.recordings_root"],
                    templates=templates, auth_location=auth_location)


def location(*, prefix: str, proxy_token: str, app: str, recordings_root,
             templates: Path = LOCATION_TEMPLATES, auth_location: str = AUTH_LOCATION) -> str:
    """The location for a module app at `app` (HOST:PORT) under the URL `prefix`."""
    return templates_in(templates).get_template("location.conf.j2").render(
        prefix=prefix, auth_location=auth_location, proxy_token=proxy_token, app=app,
        login_url=LOGIN_URL, accel_location=ACCEL_LOCATION,
        recordings_root=Path(recordings_root).resolve())


def templates_in(folder: Path) -> Environment:
    """Jinja for nginx configuration files in `folder` (every name must be given)."""
    return Environment(loader=FileSystemLoader(folder), undefined=StrictUndefined,
                       keep_trailing_newline=True)
