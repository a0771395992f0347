"""The AMI link against a tiny raw-socket AMI server on 127.0.0.1: every fault it must survive.

`FakeAmi` speaks just enough of the wire protocol (banner, Login, Ping, Logoff, ActionID echo)
and misbehaves on demand, one behaviour per accepted connection. Timeouts and backoffs are
shrunk to tenths of a second; every wait is bounded.
"""
from __future__ import annotations

import base64
import gzip
import json
import logging
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from daemon import ami
from daemon.ami import (AmiLink, Backoff, FrameReader, Headers, cdr_connector_payload,
                        cdr_event_to_row, linkedid_of_event, parse_message)
from pbx.tables import cdr_column_names
from tests.conftest import wait_for

# pyst2's Manager() calls Thread.setDaemon, deprecated since Python 3.10 and harmless.
pytestmark = pytest.mark.filterwarnings("ignore:setDaemon:DeprecationWarning")

BANNER = b"Asterisk Call Manager/5.0.2\r\n"
FAST = dict(connect_timeout=0.3, ping_interval=0.15, ping_timeout=0.15, backoff=(0.02, 0.1))


def event(name: str, **headers) -> bytes:
    lines = [f"Event: {name}"] + [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def cdr_connector(payload: dict, *, gz: bool = False, **headers) -> bytes:
    raw = json.dumps(payload).encode()
    data = "GZ:" + base64.b64encode(gzip.compress(raw)).decode() if gz else \
        base64.b64encode(raw).decode()
    return event("UserEvent", Privilege="user,all", UserEvent="CdrConnector", AgiData=data,
                 **headers)


class FakeAmi:
    """A raw-socket AMI server. Each accepted connection takes the next behaviour of `script`,
    then `mode` once the script is used up:

    normal      banner, Login (secret "pw"), Ping, Logoff answered
    refuse      banner, then every Login refused (and the connection closed, as Asterisk does)
    no_banner   accepts and never sends a byte
    reset       accepts and resets the connection before the banner
    drop        closes the connection right after a successful login
    deaf        logs in, then answers nothing (a stalled Asterisk)
    stray       like normal, but sends an unrelated response before each Pong
    """

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "normal"
        self.script: list[str] = []
        self.accepted = 0
        self.login_times: list[float] = []
        self.logins_ok = 0
        self.pings = 0
        self.actions: list[dict] = []
        self.live: socket.socket | None = None   # the latest logged-in connection
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def push(self, data: bytes) -> None:
        """Send raw bytes on the latest logged-in connection."""
        assert wait_for(lambda: self.live is not None), "nobody logged in"
        self.live.sendall(data)

    def close(self) -> None:
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        except OSError:
            pass
        self.listener.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            mode = self.script.pop(0) if self.script else self.mode
            threading.Thread(target=self._serve, args=(conn, mode), daemon=True).start()

    def _serve(self, conn: socket.socket, mode: str) -> None:
        try:
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if mode != "no_banner":
                conn.sendall(BANNER)
            for action in self._actions(conn):
                if not self._answer(conn, mode, action):
                    break
        except OSError:
            pass
        finally:
            if self.live is conn:
                self.live = None
            conn.close()

    def _actions(self, conn: socket.socket):
        pending = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            *frames, pending = (pending + chunk).split(b"\r\n\r\n")
            for frame in frames:
                yield dict(line.split(": ", 1) for line in frame.decode().split("\r\n"))

    def _answer(self, conn: socket.socket, mode: str, action: dict) -> bool:
        """Reply to one action; False ends the connection."""
        self.actions.append(action)
        action_id = action.get("ActionID", "")
        kind = action.get("Action", "").lower()
        if kind == "login":
            self.login_times.append(time.monotonic())
            if mode == "refuse" or action.get("Secret") != "pw":
                conn.sendall(f"Response: Error\r\nActionID: {action_id}\r\n"
                             "Message: Authentication failed\r\n\r\n".encode())
                return False
            conn.sendall(f"Response: Success\r\nActionID: {action_id}\r\n"
                         "Message: Authentication accepted\r\n\r\n".encode()
                         + event("FullyBooted", Privilege="system,all", Status="Fully Booted"))
            self.logins_ok += 1
            self.live = conn
            return mode != "drop"
        if mode == "deaf":
            return True
        if kind == "ping":
            self.pings += 1
            if mode == "stray":
                conn.sendall(b"Response: Success\r\nActionID: someone-else\r\n\r\n")
            conn.sendall(f"Response: Success\r\nActionID: {action_id}\r\nPing: Pong\r\n"
                         "Timestamp: 1700000000.000000\r\n\r\n".encode())
        elif kind == "logoff":
            conn.sendall(f"Response: Goodbye\r\nActionID: {action_id}\r\n\r\n".encode())
            return False
        return True


class Recorder:
    """Handlers that remember what they got."""

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, headers: dict) -> None:
        self.events.append(headers)

    def named(self, name: str) -> list[dict]:
        return [e for e in self.events if e.get("Event") == name]


