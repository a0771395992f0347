"""Working with calls in real Chromium through real nginx, in the order people do it: an admin
makes the tag list in Settings; an operator tags a call and comments on it, and the row, the tag
counts and the filters show it; the author edits the comment while others only read it and a
stranger's link opens nothing; the link to a call opens its details; an admin deletes a call's
recordings, then a whole call, each with a reason, and the recordings of a filter after seeing
how many; the recording and talk filters give the API's calls. English and Russian, with
screenshots into test-artifacts/.

The module runs on a small demo PBX and a mirror of its own: it deletes recordings and calls.
"""
from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pytest

from standin.shell import DEMO_USERS
from tests.browser import ARTIFACTS, UserPage, chromium_binary, expect
from tests.mirror import mirrored_demo
from tests.stack import PREFIX, admin_shell
from tests.test_browser import first_rows, recording_file

PERIOD = {"from": "2024-10-25", "to": "2024-10-27"}     # the small demo PBX's three days
EXTENSION, OTHER_EXTENSION = "201", "206"
# Operators of one extension (each sees its calls), one of another; all read English. Those
# who switch the language are accounts of their own, so no test depends on another's order.
USERS = list(DEMO_USERS) + [
    {"name": name, "password": name, "role": "operator", "extensions": [extension],
     "language": "en"}
    for name, extension in (("olga", EXTENSION), ("petr", EXTENSION), ("ivan", EXTENSION),
                            ("eve", OTHER_EXTENSION))] + [
    {"name": "admin-tags", "password": "admin-tags", "role": "admin", "extensions": []}]
WIDTH = 1440


@pytest.fixture(scope="module")
def pbx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("call-actions-pbx")
    mirrored_demo(out, 400, seed=19)
    return out


@pytest.fixture(scope="module")
def mirror(pbx) -> Path:
    return pbx / "module.db"


@pytest.fixture(scope="module")
def stack(pbx, mirror, tmp_path_factory):
    chromium_binary()
    with admin_shell(mirror, pbx / "monitor", tmp_path_factory.mktemp("call-actions-nginx"),
                     users=USERS, app_threads=8) as running:
        yield running


# ---------------------------------------------------------------------------------- helpers


def operators_calls(tab: UserPage) -> list[dict]:
    """The calls of EXTENSION's operators that the operator of OTHER_EXTENSION does not see."""
    return [c for c in tab.api(**PERIOD) if EXTENSION in c["employees"]
            and OTHER_EXTENSION not in c["employees"]]


def row_of(tab: UserPage, linkedid: str):
    return tab.page.locator(f'#calls tr.call[data-linkedid="{linkedid}"]')


def details_of(tab: UserPage, linkedid: str):
    return tab.page.locator(f'#calls tr.call[data-linkedid="{linkedid}"] + tr.details')


def pick(dropdown, *values: str):
    """Choose entries of a Fomantic dropdown as a user does: open it, click each."""
    dropdown.click()
    for value in values:
        dropdown.locator(f'.menu .item[data-value="{value}"]').click()


def apply_filters(tab: UserPage):
    tab.navigate_by(tab.page.locator("#filters button.apply"))


def shows_what_the_api_gives(tab: UserPage, **params) -> list[dict]:
    """The page's rows and count are the API's calls for the same filter."""
    calls = tab.api(**params)
    assert tab.shown() == first_rows(calls) and tab.count("all") == len(calls), params
    return calls


def query_lists(tab: UserPage) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(tab.page.url).query)


def set_tags(tab: UserPage, linkedid: str, *names: str):
    """Choose tags in a call's details; each choice sends the whole set."""
    choice = details_of(tab, linkedid).locator(".ui.dropdown.call-tag-choice")
    choice.click()
    for name in names:
        with tab.page.expect_response(lambda r: r.request.method == "PUT" and "/tags" in r.url):
            choice.locator(f'.menu .item[data-value="{name}"]').click()
    details_of(tab, linkedid).locator("table.facts").click()  # elsewhere: the menu closes
    expect(choice.locator(".menu")).to_be_hidden()
    expect(row_of(tab, linkedid).locator("td.notes .tag")).to_have_count(len(names))


