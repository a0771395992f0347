"""Through real nginx: a lua block asks the access check (the stand-in admin shell here) about
every request of the module's location; user, role, extensions and scope reach the app only
in headers nginx sets."""
import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.conftest import ROOT, wait_for
from tests.stack import PREFIX, admin_shell
from tests.webclient import Browser

PERIOD = {"from": "2024-10-20", "to": "2024-10-28", "limit": 500}


@pytest.fixture(scope="module")
def shell(demo_mirror, demo_pbx, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nginx")
    with admin_shell(demo_mirror, demo_pbx / "monitor", run_dir) as stack:
        yield stack


def api(browser, **headers):
    status, _, body = browser.request(f"{PREFIX}api/v1/calls?" + urllib.parse.urlencode(PERIOD),
                                      headers=headers)
    return status, (json.loads(body) if body.startswith("{") else body)


def test_not_logged_in_the_page_goes_to_the_login_and_the_rest_is_401_through_nginx(shell):
    status, _ = api(Browser(shell["base"]))
    assert status == 401
    status, headers, _ = Browser(shell["base"]).request(PREFIX)
    assert status == 302 and headers["Location"].endswith("/login")
    status, _, _ = Browser(shell["base"]).request(PREFIX + "rows?period=today")
    assert status == 401


def test_login_through_nginx_then_the_api_per_role(shell):
    admin = Browser(shell["base"])
    status, headers, _ = admin.login("admin", "admin")
    assert status == 302
    status, body = api(admin)
    assert status == 200 and body["calls"]
    operator = Browser(shell["base"])
    operator.login("operator201", "operator201")
    status, mine = api(operator)
    assert status == 200 and all("201" in c["employees"] for c in mine["calls"])
    assert len(mine["calls"]) < len(body["calls"])


def test_an_access_groups_scope_reaches_the_app_through_the_lua_check(demo_mirror, demo_pbx,
                                                                       tmp_path):
    """A ModuleUsersUI access group that sees everyone's calls but 201's ('not-selected'), and
    one that sees the calls 201 placed ('outgoing-selected'): the scope the check answers is
    the one the app applies; a client's own Scope header is replaced."""
    users = [{"name": "admin", "password": "admin", "role": "admin"},
             {"name": "vera", "password": "v", "role": "operator", "extensions": ["201"],
              "scope": "except"},
             {"name": "boris", "password": "b", "role": "operator", "extensions": ["201"],
              "scope": "placed"}]
    with admin_shell(demo_mirror, demo_pbx / "monitor", tmp_path, users) as stack:
        seen = {}
        for name, password in (("admin", "admin"), ("vera", "v"), ("boris", "b")):
            browser = Browser(stack["base"])
            assert browser.login(name, password)[0] == 302
            seen[name], cursor = {}, ""
            while cursor is not None:       # every page of the period
                status, _, body = browser.request(
                    f"{PREFIX}api/v1/calls?" + urllib.parse.urlencode(
                        {**PERIOD, **({"cursor": cursor} if cursor else {})}),
                    headers={"X-Extcdr-Scope": "involved"})
                assert status == 200, body
                page = json.loads(body)
                seen[name].update((c["linkedid"], c) for c in page["calls"])
                cursor = page["next_cursor"]
    assert seen["vera"] and seen["boris"]
    assert set(seen["vera"]) == {k for k, c in seen["admin"].items() if "201" not in c["employees"]}
    assert set(seen["boris"]) < {k for k, c in seen["admin"].items() if "201" in c["employees"]}


GROUPS = {"3": {"cdrFilterMode": "selected", "fullAccess": "0", "extensions": ["201", "202"]},
          "4": {"cdrFilterMode": "outgoing-selected", "fullAccess": "0", "extensions": ["201"]},
          "5": {"cdrFilterMode": "not-selected", "fullAccess": "0", "extensions": ["201"]},
          "6": {"cdrFilterMode": "all", "fullAccess": "0", "extensions": ["201"]}}


@contextmanager
def modules_own_check(profile: str, folder, modules=None) -> Iterator[str]:
    """The address of an admin cabinet (tests/php/cabinet.php under `php -S`) that logs in as
    Core does (session on 2024.1, refresh token on 2025+) and answers the access check with
    the module's own PHP controller, a ModuleUsersUI-shaped module with GROUPS beside it;
    `modules`: Core's modules folder (the module's settings in ModuleExtendedCDR/db)."""
    from tests.stack import free_port
    from tests.test_php import tool
    (folder / "groups.json").write_text(json.dumps(GROUPS))
    port = free_port()
    cabinet = subprocess.Popen(
        [tool("php"), "-d", f"session.save_path={folder}", "-S", f"127.0.0.1:{port}",
         ROOT / "tests/php/cabinet.php"],
        env={**os.environ, "EXTCDR_CORE_PROFILE": profile, "PHP_CLI_SERVER_WORKERS": "4",
             "EXTCDR_GROUPS": str(folder / "groups.json"),
             "EXTCDR_TOKENS": str(folder / "tokens.json"),
             **({"EXTCDR_MODULES": str(modules)} if modules else {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _listening(port), 10)
        yield f"127.0.0.1:{port}"
    finally:
        cabinet.terminate()
        cabinet.wait(10)


def logged_in(base: str, user: str, role: str) -> Browser:
    """A browser logged in to the cabinet as `user` with Core's `role`."""
    browser = Browser(base)
    status, _, _ = browser.request("/login?" + urllib.parse.urlencode({"user": user,
                                                                       "role": role}))
    assert status == 302
    return browser


@pytest.mark.parametrize("profile", ["2024.1", "2026.1"])
def test_modules_users_ui_access_groups_end_to_end_through_the_modules_own_check(
        demo_mirror, demo_pbx, tmp_path, profile):
    """nginx's lua block asks the module's own PHP controller (behind an admin cabinet that
    logs in as Core does: session on 2024.1, refresh token on 2025+), which asks a
    ModuleUsersUI-shaped module enabled beside it: each access group sees what its CDR filter
    mode says, not a call more."""
    with modules_own_check(profile, tmp_path) as cabinet, \
            admin_shell(demo_mirror, demo_pbx / "monitor", tmp_path / "nginx",
                        cabinet=cabinet) as stack:
        assert api(Browser(stack["base"]))[0] == 401              # nobody logged in
        seen = {user: every_call(logged_in(stack["base"], user, role))
                for user, role in (("admin", "admins"), ("anna", "UsersUIRoleID3"),
                                   ("boris", "UsersUIRoleID4"), ("vera", "UsersUIRoleID5"),
                                   ("dina", "UsersUIRoleID6"), ("gleb", "UsersUIRoleID9"))}
    everyone = seen["admin"]
    of_201 = {k for k, c in everyone.items() if "201" in c["employees"]}
    assert set(seen["anna"]) == {k for k, c in everyone.items()
                                 if {"201", "202"} & set(c["employees"])}
    assert seen["boris"] and set(seen["boris"]) < of_201
    assert set(seen["vera"]) == set(everyone) - of_201
    assert set(seen["dina"]) == set(everyone)         # a group without a CDR filter
    assert set(seen["gleb"]) == set(everyone)         # no such group: ModuleUsersUI filters nothing


def test_on_a_pbx_of_a_central_history_only_admins_see_the_other_pbxs_calls(
        tmp_path, capsys, pg_schema_url, cli):
    """Two PBXs in one central history; the access check of the branch (its module's settings
    say `[pbx] id = "branch"`): Core's admin sees both PBXs' calls through nginx, an access
    group (201 and 202 selected) and one without a CDR filter only the branch's."""
    from tests.pbxfixture import DID, Pbx
    calls = {}
    for name in ("office", "branch"):
        pbx = Pbx(tmp_path / name, capsys)
        ids = [pbx.call("""
            start    | end      | src          | dst | dialstatus
            10:00:00 | 10:00:25 | +79161234567 | 201 | CANCEL
            """, did=DID), pbx.call("""
            start    | answer   | end      | src | dst
            15:00:00 | 15:00:05 | 15:01:05 | 202 | 203
            """)]
        calls.update({f"{name}:{linkedid}": name for linkedid in ids})
        code, _, err = cli("sync", "--cdr-db", pbx.cdr_db, "--pbx-db", pbx.pbx_db, "--db",
                           pg_schema_url, "--pbx-id", name, "--once")
        assert code == 0, err
    settings = tmp_path / "modules" / "ModuleExtendedCDR" / "db" / "extcdr.toml"
    settings.parent.mkdir(parents=True)
    settings.write_text('[module]\ndb = "postgresql://…"\n\n[pbx]\nid = "branch"\n')
    day = {"from": "2024-03-05", "to": "2024-03-05", "limit": 500}
    with modules_own_check("2026.1", tmp_path, tmp_path / "modules") as cabinet, \
            admin_shell(pg_schema_url, tmp_path, tmp_path / "nginx", cabinet=cabinet) as stack:
        seen = {user: set(every_call(logged_in(stack["base"], user, role), day))
                for user, role in (("admin", "admins"), ("anna", "UsersUIRoleID3"),
                                   ("dina", "UsersUIRoleID6"))}
    branch = {linkedid for linkedid, pbx in calls.items() if pbx == "branch"}
    assert seen == {"admin": set(calls), "anna": branch, "dina": branch}


def every_call(browser, period: dict = PERIOD) -> dict[str, dict]:
    calls, cursor = {}, ""
    while cursor is not None:
        status, _, body = browser.request(f"{PREFIX}api/v1/calls?" + urllib.parse.urlencode(
            {**period, **({"cursor": cursor} if cursor else {})}))
        assert status == 200, body
        page = json.loads(body)
        calls.update((c["linkedid"], c) for c in page["calls"])
        cursor = page["next_cursor"]
    return calls


def _listening(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_client_sent_identity_headers_are_overwritten_by_nginx(shell):
    operator = Browser(shell["base"])
    operator.login("operator201", "operator201")
    status, body = api(operator, **{"X-Extcdr-Role": "admin", "X-Extcdr-Extensions": "",
                                    "X-Extcdr-Proxy-Token": "guess"})
    assert status == 200 and all("201" in c["employees"] for c in body["calls"])


def test_the_app_itself_refuses_requests_that_skip_nginx(shell):
    direct = Browser(shell["app"])
    status, body = api(direct, **{"X-Extcdr-User": "admin", "X-Extcdr-Role": "admin"})
    assert status == 401 and "admin interface" in body["error"]


def test_login_page_through_nginx_has_the_csrf_field(shell):
    status, _, page = Browser(shell["base"]).request("/login")
    assert status == 200 and re.search(r'name="csrf_token" value="[^"]{32,}"', page)


def test_a_recording_leaves_through_nginx_with_ranges(shell, demo_pbx):
    admin = Browser(shell["base"])
    admin.login("admin", "admin")
    _, body = api(admin)
    call = next(c for c in body["calls"] if c["recordings"] and (
        demo_pbx / "monitor" / c["recordings"][0].split("/monitor/", 1)[1]).is_file())
    expected = (demo_pbx / "monitor" / call["recordings"][0].split("/monitor/", 1)[1]).read_bytes()
    status, headers, _ = admin.request(f"{PREFIX}recordings/{call['linkedid']}/1")
    assert status == 200 and headers["Content-Type"].startswith("audio/")
    req_headers = {"Range": "bytes=10-29"}
    req = urllib.request.Request(f"{shell['base']}{PREFIX}recordings/{call['linkedid']}/1",
                                 headers=req_headers)
    with admin.opener.open(req) as reply:
        assert reply.status == 206 and reply.read() == expected[10:30]
