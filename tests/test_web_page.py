"""The history page over real HTTP (waitress, stand-in shell in process): what it shows agrees
with the JSON API, bad input gets a readable 4xx, state changes need the CSRF token, saved
filters and settings belong to their user — on a module.db of each engine (conftest's
`engine`: an SQLite file, a PostgreSQL schema)."""
import html
import json
import re
import shutil
import urllib.parse
from contextlib import ExitStack

import pytest
from markupsafe import escape

from mirror.settings import load
from standin.cli import main
from standin.shell import StandinLogin
from tests.conftest import new_mirror_target
from tests.stack import serving
from tests.webclient import Browser
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}
TABS = ("all", "incoming", "missed", "outgoing", "internal", "unreturned")


@pytest.fixture(scope="module")
def site(engine, demo_pbx, tmp_path_factory, request):
    """A copy of the demo PBX and its mirror on the engine, served with the stand-in shell."""
    root = tmp_path_factory.mktemp("page")
    pbx = root / "pbx"
    shutil.copytree(demo_pbx, pbx)
    users = root / "users.json"
    users.write_text(json.dumps([
        {"name": "boss", "password": "b0ss", "role": "admin", "extensions": []},
        {"name": "chief", "password": "ch1ef", "role": "supervisor", "extensions": []},
        {"name": "olga", "password": "o1ga", "role": "operator", "extensions": ["202"]}]))
    with ExitStack() as cleanup:
        db = new_mirror_target(request, engine, root, cleanup)
        sync(pbx, db)
        app = create_app(load(None, {"module.db": db, "pbx.recordings_root": pbx / "monitor"}),
                         login=StandinLogin.from_file(users))
        server = cleanup.enter_context(serving(app, threads=8))
        yield {"base": f"http://127.0.0.1:{server.effective_port}", "pbx": pbx, "db": db}


def sync(pbx, db):
    """The CLI's sync (it finds ModuleUsersGroups' groups beside the PBX's config DB)."""
    assert main(["sync", "--cdr-db", str(pbx / "cdr.db"), "--pbx-db", str(pbx / "mikopbx.db"),
                 "--db", str(db), "--once"]) == 0


def logged_in(site, name, password) -> Browser:
    browser = Browser(site["base"])
    status, _, _ = browser.login(name, password)
    assert status == 302
    return browser


@pytest.fixture(scope="module")
def boss(site):
    return logged_in(site, "boss", "b0ss")


@pytest.fixture(scope="module")
def olga(site):
    return logged_in(site, "olga", "o1ga")


def page(browser, **params):
    status, _, body = browser.request(PREFIX + "?" + urllib.parse.urlencode(params, doseq=True))
    assert status == 200, body[:500]
    return body


def api_calls(browser, **params) -> list[dict]:
    return browser.calls(PREFIX, **params)


def shown(body) -> list[str]:
    """linkedids of the call rows of a page, in order."""
    return re.findall(r'<tr class="call [^"]*" data-linkedid="([^"]+)"', body)


def counters(body) -> dict[str, int]:
    return {tab: int(n) for tab, n in re.findall(
        r'class="item tab-(\w+)[^"]*"[^>]*>[^<]*<span[^>]*>(\d+)</span>', body)}


def csrf_of(body) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', body).group(1)


# --- what the page shows ---------------------------------------------------------------------

def test_rows_are_the_newest_fifty_of_the_period_and_tabs_count_what_the_api_finds(boss):
    body = page(boss, **PERIOD)
    every = api_calls(boss, **PERIOD)
    assert shown(body) == [c["linkedid"] for c in every[:50]]
    counts = counters(body)
    assert set(counts) == set(TABS)
    for tab in TABS:
        assert counts[tab] == len(api_calls(boss, **PERIOD, tab=tab)), tab
    assert counts["incoming"] + counts["outgoing"] + counts["internal"] == counts["all"]
    assert 0 < counts["unreturned"] < counts["missed"]


def test_show_more_continues_by_keyset_without_repeating(boss):
    every = [c["linkedid"] for c in api_calls(boss, **PERIOD)]
    body = page(boss, **PERIOD)
    cursor = re.search(r'data-cursor="([^"]+)"', body).group(1)
    status, _, more = boss.request(PREFIX + "rows?" + urllib.parse.urlencode(
        {**PERIOD, "cursor": cursor}))
    reply = json.loads(more)
    assert status == 200 and shown(reply["html"]) == every[50:100]
    # without scripts, the "show more" link opens the next page
    assert shown(page(boss, **PERIOD, cursor=cursor)) == every[50:100]


