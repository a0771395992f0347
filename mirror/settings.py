"""The module's settings: one table of every key with its type, default and one-line doc.

Read from one TOML file (`extcdr daemon --config FILE`); command-line flags override single
keys. The README's configuration section is generated from `SETTINGS` (and a test keeps it in
step). A wrong key or value stops start-up with one line naming the key and what is allowed.
Secrets never appear in logs: `Settings.describe()` masks them. The months of history kept
(`history.keep_months`) are not a key of this file but the history's own, kept in module.db so
that a central history of several PBXs has one (`mirror.retention`).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mirror.calls import NUMBER_MATCH_DIGITS


@dataclass(frozen=True)
class Setting:
    section: str
    name: str
    kind: Callable[[Any], Any]     # a type, or database_target (a path or a URL)
    default: Any
    doc: str
    secret: bool = False
    minimum: float | None = None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


def is_database_url(target: Any) -> bool:
    """A module.db given as a PostgreSQL URL (a central history of several PBXs)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def database_target(raw: str | Path) -> Path | str:
    """module.db's value: a path, or a `postgresql://` URL kept as text (a Path folds `//`)."""
    return str(raw) if is_database_url(str(raw)) else Path(raw)


def shown_target(target: str | Path) -> str:
    """module.db as messages and logs show it: a URL's password masked."""
    if not is_database_url(target):
        return str(target)
    parts = urlsplit(target)
    if parts.password is None:
        return target
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


PBX_CDR_DB = "/storage/usbdisk1/mikopbx/astlogs/asterisk/cdr.db"

