"""The daemon's sender of webhooks: `Deliverer.step(now)` posts the outbox's due rows and says
when to look again; `run()` calls it from its own thread, woken by the writer after a batch
and by each answer. Each hook is a lane: at most one request under way to it, in a thread of
its own, outside any transaction, so a slow or dead receiver delays only its own hook's
deliveries — never another hook's, never the sync.

At-least-once: a row is marked delivered only after a 2xx answer; a daemon killed between the
request and that mark sends it again after the restart, with the same idempotency key. Every
attempt is a row of `delivery` (status, the answer's first 2 KB or the error, duration); a
failed one is retried after a doubling delay with jitter until `webhooks.retries`, then the
row is `failed` (the page's Redeliver puts it back).

Requests go only to the URL's host as configured (and, when `webhooks.allowed_hosts` is set,
one of those): http or https, redirects never followed, connect and read timeouts.
"""
from __future__ import annotations

import http.client
import json
import logging
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from mirror import webhooks
from mirror.contacts import with_contacts
from mirror.dialect import dialect_of, hold, json_items, let_go, run
from mirror.queries import find_call, legs_of_call
from mirror.records import call_record, iso_time, leg_records
from mirror.settings import Settings
from mirror.worklist import handled
from reports.worker import Worker

log = logging.getLogger("extcdr.webhooks")
_BATCH = 16               # rows cancelled in a step at most (then it looks again at once)
_MAX_DELAY_S = 3600.0


def _pending(postgresql: bool) -> tuple[str, str]:
    """SQL of a hook `w`'s pending rows (schema 17): the first due at once, walking ids from
    the hook's `next_id` (no index holds them on SQLite), and the FROM/WHERE of those that
    wait for a time (the outbox's index of them). On SQLite `+` keeps the hook's column from
    choosing an index (its UNIQUE key would walk every row the hook ever had); PostgreSQL's
    index of pending rows starts with the hook."""
    hook = "hook_id" if postgresql else "+hook_id"
    at_once = (f"SELECT id FROM outbox WHERE id >= w.next_id AND {hook} = w.id "
               f"AND state = {webhooks.PENDING} AND due_ms = 0 ORDER BY id LIMIT 1")
    waiting = f"FROM outbox WHERE {hook} = w.id AND state = {webhooks.PENDING} AND due_ms > 0"
    return at_once, waiting


def first_due_sql(postgresql: bool) -> str:
    """The first due row of each enabled hook (?2: of this one only): one due at once, else
    the one that waited longest for its time (?1: now)."""
    at_once, waiting = _pending(postgresql)
    return (f"SELECT o.id, o.hook_id, {webhooks.EVENT} AS event, o.linkedid, "
            f"{webhooks.KEY} AS idempotency_key, o.attempts, o.due_ms, w.url, w.secret "
            f"FROM webhook w JOIN outbox o ON o.id = coalesce(({at_once}), (SELECT id "
            f"{waiting} AND due_ms <= ?1 ORDER BY due_ms, id LIMIT 1)) "
            "WHERE w.enabled <> 0 AND w.id = coalesce(?2, w.id)")


def next_due_sql(postgresql: bool, busy: str) -> str:
    """When the first row of an enabled hook not in `busy` falls due (0: at once)."""
    at_once, waiting = _pending(postgresql)
    return (f"SELECT min(CASE WHEN EXISTS ({at_once}) THEN 0 ELSE (SELECT min(due_ms) "
            f"{waiting}) END) FROM webhook w WHERE w.enabled <> 0 AND "
            f"CAST(w.id AS text) NOT IN (SELECT busy.value FROM {busy})")


# A hook's lane (`dialect.hold`): the daemon posting to it. Several daemons on a central
# history each send, but never to one hook at once, so never one event twice.
LANE = "webhook lane"


# Whether an event still holds when it is sent: a call first seen in part may turn out
# answered once all its legs came; a missed call may be returned before its wait is over.
STILL = {
    "missed": lambda call: call["status"] == "missed",
    "unreturned": lambda call: call["status"] == "missed" and call["returned_by"] is None,
    "answered": lambda call: bool(call["answered"]),
    "callback": lambda call: call["status"] == "missed" and call["returned_by"] is not None,
}


@dataclass
class Outcome:
    status: int | None       # the HTTP status; None: no answer (refused, timeout, ...)
    response: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def allowed_hosts(settings: Settings) -> list[str]:
    return [host.strip() for host in settings["webhooks.allowed_hosts"].split(",")
            if host.strip()]


