"""API tokens, the worklist of missed calls to call back and marking them handled, over real
HTTP (waitress): a token opens the API only, as its role and extensions allow; revoked,
expired, unknown and malformed ones open nothing; only its digest is kept; handled calls leave
the worklist, the Unreturned tab and its counter, and show in the call's details."""
import hashlib
import hmac
import json
import re
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace

import pytest

from mirror.analytics import tab_counts
from mirror.database import open_module_db
from mirror.pbxtime import PbxClock
from mirror.queries import Visibility, call_filter, calls_query, handled_unreturned_sql
from mirror.settings import load
from mirror.tokens import TokenError, create_token, revoke_token
from tests.mirror import mirrored_demo
from tests.stack import serving
from web import create_app

PROXY = "proxy-secret"
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
PERIOD = {"from": "2024-10-20", "to": "2024-10-27"}
NOW_MS = 1_730_000_000_000


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    return mirrored_demo(tmp_path_factory.mktemp("tokens-pbx"), 400, seed=41)


@pytest.fixture(scope="module")
def server(pbx, tmp_path_factory):
    config = tmp_path_factory.mktemp("web") / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{PROXY}"\n')
    app = create_app(load(config, {"module.db": pbx}))
    with serving(app, threads=4) as http:
        yield f"http://127.0.0.1:{http.effective_port}{PREFIX}"


def call_api(base, path, *, token=None, user=None, role="admin", method="GET", body=None,
             params=None, csrf=True, headers=None):
    """(status, headers, text) of a request with an API token or as a user of the admin
    shell (a session: the proxy's headers, with the page's CSRF token unless `csrf` is off)."""
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if user is not None:
        sent.update({"X-Extcdr-User": user, "X-Extcdr-Role": role,
                     "X-Extcdr-Extensions": "201" if role == "operator" else "",
                     "X-Extcdr-Proxy-Token": PROXY})
        if csrf:
            key = hashlib.sha256(f"extcdr:{PROXY}".encode()).digest()
            sent["X-CSRF-Token"] = hmac.new(key, f"csrf:{user}".encode(),
                                            hashlib.sha256).hexdigest()
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    no_redirect = type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                       {"redirect_request": lambda *a, **k: None})
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.build_opener(no_redirect).open(request) as reply:
            return reply.status, reply.headers, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def get_json(base, path, **kwargs):
    status, _, text = call_api(base, path, **kwargs)
    return status, json.loads(text)


def new_token(db, name="CRM", role="admin", extensions=(), **kwargs) -> str:
    writable = open_module_db(db)
    try:
        return create_token(writable, name, role, list(extensions), "anna", NOW_MS, **kwargs)[1]
    finally:
        writable.close()


def test_a_token_opens_the_api_as_its_role(server, pbx):
    token = new_token(pbx)
    status, body = get_json(server, "/api/v1/calls", token=token, params=PERIOD)
    assert status == 200 and body["calls"]
    _, everyone = get_json(server, "/api/v1/calls", user="anna", params=PERIOD)
    assert body == everyone
    operator = new_token(pbx, "Operator 201", "operator", ["201"])
    status, mine = get_json(server, "/api/v1/calls", token=operator,
                            params={**PERIOD, "limit": 500})
    assert status == 200 and mine["calls"]
    assert all("201" in c["employees"] for c in mine["calls"])
    other = next(c for c in everyone["calls"] if "201" not in c["employees"])
    status, refused = get_json(server, f"/api/v1/calls/{other['linkedid']}", token=operator)
    assert status == 404 and refused["error"]
    status, _ = get_json(server, f"/api/v1/calls/{mine['calls'][0]['linkedid']}",
                         token=operator)
    assert status == 200


def test_only_the_digest_is_kept_and_the_token_is_recognisable(pbx):
    token = new_token(pbx, "Kept")
    assert token.startswith("extcdr_") and len(token) > 40
    with sqlite3.connect(pbx) as db:
        rows = db.execute("SELECT * FROM api_token").fetchall()
        digests = {d for (d,) in db.execute("SELECT digest FROM api_token")}
    assert hashlib.sha256(token.encode()).hexdigest() in digests
    assert not any(token in str(value) for row in rows for value in row)
    assert new_token(pbx, "Kept") != token                       # a new one each time


