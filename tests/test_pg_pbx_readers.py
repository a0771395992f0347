"""Several PBXs in one central history (issue 22, the readers' side): the `pbx` filter of the
page, the API and the CLI, the page's PBX select and column, employees per PBX (two PBXs'
extension 201 are two people), Analytics' rows per PBX (two PBXs' queue 2000 are two queues),
and users limited to some PBXs.

Real parts: two small PBXs' SQLite files synced with their ids into the session's PostgreSQL,
the app over real HTTP with the admin shell's headers, the CLI in-process.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from exports.writers import about
from mirror.analytics import build_report, tab_counts
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.pbxtime import PbxClock
from mirror.queries import CallFilter, Visibility, call_rows, calls_query, names_by_pbx
from mirror.report_rows import Owner
from mirror.settings import load
from mirror.tokens import create_token
from mirror.userdata import set_supervisor_groups
from pbx import tables as pbxschema
from pbx.config import GROUPS_DB_BESIDE_CONFIG
from pbx.mirror_context import MirrorContext
from reports.definitions import report_form, save_report
from reports.scheduler import ReportScheduler
from standin.shell import load_users
from tests.pbxfixture import DID, Pbx
from tests.stack import serving
from tests.test_reports import set_pbx_mail, smtp  # noqa: F401  (a fixture)
from web import create_app

BORIS = "Борис Орлов"          # the branch's 201; the office's is Иван Петров (tests.pbxfixture)
IVAN = "Иван Петров"
MISSED = """
    start    | end      | src          | dst | dialstatus
    10:00:00 | 10:00:25 | +79161234567 | 201 | CANCEL
    """
ANSWERED = """
    start    | answer   | end      | src          | dst
    {at}     | {answer} | {end}    | +7916555{n}  | 201
    """
INTERNAL = """
    start    | answer   | end      | src | dst
    15:00:00 | 15:00:05 | 15:01:05 | 202 | 203
    """


def _answered(pbx: Pbx, hour: int, n: int) -> str:
    return pbx.call(ANSWERED.format(at=f"{hour}:00:00", answer=f"{hour}:00:05",
                                    end=f"{hour}:02:05", n=f"{n:04d}"), did=DID)


def _groups(pbx: Pbx, members: dict[str, list[int]]) -> None:
    """ModuleUsersGroups' DB beside the PBX's config DB: group name -> its members' user ids
    (user 1 is extension 201, 2 is 202, …)."""
    path = pbx.pbx_db.parent / GROUPS_DB_BESIDE_CONFIG
    path.parent.mkdir(parents=True)
    conn = pbxschema.create(str(path), pbxschema.USERS_GROUPS_DDL)
    with conn:
        for group_id, (name, users) in enumerate(members.items(), start=1):
            conn.execute("INSERT INTO m_ModuleUsersGroups_UsersGroups (id, name, description, "
                         "defaultGroup) VALUES (?, ?, '', '0')", (group_id, name))
            conn.executemany("INSERT INTO m_ModuleUsersGroups_GroupMembers (user_id, group_id) "
                             "VALUES (?, ?)", [(user, group_id) for user in users])
    conn.close()


@pytest.fixture
def central(tmp_path, capsys, pg_schema_url, cli) -> dict:
    """Two PBXs, 'office' and 'branch', synced into one central history: each its own calls
    (linkedid -> pbx); the branch's extension 201 is Борис Орлов; group 'Продажи' is 201 on
    the office and 202 on the branch."""
    office, branch = Pbx(tmp_path / "office", capsys), Pbx(tmp_path / "branch", capsys)
    with sqlite3.connect(branch.pbx_db) as conn:
        conn.execute("UPDATE m_Users SET username = ? WHERE id = 1", (BORIS,))
        conn.execute("UPDATE m_Extensions SET callerid = ? WHERE number = '201'", (BORIS,))
    conn.close()
    _groups(office, {"Продажи": [1]})
    _groups(branch, {"Продажи": [2]})
    calls = {}
    for pbx, name in ((office, "office"), (branch, "branch")):
        ids = [pbx.call(MISSED, did=DID), _answered(pbx, 11, 1), pbx.call(INTERNAL)]
        if name == "office":
            ids += [_answered(pbx, 12, 2), _answered(pbx, 13, 3)]
        calls.update({f"{name}:{linkedid}": name for linkedid in ids})
        if name == "branch":
            _named_as_configured(pbx)
        code, _, err = cli("sync", "--cdr-db", pbx.cdr_db, "--pbx-db", pbx.pbx_db, "--db",
                           pg_schema_url, "--pbx-id", name, "--once")
        assert code == 0, err
    return {"url": pg_schema_url, "calls": calls, "day": office.day, "tmp": tmp_path,
            "office": office, "branch": branch}


def _named_as_configured(branch: Pbx) -> None:
    """The branch's legs name its 201 as its config does."""
    with sqlite3.connect(branch.cdr_db) as conn:
        for side in ("src", "dst"):
            conn.execute(f"UPDATE cdr_general SET {side}_name = ? WHERE {side}_num = '201'",
                         (BORIS,))
    conn.close()


def _of(calls: dict, pbx: str) -> set[str]:
    return {linkedid for linkedid, of in calls.items() if of == pbx}


def _cli_calls(cli, central, *args) -> tuple[int, list[dict], str]:
    code, out, err = cli("calls", "--db", central["url"], "--format", "jsonl", "--from",
                         central["day"], "--to", central["day"], *args)
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _period(day: str) -> tuple[int, int]:
    start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo("Europe/Moscow"))
    return int(start.timestamp() * 1000), int(start.timestamp() * 1000) + 86_400_000


