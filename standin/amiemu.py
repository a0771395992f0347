"""An AMI emulator: the Asterisk Manager Interface wire protocol, for tests and the demo.

It is a test and demo fixture with a real protocol, never a mock inside production code: the
daemon connects to it over TCP exactly as it connects to a PBX.

What it does
------------
* **Sessions** as Asterisk's `main/manager.c` runs them (Asterisk 22, the one MikoPBX ships):
  the banner `Asterisk Call Manager/11.0.0\\r\\n`; messages are `Key: Value\\r\\n` lines ended
  by an empty line; every response echoes the request's `ActionID`. Actions: `Login` (a wrong
  secret is answered after 1 s with `Authentication failed` and the session is closed, as
  Asterisk's `action_login` does), `Logoff` (`Response: Goodbye`, then close), `Ping`
  (`Ping: Pong`, `Timestamp`), `Events` (`EventMask` on/off). Before login anything else gets
  `Permission denied`; unknown actions get `Invalid/unknown command`. A `Login` without an
  `Events` header gets events (Asterisk then uses the user's read permissions), `Events: off`
  none. After a login with events Asterisk sends `FullyBooted`; so does the emulator.
* **Events** (`send_event`, transcripts, calls) go only to logged-in sessions with events on.
* **Calls** (`play_call`, `start_traffic`): the legs of a `demo.DemoPbx` call are written into a
  `cdr.db` the way MikoPBX does it (`CallDetailRecordsTmp` / `UpdateDataInDB` in mikopbx/Core):
  at a leg's start a row goes into the in-progress table `cdr`; when the leg ends Asterisk
  reports who hangs up (`hangup_requests`: `HangupRequest` on the channel of the party that
  hung up, `SoftHangupRequest` on those the PBX hangs up) and `Hangup` for the channels that
  end with it, the row moves to `cdr_general` (work completed; its recording, as long as its
  talk, is already in the `monitor/` folder beside `cdr.db`, where the demo PBX keeps them)
  and is deleted from `cdr`, then the PBX's call-events worker announces it with a
  `UserEvent` `CdrConnector` whose `AgiData` is the row as base64 JSON (`action`
  `hangup_update_cdr`, `GZ:`-prefixed gzip when long, as `AsteriskManager::encodeCdrData`).
  Events look as on a MikoPBX: `Timestamp` and `SystemName: mikopbx` in each, uniqueids
  `mikopbx-<unix time>.<seq>` (the call's first channel has the linkedid), and the 16
  `ChanVariable` headers MikoPBX's manager.conf `channelvars=` adds to every channel event
  (which unpatched pyst2 cannot parse).
* **Faults**, for the daemon's robustness tests: standing ones in `Faults` (refuse logins,
  close before the banner, drop each session after N messages), and one-shot methods: drop
  every session now or after N more messages, stall (send and answer nothing for T seconds,
  sockets kept open), garbage bytes, a 1 MB line.

Why asyncio in one background thread
------------------------------------
Every session, replay and call is a task on one event loop, so the session list, the fault
switches and the counters are touched by one thread only (no locks), timed replays of dozens of
parallel calls cost nothing, and a stall is simply a sender that awaits. The public methods are
thread-safe: they hand work to the loop and wait for it. The SQLite writes run on one separate
worker thread, so a `cdr.db` locked by someone else delays the rows but never the AMI traffic.

Transcript format (`tests/transcripts/*.txt`)
---------------------------------------------
A transcript holds the exact bytes an Asterisk sends, as UTF-8 text, one wire line per line:

* Every line is sent followed by CRLF; an empty line is the CRLF that ends a message.
* Lines starting with `#` send nothing: comments, and `# delay SECONDS`, a pause before what
  follows (divided by the replay speed). A wire line that starts with `#` is written `\\x23...`.
* Trailing spaces are bytes too (`AccountCode: ` ends in one): keep editors from stripping them.
* Backslash escapes give the bytes a text line cannot show: `\\n` (a bare LF inside a value),
  `\\r`, `\\t`, `\\xHH` (any byte), `\\\\` (a backslash), and `\\c` at the end of a line: no CRLF
  after it. Any other backslash sequence is an error, so a literal backslash is always `\\\\`.

A transcript is what follows a login: replay sends it to the sessions listening for events.

Command line: `extcdr ami-emulator` (`add_arguments` + `run`), or `python -m standin.amiemu`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import gzip
import itertools
import json
import logging
import os
import random
import re
import signal
import sqlite3
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence
from zoneinfo import ZoneInfoNotFoundError

from pbx.config import SourceError, read_pbx_config
from pbx.tables import cdr_column_names, cdr_ddl, create
from standin.demo import CONFIG_DB, MONITOR, SCENARIO_WEIGHTS, DemoPbx, MovedLeg, RecordingFiles

log = logging.getLogger("extcdr.amiemu")

DEFAULT_BANNER = "Asterisk Call Manager/11.0.0"  # AMI_VERSION of Asterisk 22
DEFAULT_USERNAME = "extcdr"
DEFAULT_SECRET = "extcdr-demo"
SECRET_ENV = "EXTCDR_AMI_SECRET"
DEFAULT_TIMEZONE = "Europe/Moscow"

Headers = list[tuple[str, str]]

_MAX_REQUEST_LINE = 64 * 1024  # longer request lines end the session
_CALL_TIMEOUT_S = 10.0  # how long a public method waits for the loop
_BUSY_TIMEOUT_MS = 60_000  # how long a PBX write waits for a cdr.db locked by someone else
# Asterisk's `sleep(1)` before answering a failed login.
AUTH_FAILURE_DELAY_S = 1.0
# MikoPBX's call-events worker sends `UserEvent` actions with ActionID `UserEvent_<its pid>`,
# and Asterisk copies every action header but Action/UserEvent into the event.
_CALL_EVENTS_ACTION_ID = "UserEvent_2374"


# -- the wire format -----------------------------------------------------------------------------

def encode_message(headers: Iterable[tuple[str, str]]) -> bytes:
    """`Key: Value\\r\\n` lines and the empty line that ends a message."""
    return "".join(f"{key}: {value}\r\n" for key, value in headers).encode() + b"\r\n"


def _response(status: str, action_id: str, headers: Headers = ()) -> bytes:
    """A response as `astman_send_response_full` writes it: ActionID right after Response."""
    lines = [("Response", status)]
    if action_id:
        lines.append(("ActionID", action_id))
    return encode_message(lines + list(headers))


class _Request:
    """One action from a client; header names are case-insensitive, the first one counts."""

    def __init__(self, lines: list[str]):
        self.headers: Headers = []
        for line in lines:
            key, colon, value = line.partition(":")
            if colon:
                self.headers.append((key.strip(), value.lstrip()))

    def get(self, name: str) -> str:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), "")


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next action (lines up to an empty one; CRLF or a bare LF end a line); None at EOF."""
    lines: list[str] = []
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if line:
            lines.append(line.decode("utf-8", "replace"))
        elif lines:
            return _Request(lines)


