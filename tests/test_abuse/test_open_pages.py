"""Live updates through real nginx and its nchan module: the web process publishes the
history's revision, every open page subscribes behind the same access check as the pages and
asks `updates` what changed for its filter and user. No thread of the app waits for a page."""
import http.client
import http.server
import json
import logging
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from mirror.database import open_module_db
from mirror.queries import mirror_revision
from mirror.settings import load
from pbxmodule.nginx import CHECK_CACHE_S, CHECK_URL
from standin.cli import main
from tests.conftest import wait_for
from tests.mirror import append_rows, pbx_rows
from tests.stack import PREFIX, TOKEN, admin_shell, free_port
from tests.webclient import Browser
from web.changes import ChangePublisher

PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}
APP_THREADS = 4


@pytest.fixture(scope="module")
def site(demo_pbx, tmp_path_factory):
    root = tmp_path_factory.mktemp("live-updates")
    pbx = root / "pbx"
    shutil.copytree(demo_pbx, pbx)
    sync(pbx, root / "module.db")
    with admin_shell(root / "module.db", pbx / "monitor", root / "nginx",
                     app_threads=APP_THREADS) as stack:
        yield {**stack, "pbx": pbx, "db": root / "module.db"}


def sync(pbx, db):
    assert main(["sync", "--cdr-db", str(pbx / "cdr.db"), "--pbx-db", str(pbx / "mikopbx.db"),
                 "--db", str(db), "--once"]) == 0


def user(site, name: str) -> Browser:
    browser = Browser(site["base"])
    assert browser.login(name, name)[0] == 302
    return browser


class Subscription:
    """An open page's subscription to "calls changed": the data of the messages it got."""

    def __init__(self, browser: Browser):
        self.messages: list[str] = []
        address = urllib.parse.urlsplit(browser.base)
        self.connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        cookies = "; ".join(f"{c.name}={c.value}" for c in browser.jar)
        self.connection.request("GET", PREFIX + "changes", headers={
            "Accept": "text/event-stream", "Cookie": cookies})   # as EventSource asks
        self.stream = self.connection.getresponse()
        self.status = self.stream.status
        if self.status == 200:
            assert self.stream.headers["Content-Type"].startswith("text/event-stream")
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.stream:
                if line.startswith(b"data: "):
                    self.messages.append(line[6:].decode().strip())
        except (OSError, AttributeError, ValueError):
            pass                                     # closed by the test

    def close(self):
        """As a browser leaving the page: the connection goes (the reader's wait ends)."""
        if self.connection.sock is not None:
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()


def page(browser: Browser, **params) -> str:
    status, _, body = browser.request(PREFIX + "?" + urllib.parse.urlencode(params))
    assert status == 200, body[:300]
    return body


def updates(browser: Browser, since, **params) -> dict:
    status, _, body = browser.request(PREFIX + "updates?" + urllib.parse.urlencode(
        {**PERIOD, **params, "since": since}))
    assert status == 200, body[:300]
    return json.loads(body)


def revision_of(body: str) -> int:
    return int(re.search(r'data-revision="(\d+)"', body).group(1))


def new_call(site, linkedid: str, src: str, dst: str, start: str = "2024-10-28 10:00:00") -> None:
    cols, rows = pbx_rows(site["pbx"] / "cdr.db")
    last = dict(zip(cols, rows[-1]))
    end = start[:-2] + "59"
    row = {**last, "start": f"{start}.000", "answer": f"{start[:-2]}05.000",
           "endtime": f"{end}.000", "linkedid": linkedid, "UNIQUEID": linkedid + "1",
           "src_num": src, "dst_num": dst, "recordingfile": ""}
    append_rows(site["pbx"] / "cdr.db", cols, [tuple(row[c] for c in cols)])
    sync(site["pbx"], site["db"])