@pytest.fixture
def server():
    fake = FakeAmi()
    yield fake
    fake.close()


@pytest.fixture
def make_link():
    """Start links on a FakeAmi; every link is stopped after the test."""
    def make(server: FakeAmi, handlers=None, *, secret="pw", **options) -> AmiLink:
        link = AmiLink("127.0.0.1", server.port, "extcdr", secret, handlers or {},
                       **{**FAST, **options})
        make.links.append(link)
        link.start()
        return link

    make.links = []
    yield make
    for link in make.links:
        link.stop(timeout=1)


def connected_link(make_link, server, names=("Hangup", "UserEvent", "Cdr", "Test")):
    recorder = Recorder()
    link = make_link(server, {name: recorder for name in names})
    assert wait_for(lambda: link.connected)
    return link, recorder


def ami_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "extcdr.ami" and r.levelno >= logging.WARNING]


# --- sessions ----------------------------------------------------------------------------------

def test_logs_in_with_events_on_and_dispatches_events(server, make_link):
    link, recorder = connected_link(make_link, server)
    login = next(a for a in server.actions if a["Action"] == "Login")
    assert login["Username"] == "extcdr" and login["Events"] == "on" and login["ActionID"]
    server.push(event("Hangup", Channel="PJSIP/201-00000001", Uniqueid="1700000000.1",
                      Linkedid="mikopbx-1700000000.1", Cause="16"))
    assert wait_for(lambda: recorder.named("Hangup"))
    hangup = recorder.named("Hangup")[0]
    assert hangup["Linkedid"] == hangup["LinkedID"] == "mikopbx-1700000000.1"
    assert link.stats.events >= 2  # FullyBooted counted though nobody handles it


def test_refused_login_is_logged_once_and_retried_at_the_slowest_pace(server, make_link,
                                                                      caplog):
    server.mode = "refuse"
    link = make_link(server, backoff=(0.02, 0.25))
    assert wait_for(lambda: len(server.login_times) >= 3, timeout=3)
    gaps = [b - a for a, b in zip(server.login_times, server.login_times[1:])]
    assert all(gap >= 0.25 * (1 - ami._JITTER) - 0.01 for gap in gaps), gaps
    refusals = [m for m in ami_warnings(caplog) if "refused" in m]
    assert len(refusals) == 1 and "'extcdr'" in refusals[0] and "pw" not in refusals[0]
    assert not link.connected
    server.mode = "normal"
    assert wait_for(lambda: link.connected, timeout=2)


def test_keepalive_pings_a_silent_peer_and_keeps_the_session(server, make_link):
    link, _ = connected_link(make_link, server)
    assert wait_for(lambda: server.pings >= 3, timeout=2)
    assert server.accepted == 1 and link.connected and link.stats.reconnects == 0


def test_responses_are_matched_by_action_id(server, make_link):
    server.mode = "stray"
    link, _ = connected_link(make_link, server)
    assert wait_for(lambda: server.pings >= 3, timeout=2)
    assert server.accepted == 1 and link.connected


def test_unanswered_ping_means_dead_and_the_link_reconnects(server, make_link, caplog):
    server.script = ["deaf"]
    link, recorder = connected_link(make_link, server)
    assert wait_for(lambda: server.logins_ok >= 2 and link.connected, timeout=3)
    assert link.stats.reconnects == 1
    assert any("no answer to Ping" in m for m in ami_warnings(caplog))
    server.push(event("Test", N="after"))
    assert wait_for(lambda: recorder.named("Test"))


