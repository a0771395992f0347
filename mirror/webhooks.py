"""Webhooks: calls pushed to a CRM. The admin's hooks (`webhook`), the outbox the writer fills
in the transaction that writes the calls (`outbox`: at-least-once, nothing lost to `kill -9`)
and the log of every attempt to deliver (`delivery`). The daemon's deliverer
(`daemon.deliverer`) sends; this module holds what the writer, the deliverer, the page and the
CLI share: the events, the writer's set-based statements, the signature, the hooks' rows.

Events, each at most once per hook and call (the idempotency key `hook:event:linkedid`):
`missed` (a call that ended missed), `answered`, `callback` (a missed call got returned) and
`unreturned` (a missed call still not returned N minutes after it ended: queued with the missed
call, due then, dropped as `cancelled` if it was returned meanwhile). Calls that ended before
the hook was created are history: never sent.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from urllib.parse import parse_qsl, urlsplit

from peewee import Database

from mirror.dialect import dialect_of, emptied, larger, positional, run, staged
from mirror.models import Call
from mirror.pbxtime import PbxClock
from mirror.queries import SQLITE_MAX, QueryError, call_filter, calls_query

# The outbox stores an event and a state as its position in these (a row a third smaller than
# with names: the worst case of a backfill queues an event or two for every call); `EVENT`,
# `STATE` and `KEY` name them in SQL, for the log, the sender and the idempotency key.
EVENTS = ("missed", "unreturned", "answered", "callback")
STATES = ("pending", "delivered", "failed", "cancelled")
MISSED, UNRETURNED, ANSWERED, CALLBACK = range(len(EVENTS))
PENDING, DELIVERED, FAILED, CANCELLED = range(len(STATES))
SCHEMES = ("http", "https")
# The page's filter parameters a hook may narrow its calls by (no period: every call from now).
FILTERS = ("direction", "status", "number", "employee", "group", "min_talk", "max_talk",
           "recording", "queue", "hangup", "tab")


def _named(column: str, names: tuple[str, ...]) -> str:
    """SQL for the name of the code in `column` (its position in `names`)."""
    cases = " ".join(f"WHEN {code} THEN {name!r}" for code, name in enumerate(names))
    return f"CASE {column} {cases} END"


EVENT = _named("o.event", EVENTS)      # the event of an outbox row `o`, by name
STATE = _named("o.state", STATES)
# An event's idempotency key, from its outbox row `o` (UNIQUE in the table: queued once).
KEY = f"o.hook_id || ':' || {EVENT} || ':' || o.linkedid"
RESPONSE_KEPT = 2048         # characters of a receiver's answer kept in the log
KEPT_MS = 30 * 86_400_000    # settled events (delivered, failed, cancelled) and their log
REPLAY_WINDOW_S = 300        # what a receiver should accept: timestamps within 5 minutes
SIGNATURE_HEADER = "X-Extcdr-Signature"
TIMESTAMP_HEADER = "X-Extcdr-Timestamp"
KEY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Extcdr-Event"
_MAX_NAME = 80
_MAX_URL = 2000
_MAX_DELAY_MIN = 7 * 24 * 60


class WebhookError(ValueError):
    """A hook that cannot be saved as given (the message says what is wrong)."""


# --- the writer: events of a batch's calls, in its transaction --------------------------------

# A hook's events of the staged calls `{calls}` (missed, unreturned: due N minutes after the
# end, answered) and of the missed calls whose callback links `{relinked}` just returned: one
# grouped statement each, over rows `s`; an event due at once is due at 0 (a zero takes no
# byte in the row, and no entry in outbox_due). ?1 hook, ?2 now, ?3 the wait for unreturned,
# ?4 created. Queued once per hook, event and call: the outbox's UNIQUE key ignores the rest
# (the WHERE lets SQLite read `ON CONFLICT` as the upsert's, not the join's).
_INSERT = "INSERT INTO outbox (hook_id, event, linkedid, created_ms, due_ms) "
_IGNORED = " ON CONFLICT DO NOTHING"
# event -> (its due time, which staged calls have it): a branch of a UNION ALL each (three
# plain scans of the batch's calls cost less than one join with a list of the events)
_OF_STAGED = {MISSED: ("0", "status = 'missed'"),
              UNRETURNED: ("end_ms + ?3", "status = 'missed'"),
              ANSWERED: ("0", "answered <> 0")}
_STAGED = (_INSERT + "SELECT ?1, s.event, s.linkedid, ?2, s.due_ms FROM ({events}) AS s "
           "WHERE true")
_BRANCH = ("SELECT {code} AS event, linkedid, {due} AS due_ms FROM {calls} "
           "WHERE {holds} AND end_ms >= ?4")
# `{calls}`: the links that changed, or a batch's staged calls (linked within their batch);
# the calls as written.
_RETURNED = (_INSERT + f"SELECT ?1, {CALLBACK}, s.linkedid, ?2, 0 "
             "FROM {calls} r JOIN call s ON s.linkedid = r.linkedid "
             "AND s.start_ms = r.start_ms "
             "WHERE s.returned_by IS NOT NULL AND s.status = 'missed' AND s.end_ms >= ?4")


def queue_events(db: Database, schemas: list[str], relinked: str, now_ms: int) -> int:
    """Queue the events of the calls just written (inside the writer's transaction): the
    staged calls of `schemas` and the callback links of `relinked` (a table of linkedid,
    returned_by, status: emptied here, so the next batch sees only its own). Grouped
    statements per enabled hook; without hooks, one read of an empty table."""
    dialect = dialect_of(db)
    hooks = run(db, "SELECT id, events, filters, unreturned_after_min, created_ms, "
                "forgotten_before_ms FROM webhook WHERE enabled <> 0 AND events <> '[]'"
                ).fetchall()
    statements = []
    for hook_id, events, filters, after_min, created_ms, forgotten_ms in hooks:
        codes = [EVENTS.index(event) for event in json.loads(events)]
        params = [hook_id, now_ms, after_min * 60_000, max(created_ms, forgotten_ms)]
        branches = [_BRANCH.format(code=code, due=_OF_STAGED[code][0], holds=_OF_STAGED[code][1],
                                   calls=staged(db, schema, "call"))
                    for schema in schemas for code in codes if code in _OF_STAGED]
        sources = [_STAGED.format(events=" UNION ALL ".join(branches))] if branches else []
        if CALLBACK in codes:
            sources += [_RETURNED.format(calls=calls) for calls in
                        (relinked, *(staged(db, schema, "call") for schema in schemas))]
        statements += [(sql, params, json.loads(filters)) for sql in sources]
    queued = 0
    for sql, params, filters in statements:
        sql, params = positional(sql, params)
        sql = dialect.sql(sql)
        narrowed = _filter_sql(db, filters, schemas, relinked)
        if narrowed is not None:       # peewee's SQL, already the engine's
            sql, params = sql + f" AND s.linkedid IN ({narrowed[0]})", params + narrowed[1]
        queued += db.execute_sql(sql + _IGNORED, params).rowcount
    run(db, emptied(db, relinked))
    return queued


def prune(db: Database, now_ms: int) -> int:
    """Forget the settled events queued more than `KEPT_MS` ago, with their log (the outbox
    and the log do not grow for ever); returns how many. A hook then never queues events of
    calls that ended before the last of them again (a resync re-reads old calls): pending
    events stay, whatever their age."""
    settled = f"state <> {PENDING} AND created_ms < ?"
    cutoff = (now_ms - KEPT_MS,)
    with db.atomic():
        run(db,
            f"UPDATE webhook SET forgotten_before_ms = {larger(db)}(forgotten_before_ms, "
            "coalesce(("
            f"SELECT max(created_ms) FROM outbox WHERE hook_id = webhook.id AND {settled}), 0))",
            cutoff)
        run(db, f"DELETE FROM delivery WHERE outbox_id IN "
                f"(SELECT id FROM outbox WHERE {settled})", cutoff)
        return run(db, f"DELETE FROM outbox WHERE {settled}", cutoff).rowcount


def _filter_sql(db: Database, filters: dict, schemas: list[str],
                relinked: str) -> tuple[str, list] | None:
    """The linkedids a hook's filter keeps among the batch's calls, as SQL (None: no filter):
    the page's query over the period the batch's calls started in."""
    if not filters:
        return None
    flt = hook_filter(filters)
    starts = " UNION ALL ".join(
        [f"SELECT min(start_ms) AS lo, max(start_ms) AS hi FROM {staged(db, schema, 'call')}"
         for schema in schemas]
        + [f"SELECT min(c.start_ms), max(c.start_ms) FROM {relinked} r "
           f"JOIN call c ON c.linkedid = r.linkedid AND c.start_ms = r.start_ms"])
    low, high = run(db, f"SELECT min(lo), max(hi) FROM ({starts}) AS batch").fetchone()
    if low is None:
        return "SELECT NULL WHERE false", []
    flt.start_ms, flt.end_ms = low, high + 1
    sql, params = calls_query(flt, db, counting=True).select(Call.linkedid).order_by().sql()
    return sql, list(params)


def hook_filter(filters: dict):
    """A hook's filter (page parameters) as the page's CallFilter over all of time."""
    unknown = [name for name in filters if name not in FILTERS]
    if unknown:
        raise QueryError(f"unknown filter {unknown[0]!r}; use: {', '.join(FILTERS)}")
    flt = call_filter({k: str(v) for k, v in filters.items() if v not in ("", None)},
                      PbxClock("UTC"), time.time())
    flt.start_ms, flt.end_ms = 0, SQLITE_MAX
    return flt


# --- the signature -----------------------------------------------------------------------------

def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` and the hex HMAC-SHA256, keyed with the hook's secret, of `<timestamp>.<body>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signed: str, now_s: float,
           window_s: int = REPLAY_WINDOW_S) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > window_s:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), signed)


def delivery_headers(secret: str, key: str, event: str, body: bytes, now_s: float) -> dict:
    timestamp = int(now_s)
    return {"Content-Type": "application/json", "User-Agent": "extcdr-webhooks/1",
            KEY_HEADER: key, EVENT_HEADER: event, TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, body)}


# --- hooks ---------------------------------------------------------------------------------

def new_secret() -> str:
    return secrets.token_urlsafe(32)


def check_url(url: str, allowed_hosts: list[str] | tuple = ()) -> str:
    """An http(s) URL with a host (and, when the hosts are configured, one of those)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port                             # noqa: B018 - a bad port raises here
    except ValueError:
        raise WebhookError("the URL is not valid") from None
    if parts.scheme not in SCHEMES:
        raise WebhookError("the URL must start with http:// or https://")
    if not parts.hostname or len(url) > _MAX_URL or parts.username or parts.password:
        raise WebhookError("the URL must name a host (and no login)")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise WebhookError("the URL's host name is not valid") from None
    if allowed_hosts and parts.hostname not in allowed_hosts:
        raise WebhookError(f"the host {parts.hostname!r} is not among webhooks.allowed_hosts")
    _refuse_inside(parts.hostname, [parts.hostname], allowed_hosts)
    return url


def destination(url: str, allowed_hosts: list[str] | tuple = ()) -> str:
    """The address a hook's URL is posted to, resolved once here: the request goes to this
    address (a name cannot resolve elsewhere between the check and the connection). Never
    this PBX itself, a link-local (a cloud's metadata), multicast, reserved or unspecified
    address unless the URL's host is listed in webhooks.allowed_hosts; LAN addresses are
    allowed (a CRM often lives there). WebhookError says why not."""
    parts = urlsplit(check_url(url, allowed_hosts))
    try:
        found = socket.getaddrinfo(parts.hostname, parts.port or _PORTS[parts.scheme],
                                   type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise WebhookError(f"the host {parts.hostname!r} cannot be resolved: {error}") from None
    addresses = [info[4][0] for info in found]
    _refuse_inside(parts.hostname, addresses, allowed_hosts)
    return addresses[0]


_PORTS = {"http": 80, "https": 443}


def _refuse_inside(host: str, addresses: list[str], allowed_hosts) -> None:
    if host in allowed_hosts:
        return
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            continue                                  # a name: looked at once resolved
        ip = getattr(ip, "ipv4_mapped", None) or ip
        if (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified
                or ip.is_reserved):
            raise WebhookError(f"the host {host!r} is this PBX or a special address "
                               f"({address}): list it in webhooks.allowed_hosts to send there")


def hook_values(form: dict, allowed_hosts=()) -> dict:
    """A hook's columns from a form's fields (name, url, events, unreturned_after_min,
    filters: JSON or page parameters as a query string, enabled)."""
    name = (form.get("name") or "").strip()
    if not name or len(name) > _MAX_NAME:
        raise WebhookError(f"a hook needs a name of at most {_MAX_NAME} characters")
    events = [event for event in EVENTS if event in form.get("events", ())]
    if not events:
        raise WebhookError("choose at least one event")
    after = str(form.get("unreturned_after_min") or "30").strip()
    if not after.isascii() or not after.isdigit() or not 1 <= int(after) <= _MAX_DELAY_MIN:
        raise WebhookError(f"unreturned after: 1 to {_MAX_DELAY_MIN} minutes")
    filters = parse_filters(form.get("filters") or "")
    return {"name": name, "url": check_url(form.get("url") or "", allowed_hosts),
            "events": json.dumps(events), "filters": json.dumps(filters),
            "unreturned_after_min": int(after), "enabled": int(bool(form.get("enabled")))}


def parse_filters(text: str) -> dict:
    """A hook's filter as typed: page parameters `direction=incoming&employee=201` (as in the
    page's URL) or a JSON object; checked as the page checks them."""
    text = text.strip().lstrip("?")
    if not text:
        return {}
    try:
        filters = json.loads(text) if text.startswith("{") else dict(
            parse_qsl(text, keep_blank_values=False, strict_parsing=True))
    except ValueError:
        raise WebhookError("the filter is not valid: use page parameters like "
                           "direction=incoming&employee=201") from None
    if not isinstance(filters, dict):
        raise WebhookError("the filter must be page parameters")
    filters = {str(k): str(v) for k, v in filters.items()}
    try:
        hook_filter(filters)
    except QueryError as error:
        raise WebhookError(str(error)) from None
    return filters


def hooks(db: Database) -> list[dict]:
    """Every hook with its outbox's counts by state."""
    rows = _dicts(db, "SELECT * FROM webhook ORDER BY lower(name), id")
    counts = {}
    for hook_id, state, n in run(db,
            "SELECT hook_id, state, count(*) FROM outbox GROUP BY hook_id, state"):
        counts.setdefault(hook_id, {})[STATES[state]] = n
    for row in rows:
        row["events"] = json.loads(row["events"])
        row["filters"] = json.loads(row["filters"])
        row["counts"] = counts.get(row["id"], {})
    return rows


def hook_of(db: Database, hook_id: int) -> dict:
    rows = [row for row in hooks(db) if row["id"] == hook_id]
    if not rows:
        raise LookupError(hook_id)
    return rows[0]


def create_hook(db: Database, values: dict, by: str, now_ms: int | None = None) -> int:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with db.atomic():
        return run(
            db, "INSERT INTO webhook (name, url, secret, events, filters, unreturned_after_min, "
            "enabled, created_ms, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (values["name"], values["url"], new_secret(), values["events"], values["filters"],
             values["unreturned_after_min"], values["enabled"], now_ms, by)).fetchall()[0][0]


def change_hook(db: Database, hook_id: int, values: dict) -> None:
    columns = ("name", "url", "events", "filters", "unreturned_after_min", "enabled")
    with db.atomic():
        if not run(
                db, f"UPDATE webhook SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                (*(values[c] for c in columns), hook_id)).rowcount:
            raise LookupError(hook_id)


def renew_secret(db: Database, hook_id: int) -> str:
    secret = new_secret()
    with db.atomic():
        if not run(db, "UPDATE webhook SET secret = ? WHERE id = ?",
                              (secret, hook_id)).rowcount:
            raise LookupError(hook_id)
    return secret


def delete_hook(db: Database, hook_id: int) -> None:
    """The hook, its outbox and its log."""
    with db.atomic():
        run(db, "DELETE FROM delivery WHERE outbox_id IN "
                "(SELECT id FROM outbox WHERE hook_id = ?)", (hook_id,))
        run(db, "DELETE FROM outbox WHERE hook_id = ?", (hook_id,))
        if not run(db, "DELETE FROM webhook WHERE id = ?", (hook_id,)).rowcount:
            raise LookupError(hook_id)


# --- the log -----------------------------------------------------------------------------------

def deliveries(db: Database, hook_id: int, *, limit: int = 50,
               before: int | None = None) -> list[dict]:
    """A hook's outbox rows, newest first (keyset by id), each with its last attempt. The
    outbox is walked backwards by id (`+o.hook_id`: not by the key's index, which would sort
    all of a hook's rows): one hook's page reads its rows and those of other hooks between."""
    return _dicts(
        db, f"SELECT o.id, {EVENT} AS event, o.linkedid, {KEY} AS idempotency_key, "
        f"o.created_ms, o.due_ms, o.attempts, {STATE} AS state, d.at_ms, d.status, "
        "d.response, d.duration_ms FROM outbox o "
        "LEFT JOIN delivery d ON d.id = (SELECT max(id) FROM delivery WHERE outbox_id = o.id) "
        "WHERE +o.hook_id = ? AND o.id < ? ORDER BY o.id DESC LIMIT ?",
        (hook_id, SQLITE_MAX if before is None else before, limit))


def redeliver(db: Database, hook_id: int, outbox_id: int, now_ms: int | None = None) -> None:
    """Put one delivery back to pending, due now, its attempts counted afresh (due at a time,
    not at once: its id is behind the hook's `next_id`, schema 17)."""
    now_ms = max(1, int(time.time() * 1000) if now_ms is None else now_ms)
    with db.atomic():
        if not run(
                db, f"UPDATE outbox SET state = {PENDING}, due_ms = ?, attempts = 0 "
                "WHERE id = ? AND hook_id = ?", (now_ms, outbox_id, hook_id)).rowcount:
            raise LookupError(outbox_id)


def _dicts(db: Database, sql: str, params=()) -> list[dict]:
    cursor = run(db, sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def response_text(data: bytes) -> str:
    return data[:RESPONSE_KEPT].decode("utf-8", "replace")


