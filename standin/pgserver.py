"""A private PostgreSQL server, the central server of the demo's PBXs (`extcdr pg-server`) and of
the tests (tests/pgserver.py): a cluster of Debian's `postgresql` made by `initdb` in a folder
at first use and kept there, run by an unprivileged user (the server refuses root) on a
loopback port with its socket in that folder, a database and a role with a password."""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cli.base import CliError
from mirror.settings import shown_target
from pbxmodule.private import write_private

LOOPBACK = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = ROLE = "extcdr"
INSTALL_HINT = "apt-get install postgresql postgresql-contrib"
PASSWORDS = "passwords.json"      # in the folder, beside the cluster: mode 600
URL_FILE = "url"                  # the running server's URL, for the programs that use it


class PgServerError(RuntimeError):
    """The server cannot be had; the message says why."""


class NotInstalled(PgServerError):
    def __init__(self, what: str):
        super().__init__(f"{what} is not installed ({INSTALL_HINT})")
        self.what = what


@dataclass(frozen=True)
class PgServer:
    url: str             # postgresql://extcdr:<password>@127.0.0.1:<port>/extcdr
    port: int
    pid: int             # the postmaster's
    folder: Path         # the cluster (`data`), its socket and log
    postmaster: subprocess.Popen = field(compare=False, repr=False)


def server_binaries() -> tuple[str, str]:
    """`initdb` and `postgres` of one installation, the newest Debian's package has."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda path: int(Path(path).parts[-3]), reverse=True)
    initdb = next(filter(None, map(shutil.which, ("initdb", *versions))), None)
    if initdb is None:
        raise NotInstalled("PostgreSQL's initdb")
    postgres = Path(initdb).resolve().parent / "postgres"
    if not os.access(postgres, os.X_OK):
        raise NotInstalled(f"PostgreSQL's server ({postgres})")
    return initdb, str(postgres)


def driver_missing() -> bool:
    """psycopg2, which peewee's PostgresqlDatabase uses, cannot be imported."""
    return importlib.util.find_spec("psycopg2") is None


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
    raise PgServerError("no unprivileged user to run PostgreSQL as (postgres, nobody)")


@contextmanager
def running(folder: Path, *, port: int = 0, options: tuple[str, ...] = (),
            attempts: int = 3) -> Iterator[PgServer]:
    """The cluster in `folder` (made at first use) serving database `extcdr` to role `extcdr`
    (its owner, not a superuser) on `port` (0: a free one), with the server's `-c` `options`;
    stopped on exit, the folder kept."""
    if driver_missing():
        raise NotInstalled("psycopg2 (PostgreSQL's driver)")
    initdb, postgres = server_binaries()
    as_user = _as_user(server_user(), folder)
    passwords = _cluster(initdb, folder, as_user)
    postmaster = None
    try:
        for attempt in range(attempts):      # another process may take the free port first
            chosen = port or _free_port()
            postmaster = _start(postgres, folder, chosen, as_user, options)
            error = _wait_ready(postmaster, chosen, passwords["superuser"], folder)
            if error is None:
                break
            if attempt == attempts - 1 or port or "could not bind" not in error:
                raise PgServerError(f"PostgreSQL did not start: {error}")
        _create_database(chosen, passwords)
        yield PgServer(url=f"postgresql://{ROLE}:{passwords[ROLE]}@{LOOPBACK}:{chosen}/"
                       f"{DATABASE}", port=chosen, pid=postmaster.pid, folder=folder,
                       postmaster=postmaster)
    finally:
        if postmaster is not None:
            stop(postmaster)


