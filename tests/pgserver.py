"""A real PostgreSQL server for tests: the stand-in's private cluster (standin.pgserver) made in a
temp folder, removed after, and run for speed over durability.

A watchdog process waits for the test session's end: when the session ends without tearing the
cluster down (`kill -9`, SIGTERM), it stops the server at once and removes the folder, so no
orphan `postgres` is left behind. Used by the `postgresql_url` fixture in tests/conftest.py."""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from standin import pgserver
from standin.pgserver import PgServer

INSTALL_HINT = f"./bin/test installs it ({pgserver.INSTALL_HINT})"
# Speed over durability: the cluster lives as long as one test session.
SERVER_OPTIONS = ("-c", "fsync=off", "-c", "synchronous_commit=off",
                  "-c", "full_page_writes=off")


def server_binaries() -> tuple[str, str]:
    """`initdb` and `postgres` of one installation. Missing: a failure under CI=true, else a
    skip (tests.stack.missing)."""
    try:
        return pgserver.server_binaries()
    except pgserver.NotInstalled as exc:
        from tests.stack import missing
        missing(exc.what, INSTALL_HINT)


def driver() -> None:
    """psycopg2, which peewee's PostgresqlDatabase uses: missing, as a missing binary."""
    if pgserver.driver_missing():
        from tests.stack import missing
        missing("psycopg2 (PostgreSQL's driver)", "./bin/test installs it (setup.cfg)")


@contextmanager
def running() -> Iterator[PgServer]:
    """A fresh cluster serving database `extcdr` to role `extcdr` (its owner, not a
    superuser); stopped and removed on exit."""
    driver()
    server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="extcdr-pg-"))
    watchdog = subprocess.Popen([sys.executable, "-m", "tests.pgserver", str(os.getpid()),
                                 str(folder)], cwd=Path(__file__).resolve().parent.parent,
                                stdin=subprocess.DEVNULL)
    try:
        with pgserver.running(folder, options=SERVER_OPTIONS) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        watchdog.terminate()
        watchdog.wait(10)


def watch(session: int, folder: str) -> None:
    """Wait for the test session's process to end; then stop the cluster's postmaster if it
    still runs and remove the folder. Terminated by a session that tears the cluster down
    itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C: the session tears down first
    try:
        select.select([os.pidfd_open(session)], [], [])
    except ProcessLookupError:
        pass                                          # already gone
    pidfile = Path(folder) / "data" / "postmaster.pid"
    try:
        server = os.pidfd_open(int(pidfile.read_text().split()[0]))
    except (OSError, ValueError, IndexError):         # never started, or stopped
        server = None
    if server is not None:
        for how in (signal.SIGQUIT, signal.SIGKILL):  # immediate shutdown: nothing to keep
            try:
                signal.pidfd_send_signal(server, how)
            except ProcessLookupError:
                break
            if select.select([server], [], [], 10)[0]:
                break
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