# -- transcripts ---------------------------------------------------------------------------------

class TranscriptChunk(NamedTuple):
    """Bytes sent at once after `delay` seconds; `messages` = how many messages they end."""
    delay: float
    data: bytes
    messages: int


_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.|$)")
_ESCAPED = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\"}
_DELAY = re.compile(r"#\s*delay\s+(\d+(?:\.\d*)?)\s*$")


def parse_transcript(text: str, name: str = "<transcript>") -> list[TranscriptChunk]:
    """The chunks of a transcript (format in the module docstring): one per message."""
    chunks: list[TranscriptChunk] = []
    pending, delay = bytearray(), 0.0

    def flush():
        nonlocal delay
        if pending:
            data = bytes(pending)
            chunks.append(TranscriptChunk(delay, data, int(data.endswith(b"\r\n\r\n"))))
            pending.clear()
            delay = 0.0

    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if line.startswith("#"):
            if re.match(r"#\s*delay\b", line):
                match = _DELAY.match(line)
                if not match:
                    raise ValueError(f"{name}:{number}: expected '# delay SECONDS'")
                flush()
                delay += float(match.group(1))
            continue
        pending += _unescape(line, f"{name}:{number}")
        if not line:
            flush()
    flush()
    return chunks


def _unescape(line: str, where: str) -> bytes:
    """One transcript line as wire bytes: escapes resolved, CRLF added unless it ends in `\\c`."""
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(line):
        out += line[position:match.start()].encode()
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            out += bytes([int(code[1:], 16)])
        elif code in _ESCAPED:
            out += _ESCAPED[code]
        elif code == "c" and match.end() == len(line):
            return bytes(out)
        else:
            raise ValueError(f"{where}: unknown escape '\\{code}' (a backslash is written '\\\\')")
        position = match.end()
    return bytes(out + line[position:].encode() + b"\r\n")


def load_transcript(path: Path | str) -> list[TranscriptChunk]:
    path = Path(path)
    return parse_transcript(path.read_text(encoding="utf-8"), str(path))


# -- a call's events and writes, as MikoPBX makes them ----------------------------------------

class CallStep(NamedTuple):
    """One moment of a call: events, then a write to cdr.db, then more events."""
    at_ms: int  # UTC
    write: str  # "begin": the leg starts (into `cdr`); "answer": its `cdr` row gets the
                # answer time; "finish": it moves to `cdr_general`
    row: dict
    before: list[Headers]
    after: list[Headers]

    @property
    def leg_done(self) -> bool:
        return self.write == "finish"


# Hangup causes by the leg's dial status (Asterisk's causes.h texts).
_CAUSES = {"ANSWER": (16, "Normal Clearing"), "BUSY": (17, "User busy"),
           "NOANSWER": (19, "User alerting, no answer"), "CHANUNAVAIL": (20, "Subscriber absent"),
           "CONGESTION": (34, "Circuit/channel congestion")}
_NORMAL_CLEARING = (16, "Normal Clearing")
# MikoPBX's manager.conf: `systemname = mikopbx` (asterisk.conf) and `timestampevents = yes` add
# SystemName and Timestamp to every event; `channelvars=` adds these to every channel event.
SYSTEM_NAME = "mikopbx"
CHANNEL_VARIABLES = ("DIALEDPEERNUMBER", "BLKVM_CHANNEL", "BRIDGEPEER", "INTERCHANNEL",
                     "FROM_DID", "mikoidconf", "conf_1c", "1cautoanswer", "extenfrom1c", "spyee",
                     "datafrom1c", "CDR(lastapp)", "CDR(channel)", "CDR(src)", "CDR(dst)",
                     "CDR(recordingfile)")