def test_peer_drop_reconnects_and_events_flow_again(server, make_link):
    server.script = ["drop"]
    link, recorder = connected_link(make_link, server)
    assert wait_for(lambda: server.logins_ok >= 2 and link.connected, timeout=3)
    server.push(event("Test", N="1"))
    assert wait_for(lambda: recorder.named("Test"))
    assert link.stats.reconnects == 1


def test_a_peer_that_never_sends_a_banner_is_given_up_on(server, make_link, caplog):
    server.mode = "no_banner"
    link = make_link(server, connect_timeout=0.1)
    assert wait_for(lambda: server.accepted >= 3, timeout=3)
    assert not link.connected
    assert [m for m in ami_warnings(caplog) if "unavailable" in m] == [
        f"AMI 127.0.0.1:{server.port} unavailable (no AMI banner within 0.1 s); retrying, "
        "backing off up to 0.1 s"]
    server.mode = "normal"
    assert wait_for(lambda: link.connected, timeout=2)


def test_a_reset_before_the_banner_is_retried(server, make_link, caplog):
    server.mode = "reset"
    link = make_link(server)
    assert wait_for(lambda: server.accepted >= 4, timeout=3)
    unavailable = [m for m in ami_warnings(caplog) if "unavailable" in m]
    assert len(unavailable) == 1 and "Connection reset by peer" in unavailable[0]
    server.mode = "normal"
    assert wait_for(lambda: link.connected, timeout=2)


def test_a_refused_connection_is_logged_once_and_retried(caplog):
    caplog.set_level(logging.DEBUG, "extcdr.ami")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = AmiLink("127.0.0.1", port, "extcdr", "pw", {}, **FAST)
    link.start()
    try:
        time.sleep(0.3)
        assert not link.connected
        attempts = [r for r in caplog.records if "Connection refused" in r.getMessage()]
        assert len(attempts) >= 3
        assert [r.levelname for r in attempts].count("WARNING") == 1
    finally:
        started = time.monotonic()
        link.stop(timeout=1)
        assert time.monotonic() - started < 0.5


def test_stop_returns_fast_while_the_peer_stalls(server, make_link):
    server.mode = "deaf"
    link = make_link(server, ping_interval=0.05, ping_timeout=5)
    assert wait_for(lambda: link.connected)
    time.sleep(0.1)  # a Ping is now waiting for an answer that never comes
    started = time.monotonic()
    link.stop(timeout=2)
    assert time.monotonic() - started < 0.5
    assert not link.connected


def test_stop_returns_fast_while_waiting_for_a_banner(server, make_link):
    server.mode = "no_banner"
    link = make_link(server, connect_timeout=5)
    assert wait_for(lambda: server.accepted >= 1)
    started = time.monotonic()
    link.stop(timeout=2)
    assert time.monotonic() - started < 0.5


# --- what arrives on the wire ------------------------------------------------------------------

def test_garbage_bytes_do_not_stop_later_events(server, make_link):
    link, recorder = connected_link(make_link, server)
    server.push(bytes(range(256)) * 10 + b"\r\n\r\n" + b"\xff\xfe: junk\r\nnot a header\r\n\r\n")
    server.push(b"\x00garbage\r\n" + event("Test", N="1"))
    server.push(event("Test", N="2"))
    assert wait_for(lambda: len(recorder.named("Test")) == 2)
    assert [e["N"] for e in recorder.named("Test")] == ["1", "2"]
    assert link.connected and server.accepted == 1


def test_a_1mb_line_is_dropped_with_one_log_line(server, make_link, caplog):
    link, recorder = connected_link(make_link, server)
    for _ in range(2):
        server.push(b"Event: Test\r\nBlob: " + b"x" * 1_000_000 + b"\r\n\r\n")
    server.push(event("Test", N="after"))
    assert wait_for(lambda: recorder.named("Test"))
    assert [e["N"] for e in recorder.named("Test")] == ["after"]
    assert link.stats.oversize_dropped == 2
    assert len([m for m in ami_warnings(caplog) if "longer than" in m]) == 1
    assert link.connected and server.accepted == 1


