"""module.db as a `postgresql://` URL (issue 22): opened, identified, migrated once, refused
readably — on the session's real PostgreSQL server (tests.pgserver).

Each test gets a schema of its own in the session's database (`CREATE SCHEMA`, named first on
the URL's search_path, dropped after): a fresh, empty "database" without the CREATEDB right the
module's role lacks. pg_trgm is made once in `public`, which every search_path ends with (an
extension made inside a test's schema would go when that schema is dropped).
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import peewee
import pytest
from playhouse.db_url import parse

from daemon.locks import CentralLock
from mirror import schema
from mirror.database import ModuleDbError, open_module_db, readable_error
from mirror.dialect import POSTGRESQL, SQLITE, dialect_of, run, write_transaction
from mirror.models import Call, CallEmployee, Employee, Leg
from mirror.settings import SettingsError, load, reports_dir, setting
from tests.conftest import ROOT, wait_for
from tests.stack import free_port

OCTOBER_2024 = 1_728_000_000_000     # 2024-10-04 00:00 UTC
NOVEMBER_2024 = 1_731_000_000_000    # 2024-11-07 17:20 UTC


@pytest.fixture
def url(pg_schema_url):
    return pg_schema_url


@pytest.fixture
def admin(pg_admin):
    return pg_admin


def schema_name(url: str) -> str:
    return url.rsplit("search_path%3D", 1)[1].split("%2C")[0]


def relations(admin, name: str) -> set[str]:
    """The tables of schema `name`, partitioned parents included, their partitions not."""
    return {table for (table,) in admin.execute_sql(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
        (name,))}


def password(url: str) -> str:
    return parse(url)["password"]


# --- the seam ------------------------------------------------------------------------------------

def test_house_sql_reads_the_same_on_both_engines(url, tmp_path):
    """`?` marks and literal `%` (psycopg2 reads every `%` as a mark) reach either engine; a `?`
    inside a quoted literal stays text."""
    text = "SELECT ? || '%', 'what?' WHERE 'queue:1' LIKE 'queue:%'"
    assert SQLITE.sql(text) == text
    assert POSTGRESQL.sql(text) == "SELECT %s || '%%', 'what?' WHERE 'queue:1' LIKE 'queue:%%'"
    for db in (open_module_db(tmp_path / "module.db"), open_module_db(url)):
        assert run(db, text, ("50",)).fetchall() == [("50%", "what?")]
        db.close()


def test_a_write_transaction_is_undone_whole_on_both_engines(url, tmp_path):
    for db in (open_module_db(tmp_path / "module.db"), open_module_db(url)):
        with pytest.raises(peewee.IntegrityError):
            with write_transaction(db):
                run(db, "INSERT INTO sync_state (key, value) VALUES ('cursor', '5')")
                run(db, "INSERT INTO sync_state (key, value) VALUES ('cursor', '6')")
        assert run(db, "SELECT count(*) FROM sync_state").fetchone() == (0,)
        db.close()


# --- opening, migrating --------------------------------------------------------------------------

def test_a_url_opens_a_new_central_history_with_the_sqlite_schema(url, admin, tmp_path):
    """The baseline is the SQLite schema at LATEST, table by table and column by column; the
    FTS5 tables are the `numbers` and `names` columns of `call`; 64-bit times and ids."""
    db = open_module_db(url)
    assert dialect_of(db) is POSTGRESQL
    assert run(db, "SELECT application, version FROM extcdr_schema").fetchall() == [
        ("ECDR", schema.LATEST)]
    assert schema.PG_MIGRATIONS[-1][0] == schema.LATEST, "a SQLite step without its PG twin"
    secret, = run(db, "SELECT value FROM module_secret WHERE name = 'report_links'").fetchone()
    assert len(bytes(secret)) == 32
    db.close()

    lite = sqlite3.connect(tmp_path / "module.db")
    schema.migrate(lite)
    own = {"call_number", "call_name", "sqlite_sequence"}     # FTS5's and AUTOINCREMENT's
    sqlite_tables = {name for (name,) in lite.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")
        if not any(name.startswith(table) for table in own)}
    name = schema_name(url)
    assert relations(admin, name) == sqlite_tables | {"extcdr_schema"}
    columns = {}
    for table, column, kind in admin.execute_sql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s", (name,)):
        columns.setdefault(table, {})[column] = kind
    for table in sqlite_tables:
        expected = {row[1] for row in lite.execute(f"PRAGMA table_info({table})")}
        assert set(columns[table]) == expected | ({"numbers", "names"} if table == "call"
                                                  else set()), table
    wide = [(table, column, kind) for table, kinds in columns.items()
            for column, kind in kinds.items()
            if (column in ("id", "revision", "hour", "day") or column.endswith(("_ms", "_id"))
                or table.endswith("_rollup") and column not in ("direction", "status"))
            and kind not in ("bigint", "text")]
    assert wide == []
    sqlite_indexes = {name for (name,) in lite.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    pg_indexes = {index for (index,) in admin.execute_sql(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (name,))}
    assert sqlite_indexes <= pg_indexes
    assert {"call_numbers", "call_names", "tag_name"} <= pg_indexes


def test_reopening_is_a_no_op_and_a_reader_cannot_write(url, admin):
    db = open_module_db(url)
    secret = bytes(run(db, "SELECT value FROM module_secret").fetchone()[0])
    db.close()
    before = relations(admin, schema_name(url))
    again = open_module_db(url)
    assert bytes(run(again, "SELECT value FROM module_secret").fetchone()[0]) == secret
    assert run(again, "SELECT count(*) FROM extcdr_schema").fetchone() == (1,)
    again.close()
    assert relations(admin, schema_name(url)) == before

    reader = open_module_db(url, readonly=True)
    assert run(reader, "SELECT count(*) FROM call").fetchone() == (0,)
    with pytest.raises(peewee.InternalError, match="read-only transaction"):
        run(reader, "INSERT INTO sync_state (key, value) VALUES ('cursor', '1')")
    reader.close()


def test_two_processes_opening_at_once_migrate_once(url, admin):
    """Two daemons of two PBXs starting together: the second waits for the first's migration
    and finds it done (without the lock, one would fail on tables that already exist)."""
    lock = peewee.PostgresqlDatabase(**parse(url))
    lock.connect()
    lock.execute_sql("BEGIN")
    lock.execute_sql("SELECT pg_advisory_xact_lock(%s)", (schema.PG_MIGRATION_LOCK,))
    opening = ("import sys; from mirror.database import open_module_db; "
               "open_module_db(sys.argv[1]).close()")
    daemons = [subprocess.Popen([sys.executable, "-c", opening, url], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                   "AND objid = %s")
        assert wait_for(lambda: admin.execute_sql(waiting, (schema.PG_MIGRATION_LOCK,)
                                                  ).fetchone()[0] == 2, timeout=30), \
            "the two processes did not wait for the migration lock"
        lock.execute_sql("COMMIT")          # both start migrating at the same moment
        results = [(daemon.wait(60), daemon.stderr.read()) for daemon in daemons]
    finally:
        lock.close()
        for daemon in daemons:
            daemon.kill()
            daemon.wait()
    assert results == [(0, ""), (0, "")]
    db = open_module_db(url, readonly=True)
    assert run(db, "SELECT count(*), max(version) FROM extcdr_schema").fetchone() == (
        1, schema.LATEST)
    assert run(db, "SELECT count(*) FROM module_secret").fetchone() == (1,)
    db.close()


# --- bad input -------------------------------------------------------------------------------

def test_bad_targets_are_one_line_without_the_password(url, admin, postgresql_url, cli):
    """What `extcdr migrate --db URL` says of each: one line, the password masked."""
    secret = password(postgresql_url)
    port = parse(postgresql_url)["port"]
    nobody = free_port()
    cases = {
        postgresql_url.replace(f":{port}/", f":{nobody}/"): "server does not answer",
        postgresql_url.replace(secret, "not-the-password"): "refused this user and password",
        postgresql_url.rsplit("/", 1)[0] + "/no_such_db": 'database "no_such_db" does not exist',
        postgresql_url.replace(f":{port}/", ":port/"): "not a PostgreSQL URL",
    }
    for target, complaint in cases.items():
        started = time.monotonic()
        code, out, err = cli("migrate", "--db", target)
        assert (code, out) == (2, ""), target
        assert err.count("\n") == 1 and complaint in err, err
        assert err.startswith("extcdr: postgresql://extcdr:***@127.0.0.1:"), err
        assert secret not in err and "not-the-password" not in err
        assert time.monotonic() - started < 10          # refused at once, not after a hang
    assert relations(admin, schema_name(url)) == set()
    # Whatever a driver's message quotes, the password is masked.
    said = readable_error(postgresql_url, peewee.OperationalError(f"no: {postgresql_url}"))
    assert secret not in said and said.count("***") == 2


def test_a_database_of_other_tables_is_refused_before_anything_is_written(url, admin, cli):
    name = schema_name(url)
    admin.execute_sql(f"CREATE TABLE {name}.customers (id integer PRIMARY KEY, name text)")
    admin.execute_sql(f"INSERT INTO {name}.customers VALUES (1, 'Acme')")
    for readonly in (False, True):
        with pytest.raises(ModuleDbError) as refused:
            open_module_db(url, readonly=readonly)
        assert "is not an extcdr module database" in str(refused.value)
        assert "customers" in str(refused.value)
    code, _, err = cli("migrate", "--db", url)
    assert code == 2 and err.count("\n") == 1 and password(url) not in err
    assert relations(admin, name) == {"customers"}
    assert admin.execute_sql(f"SELECT name FROM {name}.customers").fetchall() == [("Acme",)]
    assert admin.execute_sql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'"
                             ).fetchone() == (1,)


def test_a_newer_schema_is_refused_and_kept(url, admin, cli):
    open_module_db(url).close()
    name = schema_name(url)
    admin.execute_sql(f"UPDATE {name}.extcdr_schema SET version = %s", (schema.LATEST + 1,))
    for readonly in (False, True):
        with pytest.raises(ModuleDbError, match=rf"written by a newer extcdr \(module.db has "
                                                rf"schema {schema.LATEST + 1}"):
            open_module_db(url, readonly=readonly)
    code, _, err = cli("status", "--db", url)
    assert code == 2 and err.count("\n") == 1 and "newer extcdr" in err
    assert password(url) not in err
    assert admin.execute_sql(f"SELECT version FROM {name}.extcdr_schema").fetchone() == (
        schema.LATEST + 1,)


def test_a_reader_of_an_empty_database_is_told_to_sync_first(url, admin):
    with pytest.raises(ModuleDbError, match="no extcdr module database there yet"):
        open_module_db(url, readonly=True)
    assert relations(admin, schema_name(url)) == set()


# --- the tables ----------------------------------------------------------------------------------

def _call(linkedid: str, start_ms: int, **fields) -> dict:
    return {"linkedid": linkedid, "start_ms": start_ms, "end_ms": start_ms + 95_000,
            "direction": "incoming", "status": "answered", "answered": True,
            "src": "79161234567", "src_name": "Иван Петров", "dst": "201", "dst_name": "Anna",
            "external_number": "79161234567", "ext_key": "9161234567", "missed_by": "[]",
            "transferred_to": "[]", "employees": '["201"]', "wait_s": 5, "talk_s": 90,
            "duration_s": 95, "recordings": "[]", "callback_attempts": 0, "leg_count": 1,
            **fields}


def _leg(linkedid: str, start_ms: int) -> dict:
    return {"uniqueid": linkedid, "linkedid": linkedid, "source_id": 1, "start_ms": start_ms,
            "answer_ms": start_ms + 5_000, "end_ms": start_ms + 95_000,
            "src_chan": "PJSIP/provider-0001", "src_num": "79161234567",
            "src_name": "Иван Петров", "dst_chan": "PJSIP/201-0002", "dst_num": "201",
            "dst_name": "Anna", "did": "74950000000", "disposition": "ANSWERED",
            "dialstatus": "ANSWER", "recordingfile": "", "from_account": "provider",
            "to_account": "", "appname": "Dial", "is_app": False, "transfer": 0,
            "a_transfer": 0, "duration": 95, "billsec": 90}


def test_the_models_write_and_read_calls_of_two_months_into_their_partitions(url, admin):
    db = open_module_db(url)
    assert schema.month_partitions(db, [OCTOBER_2024, NOVEMBER_2024, OCTOBER_2024 + 1]) == [
        "call_2024_10", "leg_2024_10", "call_employee_2024_10",
        "call_2024_11", "leg_2024_11", "call_employee_2024_11"]
    assert schema.month_partitions(db, [NOVEMBER_2024]) == []        # made once
    with db.bind_ctx([Call, Leg, CallEmployee, Employee]):
        with write_transaction(db):
            for linkedid, start in (("1728000000.1", OCTOBER_2024),
                                    ("1731000000.7", NOVEMBER_2024)):
                call_id = Call.insert(**_call(linkedid, start)).execute()
                Leg.insert(**_leg(linkedid, start)).execute()
                CallEmployee.insert(extension="201", start_ms=start, call_id=call_id,
                                    placed=False).execute()
            Employee.insert(extension="201", name="Anna").execute()
        calls = list(Call.select().order_by(Call.start_ms))
        assert [(c.linkedid, c.start_ms, c.answered, c.src_name) for c in calls] == [
            ("1728000000.1", OCTOBER_2024, True, "Иван Петров"),
            ("1731000000.7", NOVEMBER_2024, True, "Иван Петров")]
        assert [leg.is_app for leg in Leg.select()] == [False, False]
        assert {(e.call_id, e.placed) for e in CallEmployee.select()} == {
            (calls[0].id, False), (calls[1].id, False)}
        assert Employee.get(Employee.extension == "201").name == "Anna"
        with pytest.raises(peewee.DatabaseError, match="no partition of relation"):
            with db.atomic():           # a month without its partitions
                Call.insert(**_call("1.1", 1_600_000_000_000)).execute()
    placed = {table: sorted(rows) for table, rows in (
        (table, db.execute_sql(f"SELECT tableoid::regclass::text FROM {table}").fetchall())
        for table in schema.PARTITIONED)}
    assert placed == {"call": [("call_2024_10",), ("call_2024_11",)],
                      "leg": [("leg_2024_10",), ("leg_2024_11",)],
                      "call_employee": [("call_employee_2024_10",),
                                        ("call_employee_2024_11",)]}
    db.close()


def test_numbers_and_names_are_searched_by_their_trigram_indexes(url):
    db = open_module_db(url)
    schema.month_partitions(db, [OCTOBER_2024])
    rows = [("1.1", "201 79161234567", "Иван Петров\nAnna"),
            ("1.2", "202 74951112233", "Ольга Смирнова"),
            ("1.3", "203 79031234000", "")]
    with db.bind_ctx([Call]):
        for i, (linkedid, numbers, names) in enumerate(rows):
            Call.insert(**_call(linkedid, OCTOBER_2024 + i)).execute()
            run(db, "UPDATE call SET numbers = ?, names = ? WHERE linkedid = ?",
                (numbers, names, linkedid))
    run(db, "ANALYZE call")
    run(db, "SET enable_seqscan = off")           # three rows: show the index can answer
    numbers = "SELECT linkedid FROM call WHERE numbers LIKE ?"
    assert sorted(run(db, numbers, ("%1234%",)).fetchall()) == [("1.1",), ("1.3",)]
    plan = " ".join(row[0] for row in run(db, "EXPLAIN " + numbers, ("%1234%",)))
    assert "Bitmap Index Scan on call_2024_10_numbers_idx" in plan
    names = "SELECT linkedid FROM call WHERE names ILIKE ?"
    assert run(db, names, ("%петр%",)).fetchall() == [("1.1",)]
    plan = " ".join(row[0] for row in run(db, "EXPLAIN " + names, ("%петр%",)))
    assert "Bitmap Index Scan on call_2024_10_names_idx" in plan
    db.close()


# --- where a path was assumed --------------------------------------------------------------------

def test_the_module_db_setting_takes_a_url_and_never_shows_its_password(tmp_path):
    url = "postgresql://extcdr:s3cret-pw@10.0.0.5:5432/history"
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[module]\ndb = "{url}"\n')
    settings = load(config)
    assert settings["module.db"] == url                  # not a Path (it would fold the //)
    assert "s3cret-pw" not in settings.describe()
    assert "module.db=postgresql://extcdr:***@10.0.0.5:5432/history" in settings.describe()
    assert reports_dir(settings) == setting("module.db").default.parent / "reports"
    assert load(None, {"module.db": str(tmp_path / "module.db")})["module.db"] == (
        tmp_path / "module.db")
    config.write_text("[module]\ndb = 5\n")
    with pytest.raises(SettingsError, match="'module.db' must be a path or URL"):
        load(config)


def test_status_and_migrate_take_a_url(url, cli):
    code, out, err = cli("migrate", "--db", url)
    assert (code, err) == (0, "")
    assert out.startswith("postgresql://extcdr:***@") and out.endswith(
        f": schema {schema.LATEST}\n")
    code, out, err = cli("status", "--db", url, "--format", "json")
    assert (code, err) == (0, "")
    assert '"calls": 0' in out and '"legs": 0' in out and '"size_bytes": ' in out


def test_a_second_daemon_on_a_postgresql_mirror_is_refused_in_one_line_without_the_password(
        url, cli):
    """One daemon per central history (a session advisory lock): a second one says so in one
    line, never leaking the password."""
    with CentralLock(url):
        code, _, err = cli("daemon", "--db", url, "--cdr-db", "/nonexistent/cdr.db")
    assert code == 2 and err.count("\n") == 1, err
    assert "another extcdr daemon is running" in err and ":***@" in err
    assert password(url) not in err
