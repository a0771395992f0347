"""The JSON API over real HTTP (waitress): filters, keyset paging, roles enforced in the
query, readable 4xx for bad input, and no trust in requests that bypassed the admin shell —
over the demo's mirror on each engine (conftest's `engine`, `demo_module_db`)."""
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from mirror.settings import load
from tests.mirror import query
from tests.stack import serving
from web import create_app

TOKEN = "proxy-secret"
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}


@pytest.fixture(scope="module")
def server(demo_module_db, tmp_path_factory):
    config = tmp_path_factory.mktemp("web") / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    app = create_app(load(config, {"module.db": demo_module_db}))
    with serving(app, threads=4) as http:
        yield f"http://127.0.0.1:{http.effective_port}{PREFIX}"


def get(base, path, params=None, *, user="anna", role="admin", extensions="", scope="",
        token=TOKEN, extra_headers=None):
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    headers = {"X-Extcdr-User": user, "X-Extcdr-Role": role, "X-Extcdr-Extensions": extensions,
               "X-Extcdr-Scope": scope}
    if token is not None:
        headers["X-Extcdr-Proxy-Token"] = token
    headers.update(extra_headers or {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_requests_that_bypassed_the_admin_shell_are_refused(server):
    for token in (None, "", "guess"):
        status, body = get(server, "/api/v1/calls", PERIOD, token=token)
        assert status == 401 and "admin" in body["error"]
    status, _ = get(server, "/api/v1/calls", PERIOD, role="root")
    assert status == 401


def test_filters_and_keyset_pages_cover_the_period_exactly_once(server):
    status, whole = get(server, "/api/v1/calls", {**PERIOD, "limit": 500})
    assert status == 200 and len(whole["calls"]) == 500
    seen, cursor = [], None
    for _ in range(20):
        params = {**PERIOD, "limit": 37, **({"cursor": cursor} if cursor else {})}
        status, page = get(server, "/api/v1/calls", params)
        assert status == 200
        seen += [c["linkedid"] for c in page["calls"]]
        cursor = page["next_cursor"]
        if len(seen) >= 500 or cursor is None:
            break
    assert seen[:500] == [c["linkedid"] for c in whole["calls"]]
    starts = [c["start"] for c in whole["calls"]]
    assert starts == sorted(starts, reverse=True)


def test_the_api_uses_the_cli_filters(server, demo_module_db, cli):
    params = {**PERIOD, "direction": "incoming", "status": "missed", "limit": 500}
    status, body = get(server, "/api/v1/calls", params)
    code, out, _ = cli("calls", "--db", demo_module_db, "--from", PERIOD["from"], "--to",
                       PERIOD["to"], "--direction", "incoming", "--status", "missed",
                       "--limit", 500, "--format", "jsonl")
    assert status == 200 and code == 0
    assert body["calls"] == [json.loads(line) for line in out.splitlines()]
    assert body["calls"] and all(c["status"] == "missed" for c in body["calls"])


def test_an_operator_sees_only_calls_of_their_extensions(server):
    _, everyone = get(server, "/api/v1/calls", {**PERIOD, "limit": 500})
    status, mine = get(server, "/api/v1/calls", {**PERIOD, "limit": 500}, role="operator",
                       extensions="201")
    assert status == 200 and mine["calls"]
    assert all("201" in c["employees"] for c in mine["calls"])
    other = next(c for c in everyone["calls"] if "201" not in c["employees"])
    status, _ = get(server, f"/api/v1/calls/{other['linkedid']}", role="operator",
                    extensions="201")
    assert status == 404
    status, detail = get(server, f"/api/v1/calls/{mine['calls'][0]['linkedid']}",
                         role="operator", extensions="201")
    assert status == 200 and len(detail["legs"]) == detail["call"]["legs"]
    status, nothing = get(server, "/api/v1/calls", PERIOD, role="operator", extensions="")
    assert status == 200 and nothing["calls"] == []


def all_calls(server, **who) -> dict[str, dict]:
    """Every call of the period this user sees (all pages), by linkedid."""
    calls, cursor = {}, None
    while True:
        status, page = get(server, "/api/v1/calls",
                           {**PERIOD, "limit": 500, **({"cursor": cursor} if cursor else {})},
                           **who)
        assert status == 200, page
        calls.update((c["linkedid"], c) for c in page["calls"])
        cursor = page["next_cursor"]
        if cursor is None:
            return calls


def test_access_groups_limit_operators_as_modules_users_ui_does(server, demo_module_db):
    """ModuleUsersUI's CDR filter modes, passed by the access check as a scope: 'selected'
    (involved), 'outgoing-selected' (placed), 'not-selected' (except); a detail, too, is 404
    outside the scope."""
    everyone = all_calls(server)
    involved = all_calls(server, role="operator", extensions="201,202")
    placed = all_calls(server, role="operator", extensions="201,202", scope="placed")
    others = all_calls(server, role="operator", extensions="201,202", scope="except")
    callers = {linkedid for (linkedid,) in query(
        demo_module_db, "SELECT DISTINCT linkedid FROM leg WHERE src_num IN ('201', '202')")}
    assert involved and placed and others
    assert set(involved) == {k for k, c in everyone.items() if {"201", "202"} & set(c["employees"])}
    assert set(placed) == set(everyone) & callers
    assert set(placed) < set(involved)
    assert set(others) == set(everyone) - set(involved)
    outside = next(iter(set(involved) - set(placed)))
    status, _ = get(server, f"/api/v1/calls/{outside}", role="operator", extensions="201,202",
                    scope="placed")
    assert status == 404
    status, _ = get(server, f"/api/v1/calls/{outside}", role="operator", extensions="201,202",
                    scope="except")
    assert status == 404
    status, detail = get(server, f"/api/v1/calls/{next(iter(others))}", role="operator",
                         extensions="201,202", scope="except")
    assert status == 200 and not {"201", "202"} & set(detail["call"]["employees"])
    status, body = get(server, "/api/v1/calls", PERIOD, role="operator", extensions="201",
                       scope="everything")
    assert status == 401 and "scope" in body["error"]


@pytest.mark.parametrize("params, words", [
    ({"from": "2024-02-30"}, "bad date"),
    ({"status": "lost"}, "unknown status"),
    ({"direction": "up"}, "unknown direction"),
    ({"number": "src:1' OR 1=1 --"}, "src: takes digits"),
    ({"limit": "100000"}, "limit must be"),
    ({"limit": "-1"}, "limit must be"),
    ({"min_talk": "ten"}, "min_talk must be a whole number"),
    ({"cursor": "abc"}, "bad cursor"),
    ({"unreturned": "maybe"}, "unreturned must be"),
    ({"sort": "start"}, "unknown parameter"),
])
def test_bad_input_is_a_readable_400(server, params, words):
    status, body = get(server, "/api/v1/calls", {**PERIOD, **params})
    assert status == 400 and words in body["error"]


def test_sql_metacharacters_are_just_values(server):
    for name in ("employee", "group"):
        status, body = get(server, "/api/v1/calls", {**PERIOD, name: "201' OR '1'='1"})
        assert status in (200, 400)
        assert status == 400 or body["calls"] == []
    status, _ = get(server, "/api/v1/calls/" + urllib.parse.quote("x' OR '1'='1"))
    assert status == 404


def test_names_and_bare_linkedids_are_searched_like_numbers(server):
    status, calls = get(server, "/api/v1/calls", {**PERIOD, "limit": 500})
    named = next(c for c in calls["calls"] if len(c["dst_name"]) >= 5 and " " in c["dst_name"])
    part = named["dst_name"].split()[0][:4].lower()
    status, body = get(server, "/api/v1/calls", {**PERIOD, "number": part, "limit": 500})
    assert status == 200 and named["linkedid"] in {c["linkedid"] for c in body["calls"]}
    status, body = get(server, "/api/v1/calls", {**PERIOD, "number": named["linkedid"]})
    assert status == 200 and [c["linkedid"] for c in body["calls"]] == [named["linkedid"]]
    # letters that are no one's name: nothing found, no error (and never SQL)
    status, body = get(server, "/api/v1/calls", {**PERIOD, "number": "1' OR 1=1 --"})
    assert status == 200 and body["calls"] == []
    # an operator's name search still sees only their calls
    status, body = get(server, "/api/v1/calls", {**PERIOD, "number": part, "limit": 500},
                       role="operator", extensions="201")
    assert status == 200 and all("201" in c["employees"] for c in body["calls"])
