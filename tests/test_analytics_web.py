"""The Analytics page and `api/v1/stats/<report>` over real HTTP (waitress) on the demo mirror:
each report is `mirror.analytics` of the same filter, titles in the user's language, the role
applied (an operator's and a group-limited supervisor's figures count only their calls), bad
input a readable 4xx, no answer without the admin shell, and the report as a file."""
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager

import pytest
from openpyxl import load_workbook

from i18n import PERIOD_LABELS, RUSSIAN
from mirror.analytics import REPORT_TITLES, REPORTS, Options, build_report
from mirror.database import open_module_db
from mirror.queries import Visibility, group_names
from mirror.settings import load
from mirror.userdata import set_supervisor_groups
from pbx.mirror_context import MirrorContext
from tests.conftest import ROOT
from tests.mirror import mirrored_demo
from tests.stack import serving
from web import create_app
from web.analytics_views import GRAIN_LABELS

TOKEN = "proxy-secret"
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}


@contextmanager
def app_for(db, config_dir):
    """The module's app over `db`, served (tests.stack.serving): (server, settings)."""
    config = config_dir / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    settings = load(config, {"module.db": db})
    with serving(create_app(settings), threads=4) as http:
        yield http, settings


@pytest.fixture(scope="module")
def server(demo_mirror, tmp_path_factory):
    with app_for(demo_mirror, tmp_path_factory.mktemp("analytics-web")) as (http, settings):
        yield {"base": f"http://127.0.0.1:{http.effective_port}{PREFIX}", "settings": settings,
               "db": demo_mirror}


def fetch(base, path, params=None, *, user="anna", role="admin", extensions="", language="",
          token=TOKEN):
    """(status, headers, body bytes) of a GET as the admin shell's nginx passes it."""
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    headers = {"X-Extcdr-User": user, "X-Extcdr-Role": role, "X-Extcdr-Extensions": extensions,
               "X-Extcdr-Language": language}
    if token is not None:
        headers["X-Extcdr-Proxy-Token"] = token
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def stats(base, report, params=None, **who) -> tuple[int, dict]:
    status, headers, body = fetch(base, f"/api/v1/stats/{report}", params, **who)
    assert headers["Content-Type"] == "application/json", body[:300]
    return status, json.loads(body)


def expected(server, name, params, visible_to=None, options=Options()) -> dict:
    """The report computed directly from the mirror, as JSON travels."""
    with open_module_db(server["db"], readonly=True) as db:
        context = MirrorContext(server["settings"], db)
        clock = context.clock()
        flt = context.call_filter(params, visible_to=visible_to, clock=clock)
        return json.loads(json.dumps(build_report(name, flt, db, clock, options).as_json()))


def calls_api(base, params, **who) -> list[dict]:
    """Every call of the filter the calls API gives this user (all keyset pages)."""
    calls, cursor = [], None
    while True:
        status, _, body = fetch(base, "/api/v1/calls",
                                {**params, "limit": 500, **({"cursor": cursor} if cursor else {})},
                                **who)
        assert status == 200, body
        page = json.loads(body)
        calls += page["calls"]
        cursor = page["next_cursor"]
        if cursor is None:
            return calls


@pytest.mark.parametrize("name", REPORTS)
def test_each_report_is_the_analytics_of_the_same_filter(server, name):
    status, body = stats(server["base"], name, PERIOD)
    assert status == 200
    assert body.pop("period") == {"from": "2024-10-20T00:00:00+02:00",
                                  "to": "2024-10-29T00:00:00+01:00"}
    assert body == expected(server, name, PERIOD)
    assert body["rows"] and body["report"] == name


def test_options_and_other_filters_are_the_reports_too(server):
    base = server["base"]
    params = {**PERIOD, "direction": "incoming", "employee": ["201", "202"]}
    status, body = stats(base, "employees", params)
    assert status == 200 and body.pop("period")
    assert body == expected(server, "employees", {**PERIOD, "direction": "incoming",
                                                  "employee": "201,202"})
    status, body = stats(base, "traffic", {**PERIOD, "grain": "week"})
    assert status == 200 and body.pop("period")
    assert body == expected(server, "traffic", PERIOD, options=Options(grain="week"))
    assert [r["period"] for r in body["rows"]] == ["2024-10-14", "2024-10-21", "2024-10-28"]
    status, body = stats(base, "queues", {**PERIOD, "service_level": "45"})
    assert status == 200 and body.pop("period")
    assert body == expected(server, "queues", PERIOD, options=Options(service_level_s=45))
    assert "Answered within 45 s" in [c["title"] for c in body["columns"]]


