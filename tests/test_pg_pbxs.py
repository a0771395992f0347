"""Several PBXs writing one central history (issue 22, the writer's side): each PBX's daemon or
sync (`pbx.id`) writes its own calls with its own cursor, at the same time as the others';
their ids are qualified (`<pbx id>:<linkedid>`), every row carries its PBX, and callbacks link
across PBXs by the number.

Real parts: demo PBXs' SQLite files, `extcdr sync` processes, the session's PostgreSQL.
"""
from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import date

import pytest

from daemon.locks import CentralLock
from daemon.sync import Sync, SyncOptions
from mirror.calls import LINKED_COLUMNS, link_callbacks, linking
from mirror.database import ModuleDbError, open_module_db
from mirror.dialect import SHARED_ROWS_LOCK, run
from mirror.pbxtime import PbxClock
from mirror.queries import mirror_revision
from mirror.schema import month_partitions
from mirror.settings import load
from mirror.store import Store
from pbx.cdr import CdrSource
from pbx.config import read_pbx_config
from tests.conftest import ROOT, wait_for
from tests.mirror import dump, sync_once
from tests.pbxfixture import DID, Pbx
from tests.stack import serving
from web import create_app

# What dump()'s call rows hold at these places depends on the other PBXs' calls (callbacks
# link across PBXs): status, callback_of, returned_by, callback_attempts, returned_after_s.
_LINKED = (4, 23, 24, 25, 32)


@pytest.fixture(scope="module")
def pbxs(demo_pbx, demo_reference, tmp_path_factory) -> dict:
    """Three PBXs, each with its own SQLite mirror's dump: 'a' the session's demo PBX, 'b'
    another demo over the same days, 'c' a copy of 'a' (its every linkedid is one of 'a's)."""
    from standin import demo
    other = tmp_path_factory.mktemp("pbx-b")
    demo.generate(other, 2_000, seed=8, end_day=date(2024, 10, 28), timezone="Europe/Berlin")
    mirror = tmp_path_factory.mktemp("pbx-b-mirror") / "module.db"
    sync_once(other / "cdr.db", other / "mikopbx.db", mirror, batch_rows=10**9)
    copy = tmp_path_factory.mktemp("pbx-c")
    for name in ("cdr.db", "mikopbx.db"):
        shutil.copy(demo_pbx / name, copy / name)
    return {"a": (demo_pbx, demo_reference["dump"]), "b": (other, dump(mirror)),
            "c": (copy, demo_reference["dump"])}


def sync_command(folder, url, pbx: str, batch_rows: int = 300) -> list[str]:
    return [sys.executable, "-m", "cli", "sync", "--cdr-db", str(folder / "cdr.db"),
            "--pbx-db", str(folder / "mikopbx.db"), "--db", url, "--once", "--pbx-id", pbx,
            "--batch-rows", str(batch_rows)]


def unqualified(pbx: str, value):
    prefix = f"{pbx}:"
    return value[len(prefix):] if isinstance(value, str) and value.startswith(prefix) else value


def of_pbx(central: dict, pbx: str) -> dict:
    """The central history's rows of one PBX, its ids as the PBX names them: calls without
    the columns callbacks of other PBXs change, legs, employees, numbers, names."""
    def mine(row):
        return row[0].startswith(f"{pbx}:")

    def calls(rows):
        return [tuple(unqualified(pbx, value) for i, value in enumerate(row) if i not in _LINKED)
                for row in rows if mine(row)]
    return {
        "calls": calls(central["calls"]),
        "legs": [(unqualified(pbx, u), unqualified(pbx, l), *rest)
                 for u, l, *rest in central["legs"] if u.startswith(f"{pbx}:")],
        "employees": [(e, s, unqualified(pbx, l), p) for e, s, l, p in central["employees"]
                      if l.startswith(f"{pbx}:")],
        "numbers": [(unqualified(pbx, l), n) for l, n in central["numbers"] if mine((l,))],
        "names": [(unqualified(pbx, l), n) for l, n in central["names"] if mine((l,))],
    }


def own_columns(reference: dict) -> dict:
    return {**{part: reference[part] for part in ("legs", "employees", "numbers", "names")},
            "calls": [tuple(v for i, v in enumerate(row) if i not in _LINKED)
                      for row in reference["calls"]]}