def test_repeated_chan_variables_become_a_dict(server, make_link):
    _, recorder = connected_link(make_link, server)
    server.push(b"Event: Hangup\r\nChannel: PJSIP/201-00000001\r\nLinkedid: L1\r\n"
                b"ChanVariable: FROM_DID=74951234567\r\nChanVariable: MIKO=a=b\r\n"
                b"ChanVariable: EMPTY=\r\nDestChanVariable: X=1\r\nDestChanVariable: Y=2\r\n"
                b"LocalOneChanVariable: Z=3\r\n\r\n")
    server.push(event("Hangup", Linkedid="L2"))
    assert wait_for(lambda: len(recorder.named("Hangup")) == 2)
    first = recorder.named("Hangup")[0]
    assert first["ChanVariable"] == {"FROM_DID": "74951234567", "MIKO": "a=b", "EMPTY": ""}
    assert first["DestChanVariable"] == {"X": "1", "Y": "2"}
    assert first["LocalOneChanVariable"] == {"Z": "3"}


def test_a_bare_lf_stays_inside_its_value(server, make_link):
    _, recorder = connected_link(make_link, server)
    server.push(b"Event: Test\r\nN: 1\r\nCallerIDName: two\nlines\r\nReportBlock:\r\n\r\n")
    server.push(event("Test", N="2"))
    assert wait_for(lambda: len(recorder.named("Test")) == 2)
    first = recorder.named("Test")[0]
    assert first["CallerIDName"] == "two\nlines" and first["ReportBlock"] == ""


def test_a_raising_handler_is_logged_once_and_later_events_still_arrive(server, make_link,
                                                                        caplog):
    seen = []

    def fragile(headers):
        seen.append(headers["N"])
        if headers["N"] != "ok":
            raise KeyError("boom")

    link = make_link(server, {"Test": fragile})
    assert wait_for(lambda: link.connected)
    for n in ("bad1", "bad2", "ok"):
        server.push(event("Test", N=n))
    assert wait_for(lambda: seen == ["bad1", "bad2", "ok"])
    assert link.stats.handler_errors == 2
    assert len([m for m in ami_warnings(caplog) if "handler failed" in m]) == 1


def test_unknown_events_are_ignored(server, make_link):
    link, recorder = connected_link(make_link, server, names=("Test",))
    before = link.stats.events
    server.push(event("Newexten", Extension="201") + event("VarSet", Variable="A", Value="1")
                + event("SomethingNew", X="y") + event("Test", N="1"))
    assert wait_for(lambda: recorder.named("Test"))
    assert [e["Event"] for e in recorder.events] == ["Test"]
    assert link.stats.events - before == 4 and link.stats.handler_errors == 0


# --- pieces ------------------------------------------------------------------------------------

def test_frame_reader_bounds_memory_and_resynchronises():
    dropped = []
    reader = FrameReader(1000, lambda: dropped.append(1))
    assert reader.feed(b"Event: A\r\n\r\nEvent: B\r\n") == [b"Event: A"]
    for _ in range(100):  # an endless line in 100-byte reads
        assert reader.feed(b"y" * 100) == []
        assert len(reader.pending) <= 1000
    assert reader.feed(b"\r\n\r") == [] and reader.feed(b"\nEvent: C\r\n\r\n") == [b"Event: C"]
    assert reader.feed(b"Event: D\r\nX: " + b"z" * 2000 + b"\r\n\r\nEvent: E\r\n\r\n") == \
        [b"Event: E"]
    assert len(dropped) == 2


def test_parse_message_keys_case_and_repeats():
    headers, text = parse_message("Response: Follows\r\nActionID: 7\r\nOutput: a\r\n"
                                  "Output: b\r\nUniqueid: 1.2\r\nfree text\r\n")
    assert headers["Output"] == "a\nb" and text == "free text"
    assert headers["UniqueID"] == headers.get("uniqueid") == "1.2"
    assert headers.get("Missing") is None and isinstance(headers, Headers)
    with pytest.raises(KeyError):
        headers["Missing"]


