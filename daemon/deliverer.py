"""The daemon's sender of webhooks: `Deliverer.step(now)` posts the outbox's due rows and says
when to look again; `run()` calls it from its own thread, woken by the writer after a batch.
The HTTP requests run in a few worker threads, outside any transaction, so a slow or dead
receiver delays only its own deliveries, never the sync.

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
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import peewee

from mirror import webhooks
from mirror.database import open_module_db, readable_error
from mirror.queries import find_call, legs_of_call
from mirror.records import call_record, iso_time, leg_records
from mirror.settings import Settings
from pbx.mirror_context import MirrorContext
from pbxmodule.licence import LicenceCheck

log = logging.getLogger("extcdr.webhooks")
_PARALLEL = 4             # requests at once
_BATCH = 16               # due rows taken per step
_MAX_DELAY_S = 3600.0
_CLOSE_WAIT_S = 2.0


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
        webhooks.check_url(url, hosts)
    except webhooks.WebhookError as error:
        return Outcome(None, f"refused: {error}", 0)
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=connect_timeout)
    try:
        conn.connect()
        conn.sock.settimeout(read_timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=body, headers=headers)
        answer = conn.getresponse()
        text = webhooks.response_text(answer.read(webhooks.RESPONSE_KEPT))
        return Outcome(answer.status, text, _since(started))
    except (OSError, http.client.HTTPException) as error:
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


class Deliverer:
    """Sends due outbox rows; owns its own connection to module.db (outbox and delivery rows
    only: short transactions, never during a request)."""

    def __init__(self, settings: Settings):
        self.db = open_module_db(settings["module.db"])
        self.settings = settings
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self._pruned_s = 0.0

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._settings = settings
        self.context = MirrorContext(settings, self.db)
        self.licence = LicenceCheck.of(settings)      # one, so that it keeps what it verified

    # --- the loop ------------------------------------------------------------------------------

    def step(self, now_s: float) -> float:
        """Send what is due at `now_s`; returns seconds until the next look."""
        interval = self.settings["webhooks.check_interval"]
        if self.licence.problem() is not None:
            return interval
        now_ms = int(now_s * 1000)
        if now_s >= self._pruned_s + 3600:            # settled events go after a month
            webhooks.prune(self.db, now_ms)
            self._pruned_s = now_s
        due = self._due(now_ms)
        sends = [send for send in map(self._prepared, due) if send is not None]
        for start in range(0, len(sends), _PARALLEL):
            chunk = sends[start:start + _PARALLEL]
            for send, outcome in zip(chunk, self._posted(chunk)):
                if self.stop.is_set():
                    return 0.0
                self._record(send, outcome)
        if len(due) == _BATCH:
            return 0.0
        following = self.db.execute_sql(     # a disabled hook's rows wait: not due for it
            "SELECT min(o.due_ms) FROM outbox o JOIN webhook w ON w.id = o.hook_id "
            f"AND w.enabled WHERE o.state = {webhooks.PENDING}").fetchone()[0]
        if following is None:
            return interval
        return min(interval, max(0.0, following / 1000 - time.time()))

    def run(self) -> None:
        complaint = None
        while not self.stop.is_set():
            wait = self.settings["webhooks.check_interval"]
            try:
                wait = self.step(time.time())
                complaint = None
            except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:  # said once
                said, complaint = complaint, readable_error(self.settings["module.db"], exc)
                if complaint != said:
                    log.error("webhooks wait: %s", complaint)
            except Exception:          # anything else: try again later
                log.exception("webhooks: sending failed")
            self.wake.wait(wait)
            self.wake.clear()

    def nudge(self) -> None:
        """The writer committed calls: look at the outbox now."""
        self.wake.set()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="webhooks", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop looking; a request under way is not waited for beyond `_CLOSE_WAIT_S` (the
        daemon stops within 5 s): its row stays pending and goes again after the restart."""
        self.stop.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(_CLOSE_WAIT_S)
        if self.thread is None or not self.thread.is_alive():
            self.db.close()

    # --- one delivery --------------------------------------------------------------------------

    def _due(self, now_ms: int) -> list[dict]:
        cursor = self.db.execute_sql(
            f"SELECT o.id, o.hook_id, {webhooks.EVENT} AS event, o.linkedid, "
            f"{webhooks.KEY} AS idempotency_key, o.attempts, w.url, w.secret FROM outbox o "
            "JOIN webhook w ON w.id = o.hook_id AND w.enabled "
            f"WHERE o.state = {webhooks.PENDING} AND o.due_ms <= ? ORDER BY o.due_ms LIMIT ?",
            (now_ms, _BATCH))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def _prepared(self, row: dict) -> dict | None:
        """The row with its body, or None when there is nothing to send any more (the call
        was deleted, or the event no longer holds: `STILL`): then it is `cancelled`."""
        call = find_call(row["linkedid"], self.db)
        reason = None
        if call is None:
            reason = "cancelled: the call is no longer in the history"
        elif not STILL[row["event"]](call):
            reason = "cancelled: the call is no longer " + row["event"]
        if reason is not None:
            self._record({**row, "cancelled": True}, Outcome(None, reason, 0))
            return None
        tz = self.context.clock().tz
        body = json.dumps({
            "event": row["event"], "hook_id": row["hook_id"],
            "idempotency_key": row["idempotency_key"], "timestamp": iso_time(
                int(time.time() * 1000), tz),
            "call": call_record(call, tz),
            "legs": leg_records(legs_of_call(row["linkedid"], self.db), tz)},
            ensure_ascii=False).encode()
        return {**row, "body": body}

    def _posted(self, sends: list[dict]) -> list[Outcome]:
        """Post these at once, each from a daemon thread of its own (a request under way never
        holds up the process's exit, as a thread pool's workers would)."""
        outcomes: list[Outcome] = [Outcome(None, "stopped", 0)] * len(sends)

        def post_one(n: int) -> None:
            outcomes[n] = self._send(sends[n])
        threads = [threading.Thread(target=post_one, args=(n,), name="webhook", daemon=True)
                   for n in range(len(sends))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

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
            self.db.execute_sql(
                "INSERT INTO delivery (outbox_id, at_ms, status, response, duration_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (send["id"], now_ms, outcome.status, outcome.response, outcome.duration_ms))
            # a row put back meanwhile (Redeliver) stays as the page left it
            self.db.execute_sql(
                "UPDATE outbox SET state = ?, attempts = ?, due_ms = ? "
                f"WHERE id = ? AND state = {webhooks.PENDING} AND attempts = ?",
                (webhooks.STATES.index(state), attempts, due_ms, send["id"], send["attempts"]))
        if state == "failed":
            log.warning("webhook %d: gave up on %s %s after %d attempts: %s", send["hook_id"],
                        send["event"], send["linkedid"], attempts, outcome.response[:200])