# Columns `UpdateDataInDB::sendUserEventData` leaves out of the CdrConnector payload.
_NOT_ANNOUNCED = {"id", "src_chan", "dst_chan", "work_completed", "from_account", "to_account",
                  "appname", "is_app", "transfer"}
# What a leg in progress lacks until it ends.
_UNFINISHED = {"endtime": "", "answer": "", "disposition": "", "dialstatus": "",
               "recordingfile": "", "duration": 0, "billsec": 0, "work_completed": ""}
_PLAIN_CDR_DATA_LIMIT = 900  # AsteriskManager::CDR_DATA_MAX_PLAIN_LENGTH
_CDR_NAME_LIMIT = 80


def encode_cdr_data(data: dict) -> str:
    """`AsteriskManager::encodeCdrData`: compact JSON without empty values, base64; `GZ:` +
    base64 of gzip when the plain form would exceed 900 characters."""
    data = {key: value for key, value in data.items() if value not in ("", None)}
    for key in ("src_name", "dst_name"):
        if key in data:
            data[key] = data[key][:_CDR_NAME_LIMIT]
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    encoded = base64.b64encode(text).decode()
    if len(encoded) > _PLAIN_CDR_DATA_LIMIT:
        encoded = "GZ:" + base64.b64encode(gzip.compress(text, 9, mtime=0)).decode()
    return encoded


