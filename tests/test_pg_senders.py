"""The daemon's senders on a central history (issue 22): the writer fills the webhooks' outbox
on PostgreSQL as on SQLite, the deliverer posts from it to a real HTTP receiver on 127.0.0.1,
mailed reports go to a real SMTP server — and with several daemons (one a PBX) on one
database, each event is delivered once and each report mailed once.

Each test writes into a fresh schema of the session's real PostgreSQL server (pg_schema_url).
"""
from __future__ import annotations

import time

import pytest

from daemon.resident import Daemon
from mirror import webhooks
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.settings import load
from tests.mirror import append_rows, pbx_rows
from tests.test_webhooks import LOOPBACK, deliver_due, receiver  # noqa: F401 - a fixture

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


def query(target, sql, params=()):
    db = open_module_db(target)
    try:
        return [tuple(row) for row in run(db, sql, params).fetchall()]
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


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """module.db on each engine: a file, or a fresh schema of the session's server."""
    if request.param == "sqlite":
        return tmp_path / "module.db"
    return request.getfixturevalue("pg_schema_url")


def outbox(target) -> list[tuple]:
    return query(target, f"SELECT o.hook_id, {EVENT}, o.linkedid, o.due_ms, {STATE} "
                         "FROM outbox o ORDER BY 2, 3, 1")


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
