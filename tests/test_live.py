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

from daemon import demo
from daemon.amiemu import AmiEmulator, Faults
from tests.conftest import ROOT
from tests.mirror import dump, sync_once

SEED = 11


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def mirrored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM call").fetchone()[0]
    except sqlite3.Error:
        return -1


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
            [sys.executable, "-m", "daemon.cli", "daemon", "--config", str(config),
             "--cdr-db", str(self.cdr), "--pbx-db", str(root / "mikopbx.db"),
             "--db", str(self.db), "--set", "sync.poll_interval=600"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: mirrored(self.db) == 0, 15), "daemon did not start"

    def play(self, count: int) -> None:
        kinds = list(demo.SCENARIO_WEIGHTS)
        for _ in range(count):
            legs = self.pbx.call_legs(self.rng.choice(kinds), time.time() - 600)
            self.emulator.play_call(legs, speed=0).result(10)
            self.calls += 1

    def settled(self, timeout=15) -> bool:
        return wait_for(lambda: mirrored(self.db) == self.calls, timeout)

    def close(self) -> str:
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(10)
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
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "daemon", "--db",
                           str(tmp_path / "m.db"), "--set", "ami.secret=hunter2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "settings file" in done.stderr
    assert not (tmp_path / "m.db").exists()