SETTINGS: tuple[Setting, ...] = (
    Setting("pbx", "cdr_db", Path, Path(PBX_CDR_DB), "the PBX's call history DB, read-only"),
    Setting("pbx", "config_db", Path, Path("/cf/conf/mikopbx.db"),
            "the PBX configuration DB (employees, providers, timezone)"),
    Setting("pbx", "groups_db", Path,
            Path("/storage/usbdisk1/mikopbx/custom_modules/ModuleUsersGroups/db/module.db"),
            "ModuleUsersGroups' DB; employee groups are off when it is missing"),
    Setting("pbx", "phonebook_db", Path,
            Path("/storage/usbdisk1/mikopbx/custom_modules/ModulePhoneBook/db/module.db"),
            "ModulePhoneBook's DB, read-only: its names for outside numbers come first"),
    Setting("pbx", "recordings_root", Path, Path("/storage/usbdisk1/mikopbx/astspool/monitor"),
            "only recordings under this folder are ever served"),
    Setting("pbx", "recordings_written_as", str, "/storage/usbdisk1/mikopbx/astspool/monitor",
            "the folder the PBX writes in recording paths (mapped onto recordings_root)"),
    Setting("pbx", "timezone", str, "", "IANA timezone of the PBX; empty: from the config DB"),
    Setting("pbx", "id", str, "",
            "this PBX's name in a central history shared by several PBXs (a postgresql:// "
            "module.db): 1-32 of a-z, 0-9, '-', each PBX its own; empty: the only PBX"),
    Setting("ami", "enabled", bool, True, "follow the PBX live over AMI"),
    Setting("ami", "host", str, "127.0.0.1", "AMI address"),
    Setting("ami", "port", int, 5038, "AMI port", minimum=1),
    Setting("ami", "username", str, "extcdr", "AMI user"),
    Setting("ami", "secret", str, "", "AMI password", secret=True),
    Setting("ami", "cdr_events", bool, False,
            "stock Asterisk without MikoPBX's cdr.db: build legs from AMI `Cdr` events"),
    Setting("module", "db", database_target,
            Path(__file__).resolve().parent.parent / "db" / "module.db",
            "the module's own mirror: a path, or a postgresql://USER:PASSWORD@HOST:PORT/DB URL"),
    Setting("calls", "extension_length", int, 4,
            "without a config DB, numbers this short are internal", minimum=1),
    Setting("calls", "number_match_digits", int, NUMBER_MATCH_DIGITS,
            "trailing digits that identify an external number", minimum=3),
    Setting("calls", "callback_window", int, 86_400,
            "seconds after a missed call in which a call returns it", minimum=0),
    Setting("sync", "batch_rows", int, 40_000, "PBX rows per transaction", minimum=1),
    Setting("sync", "poll_interval", float, 30.0,
            "seconds between safety-net polls of the PBX DB", minimum=0.1),
    Setting("sync", "debounce", float, 0.05,
            "seconds to gather file-change and AMI triggers into one read", minimum=0),
    Setting("web", "listen", str, "127.0.0.1:8765", "where the pages and API listen (HOST:PORT)"),
    Setting("web", "prefix", str, "/admin-cabinet/module-extended-c-d-r/calls/",
            "URL prefix inside the PBX admin shell"),
    Setting("web", "proxy_token", str, "",
            "shared with the nginx location: requests without it did not come through the "
            "admin shell and are refused", secret=True),
    Setting("web", "publish_url", str, "",
            "nginx's nchan publisher location, where the web process says that calls changed "
            "(open pages then ask for what changed); empty: http://127.0.0.1:<the PBX's "
            "WEBPort><prefix>changes/publish; `off`: pages are not updated live"),
    Setting("mail", "host", str, "",
            "SMTP server for mailed reports; empty: the PBX's mail settings (m_PbxSettings). "
            "When set, the [mail] keys replace the PBX's settings"),
    Setting("mail", "port", int, 25, "SMTP port (with mail.host)", minimum=1),
    Setting("mail", "encryption", str, "none", "none, tls (STARTTLS) or ssl (with mail.host)"),
    Setting("mail", "cert_check", bool, True, "verify the server's certificate (with mail.host)"),
    Setting("mail", "username", str, "", "SMTP login; empty: no login (with mail.host)"),
    Setting("mail", "password", str, "", "SMTP password (with mail.host)", secret=True),
    Setting("mail", "sender", str, "", "From address; empty: mail.username (with mail.host)"),
    Setting("mail", "sender_name", str, "MikoPBX", "From name (with mail.host)"),
    Setting("reports", "dir", str, "",
            "where mailed reports' files wait for their download links; empty: `reports/` "
            "beside module.db"),
    Setting("reports", "check_interval", float, 30.0,
            "seconds between looks for reports that are due", minimum=0.1),
    Setting("reports", "retries", int, 3, "further attempts when mailing fails", minimum=0),
    Setting("reports", "retry_delay", float, 60.0,
            "seconds before the first retry (doubling after each)", minimum=0.1),
    Setting("reports", "attach_limit_mb", float, 10.0,
            "bigger files are sent as a download link instead of attached", minimum=0.1),
    Setting("reports", "link_base", str, "",
            "start of download links in mails (https://pbx.example.com); empty: the PBX's own "
            "address (its internet interface and HTTPS port), else where its nginx was reached "
            "— never a client's Host header"),
    Setting("webhooks", "allowed_hosts", str, "",
            "hosts webhooks may be sent to, comma-separated; empty: each hook's own URL host "
            "(never the PBX itself or a special address unless listed)"),
    Setting("webhooks", "connect_timeout", float, 5.0,
            "seconds to connect to a webhook's receiver", minimum=0.1),
    Setting("webhooks", "read_timeout", float, 10.0,
            "seconds to wait for a webhook's receiver to answer", minimum=0.1),
    Setting("webhooks", "retries", int, 8,
            "further attempts when a receiver fails, then the delivery is failed", minimum=0),
    Setting("webhooks", "retry_delay", float, 30.0,
            "seconds before the first retry (doubling after each, with jitter; at most an "
            "hour)", minimum=0.01),
    Setting("webhooks", "check_interval", float, 1.0,
            "seconds between looks at the outbox (the writer also wakes the sender)",
            minimum=0.01),
    Setting("licence", "public_key", str, "",
            "the marketplace's Ed25519 public key (base64) licences are checked with; empty: "
            "a development run outside a PBX, nothing checked (`extcdr install` sets it)"),
    Setting("licence", "core_url", str, "",
            "on a real MikoPBX: the module's REST callback that answers with Core's licence "
            "service (http://127.0.0.1/pbxcore/api/modules/ModuleExtendedCDR/licence); "
            "when set, it decides instead of the licence file"),
    Setting("licence", "file", Path, Path("/storage/usbdisk1/mikopbx/licences/ModuleExtendedCDR.json"),
            "the module's licence as the marketplace signed it"),
    Setting("licence", "host_id_file", Path, Path("/etc/machine-id"),
            "this PBX's identity, which the licence is bound to"),
    Setting("log", "level", str, "info", "debug, info, warning or error"),
)

_BY_KEY = {s.key: s for s in SETTINGS}
_LOG_LEVELS = ("debug", "info", "warning", "error")
PBX_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAIL_ENCRYPTIONS = ("none", "tls", "ssl")


class SettingsError(ValueError):
    """A settings file or value that cannot be used; the message names the key."""