def post(url: str, body: bytes, headers: dict, connect_timeout: float,
         read_timeout: float, hosts=()) -> Outcome:
    """One POST to the configured URL itself (no redirect followed, no other scheme)."""
    started = time.monotonic()
    try:
        address = webhooks.destination(url, hosts)
    except webhooks.WebhookError as error:
        return Outcome(None, f"refused: {error}", _since(started))
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=connect_timeout)
    # to the address checked, not the name resolved again; the name stays the Host header and
    # TLS's server name
    conn._create_connection = lambda where, *args: socket.create_connection(
        (address, where[1]), *args)
    try:
        conn.connect()
        conn.sock.settimeout(read_timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=body, headers=headers)
        answer = conn.getresponse()
        text = webhooks.response_text(answer.read(webhooks.RESPONSE_KEPT))
        return Outcome(answer.status, text, _since(started))
    except (OSError, http.client.HTTPException, UnicodeError) as error:
        return Outcome(None, f"{type(error).__name__}: {error}"[:webhooks.RESPONSE_KEPT],
                       _since(started))
    finally:
        conn.close()


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def retry_delay_s(settings: Settings, attempts: int) -> float:
    """After the `attempts`-th failure: the base delay doubled each time, up to +50% jitter
    (receivers coming back are not hit by every PBX at once), at most an hour."""
    base = settings["webhooks.retry_delay"] * 2 ** max(0, attempts - 1)
    return min(_MAX_DELAY_S, base * random.uniform(1.0, 1.5))


