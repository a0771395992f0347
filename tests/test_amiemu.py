"""The AMI emulator over real TCP on 127.0.0.1: protocol, transcripts, calls, faults, pyst2."""
from __future__ import annotations

import base64
import gzip
import json
import random
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbx.tables import cdr_ddl, create
from standin import demo
from standin.amiemu import (DEFAULT_BANNER, DEFAULT_SECRET, DEFAULT_USERNAME, AmiEmulator, Faults,
                            call_script, load_transcript, parse_transcript)

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPTS = sorted((ROOT / "tests" / "transcripts").glob("*.txt"))
WAIT_S = 5.0  # the longest any single step may take before the test fails
CALL_START = 1_730_102_400.0  # 2024-10-28 08:00 UTC


class RawClient:
    """A bare AMI client: writes actions, reads messages framed on CRLF CRLF, never hangs."""

    def __init__(self, address: tuple[str, int], timeout: float = WAIT_S):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, **headers: str) -> None:
        self.sock.sendall("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n")

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        data, _, self.buffer = self.buffer.partition(marker)
        return data + marker

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_message(self) -> dict[str, str]:
        """The next message as a dict (repeated keys: the last one)."""
        text = self.read_until(b"\r\n\r\n").decode()
        return dict(line.split(": ", 1) for line in text.split("\r\n") if ": " in line)

    def read_event(self, name: str) -> dict[str, str]:
        """Skip messages until an event called `name`."""
        while (message := self.read_message()).get("Event") != name:
            pass
        return message

    def banner(self) -> str:
        return self.read_until(b"\r\n").decode()

    def login(self, secret: str = DEFAULT_SECRET, **extra: str) -> dict[str, str]:
        self.send(Action="Login", Username=DEFAULT_USERNAME, Secret=secret, ActionID="login-1",
                  **extra)
        return self.read_message()

    def closed_by_server(self, timeout: float = WAIT_S) -> bool:
        """True when the server closes the connection (EOF or reset) within `timeout`; what
        arrives before goes to the buffer."""
        self.sock.settimeout(timeout)
        try:
            while data := self.sock.recv(65536):
                self.buffer += data
        except ConnectionResetError:
            pass
        return True

    def silent_for(self, seconds: float) -> bool:
        """True when nothing arrives for `seconds` and the connection stays open."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(WAIT_S)
        self.buffer += data
        return False

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data


@pytest.fixture
def emulator():
    with AmiEmulator(auth_failure_delay=0.01) as emu:
        yield emu


@pytest.fixture
def connect(emulator):
    clients = []

    def connect(login: bool = True, **extra: str) -> RawClient:
        client = RawClient(emulator.address)
        clients.append(client)
        assert client.banner() == DEFAULT_BANNER + "\r\n"
        if login:
            assert client.login(**extra)["Message"] == "Authentication accepted"
            if extra.get("Events", "on") != "off":
                client.read_event("FullyBooted")
        return client

    yield connect
    for client in clients:
        client.close()


def hangup(linkedid: str = "mikopbx-1730102400.1") -> list[tuple[str, str]]:
    return [("Event", "Hangup"), ("Privilege", "call,all"), ("Channel", "PJSIP/201-00000001"),
            ("Uniqueid", linkedid), ("Linkedid", linkedid), ("Cause", "16"),
            ("Cause-txt", "Normal Clearing")]


def decode_agi_data(text: str) -> dict:
    """MikoPBX's AgiData: base64 JSON, or `GZ:` + base64 of gzipped JSON."""
    if text.startswith("GZ:"):
        return json.loads(gzip.decompress(base64.b64decode(text[3:])))
    return json.loads(base64.b64decode(text))


# -- sessions ----------------------------------------------------------------------------------

def test_login_is_accepted_with_the_action_id_echoed(emulator, connect):
    client = connect(login=False)
    client.send(Action="Login", Username="EXTCDR", Secret=DEFAULT_SECRET, ActionID="a-17")
    assert client.read_message() == {"Response": "Success", "ActionID": "a-17",
                                     "Message": "Authentication accepted"}
    assert client.read_message()["Event"] == "FullyBooted"
    assert emulator.stats.logins_ok == 1
    assert emulator.clients()[0].logged_in