def test_backoff_doubles_to_the_cap_with_jitter_and_resets():
    backoff = Backoff(1, 30, rand=lambda: 0.0)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next() == 1
    assert Backoff(1, 30, rand=lambda: 1.0).slowest() == pytest.approx(30 * (1 - ami._JITTER))


# --- MikoPBX and Asterisk events -----------------------------------------------------------------

FINISHED = {"action": "hangup_update_cdr", "linkedid": "mikopbx-1700000000.7",
            "UNIQUEID": "1700000000.9_ab12cd", "src_num": "201", "GLOBAL_STATUS": "ANSWERED"}


def headers_of(wire: bytes) -> Headers:
    return parse_message(wire.decode().removesuffix("\r\n\r\n"))[0]


@pytest.mark.parametrize("gz", [False, True])
def test_linkedid_of_a_finished_leg_from_cdr_connector(gz):
    assert linkedid_of_event(headers_of(cdr_connector(FINISHED, gz=gz))) == \
        "mikopbx-1700000000.7"


def test_linkedid_of_cdr_connector_edge_cases():
    dial = {**FINISHED, "action": "dial"}
    assert linkedid_of_event(headers_of(cdr_connector(dial))) is None
    assert cdr_connector_payload(headers_of(cdr_connector(dial)))["action"] == "dial"
    without = {k: v for k, v in FINISHED.items() if k != "linkedid"}
    assert linkedid_of_event(headers_of(cdr_connector(without, Linkedid="from-chan"))) == \
        "from-chan"
    lower = {"event": "UserEvent", "userevent": "CdrConnector",
             "agidata": base64.b64encode(json.dumps(FINISHED).encode()).decode().rstrip("=")}
    assert linkedid_of_event(lower) == "mikopbx-1700000000.7"  # plain dict, no padding
    for broken in ("not base64!", "GZ:bm90IGd6aXA=", base64.b64encode(b"[1, 2]").decode(), ""):
        assert linkedid_of_event({"Event": "UserEvent", "UserEvent": "CdrConnector",
                                  "AgiData": broken}) is None
    assert linkedid_of_event({"Event": "UserEvent", "UserEvent": "Other",
                              "AgiData": lower["agidata"]}) is None


def test_linkedid_of_hangup_and_others():
    assert linkedid_of_event(headers_of(event("Hangup", LinkedID="L9"))) == "L9"
    assert linkedid_of_event({"Event": "Hangup", "Linkedid": "L8"}) == "L8"
    assert linkedid_of_event({"Event": "Hangup"}) is None
    assert linkedid_of_event({"Event": "Newchannel", "Linkedid": "L7"}) is None


CDR_EVENT = event(
    "Cdr", Privilege="cdr,all", AccountCode="", Source="201", Destination="74951234567",
    DestinationContext="outgoing", CallerID='"Alice Smith" <201>',
    Channel="PJSIP/201-00000012", DestinationChannel="PJSIP/SIP-TRUNK-4B2E-00000013",
    LastApplication="Dial", LastData="PJSIP/74951234567@SIP-TRUNK-4B2E,600,TtKk",
    StartTime="2024-10-27 02:30:00", AnswerTime="2024-10-27 02:30:05",
    EndTime="2024-10-27 02:31:10", Duration="70", BillableSeconds="65",
    Disposition="ANSWERED", AMAFlags="DOCUMENTATION", UniqueID="1729989000.18",
    UserField="", LinkedID="1729989000.17")


def test_cdr_event_becomes_a_cdr_general_row():
    row = cdr_event_to_row(headers_of(CDR_EVENT))
    assert set(row) == set(cdr_column_names()) - {"id"}
    assert row == {**dict.fromkeys(row, ""),
                   "start": "2024-10-27 02:30:00", "answer": "2024-10-27 02:30:05",
                   "endtime": "2024-10-27 02:31:10", "src_chan": "PJSIP/201-00000012",
                   "src_num": "201", "src_name": "Alice Smith",
                   "dst_chan": "PJSIP/SIP-TRUNK-4B2E-00000013", "dst_num": "74951234567",
                   "UNIQUEID": "1729989000.18", "linkedid": "1729989000.17",
                   "disposition": "ANSWERED", "dialstatus": "ANSWER", "transfer": 0,
                   "a_transfer": 0, "duration": 70, "billsec": 65, "work_completed": "1"}