def call_script(legs: Sequence[MovedLeg], new_uniqueid: Callable[[int], str]) -> list[CallStep]:
    """The steps that play one call: a start and an end per leg, in time order.

    A channel (a leg's `src_chan`/`dst_chan` with a technology, not `App:`/`Queue:`) is created
    with the first leg naming it and hangs up with the last one to end. The call's first channel
    has the linkedid as its uniqueid (as in Asterisk); `new_uniqueid(start_s)` names the others
    (one the call already has gets a suffix: each channel of a call has its own).
    """
    by_start = sorted(legs, key=_leg_start_ms)
    if not by_start:
        return []
    linkedid = by_start[0].row["linkedid"]
    uniqueids: dict[str, str] = {}
    opened: dict[int, list[str]] = {}
    for index, leg in enumerate(by_start):
        for channel in _channels(leg.row):
            if channel not in uniqueids:
                uniqueid = linkedid if not uniqueids else new_uniqueid(_leg_start_ms(leg) // 1000)
                if uniqueid in uniqueids.values():     # the demo's and our counters met
                    uniqueid = f"{uniqueid}-{len(uniqueids)}"
                uniqueids[channel] = uniqueid
                opened.setdefault(index, []).append(channel)
    closing: dict[str, int] = {}
    for index, leg in sorted(enumerate(by_start), key=lambda pair: pair[1].moved_ms):
        for channel in _channels(leg.row):
            closing[channel] = index
    steps = []
    for index, leg in enumerate(by_start):
        row, start, end = leg.row, _leg_start_ms(leg), leg.moved_ms
        steps.append(CallStep(start, "begin", _in_progress(row), [
            _channel_event("Newchannel", start, row, channel, uniqueids[channel])
            for channel in opened.get(index, [])], []))
        answered = _answer_ms(row, start)
        if answered is not None and answered < end:
            steps.append(CallStep(answered, "answer", row, [], []))
        ending = [channel for channel in _channels(row) if closing[channel] == index]
        steps.append(CallStep(end, "finish", row, [
            _channel_event(name, end, row, channel, uniqueids[channel]) + [("Cause", str(cause))]
            for name, channel, cause in hangup_requests(row, ending)] + [
            _hangup_event(end, row, channel, uniqueids[channel]) for channel in ending],
            [_cdr_connector_event(end, row)]))
    order = {"begin": 0, "answer": 1, "finish": 2}
    return sorted(steps, key=lambda step: (step.at_ms, order[step.write]))


def caller_hangs_up(row: dict) -> bool:
    """Who ends an answered leg whose two channels end with it: the caller for about half of
    the legs, the callee for the others, fixed by the leg's uniqueid (tests know it)."""
    return zlib.crc32(row["UNIQUEID"].encode()) % 2 == 0


def hangup_requests(row: dict, ending: list[str]) -> list[tuple[str, str, int]]:
    """(event, channel, cause) of who hangs up the `ending` channels of a leg as it ends.

    * Answered: the party that hangs up asks (`HangupRequest`, cause 16), the PBX then hangs up
      the other (`SoftHangupRequest`). When only one of its channels ends (a transferer
      leaving, a caller leaving the IVR or voicemail), that party hung up.
    * Cancelled (`CANCEL`): the caller gave up (`HangupRequest` on the caller's channel); the
      PBX stops the phones that rang.
    * No answer, busy, unavailable, congestion: the PBX ends it with the dial's cause
      (`SoftHangupRequest` only), the callee's channel first.
    """
    src, dst = row["src_chan"], row["dst_chan"]
    if row["dialstatus"] == "ANSWER" and row["answer"]:
        asking = {src if caller_hangs_up(row) else dst} if len(ending) > 1 else set(ending)
    elif row["dialstatus"] == "CANCEL":
        asking = {src}
    else:
        asking = set()
    cause = _CAUSES.get(row["dialstatus"], _NORMAL_CLEARING)[0]
    requests = [("HangupRequest", channel, _NORMAL_CLEARING[0])
                for channel in ending if channel in asking]
    return requests + [("SoftHangupRequest", channel, cause)
                       for channel in sorted(ending, key=lambda c: c != dst)
                       if channel not in asking]


def _leg_start_ms(leg: MovedLeg) -> int:
    """The leg's start (UTC ms): its uniqueid's Unix seconds (`[mikopbx-]<seconds>.<seq>…`)
    plus the start string's milliseconds; its end when the uniqueid has no time."""
    row = leg.row
    seconds = row["UNIQUEID"].partition(".")[0].rpartition("-")[2]
    if not seconds.isdigit():
        return leg.moved_ms
    millis = row["start"].rpartition(".")[2] if len(row["start"]) > 19 else "0"
    return int(seconds) * 1000 + int(millis)


def _answer_ms(row: dict, start_ms: int) -> int | None:
    """When the leg was answered (UTC ms), from its local answer and start strings."""
    if not row["answer"] or not row["start"]:
        return None
    try:
        answered = datetime.fromisoformat(row["answer"]) - datetime.fromisoformat(row["start"])
    except ValueError:
        return None
    return start_ms + max(0, round(answered.total_seconds() * 1000))


def _channels(row: dict) -> list[str]:
    return [chan for chan in (row["src_chan"], row["dst_chan"]) if "/" in chan]


def _in_progress(row: dict) -> dict:
    return {**row, **_UNFINISHED}


def _event(name: str, privilege: str, at_ms: int, body: Headers) -> Headers:
    """An event as `__manager_event_sessions` writes it on a MikoPBX."""
    return [("Event", name), ("Privilege", privilege),
            ("Timestamp", f"{at_ms // 1000}.{at_ms % 1000 * 1000:06d}"),
            ("SystemName", SYSTEM_NAME)] + body


def _channel_event(name: str, at_ms: int, row: dict, channel: str, uniqueid: str) -> Headers:
    """A channel event: Asterisk's snapshot (`ast_manager_build_channel_state_string`) with
    MikoPBX's channel variables."""
    caller = channel == row["src_chan"]
    side, other = ("src", "dst") if caller else ("dst", "src")
    ended = name in ("Hangup", "HangupRequest", "SoftHangupRequest")
    if not ended:
        state = (4, "Ring") if caller else (0, "Down")
    elif row["answer"]:
        state = (6, "Up")
    else:
        state = (4, "Ring") if caller else (5, "Ringing")
    trunk = row["from_account"] if caller else ""
    peer = row[f"{other}_chan"] if ended and row["answer"] and "/" in row[f"{other}_chan"] else ""
    variables = dict.fromkeys(CHANNEL_VARIABLES, "")
    variables.update({
        "DIALEDPEERNUMBER": row["dst_num"] if ended and caller else "", "BRIDGEPEER": peer,
        "FROM_DID": row["did"] if caller else "", "CDR(lastapp)": "Dial" if ended else "",
        "CDR(channel)": channel, "CDR(src)": row["src_num"], "CDR(dst)": row["dst_num"],
        "CDR(recordingfile)": row["recordingfile"] if ended else ""})
    return _event(name, "call,all", at_ms, [
        ("Channel", channel), ("ChannelState", str(state[0])), ("ChannelStateDesc", state[1]),
        ("CallerIDNum", row[f"{side}_num"] or "<unknown>"),
        ("CallerIDName", row.get(f"{side}_name") or "<unknown>"),
        ("ConnectedLineNum", row[f"{other}_num"] or "<unknown>"),
        ("ConnectedLineName", row.get(f"{other}_name") or "<unknown>"),
        ("Language", "ru"), ("AccountCode", ""),
        ("Context", f"{trunk}-incoming" if trunk else "all_peers" if caller else "internal"),
        ("Exten", row["dst_num"]), ("Priority", "1"),
        ("Uniqueid", uniqueid), ("Linkedid", row["linkedid"]),
    ] + [("ChanVariable", f"{key}={value}") for key, value in variables.items()])


def _hangup_event(at_ms: int, row: dict, channel: str, uniqueid: str) -> Headers:
    cause, text = _CAUSES.get(row["dialstatus"], _NORMAL_CLEARING)
    return _channel_event("Hangup", at_ms, row, channel, uniqueid) + [
        ("Cause", str(cause)), ("Cause-txt", text)]


def _cdr_connector_event(at_ms: int, row: dict) -> Headers:
    """The worker's announcement that a leg reached cdr_general (`sendUserEventData`)."""
    payload = {column: row[column] for column in cdr_column_names()
               if column in row and column not in _NOT_ANNOUNCED}
    payload.update(action="hangup_update_cdr", GLOBAL_STATUS=row["disposition"])
    return _event("UserEvent", "user,all", at_ms, [
        ("UserEvent", "CdrConnector"), ("AgiData", encode_cdr_data(payload)),
        ("ActionID", _CALL_EVENTS_ACTION_ID)])


class PbxCdrWriter:
    """The PBX's writes to cdr.db: legs in progress in `cdr`, finished ones in `cdr_general`.

    Creates the file and tables when missing (WAL, the PBX's layout) and writes only the
    columns the tables have (older releases lack some). One short transaction per write; use
    it from one thread.
    """

    def __init__(self, path: Path):
        self._conn = create(str(path), cdr_ddl("cdr_general") + cdr_ddl("cdr"))
        self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._columns = {table: [row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")
                                 if row[1] != "id"]
                         for table in ("cdr", "cdr_general")}

    def begin_leg(self, row: dict) -> None:
        with self._conn:
            self._insert("cdr", row)

    def answer_leg(self, row: dict) -> None:
        """The leg was answered: the PBX updates its row in `cdr`."""
        with self._conn:
            self._conn.execute("UPDATE cdr SET answer = ? WHERE UNIQUEID = ?",
                               (row["answer"], row["UNIQUEID"]))

    def finish_leg(self, row: dict) -> None:
        with self._conn:
            self._insert("cdr_general", row)
            self._conn.execute("DELETE FROM cdr WHERE UNIQUEID = ?", (row["UNIQUEID"],))

    def _insert(self, table: str, row: dict) -> None:
        columns = [column for column in self._columns[table] if column in row]
        self._conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) "
                           f"VALUES ({', '.join('?' * len(columns))})",
                           [row[column] for column in columns])

    def close(self) -> None:
        self._conn.close()


