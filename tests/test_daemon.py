"""`extcdr daemon`: the loop of one step, triggers, faults, signals, the lock, reloads."""
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from daemon.resident import Daemon
from mirror.settings import load
from tests.conftest import ROOT, wait_for
from tests.mirror import append_rows, call_count, dump, pbx_rows, sync_once


@pytest.fixture
def pbx(demo_pbx, tmp_path):
    """An empty PBX history beside the demo's config DB, and the demo's rows to feed it."""
    cols, rows = pbx_rows(demo_pbx / "cdr.db")
    append_rows(tmp_path / "cdr.db", cols, [])
    return {"cdr": tmp_path / "cdr.db", "config": demo_pbx / "mikopbx.db", "cols": cols,
            "rows": rows, "db": tmp_path / "module.db"}


def settings_for(pbx, **extra):
    overrides = {"pbx.cdr_db": pbx["cdr"], "pbx.config_db": pbx["config"],
                 "module.db": pbx["db"], "ami.enabled": "false", "sync.poll_interval": "30",
                 "sync.debounce": "0.05", **extra}
    return load(None, overrides)


def test_triggers_are_debounced_and_polls_are_the_safety_net(pbx):
    daemon = Daemon(settings_for(pbx))
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:100])
    assert daemon.step(0.0) == pytest.approx(30.0)         # first pass reads all, then sleeps
    first = call_count(pbx["db"])
    assert first > 0
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][100:200])
    daemon.changed()
    assert daemon.step(1.0) == pytest.approx(0.05)         # gathered, not read yet
    assert call_count(pbx["db"]) == first
    daemon.changed()                                       # a burst still reads once, on time
    daemon.step(1.05)
    second = call_count(pbx["db"])
    assert second > first
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][200:300])
    daemon.step(29.0)                                      # no trigger: nothing before the poll
    assert call_count(pbx["db"]) == second
    daemon.step(30.0)
    assert call_count(pbx["db"]) > second


def test_refresh_reclassifies_a_call_the_pbx_rewrote(pbx):
    daemon = Daemon(settings_for(pbx))
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"])
    daemon.step(0.0)
    with sqlite3.connect(pbx["cdr"]) as conn:
        linkedid, row_id = conn.execute(
            "SELECT linkedid, id FROM cdr_general WHERE billsec > 5 AND is_app = '' "
            "ORDER BY id LIMIT 1").fetchone()
        conn.execute("UPDATE cdr_general SET recordingfile = '/m/rewritten.mp3' WHERE id = ?",
                     (row_id,))
    daemon.refresh(linkedid)
    daemon.step(1.0)
    daemon.step(1.1)
    with sqlite3.connect(pbx["db"]) as conn:
        recordings = conn.execute("SELECT recordings FROM call WHERE linkedid = ?",
                                  (linkedid,)).fetchone()[0]
    assert "rewritten.mp3" in recordings


def test_pbx_faults_are_logged_once_and_survived(pbx, caplog, tmp_path):
    caplog.set_level(logging.INFO, "extcdr")
    daemon = Daemon(settings_for(pbx))
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:500])
    daemon.step(0.0)
    for leftover in pbx["cdr"].parent.glob("cdr.db*"):
        leftover.unlink()                                   # the PBX file disappears
    for now in (30.0, 60.0, 90.0):
        daemon.step(now)
    assert sum("unreadable" in r.message for r in caplog.records) == 1
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"])       # ... and comes back, recreated
    daemon.step(120.0)
    assert any("back to normal" in r.message for r in caplog.records)
    clean = tmp_path / "clean.db"
    sync_once(pbx["cdr"], pbx["config"], clean)
    assert dump(pbx["db"]) == dump(clean)


def test_module_db_full_loses_nothing(pbx, caplog, tmp_path):
    """Disk full, simulated with SQLite's page limit on the daemon's own connection."""
    caplog.set_level(logging.WARNING, "extcdr")
    daemon = Daemon(settings_for(pbx))
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:300])
    daemon.step(0.0)
    before = dump(pbx["db"])
    pages = daemon.db.execute_sql("PRAGMA page_count").fetchone()[0]
    daemon.db.execute_sql(f"PRAGMA max_page_count = {pages}")
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][300:])
    daemon.changed()
    daemon.step(1.0)
    daemon.step(1.1)
    assert any("module DB not written" in r.message for r in caplog.records)
    assert dump(pbx["db"]) == before                        # the failed batch left no trace
    daemon.db.execute_sql("PRAGMA max_page_count = 1073741823")
    daemon.step(7.0)                                        # the retry
    clean = tmp_path / "clean.db"
    sync_once(pbx["cdr"], pbx["config"], clean)
    assert dump(pbx["db"]) == dump(clean)