class Settings:
    """Validated values by `section.name`, e.g. `settings["pbx.cdr_db"]`."""

    def __init__(self, values: dict[str, Any], source: Path | None = None,
                 overrides: dict[str, Any] | None = None):
        self._values = values
        self.source = source
        self.overrides = overrides or {}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __eq__(self, other) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def section(self, name: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in self._values.items() if k.startswith(name + ".")}

    def describe(self) -> str:
        """One line for the log; secrets masked."""
        return ", ".join(f"{k}={'***' if _BY_KEY[k].secret and v else shown_target(v)}"
                         for k, v in self._values.items())


def load(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the TOML file, then `overrides` (`{"section.name": value}`, e.g. from
    the command line; a reload re-reads the file and applies the same overrides again)."""
    values = {s.key: s.default for s in SETTINGS}
    if path is not None:
        for key, raw in _read_toml(path).items():
            values[key] = _convert(key, raw)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[_known(key).key] = _convert(key, raw)
    return Settings(values, path, overrides)


def setting(key: str) -> Setting:
    """The settings table's row for `key` (its type, default and meaning)."""
    return _known(key)


def is_secret(key: str) -> bool:
    return key in _BY_KEY and _BY_KEY[key].secret


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None
    flat = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: '{section}' must be a [section]; sections are "
                                f"{', '.join(sorted({s.section for s in SETTINGS}))}")
        for name, raw in table.items():
            flat[f"{section}.{name}"] = raw
    return flat


def _known(key: str) -> Setting:
    if key not in _BY_KEY:
        raise SettingsError(f"unknown setting '{key}'; known: {', '.join(_BY_KEY)}")
    return _BY_KEY[key]


def _convert(key: str, raw: Any) -> Any:
    setting = _known(key)
    value = _coerce(setting.kind, raw)
    if value is None:
        raise SettingsError(f"setting '{key}' must be {_kind_name(setting.kind)}, not {raw!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise SettingsError(f"setting '{key}' must be at least {setting.minimum}, not {value}")
    if key == "log.level" and value not in _LOG_LEVELS:
        raise SettingsError(f"setting 'log.level' must be one of {', '.join(_LOG_LEVELS)}")
    if key == "web.publish_url" and value not in ("", "off") and (
            urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
        raise SettingsError("setting 'web.publish_url' must be an http:// URL of nginx's "
                            "publisher location, '' or 'off'")
    if key == "licence.core_url" and value and (
            urlsplit(value).scheme != "http"
            or urlsplit(value).hostname not in ("127.0.0.1", "::1", "localhost")):
        raise SettingsError("setting 'licence.core_url' must be an http:// URL on this machine "
                            "(http://127.0.0.1/pbxcore/api/modules/ModuleExtendedCDR/licence)")
    if key == "mail.encryption" and value not in MAIL_ENCRYPTIONS:
        raise SettingsError(f"setting 'mail.encryption' must be one of "
                            f"{', '.join(MAIL_ENCRYPTIONS)}")
    if key == "pbx.timezone" and value:
        _check_timezone(value)
    if key == "pbx.id" and value and not PBX_ID.fullmatch(value):
        raise SettingsError(f"setting 'pbx.id' must be 1-32 of a-z, 0-9 and '-' (not first), "
                            f"like 'office-2', not {value!r}")
    return value


def _coerce(kind: type, raw: Any) -> Any:
    """`raw` as `kind`, or None. TOML gives typed values; command-line overrides give text."""
    if isinstance(raw, str) and kind in (bool, int, float):
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        try:
            raw = words[raw.lower()] if kind is bool else kind(raw)
        except (KeyError, ValueError):
            return None
    if isinstance(raw, bool):
        return raw if kind is bool else None
    if kind is int:
        return raw if isinstance(raw, int) else None
    if kind is float:
        return float(raw) if isinstance(raw, (int, float)) else None
    if kind in (Path, database_target):
        return kind(raw) if isinstance(raw, (str, Path)) else None
    if kind is str:
        return raw if isinstance(raw, str) else None
    return None


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"setting 'pbx.timezone' must be an IANA timezone, not {name!r}") \
            from None


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number",
            str: "text", Path: "a path", database_target: "a path or URL"}[kind]


def reports_dir(settings: Settings) -> Path:
    """Where mailed reports' files are kept."""
    mirror = settings["module.db"]
    if is_database_url(mirror):          # a central history: beside where a file would be
        mirror = setting("module.db").default
    return Path(settings["reports.dir"] or mirror.parent / "reports")


def readme_table() -> str:
    """The configuration table of the README (generated from SETTINGS)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "(module folder)/db/module.db" if s.key == "module.db" else (
            "" if s.secret else s.default)
        lines.append(f"| `{s.key}` | {_kind_name(s.kind)} | `{default}` | {s.doc} |")
    return "\n".join(lines)
