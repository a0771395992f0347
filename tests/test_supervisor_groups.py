"""A supervisor an admin limited to some employee groups (the settings page) sees only the
calls of those groups' employees — in the API, the page's counters and details, exports,
comments and their mailed reports — and every call again once the limit is lifted."""
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from openpyxl import load_workbook

from mirror.database import open_module_db
from mirror.report_rows import Owner, store_report
from mirror.settings import load
from mirror.userdata import save_filter
from tests.mirror import mirrored_demo
from tests.stack import serving
from web import create_app

TOKEN = "proxy-secret"
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
PERIOD = {"from": "2024-10-20", "to": "2024-10-27"}


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    out = tmp_path_factory.mktemp("groups-pbx")
    return out, mirrored_demo(out, 300, seed=29)


@pytest.fixture(scope="module")
def server(pbx, tmp_path_factory):
    _, db = pbx
    config = tmp_path_factory.mktemp("web") / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    app = create_app(load(config, {"module.db": db}))
    with serving(app, threads=4) as http:
        yield f"http://127.0.0.1:{http.effective_port}{PREFIX}"


def request(base, path, *, user, role, data=None, params=None):
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    headers = {"X-Extcdr-User": user, "X-Extcdr-Role": role, "X-Extcdr-Proxy-Token": TOKEN}
    body = None
    if data is not None:
        key = hashlib.sha256(f"extcdr:{TOKEN}".encode()).digest()
        token = hmac.new(key, f"csrf:{user}".encode(), hashlib.sha256).hexdigest()
        body = urllib.parse.urlencode({**data, "csrf_token": token}, doseq=True).encode()
    no_redirect = type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                       {"redirect_request": lambda *a, **k: None})
    opener = urllib.request.build_opener(no_redirect)
    try:
        with opener.open(urllib.request.Request(url, data=body, headers=headers),
                         timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def calls_of(base, user, role="supervisor", **params):
    status, body = request(base, "/api/v1/calls", user=user, role=role,
                           params={**PERIOD, "limit": 500, **params})
    assert status == 200, body
    return json.loads(body)["calls"]


def members(db, group):
    with open_module_db(db, readonly=True) as conn:
        return {ext for (ext,) in conn.execute_sql(
            "SELECT extension FROM group_member WHERE group_name = ?", (group,))}


def limit(base, user, groups):
    return request(base, "/settings/supervisors", user="anna", role="admin",
                   data={"user": user, "groups": groups})


def test_a_limited_supervisor_sees_only_their_groups_calls_everywhere(server, pbx):
    _, db = pbx
    everything = calls_of(server, "sveta")
    status, _ = limit(server, "sveta", ["Sales"])
    assert status == 302
    sales = members(db, "Sales")
    mine = calls_of(server, "sveta")
    assert mine == [c for c in everything if sales & set(c["employees"])]
    assert 0 < len(mine) < len(everything)
    assert calls_of(server, "boris") == everything            # another supervisor: unlimited

    outside = next(c for c in everything if not sales & set(c["employees"]))
    for path in (f"/api/v1/calls/{outside['linkedid']}",
                 f"/calls/{outside['linkedid']}/details",
                 f"/api/v1/calls/{outside['linkedid']}/comments"):
        status, _ = request(server, path, user="sveta", role="supervisor")
        assert status == 404, path

    status, page = request(server, "/", user="sveta", role="supervisor", params=PERIOD)
    assert status == 200
    count = re.search(r'tab-all[^>]*>[^<]*<span class="[^"]*count">(\d+)</span>', page.decode())
    assert int(count.group(1)) == len(mine)

    status, xlsx = request(server, "/export", user="sveta", role="supervisor",
                           params={**PERIOD, "format": "xlsx"})
    assert status == 200
    path = pbx[0] / "sveta.xlsx"
    path.write_bytes(xlsx)
    sheet = load_workbook(path, read_only=True).worksheets[1]
    ids = [row[-1] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert sorted(ids) == sorted(c["linkedid"] for c in mine)

    status, _ = limit(server, "sveta", [])                   # lifted: every call again
    assert status == 302 and calls_of(server, "sveta") == everything


def test_their_mailed_reports_follow_the_limit(server, pbx):
    _, db = pbx
    writable = open_module_db(db)
    try:
        filter_id = save_filter(writable, "nina", "week", {"period": "this_week"}, default=False)
        store_report(writable, Owner("nina", "supervisor", ()), {
            "period": "yesterday", "frequency": "daily", "at_time": "08:00", "on_day": None,
            "on_date": None, "format": "csv", "delivery": "attach", "link_hours": 24,
            "recipients": json.dumps(["nina@example.org"]), "subject": "s", "body": "b",
            "language": "en", "link_base": "http://127.0.0.1", "enabled": 1,
            "owner_role": "supervisor", "owner_extensions": "[]", "owner_scope": "involved",
            "filter_id": filter_id, "name": "daily"},
            filter_id, "daily")
    finally:
        writable.close()
    limit(server, "nina", ["Support"])
    request(server, "/", user="nina", role="supervisor", params=PERIOD)   # a visit
    with open_module_db(db, readonly=True) as conn:
        role, extensions, scope = conn.execute_sql(
            "SELECT owner_role, owner_extensions, owner_scope FROM report WHERE owner = 'nina'"
        ).fetchone()
    owner = Owner("nina", role, tuple(json.loads(extensions)), scope)
    assert set(owner.visible_to.extensions) == members(db, "Support")
    limit(server, "nina", [])


def test_only_admins_limit_and_only_to_known_groups(server):
    status, body = request(server, "/settings", user="olga", role="operator")
    assert status == 403
    status, body = request(server, "/settings/supervisors", user="boris", role="supervisor",
                           data={"user": "boris", "groups": []})
    assert status == 403
    status, body = limit(server, "sveta", ["No such group"])
    assert status == 400 and "unknown employee group" in body.decode()
    status, body = limit(server, "", ["Sales"])
    assert status == 400 and "login" in body.decode()
    status, body = request(server, "/settings", user="anna", role="admin")
    assert status == 200 and "Бухгалтерия" in body.decode()
