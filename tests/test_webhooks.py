"""Webhooks: the writer queues each hook's events in the transaction that writes the calls,
once per hook, event and call; the daemon's sender posts them, signed, with the call record,
to a real HTTP receiver on 127.0.0.1 — retried after failures, never lost to `kill -9`, never
sent to another host or for calls from before the hook."""
from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from daemon.deliverer import Deliverer, first_due_sql, next_due_sql, post
from daemon.resident import Daemon
from mirror import webhooks
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.settings import load
from mirror.worklist import mark_handled
from tests.conftest import wait_for
from tests.mirror import append_rows, pbx_rows, sync_once
from tests.pbxfixture import DID, Pbx
from tests.test_daemon import start_daemon

SECRET = "test-secret"
KEY, EVENT, STATE = webhooks.KEY, webhooks.EVENT, webhooks.STATE   # SQL of an outbox row `o`
LOOPBACK = "127.0.0.1"      # the receivers' host: this machine, allowed by name


class Receiver:
    """A CRM's endpoint on 127.0.0.1: keeps what it got; answers `statuses` in turn, then
    200; `delay` seconds before each answer; `redirect` answers 302 to that URL."""

    def __init__(self, statuses=(), delay: float = 0.0, redirect: str | None = None):
        self.got: list[dict] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.redirect = redirect
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append({"headers": dict(self.headers), "body": body,
                                     "path": self.path, "at": time.time()})
                time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.redirect:
                    status = 302
                self.send_response(status)
                if receiver.redirect:
                    self.send_header("Location", receiver.redirect)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answer {status} ".encode() * 500)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads, self.server.block_on_close = True, False
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/crm?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys(self) -> list[str]:
        return [got["headers"][webhooks.KEY_HEADER] for got in self.got]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs):
        made.append(Receiver(**kwargs))
        return made[-1]
    yield make
    for one in made:
        one.close()


@pytest.fixture
def pbx(demo_pbx, tmp_path):
    cols, rows = pbx_rows(demo_pbx / "cdr.db")
    append_rows(tmp_path / "cdr.db", cols, [])
    db = tmp_path / "module.db"
    open_module_db(db).close()              # created and migrated, for the hooks
    return {"cdr": tmp_path / "cdr.db", "config": demo_pbx / "mikopbx.db", "cols": cols,
            "rows": rows, "db": db}


def settings_for(pbx, **extra):
    return load(None, {"pbx.cdr_db": pbx["cdr"], "pbx.config_db": pbx["config"],
                       "module.db": pbx["db"], "ami.enabled": "false",
                       "sync.poll_interval": "30", "sync.debounce": "0.05",
                       "webhooks.retry_delay": "0.01", "webhooks.check_interval": "0.05",
                       "webhooks.allowed_hosts": LOOPBACK, **extra})


def add_hook(pbx, url, events=webhooks.EVENTS, *, created_ms=0, filters=None, enabled=1,
             after_min=30) -> int:
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        return conn.execute(
            "INSERT INTO webhook (name, url, secret, events, filters, unreturned_after_min, "
            "enabled, created_ms, created_by) VALUES ('crm', ?, ?, ?, ?, ?, ?, ?, 'admin')",
            (url, SECRET, json.dumps(list(events)), json.dumps(filters or {}), after_min,
             enabled, created_ms)).lastrowid


def query(pbx, sql, params=()):
    with closing(sqlite3.connect(pbx["db"])) as conn:
        return conn.execute(sql, params).fetchall()


def mirror(pbx, rows=None, batch_rows=500):
    """The PBX's rows written and mirrored by the daemon's writer, batch by batch."""
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"] if rows is None else rows)
    daemon = Daemon(settings_for(pbx, **{"sync.batch_rows": str(batch_rows)}))
    daemon.step(0.0)
    daemon.db.close()


def deliver_due(settings, seconds: float = 20.0) -> None:
    """A sender's steps, each when the last said or an answer came (as its thread takes them),
    until nothing an enabled hook may send is pending or under way, or `seconds` passed."""
    deliverer = Deliverer(settings)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            wait = deliverer.step(time.time())
            if not deliverer.under_way and not run(
                    deliverer.db, "SELECT 1 FROM outbox o JOIN webhook w ON w.id = o.hook_id "
                    f"AND w.enabled <> 0 WHERE o.state = {webhooks.PENDING}").fetchone():
                return
            deliverer.wake.wait(wait)
            deliverer.wake.clear()
    finally:
        deliverer.close()


