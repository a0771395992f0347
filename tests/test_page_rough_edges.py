"""The history page's rough edges a new user hits (issue 14), over real HTTP and in real
Chromium through real nginx: bad filter input is shown inside the page with what was typed
kept; the save-filter popover fits its label and does not change the default unasked; the page
fits at 1024 px in English and Russian; a row says who answered an IVR/queue call, and the
English words for an answered call agree everywhere."""
from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import sqlite3
import urllib.parse
from contextlib import closing
from pathlib import Path

import pytest

from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, login
from tests.stack import PREFIX, admin_shell
from tests.webclient import Browser

PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}      # the demo PBX's calls end 2024-10-28
IVR = "2020"                                             # the demo PBX's IVR menu
# One account per language and one per test that saves filters: nobody depends on another.
ACCOUNTS = ("rough-en", "rough-ru", "rough-save-http", "rough-save-chromium")
USERS = list(DEMO_USERS) + [{"name": name, "password": name, "role": "admin", "extensions": []}
                            for name in ACCOUNTS]
LANGUAGE_OF = {"en": "rough-en", "ru": "rough-ru"}


@pytest.fixture(scope="module")
def mirror(demo_mirror, tmp_path_factory) -> Path:
    """A copy of the demo mirror: the page writes its users' settings and filters into it."""
    copy = tmp_path_factory.mktemp("rough-mirror") / "module.db"
    shutil.copy(demo_mirror, copy)
    return copy


