"""Opening the module's own database: WAL, one writer, many readers, migrated on open."""
from __future__ import annotations

from pathlib import Path

from peewee import SqliteDatabase

from db import schema

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
    """Connect to module.db; the writer creates and migrates it, readers require it."""
    path = Path(path)
    if readonly:
        if not path.is_file():
            raise ModuleDbError(f"{path}: no such module database (run `extcdr sync` first)")
        db = SqliteDatabase(f"file:{path}?mode=ro", uri=True, pragmas={"busy_timeout": 10_000})
    else:
        if not path.parent.is_dir():
            raise ModuleDbError(f"{path.parent}: no such directory")
        db = SqliteDatabase(str(path), pragmas=PRAGMAS)
    try:
        db.connect()
        conn = db.connection()
        if readonly:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise ModuleDbError(f"{path}: not an extcdr module database")
            if version > schema.LATEST:
                raise ModuleDbError(f"{path}: written by a newer extcdr (schema {version})")
        else:
            schema.migrate(conn)
    except ModuleDbError:
        db.close()
        raise
    except Exception as exc:  # sqlite3.DatabaseError: not a database, permission, ...
        db.close()
        raise ModuleDbError(f"{path}: {exc}") from exc
    return db