# -- faults, counters, sessions ----------------------------------------------------------------

@dataclass
class Faults:
    """Standing faults, read each time they apply: tests may switch them while running."""
    refuse_login: bool = False  # every Login fails as with a wrong secret
    close_before_banner: bool = False  # accept the TCP connection, close it at once
    drop_after_messages: int | None = None  # close each new session after N messages (0: banner)


@dataclass
class AmiStats:
    """Counters since start (read them from any thread)."""
    connections: int = 0
    logins_ok: int = 0
    logins_failed: int = 0
    pings: int = 0
    actions: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    calls_played: int = 0
    legs_moved: int = 0


class ClientInfo(NamedTuple):
    peer: str
    username: str
    logged_in: bool
    events: bool
    messages_sent: int


class _Session:
    """One client connection: what it may receive, and its queue of bytes to send."""

    def __init__(self, writer: asyncio.StreamWriter, drop_after: int | None):
        self.writer = writer
        host, port = writer.get_extra_info("peername")[:2]
        self.peer = f"{host}:{port}"
        self.username = ""
        self.logged_in = False
        self.events = False
        self.messages_sent = 0
        self.drop_after = drop_after
        self.closed = False
        self.outbox: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()

    @property
    def listening(self) -> bool:
        return self.logged_in and self.events

    def send(self, data: bytes, messages: int = 1) -> None:
        if not self.closed:
            self.outbox.put_nowait((data, messages))

    def finish(self) -> None:
        """Close once everything queued is sent (and wake the sender of an aborted session)."""
        self.outbox.put_nowait(None)

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()

    def info(self) -> ClientInfo:
        return ClientInfo(self.peer, self.username, self.logged_in, self.events,
                          self.messages_sent)


def _events_wanted(mask: str) -> bool | None:
    """Asterisk's `strings_to_mask` reduced to on/off; None for an empty (invalid) mask."""
    mask = mask.strip().lower()
    if not mask:
        return None
    if mask.isdigit():
        return int(mask) > 0
    return mask not in ("no", "false", "n", "f", "off")


# -- the emulator --------------------------------------------------------------------------------

