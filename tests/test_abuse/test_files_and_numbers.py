"""Bad files and bad numbers never crash anything (issue 15): a licence file that is garbage,
numbers too big for SQLite or for Python's int(), and module databases that are damaged or
belong to another program — each is a readable refusal, never a traceback or a 500."""
from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mirror.settings import load
from pbxmodule.licence import Grant
from standin.marketplace_server import public_key_text, sign
from tests.conftest import wait_for
from tests.test_daemon import pbx, start_daemon  # noqa: F401 (pbx: a fixture)
from tests.test_lifecycle import FEATURE, LICENCE_FILE, PRODUCT
from tests.test_web_api import PERIOD, PREFIX, TOKEN, server  # noqa: F401 (server: a fixture)
from tests.test_web_page import csrf_of
from tests.webclient import Browser
from web import create_app

HOST_ID = "0123456789abcdef0123456789abcdef"


def as_user(role: str) -> dict:
    """The headers the admin shell's nginx sets for a user of this role."""
    return {"X-Extcdr-User": role, "X-Extcdr-Role": role, "X-Extcdr-Extensions": "201",
            "X-Extcdr-Proxy-Token": TOKEN}


# --- licence files -----------------------------------------------------------------------------

class LicenceFiles:
    """A marketplace key of our own, this PBX's host id, and the licence file to spoil."""

    def __init__(self, folder):
        self.key = Ed25519PrivateKey.generate()
        self.file = folder / "licences" / LICENCE_FILE
        self.file.parent.mkdir()
        self.host_id_file = folder / "machine-id"
        self.host_id_file.write_text(HOST_ID + "\n")

    def settings(self) -> dict:
        return {"licence.public_key": public_key_text(self.key), "licence.file": self.file,
                "licence.host_id_file": self.host_id_file}

    def signed(self, *, feature_id: int = FEATURE) -> str:
        now = int(time.time())
        return sign(Grant("MIKOUPD-7K2QX-44ZMA-0PL9D-3VW8E", HOST_ID, PRODUCT, feature_id, now,
                          now + 86_400), self.key)

    def write(self, content: bytes | str | None) -> None:
        """The licence file as `content`; None: a directory in its place."""
        if self.file.is_dir():
            self.file.rmdir()
        if content is None:
            self.file.unlink(missing_ok=True)
            self.file.mkdir()
        elif isinstance(content, str):
            self.file.write_text(content)
        else:
            self.file.write_bytes(content)


def spoiled_licences(files: LicenceFiles) -> dict[str, bytes | str | None]:
    """Licence files that must each mean "not licensed"."""
    good = files.signed()
    return {
        "non-UTF-8 bytes": b'{"grant": {"key": "\xff\xfe\xc0"}, "signature": "\x80"}',
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "a directory": None,
        "another product's": files.signed(feature_id=FEATURE + 1),
        "binary garbage": bytes(range(256)) * 64,
        "nested too deep": "[" * 100_000,
    }


@pytest.fixture
def licence_files(tmp_path) -> LicenceFiles:
    return LicenceFiles(tmp_path)


def test_a_damaged_or_foreign_licence_file_shows_the_licence_pages_never_a_500(
        demo_mirror, licence_files, tmp_path, served):
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    app = create_app(load(config, {"module.db": demo_mirror, **licence_files.settings()}))
    address = served(app)
    browser = Browser(f"http://{address}{PREFIX}")
    licence_files.write(licence_files.signed())
    assert browser.request("/", headers=as_user("admin"))[0] == 200
    for name, content in spoiled_licences(licence_files).items():
        licence_files.write(content)
        status, _, page = browser.request("/", headers=as_user("admin"))
        assert status == 403, name
        assert "Extended call history is not licensed" in page, name
        assert "licensing/modify" in page, name
        status, _, page = browser.request("/", headers=as_user("operator"))
        assert status == 403 and "ask your PBX administrator" in page, name
        status, _, body = browser.request("/api/v1/calls", headers=as_user("admin"))
        assert status == 403, name
        assert json.loads(body)["error"].startswith("the module is not licensed"), name
        assert browser.request("/export?format=csv", headers=as_user("admin"))[0] == 403, name


def test_the_daemon_pauses_on_any_spoiled_licence_file(pbx, licence_files):  # noqa: F811
    from daemon.resident import Daemon
    from tests.test_daemon import settings_for
    daemon = Daemon(settings_for(pbx, **licence_files.settings()))
    try:
        for name, content in spoiled_licences(licence_files).items():
            licence_files.write(content)
            assert daemon.step(time.monotonic()) == 5.0, name
    finally:
        daemon.db.close()


def test_a_daemon_with_a_non_utf8_licence_file_keeps_running_and_says_so_once(
        pbx, licence_files):  # noqa: F811
    licence_files.write(b"\xff\xfe garbage \x80\x81")
    extra = [f"{key}={value}" for key, value in licence_files.settings().items()]
    proc = start_daemon(pbx, *(arg for item in extra for arg in ("--set", item)))
    try:
        assert not wait_for(lambda: proc.poll() is not None, 7.0)   # past a re-check (5 s)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err
    paused = [line for line in err.splitlines() if "paused" in line]
    assert len(paused) == 1 and paused[0].endswith(
        "the licence file is damaged: activate the key again"), err