def add_comment(tab: UserPage, linkedid: str, text: str):
    details = details_of(tab, linkedid)
    before = details.locator(".comment").count()
    details.locator("form.add-comment textarea").fill(text)
    details.locator("form.add-comment button[type=submit]").click()
    expect(details.locator(".comment")).to_have_count(before + 1)


def change(tab: UserPage, method: str, path: str, body: dict | None = None):
    """A change through the API as this user, with the page's token, as its scripts send it."""
    token = tab.page.get_attribute('meta[name="csrf-token"]', "content")
    return tab.context.request.fetch(
        tab.url(f"api/v1/{path}"), method=method, headers={
            "X-CSRF-Token": token, "Content-Type": "application/json"},
        data=json.dumps(body) if body is not None else None)


def switch_language(tab: UserPage, language: str):
    tab.navigate_by(tab.page.locator(f'.pbx-sidebar form.language button[value="{language}"]'))
    assert tab.page.locator("html").get_attribute("lang") == language


def screenshot(tab: UserPage, name: str, at_row: str | None = None) -> Path:
    """The screen as the user sees it into test-artifacts/: with `at_row`, scrolled to that
    call's row (its details below it)."""
    if at_row:
        row_of(tab, at_row).evaluate("row => row.scrollIntoView({block: 'start'})")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    tab.page.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def background(locator) -> str:
    return locator.evaluate("el => getComputedStyle(el).backgroundColor")


def one_line(locator, other) -> bool:
    """Two boxes side by side on one line (their tops within a few pixels)."""
    return abs(locator.bounding_box()["y"] - other.bounding_box()["y"]) < 4


def wide(tab: UserPage) -> UserPage:
    tab.page.set_viewport_size({"width": WIDTH, "height": 900})
    return tab


def link_of(tab: UserPage, linkedid: str) -> str:
    query = urllib.parse.urlencode({"number": linkedid, "call": linkedid})
    return f"{tab.stack['base']}{PREFIX}?{query}"


# ------------------------------------------------------------------------------------ tests