def _as_user(user: pwd.struct_passwd | None, folder: Path) -> dict:
    """subprocess arguments running a program as `user` in `folder` (which it then owns)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if user is None:
        return {"cwd": folder, "env": env}
    os.chown(folder, user.pw_uid, user.pw_gid)
    as_user = {"cwd": folder, "env": {**env, "HOME": str(folder)}, "user": user.pw_uid,
               "group": user.pw_gid, "extra_groups": []}
    if subprocess.run(["test", "-x", str(folder.resolve())], **as_user).returncode != 0:
        raise PgServerError(f"PostgreSQL runs as the user {user.pw_name}, who cannot reach "
                            f"{folder.resolve()} (a folder on the way is closed to others): "
                            "use a folder under /var/tmp or /srv")
    return as_user


def _cluster(initdb: str, folder: Path, as_user: dict) -> dict[str, str]:
    """The superuser's and the role's passwords of the cluster in `folder/data`, made first
    when there is none (password authentication for everyone)."""
    saved = folder / PASSWORDS
    if (folder / "data" / "PG_VERSION").exists():
        if not saved.exists():
            raise PgServerError(f"{folder / 'data'} holds a cluster made elsewhere: give "
                                "another folder")
        return json.loads(saved.read_text())
    shutil.rmtree(folder / "data", ignore_errors=True)       # an initdb that was cut short
    passwords = {"superuser": secrets.token_hex(12), ROLE: secrets.token_hex(12)}
    pwfile = folder / "superuser-password"
    pwfile.write_text(passwords["superuser"] + "\n")
    if "user" in as_user:
        os.chown(pwfile, as_user["user"], as_user["group"])
    # UTF-8 with a Unicode-aware ctype: pg_trgm makes trigrams of Cyrillic names too.
    done = subprocess.run(
        [initdb, "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
        capture_output=True, text=True, timeout=120, **as_user)
    pwfile.unlink()
    if done.returncode != 0:
        raise PgServerError(f"initdb failed: {(done.stderr or done.stdout).strip()}")
    write_private(saved, json.dumps(passwords))
    return passwords


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _start(postgres: str, folder: Path, port: int, as_user: dict,
           options: tuple[str, ...]) -> subprocess.Popen:
    """The postmaster as our child: in our process group, so a signal to the group reaches it
    too; its log in `folder/server.log`."""
    with open(folder / "server.log", "ab") as log:
        return subprocess.Popen(
            [postgres, "-D", str(folder / "data"), "-p", str(port), "-k", str(folder),
             "-c", f"listen_addresses={LOOPBACK}", *options],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, **as_user)


def _wait_ready(postmaster: subprocess.Popen, port: int, superpass: str, folder: Path,
                timeout: float = 60) -> str | None:
    """None once the server takes connections; else why not (the end of its log)."""
    import psycopg2
    deadline = time.monotonic() + timeout
    log = folder / "server.log"
    logged = log.stat().st_size
    while time.monotonic() < deadline and postmaster.poll() is None:
        try:
            psycopg2.connect(host=LOOPBACK, port=port, user=SUPERUSER,
                             password=superpass, dbname="postgres", connect_timeout=2).close()
            return None
        except psycopg2.OperationalError:
            time.sleep(0.1)
    stop(postmaster)
    with open(log, "rb") as file:
        file.seek(logged)
        said = file.read().decode(errors="replace").strip()
    return said[-2000:] or f"no answer on port {port}"


def _create_database(port: int, passwords: dict[str, str]) -> None:
    """The role and its database, unless an earlier run made them."""
    import psycopg2
    conn = psycopg2.connect(host=LOOPBACK, port=port, user=SUPERUSER,
                            password=passwords["superuser"], dbname="postgres")
    conn.autocommit = True          # CREATE DATABASE runs outside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (passwords[ROLE],))
                cur.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    finally:
        conn.close()


def stop(postmaster: subprocess.Popen) -> None:
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


# --- `extcdr pg-server`: the demo's central server ----------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path,
                        help="the cluster's folder: made at first use, kept for the next run")
    parser.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")


def run(args: argparse.Namespace) -> int:
    """The server until SIGTERM, SIGINT or SIGHUP; its URL (with the password) in DIR/url
    while it runs."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    url_file = args.dir / URL_FILE
    try:
        with running(args.dir, port=args.port) as server:
            write_private(url_file, server.url + "\n")
            print(f"PostgreSQL on {shown_target(server.url)} (its URL: {url_file})", flush=True)
            while not stopping.wait(0.5):
                if server.postmaster.poll() is not None and not stopping.is_set():
                    raise PgServerError(f"PostgreSQL stopped: see {args.dir / 'server.log'}")
    except PgServerError as exc:
        raise CliError(str(exc)) from None
    finally:
        url_file.unlink(missing_ok=True)
    return 0