def send_all(pbx, **extra):
    deliver_due(settings_for(pbx, **extra))


def test_the_writer_queues_each_event_once_per_hook_and_call(pbx):
    hook = add_hook(pbx, "http://127.0.0.1:9/")
    add_hook(pbx, "http://127.0.0.1:9/", enabled=0)                   # disabled: nothing
    add_hook(pbx, "http://127.0.0.1:9/", created_ms=int(time.time() * 1000))   # history: none
    mirror(pbx)
    counts = dict(query(pbx, f"SELECT {EVENT}, count(*) FROM outbox o GROUP BY o.event"))
    missed, answered, returned, unreturned = query(
        pbx, "SELECT sum(status = 'missed'), sum(answered), "
        "sum(status = 'missed' AND returned_by IS NOT NULL), "
        "sum(status = 'missed' AND returned_by IS NULL) FROM call")[0]
    # every event of the calls as they are; a few more of calls first seen in part (batches
    # of 500 rows split them), which the sender drops when they no longer hold
    assert missed <= counts["missed"] <= missed * 1.05
    assert answered <= counts["answered"] <= answered * 1.05
    assert returned <= counts["callback"] <= returned * 1.05 and returned > 0
    assert unreturned <= counts["unreturned"] <= counts["missed"]
    assert query(pbx, "SELECT count(*) FROM call WHERE status = 'missed' AND linkedid NOT IN "
                      f"(SELECT linkedid FROM outbox WHERE event = {webhooks.MISSED})") == [(0,)]
    assert query(pbx, "SELECT DISTINCT hook_id FROM outbox") == [(hook,)]
    assert query(pbx, "SELECT count(*) FROM outbox o JOIN call c USING (linkedid) WHERE "
                      f"o.event = {webhooks.UNRETURNED} AND o.due_ms <> c.end_ms + 30 * 60000"
                 )[0][0] <= counts["unreturned"] * 0.05        # due 30 minutes after the end
    before = query(pbx, "SELECT * FROM outbox ORDER BY id")
    with closing(sqlite3.connect(pbx["cdr"])) as conn, conn:   # the PBX rewrites every row
        conn.execute("UPDATE cdr_general SET recordingfile = recordingfile || ''")
    daemon = Daemon(settings_for(pbx))
    daemon.sync.refresh([lid for (lid,) in query(pbx, "SELECT linkedid FROM call")])
    daemon.db.close()
    assert query(pbx, "SELECT * FROM outbox ORDER BY id") == before


def test_a_bulk_load_queues_the_callbacks_of_every_batch_and_across_them(demo_pbx, tmp_path):
    """A first backfill in bulk: each batch links the callbacks among its own calls, its build
    those across batches; a hook of every event gets each returned missed call's callback."""
    target = {"db": tmp_path / "module.db"}
    open_module_db(target["db"]).close()
    add_hook(target, "http://127.0.0.1:9/")
    sync_once(demo_pbx / "cdr.db", demo_pbx / "mikopbx.db", target["db"], batch_rows=300,
              range_rows=300)
    returned = {lid for (lid,) in query(target, "SELECT linkedid FROM call WHERE status = "
                                                "'missed' AND returned_by IS NOT NULL")}
    called_back = {lid for (lid,) in query(target, "SELECT linkedid FROM outbox "
                                                   f"WHERE event = {webhooks.CALLBACK}")}
    assert len(returned) > 20 and returned <= called_back
    assert len(called_back) <= len(returned) * 1.05     # a few of calls first seen in part


def test_a_hooks_filter_narrows_its_calls(pbx):
    add_hook(pbx, "http://127.0.0.1:9/", ["missed", "answered"],
             filters={"direction": "incoming", "status": "missed"})
    mirror(pbx, batch_rows=10**6)           # one batch: no call first seen in part
    sent = query(pbx, f"SELECT DISTINCT c.direction, c.status, {EVENT} FROM outbox o "
                      "JOIN call c USING (linkedid)")
    assert sent == [("incoming", "missed", "missed")]
    assert query(pbx, "SELECT count(*) FROM outbox") == query(
        pbx, "SELECT count(*) FROM call WHERE direction = 'incoming' AND status = 'missed'")


