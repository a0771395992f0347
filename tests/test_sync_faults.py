"""A faulty PBX source or a killed sync never crashes, corrupts or silently empties the mirror.

What the writer does (kill -9, a restored backup's resync, rewritten rows re-merged) runs on
both engines (conftest's `engine`); a faulty or pruned PBX file (locked, missing, garbage,
retention: the PBX's cdr.db is always SQLite) is the reader's business, the same for either,
and runs on an SQLite mirror."""
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from mirror import bulk
from mirror.database import open_module_db
from pbxmodule.pids import alive
from tests.conftest import ROOT, run_extcdr, sqlite_only
from tests.mirror import (append_rows, committed_cursor, committed_state, damage, dump, pbx_rows,
                          query, schema, sync_once)


def sync_args(pbx_dir, db, *extra):
    return ["sync", "--cdr-db", pbx_dir / "cdr.db", "--pbx-db", pbx_dir / "mikopbx.db",
            "--db", db, "--once", *extra]


@pytest.fixture
def pbx_copy(demo_pbx, tmp_path):
    """A private copy of the demo PBX that a test may damage."""
    target = tmp_path / "pbx"
    shutil.copytree(demo_pbx, target, ignore=shutil.ignore_patterns("monitor"))
    return target


# The kill test's sizes per engine: the demo's calls, the kills, how many of them must land at
# distinct cursors. On PostgreSQL a smaller history: its batches take longer (see
# test_sync_properties), so fewer kills fit before the backfill ends.
KILLS = {"sqlite": (20_000, 12, 10), "postgresql": (5_000, 6, 4)}