def test_a_wrong_secret_is_refused_and_the_session_closed(emulator, connect):
    client = connect(login=False)
    assert client.login(secret="wrong") == {"Response": "Error", "ActionID": "login-1",
                                            "Message": "Authentication failed"}
    assert client.closed_by_server()
    assert emulator.stats.logins_failed == 1


def test_before_login_only_login_and_logoff_are_allowed(connect):
    client = connect(login=False)
    client.send(Action="Ping", ActionID="p")
    assert client.read_message() == {"Response": "Error", "ActionID": "p",
                                     "Message": "Permission denied"}


def test_ping_echoes_the_action_id(emulator, connect):
    client = connect()
    client.send(Action="Ping", ActionID="keepalive-42")
    pong = client.read_message()
    assert pong["Response"] == "Success" and pong["ActionID"] == "keepalive-42"
    assert pong["Ping"] == "Pong"
    assert abs(float(pong["Timestamp"]) - time.time()) < 5
    assert emulator.stats.pings == 1


def test_unknown_and_missing_actions_are_errors(connect):
    client = connect()
    client.send(Action="Originate", ActionID="o")
    answer = client.read_message()
    assert answer["Response"] == "Error" and answer["ActionID"] == "o"
    assert answer["Message"].startswith("Invalid/unknown command: Originate.")
    client.send(ActionID="x")
    assert client.read_message()["Message"] == "Missing action in request"


def test_events_reach_only_logged_in_sessions_that_want_them(emulator, connect):
    anonymous = connect(login=False)
    quiet = connect(Events="off")
    listening = connect()
    emulator.send_event(hangup("first"))
    assert listening.read_message()["Linkedid"] == "first"
    # Their next message is the answer to a later action: the event never reached them.
    anonymous.send(Action="Ping", ActionID="a")
    assert anonymous.read_message()["Message"] == "Permission denied"
    quiet.send(Action="Events", EventMask="on", ActionID="e")
    assert quiet.read_message() == {"Response": "Success", "ActionID": "e", "Events": "On"}
    emulator.send_event(hangup("second"))
    assert quiet.read_message()["Linkedid"] == "second"
    assert listening.read_message()["Linkedid"] == "second"


def test_logoff_says_goodbye_and_closes(connect):
    client = connect()
    client.send(Action="Logoff", ActionID="bye")
    assert client.read_message() == {"Response": "Goodbye", "ActionID": "bye",
                                     "Message": "Thanks for all the fish."}
    assert client.closed_by_server()


# -- transcripts -------------------------------------------------------------------------------

def test_transcript_format():
    chunks = parse_transcript(
        "# a comment\n"
        "Event: VarSet\n"
        "Value: one\\ntwo\\\\n\\x00\n"
        "AccountCode: \n"
        "\n"
        "# delay 0.25\n"
        "# delay 0.5\n"
        "\\x23 not a comment\\c\n")
    assert [(c.delay, c.data, c.messages) for c in chunks] == [
        (0.0, b"Event: VarSet\r\nValue: one\ntwo\\n\x00\r\nAccountCode: \r\n\r\n", 1),
        (0.75, b"# not a comment", 0)]
    with pytest.raises(ValueError, match=r"<transcript>:1: unknown escape '\\q'"):
        parse_transcript("Data: \\q\n")
    with pytest.raises(ValueError, match="delay SECONDS"):
        parse_transcript("# delay soon\n")


