"""Working with calls over real HTTP (waitress, the admin shell's headers): comments with their
audit trail, tags from an admin's list, the filters they add, and deleting recordings or whole
calls — role-checked, CSRF-checked, readable 4xx for bad input with nothing changed, and kept
as they are by a resync of the whole history."""
import hashlib
import hmac
import json
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

import pytest

from cli import main
from mirror.database import open_module_db
from mirror.hangups import CallHangup
from mirror.settings import load
from mirror.store import Store
from tests.mirror import mirrored_demo
from tests.stack import serving
from web import create_app

TOKEN = "proxy-secret"
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}
WRITTEN_AS = "/storage/usbdisk1/mikopbx/astspool/monitor"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    """A small demo PBX of its own and its mirror (these tests change both)."""
    out = tmp_path_factory.mktemp("actions-pbx")
    return out, mirrored_demo(out, 400, seed=19)


def sync(out, db) -> None:
    assert main(["sync", "--cdr-db", str(out / "cdr.db"), "--pbx-db", str(out / "mikopbx.db"),
                 "--db", str(db), "--once"]) == 0


def resync(out, db) -> None:
    """Read the PBX's whole history again (as after a restored backup)."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE sync_state SET value = '0' WHERE key = 'cursor'")
    sync(out, db)


@pytest.fixture(scope="module")
def server(pbx, tmp_path_factory):
    out, db = pbx
    config = tmp_path_factory.mktemp("web") / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    app = create_app(load(config, {"module.db": db, "pbx.recordings_root": out / "monitor"}))
    with serving(app, threads=4) as http:
        yield f"http://127.0.0.1:{http.effective_port}{PREFIX}"


def csrf(user: str) -> str:
    """The token the page gives `user` (checked against the page in test_the_page_token)."""
    key = hashlib.sha256(f"extcdr:{TOKEN}".encode()).digest()
    return hmac.new(key, f"csrf:{user}".encode(), hashlib.sha256).hexdigest()


def call_api(base, method, path, body=None, params=None, *, user="anna", role="admin",
             extensions="", token=True, language=""):
    url = f"{base}/api/v1{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    headers = {"X-Extcdr-User": user, "X-Extcdr-Role": role, "X-Extcdr-Extensions": extensions,
               "X-Extcdr-Proxy-Token": TOKEN, "Content-Type": "application/json",
               "X-Extcdr-Language": language}
    if token:
        headers["X-CSRF-Token"] = csrf(user)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def calls(base, **params):
    status, body = call_api(base, "GET", "/calls", params={**PERIOD, "limit": 500, **params})
    assert status == 200, body
    return body["calls"]


def operator_call(base):
    """A call of an employee, and that employee's extension."""
    call = next(c for c in calls(base, direction="internal") if len(c["employees"]) == 2)
    return call, call["employees"][0]


def test_the_page_token(server):
    request = urllib.request.Request(f"{server}/?{urllib.parse.urlencode(PERIOD)}", headers={
        "X-Extcdr-User": "olga", "X-Extcdr-Role": "operator", "X-Extcdr-Extensions": "201",
        "X-Extcdr-Proxy-Token": TOKEN})
    with urllib.request.urlopen(request) as reply:
        assert f'<meta name="csrf-token" content="{csrf("olga")}">' in reply.read().decode()


def test_comments_are_kept_with_author_and_every_change_audited(server):
    call, ext = operator_call(server)
    path = f"/calls/{call['linkedid']}/comments"
    status, body = call_api(server, "POST", path, {"text": "  Клиент  просит\nсчёт  "},
                            user="olga", role="operator", extensions=ext)
    assert status == 201 and body["comment"]["text"] == "Клиент просит счёт"
    assert body["comment"]["author"] == "olga"
    comment_id = body["comment"]["id"]
    status, body = call_api(server, "POST", path, {"text": "second"}, user="anna")
    assert status == 201

    # Another operator may change neither; the author and an admin may.
    status, body = call_api(server, "PATCH", f"{path}/{comment_id}", {"text": "mine now"},
                            user="ivan", role="operator", extensions=ext)
    assert status == 403 and "author" in body["error"]
    status, body = call_api(server, "PATCH", f"{path}/{comment_id}", {"text": "Клиент ждёт счёт"},
                            user="olga", role="operator", extensions=ext)
    assert status == 200 and body["comment"]["edited"]
    status, _ = call_api(server, "DELETE", f"{path}/{comment_id}", user="anna")
    assert status == 200

    status, body = call_api(server, "GET", path, user="olga", role="operator", extensions=ext)
    assert [c["text"] for c in body["comments"]] == ["second"]
    status, body = call_api(server, "GET", f"{path}/history")
    assert [(h["actor"], h["action"], h["old"], h["new"]) for h in body["history"]] == [
        ("olga", "added", None, "Клиент просит счёт"), ("anna", "added", None, "second"),
        ("olga", "edited", "Клиент просит счёт", "Клиент ждёт счёт"),
        ("anna", "deleted", "Клиент ждёт счёт", None)]


