"""Opening the module's own database: WAL, one writer, many readers, migrated on open."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from peewee import DatabaseError, SqliteDatabase

from mirror import schema

PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "cache_size": -32_000,      # KiB: 32 MB page cache keeps index pages of a big mirror warm
    "temp_store": "memory",
    "busy_timeout": 10_000,
}


class ModuleDbError(Exception):
    """module.db cannot be opened or is not a module database."""


def open_module_db(path: str | Path, *, readonly: bool = False) -> SqliteDatabase:
    """Connect to module.db; the writer creates and migrates it, readers require it. Any other
    non-empty SQLite file is refused before anything is written into it."""
    path = Path(path)
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
    """One readable line for an SQLite error of module.db (CLI, daemon log, web page)."""
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return (f"{path} is damaged or not a database ({text}): restore it from a backup, or "
                f"move it aside and let `extcdr sync` mirror the PBX's history again")
    return f"{path}: {text}"
