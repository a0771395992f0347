"""The API tokens page in real Chromium through real nginx: an admin creates an operator's token
from the settings page, sees it once and copies it (and a supervisor's token for a group); the
token opens the API through the PBX's nginx (which does not ask the admin cabinet about it) but
no page; its last use shows; revoked, it opens nothing. In Russian for a Russian admin;
operators are refused the page."""
from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request

import pytest

from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, chromium_binary, expect
from tests.mirror import mirrored_demo
from tests.stack import PREFIX, admin_shell

PERIOD = {"from": "2024-10-20", "to": "2024-10-27"}
USERS = list(DEMO_USERS) + [{"name": "admin-ru", "password": "admin-ru", "role": "admin",
                             "extensions": [], "language": "ru"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """nginx, the admin shell and the app over a mirror of this module's own (tokens are
    written into it)."""
    chromium_binary()
    pbx = tmp_path_factory.mktemp("tokens-browser-pbx")
    db = mirrored_demo(pbx, 300, seed=47)
    with admin_shell(db, pbx / "monitor", tmp_path_factory.mktemp("tokens-nginx"),
                     users=USERS) as running:
        yield {**running, "db": db}


def with_token(stack, path: str, token: str, params=None) -> tuple[int, str]:
    """A script's request through nginx: no cookie, only the token."""
    url = f"{stack['base']}{PREFIX}{path}" + ("?" + urllib.parse.urlencode(params)
                                              if params else "")
    no_redirect = type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                       {"redirect_request": lambda *a, **k: None})
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.build_opener(no_redirect).open(request) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_an_admin_creates_copies_and_revokes_a_token(open_as, stack):
    tab = open_as("admin")
    page = tab.page
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
    assert page.goto(tab.url("settings")).status == 200
    page.click("a.api-tokens")
    expect(page.locator("h1")).to_contain_text("API tokens")
    page.fill("#token-name", "Our CRM")
    page.select_option("#token-role", "operator")
    page.fill("#token-extensions", "201")
    page.fill("#token-expiry", "30")
    page.click("button.create-token")
    expect(page.locator(".new-token")).to_be_visible()
    token = page.input_value(".token-value")
    assert token.startswith("extcdr_")
    page.click(".copy-token")
    expect(page.locator(".copy-token i")).to_have_class("check icon")
    assert page.evaluate("navigator.clipboard.readText()") == token
    page.screenshot(path=str(ARTIFACTS / "tokens-created.png"), full_page=True)

    for path in ("api/v1/calls", "api/v1/worklist/unreturned"):
        status, body = with_token(stack, path, token, PERIOD)
        assert status == 200, body
        calls = json.loads(body)["calls"]
        assert all("201" in c["employees"] for c in calls)
        assert calls or path != "api/v1/calls"
    for path in ("", "settings/tokens", "analytics"):
        status, _ = with_token(stack, path, token)
        assert status in (302, 401), path                  # nginx: no session, no page

    page.goto(tab.url("settings/tokens"))
    assert token not in page.content()                        # shown that once only
    row = page.locator("tr.token-row", has_text="Our CRM")
    expect(row.locator(".extensions")).to_have_text("201")
    expect(row.locator(".last-used")).not_to_have_text("never")
    expect(row.locator(".expires")).not_to_have_text("never")
    row.locator("form.revoke-token button").click()
    row = page.locator("tr.token-row", has_text="Our CRM")
    expect(row.locator(".revoked")).to_be_visible()
    expect(row.locator("form.revoke-token")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "tokens-revoked.png"), full_page=True)
    status, body = with_token(stack, "api/v1/worklist/unreturned", token, PERIOD)
    assert status == 401 and "revoked" in json.loads(body)["error"]


def test_an_admin_gives_a_supervisors_token_a_group(open_as, stack):
    """A supervisor's token is for groups chosen in the form (or extensions): it sees the
    calls of the group's members only, and the list says which groups."""
    tab = open_as("admin")
    page = tab.page
    assert page.goto(tab.url("settings/tokens")).status == 200
    page.fill("#token-name", "Sales desk")
    page.select_option("#token-role", "supervisor")
    groups = page.locator(".field:has(#token-groups) .ui.dropdown")
    groups.click()
    groups.locator(".item[data-value='Sales']").click()
    page.click("button.create-token")
    token = page.input_value(".token-value")
    row = page.locator("tr.token-row", has_text="Sales desk")
    expect(row.locator(".groups")).to_have_text("Sales")
    expect(row.locator(".extensions")).to_have_text("")
    page.screenshot(path=str(ARTIFACTS / "tokens-supervisor.png"), full_page=True)
    with sqlite3.connect(stack["db"]) as db:
        sales = {e for (e,) in db.execute("SELECT extension FROM group_member WHERE "
                                          "group_name = 'Sales'")}
    status, body = with_token(stack, "api/v1/calls", token, {**PERIOD, "limit": 500})
    calls = json.loads(body)["calls"]
    assert status == 200 and calls and all(sales & set(c["employees"]) for c in calls)
    page.select_option("#token-role", "supervisor")
    page.fill("#token-name", "Desk of nobody")
    page.click("button.create-token")
    expect(page.locator(".bad-setting .reason")).to_contain_text(
        "a supervisor's token needs the groups or extensions")


def test_a_bad_token_form_shows_what_is_wrong_in_russian(open_as):
    tab = open_as("admin-ru")
    page = tab.page
    assert page.goto(tab.url("settings/tokens")).status == 200
    expect(page.locator("h1")).to_contain_text("API-токены")
    page.fill("#token-name", "Скрипт")
    page.select_option("#token-role", "operator")
    page.click("button.create-token")
    expect(page.locator(".bad-setting .reason")).to_have_text(
        "токену оператора нужны номера, звонки которых он может видеть")
    expect(page.locator("#token-name")).to_have_value("Скрипт")
    expect(page.locator(".new-token")).to_have_count(0)


def test_operators_are_refused_the_tokens_page(open_as):
    tab = open_as("operator201")
    reply = tab.page.goto(tab.url("settings/tokens"))
    assert reply.status == 403


def test_another_bearer_goes_to_the_admin_cabinets_check_not_the_token_check(stack):
    """The cabinet's own Bearer sign-in (MikoPBX 2025+) is not one of the module's tokens:
    nginx asks the cabinet (which here knows no such sign-in) instead of passing it on."""
    for bearer in ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln", "extcdr"):
        status, body = with_token(stack, "api/v1/calls", bearer, PERIOD)
        assert status == 401 and "API token" not in body, bearer
    status, body = with_token(stack, "api/v1/calls", "extcdr_" + "A" * 43, PERIOD)
    assert status == 401 and "unknown API token" in json.loads(body)["error"]