def test_bad_comments_are_refused_readably_and_change_nothing(server):
    call, ext = operator_call(server)
    path = f"/calls/{call['linkedid']}/comments"
    before = call_api(server, "GET", path)[1]["comments"]
    for text, words in (("x" * 201, "at most 200"), ("   ", "empty"), ({"a": 1}, "as text")):
        status, body = call_api(server, "POST", path, {"text": text})
        assert status == 400 and words in body["error"]
    status, body = call_api(server, "POST", path, {"text": "forged"}, token=False)
    assert status == 403 and "CSRF" in body["error"]
    status, body = call_api(server, "POST", path, {"text": "x" * 201}, language="ru")
    assert status == 400 and body["error"] == "в комментарии не больше 200 символов, а в этом 201"
    status, _ = call_api(server, "POST", "/calls/mikopbx-1.1/comments", {"text": "nowhere"})
    assert status == 404
    assert call_api(server, "GET", path)[1]["comments"] == before


def test_an_operator_neither_reads_nor_changes_notes_of_calls_outside_their_scope(server):
    call, _ = operator_call(server)
    linkedid = call["linkedid"]
    status, body = call_api(server, "POST", f"/calls/{linkedid}/comments", {"text": "secret"})
    comment_id = body["comment"]["id"]
    stranger = dict(user="eve", role="operator", extensions="999")
    for method, path, body in (
            ("GET", f"/calls/{linkedid}/comments", None),
            ("POST", f"/calls/{linkedid}/comments", {"text": "hi"}),
            ("PATCH", f"/calls/{linkedid}/comments/{comment_id}", {"text": "changed"}),
            ("DELETE", f"/calls/{linkedid}/comments/{comment_id}", None),
            ("GET", f"/calls/{linkedid}/comments/history", None),
            ("GET", f"/calls/{linkedid}/tags", None),
            ("PUT", f"/calls/{linkedid}/tags", {"tags": []})):
        status, _ = call_api(server, method, path, body, **stranger)
        assert status == 404, (method, path)
    texts = [c["text"] for c in call_api(server, "GET", f"/calls/{linkedid}/comments")[1]["comments"]]
    assert "secret" in texts and "hi" not in texts
    # Nor finds the call by the comment's words.
    assert not calls(server, comment="secret") or all(
        c["linkedid"] != linkedid for c in calls_as(server, stranger, comment="secret"))


def calls_as(base, who, **params):
    status, body = call_api(base, "GET", "/calls", params={**PERIOD, "limit": 500, **params}, **who)
    assert status == 200
    return body["calls"]


def test_the_comment_filter_finds_words_in_any_case(server):
    call, _ = operator_call(server)
    call_api(server, "POST", f"/calls/{call['linkedid']}/comments", {"text": "Жалоба на ДОСТАВКУ"})
    found = calls(server, comment="доставку")
    assert [c["linkedid"] for c in found] == [call["linkedid"]]
    assert calls(server, comment="nothing like this") == []