def test_tags_from_settings_then_an_operator_tags_and_comments_and_the_filters_find_it(
        open_as):
    # The admin makes the tag list in Settings.
    admin = wide(open_as("admin-tags")).open(**PERIOD)
    admin.navigate_by(admin.page.locator(".pbx-sidebar a.settings"))
    assert admin.page.locator(".tag-list .no-tags").is_visible()
    # (a required field is not red before anyone typed in it)
    assert background(admin.page.locator('form.new-tag input[name="name"]')) \
        == "rgb(255, 255, 255)"
    for name, colour in (("Sales", "green"), ("Жалоба", "red")):
        form = admin.page.locator("form.new-tag")
        form.locator('input[name="name"]').fill(name)
        pick(form.locator(".ui.dropdown"), colour)
        admin.navigate_by(form.locator("button[type=submit]"))
        label = admin.page.locator(f'.tag-list tr.tag-row[data-name="{name}"] .ui.label')
        assert label.inner_text() == name and colour in label.get_attribute("class").split()
    assert admin.page.locator(".tag-list tr.tag-row").count() == 2
    screenshot(admin, f"settings-{WIDTH}-en.png")
    switch_language(admin, "ru")
    assert "Добавить тег" in admin.page.locator("form.new-tag button").inner_text()
    assert admin.page.locator(".tag-list thead").inner_text().split() == [
        "Тег", "Название", "Цвет"]
    screenshot(admin, f"settings-{WIDTH}-ru.png")
    switch_language(admin, "en")

    # An operator tags two of their calls and comments on one.
    olga = wide(open_as("olga")).open(**PERIOD)
    complaint, sale = operators_calls(olga)[:2]
    olga.page.locator(".tag-counts.loaded").wait_for(state="attached")
    assert olga.page.locator(".tag-counts a.tag-count").count() == 0   # nothing tagged yet
    olga.expand(complaint["linkedid"])
    set_tags(olga, complaint["linkedid"], "Sales", "Жалоба")
    text = "Клиент недоволен доставкой, просит перезвонить завтра до обеда"
    add_comment(olga, complaint["linkedid"], text)
    olga.expand(sale["linkedid"])
    set_tags(olga, sale["linkedid"], "Sales")

    notes = row_of(olga, complaint["linkedid"]).locator("td.notes")
    assert notes.locator(".tag").all_inner_texts() == ["Sales", "Жалоба"] \
        == olga.call(complaint["linkedid"])["call"]["tags"]
    preview = notes.locator(".comment-preview")
    assert preview.inner_text().strip() == text[:39] + "…"
    assert preview.get_attribute("title").strip() == f"olga: {text}"
    comment = details_of(olga, complaint["linkedid"]).locator(".comment")
    assert comment.locator(".author").inner_text() == "olga"
    assert comment.locator(".text").inner_text() == text
    # who and when on one line, the text below; "Edit" and "Delete" apart
    assert one_line(comment.locator(".author"), comment.locator(".metadata .date"))
    assert comment.locator(".text").bounding_box()["y"] > comment.locator(".author") \
        .bounding_box()["y"] + 4
    edit, delete = (comment.locator(f".actions .{a}").bounding_box() for a in ("edit", "delete"))
    assert delete["x"] - (edit["x"] + edit["width"]) >= 6
    assert row_of(olga, sale["linkedid"]).locator("td.notes").inner_text().strip() == "Sales"
    assert details_of(olga, complaint["linkedid"]).locator(".label:empty").count() == 0
    screenshot(olga, f"call-notes-{WIDTH}-en.png", at_row=complaint["linkedid"])

    # Reloaded, the tag counts show, as the API counts the tagged calls.
    olga.page.reload()
    olga.page.locator(".tag-counts.loaded").wait_for(state="attached")
    counts = {a.get_attribute("data-tag"): int(a.locator(".detail").inner_text())
              for a in olga.page.locator(".tag-counts a.tag-count").all()}
    assert counts == {"Sales": 2, "Жалоба": 1} == {
        name: len(olga.api(**PERIOD, tag=name)) for name in ("Sales", "Жалоба")}

    # Filtering by the tags: any of them, then all of them.
    pick(olga.page.locator("#filters .ui.dropdown.tags"), "Sales", "Жалоба")
    apply_filters(olga)
    assert query_lists(olga)["tag"] == ["Sales", "Жалоба"] and "tag_mode" not in olga.query()
    both = {**PERIOD, "tag": "Sales,Жалоба"}
    calls = shows_what_the_api_gives(olga, **both, tag_mode="any")
    assert {c["linkedid"] for c in calls} == {complaint["linkedid"], sale["linkedid"]}
    pick(olga.page.locator("#filters .tag-mode .ui.dropdown"), "all")
    apply_filters(olga)
    assert olga.query()["tag_mode"] == "all"
    calls = shows_what_the_api_gives(olga, **both, tag_mode="all")
    assert [c["linkedid"] for c in calls] == [complaint["linkedid"]]
    # A tag count is a link to its calls.
    olga.open(**PERIOD)
    olga.navigate_by(olga.page.locator('.tag-counts a.tag-count[data-tag="Жалоба"]'))
    assert [c["linkedid"] for c in shows_what_the_api_gives(olga, **PERIOD, tag="Жалоба")] \
        == [complaint["linkedid"]]

    # Searching the comments' text, in another case, finds the call.
    olga.open(**PERIOD)
    olga.page.fill('#filters input[name="comment"]', "ДОСТАВКОЙ")
    apply_filters(olga)
    assert olga.query()["comment"] == "ДОСТАВКОЙ"
    calls = shows_what_the_api_gives(olga, **PERIOD, comment="ДОСТАВКОЙ")
    assert [c["linkedid"] for c in calls] == [complaint["linkedid"]]

    # The same details in Russian.
    switch_language(olga, "ru")
    details = olga.expand(complaint["linkedid"])
    assert "Копировать ссылку" in details.locator(".copy-link").inner_text()
    assert details.locator(".comment-history").inner_text() == "История изменений"
    assert details.locator(".call-tag-choice a.label").all_inner_texts() == ["Sales", "Жалоба"]
    # the longer Russian words keep the filter fields one line high
    mode = olga.page.locator("#filters .tag-mode .ui.dropdown")
    recording = olga.page.locator("#filters .ui.dropdown.recording")
    assert mode.inner_text().strip() == "любой тег"
    assert mode.bounding_box()["height"] == recording.bounding_box()["height"]
    screenshot(olga, f"call-notes-{WIDTH}-ru.png", at_row=complaint["linkedid"])
    switch_language(olga, "en")