@pytest.fixture
def web(central, tmp_path):
    """get(path, role=…, pbxs=…, extensions=…, user=…) -> (status, body) against the app over
    HTTP, with the headers the admin shell's nginx sets for `user` (default `<role>-<pbxs>`),
    or, given `token`, an API token's; given `form`, a POST of it with the user's CSRF token.
    Redirects are not followed."""
    config = tmp_path / "extcdr.toml"
    config.write_text('[web]\nproxy_token = "proxy-secret"\n')
    no_redirect = urllib.request.build_opener(type(
        "NoRedirect", (urllib.request.HTTPRedirectHandler,),
        {"redirect_request": lambda *a, **k: None}))
    with serving(create_app(load(config, {"module.db": central["url"]}))) as http:
        base = f"http://127.0.0.1:{http.effective_port}{load()['web.prefix'].rstrip('/')}"

        def get(path: str, *, role: str = "admin", pbxs: str = "", extensions: str = "",
                token: str | None = None, user: str = "", form: dict | None = None):
            user = user or f"{role}-{pbxs or 'all'}"
            data = None
            if form is not None:
                key = hashlib.sha256(b"extcdr:proxy-secret").digest()
                csrf = hmac.new(key, f"csrf:{user}".encode(), hashlib.sha256).hexdigest()
                data = urllib.parse.urlencode({**form, "csrf_token": csrf}, doseq=True).encode()
            request = urllib.request.Request(base + path, data=data, headers={
                "X-Extcdr-User": user, "X-Extcdr-Role": role,
                "X-Extcdr-Extensions": extensions, "X-Extcdr-Pbxs": pbxs,
                "X-Extcdr-Proxy-Token": "proxy-secret"} if token is None else {
                "Authorization": f"Bearer {token}"})
            try:
                with no_redirect.open(request) as reply:
                    return reply.status, reply.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()
        yield get


def _api_calls(web, central, **params) -> tuple[int, dict]:
    query = urllib.parse.urlencode({"from": central["day"], "to": central["day"], **params})
    status, body = web(f"/api/v1/calls?{query}")
    return status, json.loads(body)


def test_the_pbx_filter_selects_exactly_that_pbxs_calls(central, cli, web):
    """`--pbx` and the API's `pbx`: the calls of that PBX, each record naming it; an unknown
    id finds nothing, a malformed one is one line (CLI) or a 400 saying what a PBX id is."""
    for pbx in ("office", "branch"):
        code, records, err = _cli_calls(cli, central, "--pbx", pbx)
        assert code == 0, err
        assert {r["linkedid"] for r in records} == _of(central["calls"], pbx)
        assert {r["pbx"] for r in records} == {pbx}
        status, body = _api_calls(web, central, pbx=pbx)
        assert status == 200 and {c["linkedid"] for c in body["calls"]} == _of(
            central["calls"], pbx)
    code, records, _ = _cli_calls(cli, central)
    assert {r["linkedid"] for r in records} == set(central["calls"])
    assert _cli_calls(cli, central, "--pbx", "elsewhere")[:2] == (0, [])
    code, _, err = cli("calls", "--db", central["url"], "--from", central["day"], "--pbx",
                       "Bad PBX!")
    assert code == 2 and "pbx must be a PBX's id" in err and len(err.strip().splitlines()) == 1
    status, body = _api_calls(web, central, pbx="Bad PBX!")
    assert status == 400 and "pbx must be a PBX's id" in body["error"], body


def test_counters_of_one_pbx_are_its_calls(central):
    """The tab counters with a pbx filter (the hourly counters know no PBX: they come from the
    calls) equal the filtered rows, tab by tab."""
    start_ms, end_ms = _period(central["day"])
    db = open_module_db(central["url"], readonly=True)
    try:
        for pbx in ("office", "branch"):
            flt = CallFilter(start_ms=start_ms, end_ms=end_ms, pbx=pbx)
            rows = list(call_rows(calls_query(flt, db), annotate=False))
            counts = tab_counts(flt, db)
            assert counts["all"] == len(rows) == len(_of(central["calls"], pbx))
            for tab in ("incoming", "internal", "outgoing"):
                assert counts[tab] == sum(r["direction"] == tab for r in rows), (pbx, tab)
            assert counts["missed"] == sum(r["status"] == "missed" for r in rows)
        assert tab_counts(CallFilter(start_ms=start_ms, end_ms=end_ms), db)["all"] == len(
            central["calls"])
    finally:
        db.close()


def test_the_page_shows_a_pbx_select_and_column_with_several_pbxs(central, web):
    """With two PBXs: the select offers both, the rows carry their PBX, `pbx=` narrows them."""
    status, page = web(f"/?from={central['day']}&to={central['day']}")
    assert status == 200
    assert '<select name="pbx"' in page
    assert '<option value="office">' in page and '<option value="branch">' in page
    assert page.count('<td class="collapsing pbx">branch</td>') == 3
    assert page.count('<td class="collapsing pbx">office</td>') == 5
    status, page = web(f"/?from={central['day']}&to={central['day']}&pbx=branch")
    assert status == 200 and '<option value="branch" selected>' in page
    assert page.count('<td class="collapsing pbx">') == 3
    assert 'class="collapsing pbx">office<' not in page


def test_one_pbx_shows_neither_select_nor_column(tmp_path, capsys, pg_schema_url, cli):
    """The only PBX (no pbx.id) on PostgreSQL, and a SQLite history: no select, no column."""
    only = Pbx(tmp_path / "only", capsys)
    only.call(MISSED, did=DID)
    only.sync()
    code, _, err = cli("sync", "--cdr-db", only.cdr_db, "--pbx-db", only.pbx_db, "--db",
                       pg_schema_url, "--once")
    assert code == 0, err
    config = tmp_path / "extcdr.toml"
    config.write_text('[web]\nproxy_token = "proxy-secret"\n')
    for db in (pg_schema_url, str(only.module_db)):
        with serving(create_app(load(config, {"module.db": db}))) as http:
            url = (f"http://127.0.0.1:{http.effective_port}{load()['web.prefix']}"
                   f"?from={only.day}&to={only.day}")
            request = urllib.request.Request(url, headers={
                "X-Extcdr-User": "anna", "X-Extcdr-Role": "admin",
                "X-Extcdr-Proxy-Token": "proxy-secret"})
            with urllib.request.urlopen(request) as reply:
                page = reply.read().decode()
        assert 'name="pbx"' not in page and 'class="collapsing pbx"' not in page, db
        assert 'data-linkedid="' in page, db