def test_tags_an_admin_manages_and_anyone_who_sees_the_call_sets(server):
    status, body = call_api(server, "POST", "/tags", {"name": "Sales", "colour": "green"},
                            user="olga", role="operator", extensions="201")
    assert status == 403 and "admin" in body["error"]
    for name, colour, words in (("<b>x</b>", "red", "plain text"), ("", "red", "name"),
                                ("ok", "rainbow", "unknown colour"), ("a,b", "red", "comma"),
                                ("x" * 41, "red", "at most 40")):
        status, body = call_api(server, "POST", "/tags", {"name": name, "colour": colour})
        assert status == 400 and words in body["error"], body
    sales = call_api(server, "POST", "/tags", {"name": "Sales", "colour": "green"})[1]["tag"]
    call_api(server, "POST", "/tags", {"name": "Жалоба", "colour": "red"})
    status, body = call_api(server, "POST", "/tags", {"name": "sales", "colour": "blue"})
    assert status == 409 or (status == 400 and "exists" in body["error"])

    call, ext = operator_call(server)
    other = next(c for c in calls(server) if c["linkedid"] != call["linkedid"])
    me = dict(user="olga", role="operator", extensions=ext)
    status, body = call_api(server, "PUT", f"/calls/{call['linkedid']}/tags",
                            {"tags": ["sales", "ЖАЛОБА"]}, **me)
    assert status == 200 and [t["name"] for t in body["tags"]] == ["Sales", "Жалоба"]
    call_api(server, "POST", f"/calls/{other['linkedid']}/tags", {"tag": "Sales"})
    status, body = call_api(server, "PUT", f"/calls/{call['linkedid']}/tags",
                            {"tags": ["Sales", "VIP"]}, **me)
    assert status == 400 and "unknown tag 'VIP'" in body["error"]
    assert [t["name"] for t in call_api(server, "GET", f"/calls/{call['linkedid']}/tags")[1]
            ["tags"]] == ["Sales", "Жалоба"]            # unchanged

    assert {c["linkedid"] for c in calls(server, tag="Sales")} == {call["linkedid"],
                                                                    other["linkedid"]}
    assert [c["linkedid"] for c in calls(server, tag="Sales,Жалоба", tag_mode="all")] == [
        call["linkedid"]]
    status, body = call_api(server, "GET", "/calls", params={**PERIOD, "tag": "VIP"})
    assert status == 400 and "unknown tag" in body["error"]

    # The page's tag counts (asked once it is shown), of the calls each user may see.
    counts = json.loads(page_html(server, "/tag-counts", params=PERIOD))["html"]
    assert re.search(r'data-tag="Sales"[^>]*>Sales<span class="detail">2</span>', counts)
    assert re.search(r'data-tag="Жалоба"[^>]*>Жалоба<span class="detail">1</span>', counts)
    mine = json.loads(page_html(server, "/tag-counts", params=PERIOD, user="olga",
                                role="operator", extensions=ext))["html"]
    assert re.search(r'data-tag="Sales"[^>]*>Sales<span class="detail">\d</span>', mine)
    strangers = json.loads(page_html(server, "/tag-counts", params=PERIOD, user="eve",
                                     role="operator", extensions="999"))["html"]
    assert "tag-count" not in strangers

    call_api(server, "DELETE", f"/tags/{sales['id']}")
    assert [t["name"] for t in call_api(server, "GET", f"/calls/{call['linkedid']}/tags")[1]
            ["tags"]] == ["Жалоба"]


def test_talk_time_range_and_recording_filters(server):
    everything = calls(server)
    ranged = calls(server, min_talk=30, max_talk=120)
    assert ranged and [c["linkedid"] for c in ranged] == [
        c["linkedid"] for c in everything if 30 <= c["talk_s"] <= 120]
    recorded, unrecorded = calls(server, recording="yes"), calls(server, recording="no")
    assert recorded and unrecorded
    assert all(c["recordings"] for c in recorded) and not any(c["recordings"] for c in unrecorded)
    assert len(recorded) + len(unrecorded) == len(everything)
    status, body = call_api(server, "GET", "/calls", params={**PERIOD, "min_talk": 60,
                                                             "max_talk": 10})
    assert status == 400 and "below the minimum" in body["error"]
    status, body = call_api(server, "GET", "/calls", params={**PERIOD, "recording": "maybe"})
    assert status == 400 and "yes or no" in body["error"]


def test_queue_column_and_filter(server):
    queued = [c for c in calls(server) if c["queue"]]
    assert queued and all(c["queue_wait_s"] is not None for c in queued)
    queue = queued[0]["queue"]
    assert [c["linkedid"] for c in calls(server, queue=queue)] == [
        c["linkedid"] for c in queued if c["queue"] == queue]


def recording_file(out, call):
    return out / "monitor" / call["recordings"][0][len(WRITTEN_AS) + 1:]


