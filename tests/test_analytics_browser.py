"""The Analytics page in real Chromium through real nginx: an admin walks the six reports by their
tabs in English and in Russian; each chart is drawn, each table and heat map shows the numbers
of `api/v1/stats`; the trend's grain and the service level change the report; printing hides
the controls; an operator sees only their own row. Screenshots into test-artifacts/."""
from __future__ import annotations

import pytest

from mirror.analytics import REPORTS
from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, UserPage, chromium_binary, expect
from tests.stack import admin_shell

PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}     # the demo PBX's last days
USERS = list(DEMO_USERS) + [
    {"name": "admin-ru", "password": "admin-ru", "role": "admin", "extensions": [],
     "language": "ru"},
    {"name": "olga", "password": "olga", "role": "operator", "extensions": ["201"],
     "language": "en"}]
HEADINGS = {"en": "Analytics", "ru": "Аналитика"}
TOTAL = {"en": "Total", "ru": "Итого"}
SUMMARY_KINDS = {"median_callback_s": "seconds", "callback_rate": "percent"}


@pytest.fixture(scope="module")
def stack(demo_pbx, demo_mirror, tmp_path_factory):
    """nginx, the admin shell and the app over the shared demo mirror (only read here)."""
    chromium_binary()
    with admin_shell(demo_mirror, demo_pbx / "monitor", tmp_path_factory.mktemp("analytics-nginx"),
                     users=USERS) as running:
        yield running


# ---------------------------------------------------------------------------------- helpers


def open_analytics(tab: UserPage, **params) -> UserPage:
    reply = tab.page.goto(tab.url("analytics", **params))
    assert reply.status == 200, reply.text()
    return tab


def stats(tab: UserPage, report: str, **params) -> dict:
    """The report as the API gives it to this user (titles in their language)."""
    reply = tab.context.request.get(tab.url(f"api/v1/stats/{report}", **params))
    assert reply.ok, reply.text()
    return reply.json()


