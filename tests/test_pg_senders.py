"""The daemon's senders on a central history (issue 22): the writer fills the webhooks' outbox
on PostgreSQL as on SQLite, the deliverer posts from it to a real HTTP receiver on 127.0.0.1,
mailed reports go to a real SMTP server — and with several daemons (one a PBX) on one
database, each event is delivered once and each report mailed once.

Each test writes into a fresh schema of the session's real PostgreSQL server (pg_schema_url).
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import threading
import time

import pytest

from cli import main as cli_main
from daemon.resident import Daemon
from mirror import webhooks
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.pbxtime import PbxClock
from mirror.report_rows import Owner
from mirror.settings import load
from mirror.worklist import mark_handled
from reports.definitions import report_form, save_report
from reports.scheduler import ReportScheduler
from tests.conftest import wait_for
from tests.mirror import append_rows, pbx_rows, query
from tests.test_daemon import start_daemon
from tests.test_reports import DUE, set_pbx_mail, smtp  # noqa: F401  (fixtures)
from tests.test_webhooks import LOOPBACK, deliver_due, receiver  # noqa: F401  (fixtures)

EVENT, STATE = webhooks.EVENT, webhooks.STATE       # SQL of an outbox row `o`


@pytest.fixture
def pbx(demo_pbx, tmp_path):
    cols, rows = pbx_rows(demo_pbx / "cdr.db")
    append_rows(tmp_path / "cdr.db", cols, [])
    return {"cdr": tmp_path / "cdr.db", "config": demo_pbx / "mikopbx.db", "cols": cols,
            "rows": rows}


def settings_for(pbx, target, **extra):
    return load(None, {"pbx.cdr_db": pbx["cdr"], "pbx.config_db": pbx["config"],
                       "module.db": target, "ami.enabled": "false",
                       "sync.poll_interval": "30", "sync.debounce": "0.05",
                       "webhooks.retry_delay": "0.01", "webhooks.check_interval": "0.05",
                       "webhooks.allowed_hosts": LOOPBACK, **extra})


def run_sql(target, sql, params=()):
    db = open_module_db(target)
    try:
        with db.atomic():
            run(db, sql, params)
    finally:
        db.close()


def add_hook(target, url, events=webhooks.EVENTS, **form) -> int:
    """A hook as the page saves it, created before every call of the demo."""
    db = open_module_db(target)
    try:
        values = webhooks.hook_values({"name": "crm", "url": url, "events": events,
                                       "enabled": "1", **form}, [LOOPBACK])
        return webhooks.create_hook(db, values, "admin", now_ms=0)
    finally:
        db.close()


def mirror(pbx, target, rows=None, batch_rows=500):
    """The PBX's rows written and mirrored by the daemon's writer, batch by batch."""
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"] if rows is None else rows)
    daemon = Daemon(settings_for(pbx, target, **{"sync.batch_rows": str(batch_rows)}))
    daemon.step(0.0)
    daemon.db.close()


def outbox(target) -> list[tuple]:
    return query(target, f"SELECT o.hook_id, {EVENT}, o.linkedid, o.due_ms, {STATE} "
                         "FROM outbox o ORDER BY 2, 3, 1")


def test_numbered_marks_mean_the_same_on_both_engines(mirror_target):
    """`?N` is the N-th value, used as often as it is written; a bare `?` after them is one
    past the largest number so far (peewee's marks after a statement's own): SQLite's rule."""
    open_module_db(mirror_target).close()
    assert query(mirror_target, "SELECT ?2, ?1, ?2 || '?1', ?, ?", ("a", "b", "c", "d")) == [
        ("b", "a", "b?1", "c", "d")]


