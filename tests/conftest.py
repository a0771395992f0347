"""Shared fixtures: real PBX files in temp dirs and the CLI run in-process."""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import date
from itertools import count
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from pbx import tables as pbxschema
from standin.cli import main

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def write_cdr_rows(path: Path, rows: list[dict], *, older: bool = False) -> None:
    """Append rows (column -> value) to a cdr.db with the PBX's real schema."""
    conn = pbxschema.create(str(path), pbxschema.cdr_ddl(older=older))
    with conn:
        for row in rows:
            cols = ", ".join(row)
            conn.execute(f"INSERT INTO cdr_general ({cols}) VALUES ({','.join('?' * len(row))})",
                         list(row.values()))
    conn.close()


class Cli:
    """`extcdr` in-process: returns (exit code, stdout, stderr)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *argv) -> tuple[int, str, str]:
        self.capsys.readouterr()
        # A command that sets up logging (the daemon's) binds it to this test's captured
        # stderr, closed after the test: the logging of later tests is left as it was.
        handlers, level = logging.root.handlers[:], logging.root.level
        try:
            code = main([str(a) for a in argv])
        finally:
            logging.root.handlers[:], logging.root.level = handlers, level
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(capsys) -> Cli:
    return Cli(capsys)


@pytest.fixture
def served():
    """served(app, threads=4) -> "host:port": a WSGI app served until the test ends
    (tests.stack.serving)."""
    from tests.stack import address, serving
    with ExitStack() as stack:
        yield lambda app, threads=4: address(stack.enter_context(serving(app, threads)))


def run_extcdr(*argv, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`extcdr` as a separate process (for signals, kill -9 and TTY behaviour)."""
    return subprocess.run([sys.executable, "-m", "standin", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def demo_pbx(tmp_path_factory) -> Path:
    """A generated demo PBX (a few thousand calls of every scenario), shared by the session."""
    from standin import demo
    out = tmp_path_factory.mktemp("demo-pbx")
    # Berlin, ending just after the 2024 fall-back: the DST hour is in every arrival test.
    demo.generate(out, 3_000, seed=7, end_day=date(2024, 10, 28), timezone="Europe/Berlin")
    return out


@pytest.fixture(scope="session")
def demo_mirror(demo_pbx, tmp_path_factory) -> Path:
    """module.db synced once from the demo PBX (read-only use only)."""
    db = tmp_path_factory.mktemp("mirror") / "module.db"
    assert main(["sync", "--cdr-db", str(demo_pbx / "cdr.db"),
                 "--pbx-db", str(demo_pbx / "mikopbx.db"), "--db", str(db), "--once"]) == 0
    return db


@pytest.fixture(scope="module")
def demo_module_db(engine, demo_pbx, tmp_path_factory, request) -> Iterator[Path | str]:
    """The demo PBX's mirror on the module's engine (read-only use only): the session's
    SQLite one, or synced once into a PostgreSQL schema of the module's own."""
    if engine == "sqlite":
        yield request.getfixturevalue("demo_mirror")
        return
    with ExitStack() as cleanup:
        target = new_mirror_target(request, engine, tmp_path_factory.mktemp("mirror"), cleanup)
        assert main(["sync", "--cdr-db", str(demo_pbx / "cdr.db"), "--pbx-db",
                     str(demo_pbx / "mikopbx.db"), "--db", target, "--once"]) == 0
        yield target


@pytest.fixture(scope="session")
def demo_reference(demo_pbx, tmp_path_factory) -> dict:
    """The demo PBX's rows and the mirror a clean one-batch sync makes of them."""
    from tests.mirror import dump, pbx_rows, sync_once
    db = tmp_path_factory.mktemp("reference") / "module.db"
    sync_once(demo_pbx / "cdr.db", demo_pbx / "mikopbx.db", db, batch_rows=10**9)
    return {"rows": pbx_rows(demo_pbx / "cdr.db"), "dump": dump(db)}


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """The module's marketplace archive, built from this tree (`extcdr package`)."""
    from pbxmodule import package
    out = tmp_path_factory.mktemp("archive") / "ModuleExtendedCDR.zip"
    package.build(out)
    return out


# The page tests' Chromium (tests/browser.py, imported when asked for: Playwright is a test
# extra), on the stack of the module that asks.

@pytest.fixture(scope="module")
def browser(stack):
    from tests.browser import chromium
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def sessions(browser, stack):
    """user -> the browser storage (session cookie) after logging in through the form."""
    from tests.browser import user_sessions
    return user_sessions(browser, stack)


@pytest.fixture
def open_as(browser, stack, sessions):
    """open_as(user) -> a UserPage logged in as `user`; no JS errors allowed on its pages."""
    from tests.browser import UserPage
    opened: list[UserPage] = []

    def open_page(user: str = "admin") -> UserPage:
        opened.append(UserPage(browser, stack, sessions(user)))
        return opened[-1]
    yield open_page
    errors = [e for tab in opened for e in tab.errors]
    for tab in opened:
        tab.context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A private PostgreSQL cluster for the session (tests.pgserver): the `postgresql://` URL
    of a database owned by a password role. Missing PostgreSQL or its driver: a failure under
    CI=true, else a skip."""
    from tests.pgserver import running
    with running() as server:
        yield server.url


_pg_schemas = count(1)


@pytest.fixture(scope="session")
def pg_admin(postgresql_url):
    """The module's role on the session's database, outside any test's schema (pg_trgm made
    once in `public`, where every test's search path finds it)."""
    import peewee
    from playhouse.db_url import parse
    db = peewee.PostgresqlDatabase(**parse(postgresql_url))
    db.connect()
    db.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    yield db
    db.close()


@contextmanager
def pg_schema(request) -> Iterator[str]:
    """A `postgresql://` URL whose search path is an empty schema of its own, dropped on
    leaving: module.db on PostgreSQL, as fresh as a new file."""
    postgresql_url = request.getfixturevalue("postgresql_url")
    admin = request.getfixturevalue("pg_admin")
    name = f"t_{next(_pg_schemas)}"
    admin.execute_sql(f"CREATE SCHEMA {name}")
    try:
        yield postgresql_url + "?options=" + quote(f"-csearch_path={name},public")
    finally:
        admin.execute_sql(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def pg_schema_url(request) -> Iterator[str]:
    """A fresh schema of the session's PostgreSQL server for this test (pg_schema)."""
    with pg_schema(request) as url:
        yield url


# The mirror's suite runs on both engines: a test (or a module-scoped fixture) that asks for
# `engine`, or for a module.db through `mirror_target(s)`, runs once with an SQLite file and
# once with a PostgreSQL schema. Module-scoped, so a module's fixtures can build on it.
ENGINES = ("sqlite", "postgresql")


@pytest.fixture(scope="module", params=ENGINES)
def engine(request) -> str:
    return request.param


def sqlite_only(reason: str):
    """A test of something only an SQLite file has (`reason`: what): run on SQLite alone."""
    return pytest.mark.parametrize("engine", ["sqlite"], ids=[f"sqlite only: {reason}"])


def new_mirror_target(request, engine: str, folder: Path, cleanup: ExitStack) -> Path | str:
    """A new, empty module.db on `engine`: `folder/module.db` (the folder made), or a
    PostgreSQL schema of its own that `cleanup` drops."""
    if engine == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "module.db"
    return cleanup.enter_context(pg_schema(request))


@pytest.fixture
def mirror_targets(request, engine) -> Iterator:
    """mirror_targets(folder) -> a new module.db on the test's engine (new_mirror_target)."""
    with ExitStack() as cleanup:
        yield lambda folder: new_mirror_target(request, engine, Path(folder), cleanup)


@pytest.fixture
def mirror_target(mirror_targets, tmp_path) -> Path | str:
    """module.db on the test's engine: a file's path, or a `postgresql://` URL."""
    return mirror_targets(tmp_path)