def test_a_user_limited_to_one_pbx_never_sees_the_others_calls(central, web, cli):
    """An admin and an operator limited to the branch: the list, the counters, a call's
    details (the office's is 404), the export and the CLI's --user see the branch's calls
    only; the select offers only the branch (so no PBX column)."""
    branch = _of(central["calls"], "branch")
    office_call = sorted(_of(central["calls"], "office"))[0]
    query = urllib.parse.urlencode({"from": central["day"], "to": central["day"]})
    for role, extensions in (("admin", ""), ("operator", "201,202")):
        status, body = web(f"/api/v1/calls?{query}", role=role, pbxs="branch",
                           extensions=extensions)
        seen = {c["linkedid"] for c in json.loads(body)["calls"]}
        assert status == 200 and seen and seen <= branch, (role, seen)
        assert web(f"/api/v1/calls/{urllib.parse.quote(office_call)}", role=role,
                   pbxs="branch", extensions=extensions)[0] == 404
        assert web(f"/calls/{urllib.parse.quote(office_call)}/details", role=role,
                   pbxs="branch", extensions=extensions)[0] == 404
        status, csv = web(f"/export?format=csv&{query}", role=role, pbxs="branch",
                          extensions=extensions)
        assert status == 200 and not any(c in csv for c in _of(central["calls"], "office"))
        assert any(c in csv for c in branch), role
        status, page = web(f"/?{query}", role=role, pbxs="branch", extensions=extensions)
        assert status == 200 and 'name="pbx"' not in page and "collapsing pbx" not in page
        assert not any(f'data-linkedid="{c}"' in page for c in _of(central["calls"], "office"))
        # The branch's calls only, whatever the pbx filter asks for.
        status, body = web(f"/api/v1/calls?{query}&pbx=office", role=role, pbxs="branch",
                           extensions=extensions)
        assert status == 200 and json.loads(body)["calls"] == []
    assert web(f"/api/v1/calls?{query}", pbxs="branch")[1].count('"linkedid"') == len(branch)
    start_ms, end_ms = _period(central["day"])
    db = open_module_db(central["url"], readonly=True)
    try:
        limited = CallFilter(start_ms=start_ms, end_ms=end_ms,
                             visible_to=Visibility.of("admin", (), pbxs=("branch",)))
        assert tab_counts(limited, db)["all"] == len(branch)
    finally:
        db.close()
    users = central["tmp"] / "users.json"
    users.write_text(json.dumps([{"name": "olga", "password": "x", "role": "admin",
                                  "pbxs": ["branch"]}]))
    assert load_users(users)["olga"].user.pbxs == ("branch",)
    out = central["tmp"] / "calls.csv"
    code, _, err = cli("export", "--db", central["url"], "--from", central["day"], "--to",
                       central["day"], "--format", "csv", "--users", users, "--user", "olga",
                       "--out", out)
    assert code == 0, err
    exported = out.read_text(encoding="utf-8-sig")
    assert all(c in exported for c in branch)
    assert not any(c in exported for c in _of(central["calls"], "office"))


def test_a_users_file_refuses_a_malformed_pbx(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps([{"name": "olga", "password": "x", "role": "admin",
                                  "pbxs": ["Branch 2"]}]))
    from standin.shell import UsersFileError
    with pytest.raises(UsersFileError, match="has pbx 'Branch 2'"):
        load_users(users)


def test_employee_names_and_groups_are_each_pbxs_own(central, web, cli):
    """Extension 201 is Иван Петров on the office and Борис Орлов on the branch: each call
    shows its PBX's name, a name search finds only that person's calls, the group 'Продажи'
    (201 on the office, 202 on the branch) selects each member's calls on their own PBX, and
    the employee choice offers each PBX's 201 (by PBX and extension)."""
    db = open_module_db(central["url"], readonly=True)
    try:
        names = names_by_pbx(db)
    finally:
        db.close()
    assert names["office"]["201"] == IVAN and names["branch"]["201"] == BORIS
    day = central["day"]
    status, page = web(f"/?from={day}&to={day}")
    assert status == 200 and '<option value="201"' not in page
    assert f'<option value="office:201">office:201 {IVAN}</option>' in page
    assert f'<option value="branch:201">branch:201 {BORIS}</option>' in page
    code, every, err = _cli_calls(cli, central)
    assert code == 0, err
    for record in every:
        if record["answered_by"] != "201":
            continue
        status, details = web(f"/calls/{urllib.parse.quote(record['linkedid'])}/details")
        answered = details.split('class="answered-by">')[1].split("<")[0]
        assert answered.split() == ["201", *(BORIS if record["pbx"] == "branch"
                                             else IVAN).split()], (record["pbx"], answered)
    for name, pbx in (("Борис", "branch"), ("Иван", "office")):
        code, records, err = _cli_calls(cli, central, "--number", name)
        assert code == 0 and records and {r["pbx"] for r in records} == {pbx}, (name, err)
    code, records, err = _cli_calls(cli, central, "--group", "Продажи")
    assert code == 0, err
    assert {r["linkedid"] for r in records} == {
        r["linkedid"] for r in every if "201" in r["employees"] and r["pbx"] == "office"
        or "202" in r["employees"] and r["pbx"] == "branch"}
    assert {r["pbx"] for r in records} == {"office", "branch"}