def test_the_writer_queues_the_same_events_on_both_engines(pbx, tmp_path, pg_schema_url):
    queued = {}
    for n, target in enumerate((tmp_path / "module.db", pg_schema_url)):
        pbx = {**pbx, "cdr": tmp_path / f"cdr{n}.db"}          # each engine its own PBX
        open_module_db(target).close()
        add_hook(target, "http://127.0.0.1:9/")
        add_hook(target, "http://127.0.0.1:9/", ["missed"],
                 filters="direction=incoming&employee=201")
        mirror(pbx, target)
        queued[str(target)] = outbox(target)
    on_sqlite, on_postgresql = queued.values()
    assert len(on_sqlite) > 1000 and {row[1] for row in on_sqlite} == set(webhooks.EVENTS)
    assert {row[0] for row in on_sqlite} == {1, 2}
    assert on_postgresql == on_sqlite


def test_a_call_rewritten_is_queued_once_per_hook_and_event(pbx, pg_schema_url):
    open_module_db(pg_schema_url).close()
    add_hook(pg_schema_url, "http://127.0.0.1:9/")
    mirror(pbx, pg_schema_url, pbx["rows"][:300])
    before = outbox(pg_schema_url)
    daemon = Daemon(settings_for(pbx, pg_schema_url))
    daemon.sync.refresh([lid for (lid,) in query(pg_schema_url, "SELECT linkedid FROM call")])
    daemon.db.close()
    assert before and outbox(pg_schema_url) == before


def test_a_webhook_goes_from_a_postgresql_history_to_a_real_receiver(pbx, pg_schema_url,
                                                                      receiver, cli):
    crm = receiver(statuses=[500])                 # the first answer fails: tried again
    hook = add_hook(pg_schema_url, crm.url, ["missed"])
    mirror(pbx, pg_schema_url, pbx["rows"][:400])
    deliver_due(settings_for(pbx, pg_schema_url))
    keys = query(pg_schema_url, f"SELECT {webhooks.KEY} FROM outbox o")
    assert keys and sorted(crm.keys()) == sorted([key for (key,) in keys] + crm.keys()[:1])
    assert query(pg_schema_url, f"SELECT DISTINCT {STATE} FROM outbox o") == [("delivered",)]
    (secret,) = query(pg_schema_url, "SELECT secret FROM webhook")[0]
    got = crm.got[-1]
    assert webhooks.verify(secret, got["headers"][webhooks.TIMESTAMP_HEADER], got["body"],
                           got["headers"][webhooks.SIGNATURE_HEADER], time.time())
    body = json.loads(got["body"])
    assert body["event"] == "missed" and body["call"]["status"] == "missed" and body["legs"]
    # the admin's side reads the same history: the hooks, the log, Redeliver
    code, out, _ = cli("webhooks", "list", "--db", pg_schema_url)
    assert code == 0 and "crm" in out and "delivered" in out and secret not in out
    code, out, _ = cli("webhooks", "log", str(hook), "--db", pg_schema_url, "--format", "json")
    log = [json.loads(line) for line in out.splitlines()]
    assert len(log) == len(keys) and {row["status"] for row in log} == {200}
    assert [row["id"] for row in log] == sorted((row["id"] for row in log), reverse=True)
    code, _, _ = cli("webhooks", "log", str(hook), "--db", pg_schema_url,
                     "--redeliver", str(log[0]["id"]))
    assert code == 0
    deliver_due(settings_for(pbx, pg_schema_url))
    assert crm.keys()[-1] == log[0]["idempotency_key"] and len(crm.got) == len(keys) + 2


def test_unreturned_is_cancelled_once_marked_handled_on_postgresql(pbx, pg_schema_url,
                                                                   receiver):
    crm = receiver()
    add_hook(pg_schema_url, crm.url, ["unreturned"], unreturned_after_min="1")
    mirror(pbx, pg_schema_url, pbx["rows"][:600])
    unreturned = sorted(lid for (lid,) in query(
        pg_schema_url, "SELECT linkedid FROM call WHERE status = 'missed' "
                       "AND returned_by IS NULL"))
    db = open_module_db(pg_schema_url)
    try:
        mark_handled(db, unreturned[0], "token:CRM", "called from the CRM",
                     int(time.time() * 1000))
    finally:
        db.close()
    deliver_due(settings_for(pbx, pg_schema_url))
    sent = {json.loads(got["body"])["call"]["linkedid"] for got in crm.got}
    assert len(unreturned) > 1 and sent == set(unreturned[1:])
    assert query(pg_schema_url, "SELECT d.response FROM delivery d JOIN outbox o "
                                "ON o.id = d.outbox_id WHERE o.linkedid = ?",
                 (unreturned[0],)) == [("cancelled: the call was marked handled",)]


