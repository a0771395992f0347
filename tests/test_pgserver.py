"""The tests' PostgreSQL server (tests.pgserver, the `postgresql_url` fixture): peewee talks to
it through the URL as the module's role, pg_trgm and declarative partitioning — what the mirror
on PostgreSQL (issue 22) builds on — work there, and nothing of it outlives the session, even a
session killed with `kill -9`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from peewee import BigIntegerField, Model, PostgresqlDatabase, TextField
from playhouse.db_url import parse

from standin import pgserver as kept
from tests import pgserver
from tests.conftest import ROOT, wait_for


@pytest.fixture
def db(postgresql_url):
    """A connection to the session's database; what a test creates goes with it."""
    assert postgresql_url.startswith("postgresql://extcdr:")
    database = PostgresqlDatabase(**parse(postgresql_url))
    database.connect()
    database.execute_sql("CREATE SCHEMA scratch")
    database.execute_sql("SET search_path TO scratch, public")
    yield database
    database.rollback()
    database.execute_sql("DROP SCHEMA scratch CASCADE")
    database.close()


class Call(Model):
    linkedid = TextField(unique=True)
    start_ms = BigIntegerField()      # milliseconds outgrow PostgreSQL's 32-bit `integer`
    src = TextField()


def test_peewee_writes_and_reads_through_the_url(db):
    with db.bind_ctx([Call]):
        db.create_tables([Call])
        with db.atomic():
            Call.insert_many([("1700000000.1", 1_700_000_000_000, "79161234567"),
                              ("1700000000.2", 1_700_000_060_000, "201")],
                             fields=[Call.linkedid, Call.start_ms, Call.src]).execute()
        assert [c.src for c in Call.select().order_by(Call.start_ms)] == ["79161234567", "201"]
        # An upsert, as the writer's merges will do them on PostgreSQL.
        Call.insert(linkedid="1700000000.2", start_ms=1, src="202").on_conflict(
            conflict_target=[Call.linkedid], update={Call.src: "202"}).execute()
        assert Call.get(Call.linkedid == "1700000000.2").src == "202"
        assert Call.select().count() == 2
    # The role owns its database, not the server.
    assert db.execute_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                          ).fetchone() == (False,)


def test_trigram_number_and_name_search(db):
    """pg_trgm is a trusted extension: the database's owner creates it. Its GIN index serves a
    substring search of numbers and of Cyrillic names alike."""
    db.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    db.execute_sql("CREATE TABLE call_search (id serial PRIMARY KEY, numbers text, names text)")
    db.execute_sql("INSERT INTO call_search (numbers, names) VALUES "
                   "('79161234567 201', 'Иван Петров'), ('74951112233 202', 'Ольга Смирнова'), "
                   "('79031234000 203', 'Mary Jones')")
    db.execute_sql("CREATE INDEX call_search_numbers ON call_search "
                   "USING gin (numbers gin_trgm_ops)")
    db.execute_sql("CREATE INDEX call_search_names ON call_search USING gin (names gin_trgm_ops)")
    db.execute_sql("ANALYZE call_search")
    db.execute_sql("SET enable_seqscan = off")      # three rows: prove the index can answer
    search = "SELECT id FROM call_search WHERE numbers LIKE %s"
    assert sorted(db.execute_sql(search, ("%1234%",)).fetchall()) == [(1,), (3,)]
    plan = " ".join(row[0] for row in db.execute_sql("EXPLAIN " + search, ("%1234%",)))
    assert "call_search_numbers" in plan
    names = "SELECT id FROM call_search WHERE names ILIKE %s"
    assert db.execute_sql(names, ("%петр%",)).fetchall() == [(1,)]
    plan = " ".join(row[0] for row in db.execute_sql("EXPLAIN " + names, ("%петр%",)))
    assert "call_search_names" in plan
    # Letters, not bytes: Cyrillic case folds into the same trigrams (the cluster's ctype).
    assert db.execute_sql("SELECT similarity('ИВАН', 'иван')").fetchone() == (1.0,)


def test_calls_partitioned_by_month(db):
    """Declarative partitioning by month of start_ms: each row lands in its month's table,
    a period's query reads its months only, and a month goes in one statement."""
    db.execute_sql("CREATE TABLE call_part (linkedid text NOT NULL, start_ms bigint NOT NULL, "
                   "PRIMARY KEY (start_ms, linkedid)) PARTITION BY RANGE (start_ms)")
    months = {"2024_10": (1_727_740_800_000, 1_730_419_200_000),    # UTC month bounds
              "2024_11": (1_730_419_200_000, 1_733_011_200_000)}
    for name, (start, end) in months.items():
        db.execute_sql(f"CREATE TABLE call_part_{name} PARTITION OF call_part "
                       f"FOR VALUES FROM ({start}) TO ({end})")
    rows = [("a", 1_728_000_000_000), ("b", 1_730_000_000_000), ("c", 1_731_000_000_000)]
    db.execute_sql("INSERT INTO call_part VALUES (%s, %s), (%s, %s), (%s, %s)",
                   [v for row in rows for v in row])
    placed = db.execute_sql("SELECT linkedid, tableoid::regclass::text FROM call_part "
                            "ORDER BY linkedid").fetchall()
    assert placed == [("a", "call_part_2024_10"), ("b", "call_part_2024_10"),
                      ("c", "call_part_2024_11")]
    plan = " ".join(row[0] for row in db.execute_sql(
        "EXPLAIN SELECT * FROM call_part WHERE start_ms >= %s AND start_ms < %s",
        months["2024_11"]))
    assert "call_part_2024_11" in plan and "call_part_2024_10" not in plan
    with pytest.raises(Exception, match="no partition of relation"):
        with db.atomic():
            db.execute_sql("INSERT INTO call_part VALUES ('d', 1)")
    db.execute_sql("DROP TABLE call_part_2024_10")         # retention: a month at once
    assert db.execute_sql("SELECT linkedid FROM call_part").fetchall() == [("c",)]


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception),
                                         ("", pytest.skip.Exception)])