def test_a_supervisors_groups_are_their_members_on_their_own_pbx(central, web):
    """A supervisor limited to the group 'Продажи' (201 on the office, 202 on the branch) —
    by an admin, or as a token's groups — sees the office's calls of 201 and the branch's of
    202, never the branch's 201 (another person) nor the office's 202."""
    db = open_module_db(central["url"])
    try:
        set_supervisor_groups(db, "supervisor-all", ["Продажи"])
        _, token = create_token(db, "crm", "supervisor", [], "admin", int(time.time() * 1000),
                                groups=["Продажи"])
    finally:
        db.close()
    start_ms, end_ms = _period(central["day"])
    db = open_module_db(central["url"], readonly=True)
    try:
        every = list(call_rows(calls_query(CallFilter(start_ms=start_ms, end_ms=end_ms), db),
                               annotate=False))
    finally:
        db.close()
    expected = {r["linkedid"] for r in every
                if r["pbx"] == "office" and "201" in r["employees"]
                or r["pbx"] == "branch" and "202" in r["employees"]}
    assert expected and expected != {r["linkedid"] for r in every}
    query = urllib.parse.urlencode({"from": central["day"], "to": central["day"]})
    status, body = web(f"/api/v1/calls?{query}", role="supervisor")
    assert status == 200 and {c["linkedid"] for c in json.loads(body)["calls"]} == expected
    status, body = web(f"/api/v1/calls?{query}", token=token)
    assert status == 200 and {c["linkedid"] for c in json.loads(body)["calls"]} == expected


def test_a_callback_attempt_is_named_by_its_own_pbx(central, cli, web):
    """The branch's 201 tried to call back the number both PBXs missed: each missed call's
    last attempt in the worklist is by 201, Борис Орлов (the branch's), not Иван Петров."""
    branch = central["branch"]
    branch.call("""
        start    | end      | src | dst         | dialstatus
        16:00:00 | 16:00:30 | 201 | 89161234567 | NOANSWER
        """)
    _named_as_configured(branch)
    code, _, err = cli("sync", "--cdr-db", branch.cdr_db, "--pbx-db", branch.pbx_db, "--db",
                       central["url"], "--pbx-id", "branch", "--once")
    assert code == 0, err
    query = urllib.parse.urlencode({"from": central["day"], "to": central["day"]})
    status, body = web(f"/api/v1/worklist/unreturned?{query}")
    attempts = {(c["pbx"], c["last_attempt"]["by"], c["last_attempt"]["by_name"])
                for c in json.loads(body)["calls"]}
    assert status == 200 and attempts == {("office", "201", BORIS), ("branch", "201", BORIS)}


def _token_page(web, pbxs: str, form: dict | None = None) -> tuple[int, str]:
    """The API tokens page as an admin limited to `pbxs`."""
    return web("/settings/tokens", pbxs=pbxs, form=form)


def _created_token(page: str) -> str:
    return re.search(r'class="token-value" value="(extcdr_[^"]+)"', page).group(1)


def test_a_token_limited_to_a_pbx_reads_only_its_calls(central, web, cli):
    """A token limited to the branch — made on the page by an admin limited to the branch, or
    by the CLI's --pbxs — sees only the branch's calls in every API call: the list (whatever
    its pbx filter), a call's details, the stats, the worklist, comments; an unlimited token
    sees both PBXs'."""
    day, branch = central["day"], _of(central["calls"], "branch")
    office_call = sorted(_of(central["calls"], "office"))[0]
    status, page = _token_page(web, "branch", {"name": "branch CRM", "role": "admin"})
    assert status == 200, page
    by_page = _created_token(page)
    code, out, err = cli("token", "create", "--db", central["url"], "--name", "branch script",
                         "--role", "operator", "--extensions", "201,202,203", "--pbxs", "branch")
    assert code == 0, err
    by_cli = out.strip()
    code, out, err = cli("token", "create", "--db", central["url"], "--name", "all",
                         "--role", "admin")
    assert code == 0, err
    every = out.strip()
    query = urllib.parse.urlencode({"from": day, "to": day})
    for token in (by_page, by_cli):
        status, body = web(f"/api/v1/calls?{query}", token=token)
        assert status == 200 and {c["linkedid"] for c in json.loads(body)["calls"]} == branch
        status, body = web(f"/api/v1/calls?{query}&pbx=office", token=token)
        assert status == 200 and json.loads(body)["calls"] == []
        for path in (f"/api/v1/calls/{urllib.parse.quote(office_call)}",
                     f"/api/v1/calls/{urllib.parse.quote(office_call)}/comments"):
            assert web(path, token=token)[0] == 404, path
        status, body = web(f"/api/v1/stats/traffic?{query}", token=token)
        assert status == 200 and json.loads(body)["totals"]["calls"] == len(branch)
        status, body = web(f"/api/v1/worklist/unreturned?{query}", token=token)
        assert status == 200 and {c["pbx"] for c in json.loads(body)["calls"]} == {"branch"}
    status, body = web(f"/api/v1/calls?{query}", token=every)
    assert {c["linkedid"] for c in json.loads(body)["calls"]} == set(central["calls"])
    status, body = web(f"/api/v1/stats/traffic?{query}", token=every)
    assert json.loads(body)["totals"]["calls"] == len(central["calls"])
    code, out, _ = cli("token", "list", "--db", central["url"])
    assert code == 0 and "branch CRM | admin | every call of PBX branch" in out
    assert "branch script | operator | 201,202,203 of PBX branch" in out


