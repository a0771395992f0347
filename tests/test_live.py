"""The daemon following a live PBX: the AMI emulator plays calls into cdr.db over real TCP,
the daemon mirrors them; under every AMI fault it keeps running and the mirror ends exactly
equal to a clean `sync --once` of the same cdr.db."""
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from standin import demo
from standin.amiemu import AmiEmulator, Faults
from tests.conftest import ROOT, wait_for
from tests.mirror import call_count, dump, sync_once

SEED = 11


class LivePbx:
    """An empty demo PBX, its AMI emulator and a daemon following both."""

    def __init__(self, root: Path, faults: Faults | None = None):
        self.root = root
        demo.generate(root, 0, SEED, recordings_limit=0)
        self.cdr = root / "cdr.db"
        self.db = root / "module.db"
        self.emulator = AmiEmulator(cdr_db=self.cdr, faults=faults or Faults())
        host, port = self.emulator.start()
        self.pbx = demo.DemoPbx(SEED, "Europe/Moscow")
        self.rng = random.Random(SEED)
        self.calls = 0
        config = root / "extcdr.toml"   # the AMI secret never goes on a command line
        config.write_text(f'[ami]\nhost = "{host}"\nport = {port}\nsecret = "extcdr-demo"\n')
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "cli", "daemon", "--config", str(config),
             "--cdr-db", str(self.cdr), "--pbx-db", str(root / "mikopbx.db"),
             "--db", str(self.db), "--set", "sync.poll_interval=600"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: call_count(self.db) == 0, 15), "daemon did not start"

    def play(self, count: int) -> None:
        kinds = list(demo.SCENARIO_WEIGHTS)
        for _ in range(count):
            legs = self.pbx.call_legs(self.rng.choice(kinds), time.time() - 600)
            self.emulator.play_call(legs, speed=0).result(10)
            self.calls += 1

    def settled(self, timeout=15) -> bool:
        return wait_for(lambda: call_count(self.db) == self.calls, timeout)

    def close(self) -> str:
        """Stop the daemon as the PBX does (SIGTERM); its log. One that does not stop within
        15 s fails the test with its threads' stacks (SIGUSR1 writes them to its log)."""
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(15)
        except subprocess.TimeoutExpired:
            self.daemon.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.daemon.kill()
            pytest.fail("the daemon did not stop on SIGTERM within 15 s:\n"
                        + self.daemon.communicate()[1][-8000:])
        finally:
            self.emulator.stop()
        return self.daemon.stderr.read()


@pytest.fixture
def live(tmp_path):
    pbxs = []

    def start(faults=None):
        pbxs.append(LivePbx(tmp_path / f"pbx{len(pbxs)}", faults))
        return pbxs[-1]
    yield start
    for pbx in pbxs:
        if pbx.daemon.poll() is None:
            pbx.close()


def assert_exact(pbx: LivePbx, tmp_path: Path) -> None:
    clean = tmp_path / "clean.db"
    sync_once(pbx.cdr, pbx.root / "mikopbx.db", clean)
    assert dump(pbx.db) == dump(clean)


def test_calls_arrive_live_over_ami(live, tmp_path):
    pbx = live()
    assert wait_for(lambda: pbx.emulator.listeners() == 1, 10), "daemon never logged in"
    pbx.play(30)
    assert pbx.settled()
    assert pbx.daemon.poll() is None
    assert_exact(pbx, tmp_path)


@pytest.mark.parametrize("fault", ["drop", "stall", "garbage", "huge_line"])
def test_ami_faults_are_survived(live, tmp_path, fault):
    pbx = live()
    assert wait_for(lambda: pbx.emulator.listeners() == 1, 10)
    pbx.play(10)
    {"drop": lambda: pbx.emulator.drop_connections(),
     "stall": lambda: pbx.emulator.stall(3),
     "garbage": lambda: pbx.emulator.send_garbage(),
     "huge_line": lambda: pbx.emulator.send_huge_line()}[fault]()
    pbx.play(10)
    assert pbx.settled(20)
    assert pbx.daemon.poll() is None
    if fault == "drop":                      # it came back: logged in a second time
        assert wait_for(lambda: pbx.emulator.stats.logins_ok >= 2, 15)
    pbx.play(5)
    assert pbx.settled(20)
    log = pbx.close()
    assert "Traceback" not in log
    assert_exact(pbx, tmp_path)


def test_refused_login_is_logged_once_and_the_file_watcher_still_mirrors(live, tmp_path):
    pbx = live(Faults(refuse_login=True))
    pbx.play(10)
    assert pbx.settled(20)                  # the file watcher covers for AMI
    time.sleep(2)
    pbx.emulator.faults.refuse_login = False
    log = pbx.close()
    assert sum("login" in line.lower() and "WARNING" in line for line in log.splitlines()) == 1
    assert "extcdr-demo" not in log         # the secret is never logged
    assert_exact(pbx, tmp_path)


def test_secrets_are_refused_on_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cli", "daemon", "--db",
                           str(tmp_path / "m.db"), "--set", "ami.secret=hunter2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "settings file" in done.stderr
    assert not (tmp_path / "m.db").exists()