def test_the_author_edits_a_comment_others_only_read_it_and_strangers_see_nothing(open_as):
    petr = open_as("petr")
    call = operators_calls(petr)[2]
    linkedid = call["linkedid"]
    petr.open(number=f"linkedid:{linkedid}")
    details = petr.expand(linkedid)
    details.locator("form.add-comment button[type=submit]").click()     # nothing written yet
    error = details.locator(".note-error")
    expect(error).to_be_visible()
    assert "empty" in error.inner_text() and details.locator(".comment").count() == 0
    add_comment(petr, linkedid, "Перезвонить в пятницу")
    comment = details.locator(".comment")
    comment.locator(".actions .edit").click()
    editor = comment.locator("form.edit-comment textarea")
    assert editor.input_value() == "Перезвонить в пятницу"
    editor.fill("Перезвонить в понедельник")
    comment.locator("form.edit-comment .save").click()
    expect(comment.locator(".text")).to_have_text("Перезвонить в понедельник")
    assert comment.locator(".edited").inner_text().startswith("edited ")
    assert comment.locator("form.edit-comment").count() == 0
    details.locator(".comment-history").click()
    history = details.locator(".history-list")
    expect(history).to_be_visible()
    changes = history.locator(".change").all_inner_texts()
    assert len(changes) == 2, changes
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d petr · added: «Перезвонить в пятницу»",
                        changes[0]), changes
    assert changes[1].endswith("petr · edited: «Перезвонить в пятницу» → "
                               "«Перезвонить в понедельник»"), changes
    details.locator(".comment-history").click()
    expect(history).to_be_hidden()
    comment_id = comment.get_attribute("data-id")

    # Another operator of the extension reads the comment but has nothing to change it with;
    # the API refuses him too.
    ivan = open_as("ivan")
    ivan.page.goto(link_of(ivan, linkedid))
    theirs = details_of(ivan, linkedid).locator(".comment")
    expect(theirs.locator(".text")).to_have_text("Перезвонить в понедельник")
    assert theirs.locator(".author").inner_text() == "petr"
    assert theirs.locator(".actions, .edit, .delete").count() == 0
    path = f"calls/{linkedid}/comments/{comment_id}"
    for method, body in (("PATCH", {"text": "mine now"}), ("DELETE", None)):
        reply = change(ivan, method, path, body)
        assert reply.status == 403 and "author" in reply.json()["error"], method
    ivan.page.reload()
    expect(details_of(ivan, linkedid).locator(".comment .text")).to_have_text(
        "Перезвонить в понедельник")

    # An operator who does not see the call gets nothing from its link.
    eve = open_as("eve")
    eve.page.goto(link_of(eve, linkedid))
    assert eve.page.locator(".ui.message.empty").is_visible()
    assert eve.shown() == [] and eve.page.locator("#calls tr.details").count() == 0
    assert "Перезвонить" not in eve.page.content()
    for path in (f"calls/{linkedid}/details", f"api/v1/calls/{linkedid}/comments"):
        assert eve.context.request.get(eve.url(path)).status == 404, path

    # The author deletes the comment: "Cancel" in the browser's question keeps it, "OK" not.
    comment.locator(".actions .delete").click()
    assert petr.dialogs == ["confirm: Delete this comment?"]
    assert details.locator(".comment").count() == 1
    petr.page.remove_listener("dialog", petr._dialog)
    petr.page.once("dialog", lambda dialog: dialog.accept())
    comment.locator(".actions .delete").click()
    expect(details.locator(".comment")).to_have_count(0)
    assert row_of(petr, linkedid).locator("td.notes .comment-preview").count() == 0
    details.locator(".comment-history").click()
    expect(details.locator(".history-list .change")).to_have_count(3)
    changes = details.locator(".history-list .change").all_inner_texts()
    assert [re.search(r"petr · (\w+):", c).group(1) for c in changes] == [
        "added", "edited", "deleted"], changes
    assert changes[2].endswith("deleted: «Перезвонить в понедельник» → —"), changes


