"""A real PostgreSQL server for tests: a private cluster (Debian's `postgresql`) made by `initdb`
in a temp folder, run by an unprivileged user (the server refuses root) on a free loopback
port with its socket in that folder, a database and a role with a password, removed after.

A watchdog process waits for the test session's end: when the session ends without tearing the
cluster down (`kill -9`, SIGTERM), it stops the server at once and removes the folder, so no
orphan `postgres` is left behind. Used by the `postgresql_url` fixture in tests/conftest.py."""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

LOOPBACK = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = ROLE = "extcdr"
INSTALL_HINT = "./bin/test installs it (apt-get install postgresql postgresql-contrib)"
# Speed over durability: the cluster lives as long as one test session.
SERVER_OPTIONS = ("-c", "fsync=off", "-c", "synchronous_commit=off",
                  "-c", "full_page_writes=off", "-c", f"listen_addresses={LOOPBACK}")


@dataclass(frozen=True)
class PgServer:
    url: str             # postgresql://extcdr:<password>@127.0.0.1:<port>/extcdr
    port: int
    pid: int             # the postmaster's
    folder: Path         # data directory, socket and log: removed with the server


def server_binaries() -> tuple[str, str]:
    """`initdb` and `postgres` of one installation. Missing: a failure under CI=true, else a
    skip (tests.stack.required_binary)."""
    from tests.stack import missing, required_binary
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda path: int(Path(path).parts[-3]), reverse=True)
    initdb = required_binary("PostgreSQL's initdb", ("initdb", *versions), INSTALL_HINT)
    postgres = Path(initdb).resolve().parent / "postgres"
    if not os.access(postgres, os.X_OK):
        missing(f"PostgreSQL's server ({postgres})", INSTALL_HINT)
    return initdb, str(postgres)


def driver() -> None:
    """psycopg2, which peewee's PostgresqlDatabase uses: missing, as a missing binary."""
    if importlib.util.find_spec("psycopg2") is None:
        from tests.stack import missing
        missing("psycopg2 (PostgreSQL's driver)", "./bin/test installs it (setup.cfg)")


def server_user() -> pwd.struct_passwd | None:
    """Who runs the cluster: ourselves, or as root (which initdb refuses) the `postgres` user
    Debian's package creates, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run PostgreSQL as (postgres, nobody)")


@contextmanager
def running(attempts: int = 3) -> Iterator[PgServer]:
    """A fresh cluster serving database `extcdr` to role `extcdr` (its owner, not a
    superuser); stopped and removed on exit."""
    driver()
    initdb, postgres = server_binaries()
    user = server_user()
    folder = Path(tempfile.mkdtemp(prefix="extcdr-pg-"))
    watchdog = subprocess.Popen([sys.executable, "-m", "tests.pgserver", str(os.getpid()),
                                 str(folder)], cwd=Path(__file__).resolve().parent.parent,
                                stdin=subprocess.DEVNULL)
    postmaster = None
    try:
        as_user = _as_user(user, folder)
        superpass = _initdb(initdb, folder, as_user)
        for attempt in range(attempts):      # another process may take the free port first
            port = _free_port()
            postmaster = _start(postgres, folder, port, as_user)
            error = _wait_ready(postmaster, port, superpass, folder)
            if error is None:
                break
            if attempt == attempts - 1 or "could not bind" not in error:
                raise RuntimeError(f"PostgreSQL did not start: {error}")
        password = secrets.token_hex(12)
        _create_database(port, superpass, password)
        yield PgServer(url=f"postgresql://{ROLE}:{password}@{LOOPBACK}:{port}/{DATABASE}",
                       port=port, pid=postmaster.pid, folder=folder)
    finally:
        if postmaster is not None:
            _stop(postmaster)
        shutil.rmtree(folder, ignore_errors=True)
        watchdog.terminate()
        watchdog.wait(10)


def _as_user(user: pwd.struct_passwd | None, folder: Path) -> dict:
    """subprocess arguments running a program as `user` in `folder` (which it then owns)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if user is None:
        return {"cwd": folder, "env": env}
    os.chown(folder, user.pw_uid, user.pw_gid)
    return {"cwd": folder, "env": {**env, "HOME": str(folder)}, "user": user.pw_uid,
            "group": user.pw_gid, "extra_groups": []}


def _initdb(initdb: str, folder: Path, as_user: dict) -> str:
    """The cluster in `folder/data`, password authentication for everyone; returns the
    superuser's password."""
    superpass = secrets.token_hex(12)
    pwfile = folder / "superuser-password"
    pwfile.write_text(superpass + "\n")
    if "user" in as_user:
        os.chown(pwfile, as_user["user"], as_user["group"])
    # UTF-8 with a Unicode-aware ctype: pg_trgm makes trigrams of Cyrillic names too.
    done = subprocess.run(
        [initdb, "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
        capture_output=True, text=True, timeout=120, **as_user)
    pwfile.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {(done.stderr or done.stdout).strip()}")
    return superpass


def _free_port() -> int:
    from tests.stack import free_port
    return free_port()


def _start(postgres: str, folder: Path, port: int, as_user: dict) -> subprocess.Popen:
    """The postmaster as our child: in our process group, so a signal to the session's group
    reaches it too; its log in `folder/server.log`."""
    with open(folder / "server.log", "wb") as log:
        return subprocess.Popen(
            [postgres, "-D", str(folder / "data"), "-p", str(port), "-k", str(folder),
             *SERVER_OPTIONS], stdin=subprocess.DEVNULL, stdout=log, stderr=log, **as_user)


def _wait_ready(postmaster: subprocess.Popen, port: int, superpass: str, folder: Path,
                timeout: float = 60) -> str | None:
    """None once the server takes connections; else why not (the end of its log)."""
    import psycopg2
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and postmaster.poll() is None:
        try:
            psycopg2.connect(host=LOOPBACK, port=port, user=SUPERUSER, password=superpass,
                             dbname="postgres", connect_timeout=2).close()
            return None
        except psycopg2.OperationalError:
            time.sleep(0.1)
    if postmaster.poll() is None:
        _stop(postmaster)
    log = (folder / "server.log").read_text(errors="replace").strip()
    return log[-2000:] or f"no answer on port {port}"


def _create_database(port: int, superpass: str, password: str) -> None:
    import psycopg2
    conn = psycopg2.connect(host=LOOPBACK, port=port, user=SUPERUSER, password=superpass,
                            dbname="postgres")
    conn.autocommit = True          # CREATE DATABASE runs outside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (password,))
            cur.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    finally:
        conn.close()


def _stop(postmaster: subprocess.Popen) -> None:
    """Fast shutdown (clients are disconnected), then immediate, then kill."""
    for how, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
        if postmaster.poll() is not None:
            return
        postmaster.send_signal(how)
        try:
            postmaster.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


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