def test_stock_asterisk_cdr_events_are_a_leg_source(tmp_path):
    """No MikoPBX cdr.db: the daemon builds legs from AMI `Cdr` events (cdr_manager)."""
    transcript = ROOT / "tests" / "transcripts" / "asterisk-cdr-manager.txt"
    with AmiEmulator() as emulator:
        host, port = emulator.address
        config = tmp_path / "extcdr.toml"
        config.write_text(f'[ami]\nhost = "{host}"\nport = {port}\nsecret = "extcdr-demo"\n'
                          f'cdr_events = true\n[pbx]\ntimezone = "Europe/Berlin"\n')
        db = tmp_path / "module.db"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "cli", "daemon", "--config", str(config),
             "--cdr-db", str(tmp_path / "no-cdr.db"), "--db", str(db)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            emulator.wait_for_listeners(1, timeout=15)
            emulator.replay(transcript, speed=0).result(10)
            assert wait_for(lambda: call_count(db) == 2, 10)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT direction, status, src FROM call ORDER BY start_ms").fetchall()
    assert [r[:2] for r in rows] == [("outgoing", "answered"), ("outgoing", "not_reached")]
    assert all(src == "202" for *_, src in rows)


def test_a_peer_that_closes_before_the_banner_is_retried(live, tmp_path):
    pbx = live(Faults(close_before_banner=True))
    pbx.play(5)
    time.sleep(1.5)
    pbx.emulator.faults.close_before_banner = False
    assert wait_for(lambda: pbx.emulator.listeners() == 1, 20), "never reconnected"
    pbx.play(5)
    assert pbx.settled(20)
    assert "Traceback" not in pbx.close()
    assert_exact(pbx, tmp_path)


def test_history_db_locked_for_30_seconds_delays_but_loses_nothing(live, tmp_path):
    pbx = live()
    assert wait_for(lambda: pbx.emulator.listeners() == 1, 10)
    pbx.play(5)
    assert pbx.settled()
    locker = sqlite3.connect(pbx.cdr, isolation_level=None, timeout=60)
    locker.execute("BEGIN EXCLUSIVE")                # a writer holds the PBX DB for 30 s
    held = time.monotonic()
    kinds = list(demo.SCENARIO_WEIGHTS)
    pending = [pbx.emulator.play_call(pbx.pbx.call_legs(pbx.rng.choice(kinds),
                                                        time.time() - 600), speed=0)
               for _ in range(5)]                    # the PBX's own writes queue up behind it
    pbx.calls += len(pending)
    time.sleep(max(0.0, 30 - (time.monotonic() - held)))
    assert pbx.daemon.poll() is None
    locker.execute("COMMIT")
    locker.close()
    for future in pending:
        future.result(60)
    assert pbx.settled(20)
    assert "Traceback" not in pbx.close()
    assert_exact(pbx, tmp_path)


def test_a_call_under_way_is_in_progress_until_its_last_leg_moves(live, tmp_path):
    """The daemon follows a call as the PBX writes it: while a leg of it is in `cdr` it is in
    progress (shown with its state, never in the finished calls, even after its IVR leg has
    moved); when the last leg has moved it is a finished call and no longer in progress."""
    pbx = live()
    assert wait_for(lambda: pbx.emulator.listeners() == 1, 10)
    legs = pbx.pbx.call_legs("ivr_queue_answered", time.time())
    linkedid = legs[0].row["linkedid"]
    first_moved = min(leg.moved_ms for leg in legs)
    last_moved = max(leg.moved_ms for leg in legs)
    assert last_moved - first_moved > 10_000               # the IVR leg moves long before
    playing = pbx.emulator.play_call(legs, speed=(last_moved - first_moved) / 6000)
    seen = {}

    def look() -> bool:
        with sqlite3.connect(f"file:{pbx.db}?mode=ro", uri=True) as conn:
            live_row = conn.execute("SELECT state FROM live_call WHERE linkedid = ?",
                                    (linkedid,)).fetchone()
            finished = conn.execute("SELECT status FROM call WHERE linkedid = ?",
                                    (linkedid,)).fetchone()
            moved = conn.execute("SELECT count(*) FROM leg WHERE linkedid = ?",
                                 (linkedid,)).fetchone()[0]
        if live_row:
            seen.setdefault(live_row[0], moved)
            assert finished is None, f"finished as {finished[0]} while in progress"
        return playing.done()

    assert wait_for(look, 30)
    playing.result()
    assert {"ivr", "talking"} <= seen.keys(), seen
    assert max(seen.values()) >= 1                         # in progress with a leg moved
    pbx.calls += 1
    assert pbx.settled()
    with sqlite3.connect(pbx.db) as conn:
        assert conn.execute("SELECT status FROM call WHERE linkedid = ?",
                            (linkedid,)).fetchone() == ("answered",)
        assert wait_for(lambda: conn.execute("SELECT count(*) FROM live_call").fetchone()[0] == 0)
    assert "Traceback" not in pbx.close()
    assert_exact(pbx, tmp_path)