def with_files(base, out, **params):
    """The calls whose first recording is a file of the PBX's own, oldest first."""
    return [c for c in reversed(calls(base, recording="yes", **params))
            if recording_file(out, c).is_file() and not recording_file(out, c).is_symlink()]


def test_deleting_needs_an_admin_a_reason_and_a_finished_call(server, pbx):
    out, db = pbx
    call = with_files(server, out)[0]
    path = f"/calls/{call['linkedid']}/recordings"
    status, body = call_api(server, "DELETE", path, {"reason": "GDPR"}, user="olga",
                            role="supervisor")
    assert status == 403 and "only an admin" in body["error"]
    status, body = call_api(server, "DELETE", path, {"reason": " "})
    assert status == 400 and "reason" in body["error"]
    status, body = call_api(server, "DELETE", path, {"reason": "GDPR"}, token=False)
    assert status == 403
    assert recording_file(out, call).is_file()

    with sqlite3.connect(db) as conn:           # the daemon shows it in progress again
        conn.execute("INSERT INTO live_call VALUES (?, 0, 'incoming', 'talking', 0, '1', '', "
                     "'2', '', NULL, NULL, NULL, '[]', '[]', '')", (call["linkedid"],))
    try:
        status, body = call_api(server, "DELETE", path, {"reason": "GDPR"})
        assert status == 409 and "in progress" in body["error"]
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM live_call WHERE linkedid = ?", (call["linkedid"],))
    assert recording_file(out, call).is_file()


def test_a_recording_outside_the_root_refuses_the_deletion(server, pbx, tmp_path):
    out, db = pbx
    call = with_files(server, out)[-1]
    target = recording_file(out, call)
    outside = tmp_path / "elsewhere.mp3"
    outside.write_bytes(b"keep me")
    target.unlink()
    target.symlink_to(outside)
    status, body = call_api(server, "DELETE", f"/calls/{call['linkedid']}/recordings",
                            {"reason": "GDPR"})
    assert status == 403 and "outside the recordings folder" in body["error"]
    assert outside.read_bytes() == b"keep me" and target.is_symlink()
    assert calls(server, number=f"linkedid:{call['linkedid']}")[0]["recordings"]


def test_deleted_recordings_and_calls_stay_deleted_through_a_resync(server, pbx):
    out, db = pbx
    recorded = with_files(server, out)
    keep_call, drop_call = recorded[0], recorded[1]
    linkedid = keep_call["linkedid"]
    call_api(server, "POST", f"/calls/{linkedid}/comments", {"text": "kept through resync"})
    status, body = call_api(server, "DELETE", f"/calls/{linkedid}/recordings",
                            {"reason": "client asked (GDPR)"})
    assert status == 200 and body["deleted"] == {"calls": 1, "files": 1}
    assert not recording_file(out, keep_call).exists()
    status, body = call_api(server, "DELETE", f"/calls/{drop_call['linkedid']}",
                            {"reason": "test call"})
    assert status == 200 and body["deleted"]["calls"] == 1
    assert not recording_file(out, drop_call).exists()

    for attempt in range(2):
        found = {c["linkedid"]: c for c in calls(server)}
        assert drop_call["linkedid"] not in found
        assert found[linkedid]["recordings"] == []
        status, body = call_api(server, "GET", f"/calls/{linkedid}")
        assert all(leg["recordingfile"] == "" for leg in body["legs"])
        assert [c["text"] for c in call_api(server, "GET", f"/calls/{linkedid}/comments")[1]
                ["comments"]] == ["kept through resync"]
        status, _ = call_api(server, "GET", f"/calls/{drop_call['linkedid']}")
        assert status == 404
        if attempt == 0:
            resync(out, db)
    with sqlite3.connect(db) as conn:
        audit = conn.execute("SELECT linkedid, what, actor, reason FROM deletion "
                             "ORDER BY id").fetchall()
    assert (linkedid, "recordings", "anna", "client asked (GDPR)") in audit
    assert (drop_call["linkedid"], "call", "anna", "test call") in audit


