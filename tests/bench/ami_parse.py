"""AMI parsing throughput of `daemon.ami.AmiLink` (budget: >= 20,000 events/s without loss).

Run: .venv/bin/python -m tests.bench.ami_parse [--events 200000] [--repeat 3]

A loopback server sends the same stream of realistic events (~500 bytes on average: channel
snapshots, dial pairs, variables, repeated ChanVariable headers, MikoPBX CdrConnector user
events) to:

* a bare socket reader that discards the bytes (the floor: what the kernel and one recv loop
  cost);
* the link with a handler for every event name (every event parsed and dispatched);
* the link with handlers for Hangup and UserEvent only (what the daemon registers: the other
  events are counted and skipped unparsed);
* stock pyst2 on a short stream without ChanVariable headers (it dies on those).

Times run from the first event byte sent to the last event dispatched (or byte read). Every
run checks that no event was lost.
"""
from __future__ import annotations

import argparse
import base64
import json
import socket
import threading
import time
import warnings

from asterisk.manager import Manager

from daemon.ami import AmiLink

BANNER = b"Asterisk Call Manager/5.0.2\r\n"
LOGIN_OK = "Response: Success\r\nActionID: {}\r\nMessage: Authentication accepted\r\n\r\n"


def _channel(prefix: str, chan: str, num: str, name: str, uniqueid: str, linkedid: str) -> list:
    return [f"{prefix}Channel: {chan}", f"{prefix}ChannelState: 6", f"{prefix}ChannelStateDesc: Up",
            f"{prefix}CallerIDNum: {num}", f"{prefix}CallerIDName: {name}",
            f"{prefix}ConnectedLineNum: <unknown>", f"{prefix}ConnectedLineName: <unknown>",
            f"{prefix}Language: ru", f"{prefix}AccountCode: ", f"{prefix}Context: all_peers",
            f"{prefix}Exten: 74951234567", f"{prefix}Priority: 1",
            f"{prefix}Uniqueid: {uniqueid}", f"{prefix}Linkedid: {linkedid}"]


def call_events(n: int) -> list[bytes]:
    """The events of one outgoing call, numbered `n`."""
    linkedid, dst_id = f"mikopbx-1700000000.{2 * n}", f"mikopbx-1700000000.{2 * n + 1}"
    caller = _channel("", f"PJSIP/201-{n:08x}", "201", "Alice Smith", linkedid, linkedid)
    callee = _channel("Dest", f"PJSIP/SIP-TRUNK-4B2E-{n:08x}", "74951234567", "", dst_id,
                      linkedid)
    payload = base64.b64encode(json.dumps({
        "action": "hangup_update_cdr", "linkedid": linkedid, "UNIQUEID": f"{linkedid}_a1b2c3",
        "start": "2024-10-27 02:30:00.123", "answer": "2024-10-27 02:30:05.456",
        "endtime": "2024-10-27 02:31:10.789", "src_num": "201", "dst_num": "74951234567",
        "disposition": "ANSWERED", "GLOBAL_STATUS": "ANSWERED"}).encode()).decode()
    events = [
        ["Event: Newchannel", "Privilege: call,all", *caller],
        ["Event: VarSet", "Privilege: dialplan,all", *caller, "Variable: FROM_DID",
         "Value: 74951234567"],
        ["Event: DialBegin", "Privilege: call,all", *caller, *callee,
         "DialString: 74951234567@SIP-TRUNK-4B2E"],
        ["Event: Newstate", "Privilege: call,all", *caller],
        ["Event: Hangup", "Privilege: call,all", *caller, "Cause: 16",
         "Cause-txt: Normal Clearing", "ChanVariable: FROM_DID=74951234567",
         "ChanVariable: MIKO_CALL_ID=abc", "ChanVariable: DIALSTATUS=ANSWER"],
        ["Event: UserEvent", "Privilege: user,all", "UserEvent: CdrConnector",
         f"AgiData: {payload}"],
    ]
    return [("\r\n".join(lines) + "\r\n\r\n").encode() for lines in events]