def test_not_logged_in_no_subscription_and_nobody_outside_publishes(site):
    anonymous = Browser(site["base"])
    assert anonymous.request(PREFIX + "changes")[0] == 401
    assert anonymous.request(PREFIX + "updates?period=today")[0] == 401
    admin = user(site, "admin")
    listening = Subscription(admin)
    publish = site["base"] + PREFIX + "changes/publish"
    for headers in ({}, {"X-Extcdr-Proxy-Token": "guess"}):
        request = urllib.request.Request(publish, data=b"999999", headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
    # A logged-in user cannot publish either (the session is no publisher's permission).
    status, _, _ = admin.request(PREFIX + "changes/publish", {"x": "1"})
    assert status == 403
    time.sleep(0.5)
    assert "999999" not in listening.messages and "x=1" not in listening.messages
    listening.close()


def test_a_new_call_reaches_open_pages_and_each_asks_only_what_changed(site):
    admin, operator = user(site, "admin"), user(site, "operator201")
    admin_page, operator_page = page(admin, **PERIOD), page(operator, **PERIOD)
    since = revision_of(admin_page)
    before = updates(admin, since)
    assert before["calls"] == [] and before["gone"] == [] and before["revision"] == since
    listening = [Subscription(admin), Subscription(operator)]

    new_call(site, "mikopbx-1730108000.991", "74951110099", "202")     # not operator201's
    assert wait_for(lambda: all(s.messages for s in listening), 10), \
        "nginx tells every open page that calls changed"
    for subscription in listening:
        assert all(m.isdigit() for m in subscription.messages), "no call data in the channel"
    seen = updates(admin, since)
    assert str(seen["revision"]) == listening[0].messages[-1]
    assert [c["linkedid"] for c in seen["calls"]] == ["mikopbx-1730108000.991"]
    assert "74951110099" in seen["calls"][0]["html"]
    assert seen["counts"]["all"] == before["counts"]["all"] + 1
    theirs = updates(operator, revision_of(operator_page))
    assert theirs["calls"] == [] and theirs["gone"] == [], "an operator hears of no other's call"
    assert updates(admin, seen["revision"])["calls"] == [], "asked again: nothing new"

    # The calls in progress come only when they differ from what the page shows.
    assert "now" in updates(admin, since)
    key = re.search(r'id="now" data-key="([^"]+)"', admin_page).group(1)
    assert "now" not in updates(admin, since, now=key)

    # A commit that changes nothing pages show (a saved filter) tells no page.
    told = len(listening[0].messages)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', admin_page).group(1)
    assert admin.request(PREFIX + "filters", {"name": "Quiet", "query": "period=today",
                                              "csrf_token": token})[0] == 302
    time.sleep(1)
    assert len(listening[0].messages) == told
    for subscription in listening:
        subscription.close()


def test_many_open_pages_hold_no_thread_of_the_app(site):
    """Ten times the app's threads of open pages: the pages still answer, and all hear."""
    admin = user(site, "admin")
    listening = [Subscription(admin) for _ in range(APP_THREADS * 10)]
    started = time.monotonic()
    body = page(admin, **PERIOD)
    assert time.monotonic() - started < 5, "a page answers while pages are open"
    new_call(site, "mikopbx-1730108100.992", "74951110098", "201", "2024-10-28 10:01:00")
    assert wait_for(lambda: all(s.messages for s in listening), 10)
    assert any(c["linkedid"] == "mikopbx-1730108100.992"
               for c in updates(admin, revision_of(body))["calls"])
    for subscription in listening:
        subscription.close()


def test_an_open_pages_asks_share_one_access_check_for_a_while(site):
    """Every open page asks at every new call: nginx keeps the check's answer for those asks
    (CHECK_CACHE_S), per cookie, so 200 open pages do not run the admin cabinet's check 200
    times a call; pages, exports and the API are checked every time, and a logout ends the
    asks once the kept answer expires."""
    admin, operator = user(site, "admin"), user(site, "operator201")
    since = revision_of(page(operator, **PERIOD))
    before = access_checks(site)
    for _ in range(10):
        updates(operator, since)
    updates(admin, since)
    assert access_checks(site) - before == 2, "one check per user for their asks"
    page(operator, **PERIOD)
    page(operator, **PERIOD)
    assert access_checks(site) - before == 4, "each page load is checked"
    new_call(site, "mikopbx-1730108200.993", "74951110097", "202", "2024-10-28 10:02:00")
    assert [c["linkedid"] for c in updates(admin, since)["calls"]][-1:] == \
        ["mikopbx-1730108200.993"]
    assert "mikopbx-1730108200.993" not in [c["linkedid"] for c in updates(operator, since)["calls"]], \
        "a kept answer is its own user's: the operator still sees only their calls"
    assert access_checks(site) - before == 4

    kept = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in operator.jar)}
    _, _, body = operator.request("/logout")
    token = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
    assert operator.request("/logout", {"csrf_token": token})[0] == 302
    replay = Browser(site["base"])                 # the cookie as it was before the logout
    status, _, _ = replay.request(PREFIX + "?" + urllib.parse.urlencode(PERIOD), headers=kept)
    assert status in (302, 401), "a page after the logout is checked at once"
    ask = PREFIX + "updates?" + urllib.parse.urlencode({**PERIOD, "since": since})
    assert operator.request(ask)[0] == 401, "the logged-out browser's own asks end at once"
    deadline = time.monotonic() + CHECK_CACHE_S + 5
    while replay.request(ask, headers=kept)[0] != 401:
        assert time.monotonic() < deadline, "the asks end once the kept answer expires"
        time.sleep(0.5)