def test_deliveries_are_signed_and_carry_the_call_record(pbx, receiver):
    crm = receiver()
    add_hook(pbx, crm.url, ["missed"])
    mirror(pbx, pbx["rows"][:400])
    send_all(pbx)
    expected = query(pbx, f"SELECT {KEY}, linkedid FROM outbox o")
    assert expected and sorted(crm.keys()) == sorted(key for key, _ in expected)
    assert query(pbx, f"SELECT DISTINCT {STATE} FROM outbox o") == [("delivered",)]
    got = crm.got[0]
    headers, body = got["headers"], got["body"]
    assert got["path"] == "/hooks/crm?x=1"
    assert webhooks.verify(SECRET, headers[webhooks.TIMESTAMP_HEADER], body,
                           headers[webhooks.SIGNATURE_HEADER], time.time())
    assert not webhooks.verify("other", headers[webhooks.TIMESTAMP_HEADER], body,
                               headers[webhooks.SIGNATURE_HEADER], time.time())
    assert not webhooks.verify(SECRET, headers[webhooks.TIMESTAMP_HEADER], body,
                               headers[webhooks.SIGNATURE_HEADER], time.time() + 301)
    payload = json.loads(body)
    assert payload["event"] == "missed" == headers[webhooks.EVENT_HEADER]
    assert payload["idempotency_key"] == headers[webhooks.KEY_HEADER]
    assert payload["call"]["status"] == "missed" and payload["legs"]
    assert set(payload["call"]) >= {"linkedid", "start", "end", "direction", "src", "dst",
                                    "missed_by", "returned_by", "recordings"}
    log = query(pbx, "SELECT status, length(response), duration_ms FROM delivery")
    assert {row[0] for row in log} == {200} and max(row[1] for row in log) == 2048


def test_a_receiver_failing_three_times_gets_the_delivery_once_back(pbx, receiver):
    crm = receiver(statuses=[500, 503, 502])
    add_hook(pbx, crm.url, ["missed"], filters={"number": "linkedid:" + _first_missed(pbx)})
    mirror(pbx)
    send_all(pbx)
    assert len(set(crm.keys())) == 1 and len(crm.keys()) == 4
    assert query(pbx, f"SELECT {STATE}, attempts FROM outbox o") == [("delivered", 4)]
    assert [s for (s,) in query(pbx, "SELECT status FROM delivery ORDER BY id")] == [
        500, 503, 502, 200]


def test_a_dead_receiver_fails_after_the_retries_and_redeliver_puts_it_back(pbx, receiver):
    add_hook(pbx, "http://127.0.0.1:9/", ["missed"],
             filters={"number": "linkedid:" + _first_missed(pbx)})
    mirror(pbx)
    send_all(pbx, **{"webhooks.retries": "2"})
    (outbox_id, state, attempts), = query(pbx, f"SELECT id, {STATE}, attempts FROM outbox o")
    assert (state, attempts) == ("failed", 3)
    assert {s for (s,) in query(pbx, "SELECT status FROM delivery")} == {None}
    hook = query(pbx, "SELECT hook_id FROM outbox")[0][0]
    crm = receiver()
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        conn.execute("UPDATE webhook SET url = ?", (crm.url,))
    db = open_module_db(pbx["db"])
    webhooks.redeliver(db, hook, outbox_id)
    db.close()
    send_all(pbx)
    assert query(pbx, f"SELECT {STATE} FROM outbox o") == [("delivered",)] and len(crm.got) == 1


def test_a_disabled_hooks_events_wait_without_a_busy_loop(pbx, receiver):
    crm = receiver()
    hook = add_hook(pbx, crm.url, ["missed"])
    mirror(pbx, pbx["rows"][:300])
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        conn.execute("UPDATE webhook SET enabled = 0")
    deliverer = Deliverer(settings_for(pbx, **{"webhooks.check_interval": "2"}))
    try:
        assert deliverer.step(time.time()) == 2.0 and crm.got == []
    finally:
        deliverer.close()
    assert query(pbx, f"SELECT DISTINCT {STATE} FROM outbox o") == [("pending",)]
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        conn.execute("UPDATE webhook SET enabled = 1 WHERE id = ?", (hook,))
    send_all(pbx)
    assert query(pbx, f"SELECT DISTINCT {STATE} FROM outbox o") == [("delivered",)] and crm.got


