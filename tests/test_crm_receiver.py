"""The demo's stand-in CRM (`extcdr crm-receiver`) over real HTTP: signed deliveries verify and
are listed, tampered or replayed ones are refused with 401, the page escapes what callers
named themselves, SIGTERM stops it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from mirror import webhooks
from standin.crm_receiver import DeliveryLog, make_server
from tests.conftest import ROOT

SECRET = "s3cret"


def payload(linkedid="1700000000.42", src_name="Anna", event="missed") -> bytes:
    return json.dumps({"event": event, "hook_id": 1, "idempotency_key": f"1:{event}:{linkedid}",
                       "call": {"linkedid": linkedid, "src": "+74951234567",
                                "src_name": src_name, "dst": "201", "dst_name": None},
                       "legs": []}).encode()


@pytest.fixture
def crm(tmp_path):
    log = DeliveryLog(tmp_path / "crm")
    server = make_server("127.0.0.1", 0, SECRET, log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", log
    server.shutdown()
    server.server_close()


def deliver(url: str, body: bytes, *, secret=SECRET, signed_at=None, sent=None):
    """POST as the daemon's sender does: (status, answer)."""
    headers = webhooks.delivery_headers(secret, "1:missed:1700000000.42", "missed", body,
                                        time.time() if signed_at is None else signed_at)
    request = urllib.request.Request(url, data=body if sent is None else sent, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/html")
        return answer.read().decode()


def test_a_signed_delivery_verifies_and_is_listed(crm):
    url, log = crm
    assert deliver(url, payload()) == (200, {"ok": True, "repeat": False})
    assert deliver(url, payload()) == (200, {"ok": True, "repeat": True})   # at-least-once
    [entry, _] = log.newest()
    assert entry["verified"] and entry["event"] == "missed"
    assert entry["linkedid"] == "1700000000.42"
    assert entry["caller"] == "+74951234567 (Anna)" and entry["callee"] == "201"
    assert entry["idempotency_key"] == "1:missed:1700000000.42"
    text = page(url)
    assert "1700000000.42" in text and "yes (repeat)" in text and "+74951234567 (Anna)" in text


def test_tampered_replayed_or_wrongly_keyed_deliveries_are_refused(crm):
    url, log = crm
    body = payload()
    assert deliver(url, body, sent=body.replace(b"Anna", b"Eve!"))[0] == 401
    assert deliver(url, body, signed_at=time.time() - webhooks.REPLAY_WINDOW_S - 60)[0] == 401
    assert deliver(url, body, secret="another hook's")[0] == 401
    unsigned = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=5)
    assert refused.value.code == 401
    assert [entry["verified"] for entry in log.newest()] == [False] * 4
    assert page(url).count("<td>NO</td>") == 4


def test_a_replay_with_other_unsigned_headers_is_still_the_same_delivery(crm):
    """The headers a replay can change (they are not signed) do not make it another event."""
    url, log = crm
    body = payload()
    assert deliver(url, body) == (200, {"ok": True, "repeat": False})
    headers = {**webhooks.delivery_headers(SECRET, "1:missed:1700000000.42", "missed", body,
                                           time.time()),
               webhooks.KEY_HEADER: "1:answered:9.9", webhooks.EVENT_HEADER: "answered"}
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.loads(answer.read()) == {"ok": True, "repeat": True}
    [replayed, _] = log.newest()
    assert replayed["event"] == "missed"
    assert replayed["idempotency_key"] == "1:missed:1700000000.42"


def test_the_page_lists_newest_first_and_escapes_markup(crm):
    url, _ = crm
    deliver(url, payload(linkedid="1.1"))
    deliver(url, payload(linkedid="2.2", src_name="<script>alert(1)</script>", event="answered"))
    text = page(url)
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.index("2.2") < text.index("1.1")


def test_the_command_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "standin", "crm-receiver", "--listen",
                             "127.0.0.1:0", "--secret", SECRET, "--out", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "CRM receiver listening on http://127.0.0.1:" in line
        url = line.split()[4].rstrip(",")
        assert deliver(url, payload())[0] == 200
        assert (tmp_path / "deliveries.jsonl").read_text().count("\n") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
