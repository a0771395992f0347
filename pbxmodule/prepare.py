"""What the module needs on a PBX before it runs, made at every install and upgrade: Core's
install of the module calls it through the module's Setup (`Setup/PbxExtensionSetup.php`,
`installFiles()` → `extcdr prepare`) with the PBX's own paths, after Core copied back the data
an uninstall kept. It writes the settings for this PBX (`db/extcdr.toml`), migrates the module's
DB to this code's schema, and prepares what Core asks the PHP glue for (`db/glue.json`). Values
an earlier install chose (the pages' port, the proxy token, the AMI secret), a central history
the module writes (`module.db` a `postgresql://` URL; a file is always this install's) and the
administrator's own keys are kept.
"""
from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mirror import settings
from mirror.database import ModuleDbError, open_module_db
from mirror.schema import SchemaTooNew
from pbx.cdr import SourceError
from pbx.config import read_pbx_setting
from pbxmodule.glue import write_glue
from pbxmodule.private import write_private

SETTINGS_FILE = Path("db") / "extcdr.toml"
PAGES_PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
AMI_USER = "extcdr"


class PrepareError(ValueError):
    """The module cannot be made ready on this PBX; the message says why."""


@dataclass(frozen=True)
class PbxPaths:
    """Where this PBX keeps what the module reads (Core's config: database.dbfile,
    cdrDatabase.dbfile, asterisk.monitordir)."""
    config_db: Path
    cdr_db: Path
    recordings: Path


def prepare(module_dir: Path, pbx: PbxPaths, *, core_licence: bool) -> settings.Settings:
    """Settings, DB and glue of the module installed in `module_dir`. `core_licence`: the
    licence is Core's word, asked through the module's REST callback on this machine."""
    path = module_dir / SETTINGS_FILE
    try:
        current = tomllib.loads(path.read_text()) if path.exists() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PrepareError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise PrepareError(f"{path}: {exc.strerror}") from None
    web = current.setdefault("web", {})
    web.setdefault("listen", f"127.0.0.1:{_free_port()}")
    web.setdefault("proxy_token", secrets.token_hex(24))
    web.setdefault("prefix", PAGES_PREFIX)
    current.setdefault("ami", {}).update(
        host="127.0.0.1", port=int(_pbx_setting(pbx, "AMIPort") or 5038), username=AMI_USER,
        # Its own AMI user, from generateManagerConf(): not one of m_AsteriskManagerUsers,
        # which the admin panel edits and which MikoPBX filters MikoPBX's UserEvents from.
        secret=current.get("ami", {}).get("secret") or secrets.token_hex(16))
    current.setdefault("pbx", {}).update(
        cdr_db=str(pbx.cdr_db), config_db=str(pbx.config_db),
        groups_db=str(module_dir.parent / "ModuleUsersGroups" / "db" / "module.db"),
        phonebook_db=str(module_dir.parent / "ModulePhoneBook" / "db" / "module.db"),
        recordings_root=str(pbx.recordings))
    module = current.setdefault("module", {})
    if not settings.is_database_url(module.get("db", "")):  # a central history: the admin's
        module["db"] = str(module_dir / "db" / "module.db")
    if core_licence:
        port = _pbx_setting(pbx, "WEBPort") or "80"
        current.setdefault("licence", {})["core_url"] = (
            f"http://127.0.0.1:{port}/pbxcore/api/modules/{module_dir.name}/licence")
    write_private(path, _toml(current))
    try:
        loaded = settings.load(path)
    except settings.SettingsError as exc:
        raise PrepareError(str(exc)) from None
    try:
        open_module_db(loaded["module.db"]).close()          # created, or migrated
    except (ModuleDbError, SchemaTooNew, sqlite3.Error) as exc:
        raise PrepareError(f"the module DB did not migrate: {exc}") from None
    write_glue(module_dir, loaded)
    return loaded


def update_settings(module_dir: Path, section: str, values: dict) -> None:
    """Set keys of one section of the module's settings, keeping the rest."""
    path = module_dir / SETTINGS_FILE
    current = tomllib.loads(path.read_text())
    current.setdefault(section, {}).update(values)
    write_private(path, _toml(current))


def _pbx_setting(pbx: PbxPaths, key: str) -> str:
    try:
        return read_pbx_setting(pbx.config_db, key) or ""
    except SourceError as exc:
        raise PrepareError(str(exc)) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(document: dict) -> str:
    """A settings document of [sections] with text, number and true/false values as TOML."""
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            shown = (str(value).lower() if isinstance(value, bool) else
                     str(value) if isinstance(value, (int, float)) else json.dumps(str(value)))
            lines.append(f"{key} = {shown}")
        lines.append("")
    return "\n".join(lines)