def test_filters_of_the_page_select_what_the_api_selects(boss):
    tab_and_filters = [{"tab": "missed", "employee": "201"},
                       {"status": ["answered", "transferred"], "min_talk": "60"},
                       {"tab": "incoming", "group": first_group(boss)}]
    for extra in tab_and_filters:
        api_extra = {k: ",".join(v) if isinstance(v, list) else v for k, v in extra.items()}
        expected = [c["linkedid"] for c in api_calls(boss, **PERIOD, **api_extra)][:50]
        assert expected and shown(page(boss, **PERIOD, **extra)) == expected, extra


def first_group(browser) -> str:
    select = re.search(r'<select name="group".*?</select>', page(browser, **PERIOD), re.S)
    return re.findall(r'<option value="([^"]+)"', select.group(0))[0]


def test_a_number_in_a_row_links_to_the_search_for_it(boss):
    body = page(boss, **PERIOD)
    number = re.search(r'<a class="number" href="([^"]+)" data-number="([^"]+)"', body)
    link, digits = html.unescape(number.group(1)), number.group(2)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["number"] == [digits]
    status, _, found = boss.request(link)
    assert status == 200 and shown(found)
    expected = [c["linkedid"] for c in api_calls(boss, **PERIOD, number=digits)][:50]
    assert shown(found) == expected


def test_details_show_legs_who_missed_and_recordings(boss, site):
    calls = api_calls(boss, **PERIOD)
    missed = next(c for c in calls if c["missed_by"] and c["recordings"])
    status, _, body = boss.request(f"{PREFIX}calls/{missed['linkedid']}/details")
    assert status == 200
    assert body.count('<tr class="leg') == missed["legs"]
    for extension in missed["missed_by"]:
        assert f">{extension} " in body.split('class="missed-by"')[1].split("</td>")[0]
    assert f'src="{PREFIX}recordings/{missed["linkedid"]}/1"' in body
    # a file the PBX no longer has shows as unavailable, not as an error
    written = missed["recordings"][0]
    (site["pbx"] / "monitor" / written.split("/monitor/", 1)[1]).unlink()
    status, _, body = boss.request(f"{PREFIX}calls/{missed['linkedid']}/details")
    assert status == 200 and "Recording unavailable" in body


def test_hostile_caller_names_show_as_text(boss):
    hostile = [c for c in api_calls(boss, **PERIOD)
               if "<" in (c["src_name"] or "") + (c["dst_name"] or "")]
    assert hostile, "the demo has hostile caller names"
    for call in hostile[:5]:
        body = page(boss, **PERIOD, number=f"linkedid:{call['linkedid']}")
        name = call["src_name"] if "<" in call["src_name"] else call["dst_name"]
        assert str(escape(name)) in body
        assert name not in body
        assert "<script>alert" not in body and "<img src=x" not in body