def test_cdr_event_rows_for_unanswered_and_machine_legs():
    missed = cdr_event_to_row({"Event": "Cdr", "Source": "74951234567", "Destination": "201",
                               "CallerID": "74951234567", "Channel": "PJSIP/trunk-1",
                               "DestinationChannel": "PJSIP/201-2", "LastApplication": "Dial",
                               "AnswerTime": "", "Duration": "20", "BillableSeconds": "0",
                               "Disposition": "NO ANSWER", "UniqueID": "1.5"})
    assert (missed["disposition"], missed["dialstatus"], missed["linkedid"], missed["answer"],
            missed["src_name"], missed["is_app"]) == ("NOANSWER", "NOANSWER", "1.5", "", "", "")
    ivr = cdr_event_to_row({"Event": "Cdr", "Uniqueid": "1.6", "DestinationChannel": "",
                            "LastApplication": "BackGround", "Disposition": "ANSWERED",
                            "CallerID": "Reception"})
    assert (ivr["is_app"], ivr["UNIQUEID"], ivr["src_name"]) == ("1", "1.6", "Reception")
    busy = cdr_event_to_row({"Event": "Cdr", "UniqueID": "1.7", "LastApplication": "Dial",
                             "Disposition": "BUSY", "Duration": "x"})
    assert (busy["is_app"], busy["dialstatus"], busy["duration"]) == ("", "BUSY", None)


# --- against the project's AMI emulator ---------------------------------------------------------

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"


@pytest.fixture
def emulator():
    from standin import amiemu
    with amiemu.AmiEmulator(username="extcdr", secret="pw", auth_failure_delay=0) as emu:
        yield emu


def emulator_link(make_link, emulator, handlers) -> AmiLink:
    link = AmiLink("127.0.0.1", emulator.address[1], "extcdr", "pw", handlers, **FAST)
    make_link.links.append(link)
    link.start()
    emulator.wait_for_listeners(1, timeout=3)
    return link


def test_emulator_mikopbx_call_names_its_linkedid(make_link, emulator):
    named = []

    def on_event(headers):
        named.append((headers.get("UserEvent", headers["Event"]), linkedid_of_event(headers)))

    emulator_link(make_link, emulator, {"Hangup": on_event, "UserEvent": on_event})
    emulator.replay(TRANSCRIPTS / "mikopbx-incoming-answered.txt", speed=0).result(timeout=5)
    linkedid = "mikopbx-1730109600.311"
    # dial, dial_answer, hangup_chan, then hangup_update_cdr (gzipped): only the last one
    # says a leg reached cdr_general
    assert wait_for(lambda: [n for n in named if n[0] == "CdrConnector"] == [
        ("CdrConnector", None)] * 3 + [("CdrConnector", linkedid)])
    assert ("CrmLookup", None) in named
    assert {n for n in named if n[0] == "Hangup"} == {("Hangup", linkedid)}


def test_emulator_stock_asterisk_cdr_events_become_rows(make_link, emulator):
    rows = []
    emulator_link(make_link, emulator, {"Cdr": lambda e: rows.append(cdr_event_to_row(e))})
    emulator.replay(TRANSCRIPTS / "asterisk-cdr-manager.txt", speed=0).result(timeout=5)
    assert wait_for(lambda: len(rows) == 2)
    answered = rows[0]
    assert (answered["UNIQUEID"], answered["src_name"], answered["billsec"],
            answered["dialstatus"]) == ("1730113200.15", "Петрова Мария", 62, "ANSWER")


def test_emulator_faults_do_not_stop_the_link(make_link, emulator):
    recorder = Recorder()
    link = emulator_link(make_link, emulator, {"Test": recorder})
    emulator.send_garbage()
    emulator.send_huge_line()
    emulator.drop_connections()
    assert wait_for(lambda: link.stats.reconnects == 1 and link.connected)
    emulator.wait_for_listeners(1, timeout=3)
    emulator.send_event([("Event", "Test"), ("N", "after")])
    assert wait_for(lambda: recorder.named("Test"))
    assert link.stats.oversize_dropped == 1