def test_an_admin_limited_to_pbxs_manages_only_tokens_within_them(central, web):
    """The tokens page of an admin limited to the branch: no PBX choice, only the tokens
    limited to the branch listed and revocable (another's is 404), a token for the office
    refused with what is wrong; an unlimited admin chooses among the PBXs, and sees every
    token with its PBXs."""
    db = open_module_db(central["url"])
    try:
        office_id, _ = create_token(db, "office CRM", "admin", [], "admin", 1, pbxs=["office"])
        every_id, _ = create_token(db, "every CRM", "admin", [], "admin", 1)
    finally:
        db.close()
    status, page = _token_page(web, "branch", {"name": "branch desk", "role": "admin"})
    assert status == 200
    status, page = _token_page(web, "branch")
    assert status == 200 and 'name="pbxs"' not in page
    assert "branch desk" in page and "office CRM" not in page and "every CRM" not in page
    status, page = _token_page(web, "branch", {"name": "theirs", "role": "admin",
                                               "pbxs": ["office"]})
    assert status == 400 and "only the PBXs whose calls you see" in page
    assert "theirs" not in page.split("new-token-form")[0]
    for token_id in (office_id, every_id):
        assert web(f"/settings/tokens/{token_id}/revoke", pbxs="branch", form={})[0] == 404
    status, page = _token_page(web, "")
    assert '<select id="token-pbxs" name="pbxs"' in page
    assert '<td class="pbxs">office</td>' in page and '<td class="pbxs">branch</td>' in page
    assert page.count('class="ui small green label"') == 3      # none was revoked
    status, page = _token_page(web, "", {"name": "bad", "role": "admin", "pbxs": ["Office!"]})
    assert status == 400 and "bad PBX" in page


def _as_olga(web, path: str, pbxs: str, form: dict | None = None) -> int:
    """The status of a request of olga, an operator of 201-203 limited to `pbxs`."""
    return web(path, pbxs=pbxs, form=form, user="olga", role="operator",
               extensions="201,202,203")[0]


def test_a_report_of_a_user_limited_to_a_pbx_mails_only_its_calls(central, web, smtp):
    """Olga, limited to the branch, creates a mailed report on the page: its send mails the
    branch's calls she may see, never the office's; limited to the office at her next visit,
    the next send mails the office's calls only. An admin limited to the branch then neither
    sees nor deletes her report; one limited to the office does."""
    branch = central["branch"]
    set_pbx_mail(branch.pbx_db.parent, MailSMTPHost="127.0.0.1", MailSMTPPort=str(smtp.port),
                 MailSMTPUseTLS="none", MailSMTPSenderAddress="pbx@example.com")
    smtp.mails.clear()
    status = _as_olga(web, "/reports", "branch", {
        "name": "Yesterday", "period": "yesterday", "frequency": "daily", "at": "08:00",
        "format": "csv", "delivery": "attach", "link_hours": "72",
        "recipients": "olga@example.com", "enabled": "on"})
    assert status == 302
    due_s = datetime.fromisoformat(central["day"]).replace(
        hour=8, tzinfo=ZoneInfo("Europe/Moscow")).timestamp() + 86_400
    settings = load(None, {"module.db": central["url"], "pbx.config_db": branch.pbx_db,
                           "reports.dir": str(central["tmp"] / "reports")})

    def mailed(pbx_limit: str) -> str:
        db = open_module_db(central["url"])
        try:
            run(db, "UPDATE report SET requested_ms = ?", (int(due_s * 1000),))
            assert json.loads(run(db, "SELECT owner_pbxs FROM report").fetchone()[0]) == [
                pbx_limit]
        finally:
            db.close()
        scheduler = ReportScheduler(settings)
        try:
            scheduler.step(due_s)
        finally:
            scheduler.close()
        [mail] = smtp.take()
        [part] = list(mail.iter_attachments())
        return part.get_content()

    for pbx in ("branch", "office"):
        assert _as_olga(web, "/reports", pbx) == 200       # her visit: the owner follows
        sent = mailed(pbx)
        mine = [c for c in _of(central["calls"], pbx) if c in sent]
        assert mine, (pbx, sent)
        others = _of(central["calls"], "office" if pbx == "branch" else "branch")
        assert not any(c in sent for c in others), (pbx, sent)
    status, page = web("/reports", pbxs="office")
    [report_id] = re.findall(r'data-owner="olga".*?/reports/(\d+)/delete', page, re.S)
    assert 'data-owner="olga"' not in web("/reports", pbxs="branch")[1]
    assert web(f"/reports/{report_id}/delete", pbxs="branch", form={})[0] == 404
    assert web(f"/reports/{report_id}/delete", pbxs="office", form={})[0] == 302


def test_an_employee_is_chosen_by_pbx_and_extension(central, web, cli):
    """`employee=branch:201` (what the select offers) is Борис Орлов's calls only — on the
    page, the API, the CLI, the export and the Analytics choices; a bare `201` stays every
    PBX's 201; a malformed PBX part is a readable 400 or one CLI line."""
    day = central["day"]
    code, every, err = _cli_calls(cli, central)
    assert code == 0, err
    of_201 = {pbx: {r["linkedid"] for r in every if r["pbx"] == pbx and "201" in r["employees"]}
              for pbx in ("office", "branch")}
    assert of_201["office"] and of_201["branch"]
    for pbx in ("office", "branch"):
        code, records, err = _cli_calls(cli, central, "--employee", f"{pbx}:201")
        assert code == 0 and {r["linkedid"] for r in records} == of_201[pbx], err
        status, body = _api_calls(web, central, employee=f"{pbx}:201")
        assert status == 200 and {c["linkedid"] for c in body["calls"]} == of_201[pbx]
        status, csv = web(f"/export?format=csv&from={day}&to={day}&employee={pbx}:201")
        assert status == 200 and all(c in csv for c in of_201[pbx])
        assert not any(c in csv for c in of_201["office" if pbx == "branch" else "branch"])
    status, page = web(f"/?from={day}&to={day}&employee=branch:201")
    assert status == 200 and '<option value="branch:201" selected>' in page
    assert {c for c in central["calls"] if f'data-linkedid="{c}"' in page} == of_201["branch"]
    status, body = _api_calls(web, central, employee="201")
    assert {c["linkedid"] for c in body["calls"]} == of_201["office"] | of_201["branch"]
    status, body = _api_calls(web, central, employee="Branch 2:201")
    assert status == 400 and "office:201" in body["error"], body
    code, _, err = cli("calls", "--db", central["url"], "--from", day, "--employee", "B!:201")
    assert code == 2 and "PBX's extension" in err and len(err.strip().splitlines()) == 1
    start_ms, end_ms = _period(day)
    db = open_module_db(central["url"], readonly=True)
    try:
        heading = dict(about("admin", {}, CallFilter(start_ms, end_ms, employees=[
            "branch:201", "office:201"]), PbxClock("Europe/Moscow"), "en", db))
    finally:
        db.close()
    assert heading["Employees"] == f"branch:201 {BORIS}, office:201 {IVAN}"
    status, page = web(f"/analytics?from={day}&to={day}", role="operator", pbxs="branch",
                       extensions="201")
    assert status == 200 and '<option value="branch:201"' in page
    assert '<option value="office:' not in page