def test_two_daemons_deliver_each_event_once(pbx, pg_schema_url, receiver):
    """Two PBXs' daemons send from one central history at once: every event arrives, and
    none twice (each hook's lane is one daemon's at a time)."""
    crms = [receiver(delay=0.01), receiver(delay=0.01)]
    for crm in crms:
        add_hook(pg_schema_url, crm.url, ["missed", "answered"])
    mirror(pbx, pg_schema_url, pbx["rows"][:600])
    settings = settings_for(pbx, pg_schema_url)
    senders = [threading.Thread(target=deliver_due, args=(settings, 60.0)) for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    delivered = sorted(key for (key,) in query(
        pg_schema_url, f"SELECT {webhooks.KEY} FROM outbox o WHERE {STATE} = 'delivered'"))
    sent = crms[0].keys() + crms[1].keys()
    assert len(delivered) > 100 and crms[0].got and crms[1].got
    assert sorted(sent) == delivered                                # each once, none lost
    # the rest were calls first seen in part that turned out otherwise: cancelled, once
    assert query(pg_schema_url, f"SELECT DISTINCT {STATE} FROM outbox o WHERE {STATE} <> "
                                "'delivered'") in ([], [("cancelled",)])
    assert query(pg_schema_url, "SELECT count(*) FROM delivery") == query(
        pg_schema_url, "SELECT count(*) FROM outbox")


def test_settled_events_go_after_a_month_on_postgresql(pbx, pg_schema_url):
    add_hook(pg_schema_url, "http://127.0.0.1:9/", ["missed"])
    mirror(pbx, pg_schema_url, pbx["rows"][:300])
    run_sql(pg_schema_url, f"UPDATE outbox SET state = {webhooks.DELIVERED}, created_ms = 5")
    db = open_module_db(pg_schema_url)
    try:
        gone = webhooks.prune(db, webhooks.KEPT_MS + 10)
    finally:
        db.close()
    assert gone > 0 and query(pg_schema_url, "SELECT count(*) FROM outbox") == [(0,)]
    assert query(pg_schema_url, "SELECT forgotten_before_ms FROM webhook") == [(5,)]


def test_the_hooks_page_changes_and_deletes_a_hook_on_postgresql(pbx, pg_schema_url):
    hook = add_hook(pg_schema_url, "http://127.0.0.1:9/", ["missed"])
    add_hook(pg_schema_url, "http://127.0.0.1:9/", ["missed"], name="Another")
    mirror(pbx, pg_schema_url, pbx["rows"][:300])
    db = open_module_db(pg_schema_url)
    try:
        assert [row["name"] for row in webhooks.hooks(db)] == ["Another", "crm"]
        secret = webhooks.hook_of(db, hook)["secret"]
        webhooks.change_hook(db, hook, webhooks.hook_values(
            {"name": "CRM", "url": "http://127.0.0.1:8/", "events": ["answered"]}, [LOOPBACK]))
        assert webhooks.renew_secret(db, hook) != secret
        changed = webhooks.hook_of(db, hook)
        assert (changed["name"], changed["url"], changed["events"], changed["enabled"]) == (
            "CRM", "http://127.0.0.1:8/", ["answered"], 0)
        assert changed["counts"]["pending"] > 0
        webhooks.delete_hook(db, hook)
        with pytest.raises(LookupError):
            webhooks.hook_of(db, hook)
        with pytest.raises(LookupError):
            webhooks.redeliver(db, hook, 1)
    finally:
        db.close()
    assert query(pg_schema_url, "SELECT DISTINCT hook_id FROM outbox") == [(hook + 1,)]


# --- mailed reports -----------------------------------------------------------------------------

@pytest.fixture
def mailing_pbx(demo_pbx, smtp, tmp_path):
    """A copy of the demo PBX whose mail settings name the test's SMTP server."""
    copy = tmp_path / "mailing-pbx"
    shutil.copytree(demo_pbx, copy)
    set_pbx_mail(copy, MailSMTPHost="127.0.0.1", MailSMTPPort=str(smtp.port),
                 MailSMTPUseTLS="none", MailSMTPSenderAddress="pbx@example.com")
    smtp.mails.clear()
    return copy


def report_settings(pbx, target, reports_dir):
    return load(None, {"module.db": target, "pbx.config_db": pbx / "mikopbx.db",
                       "reports.retries": 2, "reports.retry_delay": 1,
                       "reports.dir": str(reports_dir)})


def add_report(target, name: str, due_s: float, **fields) -> int:
    """The boss's report of last week's incoming calls as CSV, due at `due_s`."""
    db = open_module_db(target)
    try:
        form = report_form({"name": name, "period": "last_week", "frequency": "daily",
                            "at": "08:00", "format": "csv", "delivery": "attach",
                            "link_hours": "72", "recipients": "boss@example.com",
                            "direction": "incoming", **fields}, "en")
        report_id = save_report(db, Owner("boss", "admin", ()), form,
                                link_base="http://127.0.0.1", clock=PbxClock("Europe/Berlin"))
        with db.atomic():
            run(db, "UPDATE report SET next_run_ms = ? WHERE id = ?",
                (int(due_s * 1000), report_id))
        return report_id
    finally:
        db.close()


def mailed_rows(mail) -> list[list[str]]:
    [part] = list(mail.iter_attachments())
    return list(csv.reader(io.StringIO(part.get_content())))


def test_a_report_is_mailed_from_a_postgresql_history_as_from_sqlite(
        mailing_pbx, smtp, demo_mirror, pg_schema_url, tmp_path):
    mailed = {}
    for target in (tmp_path / "module.db", pg_schema_url):
        if target == pg_schema_url:
            assert cli_main(["sync", "--cdr-db", str(mailing_pbx / "cdr.db"), "--pbx-db",
                             str(mailing_pbx / "mikopbx.db"), "--db", target, "--once"]) == 0
        else:
            shutil.copy(demo_mirror, target)
        report_id = add_report(target, "Incoming", DUE)
        scheduler = ReportScheduler(report_settings(mailing_pbx, target, tmp_path / "files"))
        try:
            scheduler.step(DUE)
        finally:
            scheduler.close()
        [mail] = smtp.take()
        assert mail["To"] == "boss@example.com" and "Incoming" in mail["Subject"]
        mailed[str(target)] = mailed_rows(mail)
        assert query(target, "SELECT status, calls, attempts FROM report_send "
                             "WHERE report_id = ?", (report_id,)) == [
            ("sent", len(mailed[str(target)]) - 1, 1)]
        assert query(target, "SELECT next_run_ms FROM report") == [
            (int(DUE * 1000) + 86_400_000,)]
    from_sqlite, from_postgresql = mailed.values()
    assert len(from_sqlite) > 10 and from_postgresql == from_sqlite


def test_two_daemons_mail_each_due_report_once(mailing_pbx, smtp, pg_schema_url, tmp_path):
    """Two PBXs' daemons look at one central history's reports at the same moment: each due
    report is mailed once — a report claimed by one is not the other's, nor is its send
    under way (taken for one a crash interrupted) — and a retry once too."""
    assert cli_main(["sync", "--cdr-db", str(mailing_pbx / "cdr.db"), "--pbx-db",
                     str(mailing_pbx / "mikopbx.db"), "--db", pg_schema_url, "--once"]) == 0
    names = [f"Incoming {n}" for n in range(6)]
    for name in names:
        add_report(pg_schema_url, name, DUE)
    schedulers = [ReportScheduler(report_settings(mailing_pbx, pg_schema_url,
                                                  tmp_path / f"files{n}")) for n in range(2)]
    start = threading.Barrier(2)

    def look(scheduler, now_s):
        start.wait()
        scheduler.step(now_s)
    try:
        for now_s in (DUE, DUE + 1):
            lookers = [threading.Thread(target=look, args=(scheduler, now_s))
                       for scheduler in schedulers]
            for looker in lookers:
                looker.start()
            for looker in lookers:
                looker.join()
        mails = smtp.take(len(names))
        time.sleep(0.5)
        assert smtp.mails == []
        assert sorted(mail["Subject"].split(":")[0] for mail in mails) == sorted(names)
        assert query(pg_schema_url, "SELECT status, count(*) FROM report_send "
                                    "GROUP BY 1") == [("sent", len(names))]
        # a retry due: taken up by one daemon only
        run_sql(pg_schema_url, "UPDATE report_send SET status = 'retrying', "
                               "next_attempt_ms = ?, finished_ms = NULL WHERE id = 1",
                (int(DUE * 1000),))
        lookers = [threading.Thread(target=look, args=(scheduler, DUE + 2))
                   for scheduler in schedulers]
        for looker in lookers:
            looker.start()
        for looker in lookers:
            looker.join()
        assert len(smtp.take()) == 1
        time.sleep(0.5)
        assert smtp.mails == []
        assert query(pg_schema_url, "SELECT status, attempts FROM report_send "
                                    "WHERE id = 1") == [("sent", 2)]
    finally:
        for scheduler in schedulers:
            scheduler.close()


def test_the_daemon_on_a_postgresql_history_sends_hooks_and_reports(pbx, mailing_pbx, smtp,
                                                                    pg_schema_url, receiver):
    """`extcdr daemon` on a URL starts both senders; killed (-9) while requests are under way,
    its hook's lane goes with its connection and the next daemon sends the rest."""
    open_module_db(pg_schema_url).close()
    slow = receiver(delay=0.3)
    add_hook(pg_schema_url, slow.url, ["missed", "answered"])
    add_report(pg_schema_url, "Live", time.time() - 1)
    append_rows(pbx["cdr"], pbx["cols"], pbx["rows"][:300])
    daemon = {"cdr": pbx["cdr"], "config": mailing_pbx / "mikopbx.db", "db": pg_schema_url}
    options = ["--set", "webhooks.check_interval=0.1", "--set", "webhooks.retry_delay=0.05",
               "--set", f"webhooks.allowed_hosts={LOOPBACK}"]
    proc = start_daemon(daemon, *options)
    try:
        assert wait_for(lambda: len(slow.got) >= 4, 30)
        [mail] = smtp.take(timeout=20)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    assert "Live" in mail["Subject"] and mail["To"] == "boss@example.com"
    assert "not sent" not in proc.stderr.read()
    pending = f"SELECT count(*) FROM outbox WHERE state = {webhooks.PENDING}"
    assert query(pg_schema_url, pending)[0][0] > 0
    queued = {key for (key,) in query(pg_schema_url, f"SELECT {webhooks.KEY} FROM outbox o")}
    fast = receiver()
    run_sql(pg_schema_url, "UPDATE webhook SET url = ?", (fast.url,))
    proc = start_daemon(daemon, *options)
    try:
        assert wait_for(lambda: query(pg_schema_url, pending) == [(0,)], 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    received = slow.keys() + fast.keys()
    assert set(received) >= {key for (key,) in query(
        pg_schema_url, f"SELECT {webhooks.KEY} FROM outbox o WHERE {STATE} = 'delivered'")}
    assert set(received) <= queued and len(received) - len(set(received)) <= 1
    assert smtp.mails == []                                  # the report went once