@pytest.mark.parametrize("kind", ["revoked", "expired", "unknown", "malformed"])
def test_a_token_that_opens_nothing_is_a_401(server, pbx, kind):
    token = new_token(pbx, f"Refused {kind}")
    if kind == "revoked":
        writable = open_module_db(pbx)
        token_id = writable.execute_sql("SELECT max(id) FROM api_token").fetchone()[0]
        revoke_token(writable, token_id, NOW_MS)
        writable.close()
    elif kind == "expired":
        token = new_token(pbx, "Expired", expires_days=1)        # created in 2024
    elif kind == "unknown":
        token = "extcdr_" + "A" * 43
    else:
        token = token[:-1] + "!"
    status, headers, text = call_api(server, "/api/v1/calls", token=token, params=PERIOD)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    error = json.loads(text)["error"]
    assert error.startswith("not authenticated")
    assert kind in error
    # a session's headers beside a bad token do not make it good
    status, _, _ = call_api(server, "/api/v1/calls", token=token, user="anna", params=PERIOD)
    assert status == 401


@pytest.mark.parametrize("bearer", ["", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm5hIn0.c2ln"])
def test_another_bearer_is_the_admin_cabinets_sign_in_believed_only_through_the_proxy(
        server, bearer):
    """MikoPBX 2025+ signs its admin cabinet in with its own Bearer token: nginx asks the
    cabinet about it like about a cookie, and the app believes only the proxy's headers."""
    status, _, text = call_api(server, "/api/v1/calls", token=bearer, params=PERIOD)
    assert status == 401 and "PBX admin" in json.loads(text)["error"]
    status, _, text = call_api(server, "/api/v1/calls", token=bearer, user="anna",
                               params=PERIOD)
    assert status == 200, text


def test_a_token_never_opens_the_pages(server, pbx):
    token = new_token(pbx, "Pages")
    for path in ("/", "/settings", "/settings/tokens", "/analytics", "/export?format=csv",
                 "/reports"):
        status, _, text = call_api(server, path, token=token)
        assert status == 401, path
        assert "api/v1" in json.loads(text)["error"]


def test_the_last_use_is_written_at_most_once_a_minute(server, pbx):
    token = new_token(pbx, "Used")
    digest = hashlib.sha256(token.encode()).hexdigest()

    def last_used():
        with sqlite3.connect(pbx) as db:
            return db.execute("SELECT last_used_ms FROM api_token WHERE digest = ?",
                              (digest,)).fetchone()[0]
    assert last_used() is None
    call_api(server, "/api/v1/calls/in-progress", token=token)
    first = last_used()
    assert first is not None
    call_api(server, "/api/v1/calls/in-progress", token=token)
    assert last_used() == first                                  # within the minute
    with sqlite3.connect(pbx) as db:
        db.execute("UPDATE api_token SET last_used_ms = last_used_ms - 61000 WHERE digest = ?",
                   (digest,))
    call_api(server, "/api/v1/calls/in-progress", token=token)
    assert last_used() > first - 61000


def test_a_token_is_served_at_once_while_another_writer_holds_the_database(server, pbx):
    """Its last use is then written by a later request, never waited for."""
    token = new_token(pbx, "Busy")
    holder = sqlite3.connect(pbx, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")               # the sync writing a long batch
    try:
        started = time.monotonic()
        status, _, text = call_api(server, "/api/v1/calls/in-progress", token=token)
        assert status == 200, text
        assert time.monotonic() - started < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    call_api(server, "/api/v1/calls/in-progress", token=token)
    with sqlite3.connect(pbx) as db:
        assert db.execute("SELECT last_used_ms FROM api_token WHERE name = 'Busy'"
                          ).fetchone()[0] is not None


def test_a_token_changes_nothing_but_handled_marks_and_comments(server, pbx):
    """Even an admin's token: deleting calls or recordings and shared tags need a person."""
    token = new_token(pbx, "Leaked", role="admin")
    linkedid = worklist(server, user="anna")[0]["linkedid"]
    refused = [("DELETE", f"/api/v1/calls/{linkedid}", {"reason": "x"}),
               ("DELETE", f"/api/v1/calls/{linkedid}/recordings", {"reason": "x"}),
               ("POST", "/api/v1/recordings/delete", {"linkedids": [linkedid], "reason": "x"}),
               ("POST", "/api/v1/tags", {"name": "pwned"}),
               ("PUT", f"/api/v1/calls/{linkedid}/tags", {"tags": []})]
    for method, path, body in refused:
        status, _, text = call_api(server, path, token=token, method=method, body=body)
        assert status == 403 and "person signed in" in json.loads(text)["error"], path
    status, _, text = call_api(server, f"/api/v1/calls/{linkedid}", token=token)
    assert status == 200, text
    status, _, text = call_api(server, f"/api/v1/calls/{linkedid}/comments", token=token,
                               method="POST", body={"text": "called back from the CRM"})
    assert status == 201 and json.loads(text)["comment"]["author"] == "token:Leaked", text


def test_sessions_still_need_the_csrf_token_and_tokens_do_not(server, pbx):
    linkedid = worklist(server, user="anna")[0]["linkedid"]
    status, _, text = call_api(server, f"/api/v1/calls/{linkedid}/comments", user="anna",
                               method="POST", body={"text": "no csrf"}, csrf=False)
    assert status == 403 and "CSRF" in text
    status, _, _ = call_api(server, f"/api/v1/worklist/unreturned/{linkedid}/handled",
                            user="anna", method="POST", body={}, csrf=False)
    assert status == 403
    token = new_token(pbx, "Commenter")
    status, body = get_json(server, f"/api/v1/calls/{linkedid}/comments", token=token,
                            method="POST", body={"text": "from the CRM"})
    assert status == 201 and body["comment"]["author"] == "token:Commenter"


# --- the worklist ----------------------------------------------------------------------------

def worklist(base, **who) -> list[dict]:
    """The whole worklist of PERIOD, following the cursor in small pages."""
    calls, cursor = [], None
    while True:
        params = {**PERIOD, "limit": 7, **({"cursor": cursor} if cursor else {})}
        status, page = get_json(base, "/api/v1/worklist/unreturned", params=params, **who)
        assert status == 200, page
        calls += page["calls"]
        cursor = page["next_cursor"]
        if cursor is None:
            return calls


def test_the_worklist_is_the_open_missed_calls_oldest_first(server, pbx):
    listed = worklist(server, user="anna")
    _, missed = get_json(server, "/api/v1/calls", user="anna",
                         params={**PERIOD, "tab": "unreturned", "limit": 500})
    assert listed and [c["linkedid"] for c in listed] == \
        [c["linkedid"] for c in reversed(missed["calls"])]
    assert all(c["status"] == "missed" and c["returned_by"] is None for c in listed)
    starts = [c["start"] for c in listed]
    assert starts == sorted(starts)
    tried = [c for c in listed if c["callback_attempts"]]
    assert tried and all(c["last_attempt"]["start"] >= c["end"] for c in tried)
    assert all(c["last_attempt"] is None for c in listed if not c["callback_attempts"])
    with sqlite3.connect(pbx) as db:
        for call in tried:
            attempt = call["last_attempt"]
            direction, answered, src = db.execute(
                "SELECT direction, answered, src FROM call WHERE linkedid = ?",
                (attempt["linkedid"],)).fetchone()
            assert (direction, answered, src) == ("outgoing", 0, attempt["by"])
    token = new_token(pbx, "Worklist 201", "operator", ["201"])
    mine = worklist(server, token=token)
    assert mine == [c for c in listed if "201" in c["employees"]] and mine


def test_the_worklist_refuses_what_it_chooses_itself(server):
    for params in ({"status": "answered"}, {"tab": "all"}, {"limit": "0"}, {"cursor": "x"}):
        status, body = get_json(server, "/api/v1/worklist/unreturned", user="anna",
                                params=params)
        assert status == 400 and body["error"]
    status, body = get_json(server, "/api/v1/worklist/unreturned", user="anna")
    assert status == 200 and body["calls"] == []   # the callback window, 24 h: none in the demo
    old = worklist(server, user="anna")[0]["linkedid"]
    status, body = get_json(server, "/api/v1/worklist/unreturned", user="anna",
                            params={"number": old})        # a linkedid names its own period
    assert status == 200 and [c["linkedid"] for c in body["calls"]] == [old]


def test_the_worklist_is_of_the_callback_window_unless_a_period_is_given(server, pbx,
                                                                         tmp_path):
    """Its default period is `calls.callback_window` back from now (the missed calls a call
    now may still return), as the settings say, documented in the OpenAPI document."""
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{PROXY}"\n[calls]\ncallback_window = '
                      f'{20 * 365 * 86_400}\n')
    with serving(create_app(load(config, {"module.db": pbx})), threads=2) as http:
        wide = f"http://127.0.0.1:{http.effective_port}{PREFIX}"
        status, body = get_json(wide, "/api/v1/worklist/unreturned", user="anna",
                                params={"limit": 500})
        assert status == 200 and body["calls"] == worklist(wide, user="anna") != []
        _, document = get_json(wide, "/api/v1/openapi.json", user="anna")
    described = document["paths"]["/worklist/unreturned"]["get"]["summary"]
    assert "callback window" in described and f"{20 * 365 * 86_400:,} s" in described
    _, document = get_json(server, "/api/v1/openapi.json", user="anna")
    assert "86,400 s" in document["paths"]["/worklist/unreturned"]["get"]["summary"]


def unreturned_tab(base) -> tuple[int, list[str]]:
    """The history page's Unreturned tab: its counter and its rows' linkedids."""
    status, _, page = call_api(base, "/", user="anna", params={**PERIOD, "tab": "unreturned"})
    assert status == 200
    count = re.search(r'tab-unreturned[^>]*>[^<]*<span class="[^"]*count">(\d+)</span>', page)
    return int(count.group(1)), re.findall(r'data-linkedid="([^"]+)"', page)


def test_a_handled_call_leaves_the_worklist_and_the_unreturned_tab(server, pbx):
    token = new_token(pbx, "Our CRM")
    before = worklist(server, token=token)
    count, rows = unreturned_tab(server)
    assert count == len(before)
    call = before[0]
    linkedid = call["linkedid"]
    assert linkedid in rows
    path = f"/api/v1/worklist/unreturned/{linkedid}/handled"
    status, body = get_json(server, path, token=token, method="POST",
                            body={"note": "called from the CRM, <b>done</b>"})
    assert status == 201 and body["handled"]["by"] == "token:Our CRM"
    assert body["handled"]["note"] == "called from the CRM, <b>done</b>"
    status, again = get_json(server, path, token=token, method="POST", body={"note": "again"})
    assert status == 200 and again == body                     # idempotent

    after = worklist(server, token=token)
    assert [c["linkedid"] for c in after] == [c["linkedid"] for c in before[1:]]
    count, rows = unreturned_tab(server)
    assert count == len(after) and linkedid not in rows
    status, _, page = call_api(server, "/", user="anna", params={**PERIOD, "tab": "missed"})
    assert linkedid in page                                       # still a missed call
    status, details = get_json(server, f"/api/v1/calls/{linkedid}", user="anna")
    assert details["handled"]["by"] == "token:Our CRM" and details["call"]["status"] == "missed"
    status, _, html = call_api(server, f"/calls/{linkedid}/details", user="anna")
    assert status == 200
    shown = re.search(r'class="handled">([^<]*(?:<[^/][^<]*)*)</td>', html).group(1)
    assert "Our CRM" in shown and "&lt;b&gt;done&lt;/b&gt;" in shown

    status, body = get_json(server, path, user="anna", method="DELETE")
    assert status == 200 and body["handled"] is None
    assert [c["linkedid"] for c in worklist(server, token=token)] == \
        [c["linkedid"] for c in before]
    assert unreturned_tab(server)[0] == len(before)


def test_the_unreturned_counter_stays_exact_over_whole_hours(server, pbx):
    """The tab counters read the hourly rollups for whole hours: a handled call is taken off
    them exactly, whether its hour is whole in the period or not."""
    token = new_token(pbx, "Counter")
    listed = worklist(server, token=token)
    for call in listed[:3]:
        get_json(server, f"/api/v1/worklist/unreturned/{call['linkedid']}/handled",
                 token=token, method="POST", body={})
    db = open_module_db(pbx, readonly=True)
    try:
        flt = call_filter(PERIOD, PbxClock("Europe/Berlin"), NOW_MS / 1000)
        counts = tab_counts(flt, db)
        by_calls = tab_counts(flt, db, source="calls")
        listed_now = calls_query(replace(flt, tab="unreturned"), db, counting=True).count()
    finally:
        db.close()
    assert counts == by_calls
    assert counts["unreturned"] == listed_now == len(listed) - 3
    for call in listed[:3]:
        call_api(server, f"/api/v1/worklist/unreturned/{call['linkedid']}/handled",
                 token=token, method="DELETE")


def unreturned_everywhere(server, pbx, cli, tmp_path) -> dict[str, list[str] | int]:
    """What each reader says is unreturned in PERIOD: the filter `unreturned=yes` (API, CLI,
    CLI export), the tab, the worklist, the counters (either source, filtered or not) and the
    traffic report of the filter."""
    def linkedids(**params):
        _, body = get_json(server, "/api/v1/calls", user="anna",
                           params={**PERIOD, "limit": 500, **params})
        return sorted(c["linkedid"] for c in body["calls"])
    period = ("--from", PERIOD["from"], "--to", PERIOD["to"], "--unreturned")
    code, out, _ = cli("calls", "--db", pbx, *period, "--format", "jsonl")
    assert code == 0
    exported = tmp_path / "unreturned.jsonl"
    assert cli("export", "--db", pbx, *period, "--format", "jsonl", "--out", exported)[0] == 0
    db = open_module_db(pbx, readonly=True)
    try:
        flt = call_filter(PERIOD, PbxClock("Europe/Berlin"), NOW_MS / 1000)
        counted = {f"{source} {kind}": tab_counts(replace(flt, unreturned=kind == "filtered"),
                                                  db, source=source)
                   for source in ("auto", "calls") for kind in ("filtered", "all")}
    finally:
        db.close()
    _, traffic = get_json(server, "/api/v1/stats/traffic", user="anna",
                          params={**PERIOD, "unreturned": "yes"})
    found = {"api filter": linkedids(unreturned="yes"), "api tab": linkedids(tab="unreturned"),
             "api both": linkedids(unreturned="yes", tab="missed"),
             "worklist": sorted(c["linkedid"] for c in worklist(server, user="anna")),
             "cli": sorted(json.loads(line)["linkedid"] for line in out.splitlines()),
             "cli export": sorted(json.loads(line)["linkedid"]
                                  for line in exported.read_text().splitlines()),
             "page tab": sorted(unreturned_tab(server)[1])}
    counts = {name: n[tab] for name, n in counted.items()
              for tab in (("all", "missed", "unreturned") if "filtered" in name
                          else ("unreturned",))}
    counts["traffic report"] = traffic["totals"]["calls"]
    counts["page counter"] = unreturned_tab(server)[0]
    return found, counts


def test_a_handled_call_leaves_every_unreturned_list_and_count(server, pbx, cli, tmp_path):
    """One meaning of unreturned — missed, nobody called back, not marked handled — in the
    filter, the tab, the worklist, the counters, the exports, the CLI and the reports."""
    before, counted = unreturned_everywhere(server, pbx, cli, tmp_path)
    listed = before["api filter"]
    assert listed and all(found == listed for found in before.values()), before
    assert set(counted.values()) == {len(listed)}, counted
    token = new_token(pbx, "One meaning")
    handled = listed[len(listed) // 2]
    status, _ = get_json(server, f"/api/v1/worklist/unreturned/{handled}/handled",
                         token=token, method="POST", body={})
    assert status == 201
    try:
        after, counted = unreturned_everywhere(server, pbx, cli, tmp_path)
    finally:
        call_api(server, f"/api/v1/worklist/unreturned/{handled}/handled", token=token,
                 method="DELETE")
    assert all(found == [c for c in listed if c != handled] for found in after.values()), after
    assert set(counted.values()) == {len(listed) - 1}, counted


@pytest.mark.parametrize("narrowed", [{}, {"visible_to": Visibility(("201",))},
                                      {"number": "916"}, {"directions": ["incoming"]}])
def test_the_counter_reads_the_handled_calls_by_their_index_not_the_period(pbx, narrowed):
    db = open_module_db(pbx, readonly=True)
    try:
        flt = replace(call_filter(PERIOD, PbxClock("Europe/Berlin"), NOW_MS / 1000), **narrowed)
        sql, params = handled_unreturned_sql(flt, db)
        plan = [row[3] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        db.close()
    assert plan[0].startswith("SEARCH h USING COVERING INDEX call_handled_period"), plan
    assert plan[1].startswith("SEARCH t1 USING INDEX sqlite_autoindex_call_1 (linkedid=?"), plan


def test_handled_only_for_visible_unreturned_missed_calls(server, pbx):
    everyone = worklist(server, user="anna")
    operator = new_token(pbx, "Handler 201", "operator", ["201"])
    other = next(c for c in everyone if "201" not in c["employees"])
    status, body = get_json(server, f"/api/v1/worklist/unreturned/{other['linkedid']}/handled",
                            token=operator, method="POST", body={})
    assert status == 404 and body["error"]
    _, answered = get_json(server, "/api/v1/calls", user="anna",
                           params={**PERIOD, "status": "answered"})
    linkedid = answered["calls"][0]["linkedid"]
    status, body = get_json(server, f"/api/v1/worklist/unreturned/{linkedid}/handled",
                            user="anna", method="POST", body={})
    assert status == 404 and "unreturned" in body["error"]
    status, body = get_json(server, "/api/v1/worklist/unreturned/nosuch.1/handled",
                            user="anna", method="POST", body={})
    assert status == 404
    mine = next(c for c in everyone if "201" in c["employees"])
    path = f"/api/v1/worklist/unreturned/{mine['linkedid']}/handled"
    status, body = get_json(server, path, token=operator, method="POST",
                            body={"note": "x" * 501})
    assert status == 400 and "500" in body["error"]
    status, body = get_json(server, path, token=operator, method="POST", body=["note"])
    assert status == 400
    with sqlite3.connect(pbx) as db:
        assert db.execute("SELECT count(*) FROM call_handled").fetchone()[0] == 0


# --- a supervisor's token: its groups and extensions, never every call --------------------------

def group_of(pbx, name) -> set[str]:
    with sqlite3.connect(pbx) as db:
        return {e for (e,) in db.execute("SELECT extension FROM group_member WHERE "
                                         "group_name = ?", (name,))}


@pytest.mark.parametrize("scope", [{"groups": ["Sales"]}, {"extensions": ["201", "202"]},
                                   {"groups": ["Support"], "extensions": ["201"]}])
def test_a_supervisors_token_never_reads_a_call_outside_its_scope(server, pbx, scope):
    """Through every api/v1 endpoint that gives or changes calls: the list, one call, its
    comments and tags, the worklist, marking handled and unmarking, the reports; exports are
    pages, which no token opens."""
    limited_to = set(scope.get("extensions", ()))
    for group in scope.get("groups", ()):
        limited_to |= group_of(pbx, group)
    token = new_token(pbx, "Supervisor of " + " and ".join(sorted(scope)), "supervisor",
                      scope.get("extensions", ()), groups=scope.get("groups", ()))
    _, everyone = get_json(server, "/api/v1/calls", user="anna", params={**PERIOD, "limit": 500})
    everyone = everyone["calls"]
    ours = [c for c in everyone if limited_to & set(c["employees"])]
    status, seen = get_json(server, "/api/v1/calls", token=token,
                            params={**PERIOD, "limit": 500})
    assert status == 200 and seen["calls"] == ours and 0 < len(ours) < len(everyone)
    theirs = [c["linkedid"] for c in everyone if not limited_to & set(c["employees"])]
    assert worklist(server, token=token) == [c for c in worklist(server, user="anna")
                                             if limited_to & set(c["employees"])]
    status, _ = get_json(server, f"/api/v1/calls/{ours[0]['linkedid']}", token=token)
    assert status == 200
    for path in ("", "/comments", "/tags", "/comments/history"):
        status, body = get_json(server, f"/api/v1/calls/{theirs[0]}{path}", token=token)
        assert status == 404 and body["error"], path
    open_other = next(c["linkedid"] for c in worklist(server, user="anna")
                      if not limited_to & set(c["employees"]))
    handled = f"/api/v1/worklist/unreturned/{open_other}/handled"
    status, _ = get_json(server, handled, token=token, method="POST", body={"note": "x"})
    assert status == 404
    status, _ = get_json(server, handled, user="anna", method="POST", body={})
    assert status == 201
    try:
        status, _ = get_json(server, handled, token=token, method="DELETE")
        assert status == 404
        _, details = get_json(server, f"/api/v1/calls/{open_other}", user="anna")
        assert details["handled"] is not None                    # still marked
    finally:
        get_json(server, handled, user="anna", method="DELETE")
    status, report = get_json(server, "/api/v1/stats/traffic", token=token, params=PERIOD)
    assert status == 200 and report["totals"]["calls"] == len(ours)
    status, body = get_json(server, "/api/v1/recordings/count", token=token, params=PERIOD)
    assert status == 403
    status, _, _ = call_api(server, "/export", token=token, params={**PERIOD, "format": "jsonl"})
    assert status == 401


def test_a_supervisors_token_needs_a_scope(server, pbx):
    writable = open_module_db(pbx)
    try:
        for role, extensions, groups, words in (
                ("supervisor", [], [], "needs the groups or extensions"),
                ("supervisor", [], ["Nobody"], "unknown employee group 'Nobody'"),
                ("admin", [], ["Sales"], "sees every call"),
                ("operator", ["201"], ["Sales"], "give groups to a supervisor's token")):
            with pytest.raises(TokenError, match=re.escape(words)):
                create_token(writable, "X", role, extensions, "anna", NOW_MS, groups=groups)
        # One made before a supervisor's token needed its scope opens nothing.
        writable.execute_sql("INSERT INTO api_token (name, digest, role, created_by, "
                             "created_ms) VALUES ('Old', ?, 'supervisor', 'anna', 1)",
                             (hashlib.sha256(b"extcdr_" + b"o" * 43).hexdigest(),))
    finally:
        writable.close()
    status, body = get_json(server, "/api/v1/calls", token="extcdr_" + "o" * 43)
    assert status == 401 and "names no groups or extensions" in body["error"]


# --- the command line ------------------------------------------------------------------------

def test_the_cli_creates_lists_and_revokes_tokens(server, pbx, cli):
    code, out, err = cli("token", "create", "--db", pbx, "--name", "Script", "--role",
                         "operator", "--extensions", "201,202", "--expires-days", "30")
    assert code == 0 and "shown this once" in err
    token = out.strip()
    assert re.fullmatch(r"extcdr_[A-Za-z0-9_-]{43}", token)
    status, _ = get_json(server, "/api/v1/calls/in-progress", token=token)
    assert status == 200
    code, out, _ = cli("token", "list", "--db", pbx, "--format", "json")
    listed = [json.loads(line) for line in out.splitlines()]
    script = next(t for t in listed if t["name"] == "Script")
    assert script["extensions"] == ["201", "202"] and script["last_used_ms"]
    assert token not in out and "digest" not in out
    code, out, _ = cli("token", "list", "--db", pbx)
    assert code == 0 and "Script | operator | 201,202" in out
    code, out, _ = cli("token", "revoke", "--db", pbx, script["id"])
    assert code == 0 and "revoked" in out
    status, _ = get_json(server, "/api/v1/calls/in-progress", token=token)
    assert status == 401


@pytest.mark.parametrize("args, words", [
    (["--name", "X", "--role", "operator"], "needs the extensions"),
    (["--name", "X", "--role", "admin", "--extensions", "201"], "every call"),
    (["--name", "X", "--role", "root"], "invalid choice"),
    (["--name", "", "--role", "admin"], "give the token a name"),
    (["--name", "<b>", "--role", "admin"], "plain text"),
    (["--name", "X", "--role", "operator", "--extensions", "2 01;"], "bad extension"),
    (["--name", "X", "--role", "admin", "--expires-days", "0"], "--expires-days"),
    (["--name", "X", "--role", "supervisor"], "needs the groups or extensions"),
    (["--name", "X", "--role", "supervisor", "--groups", "Nobody"], "unknown employee group"),
    (["--name", "X", "--role", "admin", "--groups", "Sales"], "every call"),
])
def test_the_cli_refuses_bad_input_in_one_line(pbx, cli, args, words):
    code, out, err = cli("token", "create", "--db", pbx, *args)
    assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1


def test_the_cli_creates_a_supervisors_token_for_groups(server, pbx, cli):
    code, out, _ = cli("token", "create", "--db", pbx, "--name", "Sales desk", "--role",
                       "supervisor", "--groups", "Sales,Support", "--extensions", "201")
    assert code == 0
    status, body = get_json(server, "/api/v1/calls", token=out.strip(), params=PERIOD)
    members = group_of(pbx, "Sales") | group_of(pbx, "Support") | {"201"}
    assert status == 200 and body["calls"]
    assert all(members & set(c["employees"]) for c in body["calls"])
    code, out, _ = cli("token", "list", "--db", pbx)
    assert "Sales desk | supervisor | 201,group Sales,group Support" in out
    code, out, _ = cli("token", "list", "--db", pbx, "--format", "json")
    listed = next(json.loads(line) for line in out.splitlines() if "Sales desk" in line)
    assert listed["groups"] == ["Sales", "Support"] and listed["extensions"] == ["201"]


def test_the_cli_refuses_an_unknown_token_to_revoke(pbx, cli):
    code, _, err = cli("token", "revoke", "--db", pbx, "999999")
    assert code == 2 and "no API token 999999" in err