def test_the_employees_report_has_a_row_per_pbx_and_extension(central, web, cli):
    """Analytics of two PBXs: the office's 201 (Иван Петров) and the branch's (Борис Орлов)
    are two rows naming their PBX — in the API, the CLI and the report's CSV — each with its
    own PBX's calls; a user limited to the branch gets the branch's rows only."""
    day = central["day"]
    code, every, err = _cli_calls(cli, central)
    assert code == 0, err
    answered = {pbx: sum(r["answered_by"] == "201" and r["pbx"] == pbx and
                         r["direction"] != "outgoing" for r in every)
                for pbx in ("office", "branch")}
    assert answered["office"] != answered["branch"]
    status, body = web(f"/api/v1/stats/employees?from={day}&to={day}")
    report = json.loads(body)
    assert status == 200 and report["columns"][0]["key"] == "pbx"
    rows = {(r["pbx"], r["extension"]): r for r in report["rows"]}
    assert rows["office", "201"]["name"] == IVAN and rows["branch", "201"]["name"] == BORIS
    assert {pbx: rows[pbx, "201"]["answered"] for pbx in answered} == answered
    assert f"office:201 {IVAN}" in report["chart"]["labels"]
    code, out, err = cli("stats", "--db", central["url"], "--report", "employees", "--from",
                         day, "--to", day, "--format", "csv")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("PBX,Extension,Employee")
    assert any(line.startswith(f"branch,201,{BORIS},{answered['branch']},") for line in lines)
    status, body = web(f"/api/v1/stats/employees?from={day}&to={day}", pbxs="branch")
    assert {r["pbx"] for r in json.loads(body)["rows"]} == {"branch"}


NEXT_DAY = "2024-03-06"        # the day after the central fixture's: queues and menus
QUEUED = """
    start      | answer     | end      | src       | dst  | dialstatus
    {at}       | {answer}   | {answer} | {caller}  | 2000 | ANSWER
    {at}       | {answer}   | {end}    | {caller}  | 201  | ANSWER
    """
GAVE_UP = """
    start      | end        | src      | dst  | dialstatus
    {at}       | {answer}   | {caller} | 2000 | NOANSWER
    {at}       | {answer}   | {caller} | 201  | CANCEL
    """
IN_MENU = """
    start      | answer     | end      | src       | dst  | dialstatus | dtmf_digits
    {at}       | {at}       | {answer} | {caller}  | 2020 | ANSWER     | {digits}
    """
MENU_THEN_203 = IN_MENU + """
    {answer}   | {answer}   | {end}    | {caller}  | 203  | ANSWER     | ''
    """


def _queued(pbx: Pbx, hour: int, wait_s: int, answered: bool) -> None:
    """At `hour` a caller on the DID waits `wait_s` (< 60) seconds in queue 2000, which rings
    201; then 201 answers and talks 5 minutes, or the caller hangs up."""
    pbx.call((QUEUED if answered else GAVE_UP).format(
        at=f"{hour:02d}:00:00", answer=f"{hour:02d}:00:{wait_s:02d}",
        end=f"{hour:02d}:05:{wait_s:02d}", caller=f"+7903555{hour:04d}"), day=NEXT_DAY, did=DID)


def _in_menu(pbx: Pbx, hour: int, digits: str) -> None:
    """At `hour` a caller on the DID hears menu 2020 for 10 s and presses `digits` (then 203
    answers), or hangs up there pressing nothing."""
    pbx.call((MENU_THEN_203 if digits else IN_MENU).format(
        at=f"{hour:02d}:30:00", answer=f"{hour:02d}:30:10", end=f"{hour:02d}:32:00",
        caller=f"+7905111{hour:04d}", digits=digits or "''"), day=NEXT_DAY, did=DID)


@pytest.fixture
def queues_and_menus(central, cli) -> dict:
    """The central fixture's PBXs the next day, every call on their trunk's DID: queue 2000
    (the office's 201 answers three callers, who waited 10, 15 and 25 s, and one gives up; the
    branch's 201 answers one, who waited 40 s, and two give up) and menu 2020 (the office's
    callers press 1, 1 and 2, the branch's 1 and nothing)."""
    office, branch = central["office"], central["branch"]
    for hour, (wait_s, answered) in enumerate(((10, True), (15, True), (25, True),
                                                (30, False)), start=9):
        _queued(office, hour, wait_s, answered)
    for hour, (wait_s, answered) in enumerate(((40, True), (5, False), (50, False)), start=9):
        _queued(branch, hour, wait_s, answered)
    for hour, digits in enumerate(("1", "1", "2"), start=14):
        _in_menu(office, hour, digits)
    for hour, digits in enumerate(("1", ""), start=14):
        _in_menu(branch, hour, digits)
    _named_as_configured(branch)
    for pbx, name in ((office, "office"), (branch, "branch")):
        code, _, err = cli("sync", "--cdr-db", pbx.cdr_db, "--pbx-db", pbx.pbx_db, "--db",
                           central["url"], "--pbx-id", name, "--once")
        assert code == 0, err
    return central


def _stats(web, name: str, **headers) -> dict:
    status, body = web(f"/api/v1/stats/{name}?from={NEXT_DAY}&to={NEXT_DAY}", **headers)
    assert status == 200, body
    return json.loads(body)