def test_only_the_configured_host_and_schemes(receiver):
    elsewhere = receiver()
    crm = receiver(redirect=elsewhere.url)
    outcome = post(crm.url, b"{}", {}, 2, 2, hosts=[LOOPBACK])
    assert outcome.status == 302 and not outcome.delivered and elsewhere.got == []
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1:70/",
                "http:///nohost", "http://user:pw@127.0.0.1/"):
        refused = post(url, b"{}", {}, 2, 2, hosts=[LOOPBACK])
        assert refused.status is None and refused.response.startswith("refused")
        with pytest.raises(webhooks.WebhookError):
            webhooks.check_url(url)
    other = post(crm.url, b"{}", {}, 2, 2, hosts=["crm.example.com"])
    assert other.response.startswith("refused") and len(crm.got) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "169.254.169.254", "0.0.0.0",
                                  "[::ffff:127.0.0.1]", "224.0.0.1"])
def test_this_pbx_and_special_addresses_are_refused_unless_listed(host):
    url = f"http://{host}:8080/latest/meta-data/"
    with pytest.raises(webhooks.WebhookError, match="this PBX or a special address"):
        webhooks.check_url(url)
    listed = host.strip("[]")
    assert webhooks.check_url(url, [listed]) == url
    for lan in ("http://192.168.1.10/crm", "http://10.0.0.5:8443/in", "http://[fd00::5]/in"):
        assert webhooks.check_url(lan) == lan                    # a CRM on the office LAN


def test_a_name_is_resolved_once_and_the_request_goes_to_that_address(receiver):
    """Names resolving to this PBX (and its numeric spellings) are refused when sent; a listed
    name is sent to the address it resolved to, with the name as the Host."""
    crm = receiver()
    port = crm.server.server_port
    for url in (f"http://localhost:{port}/in", f"http://2130706433:{port}/in",
                f"http://0x7f.1:{port}/in"):
        refused = post(url, b"{}", {}, 2, 2)
        assert refused.status is None and "special address (127.0.0.1)" in refused.response
    assert crm.got == []
    sent = post(f"http://localhost:{port}/in", b"{}", {}, 2, 2, hosts=["localhost"])
    assert sent.delivered and crm.got[0]["headers"]["Host"] == f"localhost:{port}"


def test_a_host_name_that_cannot_be_a_name_is_refused_when_saved():
    with pytest.raises(webhooks.WebhookError, match="host name is not valid"):
        webhooks.check_url("http://" + "a" * 70 + ".example/hook")
    refused = post("http://" + "a" * 70 + ".example/hook", b"{}", {}, 2, 2)
    assert refused.status is None and refused.response.startswith("refused")


def test_unreturned_waits_and_is_dropped_once_returned(pbx, receiver):
    crm = receiver()
    add_hook(pbx, crm.url, ["unreturned"], after_min=1)
    mirror(pbx)
    send_all(pbx)
    sent = {json.loads(got["body"])["call"]["linkedid"] for got in crm.got}
    unreturned = {lid for (lid,) in query(
        pbx, "SELECT linkedid FROM call WHERE status = 'missed' AND returned_by IS NULL")}
    assert sent == unreturned
    cancelled = query(pbx, "SELECT c.returned_by IS NOT NULL, c.status FROM outbox o "
                           f"JOIN call c USING (linkedid) WHERE o.state = {webhooks.CANCELLED}")
    assert (1, "missed") in cancelled and (0, "missed") not in cancelled
    assert query(pbx, "SELECT DISTINCT d.response FROM delivery d JOIN outbox o "
                      f"ON o.id = d.outbox_id WHERE o.state = {webhooks.CANCELLED}") == [
        ("cancelled: the call is no longer unreturned",)]


def test_unreturned_is_dropped_once_the_crm_marked_the_call_handled(pbx, receiver):
    crm = receiver()
    add_hook(pbx, crm.url, ["unreturned"], after_min=1)
    mirror(pbx)
    unreturned = sorted(lid for (lid,) in query(
        pbx, "SELECT linkedid FROM call WHERE status = 'missed' AND returned_by IS NULL"))
    db = open_module_db(pbx["db"])
    try:
        mark_handled(db, unreturned[0], "token:CRM", "called from the CRM",
                     int(time.time() * 1000))
    finally:
        db.close()
    send_all(pbx)
    sent = {json.loads(got["body"])["call"]["linkedid"] for got in crm.got}
    assert sent == set(unreturned[1:])
    assert query(pbx, "SELECT d.response FROM delivery d JOIN outbox o ON o.id = d.outbox_id "
                      "WHERE o.linkedid = ?", (unreturned[0],)) == [
        ("cancelled: the call was marked handled",)]