@pytest.fixture(scope="module")
def stack(mirror, demo_pbx, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rough-nginx")
    with admin_shell(mirror, demo_pbx / "monitor", run_dir, users=USERS) as running:
        for language, user in LANGUAGE_OF.items():       # each reader's language, once
            client = http_user(running, user)
            status, _, _ = client.request(PREFIX + "settings", {
                "language": language, "csrf_token": csrf_of(page_html(client, **PERIOD)[2])})
            assert status == 302
        yield running


def http_user(stack, name: str) -> Browser:
    client = Browser(stack["base"])
    status, _, _ = client.login(name, name)
    assert status == 302
    return client


def page_html(client: Browser, path: str = "", **params) -> tuple[int, dict, str]:
    return client.request(PREFIX + path + "?" + urllib.parse.urlencode(params, doseq=True))


def csrf_of(body: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', body).group(1)


def bad_filter_message(body: str) -> str:
    """The text of the page's bad-filter message (its header and what is wrong)."""
    found = re.search(r'<div class="ui negative message bad-filter".*?</p>', body, re.S)
    assert found, "no bad-filter message in the page"
    return html.unescape(re.sub(r"<[^>]+>", " ", found.group(0)))


def field_value(body: str, name: str) -> str:
    tag = re.search(rf'<input [^>]*name="{name}"[^>]*>', body).group(0)
    return html.unescape(re.search(r'value="([^"]*)"', tag).group(1))


@pytest.fixture
def open_page(browser, stack):
    """open_page(user, width, **params) -> a Playwright page of the history page; no
    JavaScript error allowed."""
    contexts, errors = [], []

    def open_as(user: str, width: int = 1440, **params):
        context = browser.new_context(locale="en-US", viewport={"width": width, "height": 900})
        contexts.append(context)
        tab = context.new_page()
        tab.set_default_timeout(10_000)
        tab.on("pageerror", lambda error: errors.append(str(error)))
        login(tab, stack, user, user)
        tab.goto(f"{stack['base']}{PREFIX}?" + urllib.parse.urlencode(params))
        return tab
    yield open_as
    for context in contexts:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def mirror_rows(mirror: Path, sql: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{mirror}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


# --- 1. bad filter input is shown inside the page ---------------------------------------------

BAD = [
    ({**PERIOD, "number": "12"}, "number", "12", "at least 3 digits"),
    ({"from": "2023-01-01", "to": "2024-06-01"}, "from", "2023-01-01", "the period is too long"),
    ({**PERIOD, "min_talk": "abc"}, "min_talk", "abc", "min_talk must be a whole number"),
    ({"from": "2024-10-28", "to": "2024-10-01"}, "to", "2024-10-01", "the period is empty"),
    ({**PERIOD, "status": "lost"}, "number", "", "unknown status"),
    ({**PERIOD, "number": "916", "limit": "10"}, "number", "916", "unknown parameter"),
    ({**PERIOD, "number": 'src:7"><b>x</b>'}, "number", 'src:7"><b>x</b>', "takes digits"),
]


@pytest.mark.parametrize("params, field, typed, message", BAD, ids=[b[3] for b in BAD])
def test_bad_filter_input_is_a_400_inside_the_page_with_what_was_typed(stack, params, field,
                                                                       typed, message):
    client = http_user(stack, "rough-en")
    status, headers, body = page_html(client, **params)
    assert status == 400 and headers["Content-Type"].startswith("text/html")
    assert 'class="ui vertical inverted menu pbx-sidebar"' in body       # the admin shell
    assert 'id="filters"' in body and 'class="ui pointing secondary menu tabs"' in body
    alert = bad_filter_message(body)
    assert "Bad filter" in alert and message in alert and "Traceback" not in body
    assert field_value(body, field) == typed and "<b>x</b>" not in body   # typed text stays text
    assert '<tr class="call' not in body and "circular label count" not in body
    assert "No calls match" not in body          # the filter was not run: nothing to say about it
    # the page's scripts get JSON with the same message
    for path in ("rows", "updates"):
        status, headers, reply = page_html(client, path, **params)
        assert status == 400 and headers["Content-Type"].startswith("application/json"), path
        assert message in json.loads(reply)["error"], path


@pytest.mark.parametrize("params, russian", [
    ({**PERIOD, "number": "12"}, "поиск '12': введите не меньше 3 цифр номера или 3 букв имени"),
    ({**PERIOD, "number": "src:abc"}, "после «src:» нужны цифры"),
    ({**PERIOD, "min_talk": "abc"}, "«Разговор от» — целое число секунд от 0 до"),
    ({"from": "2024-10-28", "to": "2024-10-01"}, "период пуст: дата «по» должна быть позже"),
    ({"from": "2022-01-01", "to": "2024-10-28"}, "период слишком длинный: на этой странице не "
                                                 "больше 366 дней"),
    ({**PERIOD, "status": "lost"}, "неизвестное значение 'lost' (status); допустимо:"),
    ({"from": "28.10.2024"}, "неверная дата '28.10.2024': используйте ГГГГ-ММ-ДД"),
])
def test_the_bad_filter_message_speaks_russian(stack, params, russian):
    status, _, body = page_html(http_user(stack, "rough-ru"), **params)
    assert status == 400 and 'lang="ru"' in body
    alert = bad_filter_message(body)
    assert "Неверный отбор" in alert and russian in alert, alert
    assert ">Входящие<" in body


def test_typing_a_bad_filter_keeps_the_page_and_shows_why(open_page):
    tab = open_page("rough-en", **PERIOD)
    assert tab.locator("#calls tr.call").count() > 0
    tab.fill('#filters input[name="number"]', "12")
    tab.fill('#filters input[name="min_talk"]', "abc")
    with tab.expect_navigation():
        tab.click("#filters button.apply")
    alert = tab.locator(".ui.negative.message.bad-filter")
    assert alert.is_visible() and "Bad filter" in alert.inner_text()
    assert tab.locator(".pbx-sidebar").is_visible() and tab.locator("#filters").is_visible()
    assert tab.locator('#filters input[name="number"]').input_value() == "12"
    assert tab.locator('#filters input[name="min_talk"]').input_value() == "abc"
    assert tab.locator("#calls tr.call").count() == 0
    assert tab.locator(".tabs .count").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "bad-filter-en.png"))
    # correcting it brings the rows back
    tab.fill('#filters input[name="number"]', "")
    tab.fill('#filters input[name="min_talk"]', "")
    with tab.expect_navigation():
        tab.click("#filters button.apply")
    assert tab.locator(".ui.negative.message.bad-filter").count() == 0
    assert tab.locator("#calls tr.call").count() > 0


# --- 2. the save-filter popover -----------------------------------------------------------------

def default_name(client: Browser) -> str | None:
    """The name of the filter the page opens by default (starred), if any."""
    found = re.search(r'class="ui basic label saved-filter default" data-name="([^"]+)"',
                      page_html(client)[2])
    return html.unescape(found.group(1)) if found else None


def test_saving_a_filter_leaves_the_default_alone_unless_asked(stack):
    client = http_user(stack, "rough-save-http")
    _, _, body = page_html(client, **PERIOD)
    box = re.search(r'<input type="checkbox" name="default"[^>]*>', body).group(0)
    assert "checked" not in box                        # unticked unless the user ticks it
    token = csrf_of(body)

    def save(name: str, query: dict, **default):
        status, _, _ = client.request(PREFIX + "filters", {
            "name": name, "query": urllib.parse.urlencode(query), "csrf_token": token,
            **default})
        assert status == 302

    save("First", {"period": "last_week"}, default="on")
    assert default_name(client) == "First"
    save("Second", {"period": "this_month", "tab": "missed"})   # the form's unticked box
    assert default_name(client) == "First"
    save("Third", PERIOD, default="on")
    assert default_name(client) == "Third"


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("width", [1024, 1440])
def test_the_save_popover_shows_its_label_on_one_line(open_page, width, language):
    tab = open_page(LANGUAGE_OF[language], width, **PERIOD)
    tab.click(".toolbar details.save-filter > summary")
    form = tab.locator(".toolbar details.save-filter form")
    label = form.locator('label[for="save-default"]')
    assert not form.locator('input[name="default"]').is_checked()
    line = tab.evaluate("""() => {
        const label = document.querySelector('label[for="save-default"]');
        const style = getComputedStyle(label);
        return parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.2; }""")
    box, popover = label.bounding_box(), form.bounding_box()
    assert box["height"] < 1.5 * line, f"the label wraps: {box['height']} px high"
    for inner in (box, form.locator('button[type="submit"]').bounding_box(),
                  form.locator('input[name="name"]').bounding_box()):
        assert popover["x"] <= inner["x"] and inner["x"] + inner["width"] <= \
            popover["x"] + popover["width"] + 0.5
    assert popover["x"] + popover["width"] <= width
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"save-filter-{width}-{language}.png"))