def _written(cli, central, name: str, fmt: str):
    """The file `extcdr stats --out` writes of a report of NEXT_DAY in `fmt`."""
    out = central["tmp"] / f"{name}.{fmt}"
    code, _, err = cli("stats", "--db", central["url"], "--report", name, "--from", NEXT_DAY,
                       "--to", NEXT_DAY, "--format", fmt, "--out", out)
    assert code == 0, err
    return out


def test_lines_menus_and_queues_have_a_row_per_pbx(queues_and_menus, web, cli):
    """Two PBXs' queue 2000, menu 2020 and trunk are two queues, menus and lines: a row each
    with its PBX's own calls (never summed into one), a PBX column first — in the API, the
    page and the report's CSV, Excel and PDF — and the chart's labels by PBX; who answered
    the branch's queue is its 201, Борис Орлов, with the branch's count only."""
    queues = _stats(web, "queues")
    assert queues["columns"][0]["key"] == "pbx"
    assert [(r["pbx"], r["queue"], r["offered"], r["answered"], r["abandoned"],
             r["answered_within"], r["answered_by"]) for r in queues["rows"]] == [
        ("branch", "2000", 3, 1, 2, 0, f"201 {BORIS} (1)"),
        ("office", "2000", 4, 3, 1, 2, f"201 {IVAN} (3)")]
    assert queues["chart"]["labels"] == ["branch:2000", "office:2000"]
    menus = _stats(web, "menus")
    assert menus["columns"][0]["key"] == "pbx"
    assert [(r["pbx"], r["menu"], r["option"], r["calls"], r["answered"], r["left_in_menu"])
            for r in menus["rows"]] == [("branch", "2020", "", 1, 0, 1),
                                        ("branch", "2020", "1", 1, 1, 0),
                                        ("office", "2020", "1", 2, 2, 0),
                                        ("office", "2020", "2", 1, 1, 0)]
    assert menus["chart"]["labels"] == ["branch:2020", "office:2020"]
    assert {s["key"]: s["values"] for s in menus["chart"]["series"]} == {
        "none": [1, 0], "1": [1, 2], "2": [0, 1]}
    lines = _stats(web, "lines")
    assert lines["columns"][0]["key"] == "pbx"
    rows = {r["pbx"]: r for r in lines["rows"]}
    assert len(lines["rows"]) == 2 and rows["office"]["line"] == rows["branch"]["line"]
    assert {pbx: (r["did"], r["incoming"], r["outgoing"]) for pbx, r in rows.items()} == {
        "office": (DID, 4 + 3, 0), "branch": (DID, 3 + 2, 0)}
    line = rows["office"]["line"]
    assert lines["chart"]["labels"] == [f"office:{line}", f"branch:{line}"]
    for name, first in (("lines", "PBX,Line,DID"), ("menus", "PBX,Menu,Option pressed"),
                        ("queues", "PBX,Queue,Offered")):
        status, page = web(f"/analytics?report={name}&from={NEXT_DAY}&to={NEXT_DAY}")
        assert status == 200 and '<th scope="col" data-key="pbx">PBX</th>' in page, name
        assert page.count('<td data-key="pbx">branch</td>') == (2 if name == "menus" else 1)
        code, out, err = cli("stats", "--db", queues_and_menus["url"], "--report", name,
                             "--from", NEXT_DAY, "--to", NEXT_DAY, "--format", "csv")
        assert code == 0 and out.startswith(first), (name, err, out)
        shown = [r["pbx"] for r in _stats(web, name)["rows"]]
        sheet = load_workbook(_written(cli, queues_and_menus, name, "xlsx")).worksheets[0]
        assert [sheet.cell(row, 1).value for row in range(1, len(shown) + 2)] == [
            "PBX", *shown], name
        pdf = PdfReader(_written(cli, queues_and_menus, name, "pdf"))
        assert "PBX" in "".join(page.extract_text() for page in pdf.pages), name
    assert f"branch,2000,3,1,2,0,0.0%,0:00:40,0:00:40,0:00:28,201 {BORIS} (1)" in out.splitlines()


def test_a_user_limited_to_a_pbx_sees_only_its_lines_menus_and_queues(queues_and_menus, web):
    """An admin limited to the branch: the Lines, Menus and Queues reports and their exports
    have the branch's rows only, as an unlimited admin sees them."""
    for name in ("lines", "menus", "queues"):
        every = _stats(web, name)["rows"]
        assert {r["pbx"] for r in every} == {"office", "branch"}, name
        mine = _stats(web, name, pbxs="branch")["rows"]
        assert mine == [r for r in every if r["pbx"] == "branch"], name
        status, csv = web(f"/analytics/export?report={name}&format=csv&from={NEXT_DAY}"
                          f"&to={NEXT_DAY}", pbxs="branch")
        assert status == 200 and "branch," in csv and "office," not in csv, (name, csv)


def test_the_only_pbxs_reports_name_no_pbx(tmp_path, capsys, pg_schema_url, cli):
    """The only PBX (no pbx.id) on PostgreSQL, and a SQLite history: the Employees, Lines,
    Menus and Queues reports have neither a PBX column nor PBX cells, their chart labels name
    no PBX, and both engines' reports are the same."""
    only = Pbx(tmp_path / "only", capsys)
    _queued(only, 9, 10, True)
    _in_menu(only, 10, "1")
    only.sync()
    code, _, err = cli("sync", "--cdr-db", only.cdr_db, "--pbx-db", only.pbx_db, "--db",
                       pg_schema_url, "--once")
    assert code == 0, err
    reports = {}
    for url in (pg_schema_url, str(only.module_db)):
        db = open_module_db(url, readonly=True)
        try:
            reports[url] = {name: build_report(name, CallFilter(*_period(NEXT_DAY)), db,
                                               PbxClock("Europe/Moscow"))
                            for name in ("employees", "lines", "menus", "queues")}
        finally:
            db.close()
        for name, report in reports[url].items():
            assert report.rows and "pbx" not in [key for key, _, _ in report.columns], name
            assert not any("pbx" in row for row in report.rows), (name, url)
        assert reports[url]["queues"].rows[0]["answered_by"] == f"201 {IVAN} (1)"
        assert reports[url]["queues"].chart["labels"] == ["2000"]
        assert reports[url]["menus"].chart["labels"] == ["2020"]
    pg, lite = reports.values()
    assert {name: (r.columns, r.rows, r.chart) for name, r in pg.items()} == {
        name: (r.columns, r.rows, r.chart) for name, r in lite.items()}