def test_missing_postgresql_fails_under_ci_else_skips(monkeypatch, ci, outcome):
    """The CI image must have PostgreSQL: there its absence fails the tests that need it."""
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    with pytest.raises(outcome, match="initdb"):
        pgserver.server_binaries()


def test_a_wrong_password_is_refused(postgresql_url):
    params = {**parse(postgresql_url), "password": "wrong"}
    with pytest.raises(Exception, match="password authentication failed"):
        PostgresqlDatabase(**params).connect()


# A session of its own: what the fixture's server is (its postmaster is the parent of the
# test's backend), then a sleep when asked (so that the session can be killed meanwhile).
SESSION = textwrap.dedent("""
    import json, os, time
    from pathlib import Path
    from playhouse.db_url import connect

    def test_server(postgresql_url):
        db = connect(postgresql_url)          # kept open: its backend lives while it does
        backend = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        status = Path(f"/proc/{backend}/status").read_text()
        postmaster = int(status.split("PPid:")[1].split()[0])
        argv = Path(f"/proc/{postmaster}/cmdline").read_bytes().decode().split("\\0")
        seen = {"url": postgresql_url, "postmaster": postmaster,
                "data": argv[argv.index("-D") + 1]}
        db.close()
        Path(os.environ["SEEN"] + ".new").write_text(json.dumps(seen))
        os.replace(os.environ["SEEN"] + ".new", os.environ["SEEN"])
        time.sleep(float(os.environ["SLEEP"]))
""")


def start_session(tmp_path: Path, sleep: float = 0) -> tuple[subprocess.Popen, Path]:
    """pytest in a process of its own, with the suite's fixtures, running SESSION."""
    test = tmp_path / "test_session.py"
    test.write_text(SESSION)
    seen = tmp_path / "seen.json"
    env = {**os.environ, "SEEN": str(seen), "SLEEP": str(sleep)}
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), str(test)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return session, seen


def server_gone(seen: dict) -> bool:
    """Nothing answers on the port, the postmaster is no more, its folder is removed."""
    port = parse(seen["url"])["port"]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        pass
    try:
        alive = b"postgres" in Path(f"/proc/{seen['postmaster']}/cmdline").read_bytes()
    except OSError:
        alive = False
    return not alive and not Path(seen["data"]).parent.exists()


def test_the_server_is_gone_after_the_session(tmp_path):
    session, seen_file = start_session(tmp_path)
    out, _ = session.communicate(timeout=300)
    assert session.returncode == 0, out
    seen = json.loads(seen_file.read_text())
    assert Path(seen["data"]).parent.name.startswith("extcdr-pg-")
    assert server_gone(seen)


def test_a_killed_session_leaves_no_server_behind(tmp_path):
    """`kill -9` of the session: the watchdog stops the server and removes its folder."""
    session, seen_file = start_session(tmp_path, sleep=300)
    assert wait_for(seen_file.exists, timeout=120), session.stdout.read()
    seen = json.loads(seen_file.read_text())
    assert not server_gone(seen)
    session.send_signal(signal.SIGKILL)
    session.wait(10)
    assert wait_for(lambda: server_gone(seen), timeout=30)


def test_a_kept_cluster_serves_the_same_database_again():
    """The demo's server (`extcdr pg-server --dir`) keeps its cluster: the next start serves the
    same database to the same role, what was written there still there."""
    pgserver.driver()
    pgserver.server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="extcdr-pg-kept-"))
    folder.chmod(0o755)                       # reached by the `postgres` user when root
    try:
        with kept.running(folder / "postgres", options=pgserver.SERVER_OPTIONS) as first:
            db = PostgresqlDatabase(**parse(first.url))
            db.execute_sql("CREATE TABLE kept (note text)")
            db.execute_sql("INSERT INTO kept VALUES ('before the restart')")
            db.close()
        assert not server_alive(first.pid, folder)
        with kept.running(folder / "postgres", options=pgserver.SERVER_OPTIONS) as second:
            assert parse(second.url)["password"] == parse(first.url)["password"]
            db = PostgresqlDatabase(**parse(second.url))
            assert db.execute_sql("SELECT note FROM kept").fetchall() == [("before the restart",)]
            db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: the server runs as `postgres`")
def test_a_folder_the_server_user_cannot_reach_is_one_line(tmp_path):
    """As root the server runs as `postgres`; a folder it cannot reach (pytest's, under a
    folder closed to others) is refused in one line, exit 2, no server started."""
    pgserver.server_binaries()
    done = subprocess.run([sys.executable, "-m", "standin", "pg-server", "--dir",
                           str(tmp_path / "postgres")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.startswith("extcdr: PostgreSQL runs as the user postgres, who cannot "
                                  f"reach {tmp_path / 'postgres'}"), done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "postgres" / "data").exists()


def server_alive(pid: int, folder: Path) -> bool:
    """The postmaster `pid` of the cluster in `folder` still runs."""
    try:
        return str(folder).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