def test_an_operator_counts_only_the_calls_of_their_extension(server):
    base, operator = server["base"], {"role": "operator", "extensions": "201"}
    mine = calls_api(base, PERIOD, **operator)
    assert mine and all("201" in c["employees"] for c in mine)
    status, traffic = stats(base, "traffic", PERIOD, **operator)
    assert status == 200 and traffic["source"] == "calls"
    assert traffic["totals"]["calls"] == len(mine)
    assert traffic["totals"]["missed"] == sum(c["status"] == "missed" for c in mine)
    _, everyone = stats(base, "traffic", PERIOD)
    assert traffic["totals"]["calls"] < everyone["totals"]["calls"]
    status, employees = stats(base, "employees", PERIOD, **operator)
    assert status == 200 and [r["extension"] for r in employees["rows"]] == ["201"]
    for name in REPORTS:
        status, body = stats(base, name, PERIOD, **operator)
        assert status == 200 and body.pop("period")
        assert body == expected(server, name, PERIOD, Visibility.of("operator", ("201",)))
    status, nothing = stats(base, "traffic", PERIOD, role="operator", extensions="")
    assert status == 200 and nothing["totals"]["calls"] == 0


def test_a_supervisor_limited_to_groups_counts_only_their_members_calls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analytics-groups")
    db = mirrored_demo(folder, 300, seed=29)
    with app_for(db, folder) as (http, _):
        base = f"http://127.0.0.1:{http.effective_port}{PREFIX}"
        with open_module_db(db) as conn:
            group = group_names(conn)[0]
            set_supervisor_groups(conn, "sveta", [group])
        period = {"from": "2024-10-20", "to": "2024-10-27"}
        hers = calls_api(base, period, user="sveta", role="supervisor")
        everyone = calls_api(base, period, user="boris", role="supervisor")
        assert 0 < len(hers) < len(everyone)
        status, traffic = stats(base, "traffic", period, user="sveta", role="supervisor")
        assert status == 200 and traffic["totals"]["calls"] == len(hers)
        _, theirs = stats(base, "traffic", period, user="boris", role="supervisor")
        assert theirs["totals"]["calls"] == len(everyone)


def test_every_word_of_the_analytics_and_mailed_reports_pages_has_its_russian():
    """The labels the views hand the templates, and the words the templates translate."""
    words = [*PERIOD_LABELS.values(), *GRAIN_LABELS.values(), *REPORT_TITLES.values()]
    templates = ROOT / "web" / "templates"
    for page in [templates / "analytics" / "page.html", *(templates / "reports").glob("*.html")]:
        words += ["".join(quoted) for quoted in re.findall(r"""_\((?:"([^"]+)"|'([^']+)')\)""",
                                                            page.read_text())]
    assert len(words) > 100 and [word for word in words if word not in RUSSIAN] == []


def test_titles_are_russian_for_russian_users_and_keys_stay_english(server):
    base = server["base"]
    for who in ({"language": "ru"}, {"params": {"lang": "ru"}}):
        status, body = stats(base, "callbacks", {**PERIOD, **who.get("params", {})},
                             language=who.get("language", ""))
        assert status == 200
        assert body["title"] == "Пропущенные и перезвоны"
        assert [c["key"] for c in body["columns"]] == ["band", "calls", "share"]
        assert [c["title"] for c in body["columns"]] == ["Перезвонили", "Пропущенные", "Доля"]
        assert body["rows"][0]["band"] == "В течение 5 мин" == body["chart"]["labels"][0]
    status, traffic = stats(base, "traffic", {**PERIOD, "lang": "ru"})
    assert traffic["heatmap"]["days"][0] == "Пн"
    assert [s["title"] for s in traffic["chart"]["series"]] == ["Звонки", "Пропущенные",
                                                                "Прошлый период"]
    status, queues = stats(base, "queues", {**PERIOD, "lang": "ru", "service_level": "30"})
    assert "Отвечено за 30 с" in [c["title"] for c in queues["columns"]]
    status, english = stats(base, "traffic", {**PERIOD, "lang": "en"}, language="ru")
    assert english["title"] == "Traffic by hour and day"


