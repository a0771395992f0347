"""The PBX's own table layouts, as MikoPBX creates them.

Used to build demo PBXs and test fixtures that look exactly like a real one. Production
readers never create these tables: they open the PBX's files read-only.
"""
from __future__ import annotations

import sqlite3

# cdr_general as created by MikoPBX from its CallDetailRecords model (column order of the model;
# newer releases append columns at the end). `cdr` is the same layout for calls in progress.
CDR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"),
    ("start", "TEXT"),
    ("endtime", "TEXT"),
    ("answer", "TEXT"),
    ("src_chan", "TEXT"),
    ("src_num", "TEXT"),
    ("dst_chan", "TEXT"),
    ("dst_num", "TEXT"),
    ("UNIQUEID", "TEXT"),
    ("linkedid", "TEXT"),
    ("did", "TEXT"),
    ("disposition", "TEXT"),
    ("recordingfile", "TEXT"),
    ("from_account", "TEXT"),
    ("to_account", "TEXT"),
    ("dialstatus", "TEXT"),
    ("appname", "TEXT"),
    ("transfer", "INTEGER"),
    ("is_app", "TEXT"),
    ("duration", "INTEGER"),
    ("billsec", "INTEGER"),
    ("work_completed", "TEXT"),
    ("src_call_id", "TEXT"),
    ("dst_call_id", "TEXT"),
    ("verbose_call_id", "TEXT"),
    ("a_transfer", "INTEGER"),
    ("rec_src_channel", "TEXT"),
    ("dtmf_digits", "TEXT"),
    ("src_name", "TEXT"),
    ("dst_name", "TEXT"),
)

# Columns an older release does not have (the reader must cope with their absence).
CDR_NEWER_COLUMNS = ("rec_src_channel", "dtmf_digits", "src_name", "dst_name")

CDR_INDEXED = ("UNIQUEID", "start", "src_chan", "dst_chan", "src_num", "dst_num", "linkedid")


def cdr_ddl(table: str = "cdr_general", *, older: bool = False) -> list[str]:
    """CREATE statements for `cdr_general` (or the in-progress `cdr`) and its indexes."""
    cols = [f"{name} {kind}" for name, kind in CDR_COLUMNS
            if not (older and name in CDR_NEWER_COLUMNS)]
    ddl = [f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})"]
    ddl += [f"CREATE INDEX IF NOT EXISTS i_{table}_{c} ON {table} ({c})" for c in CDR_INDEXED]
    return ddl


def cdr_column_names(*, older: bool = False) -> list[str]:
    return [name for name, _ in CDR_COLUMNS if not (older and name in CDR_NEWER_COLUMNS)]


# The PBX configuration DB (/cf/conf/mikopbx.db): only the tables the module reads.
PBX_CONFIG_DDL = (
    """CREATE TABLE IF NOT EXISTS m_Users (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        email TEXT, username TEXT, language TEXT, avatar TEXT)""",
    """CREATE TABLE IF NOT EXISTS m_Extensions (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        number TEXT, type TEXT, callerid TEXT, userid INTEGER,
        show_in_phonebook TEXT, public_access TEXT, is_general_user_number TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS number ON m_Extensions (number)",
    """CREATE TABLE IF NOT EXISTS m_Sip (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        uniqid TEXT, disabled TEXT, extension TEXT, type TEXT, host TEXT, port INTEGER,
        username TEXT, secret TEXT, description TEXT)""",
    """CREATE TABLE IF NOT EXISTS m_Providers (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        uniqid TEXT, type TEXT, sipuid TEXT, iaxuid TEXT, note TEXT)""",
    """CREATE TABLE IF NOT EXISTS m_PbxSettings (
        key TEXT PRIMARY KEY NOT NULL, value TEXT)""",
    # Installed modules, as MikoPBX's PbxExtensionModules model keeps them.
    """CREATE TABLE IF NOT EXISTS m_PbxExtensionModules (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        uniqid TEXT, name TEXT, version TEXT, developer TEXT, supportemail TEXT, path TEXT,
        description TEXT, wiki_links TEXT, disabled TEXT NOT NULL DEFAULT '1',
        disableReason TEXT, disableReasonText TEXT)""",
    # AMI users (manager.conf is generated from them); modules add their own.
    """CREATE TABLE IF NOT EXISTS m_AsteriskManagerUsers (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        username TEXT, secret TEXT, call TEXT, cdr TEXT, originate TEXT, reporting TEXT,
        agent TEXT, config TEXT, dialplan TEXT, dtmf TEXT, log TEXT, system TEXT, user TEXT,
        verbose TEXT, command TEXT, networkfilterid TEXT, eventfilter TEXT, description TEXT,
        weakSecret TEXT DEFAULT '0')""",
)

# ModuleUsersGroups' own DB (custom_modules/ModuleUsersGroups/db/module.db).
USERS_GROUPS_DDL = (
    """CREATE TABLE IF NOT EXISTS m_ModuleUsersGroups_UsersGroups (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        name TEXT, description TEXT, defaultGroup TEXT)""",
    """CREATE TABLE IF NOT EXISTS m_ModuleUsersGroups_GroupMembers (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        user_id INTEGER, group_id INTEGER)""",
)

# ModulePhoneBook's own DB (custom_modules/ModulePhoneBook/db/module.db), as its model
# `Models/PhoneBook.php` makes it: `number` the digits its AGI looks up ('1' + the last 9),
# `number_rep` as typed, `call_id` the name.
PHONEBOOK_DDL = (
    """CREATE TABLE IF NOT EXISTS m_PhoneBook (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        number INTEGER, number_rep TEXT, call_id TEXT, search_index TEXT)""",
    "CREATE INDEX IF NOT EXISTS number ON m_PhoneBook (number)",
    "CREATE INDEX IF NOT EXISTS CallerID ON m_PhoneBook (call_id)",
)


def create(path: str, statements) -> sqlite3.Connection:
    """Create (or open) a SQLite file in WAL mode, as the PBX keeps its DBs, and run DDL."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    return conn