def start_daemon(pbx, *extra, config=None):
    args = [sys.executable, "-m", "cli", "daemon", "--cdr-db", pbx["cdr"],
            "--pbx-db", pbx["config"], "--db", pbx["db"], "--set", "ami.enabled=false",
            *extra]
    if config:
        args += ["--config", config]
    return subprocess.Popen([str(a) for a in args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def seconds_to_notice(pbx, write) -> float:
    """How long a daemon that polls every ten minutes takes to mirror what `write()` adds to
    the PBX's history once its first pass is over."""
    proc = start_daemon(pbx, "--set", "sync.poll_interval=600")
    try:
        assert wait_for(lambda: call_count(pbx["db"]) == 0, 10)    # started, nothing to read
        time.sleep(0.5)                                             # first pass over
        write()
        started = time.monotonic()
        assert wait_for(lambda: call_count(pbx["db"]), 5)
        return time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def test_a_new_call_shows_up_within_a_second_without_polling(pbx):
    assert seconds_to_notice(
        pbx, lambda: append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:50])) < 1.0


def test_a_pbx_history_without_wal_wakes_the_daemon_too(pbx):
    """MikoPBX 2024.1 may keep cdr.db in rollback-journal mode: no `-wal` file ever changes,
    and a commit rewrites cdr.db itself, which wakes the daemon just as fast."""
    with closing(sqlite3.connect(pbx["cdr"])) as conn:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"

    def write():
        with closing(sqlite3.connect(pbx["cdr"])) as conn, conn:
            conn.executemany(f"INSERT INTO cdr_general ({', '.join(pbx['cols'])}) "
                             f"VALUES ({', '.join('?' * len(pbx['cols']))})", pbx["rows"][:50])
    assert seconds_to_notice(pbx, write) < 1.0
    assert not Path(f"{pbx['cdr']}-wal").exists()
    with closing(sqlite3.connect(pbx["cdr"])) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_sigterm_exits_within_five_seconds_and_a_second_daemon_is_refused(pbx):
    proc = start_daemon(pbx)
    try:
        assert wait_for(lambda: call_count(pbx["db"]) is not None, 10)
        second = subprocess.run([sys.executable, "-m", "cli", "daemon", "--cdr-db",
                                 str(pbx["cdr"]), "--db", str(pbx["db"])],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        assert f"pid {proc.pid}" in second.stderr and "already" not in second.stdout
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - started < 5
    assert "stopped" in proc.stderr.read()


def test_sighup_reloads_and_a_bad_file_keeps_the_running_settings(pbx, tmp_path):
    config = tmp_path / "extcdr.toml"
    config.write_text("[calls]\ncallback_window = 3600\n")
    proc = start_daemon(pbx, config=config)
    try:
        assert wait_for(lambda: call_count(pbx["db"]) is not None, 10)
        time.sleep(0.3)
        config.write_text("[calls]\ncallback_window = 7200\n")   # the watcher notices
        time.sleep(0.5)
        config.write_text("[calls]\ncallback_window = 'soon'\n")
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
    log = proc.stderr.read()
    assert "settings reloaded" in log and "callback_window=7200" in log
    assert "settings not reloaded" in log and "calls.callback_window" in log


def test_file_watcher_fires_on_pbx_writes_not_on_our_own_reads(pbx):
    from daemon import watch
    from pbx.cdr import CdrSource
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:10])
    with CdrSource(pbx["cdr"]).reading() as reader:   # (re)creates the -wal the writer removed
        reader.max_id()
    fired = []
    observer = watch.start(pbx["cdr"], None, on_history=lambda: fired.append(1),
                           on_settings=lambda: None)
    try:
        time.sleep(0.3)
        for _ in range(5):                      # the daemon reading: inotify sees "modified"
            with CdrSource(pbx["cdr"]).reading() as reader:
                reader.max_id()
        time.sleep(0.5)
        assert fired == []
        append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][10:20])    # the PBX writing
        assert wait_for(lambda: fired, 3)
    finally:
        observer.stop()
        observer.join(2)


def test_pbx_db_locked_by_a_writer_is_waited_out(pbx, caplog, tmp_path):
    """A writer holding the history DB (rollback-journal lock) only delays the mirror."""
    caplog.set_level(logging.INFO, "extcdr")
    daemon = Daemon(settings_for(pbx))
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:200])
    daemon.step(0.0)
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][200:])
    locker = sqlite3.connect(pbx["cdr"], isolation_level=None)
    locker.execute("PRAGMA journal_mode=DELETE")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        daemon.changed()
        for now in (1.0, 2.5, 4.0):                 # each attempt waits out the busy timeout
            daemon.step(now)
        assert daemon.sync is not None
        assert sum("locked" in r.message for r in caplog.records) == 1
    finally:
        locker.execute("COMMIT")
        locker.close()
    daemon.step(6.0)
    assert any("back to normal" in r.message for r in caplog.records)
    clean = tmp_path / "clean.db"
    sync_once(pbx["cdr"], pbx["config"], clean)
    assert dump(pbx["db"]) == dump(clean)


def test_without_a_history_file_the_loop_sleeps(pbx):
    """AMI `Cdr` events as the only source: nothing to poll, so no busy loop."""
    daemon = Daemon(settings_for(pbx, **{"ami.cdr_events": "true"}))
    assert daemon.step(0.0) == pytest.approx(30.0)
    assert daemon.step(0.5) == pytest.approx(29.5)