def test_kill_9_between_commit_and_delivery_loses_nothing(pbx, receiver):
    """The daemon is killed while requests are under way; the next one sends what is left:
    every event arrives, a repeat only with the same idempotency key."""
    slow = receiver(delay=0.3)
    add_hook(pbx, slow.url, ["missed", "answered"])
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:300])
    proc = start_daemon(pbx, "--set", "webhooks.retry_delay=0.05",
                        "--set", f"webhooks.allowed_hosts={LOOPBACK}",
                        "--set", "webhooks.check_interval=0.1")
    try:
        assert wait_for(lambda: len(slow.got) >= 6, 20)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    queued = {key for (key,) in query(pbx, f"SELECT {KEY} FROM outbox o")}
    assert query(pbx, f"SELECT count(*) FROM outbox WHERE state = {webhooks.PENDING}")[0][0] > 0
    fast = receiver()
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        conn.execute("UPDATE webhook SET url = ?", (fast.url,))
    proc = start_daemon(pbx, "--set", "webhooks.check_interval=0.1",
                        "--set", f"webhooks.allowed_hosts={LOOPBACK}")
    try:
        assert wait_for(lambda: not query(
            pbx, f"SELECT 1 FROM outbox WHERE state <> {webhooks.DELIVERED}"), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    received = slow.keys() + fast.keys()
    assert set(received) == queued
    assert len(received) - len(queued) <= 1        # at most the one request under way
    delivered = {key for (key,) in query(
        pbx, f"SELECT {KEY} FROM outbox o WHERE state = {webhooks.DELIVERED}")}
    assert delivered == queued


def test_a_hanging_receiver_neither_slows_the_sync_nor_holds_sigterm(pbx, receiver):
    hanging = receiver(delay=30)
    add_hook(pbx, hanging.url, ["missed", "answered"])
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:200])
    proc = start_daemon(pbx, "--set", "webhooks.read_timeout=60",
                        "--set", f"webhooks.allowed_hosts={LOOPBACK}")
    try:
        assert wait_for(lambda: hanging.got, 20)
        mirrored = query(pbx, "SELECT count(*) FROM call")[0][0]
        append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][200:400])     # the sync goes on
        assert wait_for(lambda: query(pbx, "SELECT count(*) FROM call")[0][0] > mirrored, 5)
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - started < 5
    assert query(pbx, f"SELECT count(*) FROM outbox WHERE state = {webhooks.PENDING}")[0][0] > 0


def test_a_slow_crm_holds_up_only_its_own_hook(pbx, receiver):
    """Two CRMs: one answers only after the read timeout, the other at once. While the slow
    one hangs, every delivery to the fast one arrives within 2 s of the commit that queued
    it, and SIGTERM still stops the daemon within 5 s."""
    slow, fast = receiver(delay=10), receiver()

    def timed_out() -> int:
        return query(pbx, "SELECT count(*) FROM delivery d JOIN outbox o ON o.id = d.outbox_id "
                          "JOIN webhook w ON w.id = o.hook_id WHERE w.url = ? "
                          "AND d.status IS NULL AND d.response LIKE '%timed out'",
                     (slow.url,))[0][0]
    add_hook(pbx, slow.url, ["missed", "answered"])
    add_hook(pbx, fast.url, ["missed", "answered"])
    proc = start_daemon(pbx, "--set", "webhooks.read_timeout=1.5",
                        "--set", "webhooks.retry_delay=0.05", "--set", "sync.batch_rows=100",
                        "--set", f"webhooks.allowed_hosts={LOOPBACK}")
    try:
        for start in range(0, 500, 100):          # calls keep coming while the slow one hangs
            append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][start:start + 100])
            time.sleep(0.5)
        assert wait_for(lambda: query(pbx, "SELECT count(*) FROM leg") == [(500,)] and not query(
            pbx, "SELECT 1 FROM outbox o JOIN webhook w ON w.id = o.hook_id WHERE w.url = ? "
                 f"AND o.state = {webhooks.PENDING}", (fast.url,)) and timed_out() >= 1, 20)
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - started < 5
    queued = dict(query(pbx, f"SELECT {KEY}, o.created_ms FROM outbox o JOIN webhook w "
                             "ON w.id = o.hook_id WHERE w.url = ? "
                             f"AND o.state = {webhooks.DELIVERED}",
                        (fast.url,)))
    arrived = {}
    for got in fast.got:
        arrived.setdefault(got["headers"][webhooks.KEY_HEADER], got["at"])
    assert len(queued) > 100 and set(arrived) == set(queued)
    latency_ms = sorted(arrived[key] * 1000 - queued[key] for key in queued)
    assert latency_ms[-1] <= 2000, latency_ms[-5:]
    assert len(slow.got) >= timed_out() >= 1
    assert query(pbx, "SELECT count(*) FROM outbox o JOIN webhook w ON w.id = o.hook_id "
                      f"WHERE w.url = ? AND o.state = {webhooks.PENDING}", (slow.url,))[0][0] > 100


