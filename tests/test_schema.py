"""module.db migrations: numbered steps, each applied once, from every older version, keeping
what is there; a newer schema than the code knows is refused readably."""
import re
import sqlite3

import pytest

from cli import main
from mirror import schema
from mirror.database import ModuleDbError, open_module_db
from mirror.userdata import default_filter, save_filter, saved_filters
from tests.mirror import dump


def at_version(path, version: int) -> None:
    """A module.db migrated only up to `version`, as an older release left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for step in schema.MIGRATIONS[:version]:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


@pytest.mark.parametrize("version", range(0, schema.LATEST))
def test_every_older_schema_migrates_to_the_latest(tmp_path, version):
    path = tmp_path / "module.db"
    at_version(path, version)
    open_module_db(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"call", "leg", "saved_filter", "user_setting", "report", "report_send"} <= tables
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_mirror_of_schema_1_keeps_its_calls_and_gains_the_users_tables(demo_mirror, demo_pbx,
                                                                        tmp_path):
    old = tmp_path / "module.db"
    downgraded(demo_mirror, old, 1)
    before = dump(demo_mirror)         # the later steps rebuild the names index as it was
    db = open_module_db(old)
    save_filter(db, "anna", "Missed today", {"period": "today", "tab": "missed"}, default=True)
    assert default_filter(db, "anna")["params"] == {"period": "today", "tab": "missed"}
    assert saved_filters(db, "boris") == []
    db.close()
    # What older releases did not read (the digits callers pressed) comes with the next sync.
    assert main(["sync", "--cdr-db", str(demo_pbx / "cdr.db"), "--pbx-db",
                 str(demo_pbx / "mikopbx.db"), "--db", str(old), "--once"]) == 0
    assert dump(old) == before


def downgraded(mirror, to, version: int) -> None:
    """A copy of `mirror` at `to` as a release of schema `version` left it: what the later
    steps created (tables, indexes, columns) taken away, newest first, its data kept."""
    sqlite3.connect(mirror).backup(sqlite3.connect(to))
    conn = sqlite3.connect(to, isolation_level=None)
    for statement in reversed([s for step in schema.MIGRATIONS[version:] for s in step]):
        if trigger := re.match(r"\s*CREATE TRIGGER (\w+)", statement):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger[1]}")
        elif table := re.match(r"\s*CREATE (?:VIRTUAL )?TABLE (\w+)", statement):
            conn.execute(f"DROP TABLE IF EXISTS {table[1]}")
        elif index := re.match(r"\s*CREATE (?:UNIQUE )?INDEX (\w+)", statement):
            conn.execute(f"DROP INDEX IF EXISTS {index[1]}")
        elif index := re.match(r"\s*DROP INDEX (\w+)", statement):     # rebuilt: as it was
            conn.execute(next(s for step in schema.MIGRATIONS[:version] for s in step
                              if re.match(rf"\s*CREATE (?:UNIQUE )?INDEX {index[1]}\b", s)))
        elif trigger := re.match(r"\s*DROP TRIGGER (\w+)", statement):   # as it was, if it was
            for created in (s for step in schema.MIGRATIONS[:version] for s in step
                            if re.match(rf"\s*CREATE TRIGGER {trigger[1]}\b", s)):
                conn.execute(created)
        elif column := re.match(r"\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", statement):
            conn.execute(f"ALTER TABLE {column[1]} DROP COLUMN {column[2]}")
        elif statement.startswith("PRAGMA application_id"):
            conn.execute("PRAGMA application_id = 0")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "module.db"
    at_version(path, schema.LATEST)
    sqlite3.connect(path).execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    with pytest.raises(ModuleDbError, match="newer"):
        open_module_db(path, readonly=True)
    with pytest.raises(ModuleDbError, match=f"schema {schema.LATEST + 1}"):
        open_module_db(path)