class Deliverer(Worker):
    """Sends due outbox rows; owns its own connection to module.db (outbox and delivery rows
    only: short transactions, never during a request). Each hook is a lane of its own: at
    most one request under way per hook, its rows posted one after another in the order they
    fall due, so that a slow or dead receiver holds up only its own hook."""
    what = "webhooks"
    log = log
    check_interval = "webhooks.check_interval"
    # A request under way is not waited for (the daemon stops within 5 s): its row stays
    # pending and goes again after the restart.
    close_wait_s = 2.0

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.under_way: dict[int, dict] = {}      # hook id -> the row being posted to it
        self.answers: queue.SimpleQueue = queue.SimpleQueue()     # (row, Outcome) to record
        self.elsewhere: set[int] = set()     # hooks another daemon posted to at the last look
        self._pruned_s = 0.0

    # --- the loop ------------------------------------------------------------------------------

    def step(self, now_s: float) -> float:
        """Record the answers that came, post the next due row of each hook that has no
        request under way; returns seconds until the next look (an answer wakes it sooner)."""
        interval = self.settings["webhooks.check_interval"]
        self._record_answers()
        if self.licence.problem() is not None:
            return interval
        now_ms = int(now_s * 1000)
        if now_s >= self._pruned_s + 3600:            # settled events go after a month
            self._prune(now_ms)
            self._pruned_s = now_s
        if not self._post_due(now_ms):
            return 0.0
        dialect = dialect_of(self.db)
        busy_ids = json.dumps([str(hook) for hook in {*self.under_way, *self.elsewhere}])
        following = run(self.db,       # a disabled or busy hook's rows wait: not due
                        next_due_sql(dialect.postgresql, json_items(dialect, "?", "busy")),
                        (busy_ids,)).fetchone()[0]
        if following is None:
            return interval
        return min(interval, max(0.0, following / 1000 - time.time()))

    def _prune(self, now_ms: int) -> None:
        """Forget the settled events (`webhooks.prune`), unless another daemon does it now."""
        if hold(self.db, LANE, 0):                 # lane 0: no hook's, the pruner's
            try:
                webhooks.prune(self.db, now_ms)
            finally:
                let_go(self.db, LANE, 0)

    # --- the lanes -----------------------------------------------------------------------------

    def _post_due(self, now_ms: int) -> bool:
        """Start posting the first due row of each idle hook whose lane it takes (a row that no
        longer holds is cancelled and the hook's next one taken); False when it cancelled
        `_BATCH` rows and stopped: look again at once."""
        idle = [row["hook_id"] for row in self._first_due(now_ms)
                if row["hook_id"] not in self.under_way]
        self.elsewhere = set()
        cancelled = 0
        while idle:
            hook_id = idle.pop()
            if not hold(self.db, LANE, hook_id):       # another daemon posts to it
                self.elsewhere.add(hook_id)
                continue
            # read after taking the lane: the row may have been sent meanwhile
            try:
                row = next(iter(self._first_due(now_ms, hook_id)), None)
                send = None if row is None else self._prepared(row)
            except BaseException:
                let_go(self.db, LANE, hook_id)
                raise
            if send is not None:
                self._post_later(send)                 # the lane is let go with its answer
                continue
            let_go(self.db, LANE, hook_id)
            if row is None:
                continue
            cancelled += 1
            if cancelled == _BATCH:
                return False
            idle.append(hook_id)
        return True

    def _first_due(self, now_ms: int, hook_id: int | None = None) -> list[dict]:
        """The first due row of each enabled hook (or of this one): oldest due first."""
        cursor = run(self.db, first_due_sql(dialect_of(self.db).postgresql), (now_ms, hook_id))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def _post_later(self, send: dict) -> None:
        """Post from a daemon thread of its own (a request under way never holds up the
        process's exit, as a thread pool's workers would); its answer wakes the loop."""
        self.under_way[send["hook_id"]] = send

        def post_and_tell() -> None:
            try:
                outcome = self._send(send)
            except Exception as exc:     # a bug must not leave the hook waiting for ever
                log.exception("webhook %d: sending failed", send["hook_id"])
                outcome = Outcome(None, f"internal error: {exc}"[:webhooks.RESPONSE_KEPT], 0)
            self.answers.put((send, outcome))
            self.wake.set()
        threading.Thread(target=post_and_tell, name=f"webhook {send['hook_id']}",
                         daemon=True).start()

    def _record_answers(self) -> None:
        while True:
            try:
                send, outcome = self.answers.get_nowait()
            except queue.Empty:
                return
            del self.under_way[send["hook_id"]]
            try:
                self._record(send, outcome)
            finally:
                let_go(self.db, LANE, send["hook_id"])

    # --- one delivery --------------------------------------------------------------------------

    def _prepared(self, row: dict) -> dict | None:
        """The row with its body, or None when there is nothing to send any more (the call
        was deleted, or the event no longer holds: `STILL`): then it is `cancelled`."""
        call = find_call(row["linkedid"], self.db)
        reason = None
        if call is None:
            reason = "cancelled: the call is no longer in the history"
        elif not STILL[row["event"]](call):
            reason = "cancelled: the call is no longer " + row["event"]
        elif row["event"] == "unreturned" and handled(self.db, row["linkedid"]) is not None:
            reason = "cancelled: the call was marked handled"
        if reason is not None:
            self._record({**row, "cancelled": True}, Outcome(None, reason, 0))
            return None
        tz = self.context.clock().tz
        body = json.dumps({
            "event": row["event"], "hook_id": row["hook_id"],
            "idempotency_key": row["idempotency_key"], "timestamp": iso_time(
                int(time.time() * 1000), tz),
            "call": call_record(next(with_contacts([call], self.db,
                                                   self.context.phonebook_names())), tz),
            "legs": leg_records(legs_of_call(row["linkedid"], self.db), tz)},
            ensure_ascii=False).encode()
        return {**row, "body": body}

    def _send(self, send: dict) -> Outcome:
        headers = webhooks.delivery_headers(send["secret"], send["idempotency_key"],
                                            send["event"], send["body"], time.time())
        return post(send["url"], send["body"], headers, self.settings["webhooks.connect_timeout"],
                    self.settings["webhooks.read_timeout"], allowed_hosts(self.settings))

    def _record(self, send: dict, outcome: Outcome) -> None:
        """The attempt in the log and the row's new state, in one short transaction."""
        now_ms = int(time.time() * 1000)
        attempts = send["attempts"] + (0 if send.get("cancelled") else 1)
        if send.get("cancelled"):
            state, due_ms = "cancelled", now_ms
        elif outcome.delivered:
            state, due_ms = "delivered", now_ms
        elif attempts > self.settings["webhooks.retries"]:
            state, due_ms = "failed", now_ms
        else:
            state = "pending"
            due_ms = now_ms + int(retry_delay_s(self.settings, attempts) * 1000)
        with self.db.atomic():
            run(self.db,
                "INSERT INTO delivery (outbox_id, at_ms, status, response, duration_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (send["id"], now_ms, outcome.status, outcome.response, outcome.duration_ms))
            # a row put back meanwhile (Redeliver) stays as the page left it
            run(self.db,
                "UPDATE outbox SET state = ?, attempts = ?, due_ms = ? "
                f"WHERE id = ? AND state = {webhooks.PENDING} AND attempts = ?",
                (webhooks.STATES.index(state), attempts, due_ms, send["id"], send["attempts"]))
            if send["due_ms"] == 0 and not dialect_of(self.db).postgresql:
                # the hook's first row due at once is past it now: settled, or waiting for a
                # retry's time (one writer: no row comes later with a smaller id; schema 17)
                run(self.db, "UPDATE webhook SET next_id = max(next_id, ?) WHERE id = ?",
                    (send["id"] + 1, send["hook_id"]))
        if state == "failed":
            log.warning("webhook %d: gave up on %s %s after %d attempts: %s", send["hook_id"],
                        send["event"], send["linkedid"], attempts, outcome.response[:200])