def test_the_next_row_of_a_hook_is_found_among_the_pending_not_its_history(pbx):
    """A hook's month of settled rows is not read to find its next due row: its rows due at
    once are walked by id from where its first one may be (`next_id`, moved on by each one
    settled), those that wait for a time by their index in due order (no sort)."""
    add_hook(pbx, "http://127.0.0.1:9/")
    mirror(pbx)
    db = open_module_db(pbx["db"])
    try:
        db.execute_sql(f"UPDATE outbox SET state = {webhooks.DELIVERED} WHERE id % 10 <> 0")
        steps = [row[3] for sql in (first_due_sql(False), next_due_sql(False, "json_each(?) AS busy"))
                 for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql,
                                           (0, None) if "?1" in sql else ("[]",))]
    finally:
        db.close()
    assert steps.count("SEARCH outbox USING INTEGER PRIMARY KEY (rowid>?)") == 2, steps
    assert "SEARCH outbox USING INDEX outbox_due (due_ms>? AND due_ms<?)" in steps, steps
    assert "SEARCH outbox USING INDEX outbox_due (due_ms>?)" in steps, steps
    assert not any("TEMP B-TREE" in step or "SCAN outbox" in step for step in steps), steps


def test_a_hook_delivers_its_rows_due_at_once_and_those_put_back(pbx, receiver):
    """Every row due at once goes, each moving the hook's `next_id` past it; one answered
    500 goes again at its retry's time, and one the page puts back (Redeliver) goes again,
    though both are behind `next_id` by then."""
    target = receiver(statuses=[500])
    hook = add_hook(pbx, target.url, ["missed", "answered", "callback"])
    mirror(pbx, rows=pbx["rows"][:300])
    keys = {key: event_id for key, event_id in query(pbx, f"SELECT {KEY}, id FROM outbox o")}
    assert len(keys) > 20 and query(pbx, "SELECT max(due_ms) FROM outbox") == [(0,)]
    deliver_due(settings_for(pbx))
    got = [one["headers"][webhooks.KEY_HEADER] for one in target.got]
    assert set(got) == set(keys) and len(got) == len(keys) + 1     # the 500's key twice
    assert query(pbx, "SELECT next_id FROM webhook WHERE id = ?", (hook,)) == [
        (max(keys.values()) + 1,)]
    again = min(keys, key=keys.get)
    db = open_module_db(pbx["db"])
    try:
        webhooks.redeliver(db, hook, keys[again])
    finally:
        db.close()
    deliver_due(settings_for(pbx))
    assert [one["headers"][webhooks.KEY_HEADER] for one in target.got[len(got):]] == [again]
    assert query(pbx, f"SELECT count(*) FROM outbox WHERE state <> {webhooks.DELIVERED}"
                 ) == [(0,)]