def test_the_page_speaks_russian_for_a_user_who_chose_it_and_for_the_browser(site):
    browser = logged_in(site, "chief", "ch1ef")
    body = page(browser, **PERIOD)
    assert ">Incoming<" in body
    status, _, _ = browser.request(PREFIX + "settings", {"language": "ru",
                                                         "csrf_token": csrf_of(body)})
    assert status == 302
    body = page(browser, **PERIOD)
    assert ">Входящие<" in body and ">пропущен<" in body and 'lang="ru"' in body
    status, _, _ = browser.request(PREFIX + "settings", {"language": "en",
                                                         "csrf_token": csrf_of(body)})
    status, _, body = browser.request(PREFIX + "?" + urllib.parse.urlencode(PERIOD),
                                      headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert ">Incoming<" in body, "the user's own choice wins over the browser's"


# --- roles ------------------------------------------------------------------------------------

def test_an_operator_sees_only_calls_of_their_extensions_everywhere(olga, boss):
    body = page(olga, **PERIOD)
    mine = [c["linkedid"] for c in api_calls(boss, **PERIOD, employee="202")]
    assert shown(body) == mine[:50]
    assert counters(body)["all"] == len(mine)
    theirs = next(c for c in api_calls(boss, **PERIOD) if "202" not in c["employees"])
    for path in (f"calls/{theirs['linkedid']}/details", f"recordings/{theirs['linkedid']}/1",
                 f"api/v1/calls/{theirs['linkedid']}"):
        status, _, _ = olga.request(PREFIX + path)
        assert status == 404, path
    assert shown(page(olga, **PERIOD, number=f"linkedid:{theirs['linkedid']}")) == []
    employees = re.search(r'<select name="employee".*?</select>', body, re.S).group(0)
    assert re.findall(r'<option value="(\d+)"', employees) == ["202"]


def test_without_a_session_the_page_sends_to_login_and_the_rest_answers_401(site):
    anonymous = Browser(site["base"])
    status, headers, _ = anonymous.request(PREFIX + "?period=today")
    assert status == 302 and headers["Location"].endswith("/login")
    for path in ("rows?period=today", "updates?period=today", "calls/x/details",
                 "api/v1/calls"):
        status, _, body = anonymous.request(PREFIX + path)
        assert status == 401 and "log in" in body, path
    status, _, _ = anonymous.request(PREFIX + "settings", {"language": "ru"})
    assert status == 401
    status, _, css = anonymous.request(PREFIX + "static/extcdr.css")
    assert status == 200 and "pbx-sidebar" in css, "the login page needs the styles"


# --- bad input ------------------------------------------------------------------------------

BAD = [
    ({"from": "2024-13-45"}, "bad date"),
    ({"from": "yesterday-ish"}, "bad date"),
    ({"from": "0001-01-01", "to": "2024-01-01"}, "bad date"),
    ({"from": "2024-10-28", "to": "2024-10-01"}, "the period is empty"),
    ({"from": "2023-01-01", "to": "2024-06-01"}, "the period is too long"),
    ({"period": "fortnight"}, "unknown period"),
    ({"period": "today", "from": "2024-10-01"}, "either a period or from/to"),
    ({"status": "lost"}, "unknown status"),
    ({"tab": "spam"}, "unknown tab"),
    ({"number": "ab"}, "3 letters of a name"),
    ({"number": "12"}, "at least 3 digits"),
    ({"number": "src:"}, "nothing after"),
    ({"min_talk": "soon"}, "min_talk must be a whole number"),
    ({"min_talk": "-5"}, "min_talk must be a whole number from 0 to"),
    ({"group": "no such group"}, "unknown employee group"),
    ({"cursor": "1;2"}, "bad cursor"),
    ({"limit": "10"}, "unknown parameter"),
]


@pytest.mark.parametrize("params, message", BAD, ids=[m for _, m in BAD])
def test_bad_filters_get_a_readable_400_page_and_json_for_scripts(boss, params, message):
    query = urllib.parse.urlencode(params)
    status, headers, body = boss.request(f"{PREFIX}?{query}")
    assert status == 400 and headers["Content-Type"].startswith("text/html")
    assert message in html.unescape(body) and "Traceback" not in body
    status, headers, body = boss.request(f"{PREFIX}rows?{query}")
    assert status == 400 and message in json.loads(body)["error"]


SQL = ["' OR 1=1 --", "1); DROP TABLE call; --", '" OR ""="', "%' UNION SELECT * FROM leg --"]


@pytest.mark.parametrize("name", ["period", "from", "to", "number", "employee", "group",
                                  "status", "min_talk", "tab", "cursor"])
def test_sql_metacharacters_in_any_parameter_are_harmless(boss, site, name):
    before = api_calls(boss, **PERIOD)
    for value in SQL:
        status, _, body = boss.request(PREFIX + "?" + urllib.parse.urlencode(
            {**PERIOD, name: value} if name not in ("from", "to") else {name: value}))
        assert status in (200, 400) and "Traceback" not in body, (name, value)
        if status == 200:
            assert shown(body) == [] or name == "employee", (name, value)
    assert api_calls(boss, **PERIOD) == before


# --- state changes: CSRF, saved filters, settings -------------------------------------------

def test_state_changing_requests_need_this_users_csrf_token(site, boss, olga):
    token = csrf_of(page(boss, **PERIOD))
    olga_token = csrf_of(page(olga, **PERIOD))
    assert token != olga_token
    for path, data in (("filters", {"name": "x", "query": "period=today"}),
                       ("settings", {"language": "ru"}),
                       ("settings", {"columns": "time"})):
        for forged in ({}, {"csrf_token": "forged"}, {"csrf_token": olga_token}):
            status, _, body = boss.request(PREFIX + path, {**data, **forged})
            assert status == 403 and "Reload" in body, (path, forged)
    status, _, _ = boss.request(PREFIX + "filters?name=x&query=period%3Dtoday")  # GET
    assert status == 405
    assert "Входящие" not in page(boss, **PERIOD)


def test_saved_filters_are_restored_on_reopening_and_belong_to_their_user(site):
    dina = logged_in(site, "chief", "ch1ef")
    token = csrf_of(page(dina, **PERIOD))
    saved = {"period": "this_week", "tab": "missed", "number": "916"}
    status, headers, _ = dina.request(PREFIX + "filters", {
        "name": "Missed <b>916</b>", "default": "on", "csrf_token": token,
        "query": urllib.parse.urlencode(saved)})
    assert status == 302
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query) == {
        k: [v] for k, v in saved.items()}
    dina.request(PREFIX + "filters", {"name": "October", "csrf_token": token,
                                      "query": urllib.parse.urlencode(PERIOD)})
    reopened = page(dina)                     # no parameters: the default filter
    assert 'value="916"' in reopened and "tab-missed active" in reopened
    assert "Missed &lt;b&gt;916&lt;/b&gt;" in reopened and "<b>916</b>" not in reopened
    assert re.search(r'<option value="this_week" selected>', reopened)
    october = int(re.search(r'data-name="October".*?filters/(\d+)/default', reopened,
                            re.S).group(1))
    # another user can neither use nor change it
    boss = logged_in(site, "boss", "b0ss")
    boss_token = csrf_of(page(boss, **PERIOD))
    assert "October" not in page(boss)
    for action in ("default", "delete"):
        status, _, _ = boss.request(f"{PREFIX}filters/{october}/{action}",
                                    {"csrf_token": boss_token})
        assert status == 404
    # the owner makes it the default, then deletes it
    dina.request(f"{PREFIX}filters/{october}/default", {"csrf_token": token})
    assert shown(page(dina)) == shown(page(dina, **PERIOD))
    dina.request(f"{PREFIX}filters/{october}/delete", {"csrf_token": token})
    assert "October" not in page(dina) and 'data-name="Missed' in page(dina)