def event_stream(count: int, *, chan_variables: bool = True) -> tuple[bytes, dict[str, int]]:
    """`count` events as one byte string, and how many of each name."""
    events, names = [], {}
    n = 0
    while len(events) < count:
        for raw in call_events(n):
            if not chan_variables and b"ChanVariable" in raw:
                raw = b"\r\n".join(l for l in raw.split(b"\r\n") if b"ChanVariable" not in l)
            events.append(raw)
        n += 1
    events = events[:count]
    for raw in events:
        name = raw[7:raw.index(b"\r\n")].decode()
        names[name] = names.get(name, 0) + 1
    return b"".join(events), names


class StreamServer:
    """Accepts one connection, answers the Login if asked, then sends the stream."""

    def __init__(self, stream: bytes, *, login: bool):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stream, self.login = stream, login
        self.started = 0.0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            if self.login:
                conn.sendall(BANNER)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                action_id = next(line.split(b": ", 1)[1] for line in request.split(b"\r\n")
                                 if line.startswith(b"ActionID"))
                conn.sendall(LOGIN_OK.format(action_id.decode()).encode())
            self.started = time.perf_counter()
            conn.sendall(self.stream)
            try:
                while conn.recv(4096):  # keep the connection until the client leaves
                    pass
            except OSError:
                pass
        self.listener.close()


def bare_read(stream: bytes) -> float:
    """Seconds to read the stream from a socket and discard it."""
    server = StreamServer(stream, login=False)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        left = len(stream)
        while left:
            left -= len(sock.recv(65536))
        return time.perf_counter() - server.started


def link_read(stream: bytes, names: dict[str, int], handled: tuple[str, ...]) -> float:
    """Seconds until the link has dispatched every event of the stream it has a handler for."""
    expected = sum(names[name] for name in handled)
    done = threading.Event()
    count = [0]

    def handler(_event):
        count[0] += 1
        if count[0] == expected:
            done.set()

    server = StreamServer(stream, login=True)
    link = AmiLink("127.0.0.1", server.port, "bench", "pw", dict.fromkeys(handled, handler),
                   ping_interval=60)
    link.start()
    try:
        if not done.wait(300):
            raise SystemExit(f"lost events: {count[0]} of {expected} dispatched")
        elapsed = time.perf_counter() - server.started
        if link.stats.events != sum(names.values()):
            raise SystemExit(f"lost events: {link.stats.events} of {sum(names.values())} received")
        return elapsed
    finally:
        link.stop()


def stock_pyst2_read(stream: bytes, count: int) -> float:
    """Seconds for unpatched pyst2 to deliver `count` events to a callback."""
    done = threading.Event()
    seen = [0]

    def callback(_event, _manager):
        seen[0] += 1
        if seen[0] == count:
            done.set()

    server = StreamServer(stream, login=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        manager = Manager()
        manager.register_event("*", callback)
        manager.connect("127.0.0.1", server.port)
        manager.login("bench", "pw")
    if not done.wait(120):
        raise SystemExit(f"stock pyst2 lost events: {seen[0]} of {count}")
    return time.perf_counter() - server.started  # no close(): pyst2's can hang


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--stock-events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stream, names = event_stream(args.events)
    print(f"{args.events:,} events, {len(stream) / 1e6:.1f} MB, "
          f"{len(stream) / args.events:.0f} bytes/event on average; best of {args.repeat}")
    runs = {
        "bare socket read, bytes discarded": lambda: bare_read(stream),
        "AmiLink, every event parsed and dispatched": lambda: link_read(stream, names,
                                                                        tuple(names)),
        "AmiLink, Hangup + UserEvent handled (daemon)": lambda: link_read(
            stream, names, ("Hangup", "UserEvent")),
    }
    floor = None
    for label, run in runs.items():
        best = min(run() for _ in range(args.repeat))
        floor = floor or best
        print(f"  {label:46s} {best:7.3f} s  {args.events / best:>12,.0f} events/s  "
              f"{best / floor:6.1f}x the bare read")
    short, _ = event_stream(args.stock_events, chan_variables=False)
    elapsed = stock_pyst2_read(short, args.stock_events)
    label = f"stock pyst2 0.5.1 ({args.stock_events:,} events, no ChanVar)"
    print(f"  {label:46s} {elapsed:7.3f} s  {args.stock_events / elapsed:>12,.0f} events/s")


if __name__ == "__main__":
    main()