def test_shipped_transcripts_hold_what_real_traffic_has():
    data = {path.name: b"".join(c.data for c in load_transcript(path)) for path in TRANSCRIPTS}
    assert len(data) >= 2
    everything = b"".join(data.values())
    for needle in (b"Event: Newchannel\r\n", b"Event: DialBegin\r\n", b"Event: DialEnd\r\n",
                   b"Event: BridgeEnter\r\n", b"Event: Hangup\r\n", b"Event: Cdr\r\n",
                   b"UserEvent: CdrConnector\r\nAgiData: ", b"\r\nCause: 16\r\n",
                   b"\r\nUniqueid: ", b"\r\nUniqueID: ", b"\r\nReportBlock:\r\n",
                   b"ChanVariable: CDR(src)=", b"AgiData: GZ:", b"Event: Newstate\r\n"):
        assert needle in everything, needle
    assert b"\n" in everything.replace(b"\r\n", b"")  # a bare LF inside a value
    for message in everything.split(b"\r\n\r\n")[:-1]:
        if b"UserEvent: CdrConnector\r\nAgiData: " in message:
            agi_data = message.split(b"AgiData: ")[1].split(b"\r\n")[0].decode()
            assert decode_agi_data(agi_data)["linkedid"].startswith("mikopbx-")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_a_transcript_is_replayed_byte_exactly(emulator, connect, path):
    client = connect()
    expected = b"".join(chunk.data for chunk in load_transcript(path))
    emulator.replay(path, speed=0).result(WAIT_S)
    assert client.read_exactly(len(expected)) == expected
    client.send(Action="Ping", ActionID="after")
    assert client.read_message()["ActionID"] == "after"


def test_replay_keeps_the_transcript_delays_scaled_by_speed(emulator, connect):
    client = connect()
    chunks = parse_transcript("Event: A\n\n# delay 0.4\nEvent: B\n\n")
    began = time.monotonic()
    emulator.replay(chunks, speed=2).result(WAIT_S)
    assert 0.19 < time.monotonic() - began < 1.5
    assert [client.read_message()["Event"] for _ in range(2)] == ["A", "B"]


# -- calls -------------------------------------------------------------------------------------