def test_kill_9_at_random_moments_then_restart_gives_the_clean_mirror(engine, mirror_target,
                                                                      tmp_path):
    """A sync killed at random moments mid-backfill (the SQLite file's journal, or the server,
    rolls its transaction back), then run to the end: an SQLite one-run sync's mirror."""
    from standin import demo
    calls, kills, distinct = KILLS[engine]
    pbx = tmp_path / "pbx"
    demo.generate(pbx, calls, seed=99, recordings_limit=0)

    def command(db):
        return [sys.executable, "-m", "cli",
                *map(str, sync_args(pbx, db, "--batch-rows", "200"))]

    clean = tmp_path / "clean.db"
    subprocess.run(command(clean), cwd=ROOT, check=True)
    db = mirror_target
    rng = random.Random(20261123)
    cursors, loading = [], []
    while len(cursors) < kills:
        before = committed_cursor(db)
        proc = subprocess.Popen(command(db), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        # Once this run has committed something, kill it a random moment later: mid-batch.
        while proc.poll() is None and committed_cursor(db) == before:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            break                                      # it finished: the backfill is done
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cursors.append(committed_cursor(db))
        loading.append(committed_state(db, bulk.LOADING) is not None)
        # The mirror is sound after every kill: a valid database, its counters exact.
        assert damage(db) == []
    assert len(set(cursors)) >= distinct, f"only {len(set(cursors))} kills landed mid-backfill"
    if engine == "sqlite":
        # The first sync into an empty SQLite mirror loads in bulk: the kills interrupted it.
        assert sum(loading) >= 5, f"only {sum(loading)} kills landed in the bulk load"
    assert run_extcdr(*sync_args(pbx, db)).returncode == 0
    assert dump(db) == dump(clean)
    if engine == "sqlite":
        open_module_db(tmp_path / "empty.db").close()     # built: the schema of a fresh mirror
        assert schema(db) == schema(tmp_path / "empty.db") == schema(clean)
    # The killed syncs' worker processes died with them (they would hold files open forever).
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-f", str(db)], capture_output=True, text=True)
    assert leftovers.stdout == "", "worker processes outlived their killed sync"
    # ... and their scratch files were swept by the next sync (a running sync's are its own).
    orphans = [path for path in Path(tempfile.gettempdir()).glob("extcdr-backfill-*")
               if not alive(int(path.name.split("-")[2]))]
    assert not orphans, "scratch left over"


def test_a_bulk_load_whose_build_fails_is_built_by_the_next_sync(demo_pbx, demo_reference,
                                                                 tmp_path, monkeypatch):
    """The build at the end of a bulk load is one transaction: failing at its last statement
    (as a kill would) it leaves the load as it was, resumed and built by the next sync."""
    db, pbx = tmp_path / "module.db", demo_pbx / "mikopbx.db"
    real_run = bulk.run

    def failing_at_the_triggers(database, sql, params=()):
        if sql.startswith("CREATE TRIGGER"):
            raise sqlite3.OperationalError("disk I/O error")
        return real_run(database, sql, params)

    monkeypatch.setattr(bulk, "run", failing_at_the_triggers)
    with pytest.raises(sqlite3.OperationalError):
        sync_once(demo_pbx / "cdr.db", pbx, db, batch_rows=500, range_rows=500)
    assert committed_state(db, bulk.LOADING) == "1"
    indexes = sqlite3.connect(db).execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'call_status'").fetchone()[0]
    assert indexes == 0                      # nothing of the build was kept
    monkeypatch.setattr(bulk, "run", real_run)
    sync_once(demo_pbx / "cdr.db", pbx, db, batch_rows=500, range_rows=500)
    assert committed_state(db, bulk.LOADING) is None
    assert dump(db) == demo_reference["dump"]
    open_module_db(tmp_path / "empty.db").close()
    assert schema(db) == schema(tmp_path / "empty.db")


def test_pbx_db_locked_by_a_writer_is_waited_for(pbx_copy, tmp_path, demo_reference):
    cdr = pbx_copy / "cdr.db"
    db = tmp_path / "module.db"
    locker = sqlite3.connect(cdr, isolation_level=None, check_same_thread=False)
    locker.execute("PRAGMA journal_mode=DELETE")      # a writer's lock blocks readers here
    locker.execute("BEGIN EXCLUSIVE")
    releaser = threading.Timer(3.0, lambda: locker.execute("COMMIT"))
    releaser.start()
    started = time.monotonic()
    done = run_extcdr(*sync_args(pbx_copy, db, "--wait", "30"))
    releaser.join()
    locker.close()
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 2.5
    assert dump(db) == demo_reference["dump"]


def test_pbx_db_locked_too_long_fails_clearly_and_keeps_the_mirror(pbx_copy, tmp_path):
    db = tmp_path / "module.db"
    cols, rows = pbx_rows(pbx_copy / "cdr.db")
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    before = dump(db)
    locker = sqlite3.connect(pbx_copy / "cdr.db", isolation_level=None)
    locker.execute("PRAGMA journal_mode=DELETE")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        done = run_extcdr(*sync_args(pbx_copy, db, "--wait", "1"))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert done.returncode != 0
    assert "locked" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert dump(db) == before


def test_missing_pbx_db_keeps_the_mirror(pbx_copy, tmp_path):
    db = tmp_path / "module.db"
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    before = dump(db)
    (pbx_copy / "cdr.db").rename(pbx_copy / "cdr.db.moved")
    done = run_extcdr(*sync_args(pbx_copy, db))
    assert done.returncode != 0 and "no such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert dump(db) == before


def test_pbx_db_replaced_by_garbage_keeps_the_mirror(pbx_copy, tmp_path):
    db = tmp_path / "module.db"
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    before = dump(db)
    for leftover in pbx_copy.glob("cdr.db*"):
        leftover.unlink()
    (pbx_copy / "cdr.db").write_bytes(os.urandom(64 * 1024))
    done = run_extcdr(*sync_args(pbx_copy, db))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert dump(db) == before


def test_restored_backup_is_detected_and_nothing_is_lost(pbx_copy, mirror_target,
                                                        demo_reference):
    """A backup with the older half of the rows replaces the file; new calls arrive after it."""
    cols, rows = pbx_rows(pbx_copy / "cdr.db")
    half = len(rows) // 2
    db = mirror_target
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    for leftover in pbx_copy.glob("cdr.db*"):
        leftover.unlink()
    append_rows(pbx_copy / "cdr.db", cols, rows[:half])            # the restored backup
    done = run_extcdr(*sync_args(pbx_copy, db))
    assert done.returncode == 0
    assert "replaced" in done.stderr
    assert dump(db) == demo_reference["dump"]                    # nothing silently removed
    append_rows(pbx_copy / "cdr.db", cols, rows[half:])            # the PBX goes on writing
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    assert dump(db) == demo_reference["dump"]
    status = run_extcdr("status", "--db", db, "--format", "json")
    assert '"resyncs": 1' in status.stdout


def test_retention_deleting_old_rows_loses_nothing(pbx_copy, tmp_path, demo_reference):
    cols, rows = pbx_rows(pbx_copy / "cdr.db")
    cdr = pbx_copy / "cdr.db"
    for leftover in pbx_copy.glob("cdr.db*"):
        leftover.unlink()
    two_thirds = len(rows) * 2 // 3
    append_rows(cdr, cols, rows[:two_thirds])
    db = tmp_path / "module.db"
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    with sqlite3.connect(cdr) as conn:                      # the PBX's retention cleanup
        conn.execute("DELETE FROM cdr_general WHERE id <= ?", (len(rows) // 3,))
    append_rows(cdr, cols, rows[two_thirds:])
    done = run_extcdr(*sync_args(pbx_copy, db))
    assert done.returncode == 0 and "replaced" not in done.stderr
    assert dump(db) == demo_reference["dump"]


def test_rows_updated_after_insert_are_picked_up(pbx_copy, mirror_target):
    """The PBX rewrites rows it already moved (e.g. a recording file name)."""
    db = mirror_target
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    cdr = pbx_copy / "cdr.db"
    with sqlite3.connect(cdr) as conn:
        row_id, linkedid = conn.execute(
            "SELECT id, linkedid FROM cdr_general WHERE billsec > 5 AND is_app = '' "
            "ORDER BY id DESC LIMIT 1").fetchone()
        conn.execute("UPDATE cdr_general SET recordingfile = ? WHERE id = ?",
                     ("/storage/usbdisk1/mikopbx/astspool/monitor/rewritten.mp3", row_id))
    assert run_extcdr(*sync_args(pbx_copy, db)).returncode == 0
    [(recordings,)] = query(db, "SELECT recordings FROM call WHERE linkedid = ?", (linkedid,))
    assert "rewritten.mp3" in recordings


@sqlite_only("a module.db file of garbage (PostgreSQL's foreign database: test_pg_schema)")
def test_module_db_that_is_not_a_mirror_is_refused(pbx_copy, mirror_target):
    db = mirror_target
    db.write_bytes(b"not a database" * 1000)
    done = run_extcdr(*sync_args(pbx_copy, db))
    assert done.returncode != 0 and "module.db" in done.stderr
    assert db.read_bytes() == b"not a database" * 1000