def test_copy_link_gives_a_link_that_opens_the_call_for_those_who_may_see_it(open_as, stack):
    ivan = open_as("ivan")
    ivan.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack["base"])
    call = operators_calls(ivan)[3]
    linkedid = call["linkedid"]
    ivan.open(**PERIOD)
    details = ivan.expand(linkedid)
    # the link in the field is whole, for whoever copies it by hand
    assert details.locator(".call-link input").input_value() == link_of(ivan, linkedid)
    details.locator(".copy-link").click()
    expect(details.locator(".copy-link")).to_have_attribute("data-tooltip", "Link copied")
    link = details.locator(".call-link input").input_value()
    assert link == link_of(ivan, linkedid)
    assert ivan.page.evaluate("() => navigator.clipboard.readText()") == link

    for user, sees in (("ivan", True), ("admin", True), ("supervisor", True),
                       ("eve", False)):
        tab = open_as(user)
        assert tab.page.goto(link).status == 200
        if sees:
            opened = details_of(tab, linkedid).locator(".call-details")
            opened.wait_for()
            assert tab.shown() == [linkedid], user
            assert linkedid in opened.locator("table.facts code").inner_text()
        else:
            assert tab.shown() == [] and tab.page.locator("#calls tr.details").count() == 0


def test_an_admin_deletes_a_calls_recordings_then_a_whole_call_with_a_reason(open_as, pbx):
    admin = wide(open_as("admin"))
    day = {"from": "2024-10-27", "to": "2024-10-27"}
    calls = admin.api(**day)
    shown = first_rows(calls)
    recorded = [c for c in calls if c["linkedid"] in shown and EXTENSION not in c["employees"]
                and c["recordings"] and all(recording_file(pbx, c, n).is_file()
                                            for n in range(1, len(c["recordings"]) + 1))]
    keep, drop = recorded[:2]
    admin.open(**day)
    modal = admin.page.locator(".delete-confirm")

    # The recordings of one call: an empty reason is refused and nothing goes.
    details = admin.expand(keep["linkedid"])
    details.locator(".delete-recordings").click()
    expect(modal).to_be_visible()
    assert modal.locator(".header").inner_text() == "Delete the recordings of this call?"
    assert background(modal.locator("#delete-reason")) == "rgb(255, 255, 255)"   # not red yet
    assert "removed from the PBX for good" in modal.locator(".what").inner_text()
    modal.locator(".confirm").click()
    error = modal.locator(".error")
    expect(error).to_be_visible()
    assert "reason" in error.inner_text()
    assert recording_file(pbx, keep).is_file()
    assert admin.call(keep["linkedid"])["call"]["recordings"] == keep["recordings"]
    screenshot(admin, f"delete-confirm-{WIDTH}-en.png")
    modal.locator("#delete-reason").fill("The client asked (GDPR)")
    modal.locator(".confirm").click()
    expect(modal).to_be_hidden()
    note = details.locator(".deleted-note")
    expect(note).to_have_count(1)
    assert "Recordings deleted: admin" in note.inner_text()
    assert note.inner_text().endswith("— The client asked (GDPR)")
    assert details.locator(".delete-recordings, audio").count() == 0
    assert row_of(admin, keep["linkedid"]).locator("button.play").count() == 0
    assert not recording_file(pbx, keep).exists()
    assert admin.call(keep["linkedid"])["call"]["recordings"] == []

    # A whole call: its row goes, and stays gone after a reload; its recordings too.
    details = admin.expand(drop["linkedid"])
    details.locator(".delete-call").click()
    expect(modal).to_be_visible()
    assert modal.locator(".header").inner_text() == "Delete this call from the history?"
    assert modal.locator("#delete-reason").input_value() == ""      # not the last reason
    expect(modal.locator(".error")).to_be_hidden()
    modal.locator("#delete-reason").fill("A test call")
    modal.locator(".confirm").click()
    expect(modal).to_be_hidden()
    expect(row_of(admin, drop["linkedid"])).to_have_count(0)
    assert admin.page.locator("#calls tr.details").count() == 1      # the first call's
    assert details_of(admin, keep["linkedid"]).count() == 1
    assert not recording_file(pbx, drop).exists()
    admin.page.reload()
    assert drop["linkedid"] not in admin.shown() and keep["linkedid"] in admin.shown()
    shows_what_the_api_gives(admin, **day)
    assert admin.count("all") == len(calls) - 1
    assert admin.context.request.get(admin.url(f"api/v1/calls/{drop['linkedid']}")).status \
        == 404