def pbx_rows(cdr_db: Path, table: str) -> list[dict]:
    conn = sqlite3.connect(f"file:{cdr_db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [{k: row[k] for k in row.keys() if k != "id"}
                for row in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        conn.close()


def test_call_script_creates_and_hangs_up_each_channel_once():
    legs = demo.DemoPbx(5).call_legs("ivr_queue_answered", CALL_START)
    names = iter(range(100, 200))
    steps = call_script(legs, lambda start_s: f"mikopbx-{start_s}.{next(names)}")
    assert [s.at_ms for s in steps] == sorted(s.at_ms for s in steps)
    assert [s.row["UNIQUEID"] for s in steps if s.leg_done] == [
        leg.row["UNIQUEID"] for leg in legs]
    started = [s.row["UNIQUEID"] for s in steps if s.write == "begin"]
    assert sorted(started) == sorted(leg.row["UNIQUEID"] for leg in legs)
    answered = [s.row["UNIQUEID"] for s in steps if s.write == "answer"]
    assert sorted(answered) == sorted(leg.row["UNIQUEID"] for leg in legs
                                      if leg.row["answer"] and leg.row["answer"] < leg.row["endtime"])
    events = [dict(e) for s in steps for e in s.before + s.after]
    created = [e["Channel"] for e in events if e["Event"] == "Newchannel"]
    hung_up = [e["Channel"] for e in events if e["Event"] == "Hangup"]
    assert sorted(created) == sorted(hung_up) and len(set(created)) == len(created)
    assert events[0]["Uniqueid"] == legs[0].row["linkedid"]
    announced = [decode_agi_data(e["AgiData"]) for e in events if e["Event"] == "UserEvent"]
    assert [a["UNIQUEID"] for a in announced] == [leg.row["UNIQUEID"] for leg in legs]
    assert all(a["action"] == "hangup_update_cdr" and "src_chan" not in a for a in announced)


def test_a_leg_starts_at_the_time_in_its_uniqueid():
    (leg,) = demo.DemoPbx(5).call_legs("internal_answered", CALL_START + 0.25)
    row = {**leg.row, "UNIQUEID": "mikopbx-" + leg.row["UNIQUEID"]}
    begin, answer, end = call_script([demo.MovedLeg(leg.moved_ms, row)], "mikopbx-{}.9".format)
    assert (begin.at_ms, begin.write, end.at_ms) == (CALL_START * 1000 + 250, "begin",
                                                     leg.moved_ms)
    assert answer.write == "answer" and begin.at_ms < answer.at_ms < end.at_ms


def test_play_call_moves_every_leg_to_cdr_general_and_announces_it(tmp_path, connect):
    cdr_db = tmp_path / "cdr.db"
    pbx = demo.DemoPbx(5)
    calls = [pbx.call_legs(kind, CALL_START + 600 * i) for i, kind in enumerate(
        ("ivr_queue_answered", "attended_transfer", "two_devices", "click_to_call_failed"))]
    with AmiEmulator(cdr_db=cdr_db) as emulator:
        client = RawClient(emulator.address)
        client.banner()
        client.login()
        for legs in calls:
            emulator.play_call(legs, speed=0).result(WAIT_S)
        assert emulator.stats.legs_moved == sum(map(len, calls))
    all_legs = [leg for legs in calls for leg in legs]
    assert pbx_rows(cdr_db, "cdr_general") == [leg.row for leg in all_legs]
    assert pbx_rows(cdr_db, "cdr") == []
    with sqlite3.connect(cdr_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    announced = [decode_agi_data(client.read_event("UserEvent")["AgiData"]) for _ in all_legs]
    assert [(a["UNIQUEID"], a["linkedid"]) for a in announced] == [
        (leg.row["UNIQUEID"], leg.row["linkedid"]) for leg in all_legs]
    client.close()


def test_a_leg_waits_in_cdr_until_it_ends(tmp_path):
    cdr_db = tmp_path / "cdr.db"
    legs = demo.DemoPbx(8).call_legs("internal_answered", CALL_START)
    (leg,) = legs
    call_s = leg.moved_ms / 1000 - CALL_START
    with AmiEmulator(cdr_db=cdr_db) as emulator:
        playing = emulator.play_call(legs, speed=call_s / 0.8)  # the call lasts 0.8 s
        deadline = time.monotonic() + WAIT_S
        while not pbx_rows(cdr_db, "cdr") and time.monotonic() < deadline:
            time.sleep(0.01)
        (in_progress,) = pbx_rows(cdr_db, "cdr")
        assert pbx_rows(cdr_db, "cdr_general") == []
        assert in_progress["UNIQUEID"] == leg.row["UNIQUEID"]
        assert in_progress["endtime"] == in_progress["work_completed"] == ""
        playing.result(WAIT_S)
    assert pbx_rows(cdr_db, "cdr") == []
    assert pbx_rows(cdr_db, "cdr_general") == [leg.row]


def test_play_call_writes_only_the_columns_an_older_pbx_has(tmp_path):
    cdr_db = tmp_path / "cdr.db"
    create(str(cdr_db), cdr_ddl("cdr_general", older=True) + cdr_ddl("cdr", older=True)).close()
    legs = demo.DemoPbx(8).call_legs("incoming_answered", CALL_START)
    with AmiEmulator(cdr_db=cdr_db) as emulator:
        emulator.play_call(legs, speed=0).result(WAIT_S)
    (row,) = pbx_rows(cdr_db, "cdr_general")
    assert "src_name" not in row and row["UNIQUEID"] == legs[0].row["UNIQUEID"]


def test_live_traffic_writes_into_a_generated_demo_pbx(tmp_path):
    demo.generate(tmp_path, 40, seed=3)
    cdr_db = tmp_path / demo.CDR_DB
    before = pbx_rows(cdr_db, "cdr_general")
    employees = {e.number for e in demo.DemoPbx(3).directory.employees}
    with AmiEmulator(cdr_db=cdr_db) as emulator:
        traffic = emulator.start_traffic(3, calls_per_minute=3000, speed=0)
        deadline = time.monotonic() + WAIT_S
        while emulator.stats.calls_played < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        traffic.cancel()
        quiet_since = time.monotonic()      # calls under way finish: `cdr` stays empty
        while time.monotonic() - quiet_since < 0.5 and time.monotonic() < deadline:
            if pbx_rows(cdr_db, "cdr"):
                quiet_since = time.monotonic()
            time.sleep(0.02)
        played = emulator.stats.calls_played
    assert played >= 10
    after = pbx_rows(cdr_db, "cdr_general")
    assert after[:len(before)] == before
    new = after[len(before):]
    assert len({row["linkedid"] for row in new}) >= played
    assert not {row["linkedid"] for row in new} & {row["linkedid"] for row in before}
    assert {row["src_num"] for row in new} & employees
    assert pbx_rows(cdr_db, "cdr") == []


def test_a_live_calls_recording_is_on_disk_as_long_as_its_talk_when_its_leg_moves(
        tmp_path, monkeypatch):
    from standin import amiemu
    from tests.test_demo_data import mp3_seconds
    moved = []  # (talk, seconds of the file named, read when the row moved; None: no file)
    finish = amiemu.PbxCdrWriter.finish_leg

    def finish_leg(writer, row):
        if row["recordingfile"].startswith(demo.PBX_MONITOR_DIR + "/"):
            file = tmp_path / demo.MONITOR / row["recordingfile"][len(demo.PBX_MONITOR_DIR) + 1:]
            moved.append((row["billsec"],
                          mp3_seconds(file.read_bytes()) if file.is_file() else None))
        finish(writer, row)

    monkeypatch.setattr(amiemu.PbxCdrWriter, "finish_leg", finish_leg)
    with AmiEmulator(cdr_db=tmp_path / demo.CDR_DB) as emulator:
        traffic = emulator.start_traffic(5, calls_per_minute=3000, speed=0)
        deadline = time.monotonic() + WAIT_S
        while len(moved) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        traffic.cancel()
    assert len(moved) >= 10
    assert all(seconds is not None and abs(seconds - max(talk, 0)) <= 1
               for talk, seconds in moved), moved
    assert max(talk for talk, _ in moved) > 30


# -- faults ------------------------------------------------------------------------------------

def test_fault_close_before_banner():
    with AmiEmulator(faults=Faults(close_before_banner=True)) as emulator:
        client = RawClient(emulator.address)
        assert client.closed_by_server()
        assert client.buffer == b"" and emulator.stats.connections == 1
        client.close()


def test_fault_refuse_login_can_be_switched_at_run_time(emulator, connect):
    emulator.faults.refuse_login = True
    refused = connect(login=False)
    assert refused.login()["Message"] == "Authentication failed"
    assert refused.closed_by_server()
    emulator.faults.refuse_login = False
    connect()


def test_fault_drop_now(emulator, connect):
    client = connect()
    emulator.drop_connections()
    assert client.closed_by_server()


def test_fault_drop_after_messages(emulator, connect):
    emulator.faults.drop_after_messages = 2
    standing = connect(Events="off")  # message 1: the login response
    standing.send(Action="Ping", ActionID="2")
    assert standing.read_message()["ActionID"] == "2"
    assert standing.closed_by_server()
    emulator.faults.drop_after_messages = None
    one_shot = connect()
    emulator.drop_connections(after_messages=1)
    emulator.send_event(hangup())
    assert one_shot.read_message()["Event"] == "Hangup"
    assert one_shot.closed_by_server()


def test_fault_stall_keeps_the_socket_open_and_answers_later(emulator, connect):
    client = connect(Events="off")
    emulator.stall(0.6)
    began = time.monotonic()
    client.send(Action="Ping", ActionID="late")
    assert client.silent_for(0.3)
    assert client.read_message()["ActionID"] == "late"
    assert time.monotonic() - began >= 0.55


def test_fault_garbage(emulator, connect):
    client = connect(Events="off")
    emulator.send_garbage(2048)
    assert client.read_exactly(2052) == random.Random(2048).randbytes(2048) + b"\r\n\r\n"
    client.send(Action="Ping", ActionID="still-here")
    assert client.read_message()["ActionID"] == "still-here"


def test_fault_huge_line(emulator, connect):
    client = connect(Events="off")
    emulator.send_huge_line()
    message = client.read_until(b"\r\n\r\n")
    assert max(map(len, message.split(b"\r\n"))) >= 1 << 20


# -- a real client library ---------------------------------------------------------------------

def bounded(function, timeout: float = WAIT_S):
    """Run `function` on a thread; its result, or pytest.fail if it is still blocked."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        pytest.fail(f"{function} still blocked after {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pyst2_logs_in_pings_and_receives_an_event(emulator):
    from asterisk.manager import Manager
    received = []
    manager = Manager()
    bounded(lambda: manager.connect(emulator.address[0], emulator.address[1]))
    manager.register_event("Hangup", lambda event, _: received.append(event))
    bounded(lambda: manager.login(DEFAULT_USERNAME, DEFAULT_SECRET))
    assert bounded(manager.ping).get_header("Ping") == "Pong"
    emulator.wait_for_listeners(1)
    emulator.send_event(hangup("mikopbx-1730102400.9"))
    deadline = time.monotonic() + WAIT_S
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received[0].get_header("Linkedid") == "mikopbx-1730102400.9"
    try:
        assert bounded(manager.logoff).get_header("Response") == "Goodbye"
    except ValueError:
        # pyst2's race: Asterisk answers Goodbye and closes at once, pyst2's reader closes the
        # socket file on that EOF, and logoff()'s own flush() after its write then fails.
        pass
    while manager.connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    bounded(manager.close)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pyst2_trap_chan_variable_kills_its_reader(emulator, monkeypatch):
    """Documents toolchain.md's trap (every MikoPBX channel event has ChanVariable headers):
    unpatched pyst2's parser calls dict.has_key, its message thread dies, and ping() then
    blocks for ever (its thread is left behind on purpose)."""
    from asterisk.manager import Manager
    crashes = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    manager = Manager()
    bounded(lambda: manager.connect(*emulator.address))
    bounded(lambda: manager.login(DEFAULT_USERNAME, DEFAULT_SECRET))
    emulator.wait_for_listeners(1)
    emulator.send_event(hangup() + [("ChanVariable", "FROM_DID=74951234567")])
    pinging = threading.Thread(target=manager.ping, daemon=True)
    pinging.start()
    pinging.join(1.0)
    assert pinging.is_alive()
    emulator.stop()  # EOF ends pyst2's reader; only then does the parse error surface
    manager.message_thread.join(WAIT_S)
    assert "has_key" in str(crashes[0].exc_value)


# -- command line ------------------------------------------------------------------------------

def test_command_line_serves_and_replays_until_sigterm():
    transcript = ROOT / "tests" / "transcripts" / "asterisk-cdr-manager.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "standin.amiemu", "--listen", "127.0.0.1:0", "--secret", "s3",
         "--calls-per-minute", "0", "--replay", str(transcript), "--speed", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([process.stdout], [], [], 10)[0], "no address printed"
        line = process.stdout.readline()
        host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
        client = RawClient((host, int(port)))
        client.banner()
        assert client.login(secret="s3")["Message"] == "Authentication accepted"
        client.read_event("FullyBooted")
        expected = b"".join(chunk.data for chunk in load_transcript(transcript))
        assert client.read_exactly(len(expected)) == expected
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT_S) == 0
    finally:
        process.kill()
        process.communicate()


def test_command_line_rings_a_generated_demo_pbx(tmp_path):
    demo.generate(tmp_path, 20, seed=4, timezone="Europe/Berlin")
    cdr_db = tmp_path / demo.CDR_DB
    generated = len(pbx_rows(cdr_db, "cdr_general"))
    process = subprocess.Popen(
        [sys.executable, "-m", "standin.amiemu", "--listen", "127.0.0.1:0", "--cdr-db", str(cdr_db),
         "--seed", "4", "--calls-per-minute", "3000", "--speed", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([process.stdout], [], [], 10)[0], "no address printed"
        process.stdout.readline()
        deadline = time.monotonic() + WAIT_S
        while len(pbx_rows(cdr_db, "cdr_general")) < generated + 10:
            assert time.monotonic() < deadline, "no live calls arrived"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT_S) == 0
    finally:
        process.kill()
        process.communicate()
    # Local times in the demo PBX's own timezone, read from its mikopbx.db.
    newest = datetime.fromisoformat(pbx_rows(cdr_db, "cdr_general")[-1]["start"])
    berlin_now = datetime.now(ZoneInfo("Europe/Berlin")).replace(tzinfo=None)
    assert abs((berlin_now - newest).total_seconds()) < 600