def access_checks(site) -> int:
    """How many access checks nginx has made (its access log names each subrequest)."""
    log = site["run_dir"] / "access.log"
    return sum(1 for line in log.read_text().splitlines()
               if line.endswith(f" uri={CHECK_URL}")) if log.exists() else 0


def test_a_page_from_before_a_rebuilt_history_or_a_long_pause_starts_afresh(site):
    admin = user(site, "admin")
    assert updates(admin, 10**9)["reload"] is True
    # Back after more calls were written than a page is told of (the whole history here).
    assert updates(admin, 0)["reload"] is True
    status, _, body = admin.request(PREFIX + "updates?" + urllib.parse.urlencode(
        {**PERIOD, "since": "9" * 30}))
    assert status == 400 and "since" in body


def test_the_proxy_token_is_what_nginx_publishes_with(site):
    """The stack's nginx was given TOKEN: a publish with it (from this machine) reaches pages."""
    admin = user(site, "admin")
    listening = Subscription(admin)
    request = urllib.request.Request(site["base"] + PREFIX + "changes/publish", data=b"77",
                                     headers={"X-Extcdr-Proxy-Token": TOKEN}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status in (201, 202)
    assert wait_for(lambda: "77" in listening.messages, 5)
    listening.close()


def test_a_publisher_without_nginx_says_so_once_and_publishes_when_nginx_is_back(site, caplog):
    """nginx down (a reload, a restart): one warning, no retry storm, and the revision goes out
    as soon as a publisher location answers again."""
    port = free_port()
    settings = load(None, {"module.db": site["db"],
                           "web.publish_url": f"http://127.0.0.1:{port}/changes/publish"})
    db = open_module_db(site["db"], readonly=True)
    publisher = ChangePublisher(db, settings)
    received: list[bytes] = []

    class Publisher(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    with caplog.at_level(logging.WARNING, logger="extcdr.web"):
        publisher.start()
        try:
            time.sleep(1.0)
            warnings = [r for r in caplog.records if "cannot tell open pages" in r.message]
            assert len(warnings) == 1, [r.message for r in caplog.records]
            server = http.server.HTTPServer(("127.0.0.1", port), Publisher)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                assert wait_for(lambda: received, 5), "published once nginx answered"
                assert received[0] == str(mirror_revision(db)).encode()
            finally:
                server.shutdown()
                server.server_close()
        finally:
            publisher.stop()
            db.close()
