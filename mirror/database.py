"""Opening the module's own database: WAL, one writer, many readers, migrated on open. It is
an SQLite file on the PBX, or a `postgresql://` URL: a central history of several PBXs."""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlsplit

from peewee import Database, DatabaseError, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import parse

from mirror import schema
from mirror.settings import is_database_url, shown_target

PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "cache_size": -32_000,      # KiB: 32 MB page cache keeps index pages of a big mirror warm
    "temp_store": "memory",
    "busy_timeout": 10_000,
}


# Every connection to a central history: a server that does not answer is an error within
# seconds, not a hang, and a lock is waited for as long as SQLite's busy timeout.
PG_CONNECTION = {"connect_timeout": 5, "application_name": "extcdr"}
PG_OPTIONS = "-c lock_timeout=10s"
PG_READONLY = "-c default_transaction_read_only=on"


class ModuleDbError(Exception):
    """module.db cannot be opened or is not a module database."""


def open_module_db(target: str | Path, *, readonly: bool = False) -> Database:
    """Connect to module.db (a path, or a `postgresql://` URL); the writer creates and migrates
    it, readers require it. Any other non-empty SQLite file, or database holding other tables,
    is refused before anything is written into it."""
    if is_database_url(target):
        return _open_postgresql(target, readonly=readonly)
    path = Path(target)
    if readonly:
        if not path.is_file():
            raise ModuleDbError(f"{path}: no such module database (run `extcdr sync` first)")
    elif not path.parent.is_dir():
        raise ModuleDbError(f"{path.parent}: no such directory")
    try:
        _check_identity(path, readonly=readonly)
        if readonly:
            db = SqliteDatabase(f"file:{path}?mode=ro", uri=True,
                                pragmas={"busy_timeout": 10_000})
        else:
            db = SqliteDatabase(str(path), pragmas=PRAGMAS)
        db.connect()
    except (sqlite3.Error, DatabaseError) as exc:  # not a database, damaged, permission, ...
        raise ModuleDbError(readable_error(path, exc)) from exc
    try:
        conn = db.connection()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > schema.LATEST:
            raise ModuleDbError(f"{path}: written by a newer extcdr (schema {version})")
        if not readonly:
            schema.migrate(conn)
    except ModuleDbError:
        db.close()
        raise
    except Exception as exc:  # sqlite3.DatabaseError: damaged, disk full, ...
        db.close()
        raise ModuleDbError(readable_error(path, exc)) from exc
    return db


def _open_postgresql(url: str, *, readonly: bool) -> PostgresqlDatabase:
    """A central history on PostgreSQL: migrated by the writer; read-only connections (every
    transaction of theirs refuses to write) require its schema."""
    try:
        params = parse(url, unquote_password=True, unquote_user=True)
    except ValueError as exc:                 # e.g. a port that is not a number
        raise ModuleDbError(f"{shown_target(url)}: not a PostgreSQL URL ({exc}); write it as "
                            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
    options = " ".join(filter(None, (params.pop("options", ""), PG_OPTIONS,
                                     PG_READONLY if readonly else "")))
    db = PostgresqlDatabase(**{**PG_CONNECTION, **params, "options": options})
    try:
        db.connect()
        if readonly:
            version = schema.postgresql_version(db)
            if version == 0:
                raise ModuleDbError(f"{shown_target(url)}: no extcdr module database there yet "
                                    f"(run `extcdr sync` first)")
            if version > schema.LATEST:
                raise schema.SchemaTooNew(f"module.db has schema {version}, this version knows "
                                          f"up to {schema.LATEST}")
        else:
            schema.migrate_postgresql(db)
    except ModuleDbError:
        db.close()
        raise
    except schema.SchemaTooNew as exc:
        db.close()
        raise ModuleDbError(f"{shown_target(url)}: written by a newer extcdr ({exc})") from None
    except schema.NotOurSchema as exc:
        db.close()
        raise ModuleDbError(f"{shown_target(url)} is not an extcdr module database: {exc}; "
                            "give an empty database (or schema) of its own") from None
    except DatabaseError as exc:              # unreachable, refused, no such database, ...
        db.close()
        raise ModuleDbError(readable_error(url, exc)) from None
    return db


def _check_identity(path: Path, *, readonly: bool) -> None:
    """Refuse a file that is not a module.db. Ours carry `schema.APPLICATION_ID`; a mirror of a
    release before it (schema 1 or later) is known by its tables and gets the id when it is
    migrated. A new or empty file is the writer's to create."""
    if not path.is_file() or path.stat().st_size == 0:
        if readonly:
            raise ModuleDbError(f"{path} is not an extcdr module database")
        return
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if application_id == schema.APPLICATION_ID:
        return
    older_mirror = version >= 1 and schema.MIRROR_TABLES <= tables
    empty = version == 0 and not tables
    if application_id == 0 and (older_mirror or (empty and not readonly)):
        return
    raise ModuleDbError(f"{path} is not an extcdr module database")


def readable_error(path: str | Path, exc: Exception) -> str:
    """One readable line for an error of module.db (CLI, daemon log, web page); a URL's
    password never shows."""
    if is_database_url(path):
        return _readable_postgresql_error(path, exc)
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return (f"{path} is damaged or not a database ({text}): restore it from a backup, or "
                f"move it aside and let `extcdr sync` mirror the PBX's history again")
    return f"{path}: {text}"


# What libpq puts before the server's own words: `connection to server at "…", port 5432
# failed: FATAL:  …`
_PG_PREFIX = re.compile(r'^(connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed: )?'
                        r'((FATAL|ERROR):\s+)?')


def _readable_postgresql_error(url: str, exc: Exception) -> str:
    shown = shown_target(url)
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    text = _PG_PREFIX.sub("", lines[0].strip())         # the first line says what went wrong
    password = unquote(urlsplit(url).password or "")
    if password:                         # libpq never says it; a message quoting the URL might
        text = text.replace(password, "***")
    if "password authentication failed" in text:
        return f"{shown}: the server refused this user and password ({text})"
    if re.search(r'database ".*" does not exist', text):
        return f"{shown}: {text} (create it, owned by the URL's user, or correct the URL)"
    if any(cause in text for cause in ("Connection refused", "timeout expired",
                                       "could not translate host name", "No route to host")):
        return (f"{shown}: the PostgreSQL server does not answer ({text}); check the address "
                "and that it takes connections from this machine")
    return f"{shown}: {text}"
