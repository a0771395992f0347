"""The admin-shell stand-in over real HTTP: CSRF-protected login, session, roles, the auth
endpoint nginx asks, and no trust in identity headers without the proxy."""
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from mirror.settings import load
from standin.shell import StandinLogin, UsersFileError, load_users
from tests.stack import serving
from tests.webclient import Browser
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
PERIOD = {"from": "2024-10-20", "to": "2024-10-28", "limit": 500}


@pytest.fixture(scope="module")
def base(demo_mirror, tmp_path_factory):
    users = tmp_path_factory.mktemp("users") / "users.json"
    users.write_text(json.dumps([
        {"name": "boss", "password": "b0ss", "role": "admin", "extensions": []},
        {"name": "olga", "password": "o1ga", "role": "operator", "extensions": ["202"]}]))
    app = create_app(load(None, {"module.db": demo_mirror}), login=StandinLogin.from_file(users))
    with serving(app, threads=4) as server:
        yield f"http://127.0.0.1:{server.effective_port}"


def test_login_form_carries_a_csrf_token_and_a_post_without_it_is_refused(base):
    browser = Browser(base)
    assert len(browser.csrf()) >= 32
    status, _, page = browser.request("/login", {"username": "boss", "password": "b0ss"})
    assert status == 403 and "Reload" in page
    status, _, _ = browser.request("/login", {"username": "boss", "password": "b0ss",
                                              "csrf_token": "forged"})
    assert status == 403


def test_wrong_password_is_refused_readably(base):
    status, _, page = Browser(base).login("boss", "nope")
    assert status == 401 and "Wrong user name or password" in page


def test_login_gives_a_session_and_the_api_answers_per_role(base):
    admin = Browser(base)
    status, headers, _ = admin.login("boss", "b0ss")
    assert status == 302 and headers["Location"].endswith(f"{PREFIX}/")
    status, _, body = admin.request(f"{PREFIX}/api/v1/calls?" + urllib.parse.urlencode(PERIOD))
    everyone = json.loads(body)["calls"]
    assert status == 200 and everyone
    olga = Browser(base)
    olga.login("olga", "o1ga")
    _, _, body = olga.request(f"{PREFIX}/api/v1/calls?" + urllib.parse.urlencode(PERIOD))
    mine = json.loads(body)["calls"]
    assert mine and len(mine) < len(everyone) and all("202" in c["employees"] for c in mine)


def test_unauthenticated_and_forged_headers_get_401(base):
    anonymous = Browser(base)
    forged = {"X-Extcdr-User": "boss", "X-Extcdr-Role": "admin", "X-Extcdr-Proxy-Token": "x"}
    status, _, body = anonymous.request(f"{PREFIX}/api/v1/calls", headers=forged)
    assert status == 401 and "log in" in body


def test_auth_endpoint_for_nginx(base):
    anonymous = Browser(base)
    assert anonymous.request("/auth")[0] == 401
    olga = Browser(base)
    olga.login("olga", "o1ga")
    status, headers, _ = olga.request("/auth")
    assert status == 200
    assert (headers["X-Extcdr-User"], headers["X-Extcdr-Role"],
            headers["X-Extcdr-Extensions"]) == ("olga", "operator", "202")


def test_logout_needs_the_csrf_token(base):
    olga = Browser(base)
    olga.login("olga", "o1ga")
    assert olga.request("/logout", {})[0] == 403
    assert olga.request("/auth")[0] == 200
    _, _, page = olga.request("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert olga.request("/logout", {"csrf_token": token})[0] == 302
    assert olga.request("/auth")[0] == 401


@pytest.mark.parametrize("content, words", [
    ("not json", "Expecting value"),
    ('[{"name": "x", "password": "y"}]', "needs name, password and role"),
    ('[{"name": "x", "password": "y", "role": "root"}]', "use one of admin"),
])
def test_bad_users_file(tmp_path, content, words):
    path = tmp_path / "users.json"
    path.write_text(content)
    with pytest.raises(UsersFileError, match=words):
        load_users(path)


def test_a_session_cookie_kept_from_before_a_logout_is_worth_nothing(base):
    """Logging out ends the session on the server: a copy of the cookie taken while logged in
    (a shared computer, a stolen cookie) no longer opens the pages."""
    browser = Browser(base)
    assert browser.login("boss", "b0ss")[0] == 302
    kept = [(cookie.name, cookie.value) for cookie in browser.jar]
    assert browser.request(PREFIX + "/api/v1/calls?" + urllib.parse.urlencode(PERIOD))[0] == 200
    _, _, page = browser.request("/logout")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert browser.request("/logout", {"csrf_token": token})[0] == 302
    replay = Browser(base)
    cookie_header = "; ".join(f"{name}={value}" for name, value in kept)
    status, _, _ = replay.request(PREFIX + "/api/v1/calls?" + urllib.parse.urlencode(PERIOD),
                                  headers={"Cookie": cookie_header})
    assert status in (302, 401)
    assert browser.login("boss", "b0ss")[0] == 302          # logging in again works
    assert browser.request(PREFIX + "/api/v1/calls?" + urllib.parse.urlencode(PERIOD))[0] == 200
