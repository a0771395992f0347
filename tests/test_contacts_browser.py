"""The contacts' pages in real Chromium through real nginx: an admin imports a hostile CSV file —
the preview lists each row with what would happen and why, markup stays text (no script runs),
nothing is saved until Apply — then finds a contact, opens its page with its calls, and sees its
name in the history's rows; a Russian admin reads the preview in Russian; an operator sees the
names and only their own calls of a contact, and no import. Screenshots into test-artifacts/."""
from __future__ import annotations

import json
import re
import sqlite3

import pytest

from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, UserPage, chromium_binary, expect
from tests.mirror import mirrored_demo
from tests.stack import admin_shell

PERIOD = {"from": "2024-10-01", "to": "2024-10-28"}
USERS = list(DEMO_USERS) + [
    {"name": "admin-ru", "password": "admin-ru", "role": "admin", "extensions": [],
     "language": "ru"}]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    out = tmp_path_factory.mktemp("contacts-browser-pbx")
    return out, mirrored_demo(out, 500, seed=41)


@pytest.fixture(scope="module")
def busiest(pbx) -> tuple[str, str]:
    """The match key of the caller with the most incoming calls, and an employee who took
    part in some of them but not all (an operator's view of the contact is smaller)."""
    _, db = pbx
    with sqlite3.connect(db) as conn:
        key = conn.execute(
            "SELECT ext_key FROM call WHERE direction = 'incoming' AND ext_key IS NOT NULL "
            "GROUP BY ext_key ORDER BY count(*) DESC, ext_key LIMIT 1").fetchone()[0]
        calls = [set(json.loads(employees)) for (employees,) in conn.execute(
            "SELECT employees FROM call WHERE ext_key = ?", (key,))]
    extension = min(e for employees in calls for e in employees
                    if not all(e in other for other in calls))
    return key, extension


@pytest.fixture(scope="module")
def stack(pbx, busiest, tmp_path_factory):
    chromium_binary()
    out, db = pbx
    users = USERS + [{"name": "op", "password": "op", "role": "operator",
                      "extensions": [busiest[1]]}]
    with admin_shell(db, out / "monitor", tmp_path_factory.mktemp("contacts-nginx"),
                     users=users) as running:
        yield running


def hostile_csv(key: str) -> bytes:
    return ("name,company,number,id\n"
            f"<img src=x onerror=alert(1)>Qwzx,<script>alert(2)</script>,+79{key},b1\n"
            "\"=HYPERLINK(\"\"http://evil.example\"\")\",Formula Inc,+7 916 700-00-02,b2\n"
            "Short Number,,12,b3\n").encode()