def test_a_callback_re_linked_after_a_deletion_is_queued_once(tmp_path, capsys):
    """A missed call, the client's callback, a later answered call of theirs; the callback is
    deleted and the next sync re-links the missed call to that later call. A hook that was off
    when the callback came gets the missed call's callback event now — once, and nothing of
    the other calls; the hook that already had it keeps its one."""
    pbx = Pbx(tmp_path, capsys)
    open_module_db(pbx.module_db).close()
    db = {"db": pbx.module_db}
    had_it = add_hook(db, "http://127.0.0.1:9/", ["callback"])
    was_off = add_hook(db, "http://127.0.0.1:9/", ["callback"], enabled=0)
    missed = pbx.call("""
        start    | end      | src          | dst | dialstatus
        10:00:00 | 10:00:25 | +79161234567 | 201 | CANCEL
        """, did=DID)
    callback = pbx.call("""
        start    | answer   | end      | src          | dst
        11:00:00 | 11:00:05 | 11:03:05 | +79161234567 | 202
        """, did=DID)
    later = pbx.call("""
        start    | answer   | end      | src         | dst
        12:00:00 | 12:00:04 | 12:01:04 | 89161234567 | 203
        """, did=DID)
    pbx.sync()
    assert pbx.record(missed)["returned_by"] == callback
    events = f"SELECT hook_id, {EVENT}, linkedid FROM outbox o ORDER BY hook_id"
    assert query(db, events) == [(had_it, "callback", missed)]
    with closing(sqlite3.connect(pbx.module_db)) as conn, conn:
        conn.execute("UPDATE webhook SET enabled = 1")
    daemon = Daemon(settings_for({"cdr": pbx.cdr_db, "config": pbx.pbx_db, **db}))
    try:
        assert daemon.sync.step() == (0, 0)         # a running daemon's pass: nothing new
        code, _, err = pbx.cli("delete", "--db", pbx.module_db, callback, "--reason", "gdpr")
        assert code == 0, err
        assert daemon.sync.step() == (0, 0)         # its next pass settles the deletion
        queued = [(had_it, "callback", missed), (was_off, "callback", missed)]
        assert query(db, events) == queued
        daemon.step(0.0)                             # a whole pass: the PBX's rows read again
        assert query(db, events) == queued
    finally:
        daemon.db.close()
    assert pbx.record(missed)["returned_by"] == later
    assert pbx.record(later)["callback_of"] == missed


def _first_missed(pbx) -> str:
    """The linkedid of the demo's first missed call (mirrored in a scratch copy)."""
    from tests.mirror import sync_once
    scratch = pbx["db"].with_name("scratch.db")
    cdr = pbx["cdr"].with_name("scratch-cdr.db")
    append_rows(cdr, pbx["cols"], pbx["rows"])
    sync_once(cdr, pbx["config"], scratch)
    with closing(sqlite3.connect(scratch)) as conn:
        return conn.execute("SELECT linkedid FROM call WHERE status = 'missed' "
                            "AND direction = 'incoming' ORDER BY id LIMIT 1").fetchone()[0]


def test_the_cli_lists_the_hooks_and_their_log(pbx, cli):
    hook = add_hook(pbx, "http://127.0.0.1:9/", ["missed"])
    mirror(pbx, pbx["rows"][:300])
    code, out, _ = cli("webhooks", "list", "--db", str(pbx["db"]))
    assert code == 0 and "crm" in out and "pending" in out and SECRET not in out
    code, out, _ = cli("webhooks", "log", str(hook), "--db", str(pbx["db"]), "--format", "json")
    log = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and log and {row["state"] for row in log} == {"pending"}
    assert [row["id"] for row in log] == sorted((row["id"] for row in log), reverse=True)
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        conn.execute(f"UPDATE outbox SET state = {webhooks.FAILED}, attempts = 9")
    code, _, _ = cli("webhooks", "log", str(hook), "--db", str(pbx["db"]),
                     "--redeliver", str(log[0]["id"]))
    assert code == 0 and query(pbx, f"SELECT {STATE}, attempts FROM outbox o WHERE id = ?",
                               (log[0]["id"],)) == [("pending", 0)]
    code, _, err = cli("webhooks", "log", "99", "--db", str(pbx["db"]))
    assert code == 2 and "no such webhook" in err