def test_saving_a_filter_refuses_what_would_not_open(site, boss):
    token = csrf_of(page(boss, **PERIOD))
    for data, message in (({"name": "", "query": "period=today"}, "give the filter a name"),
                          ({"name": "x" * 61, "query": "period=today"}, "at most 60"),
                          ({"name": "bad", "query": "status=lost"}, "unknown status"),
                          ({"name": "bad", "query": "evil=1"}, "unknown parameter")):
        status, _, body = boss.request(PREFIX + "filters", {**data, "csrf_token": token})
        assert status == 400 and message in html.unescape(body), data


def test_chosen_columns_are_remembered_per_user(site):
    user = logged_in(site, "chief", "ch1ef")
    token = csrf_of(page(user, **PERIOD))
    status, headers, _ = user.request(PREFIX + "settings", [
        ("columns", "time"), ("columns", "src"), ("columns", "status"), ("columns", "answered"),
        ("csrf_token", token), ("back", f"{PREFIX}?from=2024-10-20&to=2024-10-28")])
    assert status == 302 and headers["Location"].endswith("?from=2024-10-20&to=2024-10-28")
    body = page(user, **PERIOD)
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", body).group(1)
    assert re.findall(r'<th class="(\w+)"', header) == ["time", "src", "status", "answered"]
    assert re.findall(r'<th class="(\w+)"', re.search(r"<thead><tr>(.*?)</tr></thead>", page(
        logged_in(site, "boss", "b0ss"), **PERIOD)).group(1))[:2] == ["direction", "time"]
    status, _, body = user.request(PREFIX + "settings", [
        ("columns", "time"), ("columns", "password"), ("csrf_token", token)])
    assert status == 400 and "unknown column" in html.unescape(body)
    status, headers, _ = user.request(PREFIX + "settings", {
        "language": "en", "csrf_token": token, "back": "https://evil.example/"})
    assert status == 302 and headers["Location"].endswith(PREFIX)