def test_the_save_popover_changes_the_default_only_when_ticked(open_page):
    tab = open_page("rough-save-chromium", 1024, **PERIOD)

    def save(name: str, tick: bool):
        tab.click(".toolbar details.save-filter > summary")
        form = tab.locator(".toolbar details.save-filter form")
        assert not form.locator('input[name="default"]').is_checked()
        form.locator('input[name="name"]').fill(name)
        if tick:
            form.locator('label[for="save-default"]').click()
        with tab.expect_navigation():
            form.locator('button[type="submit"]').click()
        assert tab.locator(f'.saved-filter[data-name="{name}"]').count() == 1

    def default() -> list[str]:
        return [label.get_attribute("data-name")
                for label in tab.locator(".saved-filters .saved-filter.default").all()]

    save("Ticked", tick=True)
    assert default() == ["Ticked"]
    save("Left as it came", tick=False)
    assert default() == ["Ticked"]
    tab.goto(tab.url.split("?")[0])                    # no parameters: the default filter
    assert tab.locator(".tabs .item.active").get_attribute("data-tab") == "all"
    assert tab.locator('#filters input[name="from"]').input_value() == PERIOD["from"]
    save("Ticked later", tick=True)
    assert default() == ["Ticked later"]


# --- 3. the page fits at 1024 px ----------------------------------------------------------------

LAYOUT = """() => {
    const root = document.documentElement;
    const right = el => el.getBoundingClientRect().right;
    // The right edge an element may reach: the nearest ancestor that scrolls sideways (it
    // shows a scrollbar), else the page content's box.
    function limit(el) {
        for (let up = el.parentElement; up; up = up.parentElement) {
            const x = getComputedStyle(up).overflowX;
            if ((x === 'auto' || x === 'scroll') && up.scrollWidth > up.clientWidth) {
                return {right: right(up), scrolls: true};
            }
            if (up.classList.contains('pbx-content')) {
                const pad = parseFloat(getComputedStyle(up).paddingRight);
                return {right: right(up) - pad, scrolls: false};
            }
        }
    }
    // (closed popovers keep a layout box, hidden: only what is shown counts)
    const outside = sel => [...document.querySelectorAll(sel)].filter(
            el => el.checkVisibility()).map(el => {
        const edge = limit(el);
        return {what: el.dataset.tab || el.className, right: right(el), limit: edge.right,
                scrolls: edge.scrolls};
    }).filter(box => box.right > box.limit + 0.5 || box.scrolls);
    const text = document.createElement('canvas').getContext('2d');
    const placeholder = input => {
        const style = getComputedStyle(input);
        text.font = style.font;
        return {text: input.placeholder, width: text.measureText(input.placeholder).width,
                room: input.clientWidth - parseFloat(style.paddingLeft)
                      - parseFloat(style.paddingRight),
                scroll: input.scrollWidth, client: input.clientWidth};
    };
    return {
        page: {scroll: root.scrollWidth, client: root.clientWidth},
        tabs: outside('.tabs .item'),
        header: outside('table.calls > thead th'),
        fields: outside('#filters .field'),
        toolbar: outside('.toolbar .button, .toolbar .checkbox'),
        placeholders: ['min_talk', 'number'].map(
            name => placeholder(document.querySelector(`#filters input[name="${name}"]`))),
    };
}"""


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("width", [1024, 1440])
def test_the_page_fits_its_width_in_both_languages(open_page, mirror, width, language):
    tab = open_page(LANGUAGE_OF[language], width, **PERIOD)
    assert tab.locator("html").get_attribute("lang") == language
    # a call with a long row: an IVR call whose answerer's name shows too
    tab.locator("#calls tr.call td.time").first.click()
    tab.locator("#calls tr.details .call-details").wait_for()
    layout = tab.evaluate(LAYOUT)
    assert layout["page"]["scroll"] <= layout["page"]["client"], layout["page"]
    for part in ("tabs", "header", "fields", "toolbar"):
        assert layout[part] == [], (part, layout[part])
    for placeholder in layout["placeholders"]:
        assert placeholder["width"] <= placeholder["room"], placeholder
        assert placeholder["scroll"] <= placeholder["client"], placeholder
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"page-{width}-{language}.png"
    tab.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- 4. who answered, and one word for an answered call -----------------------------------------