# --- numbers too big -------------------------------------------------------------------------------

HUGE = {"30 digits": "9" * 30, "2**63": str(2**63), "4,301 digits": "7" * 4301,
        "a superscript two": "\u00b2"}


def bad_request(browser: Browser, path: str, params: dict, headers=None) -> str:
    """The 400's message (JSON or page) of a GET that must be refused."""
    status, reply_headers, body = browser.request(
        f"{path}?{urllib.parse.urlencode(params)}", headers=headers or as_user("admin"))
    assert status == 400, (path, params, status, body[:300])
    assert "Traceback" not in body and "internal error" not in body
    return json.loads(body)["error"] if reply_headers["Content-Type"].startswith(
        "application/json") else body


@pytest.mark.parametrize("number", HUGE.values(), ids=HUGE.keys())
def test_oversized_numbers_in_any_parameter_are_a_readable_400(server, number):  # noqa: F811
    browser = Browser(server)
    api = "/api/v1/calls"
    assert "limit must be a whole number from 1 to 500" in bad_request(
        browser, api, {**PERIOD, "limit": number})
    for path in (api, "/", "/rows", "/export"):
        extra = {"format": "csv"} if path == "/export" else {}
        assert "min_talk must be a whole number from 0 to" in bad_request(
            browser, path, {**PERIOD, "min_talk": number, **extra})
    for path in (api, "/", "/rows"):
        for cursor in (f"{number}.1", f"1.{number}"):
            assert "bad cursor" in bad_request(browser, path, {**PERIOD, "cursor": cursor})
    assert "since (a revision) must be a whole number" in bad_request(
        browser, "/updates", {**PERIOD, "since": number})


@pytest.mark.parametrize("number", HUGE.values(), ids=HUGE.keys())
def test_a_report_form_with_an_oversized_filter_id_says_what_to_choose(server, number):  # noqa: F811
    browser = Browser(server)
    quoted = urllib.parse.quote(number)
    status, _, _ = browser.request(f"/reports/new?filter={quoted}", headers=as_user("admin"))
    assert status == 200
    status, _, page = browser.request("/", headers=as_user("admin"))
    form = {"csrf_token": csrf_of(page), "name": "Huge", "filter": number,
            "period": "yesterday", "frequency": "daily", "at": "08:00", "format": "csv",
            "delivery": "attach", "link_hours": "48", "recipients": "boss@example.com"}
    status, _, page = browser.request("/reports", form, headers=as_user("admin"))
    assert status == 400 and "choose one of your saved filters" in page
    for path in (f"/reports/{quoted}", f"/reports/sends/{quoted}/file"):
        assert browser.request(path, headers=as_user("admin"))[0] == 404
    status, _, _ = browser.request(f"/filters/{quoted}/delete", {"csrf_token": form["csrf_token"]},
                                   headers=as_user("admin"))
    assert status == 404


@pytest.mark.parametrize("option", ["--limit", "--min-talk"])
def test_oversized_numbers_on_the_command_line_are_one_line(demo_mirror, cli, option):
    from tests.test_cli import one_line_error
    err = one_line_error(*cli("calls", "--db", demo_mirror, "--from", PERIOD["from"],
                              "--to", PERIOD["to"], option, "9" * 30))
    assert "must be a whole number from" in err


# --- damaged and foreign databases ---------------------------------------------------------------

def damaged_copy(mirror: Path, where: Path) -> Path:
    """A copy of a mirror whose calls' and legs' tables and indexes have garbage for their root
    pages: the file opens (header, schema and sync state are intact) and the damage is found
    by the first query of calls, as a failing disk leaves it."""
    copy = where / "damaged.db"
    with closing(sqlite3.connect(mirror)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
        page_size = target.execute("PRAGMA page_size").fetchone()[0]
        roots = [page for (page,) in target.execute(
            "SELECT rootpage FROM sqlite_master WHERE tbl_name IN ('call', 'leg', 'live_call',"
            " 'call_employee') AND rootpage > 1")]
    with copy.open("r+b") as file:
        for page in roots:
            file.seek((page - 1) * page_size)
            file.write(b"\x5a" * page_size)
    return copy


def another_programs_db(where: Path) -> Path:
    path = where / "notes.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('buy milk')")
    return path


@pytest.mark.parametrize("command", [
    ["status"], ["calls", "--from", "2024-10-20", "--to", "2024-10-28"],
    ["calls", "--format", "summary", "--from", "2024-10-20", "--to", "2024-10-28"],
    ["export", "--format", "csv", "--from", "2024-10-20", "--to", "2024-10-28"]])
def test_a_damaged_mirror_is_one_line_and_a_failure_for_every_command(demo_mirror, tmp_path,
                                                                      cli, command):
    from tests.test_cli import one_line_error
    damaged = damaged_copy(demo_mirror, tmp_path)
    out = ["--out", tmp_path / "calls.csv"] if command[0] == "export" else []
    err = one_line_error(*cli(command[0], "--db", damaged, *command[1:], *out))
    assert "damaged.db is damaged or not a database (database disk image is malformed)" in err
    assert not (tmp_path / "calls.csv").exists()