def links_afresh(db, window_ms: int = 86_400_000) -> tuple[dict, dict]:
    """(the links the central history holds, those every PBX's calls give worked out at once)
    by linkedid: callback_of, returned_by, callback_attempts, status."""
    held, facts = {}, {}
    for key, fact, links in map(linking, run(db, f"SELECT {', '.join(LINKED_COLUMNS)} FROM call "
                                                "WHERE ext_key IS NOT NULL")):
        held[fact.linkedid] = (links.callback_of, links.returned_by, links.callback_attempts,
                               links.status)
        facts.setdefault(key, []).append(fact)
    afresh = {}
    for calls in facts.values():
        for linkedid, links in link_callbacks(calls, window_ms).items():
            afresh[linkedid] = (links.callback_of, links.returned_by, links.callback_attempts,
                                links.status)
    return held, afresh


def test_three_pbxs_synced_at_once_each_keep_their_calls_exactly(pbxs, pg_schema_url):
    """'b' killed with -9 mid-backfill, then 'a', 'b' and 'c' synced at the same time in small
    batches: each PBX's calls, legs, employees, numbers and names are its own mirror's, ids
    qualified and every row stamped with its PBX; 'a' and 'c' have the same linkedids and
    keep two calls of each; callbacks link across PBXs as all the calls at once give."""
    started = subprocess.Popen(sync_command(pbxs["b"][0], pg_schema_url, "b", 200), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_for(lambda: _state(pg_schema_url, "cursor:b") is not None, timeout=120)
    started.send_signal(signal.SIGKILL)
    started.wait()
    killed_at = int(_state(pg_schema_url, "cursor:b"))

    syncs = {pbx: subprocess.Popen(sync_command(folder, pg_schema_url, pbx), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for pbx, (folder, _) in pbxs.items()}
    results = {pbx: (sync.wait(600), sync.stderr.read()) for pbx, sync in syncs.items()}
    assert results == {pbx: (0, "") for pbx in pbxs}

    central = dump(pg_schema_url)
    assert central["rollups_off"] == []
    for pbx, (_, reference) in pbxs.items():
        assert of_pbx(central, pbx) == own_columns(reference), pbx
    assert len(central["calls"]) == sum(len(ref["calls"]) for _, ref in pbxs.values())
    assert {row[0] for row in of_pbx(central, "a")["calls"]} == {
        row[0] for row in of_pbx(central, "c")["calls"]}

    db = open_module_db(pg_schema_url, readonly=True)
    try:
        for table, key in (("call", "linkedid"), ("leg", "uniqueid"), ("leg", "linkedid")):
            assert run(db, f"SELECT count(*) FROM {table} WHERE {key} NOT LIKE pbx || ':%' "
                           "OR pbx NOT IN ('a', 'b', 'c')").fetchone() == (0,), (table, key)
        held, afresh = links_afresh(db)
        assert held == afresh
        across = [(linkedid, links[0]) for linkedid, links in held.items()
                  if links[0] and links[0].split(":")[0] != linkedid.split(":")[0]]
        assert len(across) > 10, "no callback returned a call of another PBX"
        cursors = dict(run(db, "SELECT key, value FROM sync_state WHERE key LIKE 'cursor%'"))
        assert set(cursors) == {f"{name}:{pbx}" for name in ("cursor", "cursor_uniqueid")
                                for pbx in "abc"}
        assert int(cursors["cursor:b"]) > killed_at
        assert dict(run(db, "SELECT pbx, count(*) FROM employee GROUP BY pbx")).keys() == {
            "a", "b", "c"}
    finally:
        db.close()


def _state(url: str, key: str) -> str | None:
    """One committed value of the central history's sync state (None: none, or no history)."""
    try:
        db = open_module_db(url, readonly=True)
    except ModuleDbError:
        return None                                 # not migrated yet
    try:
        row = run(db, "SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None
    finally:
        db.close()


MISSED = """
    start    | end      | src          | dst | dialstatus
    10:00:00 | 10:00:25 | +79161234567 | 201 | CANCEL
    """
CALLED_BACK = """
    start    | answer   | end      | src | dst
    11:00:00 | 11:00:10 | 11:05:10 | 202 | 89161234567
    """


def test_a_callback_on_another_pbx_written_at_the_same_time_returns_the_missed_call(
        tmp_path, capsys, pg_schema_url, pg_admin):
    """A missed call on 'a' and its callback on 'b' in overlapping transactions: 'b' waits
    for 'a's commit before it links, and sees its missed call (each alone would see only its
    own call, and neither would link)."""
    office, branch = Pbx(tmp_path / "a", capsys), Pbx(tmp_path / "b", capsys)
    missed = office.call(MISSED, did=DID)
    back = branch.call(CALLED_BACK)

    def writer(pbx: Pbx, pbx_id: str):
        db = open_module_db(pg_schema_url)
        config = read_pbx_config(pbx.pbx_db)
        return db, Sync(Store(db, pbx_id), CdrSource(pbx.cdr_db), config,
                        PbxClock(config.timezone or "UTC"), SyncOptions(workers=1))

    (office_db, office_sync), (branch_db, branch_sync) = writer(office, "a"), writer(branch, "b")
    reader = open_module_db(pg_schema_url, readonly=True)
    # the day's partitions made first: the first writer of a month holds them until it commits
    month_partitions(office_db, [office.unix(office.local("10:00:00", office.day)) * 1000])
    failed = []

    def branch_catches_up():
        try:
            branch_sync.catch_up()
        except Exception as exc:          # reported by the test's thread
            failed.append(exc)

    branch_thread = threading.Thread(target=branch_catches_up)
    try:
        with office_db.atomic():          # 'a's transaction stays open
            assert office_sync.step()[0] == 1
            branch_thread.start()
            waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                       "AND NOT granted AND objid = %s")
            assert wait_for(lambda: pg_admin.execute_sql(waiting, (SHARED_ROWS_LOCK,))
                            .fetchone()[0] == 1, timeout=30), "'b' did not wait for 'a'"
            time.sleep(0.2)
            assert branch_thread.is_alive()
            office_revision = office_sync.store._revision
            seen = mirror_revision(reader)      # what an open page has meanwhile
        branch_thread.join(60)
        assert failed == [] and not branch_thread.is_alive()
    finally:
        office_db.close()
        branch_db.close()
    try:
        rows = dict((linkedid, rest) for linkedid, *rest in run(
            reader, "SELECT linkedid, pbx, status, callback_of, returned_by, "
                    "callback_attempts FROM call"))
        # Revisions in commit order: the page asks for what changed since `seen` and gets
        # both calls, the one committed first and the one committed after it.
        changed = run(reader, "SELECT linkedid, revision FROM call WHERE revision > ?",
                      (seen,)).fetchall()
        assert seen < office_revision < mirror_revision(reader)
    finally:
        reader.close()
    assert rows == {f"a:{missed}": ["a", "missed", None, f"b:{back}", 0],
                    f"b:{back}": ["b", "we_called_back", f"a:{missed}", None, 0]}
    assert sorted(linkedid for linkedid, _ in changed) == [f"a:{missed}", f"b:{back}"]


def test_one_writer_per_pbx_the_others_beside_it(pbxs, pg_schema_url, cli):
    """A second daemon or sync for the same PBX is refused in one line (no password in it);
    another PBX's writer runs beside it; a bad id is refused before anything is written."""
    folder = pbxs["b"][0]
    args = ("--cdr-db", folder / "cdr.db", "--pbx-db", folder / "mikopbx.db",
            "--db", pg_schema_url)
    with CentralLock(pg_schema_url, "a"):
        code, _, err = cli("sync", *args, "--once", "--pbx-id", "a")
        assert code == 2 and err.count("\n") == 1, err
        assert "another extcdr daemon is running for PBX 'a' on postgresql://" in err
        assert ":***@" in err
        code, _, err = cli("daemon", "--db", pg_schema_url, "--cdr-db", "/nonexistent/cdr.db",
                           "--set", "pbx.id=a")
        assert code == 2 and "another extcdr daemon is running for PBX 'a'" in err, err
        assert cli("sync", *args, "--once", "--pbx-id", "b", "--batch-rows", "10000")[0] == 0
    code, _, err = cli("sync", *args, "--once", "--pbx-id", "Branch 2")
    assert code == 2 and err.count("\n") == 1 and "setting 'pbx.id' must be" in err, err
    code, _, err = cli("sync", *args, "--once")
    assert code == 2 and err.count("\n") == 1, err
    assert "it holds the history of PBX 'b'; each PBX writing a shared history needs its own " \
           "pbx.id" in err
    assert _state(pg_schema_url, "cursor:b") is not None
    assert _state(pg_schema_url, "cursor") is None
    # `extcdr status` of the central history names its PBXs; of one PBX, its calls and lag
    code, out, _ = cli("status", "--db", pg_schema_url, "--format", "json")
    assert code == 0 and json.loads(out)["pbxs"] == ["b"]
    code, out, _ = cli("status", "--db", pg_schema_url, "--format", "json", "--pbx-id", "b")
    status = json.loads(out)
    assert code == 0 and status["pbx"] == "b" and status["lag_rows"] == 0
    assert status["cursor"] == int(_state(pg_schema_url, "cursor:b")) > 0
    assert status["calls"] == len(of_pbx(dump(pg_schema_url), "b")["calls"]) > 0


def test_without_an_id_a_pbx_writes_as_before(pbxs, pg_schema_url):
    """The only PBX (no `pbx.id`): its ids as the PBX names them, pbx '', the plain cursor."""
    folder, reference = pbxs["a"]
    assert subprocess.run(sync_command(folder, pg_schema_url, "", 10**6), cwd=ROOT).returncode \
        == 0
    assert dump(pg_schema_url)["calls"] == reference["calls"]
    db = open_module_db(pg_schema_url, readonly=True)
    try:
        assert run(db, "SELECT DISTINCT pbx FROM call").fetchall() == [("",)]
    finally:
        db.close()
    assert _state(pg_schema_url, "cursor") is not None
    code, _, err = subprocess_cli(sync_command(folder, pg_schema_url, "b"))
    assert code == 2 and "it holds the history of a PBX without a pbx.id" in err, err


def subprocess_cli(command: list[str]) -> tuple[int, str, str]:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def test_a_qualified_linkedid_is_shown_annotated_and_deleted_by_its_name(
        tmp_path, capsys, pg_schema_url, cli):
    """`a:mikopbx-…` in the pages' and the API's addresses, a comment and a deletion by it;
    the deleted call stays deleted when its PBX's history is read again."""
    office = Pbx(tmp_path / "a", capsys)
    missed = office.call(MISSED, did=DID)
    sync = ("sync", "--cdr-db", office.cdr_db, "--pbx-db", office.pbx_db, "--db", pg_schema_url,
            "--pbx-id", "a")
    assert cli(*sync, "--once")[0] == 0
    call = f"a:{missed}"
    config = tmp_path / "extcdr.toml"
    config.write_text('[web]\nproxy_token = "proxy-secret"\n')
    with serving(create_app(load(config, {"module.db": pg_schema_url}))) as http:
        base = f"http://127.0.0.1:{http.effective_port}{load()['web.prefix'].rstrip('/')}"
        status, body = _get(f"{base}/calls/{call}/details")
        assert status == 200 and f"<code>{call}</code>" in body, body
        status, body = _get(f"{base}/api/v1/calls/{call}")
        assert status == 200 and json.loads(body)["call"]["linkedid"] == call, body
        assert _get(f"{base}/calls/b:{missed}/details")[0] == 404
    assert cli("comment", "--db", pg_schema_url, call, "call back at 5")[0] == 0
    code, out, err = cli("calls", "--db", pg_schema_url, "--format", "jsonl", "--from",
                         office.day, "--to", office.day)
    assert code == 0 and [(c["linkedid"], [n["text"] for n in c["comments"]])
                          for c in map(json.loads, out.splitlines())] == [
        (call, ["call back at 5"])], err
    assert cli("delete", "--db", pg_schema_url, call, "--reason", "test call")[0] == 0
    office.call(CALLED_BACK)
    assert cli(*sync, "--once")[0] == 0
    db = open_module_db(pg_schema_url, readonly=True)
    try:
        assert [linkedid for (linkedid,) in run(db, "SELECT linkedid FROM call")] == [
            f"a:{back}" for back in office_linkedids(office, missed)]
    finally:
        db.close()


def office_linkedids(office: Pbx, deleted: str) -> list[str]:
    """The PBX's linkedids but `deleted`."""
    with sqlite3.connect(office.cdr_db) as conn:
        return sorted({linkedid for (linkedid,) in conn.execute(
            "SELECT linkedid FROM cdr_general") if linkedid != deleted})


def _get(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={
        "X-Extcdr-User": "anna", "X-Extcdr-Role": "admin", "X-Extcdr-Proxy-Token": "proxy-secret"})
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_two_writers_needing_the_same_new_month_make_it_once(pg_schema_url, pg_admin):
    """'b' waits while 'a' makes the month's partitions, then finds them made (the server's
    cache of names, asked before the wait, did not know them yet: 'already exists')."""
    first, second = open_module_db(pg_schema_url), open_module_db(pg_schema_url)
    made, failed = [], []

    def second_writer():
        try:
            made.append(month_partitions(second, [NOVEMBER_2030]))
        except Exception as exc:          # reported by the test's thread
            failed.append(exc)

    waiting = threading.Thread(target=second_writer)
    try:
        with first.atomic():
            assert month_partitions(first, [NOVEMBER_2030]) == [
                "call_2030_11", "leg_2030_11", "call_employee_2030_11"]
            waiting.start()
            assert wait_for(lambda: pg_admin.execute_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()[0] == 1, timeout=30)
        waiting.join(30)
    finally:
        first.close()
        second.close()
    assert (failed, made) == ([], [[]])


NOVEMBER_2030 = 1_919_980_800_000