def test_each_pbxs_timezone_and_number_matching_are_its_own(tmp_path, capsys, pg_schema_url,
                                                            cli):
    """The office (Moscow) and the branch (Yekaterinburg, UTC+5) sync one after the other:
    each keeps its own timezone and number matching in the sync state; each PBX's pages (its
    pbx.id) show times in its own timezone, not in the last PBX's to sync."""
    pbxs = {"office": Pbx(tmp_path / "office", capsys),
            "branch": Pbx(tmp_path / "branch", capsys, tz="Asia/Yekaterinburg")}
    for name, pbx in pbxs.items():
        pbx.call(MISSED, did=DID)
        code, _, err = cli("sync", "--cdr-db", pbx.cdr_db, "--pbx-db", pbx.pbx_db, "--db",
                           pg_schema_url, "--pbx-id", name, "--once")
        assert code == 0, err
    db = open_module_db(pg_schema_url, readonly=True)
    try:
        state = dict(run(db, "SELECT key, value FROM sync_state").fetchall())
    finally:
        db.close()
    assert state["timezone:office"] == "Europe/Moscow"
    assert state["timezone:branch"] == "Asia/Yekaterinburg"
    assert "timezone" not in state and "number_match_digits" not in state
    assert state["number_match_digits:office"] == state["number_match_digits:branch"]
    config = tmp_path / "extcdr.toml"
    config.write_text('[web]\nproxy_token = "proxy-secret"\n')
    for name, offset in (("office", "+03:00"), ("branch", "+05:00")):
        settings = load(config, {"module.db": pg_schema_url, "pbx.id": name})
        with serving(create_app(settings)) as http:
            request = urllib.request.Request(
                f"http://127.0.0.1:{http.effective_port}{settings['web.prefix'].rstrip('/')}"
                f"/api/v1/calls?from=2024-03-05&to=2024-03-05&pbx={name}", headers={
                    "X-Extcdr-User": "anna", "X-Extcdr-Role": "admin",
                    "X-Extcdr-Proxy-Token": "proxy-secret"})
            with urllib.request.urlopen(request) as reply:
                [record] = json.loads(reply.read())["calls"]
        assert record["start"] == f"2024-03-05T10:00:00{offset}", (name, record)
        code, out, err = cli("status", "--db", pg_schema_url, "--pbx-id", name, "--format",
                             "json")
        assert code == 0 and json.loads(out)["timezone"] == pbxs[name].tz_name, err


def test_a_report_keeps_the_time_of_the_pbx_whose_page_made_it(tmp_path, capsys, pg_schema_url,
                                                                cli, smtp):
    """A daily 08:00 report made on the office's page (Moscow) of a history the branch
    (Yekaterinburg, UTC+5) writes too, sent by the branch's daemon: its next run is 08:00
    in Moscow the next day, not 08:00 in Yekaterinburg, and it mails the Moscow day."""
    pbxs = {"office": Pbx(tmp_path / "office", capsys),
            "branch": Pbx(tmp_path / "branch", capsys, tz="Asia/Yekaterinburg")}
    for name, pbx in pbxs.items():
        pbx.call(MISSED, did=DID)
        code, _, err = cli("sync", "--cdr-db", pbx.cdr_db, "--pbx-db", pbx.pbx_db, "--db",
                           pg_schema_url, "--pbx-id", name, "--once")
        assert code == 0, err
    office = load(None, {"module.db": pg_schema_url, "pbx.id": "office"})
    db = open_module_db(pg_schema_url)
    try:
        form = report_form({"name": "Missed", "period": "yesterday", "frequency": "daily",
                            "at": "08:00", "format": "csv", "delivery": "attach",
                            "link_hours": "72", "recipients": "boss@example.com"}, "en")
        moscow = MirrorContext(office, db).clock()
        assert moscow.tz_name == "Europe/Moscow"
        due_s = datetime(2024, 3, 6, 8, tzinfo=ZoneInfo("Europe/Moscow")).timestamp()
        save_report(db, Owner("boss", "admin", ()), form, link_base="http://127.0.0.1",
                    clock=moscow, now_s=due_s - 3600, pbx="office")
        assert run(db, "SELECT next_run_ms FROM report").fetchone()[0] == due_s * 1000
    finally:
        db.close()
    branch = pbxs["branch"]
    set_pbx_mail(branch.pbx_db.parent, MailSMTPHost="127.0.0.1", MailSMTPPort=str(smtp.port),
                 MailSMTPUseTLS="none", MailSMTPSenderAddress="pbx@example.com")
    smtp.mails.clear()
    scheduler = ReportScheduler(load(None, {
        "module.db": pg_schema_url, "pbx.id": "branch", "pbx.config_db": branch.pbx_db,
        "reports.dir": str(tmp_path / "reports")}))
    try:
        scheduler.step(due_s)
    finally:
        scheduler.close()
    [mail] = smtp.take()
    [part] = list(mail.iter_attachments())
    assert part.get_filename() == "Missed_2024-03-05.csv"
    db = open_module_db(pg_schema_url, readonly=True)
    try:
        assert run(db, "SELECT next_run_ms FROM report").fetchone()[0] == (due_s + 86_400) * 1000
    finally:
        db.close()