def test_the_recordings_of_a_filter_go_after_the_count_is_confirmed(server, pbx):
    out, _ = pbx
    day = {"from": "2024-10-25", "to": "2024-10-25"}
    status, body = call_api(server, "GET", "/recordings/count", params=day)
    count = body["calls"]
    assert status == 200 and count > 1
    files = [recording_file(out, c) for c in calls(server, **day, recording="yes")]
    status, body = call_api(server, "POST", "/recordings/delete",
                            {"reason": "retention", "expected": count - 1}, params=day)
    assert status == 400 and f"{count:,} calls" in body["error"]
    assert calls(server, **day, recording="yes")
    status, body = call_api(server, "GET", "/recordings/count", params=day, user="olga",
                            role="operator", extensions="201")
    assert status == 403
    status, body = call_api(server, "POST", "/recordings/delete",
                            {"reason": "retention", "expected": count}, params=day)
    assert status == 200 and body["deleted"]["calls"] == count
    assert calls(server, **day, recording="yes") == []
    assert not any(f.exists() for f in files)
    assert calls(server, **{"from": "2024-10-26", "to": "2024-10-26"}, recording="yes")


def test_who_hung_up_is_shown_and_filtered_and_unknown_is_never_guessed(server, pbx):
    """Rows written as the daemon writes what it saw on AMI (Store.record_hangups)."""
    _, db = pbx
    first, second, third = calls(server)[:3]
    database = open_module_db(db)
    try:
        store = Store(database)
        with store.batch():
            store.record_hangups([
                CallHangup(first["linkedid"], "caller", "PJSIP/201-1", "201", 16,
                           "Normal Clearing", first_ms(first)),
                CallHangup(second["linkedid"], "callee", "PJSIP/202-2", "202", 17, "User busy",
                           first_ms(second))])
    finally:
        database.close()
    found = {c["linkedid"]: c for c in calls(server)}
    assert found[first["linkedid"]]["hangup"] == {"side": "caller", "number": "201",
                                                  "cause": 16, "cause_txt": "Normal Clearing"}
    assert found[third["linkedid"]]["hangup"] is None
    assert [c["linkedid"] for c in calls(server, hangup="caller")] == [first["linkedid"]]
    assert [c["linkedid"] for c in calls(server, hangup="caller,callee")] == [
        first["linkedid"], second["linkedid"]]
    unknown = calls(server, hangup="unknown")
    assert len(unknown) == len(found) - 2 and third["linkedid"] in {c["linkedid"] for c in unknown}
    status, body = call_api(server, "GET", "/calls", params={**PERIOD, "hangup": "somebody"})
    assert status == 400 and "unknown hangup" in body["error"]

    page = page_html(server, f"/calls/{second['linkedid']}/details", language="ru")
    assert "положил вызываемый (Абонент занят)" in page
    page = page_html(server, f"/calls/{third['linkedid']}/details")
    assert '<td class="hangup">unknown</td>' in page
    rows = page_html(server, "/", params={**PERIOD, "hangup": "caller"})
    assert 'class="hangup caller orange phone slash icon" title="caller hung up (Normal clearing)"' \
        in rows


def first_ms(call) -> int:
    return int(datetime.fromisoformat(call["end"]).timestamp() * 1000)


def page_html(base, path, params=None, language="en", user="anna", role="admin",
              extensions=""):
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    request = urllib.request.Request(url, headers={
        "X-Extcdr-User": user, "X-Extcdr-Role": role, "X-Extcdr-Extensions": extensions,
        "X-Extcdr-Proxy-Token": TOKEN, "X-Extcdr-Language": language})
    with urllib.request.urlopen(request) as reply:
        return reply.read().decode()


def test_open_pages_are_told_when_notes_change(server):
    """Another open page (its `updates` ask) gets the row again with the new comment and tag."""
    call, _ = operator_call(server)
    day = call["start"][:10]
    params = {"from": day, "to": day}

    def updates(since):
        return json.loads(page_html(server, "/updates", params={**params, "since": since}))

    revision = updates(10**12)["revision"]                 # a page of now
    call_api(server, "POST", f"/calls/{call['linkedid']}/comments", {"text": "Seen in tab 2"})
    update = updates(revision)
    assert update["revision"] > revision
    [row] = [c for c in update["calls"] if c["linkedid"] == call["linkedid"]]
    assert "Seen in tab 2" in row["html"]
    assert updates(update["revision"])["calls"] == []       # nothing more since