def test_settled_events_go_after_a_month_and_a_resync_never_queues_them_again(pbx):
    hook = add_hook(pbx, "http://127.0.0.1:9/", ["missed", "answered"])
    mirror(pbx)
    ids = [i for (i,) in query(pbx, "SELECT id FROM outbox ORDER BY id")]
    old, settled_lately, pending_long = ids[:-20], ids[-20:-10], ids[-10:]
    now_ms = int(time.time() * 1000)
    month_ago = now_ms - webhooks.KEPT_MS - 1
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        conn.executemany(f"UPDATE outbox SET state = {webhooks.DELIVERED}, created_ms = ? "
                         "WHERE id = ?", [(month_ago, i) for i in old])
        conn.executemany(f"UPDATE outbox SET state = {webhooks.FAILED} WHERE id = ?",
                         [(i,) for i in settled_lately])
        conn.executemany("UPDATE outbox SET created_ms = ? WHERE id = ?",       # still pending
                         [(month_ago, i) for i in pending_long])
        conn.executemany("INSERT INTO delivery (outbox_id, at_ms, status, duration_ms) "
                         "VALUES (?, ?, 200, 5)", [(i, month_ago) for i in ids])
    db = open_module_db(pbx["db"])
    assert webhooks.prune(db, now_ms) == len(old)
    db.close()
    kept = [i for (i,) in query(pbx, "SELECT id FROM outbox ORDER BY id")]
    assert kept == settled_lately + pending_long          # the recent and the pending stay
    assert sorted(i for (i,) in query(pbx, "SELECT outbox_id FROM delivery")) == kept
    assert query(pbx, "SELECT forgotten_before_ms FROM webhook WHERE id = ?", (hook,)) == [
        (month_ago,)]
    # A resync (a restored backup) reads every call again: the forgotten events are not
    # queued a second time.
    with closing(sqlite3.connect(pbx["db"])) as conn, conn:
        conn.execute("UPDATE sync_state SET value = '0' WHERE key = 'cursor'")
    mirror(pbx, rows=[])
    assert [i for (i,) in query(pbx, "SELECT id FROM outbox ORDER BY id")] == kept


def test_schema_15_keeps_the_outbox_its_keys_states_and_log(tmp_path):
    """An outbox of schema 14 (events and states by name) becomes codes: the same rows, keys,
    log and counts; the pending row stays due and a key already queued is not queued again."""
    from tests.test_schema import at_version
    path = tmp_path / "module.db"
    at_version(path, 14)
    rows = [(1, "missed", "mikopbx-1.1", "pending", 0),
            (2, "unreturned", "mikopbx-1.1", "cancelled", 0),
            (3, "answered", "mikopbx-2.5", "delivered", 1),
            (4, "callback", "mikopbx-1.1", "failed", 9)]
    with closing(sqlite3.connect(path)) as conn, conn:
        hook = conn.execute(
            "INSERT INTO webhook (name, url, secret, events, created_ms, created_by) "
            "VALUES ('crm', 'http://127.0.0.1:9/', 's', '[\"missed\"]', 0, 'admin')").lastrowid
        conn.executemany(
            "INSERT INTO outbox (id, hook_id, event, linkedid, created_ms, due_ms, attempts, "
            "state) VALUES (?, ?, ?, ?, 5, 7, ?, ?)",
            [(n, hook, event, linkedid, attempts, state)
             for n, event, linkedid, state, attempts in rows])
        conn.execute("INSERT INTO delivery (outbox_id, at_ms, status, response, duration_ms) "
                     "VALUES (3, 6, 200, 'ok', 12)")
    db = open_module_db(path)
    try:
        log = webhooks.deliveries(db, hook)
        assert [(r["id"], r["event"], r["linkedid"], r["state"], r["attempts"])
                for r in log] == [(n, e, lid, s, a) for n, e, lid, s, a in reversed(rows)]
        assert [r["idempotency_key"] for r in log] == [
            f"{hook}:{event}:{linkedid}" for _, event, linkedid, _, _ in reversed(rows)]
        assert (log[1]["status"], log[1]["response"]) == (200, "ok")
        assert webhooks.deliveries(db, hook + 1) == []             # another hook's log
        assert webhooks.hook_of(db, hook)["counts"] == {
            "pending": 1, "cancelled": 1, "delivered": 1, "failed": 1}
        assert db.execute_sql("INSERT OR IGNORE INTO outbox (hook_id, event, linkedid, "
                              "created_ms, due_ms) VALUES (?, ?, 'mikopbx-1.1', 8, 8)",
                              (hook, webhooks.MISSED)).rowcount == 0
        assert db.execute_sql(f"SELECT id FROM outbox WHERE state = {webhooks.PENDING} "
                              "AND due_ms <= 7").fetchall() == [(1,)]
        webhooks.redeliver(db, hook, 4, now_ms=9)
        assert webhooks.deliveries(db, hook, limit=1)[0]["state"] == "pending"
    finally:
        db.close()