class AmiEmulator:
    """An AMI server on a background thread. `start()` returns the bound (host, port).

    Usable as a context manager. `play_call`, `replay` and `start_traffic` return a
    `concurrent.futures.Future`: wait on it with a timeout, or cancel it.
    `speed` everywhere: 1 = real time, 10 = ten times faster, 0 = no waiting at all.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 username: str = DEFAULT_USERNAME, secret: str = DEFAULT_SECRET,
                 cdr_db: Path | str | None = None, faults: Faults | None = None,
                 banner: str = DEFAULT_BANNER, auth_failure_delay: float = AUTH_FAILURE_DELAY_S,
                 manager_conf: Path | str | None = None):
        self.host, self.port = host, port
        self.username = username
        self._secret = secret
        self.manager_conf = Path(manager_conf) if manager_conf is not None else None
        self.cdr_db = Path(cdr_db) if cdr_db is not None else None
        self.faults = faults or Faults()
        self.banner = banner
        self.auth_failure_delay = auth_failure_delay
        self.stats = AmiStats()
        self.address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._stalled_until = 0.0
        self._started_at = 0.0
        self._db_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._cdr: PbxCdrWriter | None = None
        # Recordings live calls name under the PBX's monitor dir are written where the demo
        # PBX keeps its own (the module serves them from there).
        self._recordings = (RecordingFiles(self.cdr_db.parent / MONITOR)
                            if self.cdr_db is not None else None)
        self._uniqueid_seq = itertools.count(1)
        self._actions = {"login": self._login, "logoff": self._logoff, "ping": self._ping,
                         "events": self._events}

    # -- life cycle

    def start(self) -> tuple[str, int]:
        if self._thread is not None:
            raise RuntimeError("the AMI emulator is already running")
        self._started_at = time.time()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ami-emulator",
                                        daemon=True)
        self._thread.start()
        try:
            if self.cdr_db is not None:
                self._db_thread = concurrent.futures.ThreadPoolExecutor(1, "ami-emulator-cdr")
                self._cdr = self._db_thread.submit(PbxCdrWriter, self.cdr_db).result()
            self._server = self._run(asyncio.start_server(
                self._serve, self.host, self.port, limit=_MAX_REQUEST_LINE))
        except BaseException:
            self.stop()
            raise
        self.address = self._server.sockets[0].getsockname()[:2]
        return self.address

    def stop(self) -> None:
        """Close every session and stop calls, replays and traffic (legs being played stay in
        `cdr`, as after a PBX crash). Waits for a write to cdr.db already under way."""
        if self._thread is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()
            if self._db_thread is not None:
                if self._cdr is not None:
                    self._db_thread.submit(self._cdr.close)
                self._db_thread.shutdown(wait=True)
            self._thread = self._db_thread = self._cdr = None

    def __enter__(self) -> AmiEmulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.abort()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self, coroutine, timeout: float = _CALL_TIMEOUT_S):
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _in_loop(self, function: Callable, *args):
        """Call `function(*args)` on the loop thread and return its result."""
        async def call():
            return function(*args)
        return self._run(call())

    def _submit(self, coroutine) -> concurrent.futures.Future:
        if self._loop is None or self._thread is None:
            coroutine.close()
            raise RuntimeError("the AMI emulator is not running; call start() first")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # -- what tests look at

    def clients(self) -> list[ClientInfo]:
        return self._in_loop(lambda: [session.info() for session in self._sessions])

    def listeners(self) -> int:
        """Sessions logged in with events on."""
        return self._in_loop(lambda: sum(session.listening for session in self._sessions))

    def wait_for_listeners(self, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.listeners() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} AMI clients listening after {timeout} s")
            time.sleep(0.01)

    # -- traffic

    def send_event(self, headers: Headers) -> None:
        """Send one message (`[("Event", "Hangup"), ...]`, in wire order) to every listener."""
        self._in_loop(self._broadcast, encode_message(headers), 1)

    def replay(self, transcript: Path | str | Sequence[TranscriptChunk], *,
               speed: float = 1.0) -> concurrent.futures.Future:
        """Send a transcript (a file, or parsed chunks) to the listeners, with its delays."""
        _check_speed(speed)
        chunks = (load_transcript(transcript) if isinstance(transcript, (str, os.PathLike))
                  else list(transcript))
        return self._submit(self._replay(chunks, speed))

    def play_call(self, legs: Sequence[MovedLeg], *, speed: float = 1.0
                  ) -> concurrent.futures.Future:
        """Play one call from its first leg's start: rows into cdr.db and events, in step."""
        _check_speed(speed)
        return self._submit(self._play(call_script(legs, self._new_uniqueid), speed))

    def start_traffic(self, seed: int, calls_per_minute: float, *,
                      timezone: str = DEFAULT_TIMEZONE, speed: float = 1.0
                      ) -> concurrent.futures.Future:
        """Keep calls coming, as a PBX does, until the future is cancelled or `stop()`.

        Calls of every scenario kind (by `demo.SCENARIO_WEIGHTS`) start at random moments,
        `calls_per_minute` on average in real time, from `DemoPbx(seed, timezone)`: the same
        seed as the demo PBX's gives the same employees, trunks and queues. Each call plays at
        `speed` in parallel with the others; calls under way when traffic stops still finish.
        """
        _check_speed(speed)
        if calls_per_minute <= 0:
            raise ValueError("calls_per_minute must be positive")
        try:
            pbx = DemoPbx(seed, timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {timezone!r}") from None
        rng = random.Random(f"extcdr-demo:{seed}:live")
        return self._submit(self._traffic(pbx, rng, calls_per_minute, speed))

    # -- one-shot faults

    def drop_connections(self, after_messages: int = 0) -> None:
        """Close every session now, or after it was sent `after_messages` more messages."""
        def drop():
            for session in list(self._sessions):
                if after_messages:
                    session.drop_after = session.messages_sent + after_messages
                else:
                    session.abort()
        self._in_loop(drop)

    def stall(self, seconds: float) -> None:
        """Send nothing and answer nothing for `seconds` (connections stay open; what was
        queued meanwhile goes out afterwards)."""
        def stall():
            self._stalled_until = max(self._stalled_until, self._loop.time() + seconds)
        self._in_loop(stall)

    def send_garbage(self, size: int = 4096) -> None:
        """Random bytes (CR and LF among them), then CRLF CRLF, to every logged-in session."""
        garbage = random.Random(size).randbytes(size) + b"\r\n\r\n"
        self._in_loop(lambda: self._broadcast(garbage, 1, listeners_only=False))

    def send_huge_line(self, size: int = 1 << 20) -> None:
        """A VarSet event whose `Value` line is `size` bytes long, to every logged-in session."""
        value = ("0123456789abcdef" * (size // 16 + 1))[:size]
        event = encode_message([
            ("Event", "VarSet"), ("Privilege", "dialplan,all"), ("Channel", "PJSIP/201-00000001"),
            ("Variable", "HUGE"), ("Value", value)])
        self._in_loop(lambda: self._broadcast(event, 1, listeners_only=False))

    # -- sessions (on the loop thread)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        if self.faults.close_before_banner:
            writer.close()
            return
        session = _Session(writer, self.faults.drop_after_messages)
        self._sessions.add(session)
        sender = asyncio.create_task(self._send_loop(session))
        session.send(f"{self.banner}\r\n".encode(), 0)
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._answer(session, request):
                    break
            session.finish()
            await sender
        except (ConnectionError, asyncio.LimitOverrunError) as exc:
            log.info("AMI session %s ended: %s", session.peer, exc)
        finally:
            self._sessions.discard(session)
            sender.cancel()
            session.abort()

    async def _send_loop(self, session: _Session) -> None:
        """Send what is queued, in order; wait out stalls; drop after the set message count."""
        writer = session.writer
        try:
            while (item := await session.outbox.get()) is not None:
                data, messages = item
                await self._unstalled()
                if session.closed:
                    return
                writer.write(data)
                await writer.drain()
                session.messages_sent += messages
                self.stats.messages_sent += messages
                self.stats.bytes_sent += len(data)
                if session.drop_after is not None and session.messages_sent >= session.drop_after:
                    session.abort()
                    return
            session.closed = True
            writer.close()
        except ConnectionError:
            session.abort()

    async def _unstalled(self) -> None:
        while (left := self._stalled_until - self._loop.time()) > 0:
            await asyncio.sleep(left)

    def _broadcast(self, data: bytes, messages: int, *, listeners_only: bool = True) -> None:
        for session in self._sessions:
            if session.listening or (session.logged_in and not listeners_only):
                session.send(data, messages)

    async def _answer(self, session: _Session, request: _Request) -> bool:
        """Answer one action; False ends the session."""
        self.stats.actions += 1
        action, action_id = request.get("Action"), request.get("ActionID")
        if not action:
            session.send(_response("Error", action_id, [("Message", "Missing action in request")]))
            return True
        handler = self._actions.get(action.lower())
        if not session.logged_in and action.lower() not in ("login", "logoff"):
            session.send(_response("Error", action_id, [("Message", "Permission denied")]))
            return True
        if handler is None:
            session.send(_response("Error", action_id, [("Message", (
                f"Invalid/unknown command: {action}. "
                "Use Action: ListCommands to show available commands."))]))
            return True
        return await handler(session, request, action_id)

    def _secret_of(self, username: str) -> str | None:
        """The password of an AMI user: from manager.conf sections (with `manager_conf`, a
        file or a folder of them, read at each login as Asterisk reads it at each reload),
        else the one user given."""
        if self.manager_conf is None:
            return self._secret if username.lower() == self.username.lower() else None
        return manager_users(self.manager_conf).get(username)

    async def _login(self, session: _Session, request: _Request, action_id: str) -> bool:
        if session.logged_in:
            session.send(_response("Success", action_id, [("Message", "Already authenticated")]))
            return True
        username = request.get("Username")
        if self.faults.refuse_login or request.get("Secret") != self._secret_of(username):
            self.stats.logins_failed += 1
            log.info("AMI login as %r from %s failed", username, session.peer)
            await asyncio.sleep(self.auth_failure_delay)
            session.send(_response("Error", action_id, [("Message", "Authentication failed")]))
            return False
        events = _events_wanted(request.get("Events"))
        session.logged_in, session.username = True, username
        session.events = events is None or events
        self.stats.logins_ok += 1
        session.send(_response("Success", action_id, [("Message", "Authentication accepted")]))
        if session.events:
            uptime = str(int(time.time() - self._started_at))
            session.send(encode_message([
                ("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", uptime),
                ("LastReload", uptime), ("Status", "Fully Booted")]))
        return True

    async def _logoff(self, session: _Session, request: _Request, action_id: str) -> bool:
        session.send(_response("Goodbye", action_id, [("Message", "Thanks for all the fish.")]))
        return False

    async def _ping(self, session: _Session, request: _Request, action_id: str) -> bool:
        self.stats.pings += 1
        session.send(_response("Success", action_id, [
            ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")]))
        return True

    async def _events(self, session: _Session, request: _Request, action_id: str) -> bool:
        wanted = _events_wanted(request.get("EventMask"))
        if wanted is None:
            session.send(_response("Error", action_id, [("Message", "Invalid event mask")]))
        else:
            session.events = wanted
            session.send(_response("Success", action_id, [("Events", "On" if wanted else "Off")]))
        return True

    # -- replays and calls (on the loop thread)

    async def _wait_until(self, origin: float, offset_s: float, speed: float) -> None:
        if speed > 0:
            delay = origin + offset_s / speed - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _replay(self, chunks: list[TranscriptChunk], speed: float) -> None:
        origin, offset = self._loop.time(), 0.0
        for chunk in chunks:
            offset += chunk.delay
            await self._wait_until(origin, offset, speed)
            self._broadcast(chunk.data, chunk.messages)

    def _new_uniqueid(self, start_s: int) -> str:
        return f"mikopbx-{start_s}.{next(self._uniqueid_seq)}"

    async def _play(self, steps: list[CallStep], speed: float) -> None:
        if not steps:
            return
        origin, first_ms = self._loop.time(), steps[0].at_ms
        for step in steps:
            await self._wait_until(origin, (step.at_ms - first_ms) / 1000, speed)
            for headers in step.before:
                self._broadcast(encode_message(headers), 1)
            if step.leg_done and self._recordings is not None:  # on disk before the row moves
                await self._loop.run_in_executor(self._db_thread, self._recordings.write,
                                                 step.row["recordingfile"], step.row["billsec"])
            if self._cdr is not None:
                write = {"begin": self._cdr.begin_leg, "answer": self._cdr.answer_leg,
                         "finish": self._cdr.finish_leg}[step.write]
                await self._loop.run_in_executor(self._db_thread, write, step.row)
            self.stats.legs_moved += int(step.leg_done)
            for headers in step.after:
                self._broadcast(encode_message(headers), 1)
        self.stats.calls_played += 1

    async def _traffic(self, pbx: DemoPbx, rng: random.Random, calls_per_minute: float,
                       speed: float) -> None:
        kinds = list(SCENARIO_WEIGHTS)
        cum_weights = list(itertools.accumulate(SCENARIO_WEIGHTS.values()))
        calls: set[asyncio.Task] = set()
        while True:
            await asyncio.sleep(rng.expovariate(calls_per_minute / 60))
            kind = rng.choices(kinds, cum_weights=cum_weights)[0]
            steps = call_script(pbx.call_legs(kind, time.time()), self._new_uniqueid)
            call = asyncio.create_task(self._play(steps, speed), name=f"call {kind}")
            calls.add(call)
            call.add_done_callback(lambda task: _call_ended(task, calls))


def _call_ended(task: asyncio.Task, calls: set[asyncio.Task]) -> None:
    calls.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("AMI emulator: %s failed: %s", task.get_name(), task.exception())


def _check_speed(speed: float) -> None:
    if speed < 0:
        raise ValueError("speed must be 0 (no waiting) or positive")


# -- command line ------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `extcdr ami-emulator`."""
    parser.add_argument("--listen", type=_listen_address, default=("127.0.0.1", 5038),
                        metavar="HOST:PORT", help="where to listen (port 0: any free port; "
                        "the address is printed on stdout)")
    parser.add_argument("--cdr-db", type=Path,
                        help="the demo PBX's cdr.db that live calls are written into")
    parser.add_argument("--seed", type=int, default=1,
                        help="the seed the demo PBX was generated with (same employees)")
    parser.add_argument("--timezone", help="PBX timezone of the calls (default: from "
                        f"{CONFIG_DB} next to --cdr-db, else {DEFAULT_TIMEZONE})")
    parser.add_argument("--calls-per-minute", type=float, default=12.0,
                        help="new calls per minute on average (0: no calls)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="how fast calls and --replay play (1: real time, 0: no waiting)")
    parser.add_argument("--replay", type=Path, metavar="TRANSCRIPT",
                        help="send this transcript once the first client listens for events")
    parser.add_argument("--manager-conf", type=Path, metavar="PATH",
                        help="accept the AMI users of these manager.conf sections (a file, or a "
                             "folder of *.conf) instead of --username/--secret")
    parser.add_argument("--username", default=DEFAULT_USERNAME)
    parser.add_argument("--secret", help=f"the password (default: ${SECRET_ENV}, "
                        f"else {DEFAULT_SECRET!r})")


def manager_users(path: Path) -> dict[str, str]:
    """{user: secret} of manager.conf sections in a file or a folder of *.conf files."""
    files = sorted(path.glob("*.conf")) if path.is_dir() else [path] if path.is_file() else []
    users, section = {}, None
    for file in files:
        for line in file.read_text().splitlines():
            line = line.split(";", 1)[0].strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif section and section != "general" and line.startswith("secret="):
                users[section] = line.partition("=")[2].strip()
    return users


def _listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _pbx_timezone(cdr_db: Path | None) -> str:
    """The demo PBX's timezone, from the config DB the generator writes next to cdr.db."""
    config_db = cdr_db.with_name(CONFIG_DB) if cdr_db is not None else None
    if config_db is None or not config_db.is_file():
        return DEFAULT_TIMEZONE
    try:
        return read_pbx_config(config_db).timezone or DEFAULT_TIMEZONE
    except SourceError as exc:
        raise ValueError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; the bound address is printed once everything runs."""
    chunks = load_transcript(args.replay) if args.replay else None
    _check_speed(args.speed)
    emulator = AmiEmulator(host=args.listen[0], port=args.listen[1], username=args.username,
                           secret=args.secret or os.environ.get(SECRET_ENV) or DEFAULT_SECRET,
                           cdr_db=args.cdr_db, manager_conf=args.manager_conf)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        host, port = emulator.start()
    except sqlite3.Error as exc:
        raise ValueError(f"{args.cdr_db}: {exc}") from None
    try:
        if args.calls_per_minute > 0:
            emulator.start_traffic(args.seed, args.calls_per_minute,
                                   timezone=args.timezone or _pbx_timezone(args.cdr_db),
                                   speed=args.speed)
        print(f"AMI emulator listening on {host}:{port}", flush=True)
        while not stopping.wait(0.2):
            if chunks is not None and emulator.listeners():
                emulator.replay(chunks, speed=args.speed)
                chunks = None
    finally:
        emulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="extcdr ami-emulator",
                                     description="An AMI server with live demo PBX traffic.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        return run(args)
    except (OSError, ValueError) as exc:
        print(f"extcdr ami-emulator: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