def shown(value, kind: str, language: str) -> str:
    """A figure as the page writes it: m:ss or h:mm:ss, percents with % (a decimal comma in
    Russian), a dash for none."""
    if value is None:
        return "—"
    if kind == "seconds":
        hours, rest = divmod(value, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"
    if kind == "percent":
        return f"{value:.1f}%".replace(".", "," if language == "ru" else ".")
    return str(value)


def table(tab: UserPage, selector: str) -> list[list[str]]:
    return tab.page.eval_on_selector_all(
        f"{selector} tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")


def chart_drawn(tab: UserPage) -> dict:
    """What Chart.js made of the canvas: its datasets and labels, and whether it differs from
    a blank canvas of its size."""
    return tab.page.evaluate("""() => {
        const canvas = document.getElementById("report-chart");
        const chart = Chart.getChart(canvas);
        const blank = document.createElement("canvas");
        blank.width = canvas.width; blank.height = canvas.height;
        return {datasets: chart.data.datasets.map(d => d.label), labels: chart.data.labels,
                values: chart.data.datasets.map(d => d.data),
                drawn: canvas.width > 0 && canvas.toDataURL() !== blank.toDataURL()};
    }""")


def shows_the_report(tab: UserPage, report: str, params: dict) -> dict:
    """The page's chart, table and heat map are the API's report for the same parameters."""
    data = stats(tab, report, **params)
    language = tab.page.locator("html").get_attribute("lang")
    assert tab.page.locator(".report-choice a.active").get_attribute("data-report") == report
    assert tab.page.locator("h2.report-title").inner_text().startswith(data["title"])
    chart = chart_drawn(tab)
    assert chart["drawn"], report
    assert chart["datasets"] == [s["title"] for s in data["chart"]["series"]]
    assert chart["labels"] == data["chart"]["labels"]
    assert chart["values"] == [s["values"] for s in data["chart"]["series"]]
    columns = data["columns"]
    assert table(tab, "table.report thead") == [[c["title"] for c in columns]]
    assert table(tab, "table.report tbody") == [
        [shown(row[c["key"]], c["kind"], language) for c in columns] for row in data["rows"]]
    assert data["rows"], report
    totals = data["totals"]
    if any(c["key"] in totals for c in columns):
        assert table(tab, "table.report tfoot") == [
            [shown(totals[c["key"]], c["kind"], language) if c["key"] in totals
             else TOTAL[language] if i == 0
             else "" for i, c in enumerate(columns)]]
    summary = [(value, SUMMARY_KINDS.get(key, "count")) for key, value in totals.items()
               if key not in {c["key"] for c in columns}]
    assert sorted(tab.page.locator(".report-summary .total .value").all_inner_texts()) == sorted(
        shown(value, kind, language) for value, kind in summary)
    if report == "traffic":
        heat = table(tab, "table.heatmap tbody")
        assert len(heat) == 7 and all(len(row) == 1 + 24 for row in heat)
        assert [row[0] for row in heat] == data["heatmap"]["days"]
        assert [[int(v) for v in row[1:]] for row in heat] == data["heatmap"]["values"]
    else:
        assert tab.page.locator("table.heatmap").count() == 0
    return data


def screenshot(tab: UserPage, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    tab.page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("user, language", [("admin", "en"), ("admin-ru", "ru")])
def test_an_admin_walks_the_six_reports(open_as, user, language):
    tab = open_as(user)
    tab.page.goto(tab.url(**PERIOD))                       # from the history page's menu
    tab.navigate_by(tab.page.locator(".pbx-sidebar a.analytics"))
    assert tab.page.locator("h1").inner_text().strip() == HEADINGS[language]
    assert tab.page.locator('select[name="period"]').input_value() == "this_month"
    open_analytics(tab, report="employees", **PERIOD)
    assert tab.page.locator("html").get_attribute("lang") == language
    for report in REPORTS:
        if report != "employees":
            tab.navigate_by(tab.page.locator(f".report-choice a.report-{report}"))
        assert tab.query() == {**PERIOD, "report": report}
        shows_the_report(tab, report, PERIOD)
        screenshot(tab, f"analytics-{report}-{language}.png")


def test_the_trend_grain_and_the_service_level_change_the_report(open_as):
    tab = open_analytics(open_as("admin"), report="traffic", **PERIOD)
    tab.page.click(".filters .ui.dropdown.grain")
    tab.navigate_by(tab.page.locator('.filters .ui.dropdown.grain .menu .item[data-value="week"]'))
    assert tab.query() == {**PERIOD, "report": "traffic", "grain": "week"}
    data = shows_the_report(tab, "traffic", {**PERIOD, "grain": "week"})
    assert [row["period"] for row in data["rows"]] == ["2024-10-14", "2024-10-21", "2024-10-28"]
    tab.navigate_by(tab.page.locator(".report-choice a.report-queues"))
    tab.page.fill('input[name="service_level"]', "45")
    tab.navigate_by(tab.page.locator(".filters button.apply"))
    assert tab.query() == {**PERIOD, "report": "queues", "grain": "week", "service_level": "45"}
    data = shows_the_report(tab, "queues", {**PERIOD, "service_level": "45"})
    assert "Answered within 45 s" in [c["title"] for c in data["columns"]]


def test_exports_and_print(open_as):
    tab = open_analytics(open_as("admin"), report="lines", **PERIOD)
    hrefs = tab.page.eval_on_selector_all(".analytics-tools .export a",
                                          "links => links.map(a => a.getAttribute('href'))")
    assert [h.split("?")[1].split("&")[0] for h in hrefs] == [
        "format=xlsx", "format=csv", "format=pdf"]
    assert all("report=lines" in h and "from=2024-10-20" in h for h in hrefs)
    tab.page.emulate_media(media="print")
    for hidden in (".pbx-sidebar", "form.analytics.filters", ".report-choice",
                   ".analytics-tools .export"):
        expect(tab.page.locator(hidden)).to_be_hidden()
    expect(tab.page.locator("#report-chart")).to_be_visible()
    expect(tab.page.locator("table.report")).to_be_visible()
    tab.page.emulate_media(media="screen")
    expect(tab.page.locator("form.analytics.filters")).to_be_visible()


def test_a_named_period_applies_at_once_and_an_empty_one_says_so(open_as):
    tab = open_analytics(open_as("admin"), report="employees", **PERIOD)
    tab.page.click(".filters .ui.dropdown.period")
    tab.navigate_by(tab.page.locator(
        '.filters .ui.dropdown.period .menu .item[data-value="last_year"]'))
    assert tab.query() == {"report": "employees", "period": "last_year"}
    assert stats(tab, "employees", period="last_year")["rows"] == []     # the demo is of 2024
    expect(tab.page.locator(".ui.message.empty")).to_be_visible()
    assert tab.page.locator("table.report tbody tr").count() == 0
    assert chart_drawn(tab)["datasets"] == ["Answered", "Missed", "Outgoing"]


def test_a_bad_filter_says_why_on_the_page_as_text(open_as):
    tab = open_as("admin")
    reply = tab.page.goto(tab.url("analytics", report="traffic", **{"from": "2024-10-28",
                                                                   "to": "2024-10-20"}))
    assert reply.status == 400
    assert "the period is empty" in tab.page.locator(".bad-filter .reason").inner_text()
    assert tab.page.locator("#report-chart").count() == 0
    hostile = "<img src=x onerror=alert(2)>"
    reply = tab.page.goto(tab.url("analytics", report="traffic", group=hostile, **PERIOD))
    assert reply.status == 400
    assert hostile in tab.page.locator(".bad-filter .reason").inner_text()
    assert tab.page.locator(".bad-filter img").count() == 0 and tab.dialogs == []


def test_an_operator_sees_only_their_own_row(open_as):
    for user, language in (("operator201", "ru"), ("olga", "en")):
        tab = open_analytics(open_as(user), report="employees", **PERIOD)
        data = shows_the_report(tab, "employees", PERIOD)
        assert [row["extension"] for row in data["rows"]] == ["201"]
        assert [r[0] for r in table(tab, "table.report tbody")] == ["201"]
        choices = tab.page.eval_on_selector_all('select[name="employee"] option',
                                                "options => options.map(o => o.value)")
        assert [c for c in choices if c] == ["201"]
        admin = stats(open_as("admin"), "traffic", **PERIOD)
        mine = stats(tab, "traffic", **PERIOD)
        assert 0 < mine["totals"]["calls"] < admin["totals"]["calls"]
        screenshot(tab, f"analytics-operator-{language}.png")
