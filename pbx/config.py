"""The one reader of the PBX configuration DB (`mikopbx.db`): employees, numbers, providers,
the PBX's settings (`m_PbxSettings`: timezone, web address, mail), and the employee groups of
ModuleUsersGroups' DB. Read-only, opened for each read, as `pbx.cdr` reads the history."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from mirror.calls import NUMBER_MATCH_DIGITS, Directory
from pbx.cdr import SourceBusy, SourceError, pbx_errors, read_only

__all__ = ["SourceBusy", "SourceError"]     # what a read may raise


# Where ModuleUsersGroups keeps its DB, from the folder of the PBX's config DB (`/cf/conf` on a
# PBX holds it apart; a copied PBX folder, as the demo's, holds both).
GROUPS_DB_BESIDE_CONFIG = Path("custom_modules/ModuleUsersGroups/db/module.db")


def groups_db_beside(config_db: Path) -> Path | None:
    """ModuleUsersGroups' DB next to a PBX config DB, if there is one."""
    guess = config_db.parent / GROUPS_DB_BESIDE_CONFIG
    return guess if guess.is_file() else None


@dataclass
class PbxConfig:
    """What the module needs of the PBX configuration."""
    directory: Directory
    timezone: str | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)  # group name -> extensions


def read_pbx_config(path: str | Path | None, groups_path: str | Path | None = None, *,
                    extension_length: int = 4,
                    number_match_digits: int = NUMBER_MATCH_DIGITS) -> PbxConfig:
    """Employees, PBX numbers, providers and timezone; groups from ModuleUsersGroups' DB."""
    directory = Directory(extension_length=extension_length,
                          number_match_digits=number_match_digits)
    config = PbxConfig(directory)
    if path is None:
        return config
    path = Path(path)
    with read_only(path, 5_000) as conn, pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "m_Extensions" not in tables:
            raise SourceError(f"{path}: not a PBX configuration database (no m_Extensions)")
        sip_of_user = _read_extensions(conn, tables, directory)
        directory.providers = _read_providers(conn, tables)
        config.timezone = _timezone(conn, tables)
    if groups_path is not None and Path(groups_path).is_file():
        config.groups = _read_groups(Path(groups_path), sip_of_user)
    return config


def read_pbx_timezone(path: str | Path, busy_timeout_ms: int = 1_000) -> str | None:
    """Only the PBX's timezone (`PBXTimezone`): a cheap read, done again when the file changes."""
    path = Path(path)
    with read_only(path, busy_timeout_ms) as conn, pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _timezone(conn, tables)


def read_pbx_web_address(path: str | Path) -> str | None:
    """The PBX's own web address (`https://host[:port]`): the external host name or address of
    its internet interface (`m_LanInterfaces`), else that interface's address, with the admin
    shell's HTTPS port (`WEBHTTPSPort`). None when the config DB does not say."""
    path = Path(path)
    with read_only(path, 1_000) as conn, pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "m_LanInterfaces" not in tables:
            return None
        columns = {row[1] for row in conn.execute("PRAGMA table_info(m_LanInterfaces)")}
        wanted = [c for c in ("exthostname", "extipaddr", "ipaddr") if c in columns]
        enabled = "WHERE coalesce(disabled, '0') != '1'" if "disabled" in columns else ""
        order = "internet = '1' DESC, id" if "internet" in columns else "id"
        host = next((value.split(":")[0] for row in conn.execute(
            f"SELECT {', '.join(wanted) or 'NULL'} FROM m_LanInterfaces {enabled} ORDER BY {order}")
            for value in row if value), None)
        port = _pbx_setting(conn, tables, "WEBHTTPSPort")
    if not host:
        return None
    return f"https://{host}" + (f":{port}" if port and str(port) != "443" else "")


def read_pbx_setting(path: str | Path, key: str) -> str | None:
    """One value of the PBX's settings (`m_PbxSettings`); None when the config DB does not say."""
    path = Path(path)
    with read_only(path, 1_000) as conn, pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _pbx_setting(conn, tables, key)


def _timezone(conn, tables) -> str | None:
    return _pbx_setting(conn, tables, "PBXTimezone")


def _pbx_setting(conn, tables, key: str) -> str | None:
    """A value of `m_PbxSettings`; None when it is missing or empty."""
    if "m_PbxSettings" not in tables:
        return None
    row = conn.execute("SELECT value FROM m_PbxSettings WHERE key = ?", (key,)).fetchone()
    return row[0] if row and row[0] else None


def _read_extensions(conn, tables, directory: Directory) -> dict[int, str]:
    users = {}
    if "m_Users" in tables:
        users = dict(conn.execute("SELECT id, username FROM m_Users"))
    rows = conn.execute("SELECT number, type, callerid, userid FROM m_Extensions").fetchall()
    sip_of_user = {}
    for number, kind, callerid, userid in rows:
        if not number:
            continue
        if kind == "SIP":
            directory.employees[number] = callerid or users.get(userid) or ""
            if userid is not None:
                sip_of_user.setdefault(userid, number)
        elif kind != "EXTERNAL":
            directory.pbx_numbers.add(number)
    for number, kind, _, userid in rows:
        if kind == "EXTERNAL" and userid in sip_of_user:
            directory.mobiles[number] = sip_of_user[userid]
    return sip_of_user


def _read_providers(conn, tables) -> dict[str, str]:
    """Trunk id (as in channel names and accounts) -> provider name (its SIP/IAX description)."""
    if "m_Providers" not in tables:
        return {}
    providers = {}
    for uniqid, sipuid, iaxuid, note in conn.execute(
            "SELECT uniqid, sipuid, iaxuid, note FROM m_Providers"):
        for key in (sipuid, iaxuid, uniqid):
            if key:
                providers[key] = note or key
    for table in ("m_Sip", "m_Iax"):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if {"uniqid", "description"} <= columns:
            for uniqid, description in conn.execute(
                    f"SELECT uniqid, description FROM {table} WHERE uniqid IN "
                    f"(SELECT sipuid FROM m_Providers UNION SELECT iaxuid FROM m_Providers)"):
                if uniqid and description:
                    providers[uniqid] = description
    return providers


def _read_groups(path: Path, sip_of_user: dict[int, str]) -> dict[str, list[str]]:
    with read_only(path, 5_000) as conn, pbx_errors(path):
        try:
            rows = conn.execute(
                "SELECT g.name, m.user_id FROM m_ModuleUsersGroups_GroupMembers m "
                "JOIN m_ModuleUsersGroups_UsersGroups g ON g.id = m.group_id").fetchall()
        except sqlite3.OperationalError:
            return {}
    groups: dict[str, list[str]] = {}
    for name, user_id in rows:
        extensions = groups.setdefault(name, [])
        if user_id in sip_of_user:
            extensions.append(sip_of_user[user_id])
    return groups


def read_pbx_settings(path: str | Path, busy_timeout_ms: int = 5_000) -> dict[str, str]:
    """All of `m_PbxSettings` (empty values as ""); read each time, as the admin may change them
    at any moment."""
    path = Path(path)
    with read_only(path, busy_timeout_ms) as conn, pbx_errors(path):
        return {key: value or "" for key, value in
                conn.execute("SELECT key, value FROM m_PbxSettings")}