def ivr_queue_call(mirror: Path) -> tuple[str, str, str]:
    """An incoming call through the IVR into a queue, answered by an agent: (linkedid, agent's
    extension, agent's name from the mirror's employee table)."""
    return mirror_rows(mirror, """
        SELECT c.linkedid, c.answered_by, e.name FROM call c
        JOIN employee e ON e.extension = c.answered_by
        WHERE c.dst = ? AND c.status = 'answered' AND c.direction = 'incoming'
          AND EXISTS (SELECT 1 FROM leg l WHERE l.linkedid = c.linkedid
                      AND l.dst_chan LIKE 'Queue:%')
        ORDER BY c.start_ms DESC LIMIT 1""", IVR)[0]


def test_an_ivr_queue_call_shows_the_agent_who_answered(open_page, mirror):
    linkedid, agent, name = ivr_queue_call(mirror)
    tab = open_page("rough-en", 1440, **PERIOD, number=f"linkedid:{linkedid}")
    row = tab.locator(f'#calls tr.call[data-linkedid="{linkedid}"]')
    cell = row.locator("td.dst")
    first_line = cell.locator(":scope > a.number")
    assert first_line.get_attribute("data-number") == agent
    assert cell.locator(":scope > .name").inner_text() == name
    via = cell.locator(".via")
    assert IVR in via.inner_text() and via.locator("a.number").get_attribute("data-number") == IVR
    lines = [line.strip() for line in cell.inner_text().splitlines() if line.strip()]
    assert lines[:2] == [agent, name], lines
    row.locator("td.time").click()
    facts = tab.locator(f'#calls tr.call[data-linkedid="{linkedid}"] + tr.details table.facts')
    facts.wait_for()
    assert facts.locator(".answered-by").inner_text().split() == [agent, *name.split()]
    assert IVR in facts.locator(".called").inner_text()


def test_english_words_for_an_answered_call_agree_everywhere(open_page, mirror, stack):
    linkedid, _, _ = ivr_queue_call(mirror)
    tab = open_page("rough-en", 1440, **PERIOD, number=f"linkedid:{linkedid}")
    row = tab.locator(f'#calls tr.call[data-linkedid="{linkedid}"]')
    word = row.locator("td.status .label").inner_text()
    assert word == "answered"
    option = tab.eval_on_selector('select[name="status"] option[value="answered"]',
                                  "o => o.textContent")
    assert option == word
    tabs = tab.locator(".tabs .item").all_inner_texts()
    assert not any(t.split()[0].lower() in ("ok", "answered") for t in tabs)
    row.locator("td.time").click()
    details = tab.locator(f'#calls tr.call[data-linkedid="{linkedid}"] + tr.details')
    details.locator(".call-details").wait_for()
    assert f"· {word}" in details.locator("table.facts tr").first.inner_text()
    assert "Answered by" in details.locator("table.facts th").all_inner_texts()
    legs_header = details.locator("table.legs thead th").all_inner_texts()
    assert "Rang" not in legs_header and legs_header[3] == "Wait"
    # the chooser and the export name the answered-by column alike
    chooser = tab.eval_on_selector('label[for="column-answered"]', "l => l.textContent")
    assert chooser == "Answered by"
    reply = tab.context.request.get(f"{stack['base']}{PREFIX}export?" + urllib.parse.urlencode(
        {"format": "csv", **PERIOD, "number": f"linkedid:{linkedid}"}))
    assert reply.ok
    rows = list(csv.DictReader(io.StringIO(reply.text().lstrip("\ufeff"))))
    assert [r["Status"] for r in rows] == [word]


def test_russian_keeps_the_pbx_wording_and_names_the_wait(open_page, mirror):
    linkedid, _, _ = ivr_queue_call(mirror)
    tab = open_page("rough-ru", 1440, **PERIOD, number=f"linkedid:{linkedid}")
    row = tab.locator(f'#calls tr.call[data-linkedid="{linkedid}"]')
    assert row.locator("td.status .label").inner_text() == "ok"
    row.locator("td.time").click()
    details = tab.locator(f'#calls tr.call[data-linkedid="{linkedid}"] + tr.details')
    details.locator(".call-details").wait_for()
    legs_header = details.locator("table.legs thead th").all_inner_texts()
    assert legs_header[3] == "Ожидание" and "Звонил" not in legs_header
    assert "через" in row.locator("td.dst .via").inner_text()