@pytest.mark.parametrize("command", ["sync", "status", "calls", "export", "migrate"])
def test_another_programs_database_is_refused_and_left_as_it_was(demo_pbx, tmp_path, cli,
                                                                 command):
    from tests.test_cli import one_line_error
    notes = another_programs_db(tmp_path)
    before = notes.read_bytes()
    args = {"sync": ["--cdr-db", demo_pbx / "cdr.db", "--once"],
            "export": ["--format", "csv", "--out", tmp_path / "calls.csv"]}.get(command, [])
    err = one_line_error(*cli(command, "--db", notes, *args))
    assert err.strip() == f"extcdr: {notes} is not an extcdr module database"
    assert notes.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_file_that_is_no_database_at_all_is_refused_in_one_line(tmp_path, cli):
    from tests.test_cli import one_line_error
    garbage = tmp_path / "module.db"
    garbage.write_bytes(bytes(range(256)) * 64)
    err = one_line_error(*cli("status", "--db", garbage))
    assert "is damaged or not a database" in err
    assert garbage.read_bytes() == bytes(range(256)) * 64


def test_the_mirror_carries_the_module_id_and_a_mirror_from_before_gets_it(demo_mirror,
                                                                          tmp_path, cli):
    from mirror import schema
    from tests.test_schema import at_version

    def application_id(path: Path) -> int:
        with closing(sqlite3.connect(path)) as conn:
            return conn.execute("PRAGMA application_id").fetchone()[0]

    assert application_id(demo_mirror) == schema.APPLICATION_ID
    before = tmp_path / "module.db"
    at_version(before, 6)                     # as the releases before the module id left it
    assert application_id(before) == 0
    code, out, err = cli("status", "--db", before)         # readable before migrating
    assert code == 0, err
    assert cli("migrate", "--db", before)[0] == 0
    assert application_id(before) == schema.APPLICATION_ID
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()                         # an empty file is ours to create
    assert cli("migrate", "--db", empty)[0] == 0
    assert application_id(empty) == schema.APPLICATION_ID


def test_a_daemon_on_another_programs_database_waits_and_says_so_once(pbx, tmp_path):  # noqa: F811
    pbx = {**pbx, "db": another_programs_db(tmp_path)}
    before = pbx["db"].read_bytes()
    proc = start_daemon(pbx)
    try:
        assert not wait_for(lambda: proc.poll() is not None, 3.0)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
    said = [line for line in err.splitlines() if "not an extcdr module database" in line]
    assert len(said) == 1 and "waiting" in said[0], err
    assert pbx["db"].read_bytes() == before


def test_a_daemon_on_a_damaged_mirror_keeps_running_and_says_so_once(pbx, demo_pbx,  # noqa: F811
                                                                     demo_mirror, tmp_path):
    pbx = {**pbx, "cdr": demo_pbx / "cdr.db", "db": damaged_copy(demo_mirror, tmp_path)}
    proc = start_daemon(pbx)
    try:
        assert not wait_for(lambda: proc.poll() is not None, 7.0)   # past a retry (5 s)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if "malformed" in line]
    assert len(said) == 1 and "is damaged or not a database" in said[0], err


def test_a_damaged_mirror_is_a_readable_503_page(demo_mirror, tmp_path, served):
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    app = create_app(load(config, {"module.db": damaged_copy(demo_mirror, tmp_path)}))
    browser = Browser(f"http://{served(app)}{PREFIX}")
    params = urllib.parse.urlencode({"from": "2024-01-01", "to": "2024-10-28"})  # every call
    status, headers, page = browser.request(f"/?{params}", headers=as_user("admin"))
    assert status == 503 and headers["Content-Type"].startswith("text/html")
    assert "Call history unavailable" in page and "is damaged" in page
    status, _, body = browser.request(f"/rows?{params}", headers=as_user("admin"))
    assert status == 503 and "is damaged" in json.loads(body)["error"]


@pytest.mark.parametrize("kind", ["another program's", "no database at all"])
def test_a_web_worker_on_a_file_it_cannot_use_serves_a_503_saying_why(tmp_path, kind, served):
    if kind == "no database at all":
        path = tmp_path / "module.db"
        path.write_bytes(bytes(range(256)) * 64)
        words = "is damaged or not a database (file is not a database)"
    else:
        path, words = another_programs_db(tmp_path), "is not an extcdr module database"
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    before = path.read_bytes()
    browser = Browser(f"http://{served(create_app(load(config, {'module.db': path})))}{PREFIX}")
    status, headers, page = browser.request("/", headers=as_user("admin"))
    assert status == 503 and headers["Content-Type"].startswith("text/html")
    assert "Call history unavailable" in page and words in page
    status, _, body = browser.request("/api/v1/calls", headers=as_user("operator"))
    assert status == 503 and words in json.loads(body)["error"]
    assert path.read_bytes() == before