@pytest.mark.parametrize("params, words", [
    ({"period": "next_year", "from": "", "to": ""}, "unknown period"),
    ({"from": "2024-02-30"}, "bad date"),
    ({"from": "2024-10-20", "to": "2024-10-10"}, "the period is empty"),
    ({"from": "2020-01-01", "to": "2024-10-10"}, "the period is too long"),
    ({"grain": "hour"}, "unknown grain"),
    ({"service_level": "ten"}, "service level must be"),
    ({"service_level": "99999"}, "service level must be"),
    ({"source": "guess"}, "unknown source"),
    ({"direction": "sideways"}, "unknown direction"),
    ({"lang": "fr"}, "unknown language"),
    ({"sort": "calls"}, "unknown parameter"),
])
def test_bad_input_is_a_readable_400(server, params, words):
    status, body = stats(server["base"], "traffic", {**PERIOD, **params})
    assert status == 400 and words in body["error"], body
    assert "Traceback" not in body["error"]


def test_errors_speak_russian_to_russian_users(server):
    status, body = stats(server["base"], "queues", {**PERIOD, "service_level": "ten"},
                         language="ru")
    assert status == 400 and body["error"] == "уровень сервиса — от 0 до 3600 секунд"
    status, body = stats(server["base"], "queues", {"period": "next_year"}, language="ru")
    assert status == 400 and body["error"].startswith("неизвестное значение 'next_year'")


def test_an_unknown_report_is_404(server):
    status, body = stats(server["base"], "revenue", PERIOD)
    assert status == 404 and "unknown report 'revenue'" in body["error"]
    status, body = stats(server["base"], "revenue", PERIOD, language="ru")
    assert status == 404 and "неизвестное значение 'revenue'" in body["error"]


def test_requests_that_bypassed_the_admin_shell_are_refused(server):
    for path in ("/api/v1/stats/traffic", "/analytics", "/analytics/export"):
        for token in (None, "", "guess"):
            status, _, body = fetch(server["base"], path, PERIOD, token=token)
            assert status == 401 and b"admin" in body, path
        status, _, _ = fetch(server["base"], path, PERIOD, role="root")
        assert status == 401


def test_the_page_shows_the_reports_table_and_a_bad_filter_says_why(server):
    base = server["base"]
    status, _, page = fetch(base, "/analytics", {**PERIOD, "report": "employees"})
    html = page.decode()
    assert status == 200 and 'id="report-chart"' in html
    assert 'class="ui celled compact table report"' in html
    _, body = stats(base, "employees", PERIOD)
    assert f'<td data-key="answered" class="number">{body["rows"][0]["answered"]}</td>' in html
    status, _, page = fetch(base, "/analytics", {**PERIOD, "report": "traffic"})
    assert status == 200 and page.decode().count('<th scope="row">') == 7
    status, _, page = fetch(base, "/analytics", {"period": "next_year", "report": "traffic"},
                            language="ru")
    html = page.decode()
    assert status == 400 and "Неверный отбор" in html and "неизвестное значение" in html
    assert "Traceback" not in html
    status, _, page = fetch(base, "/analytics", {"report": "<script>"})
    assert status == 400 and "<script>" not in page.decode()


def test_the_export_is_a_file_of_the_report_of_the_users_calls(server):
    base = server["base"]

    def first_column(**who) -> list:
        """The report's first sheet's first column (the extensions, then the totals)."""
        status, headers, body = fetch(base, "/analytics/export",
                                      {**PERIOD, "report": "employees", "format": "xlsx"}, **who)
        assert status == 200, body[:300]
        named = headers["Content-Disposition"]
        assert named.startswith('attachment; filename="analytics-employees') and ".xlsx" in named
        sheet = load_workbook(io.BytesIO(body), read_only=True).worksheets[0]
        return [row[0] for row in sheet.iter_rows(values_only=True)]

    _, report = stats(base, "employees", PERIOD)
    everyone = first_column()
    extensions = [r["extension"] for r in report["rows"]]
    assert everyone[1:len(extensions) + 2] == extensions + ["Total"]
    mine = first_column(role="operator", extensions="201")
    assert mine[1:3] == ["201", "Total"]
    for fmt, start in (("csv", "\ufeffPeriod,"), ("pdf", "%PDF")):
        status, headers, body = fetch(base, "/analytics/export",
                                      {**PERIOD, "report": "traffic", "format": fmt})
        assert status == 200 and body.decode("latin-1" if fmt == "pdf" else "utf-8").startswith(
            start), fmt
    status, _, body = fetch(base, "/analytics/export", {**PERIOD, "report": "traffic",
                                                        "format": "docx"})
    assert status == 400 and b"unknown format" in body and b"Traceback" not in body