def screenshot(tab: UserPage, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    tab.page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def upload(tab: UserPage, content: bytes):
    tab.page.set_input_files("form.import-contacts input[type=file]",
                             {"name": "contacts.csv", "mimeType": "text/csv",
                              "buffer": content})
    tab.navigate_by(tab.page.locator("form.import-contacts button.preview"))


def test_an_admin_previews_applies_and_finds_a_contact(open_as, busiest):
    tab = open_as("admin")
    reply = tab.page.goto(tab.url("contacts"))
    assert reply.status == 200
    expect(tab.page.locator(".no-contacts")).to_be_visible()
    upload(tab, hostile_csv(busiest[0]))
    rows = tab.page.locator("table.import-rows tr.import-row")
    expect(rows).to_have_count(3)
    assert tab.page.locator(".import-counts .count-add .value").inner_text() == "2"
    assert tab.page.locator(".import-counts .count-refused .value").inner_text() == "1"
    assert rows.nth(0).locator("td.name").inner_text() == "<img src=x onerror=alert(1)>Qwzx"
    assert "kept as text" in rows.nth(1).locator("td.messages").inner_text()
    refused = tab.page.locator('tr.import-row[data-row="4"]')
    assert refused.locator("td.action").inner_text() == "refused"
    assert "no valid phone number" in refused.locator("td.messages").inner_text()
    screenshot(tab, "contacts-import-preview.png")
    # Nothing saved yet: Cancel leaves the list empty.
    tab.navigate_by(tab.page.locator("a.cancel"))
    expect(tab.page.locator(".no-contacts")).to_be_visible()
    upload(tab, hostile_csv(busiest[0]))
    tab.navigate_by(tab.page.locator("form.apply-import button.apply"))
    expect(tab.page.locator(".imported")).to_contain_text("contacts added 2")
    expect(tab.page.locator("table.contact-list tr.contact")).to_have_count(2)
    tab.page.fill("form.contact-search input[name=q]", "alert(2)")
    tab.navigate_by(tab.page.locator("form.contact-search button"))
    expect(tab.page.locator("table.contact-list tr.contact")).to_have_count(1)
    tab.navigate_by(tab.page.locator("a.contact-link"))
    expect(tab.page.locator(".contact-name")).to_have_text("<img src=x onerror=alert(1)>Qwzx")
    shown = tab.page.eval_on_selector_all("table.contact-calls tr.call",
                                          "rows => rows.map(r => r.dataset.linkedid)")
    expected = [c["linkedid"] for c in tab.api(**PERIOD, number="Qwzx")]
    assert shown and shown == expected
    screenshot(tab, "contacts-page.png")
    # The history's rows name the caller by the contact, linked to its page.
    tab.open(**PERIOD, number="Qwzx")
    names = tab.page.locator("#calls tr.call td.party .contact-link")
    expect(names.first).to_have_text("<img src=x onerror=alert(1)>Qwzx")
    assert names.count() == len(expected)
    screenshot(tab, "contacts-in-history.png")
    assert tab.dialogs == []                         # no markup ran as script


def test_a_russian_admin_reads_the_preview_in_russian(open_as):
    tab = open_as("admin-ru")
    assert tab.page.goto(tab.url("contacts")).status == 200
    expect(tab.page.locator("h2")).to_contain_text("Импорт контактов")
    upload(tab, "name,number\nКороткий,12\nПолный,+7 916 700-00-03\n".encode("cp1251"))
    expect(tab.page.locator("h1")).to_contain_text("Windows-1251")
    refused = tab.page.locator('tr.import-row[data-row="2"]')
    assert refused.locator("td.action").inner_text() == "отклонено"
    assert "нет правильного номера телефона" in refused.locator("td.messages").inner_text()
    assert tab.page.locator('tr.import-row[data-row="3"] td.name').inner_text() == "Полный"
    screenshot(tab, "contacts-import-preview-ru.png")


def test_a_big_file_goes_through_nginx_and_its_preview_stays_short(open_as):
    note = "n" * 1500
    rows = "".join(f"Person {i},+7 900 {i:07d},{note}\n" for i in range(1000))
    content = ("name,number,note\n" + rows + "Bad,12,\n").encode()
    assert len(content) > 1024 * 1024                # more than nginx's default body size
    tab = open_as("admin")
    assert tab.page.goto(tab.url("contacts")).status == 200
    upload(tab, content)
    assert tab.page.locator(".import-counts .count-add .value").inner_text() == "1000"
    expect(tab.page.locator("tr.import-row")).to_have_count(201)
    expect(tab.page.locator('tr.import-row[data-row="1002"]')).to_contain_text("refused")
    expect(tab.page.locator("tr.more-rows")).to_contain_text("800")


def test_an_operator_sees_names_and_only_their_calls_of_a_contact(open_as, busiest):
    admin = open_as("admin")
    admin.page.goto(admin.url("contacts", q="Qwzx"))
    admin.navigate_by(admin.page.locator("a.contact-link"))
    contact_url = admin.page.url
    every = admin.page.eval_on_selector_all("table.contact-calls tr.call",
                                            "rows => rows.map(r => r.dataset.linkedid)")
    tab = open_as("op")
    assert tab.page.goto(tab.url("contacts")).status == 200
    assert tab.page.locator("form.import-contacts").count() == 0
    assert tab.page.locator("a.new-contact").count() == 0
    assert tab.page.goto(contact_url).status == 200
    own = tab.page.eval_on_selector_all("table.contact-calls tr.call",
                                        "rows => rows.map(r => r.dataset.linkedid)")
    assert own and set(own) < set(every)
    assert own == [c["linkedid"] for c in tab.api(**PERIOD, number="Qwzx")]
    assert tab.page.locator(".contact-actions").count() == 0
    assert re.search(r"/contacts/\d+$", contact_url)