def test_the_recordings_of_a_filter_go_after_the_admin_sees_how_many(open_as, pbx):
    admin = open_as("admin")
    day = {"from": "2024-10-25", "to": "2024-10-25", "tab": "incoming"}
    recorded = admin.api(**day, recording="yes")
    files = [recording_file(pbx, c, n) for c in recorded
             for n in range(1, len(c["recordings"]) + 1)]
    assert len(recorded) > 1 and any(f.is_file() for f in files)
    present = sum(f.is_file() for f in files)
    elsewhere = admin.api(**{**day, "from": "2024-10-26", "to": "2024-10-26"}, recording="yes")
    admin.open(**day)
    admin.page.click(".toolbar .delete-filter-recordings")
    modal = admin.page.locator(".delete-confirm")
    expect(modal).to_be_visible()
    assert modal.locator(".header").inner_text() == "Delete the recordings of this filter?"
    assert modal.locator(".what").inner_text().startswith(
        f"Calls of this filter with recordings: {len(recorded)}.")
    assert admin.api(**day, recording="yes") == recorded          # nothing gone before yes
    modal.locator("#delete-reason").fill("Kept 30 days only")
    modal.locator(".confirm").click()
    expect(modal).to_be_hidden()
    result = admin.page.locator(".action-result")
    expect(result).to_be_visible()
    assert result.inner_text() == f"Deleted: {len(recorded)} calls, {present} files."
    assert admin.api(**day, recording="yes") == []
    assert not any(f.exists() for f in files)
    assert admin.api(**{**day, "from": "2024-10-26", "to": "2024-10-26"},
                     recording="yes") == elsewhere
    # Nothing left: the button says so instead of asking.
    admin.page.reload()
    admin.page.click(".toolbar .delete-filter-recordings")
    expect(result).to_have_text("No call of this filter has a recording.")
    assert modal.is_hidden()


def test_the_recording_and_talk_filters_show_the_apis_calls(open_as):
    admin = open_as("admin").open(**PERIOD)
    pick(admin.page.locator("#filters .ui.dropdown.recording"), "yes")
    apply_filters(admin)
    assert admin.query() == {**PERIOD, "recording": "yes"}
    calls = shows_what_the_api_gives(admin, **PERIOD, recording="yes")
    assert calls and all(c["recordings"] for c in calls)
    plays = admin.page.locator("#calls tr.call td.record button.play")
    assert plays.count() == len(admin.shown())

    pick(admin.page.locator("#filters .ui.dropdown.recording"), "no")
    admin.page.fill('#filters input[name="max_talk"]', "30")
    apply_filters(admin)
    assert admin.query() == {**PERIOD, "recording": "no", "max_talk": "30"}
    calls = shows_what_the_api_gives(admin, **PERIOD, recording="no", max_talk="30")
    assert calls and not any(c["recordings"] or c["talk_s"] > 30 for c in calls)
    assert plays.count() == 0
    assert admin.page.locator('#filters input[name="max_talk"]').input_value() == "30"

    admin.page.locator("#filters .ui.dropdown.recording .remove.icon").click()
    apply_filters(admin)
    assert admin.query() == {**PERIOD, "max_talk": "30"}
    calls = shows_what_the_api_gives(admin, **PERIOD, max_talk="30")
    assert any(c["recordings"] for c in calls) and all(c["talk_s"] <= 30 for c in calls)
